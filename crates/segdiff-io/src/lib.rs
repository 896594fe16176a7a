//! File plumbing shared by every segdiff crate, so that each convention has one implementation.
//!
//! - [`atomic_file`]: crash-safe writes. A file is written to a temporary sibling, synced and
//!   renamed over its target ([`write_atomic`], [`write_bytes_atomic`]); a folder is built under a
//!   temporary sibling and swapped in whole ([`replace_dir`]). A killed process or a full disk
//!   leaves the previous file or folder, never a partial one.
//! - [`image_file`]: PNG reading and writing. RGB (and palette) images become grey exactly as
//!   Pillow's `convert("L")` makes them ([`pil_luma`]), which is what the official Python code
//!   sees, whichever command reads the file.
//! - [`picture`]: pictures a person looks at: masks in class colours, overlays, grids.
//! - [`chart`]: charts drawn with plotters (line charts; the bundled font every plot uses).
//! - [`panic_guard`]: third-party decoders and parsers run on user files behind a guard that
//!   turns a panic into an error message ([`catch_panic`]).
//!
//! Not here: anything about tensors, datasets or models.

pub mod atomic_file;
pub mod chart;
pub mod image_file;
pub mod panic_guard;
pub mod picture;

pub use atomic_file::{
    remove_dir_on_drop, remove_stale_temps, remove_stale_temps_tree, replace_dir, temp_sibling,
    write_atomic, write_bytes_atomic, DirGuard,
};
pub use image_file::{
    decode_image, encode_png, grey16, grey8, pil_luma, read_chw01, read_grey_samples, read_image,
    write_png, Channels, GreySamples, ImageFileError, ImageFileResult,
};
pub use panic_guard::{catch_panic, panic_detail};
