//! A whole training run as a person sees it: progress bar, `train_log.csv`, preview pictures
//! every N steps, the training monitor's evaluations ([`Monitor`]), a line per checkpoint and
//! `loss.png`, around the shared loop.

use std::path::{Path, PathBuf};
use std::time::Instant;

use indicatif::ProgressBar;

use super::monitor::{best_dir, stall_warning, write_page, BestEvaluation, Monitor};
use super::run_log::{write_loss_curve, LossLog};
use super::step_loop::{save_checkpoint_at, train, Method, TrainData, TrainEvent};
use crate::Result;

/// A preview picture of the model as it is after a step, written to the given path.
pub type PreviewFn<'a, M> = dyn Fn(&M, &Path) -> Result<()> + 'a;

/// Where and how a run reports.
pub struct Session<'a, M> {
    /// The run's folder: `train_log.csv`, `loss.png`, `previews/`, `checkpoints/`.
    pub out: &'a Path,
    /// Title of the loss curve.
    pub loss_title: String,
    /// A preview every this many steps (0 = none).
    pub preview_every: usize,
    pub preview: Option<&'a PreviewFn<'a, M>>,
    /// The training monitor, if any.
    pub monitor: Option<Monitor<'a, M>>,
}

/// What a finished run wrote.
#[derive(Debug, Clone)]
pub struct SessionFiles {
    pub log: PathBuf,
    pub loss_curve: PathBuf,
    /// The best evaluation of the monitor (this sitting's or an earlier one's).
    pub best: Option<BestEvaluation>,
    /// Seconds this sitting spent in the monitor's evaluations, and in total.
    pub eval_seconds: f64,
    pub total_seconds: f64,
}

impl<M: Method> Session<'_, M> {
    /// Trains `method` to its total steps, reporting on `bar` (its length is the total steps).
    /// A failure to write the log or a preview stops nothing but is returned at the end, after
    /// the training error if there is one.
    pub fn run(
        &self,
        method: &mut M,
        data: &dyn TrainData<Batch = M::Batch>,
        bar: &ProgressBar,
    ) -> Result<SessionFiles> {
        let started = Instant::now();
        std::fs::create_dir_all(self.out).map_err(|e| super::checkpoint::io(self.out, e))?;
        // What a killed earlier sitting left half-written.
        segdiff_io::remove_stale_temps_tree(self.out)
            .map_err(|e| super::checkpoint::io(self.out, e))?;
        let start_step = method.core().step;
        let columns = self
            .monitor
            .as_ref()
            .map(Monitor::columns)
            .unwrap_or_default();
        let mut log = LossLog::open(
            &self.out.join("train_log.csv"),
            &method.term_names(),
            &columns,
            start_step,
        )?;
        let previews = self.out.join("previews");
        // A resumed run keeps the best of its earlier sittings; a fresh one starts over.
        let mut best = match (&self.monitor, start_step) {
            (Some(_), 1..) => BestEvaluation::read(self.out)?,
            _ => None,
        };
        let mut warned = None;
        let mut eval_seconds = 0.0;
        let (mut evaluations, mut cost_warned) = (0usize, false);
        bar.set_position(start_step as u64);
        let mut failure = None;
        let dataset_len = data.len();
        let result = train(method, data, self.out, None, &mut |event| match event {
            TrainEvent::Step { log: s, trainer } => {
                bar.set_position(s.step as u64);
                bar.set_message(format!("loss {:.4} lr {:.2e}", s.loss, s.lr));
                let mut values = None;
                if let Some(m) = self.monitor.as_ref().filter(|m| m.due(s.step)) {
                    bar.set_message(format!("evaluating {} at step {}", m.score_name, s.step));
                    let t0 = Instant::now();
                    let sheet = Monitor::<M>::sheet_path(self.out, s.step);
                    match (m.evaluate)(trainer, &sheet) {
                        Ok(e) => {
                            let improved = best.as_ref().is_none_or(|b| e.score > b.score);
                            let mut line =
                                format!("step {}: {} {:.4}", s.step, m.score_name, e.score);
                            for (name, v) in m.detail_columns.iter().zip(&e.details) {
                                line.push_str(&format!(", {name} {v:.3}"));
                            }
                            if improved {
                                let record = BestEvaluation::new(m, s.step, &e);
                                let saved = save_checkpoint_at(
                                    trainer,
                                    &best_dir(self.out),
                                    dataset_len,
                                    |dir| record.write_into(dir),
                                );
                                match saved {
                                    Ok(()) => {
                                        line.push_str(" (best so far: checkpoints/best)");
                                        best = Some(record);
                                    }
                                    Err(err) => {
                                        failure.get_or_insert(err);
                                    }
                                }
                            }
                            line.push_str(&format!(" [{:.1} s]", t0.elapsed().as_secs_f64()));
                            say(bar, line);
                            if let Some(b) = &best {
                                if let Some(w) = stall_warning(m, s.step, b, &mut warned) {
                                    say(bar, w);
                                }
                            }
                            values = Some(
                                std::iter::once(e.score)
                                    .chain(e.details)
                                    .collect::<Vec<_>>(),
                            );
                        }
                        Err(e) => {
                            failure.get_or_insert(e);
                        }
                    }
                    eval_seconds += t0.elapsed().as_secs_f64();
                    evaluations += 1;
                    let share = eval_seconds / started.elapsed().as_secs_f64().max(1e-9);
                    if evaluations >= 2 && share > MAX_EVAL_SHARE && !cost_warned {
                        cost_warned = true;
                        say(
                            bar,
                            format!(
                                "warning: the evaluations take {:.0} % of the training time; raise --eval-every (or lower --eval-count / --eval-steps) to keep it under {:.0} %",
                                100.0 * share,
                                100.0 * MAX_EVAL_SHARE
                            ),
                        );
                    }
                }
                if let Err(e) = log.append(s, values.as_deref()) {
                    failure.get_or_insert(e);
                }
                if let (Some(m), Some(_)) = (&self.monitor, &values) {
                    let refreshed =
                        write_loss_curve(log.path(), &self.out.join("loss.png"), &self.loss_title)
                            .and_then(|()| {
                                write_page(self.out, &self.loss_title, m, s.step, best.as_ref())
                            });
                    if let Err(e) = refreshed {
                        failure.get_or_insert(e);
                    }
                }
                if let Some(preview) = self.preview {
                    if self.preview_every > 0 && s.step % self.preview_every == 0 {
                        let path = previews.join(format!("step-{:07}.png", s.step));
                        match preview(trainer, &path) {
                            Ok(()) => say(bar, format!("preview {}", path.display())),
                            Err(e) => {
                                failure.get_or_insert(e);
                            }
                        }
                    }
                }
            }
            TrainEvent::Checkpoint(dir) => say(bar, format!("checkpoint {}", dir.display())),
        });
        bar.finish_and_clear();
        result?;
        if let Some(e) = failure {
            return Err(e);
        }
        let loss_curve = self.out.join("loss.png");
        write_loss_curve(log.path(), &loss_curve, &self.loss_title)?;
        Ok(SessionFiles {
            log: log.path().to_path_buf(),
            loss_curve,
            best,
            eval_seconds,
            total_seconds: started.elapsed().as_secs_f64(),
        })
    }
}

/// The share of the run's time the monitor may take before it warns.
const MAX_EVAL_SHARE: f64 = 0.10;

/// A line above the bar, or on stderr when the bar is hidden (output to a file or a batch log),
/// so checkpoints, evaluations and warnings are never lost.
fn say(bar: &ProgressBar, line: impl AsRef<str>) {
    if bar.is_hidden() {
        eprintln!("{}", line.as_ref());
    } else {
        bar.println(line);
    }
}
