//! Locating the reference fixtures: committed ones in `tests/fixtures`, large ones in the shared
//! folder (`SEGDIFF_SHARED_FIXTURES`, default `../../../shared/fixtures` from this crate).
// Each test binary compiles this module and uses only part of it.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{Device, Tensor};

/// Tensors of a committed fixture file.
pub fn committed(name: &str) -> HashMap<String, Tensor> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    load(path)
}

/// Path of a file in the shared fixture folder; panics when it is absent so that an ignored
/// parity test can never pass silently.
pub fn shared_path(name: &str) -> PathBuf {
    let dir = std::env::var_os("SEGDIFF_SHARED_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures")
        });
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "shared fixture {} is missing: set SEGDIFF_SHARED_FIXTURES to the folder holding it",
        path.display()
    );
    path
}

/// Tensors of a shared fixture file (panics when absent).
pub fn shared(name: &str) -> HashMap<String, Tensor> {
    load(shared_path(name))
}

fn load(path: PathBuf) -> HashMap<String, Tensor> {
    match candle_core::safetensors::load(&path, &Device::Cpu) {
        Ok(t) => t,
        Err(e) => panic!("cannot read fixture {}: {e}", path.display()),
    }
}

/// A named tensor of a fixture (panics with the key when absent).
pub fn get<'a>(tensors: &'a HashMap<String, Tensor>, key: &str) -> &'a Tensor {
    match tensors.get(key) {
        Some(t) => t,
        None => panic!("fixture has no tensor `{key}`"),
    }
}

/// All values as f64.
pub fn values(t: &Tensor) -> Vec<f64> {
    match t
        .to_dtype(candle_core::DType::F64)
        .and_then(|t| t.flatten_all())
        .and_then(|t| t.to_vec1::<f64>())
    {
        Ok(v) => v,
        Err(e) => panic!("cannot read tensor values: {e}"),
    }
}

/// Largest |a − b| over entries, requiring NaN in exactly the same places.
pub fn max_abs_diff_nan_aware(got: &[f64], want: &[f64]) -> f64 {
    assert_eq!(got.len(), want.len(), "length");
    got.iter()
        .zip(want)
        .enumerate()
        .map(|(i, (g, w))| {
            assert_eq!(
                g.is_nan(),
                w.is_nan(),
                "NaN mismatch at {i}: got {g}, want {w}"
            );
            if w.is_nan() || g == w {
                // Equal infinities (MONAI's HD100 with one empty mask) count as exact.
                0.0
            } else {
                (g - w).abs()
            }
        })
        .fold(0.0, f64::max)
}
