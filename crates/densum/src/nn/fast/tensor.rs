//! Flex tensors in and out of the kernels: their values as a slice, a kernel's output as a
//! tensor, and the fixed-arity argument slots of the extension operations.
//!
//! Why: every operation under `nn::fast` reads its Flex inputs as plain f32 slices and wraps
//! plain vectors as its outputs; Burn's backend extensions take a fixed number of tensors, so
//! the operations over a variable number of inputs (dense sum, dense head) share one way of
//! reading their used slots.

use std::borrow::Cow;

use burn::backend::flex::FlexTensor;
use burn::tensor::TensorData;

/// The tensor's f32 values in row-major order, borrowed when it is already contiguous.
pub(crate) fn values(t: &FlexTensor) -> Cow<'_, [f32]> {
    match t.as_slice::<f32>() {
        Some(s) => Cow::Borrowed(s),
        None => Cow::Owned(
            t.clone()
                .into_data()
                .try_into_vec::<f32>()
                .expect("f32 tensor"),
        ),
    }
}

/// A Flex tensor of the given row-major values and shape (the fast kernels' outputs).
pub(crate) fn flex(values: Vec<f32>, shape: Vec<usize>) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(values, shape))
}

/// The first `terms` slots of a fixed-arity operation's inputs (Burn's backend extensions
/// take a fixed number of tensors; unused slots are placeholders).
pub(crate) fn present<T, const N: usize>(slots: [T; N], terms: usize) -> Vec<T> {
    assert!((1..=N).contains(&terms), "1 to {N} inputs, not {terms}");
    slots.into_iter().take(terms).collect()
}
