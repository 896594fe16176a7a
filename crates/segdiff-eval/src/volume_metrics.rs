//! Through-plane consistency of generated volumes: how much the image changes from one slice to
//! the next inside the body. Independent 2-D generation flickers from slice to slice; a
//! consistent generator changes about as much as the real volume does (anatomy changes slowly
//! along the axis), so the figure is read against the real volume's and the independent one's.

use crate::error::{EvalError, Result};

/// A stack of `slices` images of `height`×`width` (row-major, slice-major), with a body mask.
#[derive(Clone, Copy, Debug)]
pub struct SliceStack<'a> {
    pub values: &'a [f32],
    /// Pixels counted as body (e.g. class id > 0), same layout as `values`.
    pub body: &'a [bool],
    pub slices: usize,
    pub height: usize,
    pub width: usize,
}

/// Mean absolute change between adjacent slices over the pixels that are body in either slice,
/// averaged over the adjacent pairs that have any (pairs with no body pixel are skipped).
/// `None` when no pair has a body pixel.
pub fn through_plane_change(stack: &SliceStack<'_>) -> Result<Option<f64>> {
    let plane = stack.height * stack.width;
    let n = stack.slices * plane;
    if stack.values.len() != n || stack.body.len() != n {
        return Err(EvalError::BadShape {
            what: "slice stack",
            shape: vec![stack.values.len(), stack.body.len()],
            expected: "values and body of slices × height × width",
        });
    }
    let mut sum = 0.0f64;
    let mut pairs = 0usize;
    for k in 1..stack.slices {
        let (a, b) = ((k - 1) * plane, k * plane);
        let (mut change, mut count) = (0.0f64, 0usize);
        for i in 0..plane {
            if stack.body[a + i] || stack.body[b + i] {
                change += f64::from((stack.values[b + i] - stack.values[a + i]).abs());
                count += 1;
            }
        }
        if count > 0 {
            sum += change / count as f64;
            pairs += 1;
        }
    }
    Ok((pairs > 0).then(|| sum / pairs as f64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn change_counts_body_pixels_of_adjacent_slices() {
        // 3 slices of 1×2: body only in pixel 0; values 0, 0.5, 0.25 there, noise outside.
        let values = [0.0, 9.0, 0.5, -9.0, 0.25, 4.0];
        let body = [true, false, true, false, true, false];
        let s = SliceStack {
            values: &values,
            body: &body,
            slices: 3,
            height: 1,
            width: 2,
        };
        let c = through_plane_change(&s).unwrap().unwrap();
        assert!((c - (0.5 + 0.25) / 2.0).abs() < 1e-12, "{c}");
        let none = [false; 6];
        let empty = SliceStack { body: &none, ..s };
        assert_eq!(through_plane_change(&empty).unwrap(), None);
        let short = SliceStack {
            values: &values[..4],
            ..s
        };
        assert!(through_plane_change(&short).is_err());
    }
}
