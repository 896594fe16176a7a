#![allow(dead_code)]
//! Shared by the fuzz targets: a private scratch folder per process (the readers take paths).

use std::path::PathBuf;

/// `<tmp>/segdiff-fuzz-<pid>/<name>` after emptying that folder's `name` entry.
pub fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("segdiff-fuzz-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch folder");
    let path = dir.join(name);
    if path.is_dir() {
        let _ = std::fs::remove_dir_all(&path);
    }
    path
}

/// Writes `bytes` to the scratch file `name` and returns its path.
pub fn scratch_file(name: &str, bytes: &[u8]) -> PathBuf {
    let path = scratch(name);
    std::fs::write(&path, bytes).expect("write scratch file");
    path
}

/// Splits `data` at the markers `sep` into at most `max` parts (the fuzzer learns the marker).
pub fn split_parts<'a>(data: &'a [u8], sep: &[u8], max: usize) -> Vec<&'a [u8]> {
    let mut parts = Vec::new();
    let mut rest = data;
    while parts.len() + 1 < max {
        match rest.windows(sep.len()).position(|w| w == sep) {
            Some(i) => {
                parts.push(&rest[..i]);
                rest = &rest[i + sep.len()..];
            }
            None => break,
        }
    }
    parts.push(rest);
    parts
}
