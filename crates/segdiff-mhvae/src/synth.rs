//! Synthetic single-object data with known style and shape (design notes §6.3): the only way to
//! have ground truth for the MHVAE's style/position split. An image is a pure function
//! `render(style, shape)`, so the true style swap `render(style_a, shape_b)` exists.
//!
//! Style: background level, a stripe pattern (angle, frequency) and the object's tone. Shape: an
//! ellipse, a star-convex blob r(φ) = r₀(1 + Σ_{k=2..4} c_k cos(kφ + φ_k)), or two merged discs,
//! centred within ±0.35 (normalised units, so that every object overlaps the reference disc).

use std::f64::consts::PI;
use std::io::Write;
use std::path::Path;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use crate::warp::lattice_coords;
use crate::{MhvaeError, Result};

/// Which objects to draw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShapeKind {
    Ellipses,
    Blobs,
    MergedCircles,
}

impl std::str::FromStr for ShapeKind {
    type Err = MhvaeError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "ellipses" => Ok(ShapeKind::Ellipses),
            "blobs" => Ok(ShapeKind::Blobs),
            "merged-circles" => Ok(ShapeKind::MergedCircles),
            _ => Err(MhvaeError::InvalidArgument {
                name: "kind",
                value: s.into(),
                reason: "expected ellipses, blobs or merged-circles".into(),
            }),
        }
    }
}

/// The look of an image, independent of where the object is.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Style {
    pub background: f64,
    pub stripe_angle: f64,
    pub stripe_frequency: f64,
    pub object_tone: f64,
}

/// The object's geometry (normalised coordinates, y down).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(tag = "shape", rename_all = "snake_case")]
pub enum Shape {
    Ellipse {
        cx: f64,
        cy: f64,
        a: f64,
        b: f64,
        angle: f64,
    },
    Blob {
        cx: f64,
        cy: f64,
        r0: f64,
        c: [f64; 3],
        phase: [f64; 3],
    },
    MergedCircles {
        cx: f64,
        cy: f64,
        r: f64,
        offset: f64,
        angle: f64,
    },
}

impl Shape {
    /// Whether the point (x, y) is inside.
    pub fn contains(&self, x: f64, y: f64) -> bool {
        match *self {
            Shape::Ellipse {
                cx,
                cy,
                a,
                b,
                angle,
            } => {
                let (dx, dy) = (x - cx, y - cy);
                let (c, s) = (angle.cos(), angle.sin());
                let (u, v) = (dx * c + dy * s, -dx * s + dy * c);
                (u / a).powi(2) + (v / b).powi(2) <= 1.0
            }
            Shape::Blob {
                cx,
                cy,
                r0,
                c,
                phase,
            } => {
                let (dx, dy) = (x - cx, y - cy);
                let phi = dy.atan2(dx);
                let r = r0
                    * (1.0
                        + (0..3)
                            .map(|i| c[i] * ((i as f64 + 2.0) * phi + phase[i]).cos())
                            .sum::<f64>());
                dx.hypot(dy) <= r
            }
            Shape::MergedCircles {
                cx,
                cy,
                r,
                offset,
                angle,
            } => {
                let (ox, oy) = (offset * angle.cos(), offset * angle.sin());
                (x - cx - ox).hypot(y - cy - oy) <= r || (x - cx + ox).hypot(y - cy + oy) <= r
            }
        }
    }
}

/// Draws a style.
pub fn draw_style(rng: &mut StdRng) -> Style {
    Style {
        background: rng.random_range(0.05..0.45),
        stripe_angle: rng.random_range(0.0..PI),
        stripe_frequency: rng.random_range(1.5..4.0),
        object_tone: rng.random_range(0.6..0.95),
    }
}

/// Draws a shape of `kind`.
pub fn draw_shape(kind: ShapeKind, rng: &mut StdRng) -> Shape {
    let cx = rng.random_range(-0.35..0.35);
    let cy = rng.random_range(-0.35..0.35);
    match kind {
        ShapeKind::Ellipses => Shape::Ellipse {
            cx,
            cy,
            a: rng.random_range(0.2..0.45),
            b: rng.random_range(0.12..0.3),
            angle: rng.random_range(0.0..PI),
        },
        ShapeKind::Blobs => Shape::Blob {
            cx,
            cy,
            r0: rng.random_range(0.25..0.4),
            c: [0; 3].map(|_| rng.random_range(-0.3..0.3)),
            phase: [0; 3].map(|_| rng.random_range(0.0..2.0 * PI)),
        },
        ShapeKind::MergedCircles => Shape::MergedCircles {
            cx,
            cy,
            r: rng.random_range(0.2..0.28),
            offset: rng.random_range(0.15..0.25),
            angle: rng.random_range(0.0..PI),
        },
    }
}

/// The image (size², grey in [0, 1]) and its 0/1 mask for a style and a shape.
pub fn render(style: &Style, shape: &Shape, size: usize) -> (Vec<f32>, Vec<u8>) {
    let coords = lattice_coords(size, false);
    let (mut image, mut mask) = (
        Vec::with_capacity(size * size),
        Vec::with_capacity(size * size),
    );
    let (ca, sa) = (style.stripe_angle.cos(), style.stripe_angle.sin());
    for &y in &coords {
        for &x in &coords {
            let inside = shape.contains(x, y);
            let stripes = 0.08 * (2.0 * PI * style.stripe_frequency * (x * ca + y * sa)).sin();
            let v = if inside {
                style.object_tone + 0.5 * stripes
            } else {
                style.background + stripes
            };
            image.push(v.clamp(0.0, 1.0) as f32);
            mask.push(inside as u8);
        }
    }
    (image, mask)
}

/// One generated sample.
#[derive(Debug, Clone, Serialize)]
pub struct Truth {
    pub name: String,
    pub split: &'static str,
    pub style: Style,
    pub shape: Shape,
}

/// `n` samples of `kind` from `seed`: 80 % train, 10 % val, 10 % test (at least one each when
/// n ≥ 3), in order.
pub fn draw_samples(kind: ShapeKind, n: usize, seed: u64) -> Vec<Truth> {
    let mut rng = StdRng::seed_from_u64(seed);
    let n_test = if n >= 3 { (n / 10).max(1) } else { 0 };
    let n_val = n_test;
    (0..n)
        .map(|i| {
            let split = if i < n - n_val - n_test {
                "train"
            } else if i < n - n_test {
                "val"
            } else {
                "test"
            };
            Truth {
                name: format!("{i:05}.png"),
                split,
                style: draw_style(&mut rng),
                shape: draw_shape(kind, &mut rng),
            }
        })
        .collect()
}

/// Writes a dataset in segdiff's layout at `out` (built under a temporary name and swapped in):
/// `img/{split}/NNNNN.png`, `mask/all/{split}/NNNNN.png` (0/1), `dataset.json` (2 classes) and
/// `truth.jsonl` (one [`Truth`] per line).
pub fn write_dataset(out: &Path, samples: &[Truth], size: usize) -> Result<()> {
    let io = |p: &Path, e: std::io::Error| MhvaeError::ModelFile {
        path: p.to_path_buf(),
        message: e.to_string(),
    };
    let staged = segdiff_io::temp_sibling(out, "tmp");
    if staged.exists() {
        std::fs::remove_dir_all(&staged).map_err(|e| io(&staged, e))?;
    }
    let guard = segdiff_io::remove_dir_on_drop(&staged);
    for split in ["train", "val", "test"] {
        for d in [format!("img/{split}"), format!("mask/all/{split}")] {
            let p = staged.join(d);
            std::fs::create_dir_all(&p).map_err(|e| io(&p, e))?;
        }
    }
    let mut truth = Vec::new();
    for s in samples {
        let (image, mask) = render(&s.style, &s.shape, size);
        let img_path = staged.join("img").join(s.split).join(&s.name);
        segdiff_io::picture::save_grey_png(&img_path, &image, size, size).map_err(|e| {
            MhvaeError::ModelFile {
                path: img_path.clone(),
                message: e.to_string(),
            }
        })?;
        let mask_path = staged.join("mask/all").join(s.split).join(&s.name);
        let m = image::GrayImage::from_raw(size as u32, size as u32, mask).ok_or_else(|| {
            MhvaeError::InvalidArgument {
                name: "size",
                value: size.to_string(),
                reason: "mask buffer".into(),
            }
        })?;
        segdiff_io::write_png(&mask_path, &image::DynamicImage::ImageLuma8(m)).map_err(|e| {
            MhvaeError::ModelFile {
                path: mask_path.clone(),
                message: e.to_string(),
            }
        })?;
        let line = serde_json::to_string(s).map_err(|e| MhvaeError::ModelFile {
            path: staged.join("truth.jsonl"),
            message: e.to_string(),
        })?;
        writeln!(truth, "{line}").map_err(|e| io(&staged, e))?;
    }
    let json = r#"{"num_classes": 2, "class_names": ["background", "object"]}"#;
    let p = staged.join("dataset.json");
    segdiff_io::write_bytes_atomic(&p, json.as_bytes()).map_err(|e| io(&p, e))?;
    let p = staged.join("truth.jsonl");
    segdiff_io::write_bytes_atomic(&p, &truth).map_err(|e| io(&p, e))?;
    segdiff_io::replace_dir(&staged, out).map_err(|e| io(out, e))?;
    guard.keep();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_is_a_pure_function_and_the_mask_matches_the_tone() {
        let mut rng = StdRng::seed_from_u64(1);
        for kind in [
            ShapeKind::Ellipses,
            ShapeKind::Blobs,
            ShapeKind::MergedCircles,
        ] {
            let (style, shape) = (draw_style(&mut rng), draw_shape(kind, &mut rng));
            let a = render(&style, &shape, 32);
            assert_eq!(a, render(&style, &shape, 32));
            let area = a.1.iter().filter(|&&m| m == 1).count();
            assert!(area > 40 && area < 32 * 32 / 2, "{kind:?}: area {area}");
            for (v, m) in a.0.iter().zip(&a.1) {
                let expected = if *m == 1 {
                    style.object_tone
                } else {
                    style.background
                };
                assert!((*v as f64 - expected).abs() <= 0.081, "{v} vs {expected}");
            }
        }
        let s = draw_samples(ShapeKind::Ellipses, 20, 3);
        assert_eq!(s.iter().filter(|t| t.split == "test").count(), 2);
        assert_eq!(s.iter().filter(|t| t.split == "val").count(), 2);
    }
}
