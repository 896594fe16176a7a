//! segdiff against PyTorch + diffusers / MONAI on the same configurations, weights and inputs
//! (`cargo xtask bench --torch <python>`), written as a section of BENCHMARKS.md.
//!
//! The xtask writes the weights (diffusers layout for the denoisers, MONAI `state_dict` names for
//! the segmenter) and the inputs to a temporary folder; `bench/torch_bench.py`, a persistent
//! worker fed one JSON command per line, loads the same files. Each case then runs segdiff and
//! torch in turn, one run each per round after a short pause, so both see the same machine
//! load; the first run of each side is a warm-up whose results are compared, so that a timing
//! is only reported for two implementations of the same function. Peak memory is measured in fresh processes.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, ensure, Context, Result};
use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{VarBuilder, VarMap};
use segdiff_diffusion::optim::{clip_grad_norm, AdamW, AdamWConfig};
use segdiff_eval::{init_weights_seeded, MonaiUNet, MonaiUNetConfig};
use segdiff_unet::{load_unet, save_unet, UNet2DConfig};
use serde_json::{json, Value};

use super::torch_worker::{seconds, TorchWorker, PIP_HINT};
use super::{lcg_tensor, load_average, peak_rss_mib, synthetic_parameters, trainable_model};

mod report;

pub use report::existing_section;
use report::{render, replace_section};

/// Largest relative difference of the first results (max |Δ| / max |torch| for outputs,
/// |Δ| / |torch| for loss and gradient norm) for which both sides count as the same function.
const AGREEMENT: f64 = 1e-3;
/// Learning rate of the timed training steps (the paper's).
const LR: f64 = 1e-4;
/// Gradient-norm clip of the timed training steps (diffusers' training scripts).
const MAX_GRAD_NORM: f64 = 1.0;

/// What one of our runs yields for the first-run comparison.
#[derive(Default)]
struct Outcome {
    output: Option<Tensor>,
    loss: Option<f64>,
    grad_norm: Option<f64>,
}

/// One table row: seconds per run, or MiB for the memory row.
struct Row {
    name: String,
    target: f64,
    ours: Vec<f64>,
    torch: Vec<f64>,
    /// Process CPU seconds (all threads) of each timed run, per side.
    cpu: Timings,
    /// Share of the machine's CPU time that other processes used during each timed run.
    others: Vec<f64>,
    check: String,
    mib: bool,
}

impl Row {
    /// A timed case's row from what [`alternate`] measured.
    fn timed(
        name: impl Into<String>,
        target: f64,
        (wall, cpu, others, check): (Timings, Timings, Vec<f64>, String),
    ) -> Self {
        Self {
            name: name.into(),
            target,
            ours: wall.ours,
            torch: wall.torch,
            cpu,
            others,
            check,
            mib: false,
        }
    }
}

/// What [`alternate`] measured.
#[derive(Default)]
struct Timings {
    ours: Vec<f64>,
    torch: Vec<f64>,
}

/// CPU seconds (user + system, all threads) of process `pid` ("self" for this one).
fn cpu_seconds(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // After the parenthesised command name, utime and stime are the 12th and 13th fields.
    let rest = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<f64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0.0))
        .collect();
    (f.get(11).unwrap_or(&0.0) + f.get(12).unwrap_or(&0.0)) / 100.0
}

/// Busy and total CPU seconds of the whole machine (all CPUs), from `/proc/stat`.
fn machine_seconds() -> (f64, f64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let v: Vec<f64> = stat
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .take(8)
        .map(|x| x.parse().unwrap_or(0.0))
        .collect();
    let at = |i: usize| v.get(i).copied().unwrap_or(0.0);
    // user nice system idle iowait irq softirq steal: idle and iowait are not busy.
    let busy = at(0) + at(1) + at(2) + at(5) + at(6) + at(7);
    (busy / 100.0, v.iter().sum::<f64>() / 100.0)
}

/// CPU counters at the start of a run, to split its CPU time into ours, torch's and others'.
struct Probe {
    torch_pid: String,
    busy: f64,
    total: f64,
    ours: f64,
    torch: f64,
}

impl Probe {
    fn start(torch_pid: u32) -> Self {
        let torch_pid = torch_pid.to_string();
        let (busy, total) = machine_seconds();
        let (ours, torch) = (cpu_seconds("self"), cpu_seconds(&torch_pid));
        Self {
            torch_pid,
            busy,
            total,
            ours,
            torch,
        }
    }

    /// (segdiff CPU s, torch CPU s, share of all CPU time that other processes used).
    fn stop(&self) -> (f64, f64, f64) {
        let (busy, total) = machine_seconds();
        let ours = cpu_seconds("self") - self.ours;
        let torch = cpu_seconds(&self.torch_pid) - self.torch;
        let others = (busy - self.busy - ours - torch).max(0.0) / (total - self.total).max(0.01);
        (ours, torch, others.min(1.0))
    }
}

/// Per-case run counts: the heavy paper cases (a batch-4 forward or a batch-2 training step takes
/// tens of seconds per side on two cores) take at most `heavy` timed rounds, the MONAI forwards
/// (well under a second) `LIGHT_FACTOR × runs`, the others `runs`.
#[derive(Clone, Copy, Debug)]
pub struct Runs {
    pub runs: usize,
    pub heavy: usize,
}

/// How many more rounds the sub-second cases take, so that a moment of load weighs less.
const LIGHT_FACTOR: usize = 4;

impl Runs {
    fn heavy(self) -> usize {
        self.runs.min(self.heavy).max(1)
    }

    fn light(self) -> usize {
        self.runs * LIGHT_FACTOR
    }
}

/// Re-measures only the PyTorch section of `out` (replacing it, or appending it when absent).
pub fn update(python: &Path, runs: Runs, out: &Path) -> Result<()> {
    let section = section(python, runs, None)?;
    let old = std::fs::read_to_string(out).unwrap_or_default();
    let text = replace_section(&old, &section);
    segdiff_io::write_bytes_atomic(out, text.as_bytes())
        .with_context(|| format!("writing {}", out.display()))?;
    println!("updated the PyTorch section of {}", out.display());
    Ok(())
}

fn script() -> PathBuf {
    crate::workspace_root().join("bench").join("torch_bench.py")
}

/// Runs the cases whose name contains `only` and prints their table, leaving the report alone
/// (for checking one change quickly).
pub fn print_cases(python: &Path, runs: Runs, only: &str) -> Result<()> {
    println!("{}", section(python, runs, Some(only))?);
    Ok(())
}

/// Runs every case (or those whose name contains `only`) and returns the Markdown section
/// (between the markers).
pub fn section(python: &Path, runs: Runs, only: Option<&str>) -> Result<String> {
    let want = |name: &str| only.is_none_or(|o| name.contains(o));
    let threads = rayon::current_num_threads();
    let script = script();
    ensure!(script.is_file(), "{} is missing", script.display());
    // Fails fast, before any weights are written, when the Python lacks a package.
    let (mut worker, hello) = TorchWorker::start(python, &script, threads)?;
    let load_before = load_average();
    let started = Instant::now();
    let tmp = tempfile::Builder::new()
        .prefix("segdiff-torch-bench")
        .tempdir()
        .context("creating a temporary folder for the shared weights")?;
    let dir = tmp.path();
    let mut rows = Vec::new();

    let paper = UNet2DConfig::paper(256, 2, 1);
    let paper_dir = dir.join("paper");
    eprintln!("torch bench: writing the paper UNet's weights");
    save_unet(&paper_dir, &paper, &synthetic_parameters(&paper)?)
        .context("writing the paper UNet's weights")?;
    if want("peak RSS") {
        rows.push(peak_memory(python, &script, threads, &paper_dir, dir)?);
    }
    let fwd = [
        ("paper UNet forward, 256², batch 1", 1, runs.runs),
        ("paper UNet forward, 256², batch 4", 4, runs.heavy()),
    ];
    for (name, batch, n) in fwd.into_iter().filter(|c| want(c.0)) {
        rows.push(unet_forward(
            &mut worker,
            name,
            &paper_dir,
            (256, batch),
            n,
            dir,
        )?);
    }
    let paper_train = "paper UNet train step, 256², batch 2";
    if want(paper_train) {
        rows.push(unet_train(
            &mut worker,
            paper_train,
            &paper,
            &paper_dir,
            2,
            runs.heavy(),
            dir,
        )?);
    }
    let small = UNet2DConfig::with_channels(64, 2, 1, &[32, 32, 64, 64, 128, 128], 32);
    let small_dir = dir.join("small");
    save_unet(&small_dir, &small, &synthetic_parameters(&small)?)
        .context("writing the small UNet's weights")?;
    let small_train = "small UNet train step, 64², batch 16";
    if want(small_train) {
        rows.push(unet_train(
            &mut worker,
            small_train,
            &small,
            &small_dir,
            16,
            runs.runs,
            dir,
        )?);
    }
    for nru in [0, 2] {
        if want(&format!("MONAI UNet forward, num_res_units {nru}")) {
            rows.push(monai_forward(&mut worker, nru, runs.light(), dir)?);
        }
    }
    drop(worker);
    let load_after = load_average();
    Ok(render(
        &rows,
        &hello,
        threads,
        runs,
        (&load_before, &load_after),
        started.elapsed().as_secs_f64(),
    ))
}

/// Idle time before each timed run of [`alternate`].
const SETTLE: std::time::Duration = std::time::Duration::from_millis(300);

/// Times `ours` and the worker's loaded case in turn: one warm-up each (compared with
/// [`compare`]), then `runs` rounds; the side that goes first alternates between rounds so that
/// any after-effect of a run (caches, allocator, clock) does not always fall on the same side.
/// Returns the wall times, the CPU times, the others' CPU share of every timed run and the check.
fn alternate(
    name: &str,
    runs: usize,
    worker: &mut TorchWorker,
    save: Option<&Path>,
    mut ours: impl FnMut() -> Result<Outcome>,
) -> Result<(Timings, Timings, Vec<f64>, String)> {
    eprint!("torch bench {name}: warm-up");
    let start = Instant::now();
    let first = ours()?;
    eprint!(" S{:.3}s", start.elapsed().as_secs_f64());
    let answer = worker.run(save)?;
    eprintln!(" T{:.3}s", seconds(&answer)?);
    let check = compare(name, &first, &answer, save)?;
    drop(first);
    eprint!("torch bench {name}:");
    let (mut wall, mut cpu) = (Timings::default(), Timings::default());
    let mut others = Vec::with_capacity(2 * runs);
    for round in 0..runs {
        let order = if round % 2 == 0 {
            [true, false]
        } else {
            [false, true]
        };
        for ours_turn in order {
            // A pause before every timed run, so that what the previous run left behind (an
            // OpenMP team still spinning, pages being reclaimed) has settled on both sides.
            std::thread::sleep(SETTLE);
            let probe = Probe::start(worker.pid());
            if ours_turn {
                let start = Instant::now();
                ours()?;
                let dt = start.elapsed().as_secs_f64();
                let (c, _, o) = probe.stop();
                wall.ours.push(dt);
                cpu.ours.push(c);
                others.push(o);
                eprint!(" S{dt:.3}s");
            } else {
                let dt = seconds(&worker.run(None)?)?;
                let (_, c, o) = probe.stop();
                wall.torch.push(dt);
                cpu.torch.push(c);
                others.push(o);
                eprint!(" T{dt:.3}s");
            }
        }
    }
    eprintln!();
    Ok((wall, cpu, others, check))
}

/// Checks that both sides computed the same thing on their first run and describes how closely.
fn compare(name: &str, ours: &Outcome, torch: &Value, save: Option<&Path>) -> Result<String> {
    let mut parts = Vec::new();
    let mut worst = 0f64;
    if let (Some(out), Some(path)) = (&ours.output, save) {
        let theirs = candle_core::safetensors::load(path, &Device::Cpu)
            .with_context(|| format!("reading torch's output {}", path.display()))?
            .remove("out")
            .with_context(|| format!("{} has no `out`", path.display()))?;
        ensure!(
            out.dims() == theirs.dims(),
            "{name}: segdiff's output is {:?}, torch's {:?}",
            out.dims(),
            theirs.dims()
        );
        let diff = f64::from((out - &theirs)?.abs()?.max_all()?.to_scalar::<f32>()?);
        let scale = f64::from(theirs.abs()?.max_all()?.to_scalar::<f32>()?);
        let rel = diff / scale.max(f64::MIN_POSITIVE);
        parts.push(format!("output max abs. diff {diff:.1e} (rel. {rel:.1e})"));
        worst = if rel.is_nan() || rel > worst {
            rel
        } else {
            worst
        };
    }
    for (key, value) in [("loss", ours.loss), ("grad_norm", ours.grad_norm)] {
        let Some(v) = value else { continue };
        let theirs = torch
            .get(key)
            .and_then(Value::as_f64)
            .with_context(|| format!("the torch worker's answer {torch} has no {key}"))?;
        let rel = (v - theirs).abs() / theirs.abs().max(f64::MIN_POSITIVE);
        let label = if key == "loss" { "loss" } else { "grad norm" };
        parts.push(format!("{label} {v:.6} vs {theirs:.6} (rel. {rel:.1e})"));
        worst = if rel.is_nan() || rel > worst {
            rel
        } else {
            worst
        };
    }
    ensure!(!parts.is_empty(), "{name}: nothing to compare");
    let text = parts.join("; ");
    eprintln!("torch bench {name}: first run: {text}");
    if worst.is_nan() || worst > AGREEMENT {
        bail!(
            "{name}: segdiff and torch disagree on the first run ({text}): more than {AGREEMENT} \
             relative, so the two sides would not be timing the same function"
        );
    }
    Ok(text)
}

/// Writes `tensors` as the inputs both sides read.
fn write_inputs(dir: &Path, case: &str, tensors: &[(&str, &Tensor)]) -> Result<PathBuf> {
    let path = dir.join(format!("{case}.inputs.safetensors"));
    let map: HashMap<String, Tensor> = tensors
        .iter()
        .map(|(k, t)| (k.to_string(), (*t).clone()))
        .collect();
    candle_core::safetensors::save(&map, &path)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

fn slug(name: &str) -> String {
    name.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

fn unet_forward(
    worker: &mut TorchWorker,
    name: &str,
    model_dir: &Path,
    (size, batch): (usize, usize),
    runs: usize,
    dir: &Path,
) -> Result<Row> {
    let model = load_unet(model_dir, DType::F32, &Device::Cpu)
        .with_context(|| format!("loading {}", model_dir.display()))?
        .model;
    let cfg = model.config().clone();
    let x = lcg_tensor(&[batch, cfg.in_channels, size, size], 5, 1.0)?;
    let t = Tensor::from_vec(vec![500i64; batch], batch, &Device::Cpu)?;
    let inputs = write_inputs(dir, &slug(name), &[("x", &x), ("t", &t)])?;
    worker.request(&json!({
        "cmd": "load", "kind": "unet_forward", "model": model_dir, "inputs": inputs,
    }))?;
    let save = dir.join(format!("{}.torch_out.safetensors", slug(name)));
    let measured = alternate(name, runs, worker, Some(&save), || {
        Ok(Outcome {
            output: Some(model.forward(&x, &t)?),
            ..Outcome::default()
        })
    })?;
    Ok(Row::timed(name, 1.0, measured))
}

/// A training step as the trainer takes it: forward, MSE against a fixed target, backward,
/// global gradient-norm clip, AdamW.
fn unet_train(
    worker: &mut TorchWorker,
    name: &str,
    cfg: &UNet2DConfig,
    model_dir: &Path,
    batch: usize,
    runs: usize,
    dir: &Path,
) -> Result<Row> {
    let size = cfg.sample_size.context("the config has no sample_size")?;
    // The same synthetic values that were saved to `model_dir`, as trainable variables.
    let (model, varmap) = trainable_model(cfg)?;
    let mut optimizer = AdamW::new(
        &varmap,
        AdamWConfig {
            lr: LR,
            ..AdamWConfig::default()
        },
    )?;
    let vars = optimizer.vars();
    let (x, t, target) = super::train_inputs(cfg, size, batch)?;
    let inputs = write_inputs(
        dir,
        &slug(name),
        &[("x", &x), ("t", &t), ("target", &target)],
    )?;
    worker.request(&json!({
        "cmd": "load", "kind": "unet_train", "model": model_dir, "inputs": inputs,
    }))?;
    let measured = alternate(name, runs, worker, None, || {
        let loss = (model.forward(&x, &t)? - &target)?.sqr()?.mean_all()?;
        let mut grads = loss.backward()?;
        let grad_norm = clip_grad_norm(&mut grads, &vars, MAX_GRAD_NORM)?;
        optimizer.step(&grads)?;
        Ok(Outcome {
            loss: Some(f64::from(loss.to_scalar::<f32>()?)),
            grad_norm: Some(grad_norm),
            ..Outcome::default()
        })
    })?;
    Ok(Row::timed(name, 1.5, measured))
}

/// The mask-faithfulness segmenter (segdiff-eval's `MonaiUNet`) at batch 8, 256².
fn monai_forward(
    worker: &mut TorchWorker,
    num_res_units: usize,
    runs: usize,
    dir: &Path,
) -> Result<Row> {
    let name = format!("MONAI UNet forward, num_res_units {num_res_units}, 256², batch 8");
    let cfg = MonaiUNetConfig::new(
        1,
        4,
        vec![16, 32, 64, 128, 256],
        vec![2, 2, 2, 2],
        num_res_units,
    );
    let weights = dir.join(format!("monai_nru{num_res_units}.safetensors"));
    {
        // Our VarBuilder paths are MONAI's state_dict names, so the VarMap saves as a state_dict.
        let varmap = VarMap::new();
        MonaiUNet::new(
            &cfg,
            VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu),
        )?;
        init_weights_seeded(&varmap, 17 + num_res_units as u64)?;
        varmap
            .save(&weights)
            .with_context(|| format!("writing {}", weights.display()))?;
    }
    let model = MonaiUNet::load(&cfg, &weights, &Device::Cpu)?;
    let x = lcg_tensor(&[8, 1, 256, 256], 12, 1.0)?;
    let inputs = write_inputs(dir, &slug(&name), &[("x", &x)])?;
    worker.request(&json!({
        "cmd": "load", "kind": "monai_forward", "model": weights, "inputs": inputs,
        "monai": serde_json::to_value(&cfg)?,
    }))?;
    let save = dir.join(format!("{}.torch_out.safetensors", slug(&name)));
    let measured = alternate(&name, runs, worker, Some(&save), || {
        Ok(Outcome {
            output: Some(model.forward(&x)?),
            ..Outcome::default()
        })
    })?;
    Ok(Row::timed(name, 1.0, measured))
}

fn status_mib(field: &str) -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status
        .lines()
        .find(|l| l.strip_prefix(field).is_some_and(|r| r.starts_with(':')))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// The hidden `bench --peak-rss-child MODEL INPUTS`: in this fresh process, loads the model, runs
/// two forwards and prints the peak RSS (and the RSS once loaded) as one JSON line.
pub fn peak_rss_child(model_dir: &Path, inputs: &Path) -> Result<()> {
    let model = load_unet(model_dir, DType::F32, &Device::Cpu)
        .with_context(|| format!("loading {}", model_dir.display()))?
        .model;
    let mut tensors = candle_core::safetensors::load(inputs, &Device::Cpu)
        .with_context(|| format!("reading {}", inputs.display()))?;
    let x = tensors.remove("x").context("the inputs have no x")?;
    let t = tensors.remove("t").context("the inputs have no t")?;
    let rss_loaded = status_mib("VmRSS");
    for _ in 0..2 {
        model.forward(&x, &t)?;
    }
    println!(
        "{}",
        json!({"ok": true, "peak_rss_mib": peak_rss_mib(), "rss_loaded_mib": rss_loaded})
    );
    Ok(())
}

/// Runs a child that prints one JSON line with `peak_rss_mib` and `rss_loaded_mib`.
fn fresh_peak(mut cmd: Command, who: &str) -> Result<(f64, f64)> {
    let out = cmd
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("starting the {who} peak-memory process"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().last().unwrap_or("");
    let answer: Value = serde_json::from_str(line).unwrap_or(Value::Null);
    let get = |k: &str| answer.get(k).and_then(Value::as_f64);
    match (
        out.status.success(),
        get("peak_rss_mib"),
        get("rss_loaded_mib"),
    ) {
        (true, Some(peak), Some(loaded)) => Ok((peak, loaded)),
        _ => bail!(
            "the {who} peak-memory process failed ({}): {}",
            out.status,
            answer.get("error").and_then(Value::as_str).unwrap_or(line)
        ),
    }
}

/// Peak RSS of loading the paper UNet and two batch-1 forwards, each side in a fresh process.
fn peak_memory(
    python: &Path,
    script: &Path,
    threads: usize,
    model_dir: &Path,
    dir: &Path,
) -> Result<Row> {
    let name = "peak RSS: load paper UNet + 2 forwards, 256², batch 1 (fresh process)";
    let x = lcg_tensor(&[1, 2, 256, 256], 5, 1.0)?;
    let t = Tensor::from_vec(vec![500i64], 1, &Device::Cpu)?;
    let inputs = write_inputs(dir, "peak", &[("x", &x), ("t", &t)])?;
    eprintln!("torch bench {name}");
    let mut ours = Command::new(std::env::current_exe().context("locating the xtask binary")?);
    ours.args(["bench", "--peak-rss-child"])
        .arg(model_dir)
        .arg(&inputs);
    let (our_peak, our_loaded) = fresh_peak(ours, "segdiff")?;
    let mut torch = Command::new(python);
    torch
        .arg(script)
        .args(["peak", "--threads", &threads.to_string(), "--model"])
        .arg(model_dir)
        .arg("--inputs")
        .arg(&inputs)
        .env("OMP_NUM_THREADS", threads.to_string())
        .env("MKL_NUM_THREADS", threads.to_string());
    let (torch_peak, torch_loaded) =
        fresh_peak(torch, "torch").with_context(|| format!("(it needs `{PIP_HINT}`)"))?;
    eprintln!(
        "torch bench peak RSS: segdiff {our_peak:.0} MiB (loaded {our_loaded:.0}), torch \
         {torch_peak:.0} MiB (loaded {torch_loaded:.0})"
    );
    Ok(Row {
        name: name.into(),
        target: 1.0,
        ours: vec![our_peak],
        torch: vec![torch_peak],
        cpu: Timings::default(),
        others: Vec::new(),
        check: format!("RSS once loaded: segdiff {our_loaded:.0} MiB, torch {torch_loaded:.0} MiB"),
        mib: true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_first_run_disagreement_fails() {
        let ours = Outcome {
            loss: Some(1.0),
            grad_norm: Some(2.0),
            ..Outcome::default()
        };
        let close = json!({"loss": 1.0000001, "grad_norm": 2.0000002});
        assert!(compare("t", &ours, &close, None).is_ok());
        let far = json!({"loss": 1.01, "grad_norm": 2.0});
        assert!(compare("t", &ours, &far, None).is_err());
        let missing = json!({"loss": 1.0, "grad_norm": null});
        assert!(compare("t", &ours, &missing, None).is_err());
        let not_finite = Outcome {
            loss: Some(f64::NAN),
            grad_norm: Some(2.0),
            ..Outcome::default()
        };
        assert!(compare("t", &not_finite, &close, None).is_err());
    }
}
