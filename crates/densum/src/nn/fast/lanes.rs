//! Reductions in explicit SIMD, shared by the fused kernels.
//!
//! Why: a single running sum is a serial dependency chain, and LLVM's automatic
//! vectorisation of reductions over fixed lane arrays is fragile: on the x86-64 baseline
//! (SSE2) a ReLU mask inside the sum turned into one scalar branch per lane, which made the
//! batch-norm backward compute-bound. Here every sum runs in two 8-wide vector accumulators
//! (`wide::f32x8`, plain SSE/AVX instructions whatever the build target), masks are bit
//! operations, and lanes are combined in f64. Planes are at most a few thousand values, well
//! within f32's precision per lane.

pub(crate) use wide::f32x8;

/// Values per step: two `f32x8` accumulators per sum hide the add latency.
const STEP: usize = 16;

/// `v[i..i + 8]` as a vector.
#[inline(always)]
fn load(v: &[f32], i: usize) -> f32x8 {
    let chunk: [f32; 8] = v[i..i + 8].try_into().expect("8 values");
    f32x8::new(chunk)
}

/// The last `v.len() - i` (< 8) values of `v` from `i`, padded with zeros.
#[inline(always)]
fn load_tail(v: &[f32], i: usize) -> f32x8 {
    let mut chunk = [0f32; 8];
    chunk[..v.len() - i].copy_from_slice(&v[i..]);
    f32x8::new(chunk)
}

/// `(Σ f(aᵢ, bᵢ, cᵢ).0, Σ f(aᵢ, bᵢ, cᵢ).1)` over the length of `a` (`b` and `c` at least as
/// long), in one pass, `f` applied to eight values at a time. Pass the same slice more than
/// once when fewer inputs are needed.
#[inline(always)]
pub(crate) fn lane_sums2(
    a: &[f32],
    b: &[f32],
    c: &[f32],
    f: impl Fn(f32x8, f32x8, f32x8) -> (f32x8, f32x8),
) -> (f64, f64) {
    let n = a.len();
    let (b, c) = (&b[..n], &c[..n]);
    let zero = f32x8::splat(0.0);
    let (mut s0, mut s1, mut t0, mut t1) = (zero, zero, zero, zero);
    let mut i = 0;
    while i + STEP <= n {
        let (u, v) = f(load(a, i), load(b, i), load(c, i));
        let (w, x) = f(load(a, i + 8), load(b, i + 8), load(c, i + 8));
        s0 += u;
        s1 += v;
        t0 += w;
        t1 += x;
        i += STEP;
    }
    if i + 8 <= n {
        let (u, v) = f(load(a, i), load(b, i), load(c, i));
        s0 += u;
        s1 += v;
        i += 8;
    }
    if i < n {
        // Padding lanes may not map to zero under `f`, so they are masked out of the sums.
        let valid =
            f32x8::new(std::array::from_fn(|l| if l < n - i { 1.0 } else { 0.0 })).simd_gt(zero);
        let (u, v) = f(load_tail(a, i), load_tail(b, i), load_tail(c, i));
        t0 += u & valid;
        t1 += v & valid;
    }
    let total = |x: f32x8, y: f32x8| {
        x.to_array()
            .iter()
            .chain(y.to_array().iter())
            .map(|&v| v as f64)
            .sum::<f64>()
    };
    (total(s0, t0), total(s1, t1))
}

/// `Σ f(aᵢ, bᵢ)` over the length of `a`, eight values at a time.
#[inline(always)]
pub(crate) fn lane_sum(a: &[f32], b: &[f32], f: impl Fn(f32x8, f32x8) -> f32x8) -> f64 {
    lane_sums2(a, b, a, |x, y, _| (f(x, y), f32x8::splat(0.0))).0
}

/// `g` where `o > 0`, else 0: the output gradient of a ReLU whose output is `o`.
#[inline(always)]
pub(crate) fn relu_mask(g: f32x8, o: f32x8) -> f32x8 {
    g & o.simd_gt(f32x8::splat(0.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_match_a_plain_loop_for_every_tail_length() {
        for n in [0, 1, 7, 8, 9, 15, 16, 17, 24, 33, 100] {
            let a: Vec<f32> = (0..n).map(|i| i as f32 * 0.5 - 3.0).collect();
            let b: Vec<f32> = (0..n).map(|i| (i % 7) as f32 - 2.0).collect();
            // The constant 1 checks that padding lanes are masked out of the tail.
            let (s, sp) = lane_sums2(&a, &b, &a, |x, y, z| (x * y + 1.0, relu_mask(z, y)));
            let want: f64 = a.iter().zip(&b).map(|(&x, &y)| (x * y + 1.0) as f64).sum();
            let want_p: f64 = a
                .iter()
                .zip(&b)
                .map(|(&x, &y)| if y > 0.0 { x as f64 } else { 0.0 })
                .sum();
            assert!((s - want).abs() < 1e-3, "n={n}: {s} vs {want}");
            assert!((sp - want_p).abs() < 1e-3, "n={n}: {sp} vs {want_p}");
            let plain: f64 = a.iter().map(|&x| x as f64).sum();
            assert!((lane_sum(&a, &a, |x, _| x) - plain).abs() < 1e-3);
        }
    }
}
