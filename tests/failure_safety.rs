//! Nothing lost: the writing commands killed with SIGKILL at seeded random moments leave their
//! output absent or complete and clean up after themselves on the next run; training killed and
//! resumed ends byte-identical to an uninterrupted run; a full disk and a read-only folder give
//! a clear error naming the path, leave no partial file and keep the previous checkpoint.
//!
//! The disk-full tests use a size-limited tmpfs where this process may mount one (root), else
//! RLIMIT_FSIZE on the child (writes then fail with EFBIG); the read-only tests a read-only
//! tmpfs (root ignores permissions) or a chmod 555 folder. Each test prints its mechanism;
//! `FAILURE_SAFETY_NO_TMPFS=1` makes the disk-full tests use RLIMIT_FSIZE even as root.
//! The tests run one at a time (they time their kills against the machine's speed).

mod common;
use common::*;

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use candle_core::Device;

const STEPS: usize = 16;
/// Steps between checkpoints.
const EVERY: usize = 2;

/// One test at a time: kill moments are drawn against timings measured on an idle machine.
fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_segdiff"))
}

fn train_args(data: &Path, out: &Path, resume: bool) -> Vec<String> {
    let mut a = tiny_train_args(s(data), s(out), &STEPS.to_string());
    a.extend(["--checkpoint-every".into(), EVERY.to_string()]);
    a.extend(
        [
            "--keep-checkpoints",
            "100",
            "--preview-every",
            "4",
            "--seed",
            "7",
            "--ablation",
        ]
        .map(String::from),
    );
    if resume {
        a.push("--resume".into());
    }
    a
}

fn sample_args(model: &Path, masks: &Path, out: &Path) -> Vec<String> {
    [
        "sample",
        "--model",
        s(model),
        "--masks",
        s(masks),
        "--out",
        s(out),
        "--steps",
        "10",
        "--batch-size",
        "4",
        "--seed",
        "9",
    ]
    .map(String::from)
    .to_vec()
}

fn mni_fixture(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../segdiff-data/tests/fixtures/mni_small")
        .join(p)
}

fn prepare_args(out: &Path) -> Vec<String> {
    let maps = format!(
        "{},{}",
        mni_fixture("mni_gm_sub3.nii.gz").display(),
        mni_fixture("mni_wm_sub3.nii.gz").display()
    );
    [
        "prepare",
        "--image",
        s(&mni_fixture("mni_t1_sub3.nii.gz")),
        "--tissue-maps",
        &maps,
        "--modality",
        "mri",
        "--axes",
        "axial,coronal,sagittal",
        "--size",
        "32",
        "--min-pixels",
        "16",
        "--out",
        s(out),
    ]
    .map(String::from)
    .to_vec()
}

fn run(args: &[String]) -> (Output, f64) {
    let t0 = Instant::now();
    let o = bin().args(args).output().unwrap();
    (o, t0.elapsed().as_secs_f64())
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The data and the uninterrupted training run every test compares with (built once, in
/// `target/tmp/failure_safety-<pid>`; those of earlier test processes are removed).
struct Fixture {
    data: PathBuf,
    reference: PathBuf,
    /// Seconds from one checkpoint to the next in the uninterrupted run.
    checkpoint_interval: f64,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
        for e in std::fs::read_dir(tmp).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(pid) = name.strip_prefix("failure_safety-") {
                if !Path::new("/proc").join(pid).exists() {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
        let dir = tmp.join(format!("failure_safety-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let data = dir.join("data");
        write_squares_dataset(&data, &[("train", 8), ("val", 2), ("test", 12)], 2024);
        let reference = dir.join("reference");
        let t0 = Instant::now();
        let child = bin()
            .args(train_args(&data, &reference, false))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        while latest_checkpoint(&reference) == 0 {
            std::thread::sleep(Duration::from_millis(5));
        }
        let first = t0.elapsed().as_secs_f64();
        ok(&child.wait_with_output().unwrap());
        let total = t0.elapsed().as_secs_f64();
        let checkpoint_interval = (total - first) / (STEPS / EVERY - 1) as f64;
        println!(
            "uninterrupted training: {total:.2} s, the first checkpoint after {first:.2} s, then one every {checkpoint_interval:.2} s"
        );
        Fixture {
            data,
            reference,
            checkpoint_interval,
        }
    })
}

/// The step of the newest whole checkpoint in `out` (0: none).
fn latest_checkpoint(out: &Path) -> usize {
    std::fs::read_dir(out.join("checkpoints"))
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().join("training_state.json").is_file())
        .filter_map(|e| {
            e.file_name()
                .to_string_lossy()
                .strip_prefix("step-")?
                .parse()
                .ok()
        })
        .max()
        .unwrap_or(0)
}

/// Every entry below `dir` (links not followed), hidden ones included.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut all = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return all;
    };
    for e in entries.map(Result::unwrap) {
        all.push(e.path());
        if e.file_type().unwrap().is_dir() {
            all.extend(walk(&e.path()));
        }
    }
    all.sort();
    all
}

/// A temporary name of segdiff's: `.<name>.<tag>-<pid>` or `.segdiff-nifti-<pid>.nii[.gz]`.
fn is_temp(path: &Path) -> bool {
    let name = path.file_name().unwrap().to_string_lossy();
    name.starts_with(".segdiff-nifti-")
        || (name.starts_with('.')
            && name
                .rsplit_once('-')
                .is_some_and(|(_, pid)| !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit())))
}

fn temps(dir: &Path) -> Vec<PathBuf> {
    walk(dir).into_iter().filter(|p| is_temp(p)).collect()
}

/// Visible files below `dir`, relative to it (nothing inside a hidden folder).
fn visible_files(dir: &Path) -> Vec<PathBuf> {
    walk(dir)
        .into_iter()
        .filter(|p| p.is_file())
        .map(|p| p.strip_prefix(dir).unwrap().to_path_buf())
        .filter(|r| {
            !r.components()
                .any(|c| c.as_os_str().to_string_lossy().starts_with('.'))
        })
        .collect()
}

/// Panics unless every visible file below `dir` is complete: JSON, safetensors, PNG and CSV
/// files parse (CSV: whole rows, as many fields as the header), and every checkpoint folder
/// holds its state. Returns how many files were checked.
fn assert_complete(dir: &Path) -> usize {
    let files = visible_files(dir);
    for rel in &files {
        let p = dir.join(rel);
        let what = p.display();
        match p.extension().and_then(|e| e.to_str()) {
            Some("json") => {
                serde_json::from_slice::<serde_json::Value>(&std::fs::read(&p).unwrap())
                    .unwrap_or_else(|e| panic!("{what}: {e}"));
            }
            Some("safetensors") => {
                candle_core::safetensors::load(&p, &Device::Cpu)
                    .unwrap_or_else(|e| panic!("{what}: {e}"));
            }
            Some("png") => {
                image::open(&p).unwrap_or_else(|e| panic!("{what}: {e}"));
            }
            Some("csv") => {
                let text = std::fs::read_to_string(&p).unwrap();
                assert!(
                    text.is_empty() || text.ends_with('\n'),
                    "{what}: a partial row"
                );
                let fields = text.lines().next().map_or(0, |h| h.split(',').count());
                for l in text.lines() {
                    assert_eq!(l.split(',').count(), fields, "{what}: {l:?}");
                }
            }
            _ => {}
        }
    }
    if let Ok(entries) = std::fs::read_dir(dir.join("checkpoints")) {
        for e in entries.map(Result::unwrap) {
            let name = e.file_name().to_string_lossy().into_owned();
            if !name.starts_with('.') {
                for f in ["training_state.json", "training_state.safetensors"] {
                    assert!(e.path().join(f).is_file(), "{name} lacks {f}");
                }
            }
        }
    }
    files.len()
}

/// Panics unless the visible files below `a` and `b` are the same, byte for byte.
fn assert_same_files(a: &Path, b: &Path) {
    let (fa, fb) = (visible_files(a), visible_files(b));
    assert_eq!(
        fa,
        fb,
        "different files in {} and {}",
        a.display(),
        b.display()
    );
    for rel in &fa {
        assert!(
            std::fs::read(a.join(rel)).unwrap() == std::fs::read(b.join(rel)).unwrap(),
            "{} differs",
            rel.display()
        );
    }
}

/// Space a folder's files take on a tmpfs (whole pages).
fn pages(dir: &Path) -> u64 {
    walk(dir)
        .iter()
        .filter(|p| p.is_file())
        .map(|p| std::fs::metadata(p).unwrap().len().div_ceil(4096) * 4096)
        .sum()
}

/// Spawns `args`, waits `delay` (or until `ready` holds, then `delay`), and kills the child
/// with SIGKILL. Returns the child's pid and whether it was still running when killed.
fn kill_after(args: &[String], ready: &dyn Fn() -> bool, delay: Duration) -> (u32, bool) {
    let mut child = bin()
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    while !ready() {
        if child.try_wait().unwrap().is_some() {
            return (pid, false);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(delay);
    let running = child.try_wait().unwrap().is_none();
    child.kill().unwrap(); // SIGKILL on Unix
    child.wait().unwrap();
    (pid, running)
}

/// Temporaries a killed process left: their names carry its pid.
fn of_pid(temps: &[PathBuf], pid: u32) -> usize {
    let tail = format!("-{pid}");
    temps
        .iter()
        .filter(|p| {
            let n = p.file_name().unwrap().to_string_lossy();
            n.ends_with(&tail) || n.contains(&format!("-{pid}.nii"))
        })
        .count()
}

/// A pid no process has (above the kernel's largest, 2^22).
const DEAD_PID: u32 = 4_194_304 + 99;

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// A tmpfs mounted on a folder, unmounted when dropped (also when an assertion fails).
struct Tmpfs(PathBuf);

impl Tmpfs {
    /// Mounts a tmpfs with `options` on `dir`; `None` where this process may not mount.
    fn mount(dir: &Path, options: &str) -> Option<Tmpfs> {
        if !is_root() {
            return None;
        }
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", options, "tmpfs", s(dir)])
            .stderr(Stdio::null())
            .status()
            .ok()?;
        status.success().then(|| Tmpfs(dir.to_path_buf()))
    }

    fn remount(&self, options: &str) {
        let status = Command::new("mount")
            .args(["-o", &format!("remount,{options}"), s(&self.0)])
            .status()
            .unwrap();
        assert!(status.success(), "remounting {}", self.0.display());
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let done = Command::new("umount").arg(&self.0).status();
        if !done.is_ok_and(|s| s.success()) {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
}

/// How a test makes the disk full.
enum DiskFull {
    /// A tmpfs of the given size, mounted on the test's folder.
    Tmpfs(Tmpfs),
    /// RLIMIT_FSIZE of this many bytes on the child, SIGXFSZ ignored: writes past it fail
    /// with EFBIG.
    FileSizeLimit(u64),
}

impl DiskFull {
    /// A tmpfs of `tmpfs_bytes` on `dir` where one can be mounted (unless
    /// `FAILURE_SAFETY_NO_TMPFS` is set, to exercise the other way), else a file size limit of
    /// `fsize_bytes`.
    fn new(dir: &Path, tmpfs_bytes: u64, fsize_bytes: u64) -> DiskFull {
        std::fs::create_dir_all(dir).unwrap();
        let tmpfs = std::env::var_os("FAILURE_SAFETY_NO_TMPFS").is_none();
        match tmpfs
            .then(|| Tmpfs::mount(dir, &format!("size={}k", tmpfs_bytes.div_ceil(1024))))
            .flatten()
        {
            Some(m) => {
                println!(
                    "disk full: a tmpfs of {} KiB on {}",
                    tmpfs_bytes.div_ceil(1024),
                    dir.display()
                );
                DiskFull::Tmpfs(m)
            }
            None => {
                println!("disk full: no tmpfs (not root, mount refused or FAILURE_SAFETY_NO_TMPFS set); RLIMIT_FSIZE {fsize_bytes} bytes on the child");
                DiskFull::FileSizeLimit(fsize_bytes)
            }
        }
    }

    fn run(&self, args: &[String]) -> Output {
        let mut cmd = bin();
        cmd.args(args);
        if let DiskFull::FileSizeLimit(bytes) = *self {
            // SAFETY: only async-signal-safe calls (setrlimit, signal) between fork and exec.
            unsafe {
                cmd.pre_exec(move || {
                    let lim = libc::rlimit {
                        rlim_cur: bytes as libc::rlim_t,
                        rlim_max: bytes as libc::rlim_t,
                    };
                    if libc::setrlimit(libc::RLIMIT_FSIZE, &lim) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
                    Ok(())
                });
            }
        }
        cmd.output().unwrap()
    }

    /// Panics unless `o` failed with exit code 1, naming a path under `dir` and the cause.
    fn assert_failed(&self, o: &Output, dir: &Path) {
        let err = stderr(o);
        assert_eq!(o.status.code(), Some(1), "stderr:\n{err}");
        assert!(
            err.contains(s(dir)),
            "no path under {} in:\n{err}",
            dir.display()
        );
        let cause = match self {
            DiskFull::Tmpfs(_) => "No space left on device",
            DiskFull::FileSizeLimit(_) => "File too large",
        };
        assert!(err.contains(cause), "no {cause:?} in:\n{err}");
    }
}

/// A folder nothing can be written to: a read-only tmpfs as root, else chmod 555.
enum ReadOnly {
    /// Unmounted when dropped.
    #[allow(dead_code)]
    Mount(Tmpfs),
    Chmod(PathBuf),
}

impl ReadOnly {
    fn new(dir: &Path) -> ReadOnly {
        std::fs::create_dir_all(dir).unwrap();
        if is_root() {
            let m = Tmpfs::mount(dir, "ro,size=1m")
                .expect("as root the read-only test needs `mount -t tmpfs -o ro` to work");
            println!("read-only: a read-only tmpfs on {}", dir.display());
            return ReadOnly::Mount(m);
        }
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o555)).unwrap();
        assert!(
            std::fs::write(dir.join("probe"), b"").is_err(),
            "chmod 555 did not make {} read-only",
            dir.display()
        );
        println!("read-only: chmod 555 on {}", dir.display());
        ReadOnly::Chmod(dir.to_path_buf())
    }
}

impl Drop for ReadOnly {
    fn drop(&mut self) {
        if let ReadOnly::Chmod(dir) = self {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755));
        }
    }
}

/// Training killed with SIGKILL at three seeded random moments (each a random time after a
/// checkpoint exists) and resumed each time ends with the uninterrupted run's files, byte for
/// byte: weights, EMA and optimiser state (the checkpoints), exported model, loss log, previews.
/// After each kill every visible file is complete; the next run removes the killed run's
/// temporaries (and a planted stale file and folder).
#[test]
fn train_killed_and_resumed_ends_identical() {
    let _s = serial();
    let f = fixture();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("model");
    let mut rng = Lcg::new(0x5eed_0001);
    // Each sitting is killed a random time within ¾ of a checkpoint interval after it wrote its
    // first checkpoint, so three sittings cannot reach the end (even twice as fast as measured).
    let window_ms = ((f.checkpoint_interval * 750.0) as u64).max(20);
    let (mut kills, mut left_behind) = (0, 0);
    for sitting in 0..3 {
        let delay = Duration::from_millis(rng.next(window_ms));
        let args = train_args(&f.data, &out, sitting > 0);
        let before = latest_checkpoint(&out);
        let (pid, running) = kill_after(&args, &|| latest_checkpoint(&out) > before, delay);
        assert!(
            running,
            "sitting {sitting} finished before its kill ({delay:?})"
        );
        kills += 1;
        let now = temps(&out);
        left_behind += of_pid(&now, pid);
        let checked = assert_complete(&out);
        println!(
            "kill {kills}, {delay:?} after checkpoint {}: newest checkpoint {}, {checked} visible files complete, {} temporaries of pid {pid} left",
            before + EVERY,
            latest_checkpoint(&out),
            of_pid(&now, pid)
        );
    }
    // Stale leftovers of a dead run, planted where a killed run leaves them.
    let planted = [
        out.join(format!(".train_log.csv.tmp-{DEAD_PID}")),
        out.join(format!("checkpoints/.step-0000099.tmp-{DEAD_PID}")),
    ];
    std::fs::write(&planted[0], b"half").unwrap();
    std::fs::create_dir_all(planted[1].join("unet")).unwrap();
    let (o, _) = run(&train_args(&f.data, &out, true));
    ok(&o);
    assert!(
        temps(&out).is_empty(),
        "temporaries left: {:?}",
        temps(&out)
    );
    assert_complete(&out);
    assert_same_files(&f.reference, &out);
    println!(
        "{kills} kills ({left_behind} temporaries left by them, all removed); final files identical to the uninterrupted run"
    );
}

/// `prepare` killed at seeded random moments leaves no dataset or a whole one that
/// `segdiff data check` accepts: first with no dataset there, then over a finished one (which
/// must survive the kill whole, the swap being atomic); the rerun writes the uninterrupted run's
/// files and leaves no temporaries beside the output.
#[test]
fn prepare_killed_leaves_no_or_a_whole_dataset() {
    let _s = serial();
    let tmp = tempfile::tempdir().unwrap();
    let parent = tmp.path().join("work");
    let out = parent.join("ds");
    // Made at the same --out (dataset.json records the command line), then moved aside.
    let (o, seconds) = run(&prepare_args(&out));
    ok(&o);
    let reference = tmp.path().join("reference");
    std::fs::rename(&out, &reference).unwrap();
    let mut rng = Lcg::new(0x5eed_0002);
    let window_ms = ((seconds * 1000.0) as u64).max(20);
    let (mut absent, mut whole, mut left_behind) = (0, 0, 0);
    for k in 0..6 {
        if k == 2 {
            ok(&run(&prepare_args(&out)).0);
        }
        let delay = Duration::from_millis(rng.next(window_ms));
        let (pid, _) = kill_after(&prepare_args(&out), &|| true, delay);
        left_behind += of_pid(&temps(&parent), pid);
        if out.exists() {
            assert_same_files(&reference, &out);
            let check = bin()
                .args(["data", "check", "--data", s(&out)])
                .output()
                .unwrap();
            ok(&check);
            whole += 1;
        } else {
            absent += 1;
        }
    }
    ok(&run(&prepare_args(&out)).0);
    assert!(
        temps(&parent).is_empty(),
        "temporaries left: {:?}",
        temps(&parent)
    );
    assert_same_files(&reference, &out);
    println!(
        "prepare ({seconds:.2} s) killed 6 times: {absent} × no dataset, {whole} × the whole dataset, {left_behind} temporaries left and removed by the rerun"
    );
}

/// `sample` killed at seeded random moments while it writes its files (a random time after
/// its output folder appears): every file present is whole, no visible partial file; the rerun
/// completes with the uninterrupted run's files and leaves no temporaries.
#[test]
fn sample_killed_leaves_only_whole_files() {
    let _s = serial();
    let f = fixture();
    let tmp = tempfile::tempdir().unwrap();
    let masks = f.data.join("mask/all/test");
    let reference = tmp.path().join("reference");
    let (o, seconds) = run(&sample_args(&f.reference, &masks, &reference));
    ok(&o);
    let mut rng = Lcg::new(0x5eed_0003);
    let mut left_behind = 0;
    for k in 0..4 {
        let out = tmp.path().join(format!("samples-{k}"));
        let delay = Duration::from_micros(rng.next(20_000));
        let args = sample_args(&f.reference, &masks, &out);
        let (pid, running) = kill_after(&args, &|| out.exists(), delay);
        let pid_temps = of_pid(&temps(&out), pid);
        left_behind += pid_temps;
        let n = if out.exists() {
            assert_complete(&out)
        } else {
            0
        };
        println!(
            "sample kill {k}, {delay:?} after its folder appeared{}: {n} whole files, {pid_temps} temporaries",
            if running { "" } else { " (it had finished)" }
        );
        ok(&run(&args).0);
        assert!(
            temps(&out).is_empty(),
            "temporaries left: {:?}",
            temps(&out)
        );
        assert_same_files(&reference, &out);
    }
    println!("sample ({seconds:.2} s) killed 4 times; {left_behind} temporaries left and removed by the reruns");
}

/// `sample-volume` (NIfTI output), `segmenter train` and `eval --quick` killed at seeded random
/// moments: the output is absent or whole (the volume reads back; the segmenter's and the
/// report's files parse), and the rerun completes with no temporaries left.
#[test]
fn sample_volume_segmenter_train_and_eval_killed_leave_whole_outputs() {
    let _s = serial();
    let f = fixture();
    let tmp = tempfile::tempdir().unwrap();
    let labels = tmp.path().join("labels.nii.gz");
    let (_, lab) = segdiff_data::synthetic::phantom([12, 12, 6], [1.0, 1.0, 1.0]);
    let vol = segdiff_data::Volume {
        data: lab.data.mapv(i16::from),
        affine: lab.affine,
    };
    segdiff_data::synthetic::write_nifti_i16(&labels, &vol).unwrap();
    let volume_args = |out: &Path| -> Vec<String> {
        [
            "sample-volume",
            "--model",
            s(&f.reference),
            "--labels",
            s(&labels),
            "--out",
            s(out),
            "--independent",
            "--steps",
            "3",
            "--seed",
            "5",
        ]
        .map(String::from)
        .to_vec()
    };
    let segmenter_args = |out: &Path| -> Vec<String> {
        [
            "segmenter",
            "train",
            "--data",
            s(&f.data),
            "--out",
            s(out),
            "--epochs",
            "2",
            "--channels",
            "8,16,32",
            "--strides",
            "2,2",
            "--seed",
            "1",
        ]
        .map(String::from)
        .to_vec()
    };
    let segmenter_reference = tmp.path().join("segmenter-train-reference/seg");
    let eval_args = |out: &Path| -> Vec<String> {
        [
            "eval",
            "--dataset",
            s(&f.data),
            "--model",
            s(&f.reference),
            "--segmenter",
            s(&segmenter_reference),
            "--quick",
            "--scheduler",
            "ddim",
            "--steps",
            "3",
            "--seed",
            "2",
            "--out",
            s(out),
        ]
        .map(String::from)
        .to_vec()
    };
    let volume_ok = |dir: &Path| {
        for p in walk(dir).iter().filter(|p| !is_temp(p) && p.is_file()) {
            let name = p.file_name().unwrap().to_string_lossy();
            if name.ends_with(".nii.gz") {
                segdiff_data::read_nifti(p, 0).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            }
        }
        assert_complete(dir)
    };
    type Args<'a> = &'a dyn Fn(&Path) -> Vec<String>;
    type Check<'a> = &'a dyn Fn(&Path) -> usize;
    let cases: [(&str, Args, Check, &str, u64); 3] = [
        (
            "sample-volume",
            &volume_args,
            &volume_ok,
            "gen/volume.nii.gz",
            0x5eed_0004,
        ),
        (
            "segmenter train",
            &segmenter_args,
            &assert_complete,
            "seg",
            0x5eed_0005,
        ),
        // after the segmenter case: evaluates with its reference segmenter
        ("eval", &eval_args, &assert_complete, "ev", 0x5eed_0006),
    ];
    for (what, args, check, target, seed) in cases {
        let reference = tmp
            .path()
            .join(format!("{}-reference", what.replace(' ', "-")));
        let work = tmp.path().join(what.replace(' ', "-"));
        let (o, seconds) = run(&args(&reference.join(target)));
        ok(&o);
        let mut rng = Lcg::new(seed);
        let ms = ((seconds * 1000.0) as u64).max(20);
        let out = work.join(target);
        let mut left_behind = 0;
        for _ in 0..3 {
            let delay = Duration::from_millis(rng.next(ms + ms / 20));
            let (pid, _) = kill_after(&args(&out), &|| true, delay);
            left_behind += of_pid(&temps(&work), pid);
            if work.exists() {
                check(&work);
            }
        }
        ok(&run(&args(&out)).0);
        assert!(
            temps(&work).is_empty(),
            "{what}: temporaries left: {:?}",
            temps(&work)
        );
        let n = check(&work);
        assert_eq!(visible_files(&work), visible_files(&reference), "{what}");
        println!("{what} ({seconds:.2} s) killed 3 times, {left_behind} temporaries left and removed by the rerun; {n} whole files after it");
    }
}

/// Training onto a full disk stops with exit 1 naming the path and the cause; the previous
/// checkpoint is intact (identical to the uninterrupted run's) and no partial file or temporary
/// is left; with room again, `--resume` ends with the uninterrupted run's files.
#[test]
fn a_full_disk_stops_train_and_keeps_the_last_checkpoint() {
    let _s = serial();
    let f = fixture();
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("small");
    let out = root.join("model");
    let step2 = f.reference.join("checkpoints/step-0000002");
    let ckpt = pages(&step2);
    let state = std::fs::metadata(step2.join("training_state.safetensors"))
        .unwrap()
        .len();
    // Room for the first checkpoint and the log, not for the second checkpoint; or, per file,
    // less than a checkpoint's state.
    let disk = DiskFull::new(&root, ckpt + ckpt / 2 + 64 * 1024, state / 2);
    let resume = match &disk {
        DiskFull::Tmpfs(_) => false,
        DiskFull::FileSizeLimit(_) => {
            // Every checkpoint fails under the limit, so the run starts from step 2's.
            copy_dir(&step2, &out.join("checkpoints/step-0000002"));
            std::fs::copy(f.reference.join("train_log.csv"), out.join("train_log.csv")).unwrap();
            true
        }
    };
    let o = disk.run(&train_args(&f.data, &out, resume));
    disk.assert_failed(&o, &root);
    println!(
        "train on a full disk: {}",
        stderr(&o).lines().last().unwrap_or("")
    );
    assert!(
        temps(&root).is_empty(),
        "temporaries left: {:?}",
        temps(&root)
    );
    assert_complete(&out);
    let ckpts: Vec<String> = std::fs::read_dir(out.join("checkpoints"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(ckpts, ["step-0000002"]);
    assert_same_files(&step2, &out.join("checkpoints/step-0000002"));
    match &disk {
        DiskFull::Tmpfs(m) => {
            m.remount("size=256m");
            ok(&run(&train_args(&f.data, &out, true)).0);
        }
        DiskFull::FileSizeLimit(_) => ok(&run(&train_args(&f.data, &out, true)).0),
    }
    assert_same_files(&f.reference, &out);
}

/// `prepare` onto a full disk: exit 1 naming the path and the cause, no dataset, no temporary.
/// (A phantom image and label volume: `--tissue-maps` writes an intermediate label volume to
/// the system's temporary folder, which a per-file size limit would hit first.)
#[test]
fn a_full_disk_stops_prepare_with_nothing_left() {
    let _s = serial();
    let tmp = tempfile::tempdir().unwrap();
    let (img, lab) = segdiff_data::synthetic::phantom([24, 24, 12], [1.0, 1.0, 1.0]);
    let (image, labels) = (
        tmp.path().join("image.nii.gz"),
        tmp.path().join("labels.nii.gz"),
    );
    segdiff_data::synthetic::write_nifti_f32(&image, &img).unwrap();
    segdiff_data::synthetic::write_nifti_u8(&labels, &lab).unwrap();
    let args = |out: &Path| -> Vec<String> {
        [
            "prepare",
            "--image",
            s(&image),
            "--label",
            s(&labels),
            "--num-classes",
            "4",
            "--modality",
            "mri",
            "--axes",
            "axial,coronal,sagittal",
            "--size",
            "32",
            "--out",
            s(out),
        ]
        .map(String::from)
        .to_vec()
    };
    let reference = tmp.path().join("reference");
    ok(&run(&args(&reference)).0);
    let root = tmp.path().join("small");
    let disk = DiskFull::new(&root, pages(&reference) / 2, 256);
    let out = root.join("ds");
    let o = disk.run(&args(&out));
    disk.assert_failed(&o, &root);
    println!(
        "prepare on a full disk ({} files in the whole dataset): {}",
        visible_files(&reference).len(),
        stderr(&o).lines().last().unwrap_or("")
    );
    assert!(walk(&root).is_empty(), "left behind: {:?}", walk(&root));
}

/// `sample` onto a full disk: exit 1 naming the path and the cause; the files written are
/// whole, no temporary is left.
#[test]
fn a_full_disk_stops_sample_with_only_whole_files() {
    let _s = serial();
    let f = fixture();
    let tmp = tempfile::tempdir().unwrap();
    let masks = f.data.join("mask/all/test");
    let reference = tmp.path().join("reference");
    ok(&run(&sample_args(&f.reference, &masks, &reference)).0);
    let root = tmp.path().join("small");
    let disk = DiskFull::new(&root, pages(&reference) / 2, 64);
    let out = root.join("samples");
    let o = disk.run(&sample_args(&f.reference, &masks, &out));
    disk.assert_failed(&o, &root);
    println!(
        "sample on a full disk: {}",
        stderr(&o).lines().last().unwrap_or("")
    );
    assert!(
        temps(&root).is_empty(),
        "temporaries left: {:?}",
        temps(&root)
    );
    let n = assert_complete(&out);
    assert!(n < visible_files(&reference).len());
}

/// `prepare`, `train` and `sample` into a read-only folder: exit 1 naming the path, nothing
/// written.
#[test]
fn a_read_only_folder_is_a_clear_error() {
    let _s = serial();
    let f = fixture();
    let tmp = tempfile::tempdir().unwrap();
    let ro = tmp.path().join("ro");
    let _guard = ReadOnly::new(&ro);
    let masks = f.data.join("mask/all/test");
    for (what, args) in [
        ("prepare", prepare_args(&ro.join("ds"))),
        ("train", train_args(&f.data, &ro.join("model"), false)),
        (
            "sample",
            sample_args(&f.reference, &masks, &ro.join("samples")),
        ),
    ] {
        let (o, _) = run(&args);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(1), "{what}: {err}");
        assert!(
            err.contains(s(&ro)),
            "{what} does not name {}: {err}",
            ro.display()
        );
        assert!(
            err.contains("Read-only file system") || err.contains("Permission denied"),
            "{what} does not say why: {err}"
        );
        assert!(walk(&ro).is_empty(), "{what} wrote {:?}", walk(&ro));
        println!(
            "{what} into a read-only folder: {}",
            err.lines().last().unwrap_or("")
        );
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().map(Result::unwrap) {
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}
