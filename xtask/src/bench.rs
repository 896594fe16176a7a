//! CPU benchmarks, written to BENCHMARKS.md with the machine description and its load.
//!
//! Every case runs twice per round, once on segdiff's CPU kernels (`segdiff_unet::cpu_kernels`,
//! "fast") and once on candle's own ops ("candle", via `cpu_kernels::set_enabled(false)`),
//! alternating in the same process so that both see the same machine load; the tables give
//! medians of the timed rounds after one warm-up of each, and the process CPU time per run.
//! [`torch`] compares the whole networks with PyTorch + diffusers / MONAI (`--torch <python>`).

use std::collections::HashMap;
use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result};
use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use segdiff_unet::{
    cpu_kernels, expected_parameters, model_from_tensors, UNet2DConfig, UNet2DModel,
};

mod marked_section;
pub mod refiner;
mod report;
pub mod sweep;
pub mod torch;
mod torch_worker;
pub mod volumes;

/// One benchmark row.
struct Row {
    name: String,
    path: &'static str,
    flops: u64,
    times: Vec<f64>,
    /// Process CPU seconds (all threads) of each timed run.
    cpu: Vec<f64>,
    peak_rss_mib: Option<f64>,
    /// The candle median of the same case, for the speed-up column.
    baseline: Option<f64>,
}

impl Row {
    fn median(&self) -> f64 {
        median(&self.times)
    }
}

fn median(v: &[f64]) -> f64 {
    let mut t = v.to_vec();
    t.sort_by(f64::total_cmp);
    t.get(t.len() / 2).copied().unwrap_or(f64::NAN)
}

/// CPU time of the whole process (user + system, all threads), from `/proc/self/stat`.
fn process_cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the parenthesised command name: utime and stime are the 12th and 13th.
    let rest = stat.rsplit(')').next().unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

/// Deterministic values in [-1, 1) (a small LCG) so runs compare.
fn lcg_values(n: usize, seed: u64) -> Vec<f32> {
    let mut state = 0x2545_f491_4f6c_dd1du64 ^ seed.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    (0..n)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
        })
        .collect()
}

fn lcg_tensor(shape: &[usize], seed: u64, scale: f32) -> Result<Tensor> {
    let n = shape.iter().product();
    let v: Vec<f32> = lcg_values(n, seed).into_iter().map(|x| x * scale).collect();
    Ok(Tensor::from_vec(v, shape, &Device::Cpu)?)
}

/// Deterministic parameters, scaled like PyTorch's default init (norm weights 1).
fn synthetic_parameters(cfg: &UNet2DConfig) -> Result<HashMap<String, Tensor>> {
    let mut tensors = HashMap::new();
    for (i, (name, shape)) in expected_parameters(cfg)?.into_iter().enumerate() {
        let fan_in = if shape.len() > 1 {
            shape[1..].iter().product::<usize>()
        } else {
            1
        };
        let t = if name.contains("norm") && name.ends_with("weight") {
            Tensor::ones(shape.as_slice(), DType::F32, &Device::Cpu)?
        } else {
            lcg_tensor(&shape, i as u64, 1.0 / (fan_in as f32).sqrt())?
        };
        tensors.insert(name, t);
    }
    Ok(tensors)
}

fn synthetic_model(cfg: &UNet2DConfig) -> Result<UNet2DModel> {
    let (model, _) = model_from_tensors(
        cfg,
        synthetic_parameters(cfg)?,
        DType::F32,
        &Device::Cpu,
        Path::new("synthetic"),
    )?;
    Ok(model)
}

/// A model whose parameters are trainable `Var`s (set to the synthetic values).
fn trainable_model(cfg: &UNet2DConfig) -> Result<(UNet2DModel, VarMap)> {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let model = UNet2DModel::new(cfg, vb)?;
    let values = synthetic_parameters(cfg)?;
    {
        let data = varmap
            .data()
            .lock()
            .map_err(|_| anyhow::anyhow!("VarMap lock poisoned"))?;
        for (name, var) in data.iter() {
            let v = values
                .get(name)
                .with_context(|| format!("no synthetic value for {name}"))?;
            var.set(v)?;
        }
    }
    Ok((model, varmap))
}

/// Resets the process's peak-RSS counter (Linux `clear_refs` 5), so each case reports its own.
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

/// Times `f` on both convolution paths, alternating fast and candle in every round;
/// `candle_runs` (≤ runs) limits the slow path where one candle run takes minutes.
fn time_ab(
    name: &str,
    flops: u64,
    runs: usize,
    candle_runs: usize,
    mut f: impl FnMut() -> Result<()>,
) -> Result<Vec<Row>> {
    let mut fast = Vec::with_capacity(runs);
    let mut slow = Vec::with_capacity(candle_runs);
    let (mut fast_cpu, mut slow_cpu) = (Vec::new(), Vec::new());
    let mut peak = [None, None];
    eprint!("bench {name}: warm-up");
    for (i, enabled) in [true, false].into_iter().enumerate() {
        if enabled || candle_runs > 0 {
            cpu_kernels::set_enabled(enabled);
            reset_peak_rss();
            f()?;
            peak[i] = peak_rss_mib();
        }
    }
    for round in 0..runs {
        for enabled in [true, false] {
            if !enabled && round >= candle_runs {
                continue;
            }
            cpu_kernels::set_enabled(enabled);
            let cpu0 = process_cpu_seconds();
            let start = Instant::now();
            f()?;
            let dt = start.elapsed().as_secs_f64();
            let cpu = process_cpu_seconds() - cpu0;
            if enabled {
                fast.push(dt);
                fast_cpu.push(cpu);
            } else {
                slow.push(dt);
                slow_cpu.push(cpu);
            }
            eprint!(" {}{dt:.3}s", if enabled { "F" } else { "C" });
        }
    }
    cpu_kernels::set_enabled(true);
    eprintln!();
    let mut rows = vec![Row {
        name: name.to_string(),
        path: "fast",
        flops,
        times: fast,
        cpu: fast_cpu,
        peak_rss_mib: peak[0],
        baseline: None,
    }];
    if !slow.is_empty() {
        let candle = Row {
            name: name.to_string(),
            path: "candle",
            flops,
            times: slow,
            cpu: slow_cpu,
            peak_rss_mib: peak[1],
            baseline: None,
        };
        rows[0].baseline = Some(candle.median());
        rows.push(candle);
    }
    Ok(rows)
}

/// One convolution layer of the benchmark: `(batch, c_in, size, c_out)`, `(k, stride, pad)`,
/// and whether the backward runs too.
struct ConvCase {
    name: &'static str,
    shape: (usize, usize, usize, usize),
    kernel: (usize, usize, usize),
    backward: bool,
}

impl ConvCase {
    const fn new(
        name: &'static str,
        shape: (usize, usize, usize, usize),
        kernel: (usize, usize, usize),
        backward: bool,
    ) -> Self {
        Self {
            name,
            shape,
            kernel,
            backward,
        }
    }
}

/// One convolution layer: forward only, or forward + backward of `Σ r ⊙ conv(x)` for x, w, b.
fn conv_case(case: &ConvCase, runs: usize, candle_runs: usize) -> Result<Vec<Row>> {
    let (batch, c_in, size, c_out) = case.shape;
    let (k, stride, pad) = case.kernel;
    let (name, backward) = (case.name, case.backward);
    let x = Var::from_tensor(&lcg_tensor(&[batch, c_in, size, size], 1, 1.0)?)?;
    let bound = 1.0 / ((c_in * k * k) as f32).sqrt();
    let w = Var::from_tensor(&lcg_tensor(&[c_out, c_in, k, k], 2, bound)?)?;
    let b = Var::from_tensor(&lcg_tensor(&[c_out], 3, bound)?)?;
    let out = (size + 2 * pad - k) / stride + 1;
    let r = lcg_tensor(&[batch, c_out, out, out], 4, 1.0)?;
    let fwd_flops = 2 * (batch * c_out * c_in * k * k * out * out) as u64;
    let flops = if backward { 3 * fwd_flops } else { fwd_flops };
    time_ab(name, flops, runs, candle_runs, || {
        if backward {
            let y = cpu_kernels::conv2d(
                x.as_tensor(),
                w.as_tensor(),
                Some(b.as_tensor()),
                stride,
                pad,
            )?;
            let grads = (y * &r)?.sum_all()?.backward()?;
            anyhow::ensure!(grads.get(&w).is_some(), "no weight gradient");
        } else {
            let t = x.as_tensor().detach();
            cpu_kernels::conv2d(&t, w.as_tensor(), Some(b.as_tensor()), stride, pad)?;
        }
        Ok(())
    })
}

/// GroupNorm(32 groups) + SiLU as the ResNet blocks use it, forward or forward + backward.
fn group_norm_case(
    name: &str,
    (batch, channels, size): (usize, usize, usize),
    backward: bool,
    runs: usize,
) -> Result<Vec<Row>> {
    let x = Var::from_tensor(&lcg_tensor(&[batch, channels, size, size], 8, 2.0)?)?;
    let w = Var::from_tensor(&(lcg_tensor(&[channels], 9, 0.2)? + 1.0)?)?;
    let b = Var::from_tensor(&lcg_tensor(&[channels], 10, 0.2)?)?;
    let r = lcg_tensor(&[batch, channels, size, size], 11, 1.0)?;
    time_ab(name, 0, runs, runs, || {
        let y =
            cpu_kernels::group_norm(x.as_tensor(), w.as_tensor(), b.as_tensor(), 32, 1e-5, true)?;
        if backward {
            let grads = (y * &r)?.sum_all()?.backward()?;
            anyhow::ensure!(grads.get(&x).is_some(), "no input gradient");
        }
        Ok(())
    })
}

fn forward_case(
    name: &str,
    cfg: &UNet2DConfig,
    size: usize,
    batch: usize,
    runs: usize,
    candle_runs: usize,
) -> Result<Vec<Row>> {
    let model = synthetic_model(cfg)?;
    let x = lcg_tensor(&[batch, cfg.in_channels, size, size], 5, 1.0)?;
    let t = Tensor::new(500i64, &Device::Cpu)?;
    time_ab(
        name,
        model.flops(size, size) * batch as u64,
        runs,
        candle_runs,
        || {
            model.forward(&x, &t)?;
            Ok(())
        },
    )
}

/// The deterministic input, timesteps and target of a benchmarked training step.
fn train_inputs(cfg: &UNet2DConfig, size: usize, batch: usize) -> Result<(Tensor, Tensor, Tensor)> {
    let x = lcg_tensor(&[batch, cfg.in_channels, size, size], 6, 1.0)?;
    let target = lcg_tensor(&[batch, cfg.out_channels, size, size], 7, 1.0)?;
    let t = Tensor::from_vec(
        (0..batch as i64)
            .map(|i| (i * 61) % 1000)
            .collect::<Vec<_>>(),
        batch,
        &Device::Cpu,
    )?;
    Ok((x, t, target))
}

/// Forward + backward of the ε-prediction MSE loss through all parameters (no optimiser step).
/// FLOPs are counted as 3× the forward's.
fn train_case(
    name: &str,
    cfg: &UNet2DConfig,
    size: usize,
    batch: usize,
    runs: usize,
    candle_runs: usize,
) -> Result<Vec<Row>> {
    let (model, varmap) = trainable_model(cfg)?;
    let (x, t, target) = train_inputs(cfg, size, batch)?;
    let n_vars = varmap.all_vars().len();
    time_ab(
        name,
        3 * model.flops(size, size) * batch as u64,
        runs,
        candle_runs,
        || {
            let loss = (model.forward(&x, &t)? - &target)?.sqr()?.mean_all()?;
            let grads = loss.backward()?;
            let with_grad = varmap
                .all_vars()
                .iter()
                .filter(|v| grads.get(v).is_some())
                .count();
            anyhow::ensure!(
                with_grad == n_vars,
                "{with_grad} of {n_vars} parameters got a gradient"
            );
            Ok(())
        },
    )
}

/// The convolution layers timed one by one: the paper UNet's, the small UNet's and the MONAI
/// segmenter's typical shapes, forward and forward + backward.
const CONV_CASES: [ConvCase; 16] = [
    ConvCase::new(
        "fwd 3×3 128→128 @256², b1",
        (1, 128, 256, 128),
        (3, 1, 1),
        false,
    ),
    ConvCase::new(
        "fwd 3×3 256→128 @256², b1 (up-block conv1)",
        (1, 256, 256, 128),
        (3, 1, 1),
        false,
    ),
    ConvCase::new(
        "fwd 3×3 256→256 @64², b1",
        (1, 256, 64, 256),
        (3, 1, 1),
        false,
    ),
    ConvCase::new(
        "fwd 3×3 256→256 @32², b1",
        (1, 256, 32, 256),
        (3, 1, 1),
        false,
    ),
    ConvCase::new(
        "fwd 3×3 512→512 @16², b1",
        (1, 512, 16, 512),
        (3, 1, 1),
        false,
    ),
    ConvCase::new(
        "fwd 3×3 512→512 @16², b4",
        (4, 512, 16, 512),
        (3, 1, 1),
        false,
    ),
    ConvCase::new(
        "fwd 3×3 2→128 @256², b1 (conv_in)",
        (1, 2, 256, 128),
        (3, 1, 1),
        false,
    ),
    ConvCase::new(
        "fwd 3×3/2 128→128 @256²→128², b1",
        (1, 128, 256, 128),
        (3, 2, 1),
        false,
    ),
    ConvCase::new(
        "fwd 1×1 256→128 @256², b1 (shortcut)",
        (1, 256, 256, 128),
        (1, 1, 0),
        false,
    ),
    ConvCase::new(
        "fwd+bwd 3×3 128→128 @256², b1",
        (1, 128, 256, 128),
        (3, 1, 1),
        true,
    ),
    ConvCase::new(
        "fwd+bwd 3×3/2 128→128 @256²→128², b1",
        (1, 128, 256, 128),
        (3, 2, 1),
        true,
    ),
    ConvCase::new(
        "fwd+bwd 3×3 32→32 @64², b16 (small UNet)",
        (16, 32, 64, 32),
        (3, 1, 1),
        true,
    ),
    ConvCase::new(
        "fwd+bwd 3×3 128→128 @8², b16 (small UNet)",
        (16, 128, 8, 128),
        (3, 1, 1),
        true,
    ),
    ConvCase::new(
        "MONAI fwd 3×3/2 1→16 @256², b8",
        (8, 1, 256, 16),
        (3, 2, 1),
        false,
    ),
    ConvCase::new(
        "MONAI fwd 3×3 32→32 @64², b8",
        (8, 32, 64, 32),
        (3, 1, 1),
        false,
    ),
    ConvCase::new(
        "MONAI fwd+bwd 3×3/2 16→32 @128², b8",
        (8, 16, 128, 32),
        (3, 2, 1),
        true,
    ),
];

/// The whole report; with `torch` (a Python and its run counts) the PyTorch section is measured
/// first (so a Python without the packages fails before the long part), otherwise an existing
/// one is kept.
pub fn run(
    runs: usize,
    quick: bool,
    torch: Option<(&Path, torch::Runs)>,
    out: &Path,
) -> Result<()> {
    let torch_section = match torch {
        Some((python, torch_runs)) => Some(torch::section(python, torch_runs, None)?),
        None => torch::existing_section(out),
    };
    let runs = runs.max(1);
    let load_before = load_average();
    let started = Instant::now();
    let mut conv_rows = Vec::new();
    for c in &CONV_CASES {
        conv_rows.extend(conv_case(c, runs, runs)?);
    }
    let norm_rows = group_norm_rows(runs)?;
    let model_rows = model_rows(runs, quick)?;
    let tables = report::CpuTables {
        conv: conv_rows,
        norm: norm_rows,
        model: model_rows,
    };
    let load_after = load_average();
    let took = started.elapsed().as_secs_f64();
    let md = report::render(
        &tables,
        (&load_before, &load_after),
        took,
        &crate::data_bench::section()?,
        torch_section.as_deref(),
    );
    // The sampler sweep, the whole volumes and the refiner are measured on their own (`--sweep`,
    // `--volumes`, `--refiner`); a full run keeps them.
    let md = [sweep::MARKERS, volumes::MARKERS, refiner::MARKERS]
        .iter()
        .fold(md, |md, markers| match markers.existing(out) {
            Some(section) => markers.replace(&md, &section),
            None => md,
        });
    segdiff_io::write_bytes_atomic(out, md.as_bytes())
        .with_context(|| format!("writing {}", out.display()))?;
    println!("wrote {}", out.display());
    Ok(())
}

/// GroupNorm + SiLU at the shapes of the paper and small UNets.
fn group_norm_rows(runs: usize) -> Result<Vec<Row>> {
    let mut norm_rows = Vec::new();
    for (name, shape, backward) in [
        ("GroupNorm+SiLU fwd 128 ch @256², b1", (1, 128, 256), false),
        ("GroupNorm+SiLU fwd 256 ch @256², b1", (1, 256, 256), false),
        (
            "GroupNorm+SiLU fwd+bwd 128 ch @256², b1",
            (1, 128, 256),
            true,
        ),
        (
            "GroupNorm+SiLU fwd+bwd 32 ch @64², b16 (small UNet)",
            (16, 32, 64),
            true,
        ),
    ] {
        norm_rows.extend(group_norm_case(name, shape, backward, runs)?);
    }
    Ok(norm_rows)
}

/// The whole networks: the small UNet's forward and training step, and with `quick` unset the
/// paper UNet's forwards.
fn model_rows(runs: usize, quick: bool) -> Result<Vec<Row>> {
    let mut model_rows = Vec::new();
    let small = UNet2DConfig::with_channels(32, 2, 1, &[32, 32, 64, 64, 128, 128], 32);
    model_rows.extend(forward_case(
        "small UNet forward, 32², batch 1",
        &small,
        32,
        1,
        runs,
        runs,
    )?);
    let small64 = UNet2DConfig::with_channels(64, 2, 1, &[32, 32, 64, 64, 128, 128], 32);
    model_rows.extend(train_case(
        "small UNet train step (fwd+bwd), 64², batch 16",
        &small64,
        64,
        16,
        runs,
        runs,
    )?);
    if !quick {
        let paper = UNet2DConfig::paper(256, 2, 1);
        model_rows.extend(forward_case(
            "paper UNet forward, 256², batch 1",
            &paper,
            256,
            1,
            runs,
            runs.min(3),
        )?);
        // candle's path would take ~100 s per run here; only the fast path is timed.
        model_rows.extend(forward_case(
            "paper UNet forward, 256², batch 4",
            &paper,
            256,
            4,
            runs,
            0,
        )?);
    }
    Ok(model_rows)
}
