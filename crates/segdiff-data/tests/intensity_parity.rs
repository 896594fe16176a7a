//! The MRI intensity window uses numpy's default (linear) percentile: compare with
//! `np.percentile` on two committed volumes (`numpy_percentiles.safetensors`).

mod common;

use common::*;
use segdiff_data::intensity::percentiles;
use segdiff_data::read_nifti;

#[test]
fn percentiles_match_numpy() {
    let fx = fixtures();
    let t = load_tensors(&fx.join("numpy_percentiles.safetensors"));
    let q = values_f64(&t["q"]);
    for (key, path) in [
        ("anatomical", "nifti/anatomical.nii"),
        ("mni_t1_sub3", "mni_small/mni_t1_sub3.nii.gz"),
    ] {
        let v = read_nifti(&fx.join(path), 0).unwrap().volume;
        let data: Vec<f32> = v.data.iter().copied().collect();
        let ours = percentiles(&data, &q).unwrap();
        let want = values_f64(&t[key]);
        let e = ours
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs() / b.abs().max(1.0))
            .fold(0.0, f64::max);
        println!("{key}: percentiles {q:?} max relative error vs numpy {e:e}");
        assert!(e < 1e-12, "{key}: {ours:?} vs {want:?}");
    }
}
