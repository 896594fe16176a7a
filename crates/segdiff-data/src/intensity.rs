//! Intensities → 8 bits.
//!
//! Every transform picks a range `[lo, hi]`, clips to it and maps it linearly onto 0..=255:
//! `u8 = round_half_even(255 · (clip(v, lo, hi) − lo) / (hi − lo))`, computed in f64. Rounding is
//! half-to-even (numpy's `np.rint`/`np.round`), so a numpy re-implementation gives the same bytes.
//! NaN voxels map to 0.
//!
//! * [`Intensity::Window`]: a fixed range, e.g. CT Hounsfield units.
//! * [`Intensity::CtPreset`]: standard CT windows given as level/width (`lo = L − W/2`,
//!   `hi = L + W/2`): abdomen (soft tissue) L 40 / W 400 → [−160, 240]; lung L −600 / W 1500 →
//!   [−1350, 150]; bone L 400 / W 1800 → [−500, 1300]; brain L 40 / W 80 → [0, 80].
//! * [`Intensity::Percentile`]: `lo`, `hi` are percentiles of the whole volume (NaN excluded),
//!   numpy's default "linear" method: the value at fractional rank `p/100 · (n − 1)` of the sorted
//!   voxels, interpolated between its two neighbours. Default 1, 99 for MRI.
//!
//! A constant volume (`hi == lo`) maps to 0 everywhere.

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::{DataError, Result};

/// Named CT windows (level/width in HU).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CtPreset {
    /// Soft-tissue abdomen window, L 40 / W 400.
    Abdomen,
    /// Lung window, L −600 / W 1500.
    Lung,
    /// Bone window, L 400 / W 1800.
    Bone,
    /// Brain window, L 40 / W 80.
    Brain,
}

impl CtPreset {
    /// (level, width) in HU.
    pub fn level_width(self) -> (f64, f64) {
        match self {
            CtPreset::Abdomen => (40.0, 400.0),
            CtPreset::Lung => (-600.0, 1500.0),
            CtPreset::Bone => (400.0, 1800.0),
            CtPreset::Brain => (40.0, 80.0),
        }
    }

    /// The window as (lo, hi) in HU.
    pub fn range(self) -> (f64, f64) {
        let (l, w) = self.level_width();
        (l - w / 2.0, l + w / 2.0)
    }

    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            CtPreset::Abdomen => "abdomen",
            CtPreset::Lung => "lung",
            CtPreset::Bone => "bone",
            CtPreset::Brain => "brain",
        }
    }
}

/// How volume intensities become 8-bit grey levels (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "kind")]
pub enum Intensity {
    /// Clip to the fixed range `[lo, hi]` (e.g. HU) and scale.
    Window { lo: f64, hi: f64 },
    /// A named CT window.
    CtPreset { preset: CtPreset },
    /// Clip between two percentiles of the whole volume and scale.
    Percentile { lo: f64, hi: f64 },
}

impl Default for Intensity {
    fn default() -> Self {
        Intensity::Percentile { lo: 1.0, hi: 99.0 }
    }
}

impl Intensity {
    /// Parse `window:LO,HI`, `ct:abdomen|lung|bone|brain`, `percentile:LO,HI` or `percentile`.
    pub fn parse(s: &str) -> Result<Intensity> {
        let bad = |detail: String| DataError::option("intensity", detail);
        let (kind, args) = s.split_once(':').unwrap_or((s, ""));
        let nums = || -> Result<(f64, f64)> {
            let parts: Vec<&str> = args.split(',').map(str::trim).collect();
            if parts.len() != 2 {
                return Err(bad(format!("`{s}`: expected two numbers LO,HI")));
            }
            let p = |t: &str| {
                t.parse::<f64>()
                    .map_err(|_| bad(format!("`{s}`: `{t}` is not a number")))
            };
            Ok((p(parts[0])?, p(parts[1])?))
        };
        let out = match kind.trim().to_ascii_lowercase().as_str() {
            "window" => {
                let (lo, hi) = nums()?;
                Intensity::Window { lo, hi }
            }
            "ct" | "preset" => {
                let preset = match args.trim().to_ascii_lowercase().as_str() {
                    "abdomen" => CtPreset::Abdomen,
                    "lung" => CtPreset::Lung,
                    "bone" => CtPreset::Bone,
                    "brain" => CtPreset::Brain,
                    other => {
                        return Err(bad(format!(
                            "unknown CT preset `{other}` (abdomen, lung, bone, brain)"
                        )))
                    }
                };
                Intensity::CtPreset { preset }
            }
            "percentile" if args.trim().is_empty() => Intensity::default(),
            "percentile" => {
                let (lo, hi) = nums()?;
                Intensity::Percentile { lo, hi }
            }
            other => {
                return Err(bad(format!(
                "unknown intensity transform `{other}` (window:LO,HI, ct:PRESET, percentile:LO,HI)"
            )))
            }
        };
        out.validate()?;
        Ok(out)
    }

    /// Check the numbers (finite, ordered, percentiles within 0..=100).
    pub fn validate(&self) -> Result<()> {
        match *self {
            Intensity::Window { lo, hi } => {
                if !(lo.is_finite() && hi.is_finite() && lo < hi) {
                    return Err(DataError::option(
                        "intensity",
                        format!("window [{lo}, {hi}] must have LO < HI"),
                    ));
                }
            }
            Intensity::Percentile { lo, hi } => {
                if !(0.0..=100.0).contains(&lo) || !(0.0..=100.0).contains(&hi) || lo >= hi {
                    return Err(DataError::option(
                        "intensity",
                        format!("percentiles [{lo}, {hi}] must satisfy 0 <= LO < HI <= 100"),
                    ));
                }
            }
            Intensity::CtPreset { .. } => {}
        }
        Ok(())
    }

    /// Short description for the manifest, e.g. `window[-160,240]` or `percentile[1,99]=[3.2,811]`.
    pub fn describe(&self, range: (f64, f64)) -> String {
        match *self {
            Intensity::Window { lo, hi } => format!("window[{lo},{hi}]"),
            Intensity::CtPreset { preset } => {
                let (lo, hi) = preset.range();
                format!("ct-{}[{lo},{hi}]", preset.name())
            }
            Intensity::Percentile { lo, hi } => {
                format!("percentile[{lo},{hi}]=[{},{}]", range.0, range.1)
            }
        }
    }

    /// The `[lo, hi]` range this transform uses for `values` (percentiles need the data).
    pub fn range(&self, values: &[f32]) -> (f64, f64) {
        match *self {
            Intensity::Window { lo, hi } => (lo, hi),
            Intensity::CtPreset { preset } => preset.range(),
            Intensity::Percentile { lo, hi } => match percentiles(values, &[lo, hi]) {
                Some(v) => (v[0], v[1]),
                None => (0.0, 0.0),
            },
        }
    }
}

/// Order-preserving map of a non-NaN f32 onto u32 (so selection compares plain integers).
#[inline]
fn sort_key(v: f32) -> u32 {
    let b = v.to_bits();
    if b & 0x8000_0000 != 0 {
        !b
    } else {
        b | 0x8000_0000
    }
}

#[inline]
fn from_key(k: u32) -> f32 {
    f32::from_bits(if k & 0x8000_0000 != 0 {
        k & 0x7fff_ffff
    } else {
        !k
    })
}

/// numpy's linear-method percentiles `ps` (each 0..=100) of the non-NaN values; `None` if there
/// are none. One partial selection pass per needed order statistic, each on what is left above
/// the previous one.
pub fn percentiles(values: &[f32], ps: &[f64]) -> Option<Vec<f64>> {
    let mut keys: Vec<u32> = values
        .par_iter()
        .filter(|v| !v.is_nan())
        .map(|&v| sort_key(v))
        .collect();
    let n = keys.len();
    if n == 0 {
        return None;
    }
    // Ranks needed: floor(rank) and the next one for each percentile.
    let ranks: Vec<(usize, f64)> = ps
        .iter()
        .map(|p| {
            let r = p / 100.0 * (n - 1) as f64;
            let below = (r.floor() as usize).min(n - 1);
            (below, r - below as f64)
        })
        .collect();
    let mut wanted: Vec<usize> = ranks
        .iter()
        .flat_map(|&(b, _)| [b, (b + 1).min(n - 1)])
        .collect();
    wanted.sort_unstable();
    wanted.dedup();
    let mut found = std::collections::BTreeMap::new();
    let mut start = 0usize;
    for k in wanted {
        let (_, v, _) = keys[start..].select_nth_unstable(k - start);
        found.insert(k, f64::from(from_key(*v)));
        start = k + 1;
        if start >= n {
            break;
        }
    }
    Some(
        ranks
            .iter()
            .map(|&(below, frac)| {
                let a = found[&below];
                if frac == 0.0 || below + 1 >= n {
                    return a;
                }
                let b = found[&(below + 1)];
                // numpy's _lerp: a + (b - a)·t, or b - (b - a)·(1 - t) for t >= 0.5.
                if frac >= 0.5 {
                    b - (b - a) * (1.0 - frac)
                } else {
                    a + (b - a) * frac
                }
            })
            .collect(),
    )
}

/// Map one value to 8 bits with the range `[lo, hi]` (see the module docs).
#[inline]
pub fn to_u8(v: f32, lo: f64, hi: f64) -> u8 {
    if v.is_nan() || hi <= lo {
        return 0;
    }
    let t = ((f64::from(v) - lo) / (hi - lo)).clamp(0.0, 1.0) * 255.0;
    t.round_ties_even() as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_matches_numpy_definition() {
        // Brute-force reference: sort, then interpolate at rank p/100*(n-1).
        let vals: Vec<f32> = (0..1001)
            .map(|i| ((i * 7919) % 1013) as f32 * 0.37 - 50.0)
            .collect();
        let mut sorted = vals.clone();
        sorted.sort_by(f32::total_cmp);
        for p in [0.0, 1.0, 2.5, 50.0, 97.3, 99.0, 100.0] {
            let r = p / 100.0 * (sorted.len() - 1) as f64;
            let lo = r.floor() as usize;
            let hi = (lo + 1).min(sorted.len() - 1);
            let want = f64::from(sorted[lo])
                + (f64::from(sorted[hi]) - f64::from(sorted[lo])) * (r - lo as f64);
            let got = percentiles(&vals, &[p, 50.0]).unwrap()[0];
            assert!((got - want).abs() < 1e-9, "p={p}: {got} vs {want}");
        }
        assert!(percentiles(&[], &[50.0]).is_none());
        assert!(percentiles(&[f32::NAN], &[50.0]).is_none());
        // Negative values, zeros of both signs and NaN (excluded) keep their order.
        let v = [3.0, -0.0, f32::NAN, -7.5, 0.0, 2.0];
        assert_eq!(
            percentiles(&v, &[0.0, 100.0, 50.0]).unwrap(),
            vec![-7.5, 3.0, 0.0]
        );
    }

    #[test]
    fn to_u8_clips_scales_and_rounds_half_even() {
        assert_eq!(to_u8(-1000.0, -160.0, 240.0), 0);
        assert_eq!(to_u8(1000.0, -160.0, 240.0), 255);
        assert_eq!(to_u8(40.0, -160.0, 240.0), 128); // 127.5 → 128 (even)
                                                     // 0.5/255 above lo: 0.5 → 0; 1.5/255: 1.5 → 2.
        assert_eq!(to_u8(0.5, 0.0, 255.0), 0);
        assert_eq!(to_u8(1.5, 0.0, 255.0), 2);
        assert_eq!(to_u8(2.5, 0.0, 255.0), 2);
        assert_eq!(to_u8(f32::NAN, 0.0, 1.0), 0);
        assert_eq!(to_u8(5.0, 3.0, 3.0), 0);
    }

    #[test]
    fn parse_and_presets() {
        assert_eq!(
            Intensity::parse("window:-160,240").unwrap(),
            Intensity::Window {
                lo: -160.0,
                hi: 240.0
            }
        );
        assert_eq!(
            Intensity::parse("ct:lung").unwrap(),
            Intensity::CtPreset {
                preset: CtPreset::Lung
            }
        );
        assert_eq!(CtPreset::Lung.range(), (-1350.0, 150.0));
        assert_eq!(CtPreset::Abdomen.range(), (-160.0, 240.0));
        assert_eq!(CtPreset::Bone.range(), (-500.0, 1300.0));
        assert_eq!(CtPreset::Brain.range(), (0.0, 80.0));
        assert_eq!(
            Intensity::parse("percentile").unwrap(),
            Intensity::Percentile { lo: 1.0, hi: 99.0 }
        );
        assert!(Intensity::parse("window:5,5").is_err());
        assert!(Intensity::parse("percentile:90,10").is_err());
        assert!(Intensity::parse("ct:liver").is_err());
        assert!(Intensity::parse("gamma:1,2").is_err());
    }
}
