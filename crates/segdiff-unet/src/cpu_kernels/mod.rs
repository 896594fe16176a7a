//! Fast CPU kernels for the UNets' heaviest ops, as differentiable candle custom ops.
//!
//! candle 0.11's CPU `conv2d` spends most of its time outside the GEMM and computes the input
//! gradient with a direct loop (`conv_transpose2d`, ~10 GFLOP/s); its GroupNorm and SiLU are
//! a dozen separate passes over memory, each with its own backward. Here:
//! - [`conv2d`]: banded im2col + `gemm` (AVX-512 where available) writing straight into the
//!   NCHW result, with a GEMM-based backward (input, weight and bias gradients);
//! - [`conv_transpose2d`]: the transposed convolution (MONAI's up-sampling path) on the same
//!   kernels: it is the convolution's input gradient, and its gradients are the convolution's
//!   forward and weight gradient;
//! - [`group_norm`] / [`GroupNorm`]: GroupNorm with an optional fused SiLU, the passes over
//!   each group done while it sits in cache, and a fused backward.
//!
//! Both run for CPU f32/f64 tensors and fall back to candle's own ops everywhere else (CUDA,
//! other dtypes), or when [`set_enabled`]`(false)` asks for candle's path (A/B benchmarks).

/// `$call` with the type alias `$T` set to the element type of `$dtype` (f32 or f64), or the
/// unsupported-dtype error of op `$op`: the dtype dispatch of every custom op's `cpu_fwd`.
macro_rules! by_element_type {
    ($op:expr, $dtype:expr, $T:ident => $call:expr) => {
        match $dtype {
            candle_core::DType::F32 => {
                type $T = f32;
                $call
            }
            candle_core::DType::F64 => {
                type $T = f64;
                $call
            }
            other => Err($crate::cpu_kernels::dtype_error($op, other)),
        }
    };
}

mod conv;
mod conv_geometry;
mod gemm_conv;
mod group_norm;
mod im2col;
mod vector_math;
mod winograd;

#[cfg(test)]
mod conv_tests;

use std::borrow::Cow;
use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicBool, Ordering};

use candle_core::{CpuStorage, DType, Layout, Result, Tensor, WithDType};

pub use conv::{conv2d, conv_transpose2d};
pub use group_norm::{group_norm, group_norm_prelu_inference, GroupNorm};

/// The element types the kernels run on (the `gemm` crate's real types).
pub(crate) trait Element: WithDType + vector_math::Silu {
    /// Runs `f` on `len` elements of this thread's reusable scratch memory (contents
    /// unspecified). rayon's workers live as long as the process, so the im2col tiles and
    /// Winograd buffers are allocated, and page-faulted in, once per thread rather than once
    /// per call; a nested call on the same thread gets a fresh buffer.
    fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [Self]) -> R) -> R;
}

macro_rules! element_with_scratch {
    ($t:ty) => {
        impl Element for $t {
            fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [Self]) -> R) -> R {
                thread_local! {
                    static SCRATCH: std::cell::RefCell<Vec<$t>> =
                        const { std::cell::RefCell::new(Vec::new()) };
                }
                SCRATCH.with(|cell| match cell.try_borrow_mut() {
                    Ok(mut buf) => {
                        if buf.len() < len {
                            buf.resize(len, 0.0);
                        }
                        f(&mut buf[..len])
                    }
                    Err(_) => f(&mut vec![0.0; len]),
                })
            }
        }
    };
}
element_with_scratch!(f32);
element_with_scratch!(f64);

/// Runs `f(item, scratch, alone)` for every work item: spread over rayon's threads when
/// `parallel` (`alone = false`: the item must not start parallel work of its own), else one
/// after the other on this thread (`alone = true`: the item may use all threads inside).
/// `scratch` holds `scratch_len` elements of per-thread scratch memory.
fn for_each_item<T: Element>(
    items: &[usize],
    parallel: bool,
    scratch_len: usize,
    f: impl Fn(usize, &mut [T], bool) + Sync,
) {
    use rayon::prelude::*;
    if parallel {
        let threads = rayon::current_num_threads().max(1);
        items
            .par_iter()
            .with_min_len(items.len().div_ceil(4 * threads).max(1))
            .for_each(|&item| T::with_scratch(scratch_len, |s| f(item, s, false)));
    } else {
        T::with_scratch(scratch_len, |s| {
            for &item in items {
                f(item, s, true);
            }
        });
    }
}

static ENABLED: AtomicBool = AtomicBool::new(true);

/// Chooses, for the whole process, between these kernels (`true`, the default) and candle's
/// own ops (`false`); meant for A/B benchmarks and for ruling the kernels out.
pub fn set_enabled(enabled: bool) {
    ENABLED.store(enabled, Ordering::Relaxed);
}

/// Whether [`conv2d`] and [`group_norm`] use these kernels where they can.
pub fn is_enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Whether tensors of this device and dtype run on these kernels.
fn runs_here(t: &Tensor) -> bool {
    is_enabled() && t.device().is_cpu() && matches!(t.dtype(), DType::F32 | DType::F64)
}

/// A storage slice in row-major order: borrowed when the layout is contiguous, else gathered.
fn contiguous<'a, T: WithDType>(s: &'a CpuStorage, l: &Layout) -> Result<Cow<'a, [T]>> {
    let data = T::cpu_storage_as_slice(s)?;
    if let Some((start, end)) = l.contiguous_offsets() {
        return Ok(Cow::Borrowed(&data[start..end]));
    }
    let dims = l.dims();
    let strides = l.stride();
    let mut out = Vec::with_capacity(l.shape().elem_count());
    if dims.contains(&0) {
        return Ok(Cow::Owned(out));
    }
    let mut index = vec![0usize; dims.len()];
    let mut offset = l.start_offset();
    loop {
        out.push(data[offset]);
        let mut d = dims.len();
        loop {
            if d == 0 {
                return Ok(Cow::Owned(out));
            }
            d -= 1;
            index[d] += 1;
            offset += strides[d];
            if index[d] < dims[d] {
                break;
            }
            offset -= strides[d] * dims[d];
            index[d] = 0;
        }
    }
}

/// A raw pointer that parallel tasks share; each task writes only its own part.
#[derive(Clone, Copy)]
struct SendPtr<T>(*mut T);
// SAFETY: only used to hand disjoint regions of one buffer to rayon tasks (see each use).
unsafe impl<T> Send for SendPtr<T> {}
unsafe impl<T> Sync for SendPtr<T> {}

impl<T> SendPtr<T> {
    fn get(self) -> *mut T {
        self.0
    }
}

fn dtype_error(op: &str, dtype: DType) -> candle_core::Error {
    candle_core::Error::Msg(format!(
        "{op}: only f32 and f64 run on segdiff's CPU kernels, got {dtype:?}"
    ))
}

/// `len` elements of uninitialised memory for a result that is written in full before it is
/// read, turned into the result by [`assume_init`]. `vec![0; len]` would spend a pass over the
/// memory on zeros that are overwritten: 1.2 ms for an 8 MiB activation here, as long as a
/// GroupNorm's own work on it.
fn uninit<T>(len: usize) -> Vec<MaybeUninit<T>> {
    let mut v = Vec::with_capacity(len);
    // SAFETY: MaybeUninit<T> needs no initialisation; the capacity is `len`.
    unsafe { v.set_len(len) };
    v
}

/// The initialised result of [`uninit`].
///
/// # Safety
/// Every element of `v` must have been written.
unsafe fn assume_init<T>(v: Vec<MaybeUninit<T>>) -> Vec<T> {
    let mut v = std::mem::ManuallyDrop::new(v);
    // SAFETY: the same allocation, length and capacity, MaybeUninit<T> has T's layout, and the
    // caller guarantees that every element is initialised.
    unsafe { Vec::from_raw_parts(v.as_mut_ptr().cast::<T>(), v.len(), v.capacity()) }
}
