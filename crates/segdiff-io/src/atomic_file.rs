//! Crash-safe writes: a file goes to a temporary name in the same folder, is synced and renamed
//! over its target; a folder is filled under a temporary sibling and swapped in whole.

use std::path::{Path, PathBuf};

/// Writes `path` by calling `write` on a temporary sibling path, syncing it to disk and renaming
/// it over `path`; on any error the temporary file is removed and `path` is left untouched.
pub fn write_atomic(
    path: &Path,
    write: impl FnOnce(&Path) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let tmp = temp_sibling(path, "tmp");
    let result = write(&tmp).and_then(|()| {
        std::fs::File::open(&tmp)?.sync_all()?;
        std::fs::rename(&tmp, path)?;
        sync_parent(path);
        Ok(())
    });
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// [`write_atomic`] of a byte buffer.
pub fn write_bytes_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    write_atomic(path, |tmp| std::fs::write(tmp, bytes))
}

/// `<dir>/.<name>.<tag>-<pid>`: same folder as `path`, so a rename never crosses file systems,
/// and hidden, so a half-written file is not mistaken for an output.
pub fn temp_sibling(path: &Path, tag: &str) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "file".into());
    let tmp_name = format!(".{name}.{tag}-{}", std::process::id());
    match path.parent() {
        Some(p) => p.join(tmp_name),
        None => PathBuf::from(tmp_name),
    }
}

/// Moves the finished folder `staged` to `target`, replacing whatever folder was there: the old
/// one is first moved aside (and restored if the swap fails), then removed. A reader sees either
/// the old folder or the new one, never a mix.
pub fn replace_dir(staged: &Path, target: &Path) -> std::io::Result<()> {
    let old = temp_sibling(target, "old");
    let had_old = target.exists();
    if had_old {
        if old.exists() {
            std::fs::remove_dir_all(&old)?;
        }
        std::fs::rename(target, &old)?;
    }
    if let Err(e) = std::fs::rename(staged, target) {
        if had_old {
            let _ = std::fs::rename(&old, target);
        }
        return Err(e);
    }
    sync_parent(target);
    if had_old {
        let _ = std::fs::remove_dir_all(&old);
    }
    Ok(())
}

/// A guard that removes a staging folder when dropped, unless [`DirGuard::keep`] was called:
/// an error or a panic half-way leaves no partial folder behind.
#[must_use = "the folder is removed when the guard is dropped"]
pub struct DirGuard {
    path: PathBuf,
    armed: bool,
}

/// Starts guarding `path` (see [`DirGuard`]).
pub fn remove_dir_on_drop(path: &Path) -> DirGuard {
    DirGuard {
        path: path.to_path_buf(),
        armed: true,
    }
}

impl DirGuard {
    /// The guarded folder.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Keeps the folder: it has been moved into place.
    pub fn keep(mut self) {
        self.armed = false;
    }
}

impl Drop for DirGuard {
    fn drop(&mut self) {
        if self.armed {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// Persists a rename; not every platform can open a folder, so failures are ignored.
fn sync_parent(path: &Path) {
    if let Some(Ok(d)) = path.parent().map(std::fs::File::open) {
        let _ = d.sync_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_write_leaves_the_old_file_and_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.txt");
        write_bytes_atomic(&path, b"old").unwrap();
        let err = write_atomic(&path, |tmp| {
            std::fs::write(tmp, b"half")?;
            Err(std::io::Error::other("disk full"))
        })
        .unwrap_err();
        assert_eq!(err.to_string(), "disk full");
        assert_eq!(std::fs::read(&path).unwrap(), b"old");
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1, "temporary file left behind");
    }

    #[test]
    fn replace_dir_swaps_a_whole_folder() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("out");
        std::fs::create_dir(&target).unwrap();
        std::fs::write(target.join("old.txt"), b"1").unwrap();
        let staged = temp_sibling(&target, "new");
        std::fs::create_dir(&staged).unwrap();
        std::fs::write(staged.join("new.txt"), b"2").unwrap();
        replace_dir(&staged, &target).unwrap();
        assert!(target.join("new.txt").exists());
        assert!(!target.join("old.txt").exists());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn a_guard_removes_its_folder_unless_kept() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        std::fs::create_dir(&a).unwrap();
        drop(remove_dir_on_drop(&a));
        assert!(!a.exists());
        std::fs::create_dir(&a).unwrap();
        remove_dir_on_drop(&a).keep();
        assert!(a.exists());
    }
}
