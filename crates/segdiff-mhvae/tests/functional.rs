//! The MHVAE trained on synthetic single-object data with known ground truth (release tests; a
//! few minutes in all on 2 cores). Checks what the paper claims the model does: the warped
//! reference segments held-out images, the TPS fits shapes an ellipse cannot, and training is a
//! pure function of the seed (resume is bit-exact).

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use segdiff_data::{Dataset, DatasetOptions, Split};
use segdiff_diffusion::train::{train, DatasetBatches, TrainData};
use segdiff_mhvae::synth::{draw_samples, write_dataset, ShapeKind};
use segdiff_mhvae::trainer::{batch_inputs, MhvaeTrainOptions, MhvaeTrainer};
use segdiff_mhvae::{Mhvae, MhvaeConfig, PositionEdit, WarpKind};

const SIZE: usize = 32;

/// The allocator of the `segdiff` binary: the system one spends a third of a refiner step in the
/// kernel, zeroing pages for tensors of the sizes it just freed.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn dataset(dir: &Path, kind: ShapeKind, n: usize, seed: u64) {
    write_dataset(dir, &draw_samples(kind, n, seed), SIZE).unwrap();
}

fn split(dir: &Path, split: Split) -> DatasetBatches {
    DatasetBatches::new(
        Dataset::open(dir, split, &DatasetOptions::default()).unwrap(),
        true,
    )
}

fn train_model(
    data_dir: &Path,
    out: &Path,
    warp: WarpKind,
    steps: usize,
    seed: u64,
) -> MhvaeTrainer {
    let config = MhvaeConfig {
        image_size: SIZE,
        warp,
        ..MhvaeConfig::default()
    };
    let run = segdiff_diffusion::train::RunOptions {
        total_steps: steps,
        seed,
        ..MhvaeTrainOptions::default_run()
    };
    let mut trainer = MhvaeTrainer::new(config, run, &Device::Cpu).unwrap();
    let data = split(data_dir, Split::Train);
    train(&mut trainer, &data, out, None, &mut |_| {}).unwrap();
    trainer
}

/// Mean hard Dice of the model's masks on a split.
fn mean_dice(model: &Mhvae, data: &DatasetBatches) -> f64 {
    let idx: Vec<usize> = (0..data.len()).collect();
    let batch = data.load(&idx).unwrap();
    let (x, y) = batch_inputs(&batch, &Device::Cpu).unwrap();
    let post = model.encode(&x).unwrap();
    let masks = model.segment(&post.theta.unwrap().0).unwrap();
    let inter = (&masks * &y)
        .unwrap()
        .flatten_from(1)
        .unwrap()
        .sum(1)
        .unwrap();
    let total = (masks.flatten_from(1).unwrap().sum(1).unwrap()
        + y.flatten_from(1).unwrap().sum(1).unwrap())
    .unwrap();
    let dice = ((inter * 2.0).unwrap() / total).unwrap();
    dice.mean_all()
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap()
        .to_scalar::<f64>()
        .unwrap()
}

/// Second moments of a 0/1 mask (S×S, row-major): (area, principal-axis angle in degrees in
/// image coordinates, y down, in [0, 180); elongation = major/minor eigenvalue).
fn moments(mask: &[f32], s: usize) -> (f64, f64, f64) {
    let (mut n, mut sx, mut sy) = (0.0, 0.0, 0.0);
    for (k, &v) in mask.iter().enumerate() {
        let v = v as f64;
        n += v;
        sx += v * (k % s) as f64;
        sy += v * (k / s) as f64;
    }
    let (cx, cy) = (sx / n, sy / n);
    let (mut m20, mut m02, mut m11) = (0.0, 0.0, 0.0);
    for (k, &v) in mask.iter().enumerate() {
        let (dx, dy) = ((k % s) as f64 - cx, (k / s) as f64 - cy);
        m20 += v as f64 * dx * dx;
        m02 += v as f64 * dy * dy;
        m11 += v as f64 * dx * dy;
    }
    let angle = (0.5 * (2.0 * m11).atan2(m20 - m02))
        .to_degrees()
        .rem_euclid(180.0);
    let tr = m20 + m02;
    let disc = ((m20 - m02).powi(2) + 4.0 * m11 * m11).sqrt();
    (n, angle, (tr + disc) / (tr - disc).max(1e-9))
}

fn rows(t: &Tensor) -> Vec<Vec<f32>> {
    t.flatten_from(1).unwrap().to_vec2::<f32>().unwrap()
}

fn mse(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| ((x - y) as f64).powi(2))
        .sum::<f64>()
        / a.len() as f64
}

fn dice01(a: &[f32], b: &[f32]) -> f64 {
    let inter: f64 = a.iter().zip(b).map(|(x, y)| (x * y) as f64).sum();
    let total: f64 = a.iter().chain(b).map(|&x| x as f64).sum();
    2.0 * inter / total.max(1e-9)
}

/// One affine model on ellipses, then everything it should do: segment held-out images
/// (Dice ≥ 0.90), swap style and position with the ground-truth render as judge (Fig. 5), and
/// rotate by 45° / scale by 0.7 with the re-segmented object moving by that much (Fig. 6).
#[test]
#[cfg_attr(debug_assertions, ignore = "a release test: cargo test --release")]
fn affine_mhvae_segments_swaps_and_edits_ellipses() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let (n, seed) = (600, 1);
    dataset(&data, ShapeKind::Ellipses, n, seed);
    let t0 = std::time::Instant::now();
    let trainer = train_model(&data, &tmp.path().join("run"), WarpKind::Affine, 1000, 0);
    let model = trainer.export_model().unwrap();
    let test = split(&data, Split::Test);
    let dice = mean_dice(&model, &test);
    println!(
        "affine on ellipses: held-out Dice {dice:.3} after 1000 steps ({:.0} s)",
        t0.elapsed().as_secs_f64()
    );
    assert!(dice >= 0.90, "Dice {dice:.3}");

    // Style swap against the ground truth.
    let truth: Vec<_> = draw_samples(ShapeKind::Ellipses, n, seed)
        .into_iter()
        .filter(|t| t.split == "test")
        .collect();
    let idx: Vec<usize> = (0..test.len()).collect();
    let (x, _) = batch_inputs(&test.load(&idx).unwrap(), &Device::Cpu).unwrap();
    let post = model.encode(&x).unwrap();
    let theta = post.theta.as_ref().unwrap().0.clone();
    let m = truth.len();
    let perm: Vec<usize> = (0..m).map(|i| (i + 1) % m).collect();
    let perm_t = Tensor::new(
        perm.iter().map(|&i| i as u32).collect::<Vec<_>>(),
        &Device::Cpu,
    )
    .unwrap();
    let theta_b = theta.index_select(&perm_t, 0).unwrap();
    let swapped = model.decode(&post.mu_z, Some(&theta_b)).unwrap();
    let resegmented = model
        .segment(&model.encode(&swapped).unwrap().theta.unwrap().0)
        .unwrap();
    let (sw, rs) = (rows(&swapped), rows(&resegmented));
    let (mut right, mut wrong_style, mut wrong_shape, mut mask_dice) = (0.0, 0.0, 0.0, 0.0);
    for a in 0..m {
        let b = perm[a];
        let render = |style, shape| segdiff_mhvae::synth::render(style, shape, SIZE);
        let (ab, mask_b) = render(&truth[a].style, &truth[b].shape);
        right += mse(&sw[a], &ab);
        wrong_style += mse(&sw[a], &render(&truth[b].style, &truth[b].shape).0);
        wrong_shape += mse(&sw[a], &render(&truth[a].style, &truth[a].shape).0);
        let mask_b: Vec<f32> = mask_b.iter().map(|&v| v as f32).collect();
        mask_dice += dice01(&rs[a], &mask_b);
    }
    let (right, wrong_style, wrong_shape, mask_dice) = (
        right / m as f64,
        wrong_style / m as f64,
        wrong_shape / m as f64,
        mask_dice / m as f64,
    );
    println!("swap: MSE to render(style a, shape b) {right:.4}, to b's image {wrong_style:.4}, to a's image {wrong_shape:.4}; re-segmented Dice with b's mask {mask_dice:.3}");
    assert!(right < wrong_style && right < wrong_shape);
    assert!(mask_dice >= 0.85, "{mask_dice}");

    // Position edits: the re-segmented object turns by 45° and shrinks to 0.49 of its area.
    let before = rows(&model.segment(&theta).unwrap());
    for (edit, what) in [
        (
            PositionEdit {
                rotate_degrees: 45.0,
                ..PositionEdit::default()
            },
            "rotate 45",
        ),
        (
            PositionEdit {
                scale: 0.7,
                ..PositionEdit::default()
            },
            "scale 0.7",
        ),
    ] {
        let grids = model.edited_grids(&theta, &edit).unwrap();
        let edited = model.decode_with(&post.mu_z, Some(&grids)).unwrap();
        let after = rows(
            &model
                .segment(&model.encode(&edited).unwrap().theta.unwrap().0)
                .unwrap(),
        );
        let (mut turns, mut ratios) = (Vec::new(), Vec::new());
        for (b, a) in before.iter().zip(&after) {
            let ((n0, ang0, el0), (n1, ang1, _)) = (moments(b, SIZE), moments(a, SIZE));
            ratios.push(n1 / n0);
            if el0 > 2.0 {
                turns.push((ang1 - ang0).rem_euclid(180.0));
            }
        }
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
        let mut sorted = ratios.clone();
        sorted.sort_by(f64::total_cmp);
        println!("{what}: mean turn {:.1}° over {} elongated objects, area ratio mean {:.3}, median {:.3}", mean(&turns), turns.len(), mean(&ratios), sorted[sorted.len() / 2]);
        if edit.rotate_degrees != 0.0 {
            assert!(turns.len() >= 10, "{} elongated objects", turns.len());
            assert!((mean(&turns) - 45.0).abs() <= 5.0, "{turns:?}");
            assert!((mean(&ratios) - 1.0).abs() <= 0.1, "{ratios:?}");
        } else {
            assert!((mean(&ratios) - 0.49).abs() <= 0.07, "{ratios:?}");
        }
    }
}

/// TPS on star-convex blobs (shapes an ellipse cannot take): Dice ≥ 0.85 and clearly above the
/// affine model on the same data and seed.
#[test]
#[cfg_attr(debug_assertions, ignore = "a release test: cargo test --release")]
fn tps_mhvae_segments_blobs_better_than_affine() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    dataset(&data, ShapeKind::Blobs, 600, 2);
    let test = split(&data, Split::Test);
    let mut dice = Vec::new();
    for warp in [WarpKind::Tps, WarpKind::Affine] {
        let t0 = std::time::Instant::now();
        let trainer = train_model(
            &data,
            &tmp.path().join(format!("run-{warp}")),
            warp,
            1000,
            0,
        );
        let d = mean_dice(&trainer.export_model().unwrap(), &test);
        println!(
            "{warp} on blobs: held-out Dice {d:.3} ({:.0} s)",
            t0.elapsed().as_secs_f64()
        );
        dice.push(d);
    }
    assert!(dice[0] >= 0.85, "TPS Dice {:.3}", dice[0]);
    assert!(
        dice[0] >= dice[1] + 0.03,
        "TPS {:.3} vs affine {:.3}",
        dice[0],
        dice[1]
    );
}

/// A run is a pure function of its seed, and resuming from a checkpoint continues bit for bit.
#[test]
fn resume_is_bit_exact() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    dataset(&data, ShapeKind::Blobs, 40, 5);
    let config = MhvaeConfig {
        image_size: SIZE,
        warp: WarpKind::Tps,
        ..MhvaeConfig::default()
    };
    let run = segdiff_diffusion::train::RunOptions {
        total_steps: 12,
        checkpoint_every: 6,
        batch_size: 8,
        seed: 9,
        ..MhvaeTrainOptions::default_run()
    };
    let train_split = split(&data, Split::Train);
    let straight_dir = tmp.path().join("straight");
    let mut straight = MhvaeTrainer::new(config.clone(), run.clone(), &Device::Cpu).unwrap();
    train(
        &mut straight,
        &train_split,
        &straight_dir,
        None,
        &mut |_| {},
    )
    .unwrap();

    let split_dir = tmp.path().join("split");
    let mut first = MhvaeTrainer::new(config, run, &Device::Cpu).unwrap();
    train(&mut first, &train_split, &split_dir, Some(6), &mut |_| {}).unwrap();
    let ckpt = segdiff_diffusion::train::list_checkpoints(&split_dir).unwrap();
    assert_eq!(ckpt.last().unwrap().0, 6);
    let mut resumed = MhvaeTrainer::resume(&ckpt.last().unwrap().1, &Device::Cpu).unwrap();
    assert_eq!(resumed.step(), 6);
    train(&mut resumed, &train_split, &split_dir, None, &mut |_| {}).unwrap();

    let (a, b) = (straight.export_weights(), resumed.export_weights());
    assert_eq!(a.len(), b.len());
    for (name, t) in &a {
        let (x, y) = (
            t.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            b[name].flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        );
        assert!(
            x.iter().zip(&y).all(|(p, q)| p.to_bits() == q.to_bits()),
            "{name} differs after resume"
        );
    }
    // The saved model loads back to the same outputs.
    let dir = tmp.path().join("model");
    resumed.save_model(&dir).unwrap();
    let loaded = Mhvae::load(&dir, &Device::Cpu).unwrap();
    let idx: Vec<usize> = (0..4).collect();
    let (x, _) = batch_inputs(
        &split(&data, Split::Test).load(&idx[..2]).unwrap(),
        &Device::Cpu,
    )
    .unwrap();
    let r1 = resumed.export_model().unwrap().reconstruct(&x).unwrap();
    let r2 = loaded.reconstruct(&x).unwrap();
    assert_eq!(rows(&r1), rows(&r2));
}

/// The refiner (paper §4) after a short training on ellipses, against a frozen VAE: refined
/// reconstructions keep the VAE's object (the re-segmented refinement against the VAE's own mask
/// of the original: Dice ≥ 0.85), stay closer to their own original than to the other images, and
/// bring back high-frequency energy the VAE blurred (closer to the real images'). The fast sampler
/// reaches Euler–Maruyama's quality in a tenth of the network calls: SDE-DPM-Solver++(2M) in 10
/// calls against E–M in 100, the same Dice within 0.02 and a high-frequency energy within 30 % of
/// E–M's.
#[test]
#[cfg_attr(debug_assertions, ignore = "a release test: cargo test --release")]
fn refiner_sharpens_reconstructions_and_the_fast_sampler_matches_euler_maruyama() {
    use rand::SeedableRng;
    use segdiff_mhvae::refiner::{
        refiner_unet_config, EmNoise, RefinerMeta, RefinerSampler, RefinerTrainer,
    };
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    dataset(&data, ShapeKind::Ellipses, 600, 3);
    let t0 = std::time::Instant::now();
    let vae_dir = tmp.path().join("vae-model");
    train_model(&data, &tmp.path().join("vae"), WarpKind::Affine, 1000, 0)
        .save_model(&vae_dir)
        .unwrap();
    let vae = Mhvae::load(&vae_dir, &Device::Cpu).unwrap();
    let t_vae = t0.elapsed().as_secs_f64();
    let run = segdiff_diffusion::train::RunOptions {
        total_steps: 500,
        lr: 1e-3,
        warmup_steps: 30,
        seed: 0,
        ..Default::default()
    };
    let unet = refiner_unet_config(SIZE, 1, &[8, 16, 16], 4).unwrap();
    let test = split(&data, Split::Test);
    let mut trainer = RefinerTrainer::new(
        Mhvae::load(&vae_dir, &Device::Cpu).unwrap(),
        RefinerMeta::new(1, SIZE),
        unet,
        run,
        &Device::Cpu,
    )
    .unwrap();
    let train_split = split(&data, Split::Train);
    train(
        &mut trainer,
        &train_split,
        &tmp.path().join("refiner"),
        None,
        &mut |_| {},
    )
    .unwrap();
    let refiner = trainer.export().unwrap();
    let t_refiner = t0.elapsed().as_secs_f64() - t_vae;

    let idx: Vec<usize> = (0..test.len()).collect();
    let (x, y) = batch_inputs(&test.load(&idx).unwrap(), &Device::Cpu).unwrap();
    let real = rows(&x);
    let truth = rows(&y);
    let vae_masks = rows(
        &vae.segment(&vae.encode(&x).unwrap().theta.unwrap().0)
            .unwrap(),
    );
    let x_hat = vae.reconstruct(&x).unwrap();
    let hf = |t: &Tensor| segdiff_mhvae::refiner::high_frequency_energy(t).unwrap();
    let (hf_real, hf_vae) = (hf(&x), hf(&x_hat));
    println!("VAE {t_vae:.0} s, refiner 500 steps {t_refiner:.0} s; high-frequency energy: real {hf_real:.4}, VAE {hf_vae:.4}");
    let mut results = Vec::new();
    for (sampler, steps) in [
        (RefinerSampler::EulerMaruyama, 100),
        (RefinerSampler::DpmSolverSde, 10),
    ] {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let refined = refiner
            .refine(&x_hat, sampler, steps, EmNoise::Rng(&mut rng))
            .unwrap();
        let out = rows(&refined);
        let reseg = rows(
            &vae.segment(&vae.encode(&refined).unwrap().theta.unwrap().0)
                .unwrap(),
        );
        let m = out.len();
        let dice = (0..m)
            .map(|i| dice01(&reseg[i], &vae_masks[i]))
            .sum::<f64>()
            / m as f64;
        let dice_truth = (0..m).map(|i| dice01(&reseg[i], &truth[i])).sum::<f64>() / m as f64;
        let (mut own, mut others, mut closer) = (0.0, 0.0, 0);
        for i in 0..m {
            let o = mse(&out[i], &real[i]);
            let rest = (0..m)
                .filter(|&j| j != i)
                .map(|j| mse(&out[i], &real[j]))
                .sum::<f64>()
                / (m - 1) as f64;
            own += o / m as f64;
            others += rest / m as f64;
            closer += usize::from(o < rest);
        }
        let hf = hf(&refined);
        println!("{sampler}, {steps} calls: re-segmented Dice {dice:.3} with the VAE's masks ({dice_truth:.3} with the true ones); MSE to own original {own:.4} vs others {others:.4}, closer to own {closer}/{m}; HF energy {hf:.4}");
        assert!(dice >= 0.85, "{sampler}: Dice {dice:.3}");
        assert!(
            own < others && closer * 10 >= m * 9,
            "{sampler}: {closer}/{m} closer to own"
        );
        assert!(
            (hf - hf_real).abs() < (hf_vae - hf_real).abs(),
            "{sampler}: HF {hf:.4} vs real {hf_real:.4}, VAE {hf_vae:.4}"
        );
        results.push((dice, hf));
    }
    let ((em_dice, em_hf), (fast_dice, fast_hf)) = (results[0], results[1]);
    assert!(
        fast_dice >= em_dice - 0.02,
        "Dice {fast_dice:.3} vs E–M {em_dice:.3}"
    );
    assert!(
        (fast_hf / em_hf - 1.0).abs() <= 0.3,
        "HF energy {fast_hf:.4} vs E–M {em_hf:.4}"
    );
}
