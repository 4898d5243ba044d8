//! Everything specific to the Flex (CPU) backend: operations registered with Burn's backend
//! extension mechanism whose kernels replace Burn's generic composition of the same
//! mathematics, and the kernels' shared parts.
//!
//! Why: profiling a ResNet-50 training step on Flex (docs/results/profile.md) showed the time
//! going to Burn's generic convolution backward and to batch norm composed of about ten
//! elementwise passes; docs/results/speed.md has what each operation here gained.
//!
//! - operations: [`conv`] (convolution forward, gradients, folded batch norm), [`norm`] (batch
//!   norm with its ReLU, or with a block's residual sum and ReLU; parameter-free group norm), [`eltwise`] (residual sum + ReLU), [`pool`] (block average and window max pooling),
//!   [`dense_sum`] (DSNet's dense shortcut), [`dense_stage`] (a DSNet stage's shortcuts on one
//!   tape), [`sgd`] (SGD's update of a parameter in one pass), [`dense_head`] (a DenseNet layer's recomputing
//!   bottleneck head);
//! - kernels and helpers: [`matmul`] (the `gemm` crate), [`tile_gemm`] (an AVX2 + FMA register
//!   tile), `epilogue` (a folded batch norm applied to a kernel's output), `lanes` (SIMD reductions), `buffer` (uninitialised outputs, scratch), `tensor`
//!   (Flex tensors in and out of the kernels), [`probe`] (which kernel ran, for tests).
//!
//! # Switches
//!
//! Whether an operation takes its fast path is decided here and nowhere else:
//!
//! - [`enabled`]: the device is Flex (with or without autodiff; the only backend the
//!   extensions are implemented for) and the environment does not set `DENSUM_FAST_PATHS=0`.
//!   With it set, every operation takes Burn's generic path, so a benchmark can time both
//!   paths with one binary.
//! - [`with_generic`]: within a closure, on the calling thread, one operation takes the
//!   generic path while the others stay fast (tests comparing one operation in a whole model).
//! - `DENSUM_TILE_GEMM=0` is not a fast-path switch but a kernel choice inside the convolution
//!   fast path: the `gemm` crate wherever the tile kernel would run ([`tile_kernel_enabled`]),
//!   for A/B timing in the same binary (tests/fast_paths.rs checks both against the generic
//!   path).
//!
//! - `DENSUM_WINOGRAD=0`, likewise a kernel choice: stride-1 3x3 convolutions keep the direct
//!   kernels instead of Winograd's F(2x2, 3x3) and F(4x4, 3x3) ([`winograd_enabled`],
//!   `conv/winograd.rs`).
//! - `DENSUM_WINOGRAD_WEIGHT_GRAD=0`: only the weight gradients keep the direct kernel instead
//!   of Winograd's F(2x2, 3x3) ([`winograd_weight_grad_enabled`],
//!   `conv/winograd/weight_grad.rs`).
//!
//! The environment variables are read once per process.

pub mod conv;
pub mod dense_head;
pub mod dense_stage;
pub mod dense_sum;
pub mod eltwise;
pub(crate) mod epilogue;
pub(crate) mod lanes;
pub mod matmul;
pub mod norm;
pub mod pool;
pub mod probe;
pub mod sgd;
pub mod tile_gemm;

mod buffer;
mod tensor;

use std::cell::Cell;
use std::sync::OnceLock;

use burn::tensor::{DType, Device, Tensor};

/// Stack of the global pool's worker threads when [`on_pool`] creates the pool: the work it
/// moves onto a worker ran on the main thread's stack (8 MiB on Linux) before; reserved, not
/// committed, so the size costs nothing until used.
const WORKER_STACK: usize = 64 << 20;

/// Runs `f` on a worker thread of rayon's global pool (directly when called on one), creating
/// the pool first if nothing has yet (with [`WORKER_STACK`]-sized stacks).
///
/// Why: every operation here splits its work over the global pool. Called from a thread
/// outside the pool (a program's main thread), each operation hands its work to the workers
/// and sleeps until they finish, so a training step of ~400 operations makes thousands of
/// sleeps and wake-ups, and between operations the caller's own work competes with workers
/// spinning for more: three threads on two cores. On a worker the caller takes part in the
/// operation's work, and the pool's threads are all there is. Measured with `densum bench
/// resnet50 --dataset cifar100 --width 0.25 --batch 64` (AMD Zen 4, 2 threads, eight
/// alternations): context switches per run 17,100-18,900 → 3,700-3,750 (`perf stat`), training
/// step 0.88-1.06x (median 0.94x), inference median 0.96x; ImageNet-sized steps (ResNet-50, batch
/// 8), with far fewer operations per second, median 0.99x (training, eight pairs) and 1.00x
/// (inference, ten pairs).
/// `densum`'s commands all run this way.
pub fn on_pool<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    if rayon::current_thread_index().is_some() {
        return f();
    }
    // Fails, harmlessly, when the pool already exists (its workers keep their stacks).
    let _ = rayon::ThreadPoolBuilder::new()
        .stack_size(WORKER_STACK)
        .build_global();
    rayon::scope(|_| f())
}

/// Whether the environment variable `name` leaves its switch on: unset or anything but `0`.
fn switch_on(name: &str) -> bool {
    std::env::var(name).map_or(true, |v| v != "0")
}

/// Whether the fast paths may run on `device`: Flex, with or without autodiff, unless the
/// environment sets `DENSUM_FAST_PATHS=0` (see the module documentation).
pub fn enabled(device: &Device) -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| switch_on("DENSUM_FAST_PATHS")) && device.clone().inner() == Device::flex()
}

/// Whether the convolutions may use [`tile_gemm`]'s kernel: when the CPU has it, unless the
/// environment sets `DENSUM_TILE_GEMM=0` (see the module documentation).
pub fn tile_kernel_enabled() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| tile_gemm::available() && switch_on("DENSUM_TILE_GEMM"))
}

/// Whether stride-1 3x3 convolutions may run through Winograd's algorithm (on the tile
/// kernel, so only where [`tile_kernel_enabled`]), unless the environment sets
/// `DENSUM_WINOGRAD=0` (see the module documentation).
pub fn winograd_enabled() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| tile_kernel_enabled() && switch_on("DENSUM_WINOGRAD"))
}

/// Whether stride-1 3x3 weight gradients may run through Winograd's algorithm: where
/// [`winograd_enabled`], unless the environment sets `DENSUM_WINOGRAD_WEIGHT_GRAD=0` (see the
/// module documentation).
pub fn winograd_weight_grad_enabled() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| winograd_enabled() && switch_on("DENSUM_WINOGRAD_WEIGHT_GRAD"))
}

/// The operations [`with_generic`] can send to Burn's generic path one at a time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// Convolutions ([`conv::conv2d_fast`], [`conv::conv_forward`]) and the folded
    /// convolution + batch norm.
    Conv,
    /// Batch norm (+ ReLU), parameter-free group norm, and the folded convolution + batch norm.
    Norm,
    /// The residual sum + ReLU ([`eltwise::add_relu`]).
    AddRelu,
    /// DSNet's dense shortcut ([`dense_sum::dense_sum`]).
    DenseSum,
    /// DenseNet's recomputing head ([`dense_head::dense_head`]).
    DenseHead,
    /// Block average and window max pooling ([`pool::avg_pool_forward`],
    /// [`pool::max_pool_forward`]).
    Pool,
    /// SGD's parameter update ([`sgd::sgd_update`]).
    Sgd,
}

thread_local! {
    /// The operations this thread sends to the generic path, one bit per [`Op`].
    static GENERIC: Cell<u8> = const { Cell::new(0) };
}

/// Runs `f` with `op` on this thread taking Burn's generic path (for comparisons against the
/// fast operation; the other operations are unaffected).
pub fn with_generic<R>(op: Op, f: impl FnOnce() -> R) -> R {
    struct Restore(u8);
    impl Drop for Restore {
        fn drop(&mut self) {
            GENERIC.with(|c| c.set(self.0));
        }
    }
    let _restore = Restore(GENERIC.with(|c| c.replace(c.get() | (1 << op as u8))));
    f()
}

/// Whether `op` takes its fast path on `device`: [`enabled`] and not inside
/// [`with_generic`] for `op`.
pub(crate) fn chosen(op: Op, device: &Device) -> bool {
    GENERIC.with(Cell::get) & (1 << op as u8) == 0 && enabled(device)
}

/// Whether `op` takes its fast path for `x`: [`enabled`] on its device, not inside
/// [`with_generic`] for `op`, and `x` is f32 (the only dtype the kernels handle).
pub fn applies(op: Op, x: &Tensor<4>) -> bool {
    chosen(op, &x.device()) && x.dtype() == DType::F32
}

#[cfg(test)]
mod tests {
    use super::*;
    use rayon::prelude::*;

    #[test]
    fn on_pool_runs_on_a_worker_and_nests() {
        assert!(
            rayon::current_thread_index().is_none(),
            "tests start off the pool"
        );
        let (outer, inner) = on_pool(|| {
            let outer = rayon::current_thread_index();
            // Already on a worker: runs in place, on the same thread.
            let inner = on_pool(rayon::current_thread_index);
            (outer, inner)
        });
        assert!(outer.is_some(), "f ran on a worker");
        assert_eq!(outer, inner);
        // The pool still splits work from there.
        let sum: u64 = on_pool(|| (0..10_000u64).into_par_iter().sum());
        assert_eq!(sum, 49_995_000);
    }
}
