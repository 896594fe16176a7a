//! The position θ as a warp T_θ: θ (N, theta_dim) → sampling grids at the image size and at the
//! decoder's 32×32 feature size (the same transform at both resolutions).

use candle_core::{Device, Tensor};

use crate::config::{MhvaeConfig, ThetaParam, WarpKind, FEATURE_SIZE};
use crate::warp::{affine_grid, TpsWarp};
use crate::{MhvaeError, Result};

/// Turns θ into grids for one model configuration.
#[derive(Debug, Clone)]
pub struct Position {
    kind: WarpKind,
    param: ThetaParam,
    align_corners: bool,
    image_size: usize,
    /// TPS at the image size and at the feature size.
    tps: Option<(TpsWarp, TpsWarp)>,
    /// θ of the identity warp, (1, theta_dim).
    identity: Option<Tensor>,
}

impl Position {
    pub fn new(config: &MhvaeConfig, device: &Device) -> Result<Self> {
        let ac = config.align_corners;
        let s = config.image_size;
        let tps = match config.warp {
            WarpKind::Tps => {
                let t = config.control_points.targets();
                Some((
                    TpsWarp::new(&t, s, s, ac, device)?,
                    TpsWarp::new(&t, FEATURE_SIZE, FEATURE_SIZE, ac, device)?,
                ))
            }
            _ => None,
        };
        let identity = match config.warp {
            WarpKind::Affine => Some(Tensor::new(&[[1f32, 0., 0., 0., 1., 0.]], device)?),
            WarpKind::Tps => {
                let flat: Vec<f32> = config
                    .control_points
                    .targets()
                    .iter()
                    .flat_map(|p| [p[0] as f32, p[1] as f32])
                    .collect();
                let n = flat.len();
                Some(Tensor::from_vec(flat, (1, n), device)?)
            }
            WarpKind::None => None,
        };
        Ok(Self {
            kind: config.warp,
            param: config.theta_param,
            align_corners: ac,
            image_size: s,
            tps,
            identity,
        })
    }

    /// The warp's own numbers for θ: the affine matrix rows (N, 6) or the source points (N, 2K),
    /// after the parametrisation.
    pub fn warp_parameters(&self, theta: &Tensor) -> Result<Tensor> {
        let identity = self.identity.as_ref().ok_or_else(no_position)?;
        match self.param {
            ThetaParam::Offset => Ok(theta.broadcast_add(identity)?),
            ThetaParam::Absolute => Ok(theta.clone()),
        }
    }

    /// θ whose warp parameters are `params` (the inverse of [`Position::warp_parameters`]).
    pub fn theta_from_parameters(&self, params: &Tensor) -> Result<Tensor> {
        let identity = self.identity.as_ref().ok_or_else(no_position)?;
        match self.param {
            ThetaParam::Offset => Ok(params.broadcast_sub(identity)?),
            ThetaParam::Absolute => Ok(params.clone()),
        }
    }

    /// θ of the identity warp (the reference disc unchanged), (1, theta_dim).
    pub fn identity_theta(&self) -> Result<Tensor> {
        let identity = self.identity.as_ref().ok_or_else(no_position)?;
        self.theta_from_parameters(identity)
    }

    /// The grid (N, size, size, 2) of T_θ; `size` is the image size or the feature size.
    pub fn grid(&self, theta: &Tensor, size: usize) -> Result<Tensor> {
        let params = self.warp_parameters(theta)?;
        let n = params.dim(0)?;
        match self.kind {
            WarpKind::Affine => {
                affine_grid(&params.reshape((n, 2, 3))?, size, size, self.align_corners)
            }
            WarpKind::Tps => {
                let (full, feature) = self.tps.as_ref().ok_or_else(no_position)?;
                let tps = if size == self.image_size {
                    full
                } else if size == FEATURE_SIZE {
                    feature
                } else {
                    return Err(MhvaeError::InvalidArgument {
                        name: "grid size",
                        value: size.to_string(),
                        reason: format!(
                            "the TPS is precomputed for {} and {FEATURE_SIZE}",
                            self.image_size
                        ),
                    });
                };
                let k = tps.targets().len();
                tps.grid(&params.reshape((n, k, 2))?)
            }
            WarpKind::None => Err(no_position()),
        }
    }

    /// The TPS at the image size (for pictures), if this is a TPS model.
    pub fn tps(&self) -> Option<&TpsWarp> {
        self.tps.as_ref().map(|(full, _)| full)
    }

    pub fn kind(&self) -> WarpKind {
        self.kind
    }
}

fn no_position() -> MhvaeError {
    MhvaeError::InvalidArgument {
        name: "warp",
        value: "none".into(),
        reason: "a model without a position head (the single-headed VAE) has no warp".into(),
    }
}
