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

/// The `tag`s segdiff passes to [`temp_sibling`]: `tmp` (files and staged folders), `old` (a
/// folder moved aside by [`replace_dir`]), `staging` (DICOM series).
const TEMP_TAGS: [&str; 3] = ["tmp", "old", "staging"];

/// Removes the entries of `dir` that a killed segdiff process left behind: files and folders
/// named like [`temp_sibling`]'s `.<name>.<tag>-<pid>` (and the NIfTI writer's
/// `.segdiff-nifti-<pid>.nii[.gz]`) whose process is gone. Entries of this process and of live
/// processes are kept, so two runs may share a folder; where liveness cannot be told (no
/// `/proc`), nothing is removed. A missing `dir` holds nothing. Returns what was removed.
pub fn remove_stale_temps(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut removed = Vec::new();
    for entry in entries {
        let entry = entry?;
        let Some(pid) = entry.file_name().to_str().and_then(temp_owner) else {
            continue;
        };
        if pid == std::process::id() || !process_gone(pid) {
            continue;
        }
        let path = entry.path();
        // `DirEntry::file_type` does not follow links: a link is removed, never its target.
        let gone = if entry.file_type()?.is_dir() {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        match gone {
            Ok(()) => removed.push(path),
            // Another run cleaning the same folder got there first.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    removed.sort();
    Ok(removed)
}

/// [`remove_stale_temps`] in `dir` and in every folder below it (links are not followed): for
/// an output folder the command owns whole, such as a training run's (`checkpoints/`,
/// `previews/`, `unet/`, …).
pub fn remove_stale_temps_tree(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut removed = remove_stale_temps(dir)?;
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(removed),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            removed.extend(remove_stale_temps_tree(&entry.path())?);
        }
    }
    Ok(removed)
}

/// The pid in a temporary name written by segdiff, `None` for any other name.
fn temp_owner(name: &str) -> Option<u32> {
    let digits = |s: &str| -> Option<u32> {
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    };
    if let Some(rest) = name.strip_prefix(".segdiff-nifti-") {
        return digits(rest.strip_suffix(".nii.gz").or(rest.strip_suffix(".nii"))?);
    }
    let (stem, suffix) = name.strip_prefix('.')?.rsplit_once('.')?;
    let (tag, pid) = suffix.rsplit_once('-')?;
    if stem.is_empty() || !TEMP_TAGS.contains(&tag) {
        return None;
    }
    digits(pid)
}

/// Whether process `pid` has certainly exited (Linux: no `/proc/<pid>`); `false` where this
/// cannot be told.
fn process_gone(pid: u32) -> bool {
    let proc = Path::new("/proc");
    cfg!(target_os = "linux") && proc.join("self").exists() && !proc.join(pid.to_string()).exists()
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

    /// A pid that is certainly not running: above the kernel's `pid_max` (at most 2^22).
    const DEAD_PID: u32 = 4_194_304 + 17;

    #[test]
    fn temp_names_are_recognised_and_others_are_not() {
        assert_eq!(temp_owner(".a.png.tmp-123"), Some(123));
        assert_eq!(temp_owner(".out.old-9"), Some(9));
        assert_eq!(temp_owner(".series.staging-42"), Some(42));
        assert_eq!(temp_owner(".segdiff-nifti-77.nii.gz"), Some(77));
        assert_eq!(temp_owner(".segdiff-nifti-77.nii"), Some(77));
        for other in [
            "a.png.tmp-123",
            ".a.png.tmp-",
            ".a.png.tmp-12x",
            ".a.png.bak-123",
            "..tmp-123",
            ".hidden",
            ".git",
            "step-0000002",
            ".segdiff-nifti-x.nii",
        ] {
            assert_eq!(temp_owner(other), None, "{other}");
        }
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn stale_temps_of_dead_processes_are_removed_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let dead_file = d.join(format!(".a.png.tmp-{DEAD_PID}"));
        let dead_dir = d.join(format!(".out.tmp-{DEAD_PID}"));
        let dead_old = d.join(format!(".out.old-{DEAD_PID}"));
        let dead_nifti = d.join(format!(".segdiff-nifti-{DEAD_PID}.nii.gz"));
        std::fs::write(&dead_file, b"half").unwrap();
        std::fs::create_dir_all(dead_dir.join("img/train")).unwrap();
        std::fs::write(dead_dir.join("img/train/x.png"), b"x").unwrap();
        std::fs::create_dir(&dead_old).unwrap();
        std::fs::write(&dead_nifti, b"").unwrap();
        // Ours, a live process's (pid 1 always runs), outputs and other hidden files stay.
        let ours = temp_sibling(&d.join("b.png"), "tmp");
        let live = d.join(".c.png.tmp-1");
        let kept = [
            ours.clone(),
            live.clone(),
            d.join("a.png"),
            d.join(".hidden"),
            d.join(format!(".a.png.bak-{DEAD_PID}")),
        ];
        for k in &kept {
            std::fs::write(k, b"keep").unwrap();
        }
        let mut want = vec![dead_file, dead_dir, dead_old, dead_nifti];
        want.sort();
        assert_eq!(remove_stale_temps(d).unwrap(), want);
        for w in &want {
            assert!(!w.exists(), "{} left", w.display());
        }
        for k in &kept {
            assert!(k.exists(), "{} removed", k.display());
        }
        assert!(remove_stale_temps(d).unwrap().is_empty());
    }

    #[cfg(unix)]
    #[test]
    fn a_stale_link_is_removed_not_its_target() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target");
        std::fs::create_dir(&target).unwrap();
        std::fs::write(target.join("f"), b"1").unwrap();
        let link = dir.path().join(format!(".x.tmp-{DEAD_PID}"));
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let removed = remove_stale_temps(dir.path()).unwrap();
        if cfg!(target_os = "linux") {
            assert_eq!(removed, vec![link.clone()]);
        }
        assert!(target.join("f").exists());
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn the_tree_variant_cleans_every_folder_below() {
        let dir = tempfile::tempdir().unwrap();
        let deep = dir.path().join("checkpoints/step-0000002");
        std::fs::create_dir_all(&deep).unwrap();
        let stale = [
            dir.path().join(format!(".train_log.csv.tmp-{DEAD_PID}")),
            dir.path()
                .join(format!("checkpoints/.step-0000004.tmp-{DEAD_PID}")),
            deep.join(format!(".training_state.json.tmp-{DEAD_PID}")),
        ];
        for s in &stale {
            std::fs::write(s, b"half").unwrap();
        }
        std::fs::write(deep.join("training_state.json"), b"{}").unwrap();
        assert_eq!(remove_stale_temps_tree(dir.path()).unwrap().len(), 3);
        assert!(stale.iter().all(|s| !s.exists()));
        assert!(deep.join("training_state.json").exists());
    }

    #[test]
    fn a_missing_folder_holds_no_temps() {
        let dir = tempfile::tempdir().unwrap();
        assert!(remove_stale_temps(&dir.path().join("absent"))
            .unwrap()
            .is_empty());
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
