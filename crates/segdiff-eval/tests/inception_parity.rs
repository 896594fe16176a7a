//! Whole-network parity of [`InceptionV3`] with torchvision's `inception_v3` (eval mode, pool
//! output) on random weights, from the files `bench/oracle/inception_oracle.py --full OUT_DIR`
//! writes (about 110 MB, not committed). The block-level parities run as unit tests on the
//! committed `tests/fixtures/inception_v3_parts.safetensors`.

use std::path::PathBuf;

use candle_core::{DType, Device, Module, Tensor};
use segdiff_eval::{inception_input, InceptionV3, INCEPTION_FEATURE_DIM};

/// Tolerance of the 2048-d features (f32; torchvision's values here have std ≈ 5.6).
const FEATURES_ATOL: f64 = 1e-4;
/// Tolerance of the 299×299 network input.
const INPUT_ATOL: f64 = 1e-5;

fn fixture_dir() -> PathBuf {
    let Some(dir) = std::env::var_os("SEGDIFF_INCEPTION_FIXTURE") else {
        panic!(
            "SEGDIFF_INCEPTION_FIXTURE is not set: run \
             `python bench/oracle/inception_oracle.py --full OUT_DIR` (torch + torchvision) and \
             set it to OUT_DIR"
        );
    };
    PathBuf::from(dir)
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.dims(), b.dims());
    let a = a.to_dtype(DType::F64).unwrap().flatten_all().unwrap();
    let b = b.to_dtype(DType::F64).unwrap().flatten_all().unwrap();
    let (a, b) = (a.to_vec1::<f64>().unwrap(), b.to_vec1::<f64>().unwrap());
    a.iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}

#[test]
#[ignore = "needs SEGDIFF_INCEPTION_FIXTURE (made by bench/oracle/inception_oracle.py --full)"]
fn random_weight_network_matches_torchvision_features() {
    let dir = fixture_dir();
    let weights = dir.join("inception_v3_random.safetensors");
    let io_path = dir.join("inception_v3_full_io.safetensors");
    for p in [&weights, &io_path] {
        assert!(p.is_file(), "{} is missing", p.display());
    }
    // The weight file is torchvision's whole state_dict: fc, AuxLogits and num_batches_tracked
    // must be skipped by the loader.
    let net = match InceptionV3::load(&weights, &Device::Cpu) {
        Ok(n) => n,
        Err(e) => panic!("loading {}: {e}", weights.display()),
    };
    let io = candle_core::safetensors::load(&io_path, &Device::Cpu).unwrap();
    let images = &io["images"];
    let input = inception_input(images).unwrap();
    let err_in = max_abs_diff(&input, &io["input"]);
    println!("network input: max abs err {err_in:.3e} (atol {INPUT_ATOL:e})");
    assert!(err_in <= INPUT_ATOL);

    let want = &io["features"];
    let features = net.features_batched(images, 1).unwrap();
    assert_eq!(features.dims(), &[2, INCEPTION_FEATURE_DIM]);
    let err = max_abs_diff(&features, want);
    let scale = max_abs_diff(want, &want.zeros_like().unwrap());
    println!("features: max abs err {err:.3e} (atol {FEATURES_ATOL:e}; max |feature| {scale:.2})");
    assert!(err <= FEATURES_ATOL);
    // The stored torchvision input through `forward` gives the same features.
    let from_input = net.forward(&io["input"]).unwrap();
    let err2 = max_abs_diff(&from_input, want);
    println!("features from torchvision's input: max abs err {err2:.3e}");
    assert!(err2 <= FEATURES_ATOL);
}
