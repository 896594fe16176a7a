//! `MonaiUNetConfig`: MONAI `UNet(...)` arguments with MONAI's defaults, and the values this
//! implementation reproduces.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{EvalError, Result};

/// `UNet(...)` arguments, named as MONAI names them, with MONAI's defaults.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MonaiUNetConfig {
    /// Only 2 is supported.
    #[serde(default = "default_spatial_dims")]
    pub spatial_dims: usize,
    pub in_channels: usize,
    pub out_channels: usize,
    /// Channels per level, top first; the last one is the bottom layer.
    pub channels: Vec<usize>,
    /// One stride per down level: `len(channels) − 1` entries.
    pub strides: Vec<usize>,
    #[serde(default = "default_kernel_size")]
    pub kernel_size: usize,
    #[serde(default = "default_kernel_size")]
    pub up_kernel_size: usize,
    #[serde(default)]
    pub num_res_units: usize,
    /// Only "PRELU" (one shared slope).
    #[serde(default = "default_act")]
    pub act: String,
    /// Only "INSTANCE" (no affine).
    #[serde(default = "default_norm")]
    pub norm: String,
    /// Only 0.
    #[serde(default)]
    pub dropout: f64,
    #[serde(default = "default_bias")]
    pub bias: bool,
    /// Only "NDA".
    #[serde(default = "default_adn_ordering")]
    pub adn_ordering: String,
}

fn default_spatial_dims() -> usize {
    2
}
fn default_kernel_size() -> usize {
    3
}
fn default_act() -> String {
    "PRELU".into()
}
fn default_norm() -> String {
    "INSTANCE".into()
}
fn default_bias() -> bool {
    true
}
fn default_adn_ordering() -> String {
    "NDA".into()
}

impl MonaiUNetConfig {
    /// A 2-D UNet with MONAI's defaults for everything but the listed arguments.
    pub fn new(
        in_channels: usize,
        out_channels: usize,
        channels: Vec<usize>,
        strides: Vec<usize>,
        num_res_units: usize,
    ) -> Self {
        Self {
            spatial_dims: 2,
            in_channels,
            out_channels,
            channels,
            strides,
            kernel_size: 3,
            up_kernel_size: 3,
            num_res_units,
            act: default_act(),
            norm: default_norm(),
            dropout: 0.0,
            bias: true,
            adn_ordering: default_adn_ordering(),
        }
    }

    /// Reads and validates a JSON config.
    pub fn from_json_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| EvalError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let cfg: Self = serde_json::from_str(&text).map_err(|source| EvalError::Json {
            path: path.to_path_buf(),
            source,
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Rejects values this implementation does not reproduce, naming the field.
    pub fn validate(&self) -> Result<()> {
        let bad = |field: &'static str, value: String, reason: &str| {
            Err(EvalError::UnsupportedConfig {
                field,
                value,
                reason: reason.to_string(),
            })
        };
        if self.spatial_dims != 2 {
            return bad("spatial_dims", self.spatial_dims.to_string(), "only 2-D");
        }
        if self.in_channels == 0 || self.out_channels == 0 {
            return bad(
                "in_channels/out_channels",
                format!("{}/{}", self.in_channels, self.out_channels),
                "must be positive",
            );
        }
        if self.channels.len() < 2 || self.channels.contains(&0) {
            return bad(
                "channels",
                format!("{:?}", self.channels),
                "needs at least two positive entries",
            );
        }
        if self.strides.len() != self.channels.len() - 1 || self.strides.contains(&0) {
            return bad(
                "strides",
                format!("{:?}", self.strides),
                "needs len(channels) - 1 positive entries",
            );
        }
        for (field, k) in [
            ("kernel_size", self.kernel_size),
            ("up_kernel_size", self.up_kernel_size),
        ] {
            if k % 2 == 0 {
                return bad(
                    field,
                    k.to_string(),
                    "MONAI same-padding needs an odd kernel",
                );
            }
        }
        if !self.act.eq_ignore_ascii_case("prelu") {
            return bad("act", self.act.clone(), "only PRELU");
        }
        if !self.norm.eq_ignore_ascii_case("instance") {
            return bad("norm", self.norm.clone(), "only INSTANCE");
        }
        if self.dropout != 0.0 {
            return bad("dropout", self.dropout.to_string(), "only 0");
        }
        if self.adn_ordering != "NDA" {
            return bad("adn_ordering", self.adn_ordering.clone(), "only NDA");
        }
        Ok(())
    }

    /// Product of the strides: input height and width must be multiples of it.
    pub fn downsampling_factor(&self) -> usize {
        self.strides.iter().product()
    }
}
