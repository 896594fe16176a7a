//! [`segdiff_io::write_atomic`] with this crate's error (the path at fault and the cause).

use std::path::Path;

use crate::error::{EvalError, Result};

/// Writes `path` through a synced temporary sibling renamed over it (see [`segdiff_io`]).
pub(crate) fn write_atomic(
    path: &Path,
    write: impl FnOnce(&Path) -> std::io::Result<()>,
) -> Result<()> {
    segdiff_io::write_atomic(path, write).map_err(|source| EvalError::Write {
        path: path.to_path_buf(),
        source,
    })
}
