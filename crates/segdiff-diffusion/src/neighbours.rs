//! Neighbour conditioning for whole volumes (ContourDiff's adjacent-slice guidance): a 2-D
//! denoiser that also sees the already-generated neighbouring slice, so a stack of slices
//! generated one after the other is consistent along the slice axis.
//!
//! The network input is `cat[x_t, mask channels, neighbour channels]`, the neighbour channels
//! being, in order, the neighbour's image (`image_channels`, in [-1, 1]), a presence channel
//! (all 1 when a neighbour is given, all 0 when it is absent or dropped, the image and mask
//! channels then being 0), and with [`NeighbourScheme::with_mask`] the neighbour's mask encoded
//! like the mask. [`neighbour_channels`] builds them for training and sampling alike.

use candle_core::{DType, Tensor};
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::error::{DiffusionError, Result};

/// Which neighbour the denoiser is conditioned on. A tag, so that other schemes (both
/// neighbours, a 3-D denoiser) can be recorded later without changing `segdiff.json` readers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NeighbourKind {
    /// The adjacent slice (index ± 1 along the same axis of the same volume) generated before
    /// this one; either direction, as generation proceeds outward from anchor slices.
    PreviousSlice,
}

/// How a model is conditioned on a neighbouring slice, recorded as `neighbours` in
/// `segdiff.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NeighbourScheme {
    /// The neighbour given to the denoiser.
    pub kind: NeighbourKind,
    /// Whether the neighbour's mask (encoded like the mask) is also fed.
    #[serde(default)]
    pub with_mask: bool,
    /// Training rate at which the neighbour is dropped (presence 0), so the model can generate
    /// the first (anchor) slice of a volume without one.
    #[serde(default = "default_drop_p")]
    pub drop_p: f64,
    /// Standard deviation (in the [-1, 1] image scale) of Gaussian noise added to the
    /// neighbour's image in training and sampling alike (conditioning augmentation, as in
    /// cascaded diffusion): the model cannot copy the neighbour's fine detail, so a generated
    /// neighbour's artefacts do not propagate along the stack and the slice follows its own
    /// mask. 0 (the default, and older models) feeds the neighbour as it is.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub noise: f64,
}

fn is_zero(v: &f64) -> bool {
    *v == 0.0
}

fn default_drop_p() -> f64 {
    NeighbourScheme::DEFAULT_DROP_P
}

impl Default for NeighbourScheme {
    fn default() -> Self {
        Self {
            kind: NeighbourKind::PreviousSlice,
            with_mask: false,
            drop_p: Self::DEFAULT_DROP_P,
            noise: 0.0,
        }
    }
}

impl NeighbourScheme {
    /// Default training drop rate of the neighbour.
    pub const DEFAULT_DROP_P: f64 = 0.2;

    /// Extra input channels after the mask channels: neighbour image, presence and (with
    /// `with_mask`) the neighbour's `mask_channels`.
    pub fn channels(&self, image_channels: usize, mask_channels: usize) -> usize {
        image_channels + 1 + if self.with_mask { mask_channels } else { 0 }
    }

    /// Checks `drop_p` ∈ [0, 1] and `noise` ∈ [0, 10].
    pub fn validate(&self) -> Result<()> {
        if !(0.0..=1.0).contains(&self.drop_p) {
            return Err(DiffusionError::InvalidParameter {
                name: "neighbour drop_p",
                value: self.drop_p.to_string(),
                reason: "must be in [0, 1]",
            });
        }
        if !(0.0..=10.0).contains(&self.noise) {
            return Err(DiffusionError::InvalidParameter {
                name: "neighbour noise",
                value: self.noise.to_string(),
                reason: "must be a standard deviation in [0, 10]",
            });
        }
        Ok(())
    }

    /// `images` with the scheme's augmentation noise added: `images + noise · ε`, ε the
    /// (N, C, H, W) standard-normal `draws`; `images` unchanged when `noise` is 0.
    pub fn augment(
        &self,
        images: &Tensor,
        draws: impl FnOnce() -> Result<Tensor>,
    ) -> Result<Tensor> {
        if self.noise == 0.0 {
            return Ok(images.clone());
        }
        let eps = draws()?;
        Ok((images.to_dtype(DType::F32)? + (eps * self.noise)?)?)
    }
}

/// The neighbour channels (N, C_nb, H, W) f32, in order: the neighbours' `images`
/// (N, C, H, W) in [-1, 1], the presence channel, and with `scheme.with_mask` their encoded
/// `masks` (N, C_mask, H, W); image and mask are zeroed on rows where `present[i]` is false.
///
/// Rows without a neighbour may hold anything in `images`/`masks` (e.g. zeros or the slice
/// itself); they are multiplied by 0.
pub fn neighbour_channels(
    scheme: &NeighbourScheme,
    images: &Tensor,
    masks: Option<&Tensor>,
    present: &[bool],
) -> Result<Tensor> {
    let (n, _, h, w) = images.dims4()?;
    if present.len() != n {
        return Err(DiffusionError::ShapeMismatch {
            what: "neighbour presence flags (one per row)",
            got: vec![present.len()],
            expected: vec![n],
        });
    }
    let device = images.device();
    let flags: Vec<f32> = present.iter().map(|&p| if p { 1.0 } else { 0.0 }).collect();
    let presence = Tensor::from_vec(flags, (n, 1, 1, 1), device)?;
    let gate =
        |t: &Tensor| -> Result<Tensor> { Ok(t.to_dtype(DType::F32)?.broadcast_mul(&presence)?) };
    let mut parts = vec![
        gate(images)?,
        presence.broadcast_as((n, 1, h, w))?.contiguous()?,
    ];
    if scheme.with_mask {
        let masks = masks.ok_or(DiffusionError::InvalidParameter {
            name: "neighbour masks",
            value: "none".into(),
            reason: "this neighbour scheme also feeds the neighbour's mask",
        })?;
        let (mn, _, mh, mw) = masks.dims4()?;
        if (mn, mh, mw) != (n, h, w) {
            return Err(DiffusionError::ShapeMismatch {
                what: "neighbour masks (N, C_mask, H, W) vs neighbour images",
                got: masks.dims().to_vec(),
                expected: images.dims().to_vec(),
            });
        }
        parts.push(gate(masks)?);
    }
    Ok(Tensor::cat(&parts, 1)?)
}

/// Which neighbour each training sample is given: per sample, a side (0 = before, 1 = after)
/// drawn from `rng`, the other side when the drawn one is missing (a volume's end), `None` when
/// both are missing; then dropped (`None`) with probability `drop_p`. Exactly two draws per
/// sample, so the stream does not depend on which neighbours exist.
pub(crate) fn draw_neighbours(
    drop_p: f64,
    before: &[bool],
    after: &[bool],
    rng: &mut impl Rng,
) -> Vec<Option<usize>> {
    before
        .iter()
        .zip(after)
        .map(|(&b, &a)| {
            let first = usize::from(rng.random_bool(0.5));
            let dropped = rng.random::<f64>() < drop_p;
            let has = [b, a];
            let side = [first, 1 - first].into_iter().find(|&s| has[s]);
            side.filter(|_| !dropped)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn values(t: &Tensor) -> Vec<f32> {
        t.flatten_all().unwrap().to_vec1().unwrap()
    }

    #[test]
    fn channels_are_image_presence_mask_and_absent_rows_are_zero() {
        let dev = Device::Cpu;
        let images = Tensor::new(&[-0.5f32, 0.25, 1.0, -1.0], &dev)
            .unwrap()
            .reshape((2, 1, 1, 2))
            .unwrap();
        let masks = Tensor::new(&[1f32, 0., 0., 1., 1., 1., 0., 0.], &dev)
            .unwrap()
            .reshape((2, 2, 1, 2))
            .unwrap();
        let scheme = NeighbourScheme {
            with_mask: true,
            ..NeighbourScheme::default()
        };
        assert_eq!(scheme.channels(1, 2), 4);
        let c = neighbour_channels(&scheme, &images, Some(&masks), &[true, false]).unwrap();
        assert_eq!(c.dims(), &[2, 4, 1, 2]);
        assert_eq!(
            values(&c),
            vec![-0.5, 0.25, 1., 1., 1., 0., 0., 1., /* row 1 */ 0., 0., 0., 0., 0., 0., 0., 0.]
        );
        let plain =
            neighbour_channels(&NeighbourScheme::default(), &images, None, &[false, true]).unwrap();
        assert_eq!(plain.dims(), &[2, 2, 1, 2]);
        assert_eq!(values(&plain), vec![0., 0., 0., 0., 1.0, -1.0, 1., 1.]);
        assert!(neighbour_channels(&scheme, &images, None, &[true, true]).is_err());
        assert!(neighbour_channels(&scheme, &images, Some(&masks), &[true]).is_err());
    }

    #[test]
    fn neighbour_draws_follow_drop_p_and_the_seed() {
        use rand::SeedableRng;
        let n = 20_000;
        let all = vec![true; n];
        let draw = |seed: u64, p: f64, before: &[bool], after: &[bool]| {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            draw_neighbours(p, before, after, &mut rng)
        };
        let a = draw(7, 0.2, &all, &all);
        assert_eq!(a, draw(7, 0.2, &all, &all));
        assert_ne!(a, draw(8, 0.2, &all, &all));
        let dropped = a.iter().filter(|s| s.is_none()).count() as f64 / n as f64;
        let after = a.iter().filter(|s| **s == Some(1)).count() as f64 / n as f64;
        println!("dropped {dropped:.4}, after {after:.4}");
        assert!((dropped - 0.2).abs() < 0.015, "{dropped}");
        assert!((after - 0.4).abs() < 0.015, "{after}");
        // a volume's ends fall back to the side that exists; no neighbour at all is absent
        let none = vec![false; n];
        let ends = draw(7, 0.0, &all, &none);
        assert!(ends.iter().all(|s| *s == Some(0)));
        assert!(draw(7, 0.0, &none, &none).iter().all(Option::is_none));
        assert!(draw(7, 1.0, &all, &all).iter().all(Option::is_none));
        // the drop draws do not depend on which neighbours exist
        let drops = |v: &[Option<usize>]| v.iter().map(Option::is_none).collect::<Vec<_>>();
        assert_eq!(
            drops(&draw(3, 0.3, &all, &none)),
            drops(&draw(3, 0.3, &none, &all))
        );
    }

    #[test]
    fn scheme_json_has_defaults_and_a_kind_tag() {
        let s: NeighbourScheme = serde_json::from_str(r#"{"kind":"previous_slice"}"#).unwrap();
        assert_eq!(s, NeighbourScheme::default());
        let text = serde_json::to_string(&s).unwrap();
        assert!(text.contains("\"previous_slice\""), "{text}");
        assert!(serde_json::from_str::<NeighbourScheme>(r#"{"kind":"volume"}"#).is_err());
        let bad = NeighbourScheme {
            drop_p: 1.5,
            ..NeighbourScheme::default()
        };
        assert!(bad.validate().is_err());
    }
}
