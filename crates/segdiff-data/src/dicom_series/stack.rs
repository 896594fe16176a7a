//! Stacking a series' frames into a volume: the in-plane axes, the slice order (by position along
//! the slice normal, else by InstanceNumber or file order), the slice step and the affine.

use std::path::Path;

use ndarray::{Array3, ShapeBuilder};

use super::frames::{frame_name, Frame};
use crate::error::{DataError, Result};
use crate::volume::Affine;

/// Relative tolerance on the spread of slice gaps before a series is called inconsistent.
const GAP_REL_TOL: f64 = 0.05;
/// Absolute part of the slice-gap tolerance, in mm.
const GAP_ABS_TOL: f64 = 1e-3;

fn cross(a: [f64; 3], b: [f64; 3]) -> [f64; 3] {
    [
        a[1] * b[2] - a[2] * b[1],
        a[2] * b[0] - a[0] * b[2],
        a[0] * b[1] - a[1] * b[0],
    ]
}

fn dot(a: [f64; 3], b: [f64; 3]) -> f64 {
    a[0] * b[0] + a[1] * b[1] + a[2] * b[2]
}

/// The in-plane axes (LPS), the slice normal and the pixel spacing of a series.
pub(super) struct Plane {
    xdir: [f64; 3],
    ydir: [f64; 3],
    normal: [f64; 3],
    row_ps: f64,
    col_ps: f64,
}

/// Where the first slice lies and the step from one slice to the next (LPS, mm).
pub(super) struct SliceAxis {
    origin: [f64; 3],
    step: [f64; 3],
}

impl Plane {
    /// The plane of `first` (whose values all frames share); missing values are assumed (1 mm
    /// pixels, axial) with a warning.
    pub(super) fn of(first: &Frame, warnings: &mut Vec<String>) -> Self {
        let [row_ps, col_ps] = first.geometry.pixel_spacing.unwrap_or_else(|| {
            warnings.push("PixelSpacing missing: assuming 1 mm pixels".to_string());
            [1.0, 1.0]
        });
        let o = first.geometry.orientation.unwrap_or_else(|| {
            warnings
                .push("ImageOrientationPatient missing: assuming an axial acquisition".to_string());
            [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
        });
        let xdir = [o[0], o[1], o[2]];
        let ydir = [o[3], o[4], o[5]];
        Self {
            xdir,
            ydir,
            normal: cross(xdir, ydir),
            row_ps,
            col_ps,
        }
    }

    /// The affine from `(column, row, slice)` to patient LPS.
    pub(super) fn lps_affine(&self, axis: &SliceAxis) -> Affine {
        let (x, y, s, o) = (self.xdir, self.ydir, axis.step, axis.origin);
        let (row_ps, col_ps) = (self.row_ps, self.col_ps);
        [
            [x[0] * col_ps, y[0] * row_ps, s[0], o[0]],
            [x[1] * col_ps, y[1] * row_ps, s[1], o[1]],
            [x[2] * col_ps, y[2] * row_ps, s[2], o[2]],
            [0.0, 0.0, 0.0, 1.0],
        ]
    }
}

/// Sorts `frames` into slice order: along the slice normal when every frame has its position
/// and orientation (two frames at one position or uneven gaps are errors), otherwise by
/// InstanceNumber or kept in file order, with a warning naming `root`.
pub(super) fn order_slices(
    frames: &mut [Frame],
    plane: &Plane,
    thickness: Option<f64>,
    root: &Path,
    warnings: &mut Vec<String>,
) -> Result<SliceAxis> {
    let geometric = frames
        .iter()
        .all(|f| f.geometry.position.is_some() && f.geometry.orientation.is_some());
    if geometric {
        order_by_position(frames, plane.normal, thickness)
    } else {
        order_without_position(frames, plane.normal, thickness, root, warnings)
    }
}

fn order_by_position(
    frames: &mut [Frame],
    normal: [f64; 3],
    thickness: Option<f64>,
) -> Result<SliceAxis> {
    let key = |f: &Frame| f.geometry.position.map(|p| dot(p, normal)).unwrap_or(0.0);
    frames.sort_by(|a, b| {
        key(a)
            .total_cmp(&key(b))
            .then(a.instance_number.cmp(&b.instance_number))
            .then(a.path.cmp(&b.path))
            .then(a.frame.cmp(&b.frame))
    });
    let d: Vec<f64> = frames.iter().map(key).collect();
    check_slice_gaps(frames, &d)?;
    let n = frames.len();
    let p0 = frames[0].geometry.position.unwrap_or_default();
    let step = if n > 1 {
        let pl = frames[n - 1].geometry.position.unwrap_or_default();
        let k = (n - 1) as f64;
        [
            (pl[0] - p0[0]) / k,
            (pl[1] - p0[1]) / k,
            (pl[2] - p0[2]) / k,
        ]
    } else {
        let t = thickness.unwrap_or(1.0);
        [normal[0] * t, normal[1] * t, normal[2] * t]
    };
    Ok(SliceAxis { origin: p0, step })
}

/// Sorted frames at distances `d` along the normal must not coincide and must be evenly spaced.
fn check_slice_gaps(frames: &[Frame], d: &[f64]) -> Result<()> {
    let gaps: Vec<f64> = d.windows(2).map(|w| w[1] - w[0]).collect();
    for (i, g) in gaps.iter().enumerate() {
        if g.abs() < 1e-4 {
            return Err(DataError::InconsistentSeries {
                path: frames[i + 1].path.clone(),
                detail: format!(
                    "{} and {} lie at the same position ({:.4} mm along the slice normal); \
                     the series holds more than one stack (echoes, phases or repeats)",
                    frame_name(&frames[i]),
                    frame_name(&frames[i + 1]),
                    d[i]
                ),
            });
        }
    }
    if !gaps.is_empty() {
        let mut sorted = gaps.clone();
        sorted.sort_by(f64::total_cmp);
        let median = sorted[sorted.len() / 2];
        for (i, g) in gaps.iter().enumerate() {
            if (g - median).abs() > GAP_REL_TOL * median + GAP_ABS_TOL {
                return Err(DataError::InconsistentSeries {
                    path: frames[i + 1].path.clone(),
                    detail: format!(
                        "inconsistent slice spacing: the gap between {} and {} is {:.4} mm, \
                         the typical gap is {:.4} mm (missing or extra slice?)",
                        frame_name(&frames[i]),
                        frame_name(&frames[i + 1]),
                        g,
                        median
                    ),
                });
            }
        }
    }
    Ok(())
}

fn order_without_position(
    frames: &mut [Frame],
    normal: [f64; 3],
    thickness: Option<f64>,
    root: &Path,
    warnings: &mut Vec<String>,
) -> Result<SliceAxis> {
    let n = frames.len();
    if n > 1 {
        if frames.iter().all(|f| f.instance_number.is_some()) && frames.iter().all(|f| f.frame == 0)
        {
            frames.sort_by(|a, b| {
                a.instance_number
                    .cmp(&b.instance_number)
                    .then(a.path.cmp(&b.path))
            });
            warnings.push(format!(
                "{}: ImagePositionPatient/ImageOrientationPatient missing: slices sorted by InstanceNumber",
                root.display()
            ));
        } else {
            warnings.push(format!(
                "{}: ImagePositionPatient/ImageOrientationPatient missing: slices kept in file/frame order",
                root.display()
            ));
        }
    }
    let t = thickness.unwrap_or_else(|| {
        if n > 1 {
            warnings.push("slice spacing unknown: assuming 1 mm".to_string());
        }
        1.0
    });
    Ok(SliceAxis {
        origin: frames[0].geometry.position.unwrap_or_default(),
        step: [normal[0] * t, normal[1] * t, normal[2] * t],
    })
}

/// The frames' pixels as a `(column, row, slice)` array.
pub(super) fn stack_frames(
    frames: &[Frame],
    rows: usize,
    cols: usize,
    root: &Path,
) -> Result<Array3<f32>> {
    let n = frames.len();
    let mut values = Vec::with_capacity(rows * cols * n);
    for f in frames {
        values.extend_from_slice(&f.pixels);
    }
    // Frames are row-major (column index fastest), so the stack is (column, row, slice) in
    // Fortran order.
    Array3::from_shape_vec((cols, rows, n).f(), values).map_err(|e| DataError::PixelData {
        path: root.to_path_buf(),
        detail: e.to_string(),
    })
}
