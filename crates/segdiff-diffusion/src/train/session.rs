//! A whole training run as a person sees it: progress bar, `train_log.csv`, preview pictures
//! every N steps, a line per checkpoint and `loss.png` at the end, around the shared loop.

use std::path::{Path, PathBuf};

use indicatif::ProgressBar;

use super::run_log::{write_loss_curve, LossLog};
use super::step_loop::{train, Method, TrainData, TrainEvent};
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
}

/// What a finished run wrote.
#[derive(Debug, Clone)]
pub struct SessionFiles {
    pub log: PathBuf,
    pub loss_curve: PathBuf,
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
        std::fs::create_dir_all(self.out).map_err(|e| super::checkpoint::io(self.out, e))?;
        let mut log = LossLog::open(&self.out.join("train_log.csv"), &method.term_names())?;
        let previews = self.out.join("previews");
        bar.set_position(method.core().step as u64);
        let mut failure = None;
        let result = train(method, data, self.out, None, &mut |event| match event {
            TrainEvent::Step { log: s, trainer } => {
                bar.set_position(s.step as u64);
                bar.set_message(format!("loss {:.4} lr {:.2e}", s.loss, s.lr));
                if let Err(e) = log.append(s) {
                    failure.get_or_insert(e);
                }
                if let Some(preview) = self.preview {
                    if self.preview_every > 0 && s.step % self.preview_every == 0 {
                        let path = previews.join(format!("step-{:07}.png", s.step));
                        match preview(trainer, &path) {
                            Ok(()) => bar.println(format!("preview {}", path.display())),
                            Err(e) => {
                                failure.get_or_insert(e);
                            }
                        }
                    }
                }
            }
            TrainEvent::Checkpoint(dir) => bar.println(format!("checkpoint {}", dir.display())),
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
        })
    }
}
