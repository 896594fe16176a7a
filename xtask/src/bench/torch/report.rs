//! The PyTorch section of BENCHMARKS.md: the method, both sides' versions, the load and one row
//! per case, between markers so that `--torch-only` can replace it in place.

use std::path::Path;

use serde_json::Value;

use super::super::marked_section::Markers;
use super::super::median;
use super::super::report::{fmt_time, machine};
use super::{Row, Runs};

/// Marks the section so `cargo xtask bench --torch-only` can replace it in place.
pub const MARKERS: Markers = Markers {
    start: "<!-- torch:start -->",
    end: "<!-- torch:end -->",
};
const START: &str = MARKERS.start;
const END: &str = MARKERS.end;

/// The PyTorch section of an existing report (markers included), so a bench run without
/// `--torch` keeps it.
pub fn existing_section(out: &Path) -> Option<String> {
    MARKERS.existing(out)
}

/// `old` with its PyTorch section replaced by `section`, or with `section` appended.
pub(super) fn replace_section(old: &str, section: &str) -> String {
    MARKERS.replace(old, section)
}

/// How the section's numbers were taken, its first paragraph.
const METHOD: &str = "\
    Written by `cargo xtask bench --torch <python>` (`--torch-only` re-measures only this \
    section; `bench/README.md` says how to install the PyTorch side). Both sides compute \
    the same function: the xtask writes the weights (synthetic, PyTorch-scaled; diffusers \
    layout for the denoisers, MONAI `state_dict` names for the segmenter) and the inputs to \
    a temporary folder, and `bench/torch_bench.py`, a persistent PyTorch worker fed one \
    JSON command per line, loads the same files. Per case, segdiff and torch run in turn \
    in one session, one run each per round, the side that goes first alternating between \
    rounds, so both see the same machine load, and every timed run starts after a 0.3 s \
    pause, so that what the previous run left behind (an OpenMP team still spinning, \
    memory being returned) has settled: without it, segdiff's runs right after torch's \
    were about 8 % slower than those after its own. The first run of each side is a warm-up, \
    and it is checked: first outputs (or loss and pre-clip gradient norm of the first \
    training step) must agree within 1e-3 relative, else the bench fails (\"first-run \
    check\"). Each side times its own runs (torch inside the worker, around the call). \
    Forwards: segdiff's model without gradient tracking; torch `eval()` under \
    `torch.no_grad()`. Training step, both sides: forward, MSE loss, backward, global \
    gradient-norm clip 1.0, AdamW (lr 1e-4, betas (0.9, 0.999), eps 1e-8, weight decay \
    0.01; torch's default single-tensor CPU implementation). Peak memory: process peak RSS \
    (VmHWM) for loading the paper UNet and two batch-1 forwards, each side in a fresh \
    process (segdiff: this xtask binary re-run, with the `segdiff` CLI's allocator settings \
    (mimalloc keeping freed memory); torch: a fresh Python, whose footprint includes the interpreter and \
    libtorch). Ratio = segdiff median / torch median (in brackets: fastest segdiff run / \
    fastest torch run, closer to a quiet machine when the load varies); a case meets its \
    target when the ratio of medians is at most the target.\n\n";

fn version(hello: &Value, key: &str) -> String {
    match hello.get(key) {
        Some(Value::String(s)) => s.clone(),
        Some(v) => v.to_string(),
        None => "?".into(),
    }
}

/// The section, markers included: method, machine, both sides' versions (from the worker's
/// `hello`), load and one row per case.
pub(super) fn render(
    rows: &[Row],
    hello: &Value,
    threads: usize,
    runs: Runs,
    (load_before, load_after): (&str, &str),
    took: f64,
) -> String {
    let yes_no = |k: &str| {
        if hello.get(k).and_then(Value::as_bool) == Some(true) {
            "yes"
        } else {
            "no"
        }
    };
    let mut md = format!("\n{START}\n## segdiff against PyTorch\n\n");
    md.push_str(METHOD);
    md.push_str(&format!("Machine: {}\n\n", machine()));
    md.push_str(&format!(
        "PyTorch side: Python {}, torch {} (ATen parallel backend {}, oneDNN {}, MKL {}), \
         diffusers {}, MONAI {}, safetensors {}; `torch.set_num_threads({})` and \
         `OMP_NUM_THREADS={threads}`, matching segdiff's {threads} rayon threads.\n\n",
        version(hello, "python"),
        version(hello, "torch"),
        version(hello, "parallel_backend"),
        yes_no("mkldnn"),
        yes_no("mkl"),
        version(hello, "diffusers"),
        version(hello, "monai"),
        version(hello, "safetensors"),
        version(hello, "threads"),
    ));
    md.push_str(&format!(
        "Load average (1/5/15 min) at start: {load_before}; at end: {load_after}; this section \
         took {took:.0} s. Timed rounds after the warm-up: {} per case, {} for the batch-4 \
         forward and the paper training step, {} for the MONAI forwards. \"CPU s/run\" is the \
         median process CPU time (all threads, 10 ms ticks) of a run; \"others' CPU\" the median \
         share of the machine's CPU time that processes other than the two sides used during \
         the timed runs (from `/proc/stat`): above ~10 % the machine was not quiet, and OpenMP's \
         static work split (torch) suffers more from a busy core than rayon's work stealing \
         (segdiff).\n\n",
        runs.runs,
        runs.heavy(),
        runs.light(),
    ));
    md.push_str(
        "| case | runs | segdiff median | segdiff min – max | segdiff CPU s/run | torch median \
         | torch min – max | torch CPU s/run | segdiff / torch | target | met? | others' CPU \
         | first-run check |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in rows {
        md.push_str(&table_row(r));
    }
    md.push_str(&format!("{END}\n"));
    md
}

/// One case's row of the table.
fn table_row(r: &Row) -> String {
    let fmt = |v: f64| {
        if r.mib {
            format!("{v:.0} MiB")
        } else {
            fmt_time(v)
        }
    };
    let range = |v: &[f64]| {
        if v.len() < 2 {
            return "–".to_string();
        }
        let min = v.iter().copied().fold(f64::INFINITY, f64::min);
        let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        format!("{} – {}", fmt(min), fmt(max))
    };
    let or_dash = |v: &[f64], f: &dyn Fn(f64) -> String| {
        if v.is_empty() {
            "–".to_string()
        } else {
            f(median(v))
        }
    };
    let cpu = |v: f64| format!("{v:.2}");
    let share = |v: f64| format!("{:.0} %", 100.0 * v);
    let (ours, torch) = (median(&r.ours), median(&r.torch));
    let ratio = ours / torch;
    let min = |v: &[f64]| v.iter().copied().fold(f64::INFINITY, f64::min);
    let ratios = if r.ours.len() > 1 {
        format!("{ratio:.2}× (minima {:.2}×)", min(&r.ours) / min(&r.torch))
    } else {
        format!("{ratio:.2}×")
    };
    format!(
        "| {} | {} | {} | {} | {} | {} | {} | {} | {ratios} | ≤ {:.1}× | {} | {} | {} |\n",
        r.name,
        if r.mib {
            "1 each".to_string()
        } else {
            r.ours.len().to_string()
        },
        fmt(ours),
        range(&r.ours),
        or_dash(&r.cpu.ours, &cpu),
        fmt(torch),
        range(&r.torch),
        or_dash(&r.cpu.torch, &cpu),
        r.target,
        if ratio <= r.target { "yes" } else { "no" },
        or_dash(&r.others, &share),
        r.check
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_the_section_in_place_and_keeps_the_rest() {
        let old = format!("# B\n\ntext\n{START}\nold\n{END}\n## after\n");
        let new = format!("\n{START}\nnew\n{END}\n");
        let text = replace_section(&old, &new);
        assert_eq!(
            text,
            format!("# B\n\ntext\n\n{START}\nnew\n{END}\n\n## after\n")
        );
        assert_eq!(replace_section(&text, &new), text);
    }

    #[test]
    fn appends_the_section_when_absent() {
        let new = format!("\n{START}\nnew\n{END}\n");
        let text = replace_section("# B\n\nbody\n", &new);
        assert_eq!(text, format!("# B\n\nbody\n\n{START}\nnew\n{END}\n"));
        assert_eq!(replace_section("", &new), format!("{START}\nnew\n{END}\n"));
    }
}
