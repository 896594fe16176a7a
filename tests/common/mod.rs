//! Helpers shared by the workspace's CLI tests: run the `segdiff` binary, check it succeeded.

#![allow(dead_code)]

use std::process::{Command, Output};

/// Runs `segdiff` with `args`.
pub fn segdiff(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_segdiff"))
        .args(args)
        .output()
        .unwrap()
}

/// Panics with the command's output unless it succeeded.
pub fn ok(out: &Output) {
    assert!(
        out.status.success(),
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
