//! The diffusers `UNet2DModel` `config.json`, field by field, with diffusers' defaults.

use serde::{Deserialize, Serialize};

use crate::UnetError;

/// Block types of the down path that we implement.
pub const DOWN_BLOCK_TYPES: [&str; 2] = ["DownBlock2D", "AttnDownBlock2D"];
/// Block types of the up path that we implement.
pub const UP_BLOCK_TYPES: [&str; 2] = ["UpBlock2D", "AttnUpBlock2D"];

/// Mirror of diffusers' `UNet2DModel` configuration (diffusers 0.42 field names and defaults).
///
/// Fields that exist in diffusers but that we cannot honour are still parsed so that
/// [`UNet2DConfig::validate`] can reject them by name instead of silently ignoring them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct UNet2DConfig {
    #[serde(rename = "_class_name", skip_serializing_if = "Option::is_none")]
    pub class_name: Option<String>,
    #[serde(rename = "_diffusers_version", skip_serializing_if = "Option::is_none")]
    pub diffusers_version: Option<String>,
    pub sample_size: Option<usize>,
    pub in_channels: usize,
    pub out_channels: usize,
    pub center_input_sample: bool,
    pub time_embedding_type: String,
    pub time_embedding_dim: Option<usize>,
    pub freq_shift: f64,
    pub flip_sin_to_cos: bool,
    pub down_block_types: Vec<String>,
    pub mid_block_type: Option<String>,
    pub up_block_types: Vec<String>,
    pub block_out_channels: Vec<usize>,
    pub layers_per_block: usize,
    pub mid_block_scale_factor: f64,
    pub downsample_padding: usize,
    pub downsample_type: String,
    pub upsample_type: String,
    pub dropout: f64,
    pub act_fn: String,
    pub attention_head_dim: Option<usize>,
    pub norm_num_groups: Option<usize>,
    pub attn_norm_num_groups: Option<usize>,
    pub norm_eps: f64,
    pub resnet_time_scale_shift: String,
    pub add_attention: bool,
    pub class_embed_type: Option<String>,
    pub num_class_embeds: Option<usize>,
    pub num_train_timesteps: Option<usize>,
}

impl Default for UNet2DConfig {
    /// diffusers' `UNet2DModel.__init__` defaults.
    fn default() -> Self {
        Self {
            class_name: Some("UNet2DModel".into()),
            diffusers_version: None,
            sample_size: None,
            in_channels: 3,
            out_channels: 3,
            center_input_sample: false,
            time_embedding_type: "positional".into(),
            time_embedding_dim: None,
            freq_shift: 0.0,
            flip_sin_to_cos: true,
            down_block_types: vec![
                "DownBlock2D".into(),
                "AttnDownBlock2D".into(),
                "AttnDownBlock2D".into(),
                "AttnDownBlock2D".into(),
            ],
            mid_block_type: Some("UNetMidBlock2D".into()),
            up_block_types: vec![
                "AttnUpBlock2D".into(),
                "AttnUpBlock2D".into(),
                "AttnUpBlock2D".into(),
                "UpBlock2D".into(),
            ],
            block_out_channels: vec![224, 448, 672, 896],
            layers_per_block: 2,
            mid_block_scale_factor: 1.0,
            downsample_padding: 1,
            downsample_type: "conv".into(),
            upsample_type: "conv".into(),
            dropout: 0.0,
            act_fn: "silu".into(),
            attention_head_dim: Some(8),
            norm_num_groups: Some(32),
            attn_norm_num_groups: None,
            norm_eps: 1e-5,
            resnet_time_scale_shift: "default".into(),
            add_attention: true,
            class_embed_type: None,
            num_class_embeds: None,
            num_train_timesteps: None,
        }
    }
}

fn unsupported(field: &str, value: impl std::fmt::Display, why: &str) -> UnetError {
    UnetError::UnsupportedConfig {
        field: field.to_string(),
        value: value.to_string(),
        why: why.to_string(),
    }
}

impl UNet2DConfig {
    /// The segmentation-guided paper configuration (Konz et al. 2024) for `in_channels`
    /// (image channels + mask channels) at `sample_size`.
    pub fn paper(sample_size: usize, in_channels: usize, out_channels: usize) -> Self {
        Self::with_channels(
            sample_size,
            in_channels,
            out_channels,
            &[128, 128, 256, 256, 512, 512],
            32,
        )
    }

    /// The paper's block layout (4× DownBlock2D, AttnDownBlock2D, DownBlock2D; up mirrored) with
    /// other widths, as used by the fixtures' `tiny` (8..32, 8 groups) and `small` (32..128) configs.
    pub fn with_channels(
        sample_size: usize,
        in_channels: usize,
        out_channels: usize,
        block_out_channels: &[usize],
        norm_num_groups: usize,
    ) -> Self {
        let down = [
            "DownBlock2D",
            "DownBlock2D",
            "DownBlock2D",
            "DownBlock2D",
            "AttnDownBlock2D",
            "DownBlock2D",
        ];
        let up = [
            "UpBlock2D",
            "AttnUpBlock2D",
            "UpBlock2D",
            "UpBlock2D",
            "UpBlock2D",
            "UpBlock2D",
        ];
        let n = block_out_channels.len();
        Self {
            sample_size: Some(sample_size),
            in_channels,
            out_channels,
            block_out_channels: block_out_channels.to_vec(),
            down_block_types: down[6 - n.min(6)..].iter().map(|s| s.to_string()).collect(),
            up_block_types: up[..n.min(6)].iter().map(|s| s.to_string()).collect(),
            norm_num_groups: Some(norm_num_groups),
            ..Self::default()
        }
    }

    /// Parses a `config.json` and validates it.
    pub fn from_json_str(s: &str) -> Result<Self, UnetError> {
        let cfg: Self = serde_json::from_str(s).map_err(|e| UnetError::ConfigParse {
            path: None,
            source: e,
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Reads and validates `path` (a diffusers `config.json`).
    pub fn from_file(path: &std::path::Path) -> Result<Self, UnetError> {
        let text = std::fs::read_to_string(path).map_err(|e| UnetError::Io {
            path: path.to_path_buf(),
            source: e,
        })?;
        let cfg: Self = serde_json::from_str(&text).map_err(|e| UnetError::ConfigParse {
            path: Some(path.to_path_buf()),
            source: e,
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// The config as diffusers writes it (pretty JSON, `_class_name` set).
    pub fn to_json_string(&self) -> String {
        let mut cfg = self.clone();
        cfg.class_name = Some("UNet2DModel".into());
        // Serialising a plain struct of strings/numbers cannot fail.
        serde_json::to_string_pretty(&cfg).unwrap_or_default()
    }

    /// GroupNorm groups of the ResNet blocks (diffusers: `norm_num_groups`, required here).
    pub fn groups(&self) -> usize {
        self.norm_num_groups.unwrap_or(32)
    }

    /// Width of the time embedding MLP.
    pub fn time_embed_dim(&self) -> usize {
        self.time_embedding_dim
            .unwrap_or(self.block_out_channels.first().copied().unwrap_or(0) * 4)
    }

    /// Rejects every value whose behaviour we do not reproduce, naming the field.
    pub fn validate(&self) -> Result<(), UnetError> {
        if let Some(c) = &self.class_name {
            if c != "UNet2DModel" {
                return Err(unsupported(
                    "_class_name",
                    c,
                    "only UNet2DModel is supported",
                ));
            }
        }
        if self.time_embedding_type != "positional" {
            return Err(unsupported(
                "time_embedding_type",
                &self.time_embedding_type,
                "only \"positional\" is supported",
            ));
        }
        if self.act_fn != "silu" && self.act_fn != "swish" {
            return Err(unsupported(
                "act_fn",
                &self.act_fn,
                "only silu is supported",
            ));
        }
        if self.resnet_time_scale_shift != "default" {
            return Err(unsupported(
                "resnet_time_scale_shift",
                &self.resnet_time_scale_shift,
                "only \"default\" is supported",
            ));
        }
        if let Some(t) = &self.class_embed_type {
            return Err(unsupported(
                "class_embed_type",
                t,
                "class embeddings are not supported",
            ));
        }
        if let Some(n) = self.num_class_embeds {
            return Err(unsupported(
                "num_class_embeds",
                n,
                "class embeddings are not supported",
            ));
        }
        if let Some(m) = &self.mid_block_type {
            if m != "UNetMidBlock2D" {
                return Err(unsupported(
                    "mid_block_type",
                    m,
                    "only UNetMidBlock2D is supported",
                ));
            }
        }
        if self.downsample_type != "conv" {
            return Err(unsupported(
                "downsample_type",
                &self.downsample_type,
                "only \"conv\" is supported",
            ));
        }
        if self.upsample_type != "conv" {
            return Err(unsupported(
                "upsample_type",
                &self.upsample_type,
                "only \"conv\" is supported",
            ));
        }
        let n = self.block_out_channels.len();
        if n == 0 {
            return Err(unsupported(
                "block_out_channels",
                "[]",
                "needs at least one block",
            ));
        }
        if self.down_block_types.len() != n {
            return Err(unsupported(
                "down_block_types",
                format!("{:?}", self.down_block_types),
                "must have one entry per block_out_channels entry",
            ));
        }
        if self.up_block_types.len() != n {
            return Err(unsupported(
                "up_block_types",
                format!("{:?}", self.up_block_types),
                "must have one entry per block_out_channels entry",
            ));
        }
        for t in &self.down_block_types {
            if !DOWN_BLOCK_TYPES.contains(&t.as_str()) {
                return Err(unsupported(
                    "down_block_types",
                    t,
                    "supported: DownBlock2D, AttnDownBlock2D",
                ));
            }
        }
        for t in &self.up_block_types {
            if !UP_BLOCK_TYPES.contains(&t.as_str()) {
                return Err(unsupported(
                    "up_block_types",
                    t,
                    "supported: UpBlock2D, AttnUpBlock2D",
                ));
            }
        }
        let Some(groups) = self.norm_num_groups else {
            return Err(unsupported(
                "norm_num_groups",
                "null",
                "a group count is required",
            ));
        };
        if groups == 0 {
            return Err(unsupported("norm_num_groups", 0, "must be positive"));
        }
        for &c in &self.block_out_channels {
            if c == 0 || c % groups != 0 {
                return Err(unsupported(
                    "block_out_channels",
                    c,
                    &format!(
                        "every width must be a positive multiple of norm_num_groups ({groups})"
                    ),
                ));
            }
            let head = self.attention_head_dim.unwrap_or(c);
            if head == 0 || c % head != 0 {
                return Err(unsupported(
                    "attention_head_dim",
                    head,
                    &format!("must divide every block width ({c})"),
                ));
            }
        }
        if let Some(g) = self.attn_norm_num_groups {
            let last = self.block_out_channels[n - 1];
            if g == 0 || !last.is_multiple_of(g) {
                return Err(unsupported(
                    "attn_norm_num_groups",
                    g,
                    &format!("must divide the mid-block width ({last})"),
                ));
            }
        }
        if self.layers_per_block == 0 {
            return Err(unsupported("layers_per_block", 0, "must be at least 1"));
        }
        if self.in_channels == 0 || self.out_channels == 0 {
            return Err(unsupported(
                "in_channels/out_channels",
                0,
                "must be positive",
            ));
        }
        if self.norm_eps.is_nan() || self.norm_eps <= 0.0 {
            return Err(unsupported("norm_eps", self.norm_eps, "must be positive"));
        }
        Ok(())
    }
}
