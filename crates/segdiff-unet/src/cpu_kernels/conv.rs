//! [`conv2d`] and the custom ops behind it: forward (x, w, b) and the three gradients.

use candle_core::backend::BackendStorage;
use candle_core::{
    CpuStorage, CustomOp1, CustomOp2, CustomOp3, Error, Layout, Result, Shape, Tensor,
};

use super::conv_geometry::ConvGeom;
use super::{contiguous, gemm_conv, runs_here, Element};

/// Square kernels of candle tensors the kernels support.
fn runs_fast(x: &Tensor, weight: &Tensor) -> bool {
    runs_here(x)
        && weight.dtype() == x.dtype()
        && weight.rank() == 4
        && weight.dim(2).ok() == weight.dim(3).ok()
}

/// `conv2d(x, weight) + bias` like PyTorch's `F.conv2d` with groups 1 and dilation 1: `x`
/// `[N, C_in, H, W]`, `weight` `[C_out, C_in, k, k]`, `bias` `[C_out]`. Differentiable with
/// respect to all three.
pub fn conv2d(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    stride: usize,
    padding: usize,
) -> Result<Tensor> {
    if !runs_fast(x, weight) {
        return add_channel_bias(x.conv2d(weight, padding, stride, 1, 1)?, bias);
    }
    apply_with_bias(x, weight, bias, weight.dim(0)?, Conv { stride, padding })
}

/// `y + bias` per channel (dim 1), candle's way: the fallback of both convolutions.
fn add_channel_bias(y: Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    match bias {
        Some(b) => y.broadcast_add(&b.reshape((1, b.dim(0)?, 1, 1))?),
        None => Ok(y),
    }
}

/// `op(x, w, bias)`, with a constant zero bias of `channels` values where there is none: it is
/// not tracked, so no gradient is computed for it.
fn apply_with_bias(
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    channels: usize,
    op: impl CustomOp3 + Send + Sync + 'static,
) -> Result<Tensor> {
    match bias {
        Some(b) => x.apply_op3(w, b, op),
        None => x.apply_op3(w, &Tensor::zeros(channels, x.dtype(), x.device())?, op),
    }
}

/// `conv2d(x, w) + b` (CustomOp3 over x, w, b).
#[derive(Debug, Clone, Copy)]
struct Conv {
    stride: usize,
    padding: usize,
}

impl Conv {
    fn run<T: Element>(
        &self,
        (s1, l1): (&CpuStorage, &Layout),
        (s2, l2): (&CpuStorage, &Layout),
        (s3, l3): (&CpuStorage, &Layout),
    ) -> Result<(CpuStorage, Shape)> {
        let g = ConvGeom::new(l1.dims(), l2.dims(), self.stride, self.padding)?;
        if l3.dims() != [g.c_out] {
            return Err(Error::Msg(format!(
                "conv2d: bias of shape {:?} for {} output channels",
                l3.dims(),
                g.c_out
            )));
        }
        let x = contiguous::<T>(s1, l1)?;
        let w = contiguous::<T>(s2, l2)?;
        let b = contiguous::<T>(s3, l3)?;
        let y = gemm_conv::forward(&x, &w, Some(&b), &g);
        Ok((
            T::to_cpu_storage_owned(y),
            Shape::from((g.batch, g.c_out, g.oh, g.ow)),
        ))
    }
}

impl CustomOp3 for Conv {
    fn name(&self) -> &'static str {
        "segdiff-conv2d"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        by_element_type!(self.name(), s1.dtype(), T => self.run::<T>((s1, l1), (s2, l2), (s3, l3)))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (_, _, h, wd) = x.dims4()?;
        // Only what the graph needs: the network input and frozen weights get no gradient.
        let dx = if x.track_op() {
            Some(dy.apply_op2_no_bwd(
                w,
                &InputGrad {
                    stride: self.stride,
                    padding: self.padding,
                    h,
                    w: wd,
                },
            )?)
        } else {
            None
        };
        let dw = if w.track_op() {
            Some(x.apply_op2_no_bwd(
                dy,
                &WeightGrad {
                    stride: self.stride,
                    padding: self.padding,
                    k: w.dim(2)?,
                },
            )?)
        } else {
            None
        };
        let db = if b.track_op() {
            Some(dy.apply_op1_no_bwd(&BiasGrad)?)
        } else {
            None
        };
        Ok((dx, dw, db))
    }
}

/// `dx` from `(dy, w)` for an input of `h`×`w` (with stride > 1 it is not implied by `dy`).
#[derive(Debug, Clone, Copy)]
struct InputGrad {
    stride: usize,
    padding: usize,
    h: usize,
    w: usize,
}

impl InputGrad {
    /// `convᵀ(dy, w)`, plus `bias` per channel when given (the transposed convolution's).
    fn run<T: Element>(
        &self,
        (s1, l1): (&CpuStorage, &Layout),
        (s2, l2): (&CpuStorage, &Layout),
        bias: Option<(&CpuStorage, &Layout)>,
    ) -> Result<(CpuStorage, Shape)> {
        let (&[batch, _, _, _], &[_, c_in, _, _]) = (l1.dims(), l2.dims()) else {
            return Err(Error::Msg(format!(
                "conv2d backward: dy {:?} and weight {:?} must be 4-D",
                l1.dims(),
                l2.dims()
            )));
        };
        let g = ConvGeom::new(
            &[batch, c_in, self.h, self.w],
            l2.dims(),
            self.stride,
            self.padding,
        )?;
        g.check_output(l1.dims())?;
        let dy = contiguous::<T>(s1, l1)?;
        let w = contiguous::<T>(s2, l2)?;
        let b = match bias {
            Some((_, l3)) if l3.dims() != [c_in] => {
                return Err(Error::Msg(format!(
                    "conv_transpose2d: bias of shape {:?} for {c_in} output channels",
                    l3.dims()
                )))
            }
            Some((s3, l3)) => Some(contiguous::<T>(s3, l3)?),
            None => None,
        };
        let dx = gemm_conv::input_grad(&dy, &w, b.as_deref(), &g);
        Ok((
            T::to_cpu_storage_owned(dx),
            Shape::from((batch, c_in, self.h, self.w)),
        ))
    }
}

impl CustomOp2 for InputGrad {
    fn name(&self) -> &'static str {
        "segdiff-conv2d-input-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        by_element_type!(self.name(), s1.dtype(), T => self.run::<T>((s1, l1), (s2, l2), None))
    }
}

/// `dw` from `(x, dy)` for a `k`×`k` kernel.
#[derive(Debug, Clone, Copy)]
struct WeightGrad {
    stride: usize,
    padding: usize,
    k: usize,
}

impl WeightGrad {
    fn run<T: Element>(
        &self,
        (s1, l1): (&CpuStorage, &Layout),
        (s2, l2): (&CpuStorage, &Layout),
    ) -> Result<(CpuStorage, Shape)> {
        let (&[_, c_in, _, _], &[_, c_out, _, _]) = (l1.dims(), l2.dims()) else {
            return Err(Error::Msg(format!(
                "conv2d backward: x {:?} and dy {:?} must be 4-D",
                l1.dims(),
                l2.dims()
            )));
        };
        let g = ConvGeom::new(
            l1.dims(),
            &[c_out, c_in, self.k, self.k],
            self.stride,
            self.padding,
        )?;
        g.check_output(l2.dims())?;
        let x = contiguous::<T>(s1, l1)?;
        let dy = contiguous::<T>(s2, l2)?;
        let dw = gemm_conv::weight_grad(&x, &dy, &g);
        Ok((
            T::to_cpu_storage_owned(dw),
            Shape::from((c_out, c_in, self.k, self.k)),
        ))
    }
}

impl CustomOp2 for WeightGrad {
    fn name(&self) -> &'static str {
        "segdiff-conv2d-weight-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        by_element_type!(self.name(), s1.dtype(), T => self.run::<T>((s1, l1), (s2, l2)))
    }
}

/// `db` from `dy`: the sum over batch and pixels.
#[derive(Debug, Clone, Copy)]
struct BiasGrad;

impl BiasGrad {
    fn run<T: Element>(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let &[batch, channels, _, _] = l.dims() else {
            return Err(Error::Msg(format!(
                "conv2d backward: dy {:?} must be 4-D",
                l.dims()
            )));
        };
        let dy = contiguous::<T>(s, l)?;
        let db = gemm_conv::bias_grad(&dy, batch, channels);
        Ok((T::to_cpu_storage_owned(db), Shape::from(channels)))
    }
}

impl CustomOp1 for BiasGrad {
    fn name(&self) -> &'static str {
        "segdiff-conv2d-bias-grad"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        by_element_type!(self.name(), s.dtype(), T => self.run::<T>(s, l))
    }
}

/// `conv_transpose2d(x, weight) + bias` like PyTorch's `F.conv_transpose2d` with groups 1 and
/// dilation 1: `x` `[N, C_in, H, W]`, `weight` `[C_in, C_out, k, k]`, `bias` `[C_out]`; the
/// output is `(H − 1)·stride − 2·padding + k + output_padding` high (and wide). Differentiable
/// with respect to all three.
///
/// A transposed convolution is the input gradient of the convolution whose weight is the same
/// tensor: it runs on that GEMM kernel, which starts from the bias (no separate pass adds it),
/// and its own gradients are that convolution's forward (for `x`) and weight gradient (for
/// `weight`).
pub fn conv_transpose2d(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    stride: usize,
    padding: usize,
    output_padding: usize,
) -> Result<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    let k = weight.dim(2)?;
    let out =
        |n: usize| (n.saturating_sub(1) * stride + k + output_padding).checked_sub(2 * padding);
    let (Some(oh), Some(ow)) = (out(h), out(w)) else {
        return Err(Error::Msg(format!(
            "conv_transpose2d: input {:?} with kernel {k}, stride {stride}, padding {padding} \
             has no output",
            x.dims()
        )));
    };
    if output_padding >= stride.max(1) {
        return Err(Error::Msg(format!(
            "conv_transpose2d: output_padding {output_padding} must be below the stride {stride}"
        )));
    }
    if !runs_fast(x, weight) {
        let y = x.conv_transpose2d(weight, padding, output_padding, stride, 1)?;
        return add_channel_bias(y, bias);
    }
    let op = TransposedConv {
        stride,
        padding,
        h: oh,
        w: ow,
    };
    apply_with_bias(x, weight, bias, weight.dim(1)?, op)
}

/// `conv_transpose2d(x, w) + b` to an `h`×`w` output (CustomOp3 over x, w, b).
#[derive(Debug, Clone, Copy)]
struct TransposedConv {
    stride: usize,
    padding: usize,
    h: usize,
    w: usize,
}

impl TransposedConv {
    fn as_input_grad(&self) -> InputGrad {
        InputGrad {
            stride: self.stride,
            padding: self.padding,
            h: self.h,
            w: self.w,
        }
    }
}

impl CustomOp3 for TransposedConv {
    fn name(&self) -> &'static str {
        "segdiff-conv-transpose2d"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let op = self.as_input_grad();
        by_element_type!(self.name(), s1.dtype(), T => op.run::<T>((s1, l1), (s2, l2), Some((s3, l3))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let dx = if x.track_op() {
            let zeros = Tensor::zeros(w.dim(0)?, dy.dtype(), dy.device())?;
            Some(dy.apply_op3_no_bwd(
                w,
                &zeros,
                &Conv {
                    stride: self.stride,
                    padding: self.padding,
                },
            )?)
        } else {
            None
        };
        let dw = if w.track_op() {
            Some(dy.apply_op2_no_bwd(
                x,
                &WeightGrad {
                    stride: self.stride,
                    padding: self.padding,
                    k: w.dim(2)?,
                },
            )?)
        } else {
            None
        };
        let db = if b.track_op() {
            Some(dy.apply_op1_no_bwd(&BiasGrad)?)
        } else {
            None
        };
        Ok((dx, dw, db))
    }
}
