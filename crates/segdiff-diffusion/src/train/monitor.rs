//! The training monitor: every N steps a method-specific evaluation of the model as it is after
//! that step (for segmentation-guided diffusion: how faithfully images generated from fixed
//! validation masks follow them), logged as columns of `train_log.csv`, drawn on `loss.png`,
//! shown in `training.html`, with the best-scoring checkpoint kept in `checkpoints/best/` and a
//! plain-words warning when the score stops improving. The evaluation itself is the caller's
//! ([`EvaluateFn`]); this module only keeps its books, the same way for every method.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::{DiffusionError, Result};

/// Folder of the best checkpoint under `OUT/checkpoints/`.
pub const BEST_DIR: &str = "best";
/// The best checkpoint's evaluation, inside its folder.
pub const BEST_JSON: &str = "evaluation.json";
/// The monitor's page in the run folder.
pub const PAGE: &str = "training.html";

/// One evaluation of the model as it is after a step.
#[derive(Debug, Clone, PartialEq)]
pub struct Evaluation {
    /// The score that picks the best checkpoint (higher is better).
    pub score: f64,
    /// Values logged beside it, one per [`Monitor::detail_columns`].
    pub details: Vec<f64>,
}

/// Evaluates the model after a step, writing its picture (a sample sheet) to the given path.
pub type EvaluateFn<'a, M> = dyn Fn(&M, &Path) -> Result<Evaluation> + 'a;

/// What to evaluate, how often, and how to talk about it.
pub struct Monitor<'a, M> {
    /// Evaluate after every this many optimiser steps (at least 1).
    pub every: usize,
    /// Name of the score column (e.g. `val_dice`).
    pub score_name: String,
    /// Names of the detail columns (e.g. `dice_<class>`).
    pub detail_columns: Vec<String>,
    pub evaluate: &'a EvaluateFn<'a, M>,
    /// Evaluations in a row without a new best before the stall warning.
    pub patience: usize,
    /// What the stall warning advises.
    pub stall_advice: String,
    /// A line describing the evaluation, shown on the page (sampler, masks, segmenter).
    pub description: String,
}

impl<M> Monitor<'_, M> {
    /// The log columns it adds: the score, then the details.
    pub fn columns(&self) -> Vec<String> {
        std::iter::once(self.score_name.clone())
            .chain(self.detail_columns.iter().cloned())
            .collect()
    }

    /// Whether it evaluates after `step`.
    pub fn due(&self, step: usize) -> bool {
        self.every > 0 && step.is_multiple_of(self.every)
    }

    /// Where the sheet of the evaluation at `step` goes.
    pub fn sheet_path(out: &Path, step: usize) -> PathBuf {
        out.join("eval").join(format!("step-{step:07}.png"))
    }
}

/// The best evaluation so far, as `checkpoints/best/evaluation.json` records it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BestEvaluation {
    pub step: usize,
    pub score_name: String,
    pub score: f64,
    pub details: BTreeMap<String, f64>,
}

impl BestEvaluation {
    /// The record of `evaluation` at `step`.
    pub fn new<M>(monitor: &Monitor<'_, M>, step: usize, evaluation: &Evaluation) -> Self {
        Self {
            step,
            score_name: monitor.score_name.clone(),
            score: evaluation.score,
            details: monitor
                .detail_columns
                .iter()
                .cloned()
                .zip(evaluation.details.iter().copied())
                .collect(),
        }
    }

    /// The record in `out/checkpoints/best/`, if there is a readable one.
    pub fn read(out: &Path) -> Result<Option<Self>> {
        let path = best_dir(out).join(BEST_JSON);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(super::checkpoint::io(&path, e)),
        };
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| DiffusionError::ModelDir {
                path,
                message: format!("not a best-checkpoint record: {e}"),
            })
    }

    /// Writes the record into the (staged) checkpoint folder `dir`.
    pub fn write_into(&self, dir: &Path) -> Result<()> {
        let path = dir.join(BEST_JSON);
        let text = serde_json::to_string_pretty(self).map_err(|e| DiffusionError::ModelDir {
            path: path.clone(),
            message: format!("encoding the evaluation: {e}"),
        })?;
        segdiff_io::write_bytes_atomic(&path, text.as_bytes())
            .map_err(|e| super::checkpoint::io(&path, e))
    }
}

/// `out/checkpoints/best`.
pub fn best_dir(out: &Path) -> PathBuf {
    out.join("checkpoints").join(BEST_DIR)
}

/// The stall warning due after an evaluation at `step`, if the best is `patience` or more
/// evaluations old and was not warned about yet (`warned` holds the best step last warned of).
pub fn stall_warning<M>(
    monitor: &Monitor<'_, M>,
    step: usize,
    best: &BestEvaluation,
    warned: &mut Option<usize>,
) -> Option<String> {
    let since = step.saturating_sub(best.step) / monitor.every.max(1);
    if monitor.patience == 0 || since < monitor.patience || *warned == Some(best.step) {
        return None;
    }
    *warned = Some(best.step);
    Some(format!(
        "warning: {} has not improved for {since} evaluations ({} steps): the best is {:.4} at step {}. {}",
        monitor.score_name,
        step - best.step,
        best.score,
        best.step,
        monitor.stall_advice
    ))
}

/// Writes `out/training.html`: the loss/score curve, the latest sheet, the best checkpoint and
/// every evaluation logged so far (read back from `train_log.csv`). The page reloads itself
/// every minute, so it can stay open during the run.
pub fn write_page<M>(
    out: &Path,
    title: &str,
    monitor: &Monitor<'_, M>,
    step: usize,
    best: Option<&BestEvaluation>,
) -> Result<()> {
    let log = out.join("train_log.csv");
    let text = std::fs::read_to_string(&log).map_err(|e| super::checkpoint::io(&log, e))?;
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap_or("").split(',').collect();
    let columns = monitor.columns();
    let at: Vec<Option<usize>> = columns
        .iter()
        .map(|c| header.iter().position(|h| h == c))
        .collect();
    let mut rows = String::new();
    for line in lines {
        let fields: Vec<&str> = line.split(',').collect();
        let has_score = at[0]
            .and_then(|i| fields.get(i))
            .is_some_and(|v| !v.trim().is_empty());
        if !has_score {
            continue;
        }
        let row_step = fields.first().copied().unwrap_or("");
        let marked = best.is_some_and(|b| b.step.to_string() == row_step);
        let _ = write!(
            rows,
            "<tr{}><td>{}</td>",
            if marked { " class=\"best\"" } else { "" },
            html_escape(row_step)
        );
        for i in &at {
            let v = i.and_then(|i| fields.get(i)).copied().unwrap_or("");
            let shown = v
                .trim()
                .parse::<f64>()
                .map_or(v.to_string(), |x| format!("{x:.4}"));
            let _ = write!(rows, "<td>{}</td>", html_escape(&shown));
        }
        rows.push_str("</tr>\n");
    }
    let head: String = columns
        .iter()
        .map(|c| format!("<th>{}</th>", html_escape(c)))
        .collect();
    let best_line = match best {
        Some(b) => format!(
            "best {} {:.4} at step {} (<code>checkpoints/{BEST_DIR}/</code>)",
            html_escape(&b.score_name),
            b.score,
            b.step
        ),
        None => "no evaluation yet".into(),
    };
    let sheet = Monitor::<M>::sheet_path(Path::new(""), step);
    let page = format!(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><meta http-equiv=\"refresh\" content=\"60\">\
         <title>{title}</title>\n<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}\
         td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}}tr.best{{background:#ffe9c7}}\
         img{{max-width:100%}}</style></head><body>\n<h1>{title}</h1>\n<p>Step {step}; {best_line}.</p>\n\
         <p>{}</p>\n<h2>Loss and {}</h2>\n<img src=\"loss.png\" alt=\"loss and score curve\">\n\
         <h2>Latest evaluation (step {step})</h2>\n<p>mask | generated | segmentation of the generated image</p>\n\
         <img src=\"{}\" alt=\"sample sheet\">\n<h2>Evaluations</h2>\n<table><tr><th>step</th>{head}</tr>\n{rows}</table>\n\
         </body></html>\n",
        html_escape(&monitor.description),
        html_escape(&monitor.score_name),
        sheet.display(),
        title = html_escape(title),
    );
    let path = out.join(PAGE);
    segdiff_io::write_bytes_atomic(&path, page.as_bytes())
        .map_err(|e| super::checkpoint::io(&path, e))
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn monitor<'a>(evaluate: &'a EvaluateFn<'a, ()>) -> Monitor<'a, ()> {
        Monitor {
            every: 10,
            score_name: "val_dice".into(),
            detail_columns: vec!["dice_a".into()],
            evaluate,
            patience: 3,
            stall_advice: "try a lower learning rate.".into(),
            description: "test".into(),
        }
    }

    #[test]
    fn stall_warning_fires_once_per_best() {
        let f = |_: &(), _: &Path| -> Result<Evaluation> { unreachable!() };
        let m = monitor(&f);
        let best = BestEvaluation::new(
            &m,
            20,
            &Evaluation {
                score: 0.5,
                details: vec![0.5],
            },
        );
        let mut warned = None;
        assert!(stall_warning(&m, 40, &best, &mut warned).is_none());
        let w = stall_warning(&m, 50, &best, &mut warned).expect("3 evaluations without a best");
        assert!(
            w.contains("not improved for 3 evaluations (30 steps)"),
            "{w}"
        );
        assert!(w.contains("step 20"), "{w}");
        assert!(stall_warning(&m, 60, &best, &mut warned).is_none());
        let newer = BestEvaluation { step: 60, ..best };
        assert!(stall_warning(&m, 90, &newer, &mut warned).is_some());
    }

    #[test]
    fn best_record_round_trips_and_page_lists_evaluations() {
        let dir = tempfile::tempdir().unwrap();
        let f = |_: &(), _: &Path| -> Result<Evaluation> { unreachable!() };
        let m = monitor(&f);
        assert_eq!(BestEvaluation::read(dir.path()).unwrap(), None);
        let best = BestEvaluation::new(
            &m,
            10,
            &Evaluation {
                score: 0.75,
                details: vec![0.5],
            },
        );
        std::fs::create_dir_all(best_dir(dir.path())).unwrap();
        best.write_into(&best_dir(dir.path())).unwrap();
        assert_eq!(
            BestEvaluation::read(dir.path()).unwrap(),
            Some(best.clone())
        );
        std::fs::write(
            dir.path().join("train_log.csv"),
            "step,epoch,loss,lr,grad_norm,val_dice,dice_a\n9,0,1,1,1,,\n10,0,1,1,1,0.75,0.5\n20,0,1,1,1,0.6,0.4\n",
        )
        .unwrap();
        write_page(dir.path(), "run <x>", &m, 20, Some(&best)).unwrap();
        let page = std::fs::read_to_string(dir.path().join(PAGE)).unwrap();
        assert!(page.contains("run &lt;x&gt;"));
        assert!(page.contains("<tr class=\"best\"><td>10</td><td>0.7500</td><td>0.5000</td></tr>"));
        assert!(page.contains("<tr><td>20</td><td>0.6000</td><td>0.4000</td></tr>"));
        assert!(!page.contains("<td>9</td>"));
        assert!(page.contains("eval/step-0000020.png"));
    }
}
