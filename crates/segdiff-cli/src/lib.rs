//! The library side of the `segdiff` command-line crate: the pieces that `xtask` shares with the
//! binary: [`hub`], Hugging Face Hub references (`hf://owner/name`) resolved into the standard
//! Hugging Face cache, [`allocator`], the settings of the mimalloc allocator both binaries
//! use, and [`options_file`], the `--options FILE` / `--preset NAME` expansion (public so the
//! fuzz targets reach it). The science lives in the other segdiff crates.

pub mod allocator;
pub mod hub;
pub mod options_file;

use std::path::{Path, PathBuf};

/// `segdiff eval`'s default output folder for a model location: `eval-<name>` in the current
/// folder, named after the repository for a Hub reference (`hf://owner/name…`, not the
/// snapshot's commit hash it resolves to) and after the folder otherwise.
pub fn default_eval_out(model: &Path) -> PathBuf {
    let name = match hub::HubRef::from_location(model) {
        Some(Ok(r)) => r.name,
        _ => model
            .canonicalize()
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_else(|| "model".into()),
    };
    PathBuf::from(format!("eval-{name}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_eval_out_names_the_repository_or_the_folder() {
        let hub = default_eval_out(Path::new("hf://owner/ct-organ-model@main/unet"));
        assert_eq!(hub, PathBuf::from("eval-ct-organ-model"));
        let dir = tempfile::tempdir().unwrap();
        let model = dir.path().join("my-model");
        std::fs::create_dir(&model).unwrap();
        assert_eq!(default_eval_out(&model), PathBuf::from("eval-my-model"));
        assert_eq!(
            default_eval_out(&dir.path().join("missing")),
            PathBuf::from("eval-model")
        );
    }
}
