//! The MHVAE refiner section of BENCHMARKS.md: refiner sampling time per image on the CPU, the
//! paper's Euler–Maruyama against DPM-Solver++(2M) (deterministic and stochastic), on the bundled
//! MNI MHVAE and refiner and the held-out demo slices, with the quality each reaches.

use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result};
use candle_core::{DType, Device, Tensor};
use rand::SeedableRng;
use segdiff_data::{Dataset, DatasetOptions, Split};
use segdiff_diffusion::train::{DatasetBatches, TrainData};
use segdiff_mhvae::refiner::{high_frequency_energy, EmNoise, Refiner, RefinerSampler};
use segdiff_mhvae::Mhvae;

use super::marked_section::Markers;

/// Marks the section so `cargo xtask bench --refiner` can replace it in place.
pub const MARKERS: Markers = Markers {
    start: "<!-- refiner:start -->",
    end: "<!-- refiner:end -->",
};

const MODEL: &str = "assets/mni-demo/mhvae";
const REFINER: &str = "assets/mni-demo/mhvae-refiner";
const DATA: &str = "assets/mni-demo/data";
/// Images refined per call (one batch), and timed repetitions per sampler.
const BATCH: usize = 16;
const RUNS: usize = 3;
const CASES: [(RefinerSampler, usize); 4] = [
    (RefinerSampler::EulerMaruyama, 100),
    (RefinerSampler::EulerMaruyama, 10),
    (RefinerSampler::DpmSolver, 10),
    (RefinerSampler::DpmSolverSde, 10),
];

struct Row {
    sampler: RefinerSampler,
    calls: usize,
    /// Median seconds for the batch.
    median: f64,
    hf: f64,
    dice: f64,
}

fn dice_rows(a: &Tensor, b: &Tensor) -> Result<f64> {
    let inter = (a * b)?.flatten_from(1)?.sum(1)?;
    let total = (a.flatten_from(1)?.sum(1)? + b.flatten_from(1)?.sum(1)?)?;
    let d = ((inter * 2.0)? / total.clamp(1e-9, f64::MAX)?)?;
    Ok(d.mean_all()?.to_dtype(DType::F64)?.to_scalar::<f64>()?)
}

/// Measures the section and replaces it in `out`.
pub fn update(out: &Path) -> Result<()> {
    let root = crate::workspace_root();
    let dev = Device::Cpu;
    let load_before = super::load_average();
    let started = Instant::now();
    let vae = Mhvae::load(&root.join(MODEL), &dev).context("the bundled MHVAE")?;
    let refiner = Refiner::load(&root.join(REFINER), &dev).context("the bundled refiner")?;
    let s = vae.config().image_size;
    let opts = DatasetOptions {
        force_grey: true,
        resize: Some(s as u32),
        require_masks: true,
        ..DatasetOptions::default()
    };
    let test = Dataset::open(&root.join(DATA), Split::Test, &opts).context("the demo slices")?;
    let n = test.len().min(BATCH);
    let idx: Vec<usize> = (0..n).map(|k| k * test.len() / n).collect();
    let batch = DatasetBatches::new(test, true).load(&idx)?;
    let (x, y) = segdiff_mhvae::trainer::batch_inputs(&batch, &dev)?;
    let x_hat = vae.reconstruct(&x)?;
    let reseg = |img: &Tensor| -> Result<f64> {
        let theta = vae.encode(img)?.theta.context("no position head")?.0;
        dice_rows(&vae.segment(&theta)?, &y)
    };
    let (hf_real, hf_vae, dice_vae) = (
        high_frequency_energy(&x)?,
        high_frequency_energy(&x_hat)?,
        reseg(&x_hat)?,
    );
    let mut rows = Vec::new();
    for (sampler, calls) in CASES {
        let mut times = Vec::new();
        let mut last = None;
        for _ in 0..RUNS {
            let mut rng = rand::rngs::StdRng::seed_from_u64(0);
            let t0 = Instant::now();
            let r = refiner.refine(&x_hat, sampler, calls, EmNoise::Rng(&mut rng))?;
            times.push(t0.elapsed().as_secs_f64());
            last = Some(r);
        }
        times.sort_by(f64::total_cmp);
        let r = last.context("no run")?;
        let row = Row {
            sampler,
            calls,
            median: times[times.len() / 2],
            hf: high_frequency_energy(&r)?,
            dice: reseg(&r)?,
        };
        println!(
            "{} {} calls: {:.2} s per batch of {n}; HF {:.5}, Dice {:.3}",
            row.sampler, row.calls, row.median, row.hf, row.dice
        );
        rows.push(row);
    }
    let load_after = super::load_average();
    let mut md = format!(
        "{}\n## MHVAE refiner sampling\n\n\
         Written by `cargo xtask bench --refiner`; a full `cargo xtask bench` keeps it. CPU only, release build, f32, on a shared machine (load average at start {load_before}, at end {load_after}; this section took {:.0} s). \
         The bundled MNI MHVAE (`{MODEL}`) and its refiner (`{REFINER}`, a 64² UNet 16, 32, 64) refine the VAE reconstructions of {n} held-out demo slices in one batch; median of {RUNS} runs, seed 0. \
         Quality: high-frequency energy (mean squared Laplacian, images in [0, 1]; real slices {hf_real:.5}, VAE reconstructions {hf_vae:.5}) and the Dice of the MHVAE's re-segmentation of the refined images with the true brain masks (VAE reconstructions {dice_vae:.3}).\n\n\
         Machine: {}\n\n\
         | sampler | network calls | s per batch of {n} | s per image | HF energy | re-segmented Dice |\n|---|---:|---:|---:|---:|---:|\n",
        MARKERS.start,
        started.elapsed().as_secs_f64(),
        super::report::machine(),
    );
    for r in &rows {
        md += &format!(
            "| {} | {} | {:.2} | {:.3} | {:.5} | {:.3} |\n",
            r.sampler,
            r.calls,
            r.median,
            r.median / n as f64,
            r.hf,
            r.dice
        );
    }
    md += &format!("\n{}\n", MARKERS.end);
    let old = std::fs::read_to_string(out).unwrap_or_default();
    segdiff_io::write_bytes_atomic(out, MARKERS.replace(&old, &md).as_bytes())
        .with_context(|| format!("writing {}", out.display()))?;
    println!("wrote {}", out.display());
    Ok(())
}
