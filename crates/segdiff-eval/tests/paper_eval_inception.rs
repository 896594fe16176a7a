//! `run_paper_eval` with Inception-v3 weights: the report carries an Inception FID equal to one
//! recomputed here from the written generated images and the real test images, renders it in
//! `report.md`, and leaves it out of `report.json` when no weights are given.
//!
//! Everything is tiny and seeded: a 32×32 grey dataset with 2 test pairs, an untrained
//! 6-level UNet (8..32 channels) with seeded weights, 2 DDIM steps, a 1-epoch segmenter, and a
//! random-weight Inception-v3 (about 6 GFLOP per image at 299×299, 4 images).

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use segdiff_diffusion::{save_model_dir, ConditioningMeta, SchedulerConfig};
use segdiff_eval::paper_eval::{run_paper_eval, PaperEvalConfig, REPORT_JSON, REPORT_MD};
use segdiff_eval::{fid_from_features, init_inception_seeded, InceptionV3};
use segdiff_unet::{UNet2DConfig, UNet2DModel};

const SIZE: u32 = 32;

/// Pairs of a class-1 square and a class-2 bar with class intensities plus texture.
fn write_dataset(root: &Path) {
    for (split, n) in [("train", 3), ("val", 1), ("test", 2)] {
        let img_dir = root.join("img").join(split);
        let mask_dir = root.join("mask/all").join(split);
        std::fs::create_dir_all(&img_dir).unwrap();
        std::fs::create_dir_all(&mask_dir).unwrap();
        for i in 0..n {
            let off = 3 * i as u32 + if split == "test" { 1 } else { 0 };
            let mask = image::GrayImage::from_fn(SIZE, SIZE, |x, y| {
                let class = if (4 + off..14 + off).contains(&x) && (6..16).contains(&y) {
                    1
                } else if (20..24).contains(&x) && (2 + off..30).contains(&y) {
                    2
                } else {
                    0
                };
                image::Luma([class])
            });
            let img = image::GrayImage::from_fn(SIZE, SIZE, |x, y| {
                let base = [30u8, 140, 220][mask.get_pixel(x, y).0[0] as usize];
                image::Luma([base.saturating_add(((x * 7 + y * 13 + off) % 17) as u8)])
            });
            let name = format!("{split}_{i}.png");
            img.save(img_dir.join(&name)).unwrap();
            mask.save(mask_dir.join(&name)).unwrap();
        }
    }
    std::fs::write(
        root.join("dataset.json"),
        r#"{"num_classes": 3, "class_names": ["background", "square", "bar"]}"#,
    )
    .unwrap();
}

/// An untrained guided model (image + mask channel in, one channel out) with seeded weights.
fn write_model(dir: &Path) {
    let cfg = UNet2DConfig::with_channels(SIZE as usize, 2, 1, &[8, 8, 16, 16, 32, 32], 8);
    let vm = VarMap::new();
    UNet2DModel::new(&cfg, VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu)).unwrap();
    let mut rng = StdRng::seed_from_u64(11);
    let mut tensors = HashMap::new();
    let data = vm.data().lock().unwrap();
    let mut names: Vec<&String> = data.keys().collect();
    names.sort();
    for name in names {
        let shape = data[name].as_tensor().shape().clone();
        let values: Vec<f32> = (0..shape.elem_count())
            .map(|_| 0.1 * (2.0 * rng.random::<f32>() - 1.0))
            .collect();
        tensors.insert(
            name.clone(),
            Tensor::from_vec(values, shape, &Device::Cpu).unwrap(),
        );
    }
    let meta = ConditioningMeta {
        num_classes: Some(3),
        ..ConditioningMeta::official_for(&cfg)
    };
    save_model_dir(dir, &cfg, &tensors, &SchedulerConfig::default(), &meta).unwrap();
}

/// 8-bit grey PNGs as an N×1×H×W tensor in [0, 1].
fn read_images01(paths: &[std::path::PathBuf]) -> Tensor {
    let mut values = Vec::new();
    for p in paths {
        let img = image::open(p)
            .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
            .to_luma8();
        values.extend(img.into_raw().into_iter().map(|v| f32::from(v) / 255.0));
    }
    Tensor::from_vec(
        values,
        (paths.len(), 1, SIZE as usize, SIZE as usize),
        &Device::Cpu,
    )
    .unwrap()
}

#[test]
fn report_includes_an_inception_fid_that_matches_a_recomputation() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, model, out) = (
        tmp.path().join("data"),
        tmp.path().join("model"),
        tmp.path().join("eval"),
    );
    write_dataset(&data);
    write_model(&model);
    let weights = tmp.path().join("inception.safetensors");
    let vm = VarMap::new();
    let inception =
        InceptionV3::new(VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu)).unwrap();
    init_inception_seeded(&vm, 7).unwrap();
    vm.save(&weights).unwrap();

    let mut cfg = PaperEvalConfig::new(data.clone(), model, out.clone()).quick();
    cfg.recipe.channels = vec![4, 8];
    cfg.recipe.strides = vec![2];
    cfg.recipe.epochs = 1;
    cfg.sampling.steps = Some(2);
    cfg.inception_weights = Some(weights.clone());
    let run = run_paper_eval(&cfg, &mut |_| {}).unwrap();
    run.report.write(&out).unwrap();
    for t in &run.report.timings {
        println!("{:>24}: {:.2} s", t.stage, t.seconds);
    }

    let f = run
        .report
        .inception_fid
        .clone()
        .expect("inception_fid is missing although weights were given");
    assert_eq!((f.generated, f.real, f.feature_dim), (2, 2, 2048));
    assert_eq!(f.weights, weights.display().to_string());
    let fid = f.fid.expect("Inception FID is not finite");

    // The same distance from the files on disk, through the public API.
    let generated: Vec<_> = run
        .report
        .samples
        .iter()
        .map(|s| out.join(&s.generated))
        .collect();
    let real: Vec<_> = run
        .report
        .samples
        .iter()
        .map(|s| data.join("img/test").join(&s.name))
        .collect();
    let want = fid_from_features(
        &inception.features(&read_images01(&generated)).unwrap(),
        &inception.features(&read_images01(&real)).unwrap(),
    )
    .unwrap();
    println!("Inception FID: report {fid}, recomputed {want}");
    assert!(want > 0.0);
    assert!(
        (fid - want).abs() <= 1e-3 * want.max(1.0),
        "{fid} vs {want}"
    );

    let md = std::fs::read_to_string(out.join(REPORT_MD)).unwrap();
    assert!(
        md.contains("FID (Inception-v3 pool, 2048 features")
            && md.contains(&format!("| {fid:.3} |")),
        "{md}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join(REPORT_JSON)).unwrap()).unwrap();
    assert_eq!(json["inception_fid"]["generated"], 2);
    // Without weights the key is absent, and old reports without it still parse.
    let mut without = run.report.clone();
    without.inception_fid = None;
    let text = serde_json::to_string(&without).unwrap();
    assert!(!text.contains("inception_fid"));
    let back: segdiff_eval::paper_eval::PaperEvalReport = serde_json::from_str(&text).unwrap();
    assert_eq!(back.inception_fid, None);
    assert!(!without.to_markdown().contains("FID (Inception-v3"));
}

#[test]
fn a_bad_inception_weight_file_fails_before_any_work() {
    let tmp = tempfile::tempdir().unwrap();
    let weights = tmp.path().join("not-inception.safetensors");
    candle_core::safetensors::save(
        &HashMap::from([(
            "Conv2d_1a_3x3.conv.weight",
            Tensor::zeros((32, 3, 3, 3), DType::F32, &Device::Cpu).unwrap(),
        )]),
        &weights,
    )
    .unwrap();
    let mut cfg = PaperEvalConfig::new(
        tmp.path().join("no-data"),
        tmp.path().join("no-model"),
        tmp.path().join("out"),
    );
    cfg.inception_weights = Some(weights);
    let err = run_paper_eval(&cfg, &mut |_| {}).unwrap_err().to_string();
    assert!(
        err.contains("not-inception.safetensors") && err.contains("missing"),
        "{err}"
    );
    assert!(!tmp.path().join("out").exists());
}
