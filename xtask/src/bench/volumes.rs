//! The whole-volume section of BENCHMARKS.md: the time per volume on the CPU. At 64²,
//! `segdiff sample-volume` on the bundled neighbour-conditioned model and label volume (once
//! neighbour-conditioned, once `--independent`); at 256², the paper's UNet with synthetic weights
//! through `sample_volume_slices`, a short stack timed and a whole volume extrapolated from it.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use segdiff_diffusion::{
    sample_volume_slices, ConditioningMeta, EpsModel, MaskEncoding, NeighbourGate, NeighbourScheme,
    SampleOptions, SamplerKind, SchedulerConfig, UnetDenoiser, VolumeSampleOptions,
};
use segdiff_unet::UNet2DConfig;

use super::marked_section::Markers;

/// Marks the section so `cargo xtask bench --volumes` can replace it in place.
pub const MARKERS: Markers = Markers {
    start: "<!-- volumes:start -->",
    end: "<!-- volumes:end -->",
};

/// The bundled neighbour-conditioned 64² model and 2 mm label volume, relative to the root.
const MODEL: &str = "assets/mni-demo/volume-model";
const LABELS: &str = "assets/mni-demo/data/labels_2mm.nii.gz";
/// Sampler and steps of every case.
const SCHEDULER: &str = "euler-a";
const STEPS: usize = 20;
/// `segdiff sample-volume`'s default batch, written out so the section states it.
const CLI_BATCH: usize = 8;

/// The 256² stack timed, and the volume extrapolated to.
const PAPER_SIZE: usize = 256;
const PAPER_SLICES: usize = 3;
const PAPER_STEPS: usize = 2;
const VOLUME_SLICES: usize = 150;

/// How a timed volume is generated.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Neighbour-conditioned with the default gate (`agreeing`: two calls per step).
    Agreeing,
    /// Neighbour-conditioned, `--neighbour-gate everywhere` (one call per step).
    Everywhere,
    /// `--independent`.
    Independent,
}

impl Mode {
    const ALL: [Mode; 3] = [Mode::Agreeing, Mode::Everywhere, Mode::Independent];

    fn tag(self) -> &'static str {
        match self {
            Mode::Agreeing => "neighbours",
            Mode::Everywhere => "neighbours-everywhere",
            Mode::Independent => "independent",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Mode::Agreeing => "neighbour-conditioned (default gate `agreeing`)",
            Mode::Everywhere => "neighbour-conditioned, `--neighbour-gate everywhere`",
            Mode::Independent => "independent (`--independent`)",
        }
    }

    fn args(self) -> &'static [&'static str] {
        match self {
            Mode::Agreeing => &[],
            Mode::Everywhere => &["--neighbour-gate", "everywhere"],
            Mode::Independent => &["--independent"],
        }
    }
}

/// One `segdiff sample-volume` run.
struct CliRun {
    volume: &'static str,
    mode: Mode,
    /// Slices along the axis, and those generated (first to last slice holding a label).
    slices: usize,
    generated: usize,
    /// Wall time of the whole `cargo run` (model load, reading and writing included).
    process: f64,
    /// sample-volume's own `seconds` (reading the labels to writing the output).
    sampling: f64,
}

/// The timed 256² stack.
struct PaperRun {
    in_channels: usize,
    calls: usize,
    seconds: f64,
}

impl PaperRun {
    fn per_call(&self) -> f64 {
        self.seconds / self.calls.max(1) as f64
    }
}

/// Measures the section (with `labels_1mm`, also that 1 mm label volume at 64²) and replaces it
/// in `out`.
pub fn update(out: &Path, labels_1mm: Option<&Path>) -> Result<()> {
    let root = crate::workspace_root();
    let load_before = super::load_average();
    let started = Instant::now();
    build_cli(&root)?;
    let mut volumes = vec![("2 mm", root.join(LABELS))];
    if let Some(p) = labels_1mm {
        volumes.push(("1 mm", p.to_path_buf()));
    }
    let mut cli = Vec::new();
    for (name, labels) in &volumes {
        for mode in Mode::ALL {
            cli.push(run_cli(&root, name, labels, mode)?);
        }
    }
    let paper = paper_stack()?;
    let load_after = super::load_average();
    let took = started.elapsed().as_secs_f64();
    let old = std::fs::read_to_string(out).unwrap_or_default();
    let text = MARKERS.replace(
        &old,
        &section(
            &cli,
            &paper,
            &super::report::machine(),
            labels_1mm,
            (&load_before, &load_after),
            took,
        ),
    );
    segdiff_io::write_bytes_atomic(out, text.as_bytes())
        .with_context(|| format!("writing {}", out.display()))?;
    println!("updated the whole-volume section of {}", out.display());
    Ok(())
}

fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

/// Builds the CLI first, so that the timed `cargo run`s do not include a compile.
fn build_cli(root: &Path) -> Result<()> {
    let status = cargo()
        .current_dir(root)
        .args(["build", "--release", "-p", "segdiff-cli"])
        .status()
        .context("running cargo build")?;
    if !status.success() {
        bail!("building segdiff-cli failed ({status})");
    }
    Ok(())
}

/// `segdiff sample-volume --json` on `labels` through `cargo run --release`, timed.
fn run_cli(root: &Path, volume: &'static str, labels: &Path, mode: Mode) -> Result<CliRun> {
    let tag = volume.replace(' ', "");
    let dest: PathBuf = root
        .join("target")
        .join("volumes-bench")
        .join(format!("{tag}-{}.nii.gz", mode.tag()));
    let mut cmd = cargo();
    cmd.current_dir(root)
        .args([
            "run",
            "--release",
            "-p",
            "segdiff-cli",
            "--",
            "sample-volume",
        ])
        .arg("--model")
        .arg(root.join(MODEL))
        .arg("--labels")
        .arg(labels)
        .arg("--out")
        .arg(&dest)
        .args(["--scheduler", SCHEDULER, "--seed", "0", "--json"])
        .args(["--steps", &STEPS.to_string()])
        .args(["--batch-size", &CLI_BATCH.to_string()])
        .args(mode.args());
    eprintln!("bench volumes: {volume}, {}", mode.tag());
    let started = Instant::now();
    let output = cmd
        .stderr(Stdio::inherit())
        .output()
        .context("running cargo")?;
    let process = started.elapsed().as_secs_f64();
    if !output.status.success() {
        bail!(
            "segdiff sample-volume on {} failed ({})",
            labels.display(),
            output.status
        );
    }
    let json: serde_json::Value = serde_json::from_slice(&output.stdout)
        .context("parsing the JSON summary of segdiff sample-volume")?;
    let report = json
        .get(0)
        .context("segdiff sample-volume reported no volume")?;
    let number = |key: &str| {
        report
            .get(key)
            .and_then(serde_json::Value::as_f64)
            .with_context(|| format!("no `{key}` in the JSON summary of segdiff sample-volume"))
    };
    let run = CliRun {
        volume,
        mode,
        slices: number("slices")? as usize,
        generated: number("generated")? as usize,
        process,
        sampling: number("seconds")?,
    };
    eprintln!(
        "  {} of {} slices, sampling {:.1} s, process {:.1} s",
        run.generated, run.slices, run.sampling, run.process
    );
    Ok(run)
}

/// The UNet as an [`EpsModel`] that counts its calls.
struct Counted<'a> {
    unet: UnetDenoiser<'a>,
    calls: usize,
}

impl EpsModel for Counted<'_> {
    fn predict(&mut self, input: &Tensor, timestep: f64) -> candle_core::Result<Tensor> {
        self.calls += 1;
        self.unet.predict(input, timestep)
    }
}

/// The conditioning of a neighbour-conditioned guided model with a single-channel mask.
fn neighbour_meta() -> ConditioningMeta {
    ConditioningMeta {
        segmentation_guided: true,
        mask_encoding: MaskEncoding::Single,
        num_classes: Some(4),
        class_names: Vec::new(),
        image_channels: 1,
        ablation_trained: false,
        class_colors: None,
        neighbours: Some(NeighbourScheme::default()),
    }
}

/// (slices, size, size) class ids: concentric discs whose radii change from slice to slice.
fn disc_labels(slices: usize, size: usize) -> Result<Tensor> {
    let c = size as f32 / 2.0;
    let mut v = Vec::with_capacity(slices * size * size);
    for s in 0..slices {
        let r = size as f32 * (0.30 + 0.02 * s as f32);
        for y in 0..size {
            for x in 0..size {
                let d = ((x as f32 - c).powi(2) + (y as f32 - c).powi(2)).sqrt() / r;
                v.push(match d {
                    d if d < 0.4 => 3u32,
                    d if d < 0.7 => 2,
                    d if d < 1.0 => 1,
                    _ => 0,
                });
            }
        }
    }
    Ok(Tensor::from_vec(v, (slices, size, size), &Device::Cpu)?)
}

/// The paper's 256² UNet (synthetic weights) through `sample_volume_slices`, neighbour-
/// conditioned, batch 1: a 1-slice 1-step warm-up, then `PAPER_SLICES` × `PAPER_STEPS` timed.
fn paper_stack() -> Result<PaperRun> {
    let meta = neighbour_meta();
    let mask_channels = meta.mask_channels()?;
    let in_channels = meta.image_channels
        + mask_channels
        + NeighbourScheme::default().channels(meta.image_channels, mask_channels);
    let cfg = UNet2DConfig::paper(PAPER_SIZE, in_channels, meta.image_channels);
    let model = super::synthetic_model(&cfg)?;
    let masks = disc_labels(PAPER_SLICES, PAPER_SIZE)?;
    let training = SchedulerConfig::default();
    let options = |steps| VolumeSampleOptions {
        sample: SampleOptions {
            scheduler: SamplerKind::EulerAncestral,
            steps: Some(steps),
            seed: 0,
            batch_size: 1,
            ..SampleOptions::default()
        },
        independent: false,
        anchors: 1,
        // one call per slice and step: the per-call time the volume is extrapolated from
        neighbour_gate: NeighbourGate::Everywhere,
        ..VolumeSampleOptions::default()
    };
    let mut denoiser = Counted {
        unet: UnetDenoiser::new(&model, DType::F32),
        calls: 0,
    };
    eprintln!("bench volumes: paper UNet {PAPER_SIZE}², warm-up");
    sample_volume_slices(
        &mut denoiser,
        &training,
        &meta,
        &masks.narrow(0, 0, 1)?,
        &options(1),
        &Device::Cpu,
        &mut |_| {},
    )?;
    denoiser.calls = 0;
    let started = Instant::now();
    let images = sample_volume_slices(
        &mut denoiser,
        &training,
        &meta,
        &masks,
        &options(PAPER_STEPS),
        &Device::Cpu,
        &mut |p| {
            eprintln!(
                "  slice {}/{}, step {}/{}",
                p.slices_done, p.slices_total, p.step, p.steps
            )
        },
    )?;
    let seconds = started.elapsed().as_secs_f64();
    let dims = images.dims();
    if dims != [PAPER_SLICES, meta.image_channels, PAPER_SIZE, PAPER_SIZE] {
        bail!("the 256² stack came back as {dims:?}");
    }
    let run = PaperRun {
        in_channels,
        calls: denoiser.calls,
        seconds,
    };
    eprintln!(
        "  {} calls in {:.1} s ({:.2} s per call)",
        run.calls,
        run.seconds,
        run.per_call()
    );
    Ok(run)
}

/// Seconds, with minutes or hours beside them from a minute on: `81.6 s (1.4 min)`.
fn duration(s: f64) -> String {
    if s < 60.0 {
        format!("{s:.1} s")
    } else if s < 3600.0 {
        format!("{s:.1} s ({:.1} min)", s / 60.0)
    } else {
        format!("{s:.0} s ({:.1} h)", s / 3600.0)
    }
}

/// The section; `machine` describes the CPU, `labels_1mm` is the 1 mm label volume timed (if
/// any), `load` the load average before and after.
fn section(
    cli: &[CliRun],
    paper: &PaperRun,
    machine: &str,
    labels_1mm: Option<&Path>,
    load: (&str, &str),
    took: f64,
) -> String {
    let mut rows = String::new();
    for r in cli {
        rows.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {:.2} s |\n",
            r.volume,
            r.mode.label(),
            r.slices,
            r.generated,
            duration(r.process),
            duration(r.sampling),
            r.sampling / r.generated.max(1) as f64,
        ));
    }
    let per_call = paper.per_call();
    let measured_slices_steps = PAPER_SLICES * PAPER_STEPS;
    let volume_calls = VOLUME_SLICES * STEPS;
    // the agreeing gate: two calls per step for every slice but the anchor
    let gated_calls = (2 * VOLUME_SLICES - 1) * STEPS;
    let one_mm = labels_1mm
        .and_then(Path::file_name)
        .map(|n| format!(", the 1 mm one `{}` (`--volumes-1mm`)", n.to_string_lossy()))
        .unwrap_or_default();
    format!(
        "\n{start}\n## Whole volumes\n\n\
         Written by `cargo xtask bench --volumes` (`--volumes-1mm FILE` adds a 1 mm label \
         volume at 64²); a full `cargo xtask bench` keeps it. CPU only, release build, f32, on a \
         shared machine (load average at start {lb}, at end {la}; this section took \
         {took:.0} s), so the times are a rough guide. Sampler euler-a, seed 0, one anchor \
         slice; {STEPS} steps except the short 256² stack.\n\n\
         Machine: {machine}\n\n\
         ### 64²: the bundled neighbour-conditioned model\n\n\
         `segdiff sample-volume --model {MODEL} --labels <label volume> --scheduler {SCHEDULER} \
         --steps {STEPS} --seed 0 --batch-size {CLI_BATCH} --json`, run through `cargo run \
         --release -p segdiff-cli` after a build, once neighbour-conditioned and once with \
         `--independent`; the 2 mm label volume is `{LABELS}`{one_mm}. Only the slices from the first \
         to the last one holding a label are generated (`--empty-slices blank`). \"process\" is \
         the wall time of the whole command (model load and writing the NIfTI and the plane \
         picture included); \"sampling\" is sample-volume's own `seconds` from `--json`; \
         s / slice = sampling / generated slices. Neighbour-conditioned generation proceeds \
         outward from the anchor, so at most two slices (one on each side) share a denoiser \
         call, against {CLI_BATCH} when independent.\n\n\
         | label volume | mode | slices | generated | process | sampling | s / slice |\n\
         |---|---|---:|---:|---:|---:|---:|\n{rows}\n\
         ### 256²: the paper's UNet (synthetic weights)\n\n\
         `UNet2DConfig::paper({PAPER_SIZE}, {inc}, 1)` ({inc} input channels: image, \
         single-channel mask, neighbour image, neighbour presence) with deterministic synthetic \
         weights, through `sample_volume_slices` in-process with a previous-slice \
         `NeighbourScheme`, batch 1, after a 1-slice 1-step warm-up. Measured: \
         {PAPER_SLICES} slices × {PAPER_STEPS} steps = {calls} network calls in \
         {secs:.1} s, {per_call:.2} s per slice per step. The whole-volume row is extrapolated \
         from that per-call time, not measured.\n\n\
         | case | slices × steps | network calls | time | s / slice / step |\n\
         |---|---:|---:|---:|---:|\n\
         | measured | {PAPER_SLICES} × {PAPER_STEPS} | {calls} | {secs:.1} s | {per_slice_step:.2} |\n\
         | extrapolated: a {VOLUME_SLICES}-slice volume, `--neighbour-gate everywhere` or \
         `--independent` | {VOLUME_SLICES} × {STEPS} | {volume_calls} | {vol} | {per_call:.2} |\n\
         | extrapolated: the same, default gate `agreeing` | {VOLUME_SLICES} × {STEPS} | \
         {gated_calls} | {gated} | {per_call:.2} |\n\n\
         On a GPU (a build with `--features cuda`, then `segdiff --device cuda sample-volume …`) \
         the same commands run unchanged; that path is not measured here, as these machines \
         have no GPU.\n{end}\n",
        start = MARKERS.start,
        end = MARKERS.end,
        lb = load.0,
        la = load.1,
        inc = paper.in_channels,
        calls = paper.calls,
        secs = paper.seconds,
        per_slice_step = paper.seconds / measured_slices_steps as f64,
        vol = duration(per_call * volume_calls as f64),
        gated = duration(per_call * gated_calls as f64),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_section_has_its_markers_and_extrapolates_from_the_per_call_time() {
        let cli = [CliRun {
            volume: "2 mm",
            mode: Mode::Agreeing,
            slices: 91,
            generated: 80,
            process: 42.0,
            sampling: 40.0,
        }];
        let paper = PaperRun {
            in_channels: 4,
            calls: 6,
            seconds: 12.0,
        };
        let s = section(
            &cli,
            &paper,
            "CPU",
            None,
            ("1.0 1.0 1.0", "2.0 2.0 2.0"),
            100.0,
        );
        assert!(s.trim().starts_with(MARKERS.start));
        assert!(s.trim().ends_with(MARKERS.end));
        assert!(s.contains(
            "| 2 mm | neighbour-conditioned (default gate `agreeing`) | 91 | 80 | 42.0 s | 40.0 s | 0.50 s |"
        ));
        // 2 s per call × 150 slices × 20 steps = 6000 s = 1.7 h
        assert!(s.contains("| 3000 | 6000 s (1.7 h) | 2.00 |"), "{s}");
        // the agreeing gate: (2 × 150 − 1) × 20 = 5980 calls
        assert!(s.contains("| 5980 | 11960 s (3.3 h) | 2.00 |"), "{s}");
    }

    #[test]
    fn the_paper_model_takes_four_input_channels() {
        let meta = neighbour_meta();
        let m = meta.mask_channels().unwrap_or(0);
        assert_eq!(
            meta.image_channels + m + NeighbourScheme::default().channels(1, m),
            4
        );
    }
}
