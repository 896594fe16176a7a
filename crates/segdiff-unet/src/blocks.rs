//! The down, mid and up blocks of `UNet2DModel` (diffusers `DownBlock2D`, `AttnDownBlock2D`,
//! `UNetMidBlock2D`, `UpBlock2D`, `AttnUpBlock2D`). Each is built from a config struct holding
//! the arguments diffusers' `get_down_block` / `get_up_block` / `UNetMidBlock2D` receive.

use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;

use crate::attention::SpatialAttention;
use crate::layers::{upsample_nearest_2x, Conv2d};
use crate::resnet::{ResnetBlock2D, ResnetSpec};
use crate::trace::Trace;

/// The self-attention layers of a block (diffusers `Attention` as the UNet blocks build it).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AttentionConfig {
    /// Channels per head; `None`: one head over all channels (diffusers' default).
    pub head_dim: Option<usize>,
    /// GroupNorm groups in front of the projections.
    pub groups: usize,
    /// GroupNorm epsilon.
    pub eps: f64,
    /// The residual sum is divided by this (diffusers `rescale_output_factor`).
    pub rescale_output_factor: f64,
}

impl AttentionConfig {
    fn build(&self, channels: usize, vb: VarBuilder) -> Result<SpatialAttention> {
        SpatialAttention::new(
            channels,
            self.head_dim.unwrap_or(channels),
            self.groups,
            self.eps,
            self.rescale_output_factor,
            vb,
        )
    }
}

/// Shape of a down block (`down_blocks.{i}`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DownBlockConfig {
    /// Input width (the previous level's output, or `conv_in`'s).
    pub in_channels: usize,
    pub out_channels: usize,
    pub temb_channels: usize,
    /// ResNet layers (diffusers `layers_per_block`).
    pub num_layers: usize,
    pub resnet_groups: usize,
    pub resnet_eps: f64,
    /// `Some` for `AttnDownBlock2D`: attention after every ResNet layer.
    pub attention: Option<AttentionConfig>,
    /// Ends with a stride-2 convolution (every level but the last).
    pub add_downsample: bool,
    pub downsample_padding: usize,
}

/// Shape of an up block (`up_blocks.{i}`); channel arithmetic as diffusers' `get_up_block`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct UpBlockConfig {
    /// Width of the skip state the last layer consumes (the input of the mirrored down block).
    pub in_channels: usize,
    /// Width coming from the previous up block (or the mid block).
    pub prev_output_channel: usize,
    pub out_channels: usize,
    pub temb_channels: usize,
    /// ResNet layers (diffusers `layers_per_block + 1`).
    pub num_layers: usize,
    pub resnet_groups: usize,
    pub resnet_eps: f64,
    /// `Some` for `AttnUpBlock2D`: attention after every ResNet layer.
    pub attention: Option<AttentionConfig>,
    /// Ends with a nearest ×2 upsample and a convolution (every level but the last).
    pub add_upsample: bool,
}

/// Shape of `UNetMidBlock2D` (`mid_block`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MidBlockConfig {
    pub channels: usize,
    pub temb_channels: usize,
    pub resnet_groups: usize,
    pub resnet_eps: f64,
    /// Divides both ResNet outputs (diffusers `output_scale_factor`, the config's
    /// `mid_block_scale_factor`).
    pub output_scale_factor: f64,
    /// `Some` when the config's `add_attention` is set.
    pub attention: Option<AttentionConfig>,
}

/// The layers shared by down and up blocks: `resnets.{j}`, each followed by `attentions.{j}`
/// in the attention variants.
#[derive(Debug, Clone)]
struct Layers {
    resnets: Vec<ResnetBlock2D>,
    attentions: Vec<SpatialAttention>,
}

impl Layers {
    /// One layer per spec, loaded in diffusers' order (resnet `j`, then attention `j`).
    fn new(
        specs: impl IntoIterator<Item = ResnetSpec>,
        attention: Option<AttentionConfig>,
        vb: &VarBuilder,
    ) -> Result<Self> {
        let mut resnets = Vec::new();
        let mut attentions = Vec::new();
        for (j, spec) in specs.into_iter().enumerate() {
            resnets.push(ResnetBlock2D::new(spec, vb.pp("resnets").pp(j))?);
            if let Some(a) = &attention {
                attentions.push(a.build(spec.c_out, vb.pp("attentions").pp(j))?);
            }
        }
        Ok(Self {
            resnets,
            attentions,
        })
    }

    fn len(&self) -> usize {
        self.resnets.len()
    }

    /// Layer `j` on `x`.
    fn forward(
        &self,
        j: usize,
        x: &Tensor,
        temb: &Tensor,
        trace: &mut Trace,
        name: &str,
    ) -> Result<Tensor> {
        let mut h = self.resnets[j].forward(x, temb)?;
        trace.record(|| format!("{name}.resnets.{j}"), &h);
        if let Some(attn) = self.attentions.get(j) {
            h = attn.forward(&h)?;
            trace.record(|| format!("{name}.attentions.{j}"), &h);
        }
        Ok(h)
    }

    fn flops(&self, h: usize, w: usize) -> u64 {
        self.resnets.iter().map(|r| r.flops(h, w)).sum::<u64>()
            + self.attentions.iter().map(|a| a.flops(h, w)).sum::<u64>()
    }
}

/// A down block: ResNet layers (each followed by attention in `AttnDownBlock2D`) and an optional
/// stride-2 convolution.
#[derive(Debug, Clone)]
pub struct DownBlock {
    layers: Layers,
    downsampler: Option<Conv2d>,
    downsample_padding: usize,
}

impl DownBlock {
    /// Loads `down_blocks.{i}` under `vb`.
    pub fn new(cfg: &DownBlockConfig, vb: VarBuilder) -> Result<Self> {
        let specs = (0..cfg.num_layers).map(|j| ResnetSpec {
            c_in: if j == 0 {
                cfg.in_channels
            } else {
                cfg.out_channels
            },
            c_out: cfg.out_channels,
            temb: cfg.temb_channels,
            groups: cfg.resnet_groups,
            eps: cfg.resnet_eps,
            output_scale_factor: 1.0,
        });
        let layers = Layers::new(specs, cfg.attention, &vb)?;
        let downsampler = cfg
            .add_downsample
            .then(|| {
                let c = cfg.out_channels;
                let vb = vb.pp("downsamplers").pp("0").pp("conv");
                Conv2d::new(c, c, 3, 2, cfg.downsample_padding, vb)
            })
            .transpose()?;
        Ok(Self {
            layers,
            downsampler,
            downsample_padding: cfg.downsample_padding,
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
        let mut states = Vec::with_capacity(self.layers.len() + 1);
        for j in 0..self.layers.len() {
            h = self.layers.forward(j, &h, temb, trace, name)?;
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
        let f = self.layers.flops(h, w);
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
    pub fn new(cfg: &MidBlockConfig, vb: VarBuilder) -> Result<Self> {
        let spec = ResnetSpec {
            c_in: cfg.channels,
            c_out: cfg.channels,
            temb: cfg.temb_channels,
            groups: cfg.resnet_groups,
            eps: cfg.resnet_eps,
            output_scale_factor: cfg.output_scale_factor,
        };
        let resnets = vec![
            ResnetBlock2D::new(spec, vb.pp("resnets").pp("0"))?,
            ResnetBlock2D::new(spec, vb.pp("resnets").pp("1"))?,
        ];
        let attention = cfg
            .attention
            .map(|a| a.build(cfg.channels, vb.pp("attentions").pp("0")))
            .transpose()?;
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

/// An up block: ResNet layers over `[h, skip]` concatenations (each followed by attention in
/// `AttnUpBlock2D`) and an optional nearest ×2 upsample + convolution.
#[derive(Debug, Clone)]
pub struct UpBlock {
    layers: Layers,
    upsampler: Option<Conv2d>,
}

impl UpBlock {
    /// Loads `up_blocks.{i}` under `vb`.
    pub fn new(cfg: &UpBlockConfig, vb: VarBuilder) -> Result<Self> {
        let specs = (0..cfg.num_layers).map(|j| {
            let skip = if j + 1 == cfg.num_layers {
                cfg.in_channels
            } else {
                cfg.out_channels
            };
            let input = if j == 0 {
                cfg.prev_output_channel
            } else {
                cfg.out_channels
            };
            ResnetSpec {
                c_in: input + skip,
                c_out: cfg.out_channels,
                temb: cfg.temb_channels,
                groups: cfg.resnet_groups,
                eps: cfg.resnet_eps,
                output_scale_factor: 1.0,
            }
        });
        let layers = Layers::new(specs, cfg.attention, &vb)?;
        let upsampler = cfg
            .add_upsample
            .then(|| {
                let c = cfg.out_channels;
                Conv2d::new(c, c, 3, 1, 1, vb.pp("upsamplers").pp("0").pp("conv"))
            })
            .transpose()?;
        Ok(Self { layers, upsampler })
    }

    /// Number of skip states this block consumes.
    pub fn num_layers(&self) -> usize {
        self.layers.len()
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
        if skips.len() != self.layers.len() {
            candle_core::bail!(
                "{name}: expected {} skip states, got {}",
                self.layers.len(),
                skips.len()
            );
        }
        let mut h = x.clone();
        for (j, skip) in skips.iter().rev().enumerate() {
            h = self
                .layers
                .forward(j, &Tensor::cat(&[&h, skip], 1)?, temb, trace, name)?;
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
        let f = self.layers.flops(h, w);
        match &self.upsampler {
            Some(u) => (f + u.flops(2 * h, 2 * w), 2 * h, 2 * w),
            None => (f, h, w),
        }
    }
}
