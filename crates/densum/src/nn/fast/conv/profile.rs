//! Time spent in each convolution shape inside a whole network (`densum bench
//! --conv-profile`): forward, inference (with the folded norm), input and weight gradient,
//! per shape, summed over the calls between [`start`] and [`stop`].
//!
//! Why: a convolution timed alone runs with its operands hot in cache and can be 2-3x faster
//! than the same call inside a training step (docs/results/speed.md), so the kernels worth
//! working on are only visible in the network. `tools/conv_profile.py` prints these figures
//! next to PyTorch's own per-shape profile of the same network.
//!
//! Off by default; while off, a convolution pays one relaxed atomic load.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use serde::Serialize;

use super::geom::Geom;

/// Which computation of a convolution a time is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Pass {
    /// The training (or autodiff) forward.
    Forward,
    /// The inference forward with the folded batch norm (and ReLU).
    Inference,
    /// The gradient with respect to the input.
    InputGrad,
    /// The gradient with respect to the weight.
    WeightGrad,
}

/// A convolution's shape: what the kernels choose their path by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct ConvShape {
    /// Input channels.
    pub c: usize,
    /// Output channels.
    pub o: usize,
    /// Kernel height and width.
    pub kernel: [usize; 2],
    /// Stride.
    pub stride: [usize; 2],
    /// Input height and width.
    pub input: [usize; 2],
    /// Images per call.
    pub batch: usize,
}

impl ConvShape {
    fn of(g: &Geom) -> Self {
        ConvShape {
            c: g.c,
            o: g.o,
            kernel: [g.kh, g.kw],
            stride: g.stride,
            input: [g.h, g.w],
            batch: g.n,
        }
    }

    /// Multiply-accumulates of one call (the same for the forward and either gradient).
    pub fn macs(&self, oh_ow: usize) -> u64 {
        (self.batch * self.o * self.c * self.kernel[0] * self.kernel[1] * oh_ow) as u64
    }
}

/// The calls of one shape and pass between [`start`] and [`stop`].
#[derive(Clone, Debug, Serialize)]
pub struct ConvTime {
    /// The convolution.
    pub shape: ConvShape,
    /// Which computation.
    pub pass: Pass,
    /// Calls per measured iteration.
    pub calls: f64,
    /// Milliseconds per measured iteration.
    pub ms: f64,
    /// Billions of multiply-accumulates per second over these calls.
    pub gmacs: f64,
}

static ON: AtomicBool = AtomicBool::new(false);

/// (calls, seconds, MACs per call) per shape and pass.
type Totals = BTreeMap<(ConvShape, Pass), (usize, f64, u64)>;

static TOTALS: Mutex<Totals> = Mutex::new(BTreeMap::new());

fn totals() -> std::sync::MutexGuard<'static, Totals> {
    // A panic while holding the lock leaves plain numbers behind: still usable.
    TOTALS.lock().unwrap_or_else(|e| e.into_inner())
}

/// Clears the totals and starts timing every fast convolution (Flex).
pub fn start() {
    totals().clear();
    ON.store(true, Ordering::Relaxed);
}

/// Stops timing and returns the totals divided by `iterations`, the largest first.
pub fn stop(iterations: usize) -> Vec<ConvTime> {
    ON.store(false, Ordering::Relaxed);
    let per = iterations.max(1) as f64;
    let mut out: Vec<ConvTime> = std::mem::take(&mut *totals())
        .into_iter()
        .map(|((shape, pass), (calls, secs, macs))| ConvTime {
            shape,
            pass,
            calls: calls as f64 / per,
            ms: secs * 1e3 / per,
            gmacs: if secs > 0.0 {
                (calls as u64 * macs) as f64 / secs / 1e9
            } else {
                0.0
            },
        })
        .collect();
    out.sort_by(|a, b| b.ms.total_cmp(&a.ms));
    out
}

/// Runs `f`, adding its time to `g`'s shape and `pass` while profiling is on.
pub(super) fn timed<R>(g: &Geom, pass: Pass, f: impl FnOnce() -> R) -> R {
    if !ON.load(Ordering::Relaxed) {
        return f();
    }
    let t = Instant::now();
    let r = f();
    let secs = t.elapsed().as_secs_f64();
    let shape = ConvShape::of(g);
    let mut all = totals();
    let e = all.entry((shape, pass)).or_insert((0, 0.0, 0));
    e.0 += 1;
    e.1 += secs;
    e.2 = shape.macs(g.p());
    r
}

/// A text table of `times` (as [`stop`] returns them): one line per shape and pass, with its
/// share of the listed total.
pub fn table(times: &[ConvTime]) -> String {
    let total: f64 = times.iter().map(|t| t.ms).sum();
    let mut out = String::from(
        "  convolution (in->out kxk /stride @HxW, batch)   pass          calls   ms/iter  share  GMAC/s\n",
    );
    for t in times {
        let s = &t.shape;
        let name = format!(
            "{}->{} {}x{} /{} @{}x{}, {}",
            s.c, s.o, s.kernel[0], s.kernel[1], s.stride[0], s.input[0], s.input[1], s.batch
        );
        out += &format!(
            "  {name:<46} {:<12} {:>6.1} {:>9.2} {:>5.1}% {:>7.1}\n",
            format!("{:?}", t.pass),
            t.calls,
            t.ms,
            100.0 * t.ms / total.max(f64::MIN_POSITIVE),
            t.gmacs
        );
    }
    out += &format!("  total {total:.1} ms per iteration\n");
    out
}
