//! The run's record: `train_log.csv` (one row per optimiser step, appended across resumes) and
//! `loss.png`, the loss curve drawn with plotters.

use std::io::Write;
use std::path::{Path, PathBuf};

use plotters::prelude::*;
use segdiff_io::chart::register_font;

use super::step_loop::StepLog;
use crate::{DiffusionError, Result};

/// `train_log.csv`: `step,epoch,loss,lr,grad_norm`, the method's loss terms, then the
/// training monitor's columns (empty on steps without an evaluation).
pub struct LossLog {
    path: PathBuf,
    file: std::fs::File,
    eval_columns: usize,
}

/// The log's fixed first columns.
const BASE_HEADER: [&str; 5] = ["step", "epoch", "loss", "lr", "grad_norm"];

impl LossLog {
    /// Opens (appending) or creates the log with the columns `BASE_HEADER`, `term_names`,
    /// `eval_columns`. Rows of an existing log after `resume_step` (steps a killed run did past
    /// its last checkpoint, which the resumed run repeats) are dropped, and an existing log with
    /// other columns is rewritten to these, by column name (a run resumed with the monitor
    /// turned on gains its columns); both rewrites are atomic.
    pub fn open(
        path: &Path,
        term_names: &[&str],
        eval_columns: &[String],
        resume_step: usize,
    ) -> Result<Self> {
        let header: Vec<String> = BASE_HEADER
            .iter()
            .chain(term_names)
            .map(|s| s.to_string())
            .chain(eval_columns.iter().cloned())
            .collect();
        let existing = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(log_err(path, e)),
        };
        let rewritten = rewrite_rows(&existing, &header, resume_step);
        if rewritten != existing {
            segdiff_io::write_bytes_atomic(path, rewritten.as_bytes())
                .map_err(|e| log_err(path, e))?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| log_err(path, e))?;
        Ok(Self {
            path: path.to_path_buf(),
            file,
            eval_columns: eval_columns.len(),
        })
    }

    /// The log's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one step, with the monitor's values when it evaluated at this step.
    pub fn append(&mut self, s: &StepLog, evaluation: Option<&[f64]>) -> Result<()> {
        let mut row = format!(
            "{},{},{:.6},{:.6e},{:.4}",
            s.step, s.epoch, s.loss, s.lr, s.grad_norm
        );
        for t in &s.terms {
            row.push_str(&format!(",{t:.6}"));
        }
        for i in 0..self.eval_columns {
            row.push(',');
            if let Some(v) = evaluation.and_then(|e| e.get(i)) {
                row.push_str(&format!("{v:.6}"));
            }
        }
        // One write of the whole row: a killed process leaves whole rows, never half of one.
        row.push('\n');
        self.file
            .write_all(row.as_bytes())
            .map_err(|e| log_err(&self.path, e))
    }
}

/// `text` (a log, possibly empty) with `header` as its columns and no row after `last_step`.
/// Returns `text` unchanged when nothing needs to change.
fn rewrite_rows(text: &str, header: &[String], last_step: usize) -> String {
    // A last line without its newline was cut short (a full disk): it is no row.
    let text = &text[..text.rfind('\n').map_or(0, |i| i + 1)];
    let mut lines = text.lines();
    let Some(old_header) = lines.next() else {
        return format!("{}\n", header.join(","));
    };
    let old: Vec<&str> = old_header.split(',').collect();
    let same_columns = old == header.iter().map(String::as_str).collect::<Vec<_>>();
    let rows: Vec<&str> = lines.collect();
    let keep = |row: &&str| {
        row.split(',')
            .next()
            .and_then(|v| v.trim().parse::<usize>().ok())
            .is_none_or(|step| step <= last_step)
    };
    if same_columns && rows.iter().all(keep) {
        return text.to_string();
    }
    let source: Vec<Option<usize>> = header
        .iter()
        .map(|h| old.iter().position(|o| o == h))
        .collect();
    let mut out = format!("{}\n", header.join(","));
    for row in rows.iter().filter(|r| keep(r)) {
        let fields: Vec<&str> = row.split(',').collect();
        let mapped: Vec<&str> = source
            .iter()
            .map(|i| i.and_then(|i| fields.get(i).copied()).unwrap_or(""))
            .collect();
        out.push_str(&mapped.join(","));
        out.push('\n');
    }
    out
}

fn log_err(path: &Path, e: std::io::Error) -> DiffusionError {
    DiffusionError::ModelDir {
        path: path.to_path_buf(),
        message: format!("writing the loss log: {e}"),
    }
}

fn curve_err(path: &Path, message: String) -> DiffusionError {
    DiffusionError::ModelDir {
        path: path.to_path_buf(),
        message,
    }
}
/// The column of the training monitor's score drawn on the loss curve's second axis.
pub const SCORE_COLUMN: &str = "val_dice";

/// Reads `step,epoch,loss,...` rows and plots the loss (raw, and a moving average) against the
/// step, log-scaled, into `out`; with a [`SCORE_COLUMN`] holding values, that score is drawn
/// against a second axis (0–1) on the right.
pub fn write_loss_curve(log_csv: &Path, out: &Path, title: &str) -> Result<()> {
    let text = std::fs::read_to_string(log_csv).map_err(|e| curve_err(log_csv, e.to_string()))?;
    let score_col = text
        .lines()
        .next()
        .and_then(|h| h.split(',').position(|c| c.trim() == SCORE_COLUMN));
    let mut points: Vec<(f64, f64)> = Vec::new();
    let mut scores: Vec<(f64, f64)> = Vec::new();
    for (i, line) in text.lines().enumerate().skip(1) {
        let fields: Vec<&str> = line.split(',').collect();
        let (Some(step), Some(loss)) = (fields.first(), fields.get(2)) else {
            return Err(curve_err(
                log_csv,
                format!("line {}: expected step,epoch,loss,…", i + 1),
            ));
        };
        let number = |v: &str| {
            v.trim()
                .parse::<f64>()
                .map_err(|e| curve_err(log_csv, format!("line {}: {v:?}: {e}", i + 1)))
        };
        let (step, loss) = (number(step)?, number(loss)?);
        if loss.is_finite() && loss > 0.0 {
            points.push((step, loss));
        }
        if let Some(v) = score_col
            .and_then(|c| fields.get(c))
            .filter(|v| !v.trim().is_empty())
        {
            let v = number(v)?;
            if v.is_finite() {
                scores.push((step, v));
            }
        }
    }
    if points.is_empty() {
        return Err(curve_err(log_csv, "no loss values to plot".into()));
    }
    let window = (points.len() / 20).max(1);
    let smooth: Vec<(f64, f64)> = points
        .iter()
        .enumerate()
        .map(|(i, &(s, _))| {
            let lo = i.saturating_sub(window - 1);
            let mean = points[lo..=i].iter().map(|p| p.1).sum::<f64>() / (i - lo + 1) as f64;
            (s, mean)
        })
        .collect();
    let (x_max, y_min, y_max) = points
        .iter()
        .fold((1.0f64, f64::MAX, f64::MIN), |(x, lo, hi), &(s, l)| {
            (x.max(s), lo.min(l), hi.max(l))
        });
    let err = |e: &dyn std::fmt::Display| curve_err(out, e.to_string());
    register_font();
    let (width, height) = (800u32, 450u32);
    let mut pixels = vec![0u8; (width * height * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut pixels, (width, height)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| err(&e))?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 22))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .right_y_label_area_size(if scores.is_empty() { 0 } else { 60 })
            .build_cartesian_2d(0f64..x_max, (y_min * 0.9..y_max * 1.1).log_scale())
            .map_err(|e| err(&e))?
            .set_secondary_coord(0f64..x_max, 0f64..1f64);
        chart
            .configure_mesh()
            .x_desc("optimiser step")
            .y_desc("loss")
            .label_style(("sans-serif", 14))
            .draw()
            .map_err(|e| err(&e))?;
        chart
            .draw_series(LineSeries::new(
                points.iter().copied(),
                RGBColor(170, 190, 230),
            ))
            .map_err(|e| err(&e))?
            .label("per step")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], RGBColor(170, 190, 230)));
        chart
            .draw_series(LineSeries::new(smooth, BLUE.stroke_width(2)))
            .map_err(|e| err(&e))?
            .label(format!("moving mean ({window} steps)"))
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], BLUE.stroke_width(2)));
        if !scores.is_empty() {
            let orange = RGBColor(220, 110, 20);
            chart
                .configure_secondary_axes()
                .y_desc(SCORE_COLUMN)
                .label_style(("sans-serif", 14))
                .draw()
                .map_err(|e| err(&e))?;
            chart
                .draw_secondary_series(LineSeries::new(
                    scores.iter().copied(),
                    orange.stroke_width(2),
                ))
                .map_err(|e| err(&e))?
                .label(format!("{SCORE_COLUMN} (right axis)"))
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], orange.stroke_width(2))
                });
            chart
                .draw_secondary_series(scores.iter().map(|&p| Circle::new(p, 3, orange.filled())))
                .map_err(|e| err(&e))?;
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .label_font(("sans-serif", 14))
            .draw()
            .map_err(|e| err(&e))?;
        root.present().map_err(|e| err(&e))?;
    }
    let img = image::RgbImage::from_raw(width, height, pixels)
        .ok_or_else(|| curve_err(out, "plot buffer of the wrong size".into()))?;
    Ok(segdiff_io::write_png(
        out,
        &image::DynamicImage::ImageRgb8(img),
    )?)
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_row_cut_short_is_dropped() {
        let header: Vec<String> = super::BASE_HEADER.iter().map(|s| s.to_string()).collect();
        let whole = "step,epoch,loss,lr,grad_norm\n1,0,1,1,1\n2,0,1,1,1\n";
        assert_eq!(super::rewrite_rows(whole, &header, 2), whole);
        // "1" of a row for step 12 would otherwise pass for a row of step 1.
        let cut = format!("{whole}1");
        assert_eq!(super::rewrite_rows(&cut, &header, 10), whole);
        assert_eq!(
            super::rewrite_rows("step,ep", &header, 0),
            format!("{}\n", header.join(","))
        );
    }

    #[test]
    fn plots_a_log_and_rejects_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("train_log.csv");
        let rows: String = (1..=200)
            .map(|s| format!("{s},0,{},1e-4,0.5\n", 1.0 / (s as f64).sqrt()))
            .collect();
        std::fs::write(&log, format!("step,epoch,loss,lr,grad_norm\n{rows}")).unwrap();
        let png = dir.path().join("loss.png");
        super::write_loss_curve(&log, &png, "training loss").unwrap();
        let img = segdiff_io::read_image(&png).unwrap();
        assert_eq!((img.width(), img.height()), (800, 450));
        // Not a blank canvas: the curve and text put dark pixels on it.
        let dark = segdiff_io::grey8(&img)
            .pixels()
            .filter(|p| p.0[0] < 128)
            .count();
        assert!(dark > 500, "only {dark} dark pixels");
        std::fs::write(&log, "step,epoch,loss\nx,0,1\n").unwrap();
        assert!(super::write_loss_curve(&log, &png, "training loss").is_err());
        // With monitor values: the orange score curve appears on the same canvas.
        let rows: String = (1..=200)
            .map(|s| {
                let dice = if s % 50 == 0 {
                    format!("{}", s as f64 / 250.0)
                } else {
                    String::new()
                };
                format!("{s},0,{},1e-4,0.5,{dice}\n", 1.0 / (s as f64).sqrt())
            })
            .collect();
        std::fs::write(
            &log,
            format!("step,epoch,loss,lr,grad_norm,val_dice\n{rows}"),
        )
        .unwrap();
        super::write_loss_curve(&log, &png, "training loss").unwrap();
        let img = segdiff_io::read_image(&png).unwrap().to_rgb8();
        let orange = img
            .pixels()
            .filter(|p| p.0[0] > 200 && (90..140).contains(&p.0[1]) && p.0[2] < 60)
            .count();
        assert!(orange > 100, "only {orange} orange pixels");
    }

    #[test]
    fn resumed_log_drops_later_rows_and_gains_monitor_columns() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("train_log.csv");
        std::fs::write(
            &path,
            "step,epoch,loss,lr,grad_norm\n1,0,0.5,1e-4,0.1\n2,0,0.4,1e-4,0.1\n3,0,0.3,1e-4,0.1\n",
        )
        .unwrap();
        let cols = vec!["val_dice".to_string(), "dice_a".to_string()];
        let mut log = super::LossLog::open(&path, &[], &cols, 2).unwrap();
        let step = super::StepLog {
            step: 3,
            epoch: 0,
            loss: 0.25,
            lr: 1e-4,
            grad_norm: 0.1,
            terms: vec![],
        };
        log.append(&step, Some(&[0.5, 0.75])).unwrap();
        log.append(&super::StepLog { step: 4, ..step }, None)
            .unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(
            text,
            "step,epoch,loss,lr,grad_norm,val_dice,dice_a\n\
             1,0,0.5,1e-4,0.1,,\n2,0,0.4,1e-4,0.1,,\n\
             3,0,0.250000,1.000000e-4,0.1000,0.500000,0.750000\n\
             4,0,0.250000,1.000000e-4,0.1000,,\n"
        );
        // Opening again at step 4 with the same columns changes nothing.
        drop(log);
        super::LossLog::open(&path, &[], &cols, 4).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), text);
    }
}
