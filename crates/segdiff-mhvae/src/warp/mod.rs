//! Spatial-transformer ops with torch's semantics (`F.affine_grid`, `F.grid_sample` with
//! `mode="bilinear", padding_mode="zeros"`, `F.interpolate(mode="bilinear")`) and the paper's
//! thin-plate spline (App. B). Grids are (N, H, W, 2) in normalised coordinates, last axis (x =
//! column, y = row), both in [−1, 1] across the image; they map each *output* pixel to the
//! *source* location it reads (backward warping).

mod control_points;
mod grid_sample;
mod lattice;
mod tps;
mod upsample;

pub use control_points::ControlPoints;
pub use grid_sample::{grid_sample, grid_sample_composed, GridSampleCpu};
pub use lattice::{affine_grid, lattice_coords};
pub use tps::TpsWarp;
pub use upsample::{interpolation_matrix, resize_bilinear};
