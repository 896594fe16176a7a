//! Writing files so that a reader never sees a half-written one: write a temporary sibling,
//! sync it, rename it over the target.

use std::path::{Path, PathBuf};

use crate::error::{EvalError, Result};

/// Writes through `.<name>.tmp-<pid>` in the same folder, syncs it, then renames it over `path`.
pub(crate) fn write_atomic(
    path: &Path,
    write: impl FnOnce(&Path) -> std::io::Result<()>,
) -> Result<()> {
    let tmp = temp_sibling(path);
    let result = write(&tmp)
        .and_then(|()| std::fs::File::open(&tmp)?.sync_all())
        .and_then(|()| std::fs::rename(&tmp, path));
    match result {
        Ok(()) => {
            // Persist the rename; not every platform can open a folder, so that part may fail.
            if let Some(Ok(d)) = path.parent().map(std::fs::File::open) {
                let _ = d.sync_all();
            }
            Ok(())
        }
        Err(source) => {
            let _ = std::fs::remove_file(&tmp);
            Err(EvalError::Write {
                path: path.to_path_buf(),
                source,
            })
        }
    }
}

fn temp_sibling(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "file".into());
    path.with_file_name(format!(".{name}.tmp-{}", std::process::id()))
}
