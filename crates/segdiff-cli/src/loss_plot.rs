//! The training loss curve as a PNG, drawn with plotters from `train_log.csv`.

use std::path::Path;

use anyhow::{bail, Context, Result};
use plotters::prelude::*;

static FONT: &[u8] = include_bytes!("../../../assets/fonts/DejaVuSans.ttf");

fn register_font() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // The font is compiled in; it parses, so registration cannot fail.
        let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, FONT);
    });
}

/// Reads `step,epoch,loss,...` rows and plots the loss (raw, and a moving average) against the
/// step, log-scaled, into `out`.
pub fn write_loss_curve(log_csv: &Path, out: &Path, title: &str) -> Result<()> {
    let text = std::fs::read_to_string(log_csv)
        .with_context(|| format!("reading {}", log_csv.display()))?;
    let mut points: Vec<(f64, f64)> = Vec::new();
    for (i, line) in text.lines().enumerate().skip(1) {
        let mut f = line.split(',');
        let (Some(step), Some(_), Some(loss)) = (f.next(), f.next(), f.next()) else {
            bail!(
                "{}: line {}: expected step,epoch,loss,…",
                log_csv.display(),
                i + 1
            );
        };
        let step: f64 = step
            .trim()
            .parse()
            .with_context(|| format!("{}: line {}", log_csv.display(), i + 1))?;
        let loss: f64 = loss
            .trim()
            .parse()
            .with_context(|| format!("{}: line {}", log_csv.display(), i + 1))?;
        if loss.is_finite() && loss > 0.0 {
            points.push((step, loss));
        }
    }
    if points.is_empty() {
        bail!("{}: no loss values to plot", log_csv.display());
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
    let tmp = segdiff_unet::temp_sibling(out);
    let tmp_png = tmp.with_extension("png");
    {
        let root = BitMapBackend::new(&tmp_png, (800, 450)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| anyhow::anyhow!("{e}"))?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 22))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d(0f64..x_max, (y_min * 0.9..y_max * 1.1).log_scale())
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        chart
            .configure_mesh()
            .x_desc("optimiser step")
            .y_desc("loss")
            .label_style(("sans-serif", 14))
            .draw()
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        chart
            .draw_series(LineSeries::new(
                points.iter().copied(),
                RGBColor(170, 190, 230),
            ))
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .label("per step")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], RGBColor(170, 190, 230)));
        chart
            .draw_series(LineSeries::new(smooth, BLUE.stroke_width(2)))
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .label(format!("moving mean ({window} steps)"))
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], BLUE.stroke_width(2)));
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .label_font(("sans-serif", 14))
            .draw()
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        root.present()
            .map_err(|e| anyhow::anyhow!("writing {}: {e}", out.display()))?;
    }
    std::fs::rename(&tmp_png, out).with_context(|| format!("writing {}", out.display()))?;
    Ok(())
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
        let img = image::open(&png).unwrap();
        assert_eq!((img.width(), img.height()), (800, 450));
        // Not a blank canvas: the curve and text put dark pixels on it.
        let dark = img.to_luma8().pixels().filter(|p| p.0[0] < 128).count();
        assert!(dark > 500, "only {dark} dark pixels");
        std::fs::write(&log, "step,epoch,loss\nx,0,1\n").unwrap();
        assert!(super::write_loss_curve(&log, &png, "training loss").is_err());
    }
}
