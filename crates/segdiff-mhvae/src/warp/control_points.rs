//! Fixed target control-point layouts of the thin-plate spline (paper App. C, Fig. 7): the
//! paper names a uniform layout (25 points) and a circular one (20 points) without coordinates;
//! ours are recorded with every model (design notes §5.2).

use std::fmt;
use std::str::FromStr;

use crate::MhvaeError;

/// A layout of TPS target control points in normalised (x, y) coordinates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ControlPoints {
    /// Two rings of `count / 2` points: radius 0.5 (the boundary of the reference disc) at angles
    /// 2πk/m, and radius 1.0 at the same angles shifted by half a step (π/m).
    Circular { count: usize },
    /// An `n × n` lattice on linspace(−1, 1, n), row by row (y outer, x inner).
    Uniform { n: usize },
}

impl Default for ControlPoints {
    fn default() -> Self {
        ControlPoints::Circular { count: 20 }
    }
}

impl ControlPoints {
    /// The target points, (x, y) each.
    pub fn targets(&self) -> Vec<[f64; 2]> {
        match *self {
            ControlPoints::Circular { count } => {
                let m = count / 2;
                let step = std::f64::consts::TAU / m as f64;
                let ring = |r: f64, shift: f64| {
                    (0..m).map(move |k| {
                        let a = k as f64 * step + shift;
                        [r * a.cos(), r * a.sin()]
                    })
                };
                ring(0.5, 0.0).chain(ring(1.0, step / 2.0)).collect()
            }
            ControlPoints::Uniform { n } => {
                let v: Vec<f64> = (0..n)
                    .map(|j| -1.0 + 2.0 * j as f64 / (n.max(2) - 1) as f64)
                    .collect();
                v.iter()
                    .flat_map(|&y| v.iter().map(move |&x| [x, y]))
                    .collect()
            }
        }
    }

    /// Number of control points K (θ has 2K entries).
    pub fn len(&self) -> usize {
        match *self {
            ControlPoints::Circular { count } => count,
            ControlPoints::Uniform { n } => n * n,
        }
    }

    /// Whether the layout is empty (never, for a parsed layout).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl fmt::Display for ControlPoints {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ControlPoints::Circular { count } => write!(f, "circular:{count}"),
            ControlPoints::Uniform { n } => write!(f, "uniform:{n}x{n}"),
        }
    }
}

impl FromStr for ControlPoints {
    type Err = MhvaeError;

    /// `circular:N` (N even, ≥ 6) or `uniform:NxN` (N ≥ 2).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |reason: &str| {
            MhvaeError::InvalidArgument {
            name: "control points",
            value: s.to_string(),
            reason: format!("{reason}; expected `circular:N` (N even, at least 6) or `uniform:NxN` (N at least 2), e.g. circular:20 or uniform:5x5"),
        }
        };
        let (kind, arg) = s.split_once(':').ok_or_else(|| bad("no `:`"))?;
        match kind {
            "circular" => {
                let count: usize = arg.parse().map_err(|_| bad("count is not a number"))?;
                if count < 6 || !count.is_multiple_of(2) {
                    return Err(bad("count must be even and at least 6"));
                }
                Ok(ControlPoints::Circular { count })
            }
            "uniform" => {
                let (a, b) = arg
                    .split_once('x')
                    .ok_or_else(|| bad("no `x` in the size"))?;
                let (a, b): (usize, usize) = (
                    a.parse().map_err(|_| bad("size is not a number"))?,
                    b.parse().map_err(|_| bad("size is not a number"))?,
                );
                if a != b || a < 2 {
                    return Err(bad("the lattice must be square, at least 2x2"));
                }
                Ok(ControlPoints::Uniform { n: a })
            }
            _ => Err(bad("unknown layout")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_and_parsing() {
        let c: ControlPoints = "circular:20".parse().unwrap();
        let t = c.targets();
        assert_eq!(t.len(), 20);
        assert!((t[0][0] - 0.5).abs() < 1e-15 && t[0][1].abs() < 1e-15);
        let a = std::f64::consts::PI / 10.0;
        assert!((t[10][0] - a.cos()).abs() < 1e-15 && (t[10][1] - a.sin()).abs() < 1e-15);
        let u: ControlPoints = "uniform:5x5".parse().unwrap();
        let t = u.targets();
        assert_eq!(t.len(), 25);
        assert_eq!(t[0], [-1.0, -1.0]);
        assert_eq!(t[1], [-0.5, -1.0]);
        assert_eq!(t[24], [1.0, 1.0]);
        assert_eq!(u.to_string(), "uniform:5x5");
        for bad in [
            "circular:5",
            "circular:x",
            "uniform:4x5",
            "uniform:1x1",
            "grid:3",
            "circular",
        ] {
            assert!(bad.parse::<ControlPoints>().is_err(), "{bad}");
        }
    }
}
