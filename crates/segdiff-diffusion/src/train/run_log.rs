//! The run's record: `train_log.csv` (one row per optimiser step, appended across resumes) and
//! `loss.png`, the loss curve drawn with plotters.

use std::io::Write;
use std::path::{Path, PathBuf};

use plotters::prelude::*;
use segdiff_io::chart::register_font;

use super::step_loop::StepLog;
use crate::{DiffusionError, Result};

/// `train_log.csv`: `step,epoch,loss,lr,grad_norm` and the method's loss terms.
pub struct LossLog {
    path: PathBuf,
    file: std::fs::File,
}

impl LossLog {
    /// Opens (appending) or creates the log, writing the header into an empty file.
    pub fn open(path: &Path, term_names: &[&str]) -> Result<Self> {
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| log_err(path, e))?;
        if file.metadata().map(|m| m.len() == 0).unwrap_or(true) {
            let mut header = String::from("step,epoch,loss,lr,grad_norm");
            for t in term_names {
                header.push(',');
                header.push_str(t);
            }
            writeln!(file, "{header}").map_err(|e| log_err(path, e))?;
        }
        Ok(Self {
            path: path.to_path_buf(),
            file,
        })
    }

    /// The log's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one step.
    pub fn append(&mut self, s: &StepLog) -> Result<()> {
        let mut row = format!(
            "{},{},{:.6},{:.6e},{:.4}",
            s.step, s.epoch, s.loss, s.lr, s.grad_norm
        );
        for t in &s.terms {
            row.push_str(&format!(",{t:.6}"));
        }
        writeln!(self.file, "{row}").map_err(|e| log_err(&self.path, e))
    }
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
/// Reads `step,epoch,loss,...` rows and plots the loss (raw, and a moving average) against the
/// step, log-scaled, into `out`.
pub fn write_loss_curve(log_csv: &Path, out: &Path, title: &str) -> Result<()> {
    let text = std::fs::read_to_string(log_csv).map_err(|e| curve_err(log_csv, e.to_string()))?;
    let mut points: Vec<(f64, f64)> = Vec::new();
    for (i, line) in text.lines().enumerate().skip(1) {
        let mut f = line.split(',');
        let (Some(step), Some(_), Some(loss)) = (f.next(), f.next(), f.next()) else {
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
    register_font();
    let (width, height) = (800u32, 450u32);
    let mut pixels = vec![0u8; (width * height * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut pixels, (width, height)).into_drawing_area();
        root.fill(&WHITE)
            .map_err(|e| curve_err(out, e.to_string()))?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 22))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d(0f64..x_max, (y_min * 0.9..y_max * 1.1).log_scale())
            .map_err(|e| curve_err(out, e.to_string()))?;
        chart
            .configure_mesh()
            .x_desc("optimiser step")
            .y_desc("loss")
            .label_style(("sans-serif", 14))
            .draw()
            .map_err(|e| curve_err(out, e.to_string()))?;
        chart
            .draw_series(LineSeries::new(
                points.iter().copied(),
                RGBColor(170, 190, 230),
            ))
            .map_err(|e| curve_err(out, e.to_string()))?
            .label("per step")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], RGBColor(170, 190, 230)));
        chart
            .draw_series(LineSeries::new(smooth, BLUE.stroke_width(2)))
            .map_err(|e| curve_err(out, e.to_string()))?
            .label(format!("moving mean ({window} steps)"))
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], BLUE.stroke_width(2)));
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .label_font(("sans-serif", 14))
            .draw()
            .map_err(|e| curve_err(out, e.to_string()))?;
        root.present().map_err(|e| curve_err(out, e.to_string()))?;
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
    }
}
