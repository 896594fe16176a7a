//! diffusers `UNet2DModel`: `conv_in`, time embedding, down blocks, mid block, up blocks,
//! `conv_norm_out` → SiLU → `conv_out`.

use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;

use crate::blocks::{
    AttentionConfig, DownBlock, DownBlockConfig, MidBlock, MidBlockConfig, UpBlock, UpBlockConfig,
};
use crate::config::UNet2DConfig;
use crate::embeddings::{broadcast_timesteps, timestep_features, TimestepEmbedding};
use crate::layers::{group_norm, Conv2d};
use crate::trace::Trace;

/// The denoiser. Build it with [`UNet2DModel::new`] from a validated config and a `VarBuilder`
/// whose paths are the diffusers state-dict names.
#[derive(Debug, Clone)]
pub struct UNet2DModel {
    config: UNet2DConfig,
    conv_in: Conv2d,
    time_embedding: TimestepEmbedding,
    down_blocks: Vec<DownBlock>,
    mid_block: MidBlock,
    up_blocks: Vec<UpBlock>,
    conv_norm_out: crate::cpu_kernels::GroupNorm,
    conv_out: Conv2d,
}

impl UNet2DModel {
    /// Builds the network; `config` must have passed [`UNet2DConfig::validate`].
    pub fn new(config: &UNet2DConfig, vb: VarBuilder) -> Result<Self> {
        let boc = &config.block_out_channels;
        let n = boc.len();
        let temb = config.time_embed_dim();
        let groups = config.groups();
        let eps = config.norm_eps;
        let block_attention = AttentionConfig {
            head_dim: config.attention_head_dim,
            groups,
            eps,
            rescale_output_factor: 1.0,
        };
        let conv_in = Conv2d::new(config.in_channels, boc[0], 3, 1, 1, vb.pp("conv_in"))?;
        let time_embedding = TimestepEmbedding::new(boc[0], temb, vb.pp("time_embedding"))?;

        let mut down_blocks = Vec::with_capacity(n);
        let mut out_channels = boc[0];
        for (i, kind) in config.down_block_types.iter().enumerate() {
            let in_channels = out_channels;
            out_channels = boc[i];
            let cfg = DownBlockConfig {
                in_channels,
                out_channels,
                temb_channels: temb,
                num_layers: config.layers_per_block,
                resnet_groups: groups,
                resnet_eps: eps,
                attention: kind.has_attention().then_some(block_attention),
                add_downsample: i + 1 < n,
                downsample_padding: config.downsample_padding,
            };
            down_blocks.push(DownBlock::new(&cfg, vb.pp("down_blocks").pp(i))?);
        }

        let mid_cfg = MidBlockConfig {
            channels: boc[n - 1],
            temb_channels: temb,
            resnet_groups: groups,
            resnet_eps: eps,
            output_scale_factor: config.mid_block_scale_factor,
            attention: config.add_attention.then_some(AttentionConfig {
                groups: config.attn_norm_num_groups.unwrap_or(groups),
                rescale_output_factor: config.mid_block_scale_factor,
                ..block_attention
            }),
        };
        let mid_block = MidBlock::new(&mid_cfg, vb.pp("mid_block"))?;

        let rev: Vec<usize> = boc.iter().rev().copied().collect();
        let mut up_blocks = Vec::with_capacity(n);
        let mut out_channels = rev[0];
        for (i, kind) in config.up_block_types.iter().enumerate() {
            let prev_output_channel = out_channels;
            out_channels = rev[i];
            let cfg = UpBlockConfig {
                in_channels: rev[(i + 1).min(n - 1)],
                prev_output_channel,
                out_channels,
                temb_channels: temb,
                num_layers: config.layers_per_block + 1,
                resnet_groups: groups,
                resnet_eps: eps,
                attention: kind.has_attention().then_some(block_attention),
                add_upsample: i + 1 < n,
            };
            up_blocks.push(UpBlock::new(&cfg, vb.pp("up_blocks").pp(i))?);
        }

        Ok(Self {
            config: config.clone(),
            conv_in,
            time_embedding,
            down_blocks,
            mid_block,
            up_blocks,
            conv_norm_out: group_norm(groups, boc[0], config.norm_eps, vb.pp("conv_norm_out"))?,
            conv_out: Conv2d::new(boc[0], config.out_channels, 3, 1, 1, vb.pp("conv_out"))?,
        })
    }

    /// The configuration the model was built from.
    pub fn config(&self) -> &UNet2DConfig {
        &self.config
    }

    /// Predicts the model output (ε for the paper's models) for `x` (N, in_channels, H, W) at
    /// `timesteps`: a 0-d scalar or an (N,) vector, integer or float.
    pub fn forward(&self, x: &Tensor, timesteps: &Tensor) -> Result<Tensor> {
        self.forward_traced(x, timesteps, &mut Trace::off())
    }

    /// [`forward`](Self::forward) that also records every block's output into `trace`.
    pub fn forward_traced(
        &self,
        x: &Tensor,
        timesteps: &Tensor,
        trace: &mut Trace,
    ) -> Result<Tensor> {
        let (b, c, h, w) = x.dims4()?;
        if c != self.config.in_channels {
            candle_core::bail!(
                "input has {c} channels but the model expects in_channels = {}",
                self.config.in_channels
            );
        }
        let factor = 1usize << (self.down_blocks.len() - 1);
        if h % factor != 0 || w % factor != 0 {
            candle_core::bail!(
                "input size {h}x{w} must be divisible by {factor} (one halving per down block)"
            );
        }
        let x = if self.config.center_input_sample {
            ((x * 2.0)? - 1.0)?
        } else {
            x.clone()
        };
        let t = broadcast_timesteps(timesteps, b, x.device())?;
        let t_proj = timestep_features(
            &t,
            self.config.block_out_channels[0],
            self.config.flip_sin_to_cos,
            self.config.freq_shift,
        )?
        .to_dtype(x.dtype())?;
        trace.record(|| "time_proj".into(), &t_proj);
        let temb = self.time_embedding.forward(&t_proj)?;
        trace.record(|| "time_embedding".into(), &temb);

        let mut h = self.conv_in.forward(&x)?;
        trace.record(|| "conv_in".into(), &h);
        let mut skips = vec![h.clone()];
        for (i, block) in self.down_blocks.iter().enumerate() {
            let (out, states) = block.forward(&h, &temb, trace, &format!("down_blocks.{i}"))?;
            h = out;
            skips.extend(states);
        }
        h = self.mid_block.forward(&h, &temb, trace)?;
        for (i, block) in self.up_blocks.iter().enumerate() {
            let take = block.num_layers();
            let rest = skips.len() - take;
            h = block.forward(&h, &skips[rest..], &temb, trace, &format!("up_blocks.{i}"))?;
            skips.truncate(rest);
        }
        let h = self.conv_norm_out.forward(&h)?;
        trace.record(|| "conv_norm_out".into(), &h);
        let h = h.silu()?;
        trace.record(|| "conv_act".into(), &h);
        let out = self.conv_out.forward(&h)?;
        trace.record(|| "conv_out".into(), &out);
        Ok(out)
    }

    /// Floating-point operations of one forward pass at `h`×`w`, batch 1 (2 per multiply-add,
    /// convolutions, linear layers and attention products; normalisation and activations are
    /// not counted).
    pub fn flops(&self, h: usize, w: usize) -> u64 {
        let mut f = self.time_embedding.flops() + self.conv_in.flops(h, w);
        let (mut hh, mut ww) = (h, w);
        for block in &self.down_blocks {
            let (bf, nh, nw) = block.flops(hh, ww);
            f += bf;
            (hh, ww) = (nh, nw);
        }
        f += self.mid_block.flops(hh, ww);
        for block in &self.up_blocks {
            let (bf, nh, nw) = block.flops(hh, ww);
            f += bf;
            (hh, ww) = (nh, nw);
        }
        f + self.conv_out.flops(hh, ww)
    }
}
