//! `segdiff mhvae …`: the multi-headed VAE (segdiff-mhvae). This module only parses and wires.

use anyhow::Result;
use clap::Subcommand;

mod warp;

#[derive(Debug, Subcommand)]
pub enum MhvaeCommand {
    /// Apply an affine or thin-plate-spline warp to images, with torch's `affine_grid` /
    /// `grid_sample` semantics (bilinear, zero padding): a tool for checking the MHVAE's warps
    /// against other implementations. IN holds `image` (N,C,H,W) and either `affine` (N,2,3) or
    /// `tps_target` (K,2) + `tps_source` (N,K,2), in normalised (x, y) coordinates; OUT gets `grid`
    /// (N,H,W,2) and `warped` (N,C,H,W).
    Warp(warp::WarpArgs),
}

pub fn run(cmd: MhvaeCommand) -> Result<()> {
    match cmd {
        MhvaeCommand::Warp(args) => warp::run(&args),
    }
}
