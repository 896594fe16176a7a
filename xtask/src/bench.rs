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

pub mod torch;
mod torch_worker;

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
    let conv_cases = [
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
    for c in &conv_cases {
        conv_rows.extend(conv_case(c, runs, runs)?);
    }
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
    let load_after = load_average();

    let mut md = String::new();
    md.push_str("# Benchmarks\n\n");
    md.push_str(
        "Written by `cargo xtask bench` (release build, f32, CPU). \"fast\" = segdiff's CPU \
         kernels (`segdiff_unet::cpu_kernels::conv2d`: Winograd F(2×2, 3×3) for 3×3 stride-1 \
         layers with ≥ 256 output tiles, banded im2col + `gemm` (AVX-512) otherwise, GEMM-based \
         backward); \"candle\" = candle 0.11's own `conv2d` and its autograd (its matmuls also \
         run gemm's AVX-512 kernels, enabled workspace-wide), both in the same process, \
         alternating run by run so that both see the same load. Medians of the timed runs \
         after one warm-up each; \"CPU s/run\" is the process CPU time (all threads, 10 ms \
         ticks) per run, which the load from other processes disturbs less than wall time, and \
         \"cores\" = CPU time / wall time, how many of the 2 cores the run actually got \
         (meaningless for runs of a few ticks). \
         GFLOP/s counts 2 per multiply-add of the convolutions, linear layers and attention \
         products (fwd+bwd rows: 3× the forward; Winograd rows count the direct-convolution \
         FLOPs). Speed-up = candle median / fast median.\n\n",
    );
    md.push_str(&format!("Machine: {}\n\n", machine()));
    md.push_str(&format!(
        "Load average (1/5/15 min) at start: {load_before}; at end: {load_after}; the bench \
         took {:.0} s. The machine is shared: with a load above ~1 the other processes take \
         up to one of the two cores, and both paths slow down alike.\n\n",
        started.elapsed().as_secs_f64()
    ));
    md.push_str("## Single convolution layers\n\n");
    write_table(&mut md, &conv_rows);
    md.push_str(
        "\n## GroupNorm + SiLU\n\n`segdiff_unet::cpu_kernels::group_norm` (fused, one custom op \
         with a fused backward) against candle-nn's `GroupNorm` followed by `silu`; the model uses \
         it for every GroupNorm (see the log below).\n\n",
    );
    write_table(&mut md, &norm_rows);
    md.push_str("\n## Whole networks\n\n");
    write_table(&mut md, &model_rows);
    md.push_str(
        "\nReference (PyTorch 2.15 + diffusers, oneDNN, 2 threads, quiet machine of the same kind, \
         from `shared/fixtures/README.md`): paper forward 2.755 s, small forward 16.4 ms.\n",
    );
    md.push_str(OPTIMISATION_LOG);
    md.push_str(&crate::data_bench::section()?);
    if let Some(section) = torch_section {
        md.push_str(&section);
    }
    let tmp = out.with_extension("md.tmp");
    std::fs::write(&tmp, md).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, out).with_context(|| format!("renaming to {}", out.display()))?;
    println!("wrote {}", out.display());
    Ok(())
}

fn write_table(md: &mut String, rows: &[Row]) {
    md.push_str(
        "| case | path | median | min – max | runs | GFLOP/s | speed-up | CPU s/run | cores | peak RSS |\n\
         |---|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in rows {
        let min = r.times.iter().copied().fold(f64::INFINITY, f64::min);
        let max = r.times.iter().copied().fold(0.0, f64::max);
        let med = r.median();
        md.push_str(&format!(
            "| {} | {} | {} | {} – {} | {} | {} | {} | {:.2} | {:.1} | {} |\n",
            r.name,
            r.path,
            fmt_time(med),
            fmt_time(min),
            fmt_time(max),
            r.times.len(),
            if r.flops > 0 {
                format!("{:.1}", r.flops as f64 / med / 1e9)
            } else {
                "–".into()
            },
            r.baseline
                .map_or("–".into(), |b| format!("{:.2}×", b / med)),
            median(&r.cpu),
            median(&r.cpu) / med,
            r.peak_rss_mib.map_or("–".into(), |m| format!("{m:.0} MiB"))
        ));
    }
}

fn fmt_time(s: f64) -> String {
    if s < 1.0 {
        format!("{:.1} ms", s * 1e3)
    } else {
        format!("{s:.2} s")
    }
}

/// What was tried for CPU speed, what it was expected to give and what it gave. "1-thread"
/// figures are process CPU time with `RAYON_NUM_THREADS=1` (robust to the machine's load),
/// taken during development on this machine; the tables above are the live A/B numbers.
const OPTIMISATION_LOG: &str = r"
## Optimisation log (CPU convolution, GroupNorm)

| step | predicted | measured |
|---|---|---|
| gemm `x86-v4` feature (AVX-512 micro-kernels; workspace-wide, so candle's own matmul and conv use them too) | +50–60 % GEMM throughput (probe: 2048³ 95 → 154 GFLOP/s, 1 thread) | not re-measured alone; the candle rows already include it |
| Banded im2col (1 MiB tiles, row `memcpy`s) + `gemm` straight into NCHW, rayon over (image, band) with single-threaded GEMMs; parallel GEMM only when there are fewer bands than threads | 4–6× candle's conv2d forward (probe) | 1-thread: 120–126 GFLOP/s on 128→128 @256² (candle ≈ 22), 150–160 at 256 and 512 channels |
| GEMM-based backward: input gradient as the flipped-kernel forward (stride 1) or GEMM + col2im (stride 2), weight gradient with per-chunk accumulators summed in a fixed order | 12–17× candle's `conv_transpose2d` input gradient, 3–5× its weight gradient | fwd+bwd of one layer 4–6× candle (tables above) |
| Tile size 0.5 / 1 / 2 MiB; 1×1 convolutions through an im2col copy instead of strided GEMM | ± a few % | within noise (±5 %): kept 1 MiB and the direct 1×1 GEMM |
| Winograd F(2×2, 3×3) for 3×3 stride 1 (also the stride-1 input gradient), bands of tile rows with V and M in L2, additions-only transforms | 1.3–1.8× over im2col (2.25× fewer multiplies) | 1-thread direct-equivalent GFLOP/s: 128→128 @256² 120 → 185, 256→128 @256² 122 → 215, 256→256 @64² 149 → 215, 256→256 @32² 149 → 205, 512→512 @16² b4 160 → 217; 512→512 @16² b1 (64 tiles) 158 → 124: the per-call weight transform dominates, so it runs only from 256 tiles |
| Winograd transforms compiled for AVX-512: a closure handed to a `#[target_feature]` function keeps the baseline SSE2 code, so each kernel gets its own `#[target_feature]` wrapper (`simd_dispatch!`) | +10–20 % | 128→128 @256²: 152–160 → 185 (1-thread) |
| Per-thread reusable scratch (tiles, Winograd buffers) instead of per-call allocations | fewer page faults and frees | `_int_free` 4.5 % of samples → gone; small layers (256 @32²) a few % |
| Fused GroupNorm+SiLU (3 passes per (image, group) block in L2; fused backward; vectorised `exp`) | ~5× candle-nn GroupNorm + `silu` (about ten passes over memory) | 5.0–5.3× forward, 4.2–5.2× forward+backward (table above). Now used by the model (every GroupNorm: ResNet `norm1`/`norm2` fused with their SiLU, attention and `conv_norm_out`). Expected: paper forward −1.0 s of about 11 GroupNorm+SiLU at 256² (78–155 ms each in candle). Measured: the whole-network rows above include it; the previous run without it (load 2.5–5) had paper forward 4.42 s and small train step 6.34 s, this one (load 1.5–2) 1.98 s and 1.29 s — the kernel and the quieter machine are not separated |
| Allocator (not applied: a binary-level choice) | — | every ≥ 32 MiB tensor is a fresh `mmap`, page-faulted on first write: 1.2–1.7 s of system time per paper forward. `MALLOC_MMAP_MAX_=0` cut system time 5.3 → 0.5 s over 3 forwards; transparent huge pages (`GLIBC_TUNABLES=glibc.malloc.hugetlb=1`) made it worse (7.5 s) |
| candle's element-wise thread pool (not applied) | — | its main thread spin-waits for the worker; under load 4–5, `CANDLE_NUM_THREADS=1` (element-wise ops on one thread, GEMMs and these kernels still on 2) took the small train step from 8.7–10.9 s to 7.1–7.5 s and user CPU from 11 to 6.8 s; to be re-measured on a quiet machine |
| MONAI segmenter on these kernels: `conv2d`, a `conv_transpose2d` custom op (the convolution's GEMM input-gradient kernel; its gradients are the convolution's forward and weight gradient), InstanceNorm as the fused GroupNorm with one group per channel | 3–5× (its convolutions were candle's, 5× slower than torch) | batch 8 @256², quiet moments: nru0 ≈ 380 → 54 ms, nru2 ≈ 570 → 141 ms (torch 48 / 105 ms) |
| `mimalloc` in the xtask (the `segdiff` binary already had it), so the PyTorch comparison times the shipped allocator | page faults from fresh `mmap`s gone | MONAI nru2 forward 175 → 148 ms in a standalone loop; perf: page-fault kernel time 35 % of samples → 3 % |
| Tried, not kept: a fused single-pass PReLU (rayon, or one thread) instead of candle's relu/sub/mul/add; Winograd only from 32 or 64 channels | −10 ms per segmenter forward; a few % | slower (148 → 175–220 ms: its freshly allocated output is faulted in on a cold path while candle's element-wise pool spins); no change beyond noise |
| Weight gradient without gathers: gemm packs a row-major left operand one element at a time, at the stride of a band or a plane (a power of two at the usual sizes, every row in one L1 set); now dy's band is transposed to pixels × c_out in L1-sized blocks and each chunk accumulates dwᵀ column-major, transposed once at the end | −7 % of a small training step (perf: gemm's `pack_lhs` 7 % of samples, all from the weight gradient) | `pack_lhs` 7 % → 1 %; small step (fwd+bwd, standalone loop) 1.30 → 1.24 s. With the next three rows: paper training step 21.4 → 15.0 s, paper forward 2.37 → 1.5–1.6 s (side-by-side runs) |
| mimalloc purge delay −1 (`segdiff_cli::allocator`): freed memory is kept for reuse instead of being returned to the kernel after 1 s | the re-faulting of re-allocated activations (perf: `clear_page_erms` 10–25 % of samples) | page faults over 10 small training steps 100,689 → 937 (all in the first step); small step 1.33–1.42 → 1.23–1.29 s; peak RSS of the paper forward 1053 → 1342 MiB (torch 1682 MiB) |
| Winograd bands over the batch's tile rows, so that a band of small images spans several (8² has 16 tiles per image: 16 GEMMs 16 columns wide) | 8² layers 1.5–2× | 128→64 @8² b16: forward 2.01 → 1.24 ms, forward+backward 5.9 → 2.4 ms |
| Winograd transforms' loops as functions of their own (`butterfly`, `a_transpose`): their `&mut` arguments tell the compiler the outputs do not overlap, so the loops vectorise without run-time overlap checks and scalar fallbacks | +10–20 % (perf annotate: the hot code was scalar `vsubss`/`vmovss`) | forward, b16: 32→32 @64² 6.9 → 5.4 ms, 64→32 @64² 11.8 → 9.1 ms, 32→32 @32² 2.3 → 1.6 ms |
| im2col tiles of several whole images side by side when one image is smaller than a band (forward and weight gradient; 2² and 4² layers ran GEMMs 4–16 columns wide) | 2–3× on those layers (torch: 0.17 ms for 128→128 @2² b16) | 128→128 b16: @2² forward 0.74 → 0.30 ms, weight gradient 0.90 → 0.62 ms; @4² 0.82 → 0.64 and 1.43 → 1.0 ms |
| Outputs of the convolutions and GroupNorm written into uninitialised memory (`MaybeUninit`) instead of zeroed first | one pass less per output (zeroing an 8 MiB activation took 1.2 ms, as long as a GroupNorm's own work on it) | small step (fwd+bwd) 1.03–1.08 → 0.93 s |
| MONAI inference: InstanceNorm and PReLU in one pass of the fused norm kernel (`group_norm_prelu_inference`, no gradients; the trainable path keeps candle's relu/sub/mul/add) | PReLU as four candle ops plus their thread pool was about 30 % of a segmenter forward | loaded weights, standalone loop: nru0 52 → 36 ms, nru2 110 → 82 ms; side by side 0.73× / 0.94× torch |
| GroupNorm backward reuses the forward's per-block mean and 1/std (kept in the op, which candle hands back for the backward) | −2 of 7 passes of the backward, ≈ 2 % of a small step | within the noise of the standalone loop (0.94–0.99 s either way); kept, it is less work |
| Bench: a 0.3 s pause before each timed run of the side-by-side | — | without it, segdiff's small training steps right after a torch run took 1.10–1.13 s and those after its own 1.00–1.02 s |
| (observed, not solved) segdiff after an idle pause | — | a MONAI nru0 forward takes 36–40 ms back to back but 55–60 ms after ≥ 100 ms idle (pause 5 / 20 / 50 / 100 / 300 ms: 39 / 37 / 40 / 45 / 55 ms), with 4× the context switches: rayon's sleeping workers are woken op by op on this VM. The side-by-side's 0.3 s pause therefore times segdiff's short cases cold; with a 50 ms pause instead the MONAI forwards measured 0.60× / 0.66× torch (torch then slower, 72 / 127 ms). Keeping the workers awake (below) cut the context switches 4.7× but not the time, so the wake-ups are not the cause |
| Tried, not kept: Winograd weight gradient (`dU[ξ] += (A dY Aᵀ)[ξ] · V[ξ]ᵀ`, `dw = Gᵀ dU G`; exact, matched im2col to 1e-12 in f64); Winograd bands of 0.5 or 1 MiB; im2col rows padded off 4 KiB multiples; lower `CANDLE_BARRIER_POOL_SPIN_LIMIT` | 2.25× fewer multiplies in the weight gradient; a few % | no gain at 32–64 channels (the transforms cost what the GEMMs save) and slower at 512 (114 vs 86 ms for 512→512 @32² b2: dU read and written for every band of few tiles); no change; no change; slower (1.00–1.04 vs 0.95 s) |
| Strided convolutions through column phases: for stride s, each channel's input rows are first split into s column phases (even and odd columns for s = 2), after which every im2col row is a `memcpy` again; col2im adds each tap contiguously into such a phase buffer and interleaves it onto the input once per row. Both compiled for AVX-512 (`simd_dispatch!`; the tap loop is an iterator, not a closure, so the loop bodies get the wide registers). The transposed convolution also starts from its bias instead of adding it in a separate candle pass | the per-element strided gathers and scatter-adds were 27 % of a MONAI nru0 forward (perf: `col2im_add` 15.6 %, im2col 11.7 %); 2–3× on those | AMD EPYC, batch 8, medians of 31: conv 3×3/2 1→16 @256² 1.23–1.42 → 0.61–0.66 ms, 16→32 @128² 5.1–6.6 → 2.4–3.0 ms, 32→64 @64² 3.7–4.8 → 2.1–2.5 ms; transposed 64→16 @64² 7.3–7.7 → 4.4–5.2 ms, 32→4 @128² 5.5–6.5 → 3.8–4.2 ms. Two binaries alternated (0.3 s pause, three rounds): MONAI nru0 forward 56–67 → 49–51 ms, nru2 127–131 → 105–113 ms; small training step unchanged (its strided convolutions are few) |
| Tried, not kept: keeping rayon's workers awake across one forward (the forward inside a `rayon::scope` whose other tasks run `rayon::yield_now` until it ends, or 2 ms without work), OpenMP-style | the after-pause penalty above, if it were the wake-ups | context switches per 30 MONAI forwards 8,400 → 1,800, but the time stayed within noise: nru0 after a 0.3 s pause 49 vs 54, 46 vs 48 and 51 vs 49 ms (awake vs not); small step ±3 %. So the wake-ups are not what makes a run after a pause slower. Also measured: `CANDLE_BARRIER_POOL_SPIN_LIMIT=200000` made the small step 1.39–1.46 s against 1.0–1.1 s (candle's spinning thread takes a core from rayon's workers) |
| (context) The machine changed between sessions: the rows above were measured on an Intel Xeon, the two above and this run's tables on an AMD EPYC (also 2 vCPUs with AVX-512) | — | on the EPYC PyTorch is much slower on the same cases (MONAI nru0 / nru2 forward 76–97 / 157–206 ms against 48–51 / 100–105 ms on the Xeon; paper forward 4.42 against 2.72 s) and segdiff somewhat slower (paper forward 2.26 against 1.52 s), so the ratios of the two machines are not comparable; the Xeon's last side-by-side, before the strided-convolution row, had MONAI nru0 at 1.17× and the small training step at 1.49× |

Paper forward, batch 1, in earlier runs of this bench: with both cores mostly free (load 2.8 → 5.8,
1.7 cores used) fast 2.45 s median (2.11 s min) against candle 11.1 s; with one core taken by another
job (1.0 core used) fast 4.69 s against candle 24.0 s. One thread, separate processes: 5.0 s with
glibc's default malloc (about 3 s user + 1.5 s system: page faults), 3.9 s with `MALLOC_MMAP_MAX_=0
MALLOC_TRIM_THRESHOLD_=<large>`.

What remains in the small training step (64², batch 16, about 0.95 s; per-op timers during development):
convolutions about 60 % (forward 180 ms, input gradients 190 ms, weight gradients 215 ms per step),
GroupNorm 50 ms forward and 75 ms backward, and about 20 % in candle: its element-wise ops, the
zeros-then-add of every graph node's gradient, broadcast reductions and its thread pool. Layer by layer,
oneDNN is 1.1–2.3× faster than these kernels on the 32–128-channel convolutions at 4²–32² that make up
most of that network (e.g. 128→64 @8² b16 forward 0.55 vs 1.24 ms), while at 64² and in the paper
network these kernels are faster. Earlier: in a paper forward the convolutions were about 40 % of the
samples, the rest candle's GroupNorm/SiLU, element-wise and broadcast ops, spin-waits and page faults.
";
