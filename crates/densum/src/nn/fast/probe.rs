//! Which kernel ran: one counter per kernel, for tests to assert that the path they compare is
//! the one they mean (a fast-versus-generic test whose fast path silently fell back would
//! compare the generic path with itself and pass).
//!
//! Counters are per thread, counted on the thread that calls the operation (the extension's
//! Flex method, or the autodiff backward step, which Burn runs on the thread that calls
//! `backward`), never inside the rayon workers. Why per thread: the test harness runs the tests
//! of one file in parallel threads of one process, so a process-wide counter would also count
//! the other tests' kernels. Cost: one thread-local increment per operation, against kernels
//! that each make at least one pass over an activation.

use std::cell::Cell;

/// A kernel the fast operations may run, or the generic fallback inside one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kernel {
    /// Convolution forward through the `gemm` crate, over an im2col matrix or, for 1x1
    /// stride-1 convolutions, the image itself.
    ConvGemm,
    /// Convolution forward of a small plane with large weights as one `gemm` product over the
    /// whole batch, a band of output rows per thread (see `conv/batch.rs`).
    ConvGemmBatch,
    /// Convolution forward of a 1x1 convolution on the AVX2 + FMA tile kernel, its input copied
    /// a band at a time (only chosen where the CPU has both, see
    /// [`tile_kernel_enabled`](super::tile_kernel_enabled)).
    ConvTilePointwise,
    /// Convolution forward of a stride-1 "same" convolution on the AVX2 + FMA tile kernel, over
    /// shifted views of a padded copy of the image.
    ConvTileShifted,
    /// Convolution forward of a stride-1 3x3 convolution (padding 1) through Winograd's
    /// F(2x2, 3x3) on the tile kernel (see `conv/winograd.rs`).
    ConvWinograd,
    /// The same through F(4x4, 3x3), on planes at least 28 wide (see `conv/winograd/f4.rs`).
    ConvWinograd4,
    /// Convolution forward of a strided small-plane 3x3 convolution read in place by the tile
    /// kernel, output channels across the lanes (see `conv/direct.rs`).
    ConvDirect,
    /// The folded inference convolution + batch norm (its forward is one of the above).
    ConvAffine,
    /// Convolution input gradient through the `gemm` crate and col2im.
    ConvInputGradGemm,
    /// Convolution input gradient of a small plane with large weights as one `gemm` product
    /// over the whole batch (see `conv/grad.rs`).
    ConvInputGradBatch,
    /// Convolution input gradient as a tiled forward of the rotated weights.
    ConvInputGradTile,
    /// Convolution input gradient of a small-plane stride-1 3x3 convolution as the direct
    /// forward of the rotated weights (see `conv/direct.rs`).
    ConvInputGradDirect,
    /// Convolution input gradient of a stride-1 3x3 convolution through Winograd's F(2x2, 3x3)
    /// (a forward of the rotated weights).
    ConvInputGradWinograd,
    /// The same through F(4x4, 3x3).
    ConvInputGradWinograd4,
    /// Convolution weight gradient (im2col + `gemm`, or one product over the whole batch).
    ConvWeightGrad,
    /// Convolution weight gradient of a 3x3 convolution with the input read in place by the
    /// tile kernel (see `conv/direct.rs`).
    ConvWeightGradDirect,
    /// Convolution weight gradient of a stride-1 3x3 convolution through Winograd's F(2x2,
    /// 3x3) (see `conv/winograd/weight_grad.rs`).
    ConvWeightGradWinograd,
    /// Burn's own convolution (forward or gradient) inside the extension, for a case the kernels
    /// do not cover (dtype, groups, dilation, asymmetric padding).
    ConvGeneric,
    /// Batch-norm statistics of a training batch.
    BatchNormStats,
    /// Batch norm (+ ReLU) forward.
    BatchNormApply,
    /// Batch norm, residual sum (+ ReLU) forward: a post-activation block's end.
    BatchNormSum,
    /// Batch norm (+ ReLU) backward.
    BatchNormBackward,
    /// Parameter-free group norm forward.
    GroupNorm,
    /// Parameter-free group norm backward.
    GroupNormBackward,
    /// Residual sum + ReLU forward.
    AddRelu,
    /// Residual sum + ReLU backward (the ReLU's mask, also in the backward of
    /// [`BatchNormSum`](Self::BatchNormSum)).
    AddReluBackward,
    /// Dense-shortcut statistics of one earlier output.
    DenseSumStats,
    /// Dense shortcut forward (one per chained operation).
    DenseSum,
    /// Dense shortcut backward (one per chained operation).
    DenseSumBackward,
    /// Recomputing dense-layer head forward (one per chained operation).
    DenseHead,
    /// Recomputing dense-layer head backward (one per chained operation).
    DenseHeadBackward,
    /// Dense-layer head for inference, with the second norm folded in (one per layer).
    DenseHeadInference,
    /// Block average pooling forward.
    BlockAvgPool,
    /// Block average pooling backward.
    BlockAvgPoolBackward,
    /// Window max pooling forward.
    WindowMaxPool,
    /// Window max pooling backward.
    WindowMaxPoolBackward,
    /// SGD's one pass over a parameter (and its momentum buffer).
    Sgd,
}

impl Kernel {
    /// Every kernel, in declaration order (the counters' order).
    pub const ALL: [Kernel; 37] = [
        Kernel::ConvGemm,
        Kernel::ConvGemmBatch,
        Kernel::ConvTilePointwise,
        Kernel::ConvTileShifted,
        Kernel::ConvWinograd,
        Kernel::ConvWinograd4,
        Kernel::ConvDirect,
        Kernel::ConvAffine,
        Kernel::ConvInputGradGemm,
        Kernel::ConvInputGradBatch,
        Kernel::ConvInputGradTile,
        Kernel::ConvInputGradDirect,
        Kernel::ConvInputGradWinograd,
        Kernel::ConvInputGradWinograd4,
        Kernel::ConvWeightGrad,
        Kernel::ConvWeightGradDirect,
        Kernel::ConvWeightGradWinograd,
        Kernel::ConvGeneric,
        Kernel::BatchNormStats,
        Kernel::BatchNormApply,
        Kernel::BatchNormSum,
        Kernel::BatchNormBackward,
        Kernel::GroupNorm,
        Kernel::GroupNormBackward,
        Kernel::AddRelu,
        Kernel::AddReluBackward,
        Kernel::DenseSumStats,
        Kernel::DenseSum,
        Kernel::DenseSumBackward,
        Kernel::DenseHead,
        Kernel::DenseHeadBackward,
        Kernel::DenseHeadInference,
        Kernel::BlockAvgPool,
        Kernel::BlockAvgPoolBackward,
        Kernel::WindowMaxPool,
        Kernel::WindowMaxPoolBackward,
        Kernel::Sgd,
    ];
}

const KERNELS: usize = Kernel::ALL.len();

thread_local! {
    static COUNTS: [Cell<u64>; KERNELS] = const { [const { Cell::new(0) }; KERNELS] };
}

/// Counts one run of `kernel` on this thread.
pub(crate) fn hit(kernel: Kernel) {
    COUNTS.with(|c| {
        let n = &c[kernel as usize];
        n.set(n.get() + 1);
    });
}

/// Runs of each kernel on one thread: since it started ([`Counts::now`]) or during a closure
/// ([`counted`]).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Counts([u64; KERNELS]);

impl Counts {
    /// This thread's counts so far.
    pub fn now() -> Self {
        Counts(COUNTS.with(|c| std::array::from_fn(|i| c[i].get())))
    }

    /// Runs of `kernel`.
    pub fn get(&self, kernel: Kernel) -> u64 {
        self.0[kernel as usize]
    }

    /// Runs of all kernels together.
    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }

    /// The runs since `earlier` (counts only grow).
    pub fn since(&self, earlier: &Counts) -> Counts {
        Counts(std::array::from_fn(|i| self.0[i] - earlier.0[i]))
    }
}

/// The kernels that ran, with their counts (`{ConvGemm: 1, ConvWeightGrad: 1}`).
impl std::fmt::Debug for Counts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map()
            .entries(
                Kernel::ALL
                    .iter()
                    .filter(|&&k| self.get(k) > 0)
                    .map(|&k| (k, self.get(k))),
            )
            .finish()
    }
}

/// `f()` and the kernels it ran on this thread.
pub fn counted<R>(f: impl FnOnce() -> R) -> (R, Counts) {
    let before = Counts::now();
    let out = f();
    (out, Counts::now().since(&before))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernels_are_listed_in_declaration_order() {
        for (i, k) in Kernel::ALL.iter().enumerate() {
            assert_eq!(*k as usize, i, "{k:?}");
        }
    }

    #[test]
    fn counted_sees_only_this_closures_runs() {
        hit(Kernel::DenseSum);
        let ((), ran) = counted(|| {
            hit(Kernel::ConvGemm);
            hit(Kernel::ConvGemm);
            hit(Kernel::AddRelu);
        });
        assert_eq!(ran.get(Kernel::ConvGemm), 2);
        assert_eq!(ran.get(Kernel::AddRelu), 1);
        assert_eq!(ran.get(Kernel::DenseSum), 0);
        assert_eq!(ran.total(), 3);
        assert_eq!(format!("{ran:?}"), "{ConvGemm: 2, AddRelu: 1}");
        // Another thread's runs are not this thread's.
        let ((), ran) = counted(|| std::thread::spawn(|| hit(Kernel::ConvGemm)).join().unwrap());
        assert_eq!(ran.total(), 0);
    }
}
