//! CPU benchmarks: one forward of the denoiser at the paper's and the small configuration,
//! median of N runs after a warm-up, written to BENCHMARKS.md with the machine description.

use std::collections::HashMap;
use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result};
use candle_core::{DType, Device, Tensor};
use segdiff_unet::{expected_parameters, model_from_tensors, UNet2DConfig, UNet2DModel};

/// One benchmark row.
struct Row {
    name: String,
    flops: u64,
    times: Vec<f64>,
    peak_rss_mib: Option<f64>,
}

impl Row {
    fn median(&self) -> f64 {
        let mut t = self.times.clone();
        t.sort_by(f64::total_cmp);
        t[t.len() / 2]
    }
}

/// Deterministic weights (a small LCG, scaled like PyTorch's default init) so runs compare.
fn synthetic_model(cfg: &UNet2DConfig) -> Result<UNet2DModel> {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut tensors = HashMap::new();
    for (name, shape) in expected_parameters(cfg)? {
        let n: usize = shape.iter().product();
        let fan_in = if shape.len() > 1 {
            shape[1..].iter().product::<usize>()
        } else {
            1
        };
        let bound = 1.0 / (fan_in as f32).sqrt();
        let values: Vec<f32> = (0..n)
            .map(|_| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let u = (state >> 40) as f32 / (1u64 << 24) as f32;
                if name.contains("norm") && name.ends_with("weight") {
                    1.0
                } else {
                    (2.0 * u - 1.0) * bound
                }
            })
            .collect();
        tensors.insert(name, Tensor::from_vec(values, shape, &Device::Cpu)?);
    }
    let (model, _) = model_from_tensors(
        cfg,
        tensors,
        DType::F32,
        &Device::Cpu,
        Path::new("synthetic"),
    )?;
    Ok(model)
}

fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

fn time_forward(
    name: &str,
    cfg: &UNet2DConfig,
    size: usize,
    batch: usize,
    runs: usize,
) -> Result<Row> {
    let model = synthetic_model(cfg)?;
    let n = batch * cfg.in_channels * size * size;
    let x: Vec<f32> = (0..n)
        .map(|i| ((i * 7919 % 2003) as f32 / 1001.5) - 1.0)
        .collect();
    let x = Tensor::from_vec(x, (batch, cfg.in_channels, size, size), &Device::Cpu)?;
    let t = Tensor::new(500i64, &Device::Cpu)?;
    eprint!("bench {name}: warm-up");
    model.forward(&x, &t)?;
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let start = Instant::now();
        let y = model.forward(&x, &t)?;
        // Make sure the work is done (candle's CPU ops are eager, this is just a touch).
        let _ = y.dims();
        times.push(start.elapsed().as_secs_f64());
        eprint!(" {:.3}s", times.last().copied().unwrap_or_default());
    }
    eprintln!();
    Ok(Row {
        name: name.to_string(),
        flops: model.flops(size, size) * batch as u64,
        times,
        peak_rss_mib: peak_rss_mib(),
    })
}

fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|| "unknown CPU".into());
    let avx512 = cpuinfo.contains("avx512f");
    let threads = candle_core::utils::get_num_threads();
    format!(
        "{model}; {} logical CPUs, {threads} rayon threads; AVX-512 {}",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        if avx512 { "yes" } else { "no" }
    )
}

pub fn run(runs: usize, quick: bool, out: &Path) -> Result<()> {
    let runs = runs.max(1);
    let mut rows = Vec::new();
    let small = UNet2DConfig::with_channels(32, 2, 1, &[32, 32, 64, 64, 128, 128], 32);
    rows.push(time_forward(
        "small UNet forward, 32², batch 1",
        &small,
        32,
        1,
        runs,
    )?);
    if !quick {
        let paper = UNet2DConfig::paper(256, 2, 1);
        rows.push(time_forward(
            "paper UNet forward, 256², batch 1",
            &paper,
            256,
            1,
            runs,
        )?);
    }
    let mut md = String::new();
    md.push_str("# Benchmarks\n\n");
    md.push_str("Written by `cargo xtask bench` (release build, f32, CPU). Medians of the timed runs after one\n");
    md.push_str(
        "warm-up; the machine is shared and noisy, so compare ratios taken in one run.\n\n",
    );
    md.push_str(&format!("Machine: {}\n\n", machine()));
    md.push_str(
        "| case | median | min – max | runs | GFLOP/s | peak RSS |\n|---|---|---|---|---|---|\n",
    );
    for r in &rows {
        let min = r.times.iter().copied().fold(f64::INFINITY, f64::min);
        let max = r.times.iter().copied().fold(0.0, f64::max);
        let med = r.median();
        md.push_str(&format!(
            "| {} | {} | {} – {} | {} | {:.1} | {} |\n",
            r.name,
            fmt_time(med),
            fmt_time(min),
            fmt_time(max),
            r.times.len(),
            r.flops as f64 / med / 1e9,
            r.peak_rss_mib.map_or("–".into(), |m| format!("{m:.0} MiB"))
        ));
    }
    md.push_str(
        "\nReference (PyTorch 2.15 + diffusers, oneDNN, 2 threads, quiet machine of the same kind, from\n\
         `shared/fixtures/README.md`): paper forward 2.755 s, small forward 16.4 ms.\n",
    );
    std::fs::write(out, md).with_context(|| format!("writing {}", out.display()))?;
    println!("wrote {}", out.display());
    Ok(())
}

fn fmt_time(s: f64) -> String {
    if s < 1.0 {
        format!("{:.1} ms", s * 1e3)
    } else {
        format!("{s:.2} s")
    }
}
