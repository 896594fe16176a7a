//! Every enum-valued flag is parsed by one parser shared by every command that takes it: a bad
//! value is a command-line error (exit 2) that lists the accepted values, on every command.

mod common;

use common::segdiff;

/// Runs `args` and checks exit code 2 with a message naming `bad` and listing `accepted`.
fn rejects(args: &[&str], bad: &str, accepted: &[&str]) {
    let out = segdiff(args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{args:?}\n{err}");
    assert!(err.contains(&format!("'{bad}'")), "{args:?}: {err}");
    for a in accepted {
        assert!(err.contains(a), "{args:?}: `{a}` not listed in\n{err}");
    }
}

#[test]
fn a_bad_scheduler_exits_2_on_every_command() {
    let accepted = ["ddim", "ddpm", "dpm++", "dpm++sde", "euler-a"];
    rejects(
        &[
            "sample",
            "--model",
            "m",
            "--masks",
            "k",
            "--out",
            "o",
            "--scheduler",
            "foo",
        ],
        "foo",
        &accepted,
    );
    rejects(
        &[
            "eval",
            "--dataset",
            "d",
            "--model",
            "m",
            "--scheduler",
            "foo",
        ],
        "foo",
        &accepted,
    );
    rejects(&["demo", "--scheduler", "foo"], "foo", &accepted);
}

#[test]
fn bad_training_enums_exit_2() {
    let base = ["train", "--data", "d", "--out", "o"];
    let with = |extra: &[&'static str]| -> Vec<&'static str> {
        base.iter().copied().chain(extra.iter().copied()).collect()
    };
    rejects(
        &with(&["--mask-encoding", "twohot"]),
        "twohot",
        &["single", "onehot"],
    );
    rejects(
        &with(&["--prediction-type", "noise"]),
        "noise",
        &["epsilon", "v_prediction", "sample"],
    );
}

#[test]
fn bad_preparation_enums_exit_2() {
    let base = ["prepare", "--image", "a.nii", "--out", "o"];
    let with = |extra: &[&'static str]| -> Vec<&'static str> {
        base.iter().copied().chain(extra.iter().copied()).collect()
    };
    rejects(
        &with(&["--fit", "squash"]),
        "squash",
        &["pad", "crop", "stretch"],
    );
    rejects(
        &with(&["--axes", "axial,oblique"]),
        "oblique",
        &["axial", "coronal", "sagittal"],
    );
}

#[test]
fn bad_runtime_flags_exit_2_on_every_command() {
    for cmd in [
        &["sample", "--model", "m", "--masks", "k", "--out", "o"][..],
        &["train", "--data", "d", "--out", "o"][..],
        &["demo"][..],
    ] {
        let mut args = cmd.to_vec();
        args.extend(["--dtype", "f64"]);
        rejects(&args, "f64", &["auto", "f32", "bf16", "f16"]);
        let mut args = cmd.to_vec();
        args.extend(["--device", "tpu"]);
        rejects(&args, "tpu", &["cpu", "cuda"]);
    }
}

#[test]
fn spellings_and_case_are_accepted() {
    // Parsing succeeds (the run then fails on the missing model: exit 1, not 2).
    for s in [
        "DDIM",
        "dpmpp",
        "dpm-solver++",
        "euler_a",
        "Euler-Ancestral",
    ] {
        let out = segdiff(&[
            "sample",
            "--model",
            "/nonexistent",
            "--masks",
            "k",
            "--out",
            "o",
            "--scheduler",
            s,
        ]);
        assert_eq!(
            out.status.code(),
            Some(1),
            "{s}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
