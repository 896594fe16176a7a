//! The CPU part of BENCHMARKS.md: the machine, its load, the A/B tables of [`super::run`] and the
//! optimisation log, followed by the data-preparation and PyTorch sections measured elsewhere.

use super::{median, Row};

/// The rows [`super::run`] measured, by table.
pub(super) struct CpuTables {
    /// Single convolution layers.
    pub(super) conv: Vec<Row>,
    /// GroupNorm + SiLU.
    pub(super) norm: Vec<Row>,
    /// Whole networks.
    pub(super) model: Vec<Row>,
}

pub(super) fn machine() -> String {
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

/// The whole report: the CPU tables with the load average before and after them and the time
/// they `took`, then `data_section` and, when there is one, `torch_section`.
pub(super) fn render(
    tables: &CpuTables,
    (load_before, load_after): (&str, &str),
    took: f64,
    data_section: &str,
    torch_section: Option<&str>,
) -> String {
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
         took {took:.0} s. The machine is shared: with a load above ~1 the other processes take \
         up to one of the two cores, and both paths slow down alike.\n\n"
    ));
    md.push_str("## Single convolution layers\n\n");
    write_table(&mut md, &tables.conv);
    md.push_str(
        "\n## GroupNorm + SiLU\n\n`segdiff_unet::cpu_kernels::group_norm` (fused, one custom op \
         with a fused backward) against candle-nn's `GroupNorm` followed by `silu`; the model uses \
         it for every GroupNorm (see the log below).\n\n",
    );
    write_table(&mut md, &tables.norm);
    md.push_str("\n## Whole networks\n\n");
    write_table(&mut md, &tables.model);
    md.push_str(
        "\nReference (PyTorch 2.15 + diffusers, oneDNN, 2 threads, quiet machine of the same kind, \
         from `shared/fixtures/README.md`): paper forward 2.755 s, small forward 16.4 ms.\n",
    );
    md.push_str(OPTIMISATION_LOG);
    md.push_str(data_section);
    if let Some(section) = torch_section {
        md.push_str(section);
    }
    md
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

pub(super) fn fmt_time(s: f64) -> String {
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
