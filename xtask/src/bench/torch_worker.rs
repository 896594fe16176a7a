//! The PyTorch side of the comparison: `bench/torch_bench.py` as a child process that answers one
//! JSON line per JSON command, so the xtask can hand it one run at a time between its own.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

/// What to install when the given Python cannot run the worker.
pub const PIP_HINT: &str = "pip install torch diffusers monai safetensors";

/// A running `torch_bench.py worker`.
pub struct TorchWorker {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl TorchWorker {
    /// Starts the worker with `threads` intra-op threads and returns it with its `hello` answer
    /// (library versions and thread settings).
    pub fn start(python: &Path, script: &Path, threads: usize) -> Result<(Self, Value)> {
        let mut child = Command::new(python)
            .arg(script)
            .args(["worker", "--threads", &threads.to_string()])
            .env("OMP_NUM_THREADS", threads.to_string())
            .env("MKL_NUM_THREADS", threads.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| {
                format!(
                    "starting {} {} (a Python with `{PIP_HINT}`)",
                    python.display(),
                    script.display()
                )
            })?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            bail!("the torch worker has no stdin/stdout pipes");
        };
        let mut worker = Self {
            child,
            stdin,
            stdout: BufReader::new(stdout),
        };
        let hello = worker.request(&json!({"cmd": "hello"})).with_context(|| {
            format!(
                "{} cannot run the PyTorch side; it needs `{PIP_HINT}`",
                python.display()
            )
        })?;
        Ok((worker, hello))
    }

    /// Sends one command and returns the answer; an answer with `"ok": false` is an error.
    pub fn request(&mut self, msg: &Value) -> Result<Value> {
        writeln!(self.stdin, "{msg}").context("writing to the torch worker")?;
        self.stdin.flush().context("writing to the torch worker")?;
        let mut line = String::new();
        let n = self
            .stdout
            .read_line(&mut line)
            .context("reading from the torch worker")?;
        if n == 0 {
            let status = self.child.wait().ok();
            bail!(
                "the torch worker exited ({}) while answering {msg}; see its messages above",
                status.map_or("unknown status".into(), |s| s.to_string())
            );
        }
        let answer: Value = serde_json::from_str(line.trim())
            .with_context(|| format!("the torch worker answered {line:?}, not JSON"))?;
        if answer.get("ok").and_then(Value::as_bool) != Some(true) {
            let error = answer.get("error").and_then(Value::as_str).unwrap_or("");
            bail!("the torch worker failed on {msg}: {error}");
        }
        Ok(answer)
    }

    /// The worker's process id (its CPU time is read from `/proc/<pid>/stat`).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// One timed run; returns the answer (with `seconds`).
    pub fn run(&mut self, save: Option<&Path>) -> Result<Value> {
        let msg = match save {
            Some(p) => json!({"cmd": "run", "save": p}),
            None => json!({"cmd": "run"}),
        };
        self.request(&msg)
    }
}

impl Drop for TorchWorker {
    fn drop(&mut self) {
        // A polite quit lets Python free its memory; if it does not answer, stop it.
        let quit =
            writeln!(self.stdin, "{}", json!({"cmd": "quit"})).and_then(|_| self.stdin.flush());
        let mut line = String::new();
        if quit.is_err() || self.stdout.read_line(&mut line).is_err() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// The `seconds` of a run answer.
pub fn seconds(answer: &Value) -> Result<f64> {
    answer
        .get("seconds")
        .and_then(Value::as_f64)
        .with_context(|| format!("the torch worker's answer {answer} has no seconds"))
}
