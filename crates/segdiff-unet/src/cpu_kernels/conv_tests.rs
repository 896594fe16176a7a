//! The fast convolution against candle's own `conv2d` (forward and autograd) and against
//! finite differences in f64.

use candle_core::{DType, Device, Tensor, Var};

use super::{conv2d, conv_transpose2d};

/// Deterministic values in [-1, 1) (a 64-bit LCG), so failures reproduce.
fn values(n: usize, seed: u64) -> Vec<f64> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (s >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
        })
        .collect()
}

fn tensor(shape: &[usize], seed: u64, dtype: DType) -> Tensor {
    let n = shape.iter().product();
    Tensor::from_vec(values(n, seed), shape, &Device::Cpu)
        .and_then(|t| t.to_dtype(dtype))
        .unwrap()
}

fn reference(x: &Tensor, w: &Tensor, b: &Tensor, stride: usize, pad: usize) -> Tensor {
    let y = x.conv2d(w, pad, stride, 1, 1).unwrap();
    y.broadcast_add(&b.reshape((1, b.dim(0).unwrap(), 1, 1)).unwrap())
        .unwrap()
}

fn max_abs(t: &Tensor) -> f64 {
    t.abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap()
        .to_scalar::<f64>()
        .unwrap()
}

/// Max |a − b| relative to max |b| (at least 1).
fn rel_err(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.dims(), b.dims());
    max_abs(&(a - b).unwrap()) / max_abs(b).max(1.0)
}

/// (batch, c_in, h, w, c_out, k, stride, pad): every kind the UNets use, odd sizes, batch > 1,
/// and bands that do not divide the image.
type ConvCase = (usize, usize, usize, usize, usize, usize, usize, usize);

const SHAPES: &[ConvCase] = &[
    (1, 2, 17, 13, 8, 3, 1, 1),
    (3, 5, 9, 11, 7, 3, 1, 1),
    (2, 16, 33, 31, 12, 3, 2, 1),
    (2, 6, 10, 12, 6, 3, 2, 0),
    (3, 6, 11, 9, 6, 3, 2, 0),
    (2, 24, 15, 15, 10, 1, 1, 0),
    (1, 7, 8, 8, 5, 1, 2, 0),
    // Stride 3 (im2col and col2im through three column phases), and stride 2 in two bands
    // whose input rows overlap.
    (2, 6, 14, 17, 5, 3, 3, 1),
    (1, 128, 40, 38, 16, 3, 2, 1),
    (1, 64, 40, 40, 32, 3, 1, 1),
    (2, 96, 12, 12, 128, 3, 1, 1),
    (1, 40, 3, 3, 16, 3, 1, 1),
    (4, 3, 1, 1, 5, 3, 1, 1),
    (1, 8, 5, 6, 4, 3, 1, 0),
    // Images smaller than a band, grouped side by side in one tile (3×3, stride 2, 1×1).
    (16, 32, 4, 4, 24, 3, 1, 1),
    (6, 8, 3, 5, 5, 3, 2, 1),
    (5, 16, 4, 4, 8, 1, 1, 0),
    // Large enough for Winograd F(2×2, 3×3) (≥ 256 tiles): odd sizes (partial tiles),
    // padding 0 and 2, batch > 1.
    (2, 16, 23, 21, 16, 3, 1, 1),
    (1, 32, 35, 33, 24, 3, 1, 0),
    (1, 20, 30, 30, 18, 3, 1, 2),
    (3, 20, 17, 15, 18, 3, 1, 1),
    (1, 128, 34, 30, 64, 3, 1, 1),
];

/// Runs `f` with rayon pools of 1 and 3 threads, so both the per-band-parallel and the
/// parallel-GEMM paths (and uneven band counts) run whatever the machine.
fn with_pools(f: impl Fn() + Sync) {
    for threads in [1, 3] {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap()
            .install(&f);
    }
}

#[test]
fn forward_matches_candle_conv2d() {
    with_pools(|| {
        let mut worst = 0f64;
        for (i, &(n, ci, h, w, co, k, s, p)) in SHAPES.iter().enumerate() {
            let seed = 10 * i as u64;
            let x = tensor(&[n, ci, h, w], seed, DType::F32);
            let wt = tensor(&[co, ci, k, k], seed + 1, DType::F32);
            let b = tensor(&[co], seed + 2, DType::F32);
            let got = conv2d(&x, &wt, Some(&b), s, p).unwrap();
            let want = reference(&x, &wt, &b, s, p);
            let err = rel_err(&got, &want);
            worst = worst.max(err);
            assert!(err < 1e-5, "shape {i}: relative error {err:.2e}");
            let no_bias = conv2d(&x, &wt, None, s, p).unwrap();
            let want = x.conv2d(&wt, p, s, 1, 1).unwrap();
            assert!(rel_err(&no_bias, &want) < 1e-5, "shape {i} without bias");
        }
        println!("forward vs candle conv2d: worst relative error {worst:.2e} (limit 1e-5)");
    });
}

#[test]
fn forward_reads_non_contiguous_input() {
    // x stored as (N, C, W, H) and viewed transposed; w viewed through a narrow.
    let xt = tensor(&[2, 6, 13, 11], 7, DType::F32);
    let x = xt.transpose(2, 3).unwrap();
    assert!(!x.is_contiguous());
    let wide = tensor(&[9, 6, 3, 3], 8, DType::F32);
    let wt = wide.narrow(0, 2, 5).unwrap();
    let b = tensor(&[5], 9, DType::F32);
    for (s, p) in [(1, 1), (2, 1), (2, 0)] {
        let got = conv2d(&x, &wt, Some(&b), s, p).unwrap();
        let want = reference(
            &x.contiguous().unwrap(),
            &wt.contiguous().unwrap(),
            &b,
            s,
            p,
        );
        let err = rel_err(&got, &want);
        assert!(err < 1e-5, "stride {s} pad {p}: {err:.2e}");
    }
}

/// Gradients of `Σ r ⊙ conv(x, w, b)` for x, w, b.
fn grads(
    x: &Var,
    w: &Var,
    b: &Var,
    r: &Tensor,
    s: usize,
    p: usize,
    fast: bool,
) -> (Tensor, Tensor, Tensor) {
    let y = if fast {
        conv2d(x.as_tensor(), w.as_tensor(), Some(b.as_tensor()), s, p).unwrap()
    } else {
        reference(x.as_tensor(), w.as_tensor(), b.as_tensor(), s, p)
    };
    let loss = (y * r).unwrap().sum_all().unwrap();
    let g = loss.backward().unwrap();
    (
        g.get(x).unwrap().clone(),
        g.get(w).unwrap().clone(),
        g.get(b).unwrap().clone(),
    )
}

#[test]
fn backward_matches_candle_autograd() {
    with_pools(|| {
        let mut worst = [0f64; 3];
        for (i, &(n, ci, h, w, co, k, s, p)) in SHAPES.iter().enumerate() {
            let seed = 100 + 10 * i as u64;
            let x = Var::from_tensor(&tensor(&[n, ci, h, w], seed, DType::F32)).unwrap();
            let wt = Var::from_tensor(&tensor(&[co, ci, k, k], seed + 1, DType::F32)).unwrap();
            let b = Var::from_tensor(&tensor(&[co], seed + 2, DType::F32)).unwrap();
            let oh = (h + 2 * p - k) / s + 1;
            let ow = (w + 2 * p - k) / s + 1;
            let r = tensor(&[n, co, oh, ow], seed + 3, DType::F32);
            let fast = grads(&x, &wt, &b, &r, s, p, true);
            let slow = grads(&x, &wt, &b, &r, s, p, false);
            for (j, (got, want)) in [(&fast.0, &slow.0), (&fast.1, &slow.1), (&fast.2, &slow.2)]
                .into_iter()
                .enumerate()
            {
                let err = rel_err(got, want);
                worst[j] = worst[j].max(err);
                assert!(
                    err < 1e-5,
                    "shape {i}, grad {}: {err:.2e}",
                    ["x", "w", "b"][j]
                );
            }
        }
        println!(
            "backward vs candle autograd: worst relative error dx {:.2e}, dw {:.2e}, db {:.2e} \
             (limit 1e-5)",
            worst[0], worst[1], worst[2]
        );
    });
}

#[test]
fn untracked_inputs_get_no_gradient() {
    let x = tensor(&[1, 3, 6, 6], 1, DType::F32);
    let w = Var::from_tensor(&tensor(&[4, 3, 3, 3], 2, DType::F32)).unwrap();
    let y = conv2d(&x, w.as_tensor(), None, 1, 1).unwrap();
    let g = y.sum_all().unwrap().backward().unwrap();
    assert!(g.get(&x).is_none());
    assert!(g.get(&w).is_some());
}

/// f64 central differences of `L = Σ r ⊙ conv(x, w, b)` at sampled coordinates. L is linear
/// in each argument, so the difference quotient is exact up to rounding.
#[test]
fn gradients_match_finite_differences_f64() {
    for (case, &(n, ci, h, w, co, k, s, p)) in [
        (2, 3, 7, 6, 4, 3, 1, 1),
        (2, 3, 7, 8, 4, 3, 2, 1),
        (1, 2, 6, 7, 3, 3, 2, 0),
        (2, 4, 5, 5, 3, 1, 1, 0),
        // Winograd (≥ 256 tiles).
        (1, 16, 31, 32, 16, 3, 1, 1),
    ]
    .iter()
    .enumerate()
    {
        let seed = 1000 + 10 * case as u64;
        let x = tensor(&[n, ci, h, w], seed, DType::F64);
        let wt = tensor(&[co, ci, k, k], seed + 1, DType::F64);
        let b = tensor(&[co], seed + 2, DType::F64);
        let oh = (h + 2 * p - k) / s + 1;
        let ow = (w + 2 * p - k) / s + 1;
        let r = tensor(&[n, co, oh, ow], seed + 3, DType::F64);
        let loss = |x: &Tensor, wt: &Tensor, b: &Tensor| -> f64 {
            (conv2d(x, wt, Some(b), s, p).unwrap() * &r)
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f64>()
                .unwrap()
        };
        let (xv, wv, bv) = (
            Var::from_tensor(&x).unwrap(),
            Var::from_tensor(&wt).unwrap(),
            Var::from_tensor(&b).unwrap(),
        );
        let (gx, gw, gb) = grads(&xv, &wv, &bv, &r, s, p, true);
        let eps = 1e-3;
        let mut worst = 0f64;
        for (arg, base, grad) in [(0, &x, &gx), (1, &wt, &gw), (2, &b, &gb)] {
            let flat = base.flatten_all().unwrap().to_vec1::<f64>().unwrap();
            let analytic = grad.flatten_all().unwrap().to_vec1::<f64>().unwrap();
            let step = (flat.len() / 17).max(1);
            for idx in (0..flat.len()).step_by(step) {
                let shifted = |d: f64| {
                    let mut v = flat.clone();
                    v[idx] += d;
                    Tensor::from_vec(v, base.dims(), &Device::Cpu).unwrap()
                };
                let (plus, minus) = (shifted(eps), shifted(-eps));
                let numeric = match arg {
                    0 => (loss(&plus, &wt, &b) - loss(&minus, &wt, &b)) / (2.0 * eps),
                    1 => (loss(&x, &plus, &b) - loss(&x, &minus, &b)) / (2.0 * eps),
                    _ => (loss(&x, &wt, &plus) - loss(&x, &wt, &minus)) / (2.0 * eps),
                };
                let err = (numeric - analytic[idx]).abs();
                worst = worst.max(err);
                assert!(
                    err < 1e-9 * analytic[idx].abs().max(1.0),
                    "case {case}, arg {arg}, index {idx}: numeric {numeric} analytic {}",
                    analytic[idx]
                );
            }
        }
        println!("finite differences, case {case}: worst abs error {worst:.2e}");
    }
}

#[test]
fn other_dtypes_fall_back_to_candle() {
    let x = tensor(&[1, 4, 9, 9], 3, DType::F16);
    let w = tensor(&[6, 4, 3, 3], 4, DType::F16);
    let b = tensor(&[6], 5, DType::F16);
    let got = conv2d(&x, &w, Some(&b), 1, 1).unwrap();
    let want = reference(&x, &w, &b, 1, 1);
    assert_eq!(got.dtype(), DType::F16);
    let diff =
        max_abs(&(got.to_dtype(DType::F32).unwrap() - want.to_dtype(DType::F32).unwrap()).unwrap());
    assert_eq!(diff, 0.0, "the fallback is candle's own conv2d + bias");
}

/// (batch, c_in, h, w, c_out, k, stride, pad, output_padding) of a transposed convolution.
type TransposedCase = (
    usize,
    usize,
    usize,
    usize,
    usize,
    usize,
    usize,
    usize,
    usize,
);

/// MONAI's up-sampling (k3 s2 p1 op1), k2 s2, stride 1, odd sizes, batch > 1.
const TRANSPOSED: &[TransposedCase] = &[
    (2, 16, 9, 7, 8, 3, 2, 1, 1),
    (1, 5, 6, 6, 3, 2, 2, 0, 0),
    (3, 4, 5, 8, 6, 3, 1, 1, 0),
    (1, 32, 16, 16, 16, 3, 2, 1, 1),
    (2, 3, 4, 5, 2, 3, 2, 0, 1),
    (1, 4, 5, 6, 3, 3, 3, 1, 2),
];

fn transposed_grads(
    x: &Var,
    w: &Var,
    b: &Var,
    r: &Tensor,
    (s, p, op): (usize, usize, usize),
    fast: bool,
) -> (Tensor, Tensor, Tensor) {
    let y = if fast {
        conv_transpose2d(x.as_tensor(), w.as_tensor(), Some(b.as_tensor()), s, p, op).unwrap()
    } else {
        let b = b.as_tensor();
        x.as_tensor()
            .conv_transpose2d(w.as_tensor(), p, op, s, 1)
            .unwrap()
            .broadcast_add(&b.reshape((1, b.dim(0).unwrap(), 1, 1)).unwrap())
            .unwrap()
    };
    let g = (y * r).unwrap().sum_all().unwrap().backward().unwrap();
    (
        g.get(x).unwrap().clone(),
        g.get(w).unwrap().clone(),
        g.get(b).unwrap().clone(),
    )
}

#[test]
fn transposed_conv_matches_candle_forward_and_autograd() {
    with_pools(|| {
        let mut worst = [0f64; 4];
        for (i, &(n, ci, h, w, co, k, s, p, op)) in TRANSPOSED.iter().enumerate() {
            let seed = 500 + 10 * i as u64;
            let x = Var::from_tensor(&tensor(&[n, ci, h, w], seed, DType::F32)).unwrap();
            let wt = Var::from_tensor(&tensor(&[ci, co, k, k], seed + 1, DType::F32)).unwrap();
            let b = Var::from_tensor(&tensor(&[co], seed + 2, DType::F32)).unwrap();
            let oh = (h - 1) * s + k + op - 2 * p;
            let ow = (w - 1) * s + k + op - 2 * p;
            let got =
                conv_transpose2d(x.as_tensor(), wt.as_tensor(), Some(b.as_tensor()), s, p, op)
                    .unwrap();
            let want = x
                .as_tensor()
                .conv_transpose2d(wt.as_tensor(), p, op, s, 1)
                .unwrap()
                .broadcast_add(&b.as_tensor().reshape((1, co, 1, 1)).unwrap())
                .unwrap();
            assert_eq!(got.dims(), [n, co, oh, ow]);
            worst[0] = worst[0].max(rel_err(&got, &want));
            let r = tensor(&[n, co, oh, ow], seed + 3, DType::F32);
            let fast = transposed_grads(&x, &wt, &b, &r, (s, p, op), true);
            let slow = transposed_grads(&x, &wt, &b, &r, (s, p, op), false);
            for (j, (g, w)) in [(&fast.0, &slow.0), (&fast.1, &slow.1), (&fast.2, &slow.2)]
                .into_iter()
                .enumerate()
            {
                worst[j + 1] = worst[j + 1].max(rel_err(g, w));
            }
            assert!(worst.iter().all(|e| *e < 1e-5), "case {i}: {worst:?}");
        }
        println!(
            "conv_transpose2d vs candle: worst relative error y {:.2e}, dx {:.2e}, dw {:.2e}, \
             db {:.2e} (limit 1e-5)",
            worst[0], worst[1], worst[2], worst[3]
        );
    });
}

/// f64 central differences of `Σ r ⊙ conv_transpose2d(x, w, b)` (linear in each argument).
#[test]
fn transposed_conv_gradients_match_finite_differences_f64() {
    let (n, ci, h, w, co, k, s, p, op) = (2, 3, 5, 4, 2, 3, 2, 1, 1);
    let x = tensor(&[n, ci, h, w], 7, DType::F64);
    let wt = tensor(&[ci, co, k, k], 8, DType::F64);
    let b = tensor(&[co], 9, DType::F64);
    let r = tensor(
        &[
            n,
            co,
            (h - 1) * s + k + op - 2 * p,
            (w - 1) * s + k + op - 2 * p,
        ],
        10,
        DType::F64,
    );
    let loss = |x: &Tensor, wt: &Tensor, b: &Tensor| -> f64 {
        (conv_transpose2d(x, wt, Some(b), s, p, op).unwrap() * &r)
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f64>()
            .unwrap()
    };
    let vars = [&x, &wt, &b].map(|t| Var::from_tensor(t).unwrap());
    let (gx, gw, gb) = transposed_grads(&vars[0], &vars[1], &vars[2], &r, (s, p, op), true);
    let eps = 1e-3;
    for (arg, base, grad) in [(0, &x, &gx), (1, &wt, &gw), (2, &b, &gb)] {
        let flat = base.flatten_all().unwrap().to_vec1::<f64>().unwrap();
        let analytic = grad.flatten_all().unwrap().to_vec1::<f64>().unwrap();
        for idx in (0..flat.len()).step_by((flat.len() / 13).max(1)) {
            let shifted = |d: f64| {
                let mut v = flat.clone();
                v[idx] += d;
                Tensor::from_vec(v, base.dims(), &Device::Cpu).unwrap()
            };
            let (plus, minus) = (shifted(eps), shifted(-eps));
            let numeric = match arg {
                0 => (loss(&plus, &wt, &b) - loss(&minus, &wt, &b)) / (2.0 * eps),
                1 => (loss(&x, &plus, &b) - loss(&x, &minus, &b)) / (2.0 * eps),
                _ => (loss(&x, &wt, &plus) - loss(&x, &wt, &minus)) / (2.0 * eps),
            };
            assert!(
                (numeric - analytic[idx]).abs() < 1e-9 * analytic[idx].abs().max(1.0),
                "arg {arg}, index {idx}: numeric {numeric} analytic {}",
                analytic[idx]
            );
        }
    }
}

#[test]
fn transposed_conv_rejects_impossible_geometry() {
    let x = tensor(&[1, 2, 4, 4], 1, DType::F32);
    let w = tensor(&[2, 3, 3, 3], 2, DType::F32);
    assert!(conv_transpose2d(&x, &w, None, 2, 1, 2).is_err());
    let tiny = tensor(&[1, 2, 1, 1], 1, DType::F32);
    assert!(conv_transpose2d(&tiny, &w, None, 1, 3, 0).is_err());
}
