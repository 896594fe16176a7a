//! The MHVAE's configuration: every value the paper leaves open (design notes §1.8, §5.2) is a
//! field here, recorded with each model in `mhvae.json` and checked at load, naming the field.

use serde::{Deserialize, Serialize};

use crate::warp::ControlPoints;
use crate::{MhvaeError, Result};

/// How the position θ transforms the reference shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WarpKind {
    /// 6 parameters, a 2×3 matrix (paper eq. 11): the mask is always an ellipse.
    Affine,
    /// Thin-plate spline: θ moves the control points (paper eq. 12, App. B).
    Tps,
    /// No position head and no segmentation: the single-headed VAE baseline.
    None,
}

impl std::fmt::Display for WarpKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            WarpKind::Affine => "affine",
            WarpKind::Tps => "tps",
            WarpKind::None => "none",
        })
    }
}

/// How θ's numbers become the warp.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ThetaParam {
    /// θ is the offset from the identity: A = [I | 0] + θ, p′_k = p_k + θ_k. θ = 0 (the prior's
    /// mean) is the reference disc itself.
    Offset,
    /// θ is the matrix or the source points themselves (the paper's literal wording).
    Absolute,
}

/// The encoder's convolutional trunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Backbone {
    /// Four stride-2 conv blocks (`encoder_channels`), flattened: trains in minutes on a CPU.
    Small,
    /// torchvision's ResNet-50 trunk (frozen BatchNorm), globally pooled to 2048 features: the
    /// paper's backbone; ImageNet weights load by torchvision's names.
    Resnet50,
}

/// Loss weights (paper §3.4 gives the terms, not the weights).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LossWeights {
    /// Weight of the log-cosh reconstruction.
    pub reconstruction: f64,
    /// Weight of the soft Dice loss of the warped reference mask.
    pub dice: f64,
    /// Weight of KL(q(z|x) ‖ N(0, I)).
    pub kl_z: f64,
    /// Weight of KL(q(θ|x) ‖ N(0, I)).
    pub kl_theta: f64,
    /// Count KL_θ twice, as eq. 20 taken literally does.
    pub kl_theta_double: bool,
    /// Scale a of (1/a)·log cosh(a·t).
    pub log_cosh_scale: f64,
    /// ε of the soft Dice.
    pub dice_eps: f64,
}

impl Default for LossWeights {
    fn default() -> Self {
        Self {
            reconstruction: 1.0,
            dice: 1.0,
            kl_z: 1e-3,
            kl_theta: 1e-3,
            kl_theta_double: false,
            log_cosh_scale: 10.0,
            dice_eps: 1.0,
        }
    }
}

/// Random position augmentation in training: each image and its mask are moved together by a
/// similarity drawn per sample (rotation, scale, shift about the image centre), so that the
/// position head sees positions the data may lack (a template's slices are all centred).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PositionAugment {
    /// Rotation drawn uniformly in ±this, degrees.
    pub max_rotation_degrees: f64,
    /// Scale drawn log-uniformly in [min, max].
    pub scale: [f64; 2],
    /// Shift drawn uniformly in ±this per axis, normalised units.
    pub max_shift: f64,
}

impl Default for PositionAugment {
    fn default() -> Self {
        Self {
            max_rotation_degrees: 45.0,
            scale: [0.8, 1.2],
            max_shift: 0.15,
        }
    }
}

/// The whole model configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct MhvaeConfig {
    /// Image side S (square images; 32·2^k).
    pub image_size: usize,
    /// 1 (grey) or 3 (RGB).
    pub image_channels: usize,
    pub warp: WarpKind,
    /// TPS target points (used with `warp = tps`).
    pub control_points: ControlPoints,
    pub theta_param: ThetaParam,
    pub backbone: Backbone,
    /// Channels of the small encoder's four stride-2 conv blocks.
    pub encoder_channels: Vec<usize>,
    /// Width of the hidden layer of each fully connected head.
    pub fc_hidden: usize,
    /// Size of the style latent z.
    pub z_dim: usize,
    /// Channels C of the decoder's feature maps (the first C/2 are warped at 32×32).
    pub feature_channels: usize,
    /// Groups of every GroupNorm.
    pub norm_groups: usize,
    /// Negative slope of every LeakyReLU.
    pub leaky_slope: f64,
    /// Initial bias of the θ head's log-variance (a nearly deterministic position at start).
    pub theta_logvar_init: f64,
    /// Reference disc with a one-pixel linear edge (wider Dice gradients) instead of binary.
    pub soft_reference: bool,
    /// torch's align_corners for every grid.
    pub align_corners: bool,
    /// A pixel of the warped reference at or above this is object.
    pub mask_threshold: f64,
    pub loss: LossWeights,
    /// Position augmentation of the training images (`None`: off).
    pub augment: Option<PositionAugment>,
}

impl Default for MhvaeConfig {
    fn default() -> Self {
        Self {
            image_size: 64,
            image_channels: 1,
            warp: WarpKind::Affine,
            control_points: ControlPoints::default(),
            theta_param: ThetaParam::Offset,
            backbone: Backbone::Small,
            encoder_channels: vec![16, 32, 64, 64],
            fc_hidden: 256,
            z_dim: 16,
            feature_channels: 16,
            norm_groups: 4,
            leaky_slope: 0.2,
            theta_logvar_init: -6.0,
            soft_reference: true,
            align_corners: false,
            mask_threshold: 0.5,
            loss: LossWeights::default(),
            augment: None,
        }
    }
}

/// Side of the feature map whose first half of channels is warped (paper §3.3).
pub const FEATURE_SIZE: usize = 32;

impl MhvaeConfig {
    /// Number of position parameters: 6 (affine), 2K (TPS), 0 (none).
    pub fn theta_dim(&self) -> usize {
        match self.warp {
            WarpKind::Affine => 6,
            WarpKind::Tps => 2 * self.control_points.len(),
            WarpKind::None => 0,
        }
    }

    /// Rejects values the model cannot be built with, naming the field.
    pub fn validate(&self) -> Result<()> {
        let bad = |name: &'static str, value: String, reason: &str| {
            Err(MhvaeError::InvalidArgument {
                name,
                value,
                reason: reason.into(),
            })
        };
        let s = self.image_size;
        if s < FEATURE_SIZE
            || !(s / FEATURE_SIZE).is_power_of_two()
            || !s.is_multiple_of(FEATURE_SIZE)
        {
            return bad(
                "image_size",
                s.to_string(),
                "must be 32, 64, 128, 256, … (32·2^k)",
            );
        }
        if !matches!(self.image_channels, 1 | 3) {
            return bad(
                "image_channels",
                self.image_channels.to_string(),
                "must be 1 (grey) or 3 (RGB)",
            );
        }
        if self.encoder_channels.len() != 4 || self.encoder_channels.contains(&0) {
            return bad(
                "encoder_channels",
                format!("{:?}", self.encoder_channels),
                "needs four positive widths",
            );
        }
        let groups = self.norm_groups;
        if groups == 0
            || self
                .encoder_channels
                .iter()
                .any(|c| !c.is_multiple_of(groups))
            || !self.feature_channels.is_multiple_of(groups)
        {
            return bad(
                "norm_groups",
                groups.to_string(),
                "must divide every encoder width and feature_channels",
            );
        }
        if self.feature_channels < 2 || !self.feature_channels.is_multiple_of(2) {
            return bad(
                "feature_channels",
                self.feature_channels.to_string(),
                "must be even (half of them are warped)",
            );
        }
        if self.z_dim == 0 || self.fc_hidden == 0 {
            return bad(
                "z_dim / fc_hidden",
                format!("{} / {}", self.z_dim, self.fc_hidden),
                "must be positive",
            );
        }
        if !(self.mask_threshold > 0.0 && self.mask_threshold < 1.0) {
            return bad(
                "mask_threshold",
                self.mask_threshold.to_string(),
                "must be in (0, 1)",
            );
        }
        let l = &self.loss;
        for (name, v) in [
            ("loss.reconstruction", l.reconstruction),
            ("loss.dice", l.dice),
            ("loss.kl_z", l.kl_z),
            ("loss.kl_theta", l.kl_theta),
            ("loss.dice_eps", l.dice_eps),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return bad(name, v.to_string(), "must be finite and non-negative");
            }
        }
        if !(l.log_cosh_scale.is_finite() && l.log_cosh_scale > 0.0) {
            return bad(
                "loss.log_cosh_scale",
                l.log_cosh_scale.to_string(),
                "must be positive",
            );
        }
        if let Some(a) = &self.augment {
            let ok = a.max_rotation_degrees.is_finite()
                && a.max_rotation_degrees >= 0.0
                && a.max_shift.is_finite()
                && a.max_shift >= 0.0
                && a.scale[0].is_finite()
                && a.scale[0] > 0.0
                && a.scale[1] >= a.scale[0]
                && a.scale[1].is_finite();
            if !ok {
                return bad(
                    "augment",
                    format!("{a:?}"),
                    "rotation and shift ≥ 0, 0 < scale min ≤ max",
                );
            }
        }
        if !self.leaky_slope.is_finite() || !self.theta_logvar_init.is_finite() {
            return bad(
                "leaky_slope / theta_logvar_init",
                format!("{} / {}", self.leaky_slope, self.theta_logvar_init),
                "must be finite",
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_bad_values_name_the_field() {
        MhvaeConfig::default().validate().unwrap();
        let c = MhvaeConfig {
            image_size: 48,
            ..MhvaeConfig::default()
        };
        assert!(c.validate().unwrap_err().to_string().contains("image_size"));
        let c = MhvaeConfig {
            feature_channels: 6,
            ..MhvaeConfig::default()
        };
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("norm_groups"));
        let json = serde_json::to_string(&MhvaeConfig::default()).unwrap();
        let back: MhvaeConfig = serde_json::from_str(&json).unwrap();
        assert_eq!(back, MhvaeConfig::default());
        assert_eq!(
            MhvaeConfig {
                warp: WarpKind::Tps,
                ..MhvaeConfig::default()
            }
            .theta_dim(),
            40
        );
    }
}
