//! The down, mid and up blocks of `UNet2DModel` (diffusers `DownBlock2D`, `AttnDownBlock2D`,
//! `UNetMidBlock2D`, `UpBlock2D`, `AttnUpBlock2D`).

use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;

use crate::attention::SpatialAttention;
use crate::layers::{upsample_nearest_2x, Conv2d};
use crate::resnet::{ResnetBlock2D, ResnetSpec};
use crate::trace::Trace;

/// Shared shape parameters of a block.
#[derive(Debug, Clone, Copy)]
pub struct BlockSpec {
    pub temb: usize,
    pub groups: usize,
    pub eps: f64,
    pub head_dim: Option<usize>,
}

impl BlockSpec {
    fn resnet(&self, c_in: usize, c_out: usize) -> ResnetSpec {
        ResnetSpec {
            c_in,
            c_out,
            temb: self.temb,
            groups: self.groups,
            eps: self.eps,
            output_scale_factor: 1.0,
        }
    }

    fn attention(&self, channels: usize, vb: VarBuilder) -> Result<SpatialAttention> {
        let head = self.head_dim.unwrap_or(channels);
        SpatialAttention::new(channels, head, self.groups, self.eps, 1.0, vb)
    }
}

/// A down block: `layers` ResNet blocks (each followed by attention in `AttnDownBlock2D`) and an
/// optional stride-2 convolution.
#[derive(Debug, Clone)]
pub struct DownBlock {
    resnets: Vec<ResnetBlock2D>,
    attentions: Vec<SpatialAttention>,
    downsampler: Option<Conv2d>,
    downsample_padding: usize,
}

impl DownBlock {
    #[allow(clippy::too_many_arguments)]
    /// Loads `down_blocks.{i}` under `vb`.
    pub fn new(
        spec: BlockSpec,
        c_in: usize,
        c_out: usize,
        layers: usize,
        attention: bool,
        add_downsample: bool,
        downsample_padding: usize,
        vb: VarBuilder,
    ) -> Result<Self> {
        let mut resnets = Vec::with_capacity(layers);
        let mut attentions = Vec::new();
        for j in 0..layers {
            let ci = if j == 0 { c_in } else { c_out };
            resnets.push(ResnetBlock2D::new(
                spec.resnet(ci, c_out),
                vb.pp("resnets").pp(j),
            )?);
            if attention {
                attentions.push(spec.attention(c_out, vb.pp("attentions").pp(j))?);
            }
        }
        let downsampler = if add_downsample {
            Some(Conv2d::new(
                c_out,
                c_out,
                3,
                2,
                downsample_padding,
                vb.pp("downsamplers").pp("0").pp("conv"),
            )?)
        } else {
            None
        };
        Ok(Self {
            resnets,
            attentions,
            downsampler,
            downsample_padding,
        })
    }

    /// Returns the block output and the skip states it contributes, in order.
    pub fn forward(
        &self,
        x: &Tensor,
        temb: &Tensor,
        trace: &mut Trace,
        name: &str,
    ) -> Result<(Tensor, Vec<Tensor>)> {
        let mut h = x.clone();
        let mut states = Vec::with_capacity(self.resnets.len() + 1);
        for (j, resnet) in self.resnets.iter().enumerate() {
            h = resnet.forward(&h, temb)?;
            trace.record(|| format!("{name}.resnets.{j}"), &h);
            if let Some(attn) = self.attentions.get(j) {
                h = attn.forward(&h)?;
                trace.record(|| format!("{name}.attentions.{j}"), &h);
            }
            states.push(h.clone());
        }
        if let Some(down) = &self.downsampler {
            // diffusers pads right/bottom by one when downsample_padding is 0.
            if self.downsample_padding == 0 {
                h = h.pad_with_zeros(2, 0, 1)?.pad_with_zeros(3, 0, 1)?;
            }
            h = down.forward(&h)?;
            trace.record(|| format!("{name}.downsamplers.0"), &h);
            states.push(h.clone());
        }
        trace.record(|| name.to_string(), &h);
        Ok((h, states))
    }

    /// FLOPs for an `h`×`w` input, batch 1, and the output size.
    pub fn flops(&self, h: usize, w: usize) -> (u64, usize, usize) {
        let mut f = 0;
        for (j, r) in self.resnets.iter().enumerate() {
            f += r.flops(h, w);
            if let Some(a) = self.attentions.get(j) {
                f += a.flops(h, w);
            }
        }
        match &self.downsampler {
            Some(d) => {
                let extra = usize::from(self.downsample_padding == 0);
                let (ph, pw) = (h + extra, w + extra);
                (f + d.flops(ph, pw), d.out_size(ph), d.out_size(pw))
            }
            None => (f, h, w),
        }
    }
}

/// `UNetMidBlock2D`: ResNet, attention, ResNet.
#[derive(Debug, Clone)]
pub struct MidBlock {
    resnets: Vec<ResnetBlock2D>,
    attention: Option<SpatialAttention>,
}

impl MidBlock {
    /// Loads `mid_block` under `vb`.
    pub fn new(
        spec: BlockSpec,
        channels: usize,
        attn_groups: usize,
        add_attention: bool,
        output_scale_factor: f64,
        vb: VarBuilder,
    ) -> Result<Self> {
        let rspec = ResnetSpec {
            output_scale_factor,
            ..spec.resnet(channels, channels)
        };
        let resnets = vec![
            ResnetBlock2D::new(rspec, vb.pp("resnets").pp("0"))?,
            ResnetBlock2D::new(rspec, vb.pp("resnets").pp("1"))?,
        ];
        let attention = if add_attention {
            let head = spec.head_dim.unwrap_or(channels);
            Some(SpatialAttention::new(
                channels,
                head,
                attn_groups,
                spec.eps,
                output_scale_factor,
                vb.pp("attentions").pp("0"),
            )?)
        } else {
            None
        };
        Ok(Self { resnets, attention })
    }

    /// Mid-block output.
    pub fn forward(&self, x: &Tensor, temb: &Tensor, trace: &mut Trace) -> Result<Tensor> {
        let mut h = self.resnets[0].forward(x, temb)?;
        trace.record(|| "mid_block.resnets.0".into(), &h);
        if let Some(a) = &self.attention {
            h = a.forward(&h)?;
            trace.record(|| "mid_block.attentions.0".into(), &h);
        }
        let h = self.resnets[1].forward(&h, temb)?;
        trace.record(|| "mid_block.resnets.1".into(), &h);
        trace.record(|| "mid_block".into(), &h);
        Ok(h)
    }

    /// FLOPs for an `h`×`w` input, batch 1.
    pub fn flops(&self, h: usize, w: usize) -> u64 {
        self.resnets.iter().map(|r| r.flops(h, w)).sum::<u64>()
            + self.attention.as_ref().map_or(0, |a| a.flops(h, w))
    }
}

/// An up block: `layers` ResNet blocks over `[h, skip]` concatenations (each followed by
/// attention in `AttnUpBlock2D`) and an optional nearest ×2 upsample + convolution.
#[derive(Debug, Clone)]
pub struct UpBlock {
    resnets: Vec<ResnetBlock2D>,
    attentions: Vec<SpatialAttention>,
    upsampler: Option<Conv2d>,
}

impl UpBlock {
    #[allow(clippy::too_many_arguments)]
    /// Loads `up_blocks.{i}` under `vb`; channel arithmetic as diffusers' `get_up_block`.
    pub fn new(
        spec: BlockSpec,
        c_in: usize,
        c_prev: usize,
        c_out: usize,
        layers: usize,
        attention: bool,
        add_upsample: bool,
        vb: VarBuilder,
    ) -> Result<Self> {
        let mut resnets = Vec::with_capacity(layers);
        let mut attentions = Vec::new();
        for j in 0..layers {
            let skip = if j == layers - 1 { c_in } else { c_out };
            let resnet_in = if j == 0 { c_prev } else { c_out };
            resnets.push(ResnetBlock2D::new(
                spec.resnet(resnet_in + skip, c_out),
                vb.pp("resnets").pp(j),
            )?);
            if attention {
                attentions.push(spec.attention(c_out, vb.pp("attentions").pp(j))?);
            }
        }
        let upsampler = if add_upsample {
            Some(Conv2d::new(
                c_out,
                c_out,
                3,
                1,
                1,
                vb.pp("upsamplers").pp("0").pp("conv"),
            )?)
        } else {
            None
        };
        Ok(Self {
            resnets,
            attentions,
            upsampler,
        })
    }

    /// Number of skip states this block consumes.
    pub fn num_layers(&self) -> usize {
        self.resnets.len()
    }

    /// `skips` holds this block's skip states in down-path order; they are used last first.
    pub fn forward(
        &self,
        x: &Tensor,
        skips: &[Tensor],
        temb: &Tensor,
        trace: &mut Trace,
        name: &str,
    ) -> Result<Tensor> {
        if skips.len() != self.resnets.len() {
            candle_core::bail!(
                "{name}: expected {} skip states, got {}",
                self.resnets.len(),
                skips.len()
            );
        }
        let mut h = x.clone();
        for (j, resnet) in self.resnets.iter().enumerate() {
            let skip = &skips[skips.len() - 1 - j];
            h = resnet.forward(&Tensor::cat(&[&h, skip], 1)?, temb)?;
            trace.record(|| format!("{name}.resnets.{j}"), &h);
            if let Some(attn) = self.attentions.get(j) {
                h = attn.forward(&h)?;
                trace.record(|| format!("{name}.attentions.{j}"), &h);
            }
        }
        if let Some(up) = &self.upsampler {
            h = up.forward(&upsample_nearest_2x(&h)?)?;
            trace.record(|| format!("{name}.upsamplers.0"), &h);
        }
        trace.record(|| name.to_string(), &h);
        Ok(h)
    }

    /// FLOPs for an `h`×`w` input, batch 1, and the output size.
    pub fn flops(&self, h: usize, w: usize) -> (u64, usize, usize) {
        let mut f = 0;
        for (j, r) in self.resnets.iter().enumerate() {
            f += r.flops(h, w);
            if let Some(a) = self.attentions.get(j) {
                f += a.flops(h, w);
            }
        }
        match &self.upsampler {
            Some(u) => (f + u.flops(2 * h, 2 * w), 2 * h, 2 * w),
            None => (f, h, w),
        }
    }
}
