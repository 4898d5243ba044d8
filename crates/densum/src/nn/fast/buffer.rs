//! Memory the kernels write into: buffers left uninitialised until a kernel fills them, the
//! conversions once it has, and a per-thread scratch buffer.
//!
//! Why here, together: every fast operation writes its outputs without a zero fill first (with
//! freed memory kept for reuse, see `measure::alloc`, a zeroed allocation is a full extra pass
//! over every activation), so they all need the same few `MaybeUninit` conversions, each with
//! its safety argument written once.

use std::mem::MaybeUninit;

/// An initialised slice seen as possibly-uninitialised (always sound: only writes follow).
pub(crate) fn as_uninit(s: &mut [f32]) -> &mut [MaybeUninit<f32>] {
    // SAFETY: `MaybeUninit<f32>` has the layout of `f32`, and every `f32` is a valid
    // `MaybeUninit<f32>`; callers only write through the result.
    unsafe { std::slice::from_raw_parts_mut(s.as_mut_ptr().cast(), s.len()) }
}

/// A buffer of `len` values for a kernel that writes every one of them before anything reads
/// it (no zero fill: see the module documentation).
pub(crate) fn uninit_buffer(len: usize) -> Vec<MaybeUninit<f32>> {
    let mut v = Vec::with_capacity(len);
    // SAFETY: `MaybeUninit` needs no initialisation.
    unsafe { v.set_len(len) };
    v
}

/// A slice after a kernel has written every value.
///
/// # Safety
/// Every element of `s` must have been initialised.
pub(crate) unsafe fn assume_init_mut(s: &mut [MaybeUninit<f32>]) -> &mut [f32] {
    // SAFETY: layout-compatible element type; the caller guarantees initialisation.
    unsafe { &mut *(s as *mut [MaybeUninit<f32>] as *mut [f32]) }
}

/// The buffer after a kernel has written every value.
///
/// # Safety
/// Every element of `v` must have been initialised.
pub(crate) unsafe fn assume_init(v: Vec<MaybeUninit<f32>>) -> Vec<f32> {
    let mut v = std::mem::ManuallyDrop::new(v);
    // SAFETY: same allocation, layout-compatible element type; the caller guarantees
    // initialisation.
    unsafe { Vec::from_raw_parts(v.as_mut_ptr().cast::<f32>(), v.len(), v.capacity()) }
}

/// An output buffer shared by parallel tasks that each write values no other task writes
/// (tiles of rows interleaved with other tasks' in memory, so the buffer cannot be split into
/// disjoint slices up front). Only its users' `unsafe` blocks write through it.
#[derive(Clone, Copy)]
pub(crate) struct SharedOut(pub(crate) *mut MaybeUninit<f32>);

// SAFETY: the pointer is only written through by tasks that touch disjoint values (each user
// states which), so sending or sharing it across threads never lets two threads touch one value.
unsafe impl Send for SharedOut {}
// SAFETY: as above.
unsafe impl Sync for SharedOut {}

thread_local! {
    /// Per-thread scratch (im2col and col2im matrices, padded copies of an image), reused
    /// across calls (images of a batch and layers).
    static SCRATCH: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Runs `f` with this thread's scratch buffer of at least `len` values (contents arbitrary).
pub(crate) fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    SCRATCH.with(|cell| {
        let mut buf = cell.borrow_mut();
        if buf.len() < len {
            buf.resize(len, 0.0);
        }
        f(&mut buf[..len])
    })
}
