//! The diffusers `UNet2DModel` `config.json`, field by field, with diffusers' defaults, and the
//! block types its `down_block_types` / `up_block_types` may name.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::UnetError;

/// A block type of one path, written in `config.json` as the diffusers class name; any other
/// name is rejected when the config is parsed, with the config field that holds it.
macro_rules! block_type {
    (
        $(#[$meta:meta])*
        $name:ident, field = $field:literal,
        plain = $plain:ident, attention = $attn:ident $(,)?
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "&'static str")]
        pub enum $name {
            #[doc = concat!("diffusers `", stringify!($plain), "`: ResNet layers only.")]
            $plain,
            #[doc = concat!(
                "diffusers `", stringify!($attn), "`: self-attention after every ResNet layer."
            )]
            $attn,
        }

        impl $name {
            /// Every supported type.
            pub const ALL: [Self; 2] = [Self::$plain, Self::$attn];

            /// The diffusers class name, as written in `config.json`.
            pub fn as_str(self) -> &'static str {
                match self {
                    Self::$plain => stringify!($plain),
                    Self::$attn => stringify!($attn),
                }
            }

            /// The attention variant when `attention` is set, else the plain one.
            pub fn with_attention(attention: bool) -> Self {
                if attention {
                    Self::$attn
                } else {
                    Self::$plain
                }
            }

            /// Whether the block has self-attention layers.
            pub fn has_attention(self) -> bool {
                self == Self::$attn
            }
        }

        impl FromStr for $name {
            type Err = UnetError;

            fn from_str(s: &str) -> Result<Self, UnetError> {
                Self::ALL
                    .into_iter()
                    .find(|t| t.as_str() == s)
                    .ok_or_else(|| {
                        let names: Vec<&str> = Self::ALL.iter().map(|t| t.as_str()).collect();
                        unsupported($field, s, &format!("supported: {}", names.join(", ")))
                    })
            }
        }

        impl TryFrom<String> for $name {
            type Error = UnetError;

            fn try_from(s: String) -> Result<Self, UnetError> {
                s.parse()
            }
        }

        impl From<$name> for &'static str {
            fn from(t: $name) -> Self {
                t.as_str()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.pad(self.as_str())
            }
        }
    };
}

block_type!(
    /// An entry of `down_block_types`.
    DownBlockType,
    field = "down_block_types",
    plain = DownBlock2D,
    attention = AttnDownBlock2D,
);

block_type!(
    /// An entry of `up_block_types`.
    UpBlockType,
    field = "up_block_types",
    plain = UpBlock2D,
    attention = AttnUpBlock2D,
);

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
    pub down_block_types: Vec<DownBlockType>,
    pub mid_block_type: Option<String>,
    pub up_block_types: Vec<UpBlockType>,
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
                DownBlockType::DownBlock2D,
                DownBlockType::AttnDownBlock2D,
                DownBlockType::AttnDownBlock2D,
                DownBlockType::AttnDownBlock2D,
            ],
            mid_block_type: Some("UNetMidBlock2D".into()),
            up_block_types: vec![
                UpBlockType::AttnUpBlock2D,
                UpBlockType::AttnUpBlock2D,
                UpBlockType::AttnUpBlock2D,
                UpBlockType::UpBlock2D,
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

/// The first unknown name in `down_block_types` or `up_block_types` of a JSON text, as the
/// error that names its field. serde's error for it is only a `ConfigParse` source, so a failed
/// parse looks here to report it like every other unsupported value.
fn unsupported_block_type(text: &str) -> Option<UnetError> {
    let value: serde_json::Value = serde_json::from_str(text).ok()?;
    let names = |field: &str| {
        value
            .get(field)
            .and_then(serde_json::Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(serde_json::Value::as_str)
    };
    names("down_block_types")
        .find_map(|s| s.parse::<DownBlockType>().err())
        .or_else(|| names("up_block_types").find_map(|s| s.parse::<UpBlockType>().err()))
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

    /// The paper's block layout with other widths, as used by the fixtures' `tiny` (8..32,
    /// 8 groups) and `small` (32..128) configs: plain blocks, and self-attention at the
    /// second-to-last level whatever `sample_size` is (where the paper's 256² model has its 16²
    /// maps; a single level gets none). Use [`with_attention_level`](Self::with_attention_level)
    /// and [`default_attention_level`](Self::default_attention_level) to place it by map size.
    pub fn with_channels(
        sample_size: usize,
        in_channels: usize,
        out_channels: usize,
        block_out_channels: &[usize],
        norm_num_groups: usize,
    ) -> Self {
        let n = block_out_channels.len();
        let cfg = Self {
            sample_size: Some(sample_size),
            in_channels,
            out_channels,
            block_out_channels: block_out_channels.to_vec(),
            norm_num_groups: Some(norm_num_groups),
            ..Self::default()
        };
        cfg.with_attention_level(n.checked_sub(2))
    }

    /// The level (0-based index into `block_out_channels`) that gets self-attention unless one
    /// is chosen: the first whose feature maps are at most 16×16 for a `sample_size`² input, or
    /// the last of `levels` when none is that small. This is the paper's placement (level 4 of 6
    /// at 256²) carried to other sizes; attention memory grows with the square of the map area.
    pub fn default_attention_level(sample_size: usize, levels: usize) -> usize {
        (0..levels)
            .find(|&i| sample_size.checked_shr(i as u32).unwrap_or(0) <= 16)
            .unwrap_or(levels.saturating_sub(1))
    }

    /// Sets `down_block_types` and `up_block_types` for the current `block_out_channels`: plain
    /// blocks, with self-attention at `level` only (down block `level` and the up block that
    /// mirrors it, `block_out_channels.len() - 1 - level`). `None`, or a level past the last,
    /// gives no attention blocks; the mid block keeps its own `add_attention`.
    pub fn with_attention_level(mut self, level: Option<usize>) -> Self {
        let n = self.block_out_channels.len();
        let attn = |i: usize| level == Some(i);
        self.down_block_types = (0..n)
            .map(|i| DownBlockType::with_attention(attn(i)))
            .collect();
        self.up_block_types = (0..n)
            .map(|i| UpBlockType::with_attention(attn(n - 1 - i)))
            .collect();
        self
    }

    /// Parses a `config.json` and validates it.
    pub fn from_json_str(s: &str) -> Result<Self, UnetError> {
        Self::parse(s, None)
    }

    /// Reads and validates `path` (a diffusers `config.json`).
    pub fn from_file(path: &std::path::Path) -> Result<Self, UnetError> {
        let text = std::fs::read_to_string(path).map_err(|e| UnetError::Io {
            path: path.to_path_buf(),
            source: e,
        })?;
        Self::parse(&text, Some(path))
    }

    fn parse(text: &str, path: Option<&std::path::Path>) -> Result<Self, UnetError> {
        let cfg: Self = serde_json::from_str(text).map_err(|source| {
            unsupported_block_type(text).unwrap_or_else(|| UnetError::ConfigParse {
                path: path.map(|p| p.to_path_buf()),
                source,
            })
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

#[cfg(test)]
mod tests {
    use super::*;

    const FIXTURES: [&str; 3] = [
        include_str!("../tests/fixtures/unet_tiny_config.json"),
        include_str!("../tests/fixtures/unet_small_config.json"),
        include_str!("../tests/fixtures/unet_paper_config.json"),
    ];

    #[test]
    fn diffusers_configs_round_trip_with_the_same_keys_and_block_names() {
        for text in FIXTURES {
            let cfg = UNet2DConfig::from_json_str(text).unwrap();
            let written: serde_json::Value = serde_json::from_str(&cfg.to_json_string()).unwrap();
            let original: serde_json::Value = serde_json::from_str(text).unwrap();
            let keys = |v: &serde_json::Value| {
                let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
                k.sort();
                k
            };
            assert_eq!(keys(&written), keys(&original));
            for field in ["down_block_types", "up_block_types", "mid_block_type"] {
                assert_eq!(written[field], original[field], "{field}");
            }
            assert_eq!(
                UNet2DConfig::from_json_str(&cfg.to_json_string()).unwrap(),
                cfg
            );
        }
    }

    #[test]
    fn with_channels_keeps_the_fixture_layout() {
        for text in FIXTURES {
            let fixture = UNet2DConfig::from_json_str(text).unwrap();
            let built = UNet2DConfig::with_channels(
                fixture.sample_size.unwrap(),
                fixture.in_channels,
                fixture.out_channels,
                &fixture.block_out_channels,
                fixture.groups(),
            );
            assert_eq!(built.down_block_types, fixture.down_block_types);
            assert_eq!(built.up_block_types, fixture.up_block_types);
        }
        let one = UNet2DConfig::with_channels(32, 1, 1, &[32], 32);
        assert_eq!(one.down_block_types, [DownBlockType::DownBlock2D]);
        assert_eq!(one.up_block_types, [UpBlockType::UpBlock2D]);
        let seven = UNet2DConfig::with_channels(256, 1, 1, &[32; 7], 32);
        assert!(seven.validate().is_ok());
        assert!(seven.down_block_types[5].has_attention());
        assert!(seven.up_block_types[1].has_attention());
    }

    #[test]
    fn default_attention_level_is_the_first_at_most_16x16() {
        assert_eq!(UNet2DConfig::default_attention_level(256, 6), 4);
        assert_eq!(UNet2DConfig::default_attention_level(64, 4), 2);
        assert_eq!(UNet2DConfig::default_attention_level(32, 6), 1);
        assert_eq!(UNet2DConfig::default_attention_level(16, 3), 0);
        assert_eq!(UNet2DConfig::default_attention_level(48, 3), 2);
        // Nothing reaches 16²: the last level.
        assert_eq!(UNet2DConfig::default_attention_level(1024, 4), 3);
    }

    #[test]
    fn with_attention_level_mirrors_the_down_level_on_the_up_path() {
        let cfg = UNet2DConfig::with_channels(64, 1, 1, &[32, 32, 64, 64], 32)
            .with_attention_level(Some(1));
        let down: Vec<bool> = cfg
            .down_block_types
            .iter()
            .map(|t| t.has_attention())
            .collect();
        let up: Vec<bool> = cfg
            .up_block_types
            .iter()
            .map(|t| t.has_attention())
            .collect();
        assert_eq!(down, [false, true, false, false]);
        assert_eq!(up, [false, false, true, false]);
        let none = cfg.with_attention_level(None);
        assert!(!none.down_block_types.iter().any(|t| t.has_attention()));
        assert!(!none.up_block_types.iter().any(|t| t.has_attention()));
    }

    #[test]
    fn unknown_block_types_are_rejected_by_field() {
        let base = FIXTURES[0];
        for (from, to, field) in [
            (
                "\"AttnDownBlock2D\"",
                "\"CrossAttnDownBlock2D\"",
                "down_block_types",
            ),
            (
                "\"AttnUpBlock2D\"",
                "\"AttnSkipUpBlock2D\"",
                "up_block_types",
            ),
        ] {
            let err = UNet2DConfig::from_json_str(&base.replacen(from, to, 1)).unwrap_err();
            let UnetError::UnsupportedConfig {
                field: f, value, ..
            } = &err
            else {
                panic!("wrong error {err:?}");
            };
            assert_eq!((f.as_str(), value.as_str()), (field, &to[1..to.len() - 1]));
        }
        // Plain serde names the field too.
        let err = serde_json::from_str::<UNet2DConfig>(&base.replacen(
            "\"DownBlock2D\"",
            "\"SkipDownBlock2D\"",
            1,
        ))
        .unwrap_err();
        assert!(err.to_string().contains("down_block_types"), "{err}");
        assert_eq!(
            "AttnUpBlock2D".parse::<UpBlockType>().ok(),
            Some(UpBlockType::AttnUpBlock2D)
        );
        assert_eq!(
            format!("{:<13}|", DownBlockType::DownBlock2D),
            "DownBlock2D  |"
        );
    }
}
