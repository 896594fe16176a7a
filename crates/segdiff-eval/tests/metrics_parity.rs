//! Dice, Hausdorff, PSNR/SSIM and FID against the MONAI / scikit-image / pytorch-fid oracles
//! (`../shared/fixtures/oracle-scripts/{monai,metrics,fid}_fixture.py`).

mod shared_fixtures;

use candle_core::{DType, Tensor};
use segdiff_eval::{
    dice, fid_from_features, frechet_terms, hausdorff_distance, psnr, ssim, DiceConfig,
    FeatureStats, HausdorffConfig, LabelMaps, SsimConfig,
};
use shared_fixtures::{committed, get, max_abs_diff_nan_aware, shared, values};

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// The references are float32 (MONAI); our f64 values must agree to f32 resolution.
const DICE_ATOL: f64 = 1e-6;
/// float32 distances up to ~60 px carry ~4e-6 rounding.
const HD_ATOL: f64 = 1e-5;
/// PSNR/SSIM references are float64 (scikit-image).
const IMAGE_RTOL: f64 = 1e-10;
/// fixtures README: FID tolerance 1e-6 relative.
const FID_RTOL: f64 = 1e-6;

#[test]
fn dice_matches_monai_for_all_flag_combinations() -> TestResult {
    let t = committed("dice.safetensors");
    let pred = LabelMaps::from_tensor(get(&t, "pred"))?;
    let gt = LabelMaps::from_tensor(get(&t, "gt"))?;
    let mut worst: f64 = 0.0;
    for include_background in [false, true] {
        for ignore_empty in [false, true] {
            let cfg = DiceConfig {
                num_classes: 4,
                include_background,
                ignore_empty,
            };
            let scores = dice(&pred, &gt, &cfg)?;
            let key = format!(
                "dice.incl_bg_{}.ignore_empty_{}",
                u8::from(include_background),
                u8::from(ignore_empty)
            );
            let want = values(get(&t, &format!("{key}.per_sample_class")));
            let err = max_abs_diff_nan_aware(scores.as_slice(), &want);
            let want_mean = values(get(&t, &format!("{key}.mean")))[0];
            let err_mean = (scores.mean() - want_mean).abs();
            println!("{key}: per-class max err {err:.3e}, mean err {err_mean:.3e}");
            assert!(err <= DICE_ATOL && err_mean <= DICE_ATOL, "{key}");
            worst = worst.max(err).max(err_mean);
        }
    }
    // The fixture's sample 2 has an empty target: with ignore_empty it must be all NaN.
    let s = dice(&pred, &gt, &DiceConfig::new(4))?;
    assert!(s.row(2).iter().all(|v| v.is_nan()));
    println!("dice worst abs err {worst:.3e} (tol {DICE_ATOL:e})");
    Ok(())
}

#[test]
fn hausdorff_matches_monai() -> TestResult {
    let t = committed("metrics.safetensors");
    let pred = LabelMaps::from_tensor(get(&t, "hd.pred"))?;
    let target = LabelMaps::from_tensor(get(&t, "hd.target"))?;
    // Sample 2 lacks predicted class 3, sample 3 has an empty target: MONAI gives +inf for the
    // maximum and NaN for the percentile there.
    for (cfg, key, n_nan) in [
        (HausdorffConfig::hd95(4), "hd.hd95", 4),
        (HausdorffConfig::hd100(4), "hd.hd100", 0),
    ] {
        let got = hausdorff_distance(&pred, &target, &cfg)?;
        let want = values(get(&t, key));
        let err = max_abs_diff_nan_aware(got.as_slice(), &want);
        println!(
            "{key}: max abs err {err:.3e} (tol {HD_ATOL:e}); got {:?}",
            got.as_slice()
        );
        assert!(err <= HD_ATOL, "{key}");
        assert_eq!(12 - got.count_valid(), n_nan, "{key}: NaN count");
        assert_eq!(
            got.get(2, 2).is_infinite(),
            n_nan == 0,
            "{key}: sample 2 class 3"
        );
    }
    Ok(())
}

fn images(
    t: &std::collections::HashMap<String, Tensor>,
    key: &str,
) -> Result<Vec<u8>, candle_core::Error> {
    get(t, key)
        .flatten_all()?
        .to_dtype(DType::U8)?
        .to_vec1::<u8>()
}

#[test]
fn psnr_and_ssim_match_scikit_image() -> TestResult {
    let t = committed("metrics.safetensors");
    let (a, b) = (images(&t, "img.a")?, images(&t, "img.b")?);
    let (h, w) = (48, 48);
    let want_psnr = values(get(&t, "img.psnr"));
    let want_ssim = values(get(&t, "img.ssim"));
    let want_gauss = values(get(&t, "img.ssim_gaussian"));
    let mut worst: f64 = 0.0;
    for i in 0..3 {
        let (ai, bi) = (
            &a[i * h * w..(i + 1) * h * w],
            &b[i * h * w..(i + 1) * h * w],
        );
        let rel = |got: f64, want: f64| (got - want).abs() / want.abs();
        let e_psnr = rel(psnr(ai, bi, 255.0)?, want_psnr[i]);
        let e_ssim = rel(
            ssim(ai, bi, h, w, 255.0, &SsimConfig::skimage_default())?,
            want_ssim[i],
        );
        let e_gauss = rel(
            ssim(ai, bi, h, w, 255.0, &SsimConfig::gaussian_wang2004())?,
            want_gauss[i],
        );
        println!(
            "image {i}: rel err psnr {e_psnr:.2e}, ssim {e_ssim:.2e}, ssim_gaussian {e_gauss:.2e}"
        );
        worst = worst.max(e_psnr).max(e_ssim).max(e_gauss);
    }
    println!("psnr/ssim worst rel err {worst:.3e} (tol {IMAGE_RTOL:e})");
    assert!(worst <= IMAGE_RTOL);
    Ok(())
}

fn check_fid_case(t: &std::collections::HashMap<String, Tensor>, case: &str) -> TestResult {
    let want = values(get(t, &format!("{case}.fid")))[0];
    let got = fid_from_features(
        get(t, &format!("{case}.feats1")),
        get(t, &format!("{case}.feats2")),
    )?;
    // Case b is ~0 (identical statistics): relative error is taken against 1.
    let err = (got - want).abs() / want.abs().max(1.0);
    println!(
        "fid case {case}: got {got:.12}, want {want:.12}, rel err {err:.3e} (tol {FID_RTOL:e})"
    );
    assert!(err <= FID_RTOL, "case {case}");
    Ok(())
}

#[test]
fn fid_matches_pytorch_fid_cases_a_b_c() -> TestResult {
    let t = committed("fid_abc.safetensors");
    for case in ["a", "b", "c"] {
        check_fid_case(&t, case)?;
        // Our mean and ddof-1 covariance must equal the stored numpy statistics.
        let s1 = FeatureStats::from_tensor(get(&t, &format!("{case}.feats1")))?;
        let mu = values(get(&t, &format!("{case}.mu1")));
        let sigma = values(get(&t, &format!("{case}.sigma1")));
        let d = s1.dim();
        let e_mu = max_abs_diff_nan_aware(s1.mean(), &mu);
        let ours: Vec<f64> = (0..d * d)
            .map(|i| s1.covariance()[(i / d, i % d)])
            .collect();
        let e_sigma = max_abs_diff_nan_aware(&ours, &sigma);
        println!("case {case}: mu err {e_mu:.2e}, sigma err {e_sigma:.2e}");
        assert!(e_mu < 1e-12 && e_sigma < 1e-12);
        // From the stored (mu, sigma) as well, the path used with cached reference statistics.
        let stats = |k: &str| -> Result<FeatureStats, segdiff_eval::EvalError> {
            FeatureStats::from_parts(
                0,
                values(get(&t, &format!("{case}.mu{k}"))),
                values(get(&t, &format!("{case}.sigma{k}"))),
            )
        };
        let terms = frechet_terms(&stats("1")?, &stats("2")?)?;
        let want = values(get(&t, &format!("{case}.fid")))[0];
        assert!(
            (terms.fid - want).abs() / want.abs().max(1.0) <= FID_RTOL,
            "case {case} from stats"
        );
    }
    Ok(())
}

#[test]
#[ignore = "needs ../shared/fixtures; run by cargo xtask parity"]
fn fid_matches_pytorch_fid_case_d_2048_dims() -> TestResult {
    check_fid_case(&shared("fid.safetensors"), "d")
}
