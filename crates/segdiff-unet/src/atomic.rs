//! Crash-safe file writes: write to a temporary name in the same folder, fsync, rename.

use std::path::{Path, PathBuf};

/// Writes `path` by calling `write` on a temporary sibling path, syncing it to disk and renaming
/// it over `path`; on any error the temporary file is removed and `path` is left untouched.
pub fn write_atomic(
    path: &Path,
    write: impl FnOnce(&Path) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let tmp = temp_sibling(path);
    let result = write(&tmp).and_then(|()| {
        std::fs::File::open(&tmp)?.sync_all()?;
        std::fs::rename(&tmp, path)?;
        if let Some(parent) = path.parent() {
            // Persist the rename itself; not every platform can open a folder, so ignore that.
            if let Ok(d) = std::fs::File::open(parent) {
                let _ = d.sync_all();
            }
        }
        Ok(())
    });
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// `<dir>/.<name>.tmp-<pid>`: same folder, so the rename never crosses file systems.
pub fn temp_sibling(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "file".into());
    let tmp_name = format!(".{name}.tmp-{}", std::process::id());
    match path.parent() {
        Some(p) => p.join(tmp_name),
        None => PathBuf::from(tmp_name),
    }
}
