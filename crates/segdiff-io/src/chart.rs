//! Charts a person looks at, drawn with plotters into an RGB image: the font every segdiff plot
//! uses ([`register_font`]) and a line chart with highlighted points ([`line_chart`]).

use image::RgbImage;
use plotters::coord::ranged1d::ValueFormatter;
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;

static FONT: &[u8] = include_bytes!("../../../assets/fonts/DejaVuSans.ttf");

/// Registers the bundled DejaVu Sans as plotters' `sans-serif` (once per process): the default
/// build has no system font lookup, so every plot draws its text with this font.
pub fn register_font() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // The font is compiled in; it parses, so registration cannot fail.
        let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, FONT);
    });
}

/// Drawing a chart failed (plotters' message).
#[derive(Debug, thiserror::Error)]
#[error("drawing the chart: {0}")]
pub struct ChartError(pub String);

/// One line of a [`LineChart`]: points in drawing order; `highlighted[i]` rings point `i`.
#[derive(Clone, Debug, Default)]
pub struct Series {
    pub label: String,
    pub points: Vec<(f64, f64)>,
    pub highlighted: Vec<bool>,
}

/// A line chart: one coloured line with dots per series; non-finite points are skipped.
#[derive(Clone, Debug, Default)]
pub struct LineChart {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    /// A logarithmic x axis (x values must then be positive; others are skipped).
    pub log_x: bool,
    /// Legend entry of the ring drawn around highlighted points (no entry when `None`).
    pub highlight_label: Option<String>,
    pub series: Vec<Series>,
}

/// Series colours: distinguishable, and readable on white.
const COLORS: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
];

/// Draws `chart` on a `width`×`height` white canvas.
pub fn line_chart(chart: &LineChart, width: u32, height: u32) -> Result<RgbImage, ChartError> {
    let usable = |&(x, y): &(f64, f64)| x.is_finite() && y.is_finite() && (!chart.log_x || x > 0.0);
    let all: Vec<(f64, f64)> = chart
        .series
        .iter()
        .flat_map(|s| s.points.iter().copied())
        .filter(usable)
        .collect();
    let (mut x0, mut x1, mut y0, mut y1) = all.iter().fold(
        (f64::MAX, f64::MIN, f64::MAX, f64::MIN),
        |(a, b, c, d), &(x, y)| (a.min(x), b.max(x), c.min(y), d.max(y)),
    );
    if all.is_empty() {
        (x0, x1, y0, y1) = (1.0, 10.0, 0.0, 1.0);
    }
    let y_pad = ((y1 - y0) * 0.1).max(1e-3);
    // Room below the data for the legend (lower right).
    let legend_rows = chart.series.len() + usize::from(chart.highlight_label.is_some());
    (y0, y1) = (y0 - y_pad * (1.0 + 1.2 * legend_rows as f64), y1 + y_pad);
    let err = |e: &dyn std::fmt::Display| ChartError(e.to_string());
    register_font();
    let mut pixels = vec![0u8; (width * height * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut pixels, (width, height)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| err(&e))?;
        let mut builder = ChartBuilder::on(&root);
        builder
            .caption(&chart.title, ("sans-serif", 22))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60);
        // The two axis kinds are different types in plotters: draw through one generic body.
        if chart.log_x {
            // plotters labels only powers of ten on a log axis: label the data's x values.
            let mut ticks: Vec<f64> = all.iter().map(|p| p.0).collect();
            ticks.sort_by(f64::total_cmp);
            ticks.dedup();
            let stride = ticks.len().div_ceil(12).max(1);
            let ticks: Vec<f64> = ticks.into_iter().step_by(stride).collect();
            let ctx = builder
                .build_cartesian_2d(
                    (x0 / 1.25..x1 * 1.25).log_scale().with_key_points(ticks),
                    y0..y1,
                )
                .map_err(|e| err(&e))?;
            draw_body(ctx, chart, &usable).map_err(|e| err(&e))?;
        } else {
            let x_pad = ((x1 - x0) * 0.05).max(1e-3);
            let ctx = builder
                .build_cartesian_2d(x0 - x_pad..x1 + x_pad, y0..y1)
                .map_err(|e| err(&e))?;
            draw_body(ctx, chart, &usable).map_err(|e| err(&e))?;
        }
        root.present().map_err(|e| err(&e))?;
    }
    RgbImage::from_raw(width, height, pixels)
        .ok_or_else(|| ChartError("plot buffer of the wrong size".into()))
}

fn draw_body<'a, X>(
    mut ctx: ChartContext<'a, BitMapBackend<'a>, Cartesian2d<X, RangedCoordf64>>,
    chart: &LineChart,
    usable: &dyn Fn(&(f64, f64)) -> bool,
) -> Result<(), String>
where
    X: Ranged<ValueType = f64> + ValueFormatter<f64>,
{
    ctx.configure_mesh()
        .x_desc(chart.x_label.as_str())
        .y_desc(chart.y_label.as_str())
        .x_label_formatter(&|x: &f64| {
            if x.fract() == 0.0 && x.abs() < 1e15 {
                format!("{x:.0}")
            } else {
                format!("{x:.3}")
            }
        })
        .label_style(("sans-serif", 14))
        .draw()
        .map_err(|e| e.to_string())?;
    for (i, s) in chart.series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let points: Vec<(f64, f64)> = s.points.iter().copied().filter(usable).collect();
        ctx.draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))
            .map_err(|e| e.to_string())?
            .label(s.label.as_str())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
            });
        ctx.draw_series(points.iter().map(|&p| Circle::new(p, 4, color.filled())))
            .map_err(|e| e.to_string())?;
        let rings: Vec<(f64, f64)> = s
            .points
            .iter()
            .zip(&s.highlighted)
            .filter(|(p, &h)| h && usable(p))
            .map(|(&p, _)| p)
            .collect();
        ctx.draw_series(
            rings
                .iter()
                .map(|&p| Circle::new(p, 9, BLACK.stroke_width(2))),
        )
        .map_err(|e| e.to_string())?;
    }
    if let Some(label) = &chart.highlight_label {
        // An empty series carrying the ring's legend entry.
        ctx.draw_series(std::iter::empty::<Circle<(f64, f64), i32>>())
            .map_err(|e| e.to_string())?
            .label(label.as_str())
            .legend(|(x, y)| Circle::new((x + 9, y), 6, BLACK.stroke_width(2)));
    }
    ctx.configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .label_font(("sans-serif", 14))
        .draw()
        .map_err(|e| e.to_string())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dark(img: &RgbImage) -> usize {
        img.pixels()
            .filter(|p| p.0.iter().all(|&c| c < 100))
            .count()
    }

    #[test]
    fn draws_both_axis_kinds_and_skips_unusable_points() {
        let series = vec![Series {
            label: "a".into(),
            points: vec![(0.0, 0.5), (1.0, f64::NAN), (10.0, 0.7), (100.0, 0.8)],
            highlighted: vec![false, false, true, false],
        }];
        for log_x in [false, true] {
            let chart = LineChart {
                title: "t".into(),
                log_x,
                highlight_label: Some("ring".into()),
                series: series.clone(),
                ..LineChart::default()
            };
            let img = line_chart(&chart, 400, 300).unwrap();
            assert_eq!((img.width(), img.height()), (400, 300));
            assert!(
                dark(&img) > 300,
                "log_x {log_x}: only {} dark pixels",
                dark(&img)
            );
        }
        // Nothing to plot still gives a canvas with axes.
        let empty = line_chart(&LineChart::default(), 200, 150).unwrap();
        assert!(dark(&empty) > 0);
    }
}
