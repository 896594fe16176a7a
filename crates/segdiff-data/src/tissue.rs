//! Four-class brain tissue labels from a T1 template and grey/white-matter probability maps.
//!
//! Made for the MNI ICBM152 2009a maps shipped with nilearn (T1, GM and WM as uint8, probability
//! × 255), and identical to the rule `copy_real_data.py` used for the derived MNI PNG dataset:
//!
//! * brain = `T1 / 255 > 0.2` (nilearn's `load_mni152_brain_mask` threshold), else class 0;
//! * inside the brain, with `pGM = GM / 255`, `pWM = WM / 255`, `other = clip(1 − pGM − pWM, 0, 1)`:
//!   class `1 + argmax(other, pGM, pWM)` (ties go to the first), i.e. 1 CSF/other brain, 2 grey
//!   matter, 3 white matter.
//!
//! Arithmetic is f32 in numpy's order so that the result matches the Python rule voxel for voxel.

use ndarray::Zip;

use crate::error::{DataError, Result};
use crate::loaded::LoadedVolume;
use crate::volume::{affine_max_abs_diff, Volume};

/// Class names of [`brain_tissue_labels`], indexed by class id.
pub const TISSUE_CLASSES: [&str; 4] = ["background", "csf_other", "grey_matter", "white_matter"];

/// Label volume (values 0..=3) on the grid of `t1`; all three maps must share one grid (a
/// mismatch is a [`DataError::LabelGridMismatch`] naming the map and the T1 file).
pub fn brain_tissue_labels(
    t1: &LoadedVolume,
    gm: &LoadedVolume,
    wm: &LoadedVolume,
) -> Result<Volume<u8>> {
    for m in [gm, wm] {
        if m.volume.shape() != t1.volume.shape() {
            return Err(DataError::LabelGridMismatch {
                path: m.source.clone(),
                image: t1.source.clone(),
                detail: format!("shape {:?} vs {:?}", m.volume.shape(), t1.volume.shape()),
            });
        }
        let d = affine_max_abs_diff(&m.volume.affine, &t1.volume.affine);
        if d > 1e-3 {
            return Err(DataError::LabelGridMismatch {
                path: m.source.clone(),
                image: t1.source.clone(),
                detail: format!("affines differ by up to {d} mm"),
            });
        }
    }
    let (t1, gm, wm) = (&t1.volume, &gm.volume, &wm.volume);
    let mut out = ndarray::Array3::<u8>::zeros(t1.data.raw_dim());
    Zip::from(&mut out)
        .and(&t1.data)
        .and(&gm.data)
        .and(&wm.data)
        .for_each(|o, &t, &g, &w| {
            if t / 255.0f32 > 0.2f32 {
                let pg = g / 255.0f32;
                let pw = w / 255.0f32;
                let other = ((1.0f32 - pg) - pw).clamp(0.0, 1.0);
                let mut best = 0u8;
                let mut val = other;
                if pg > val {
                    best = 1;
                    val = pg;
                }
                if pw > val {
                    best = 2;
                }
                *o = best + 1;
            }
        });
    Ok(Volume {
        data: out,
        affine: t1.affine,
    })
}
