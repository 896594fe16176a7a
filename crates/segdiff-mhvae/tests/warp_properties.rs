//! Properties of the warp ops that need no oracle: f64 finite-difference checks of both
//! grid_sample backward passes, the custom op against the composition, and the thin-plate spline's
//! identity, interpolation, affine reproduction and partition of unity (App. B).

use candle_core::{DType, Device, Tensor, Var};
use rand::{rngs::StdRng, Rng, SeedableRng};
use segdiff_mhvae::warp::{affine_grid, grid_sample, grid_sample_composed, ControlPoints, TpsWarp};

type R = Result<(), Box<dyn std::error::Error>>;

fn random(rng: &mut StdRng, n: usize, lo: f64, hi: f64) -> Vec<f64> {
    (0..n).map(|_| rng.random_range(lo..hi)).collect()
}

/// Grid points whose pixel index is at least 0.05 away from an integer (the bilinear map is not
/// differentiable there), in [−1.3, 1.3] so that some corners fall outside.
fn off_integer_grid(rng: &mut StdRng, n: usize, h: usize, w: usize, ac: bool) -> Vec<f64> {
    let mut out = Vec::new();
    while out.len() < n * 2 {
        let (x, y) = (rng.random_range(-1.3..1.3), rng.random_range(-1.3..1.3));
        let idx = |c: f64, s: usize| {
            if ac {
                (c + 1.0) / 2.0 * (s as f64 - 1.0)
            } else {
                ((c + 1.0) * s as f64 - 1.0) / 2.0
            }
        };
        let ok = |v: f64| (v - v.round()).abs() > 0.05;
        if ok(idx(x, w)) && ok(idx(y, h)) {
            out.extend([x, y]);
        }
    }
    out
}

fn loss_value(
    f: fn(&Tensor, &Tensor, bool) -> segdiff_mhvae::Result<Tensor>,
    input: &Tensor,
    grid: &Tensor,
    gout: &Tensor,
    ac: bool,
) -> f64 {
    (f(input, grid, ac).unwrap() * gout)
        .unwrap()
        .sum_all()
        .unwrap()
        .to_scalar::<f64>()
        .unwrap()
}

#[test]
fn grid_sample_gradients_match_float64_finite_differences() -> R {
    let dev = Device::Cpu;
    let mut rng = StdRng::seed_from_u64(7);
    let (n, c, h, w, ho, wo) = (2, 2, 5, 6, 3, 4);
    for ac in [false, true] {
        let input = Tensor::from_vec(
            random(&mut rng, n * c * h * w, -1.0, 1.0),
            (n, c, h, w),
            &dev,
        )?;
        let grid = Tensor::from_vec(
            off_integer_grid(&mut rng, n * ho * wo, h, w, ac),
            (n, ho, wo, 2),
            &dev,
        )?;
        let gout = Tensor::from_vec(
            random(&mut rng, n * c * ho * wo, -1.0, 1.0),
            (n, c, ho, wo),
            &dev,
        )?;
        type Op = fn(&Tensor, &Tensor, bool) -> segdiff_mhvae::Result<Tensor>;
        for (name, op) in [
            ("custom op", grid_sample as Op),
            ("composed", grid_sample_composed as Op),
        ] {
            let (vi, vg) = (Var::from_tensor(&input)?, Var::from_tensor(&grid)?);
            let grads = (op(&vi, &vg, ac)? * &gout)?.sum_all()?.backward()?;
            for (what, base, analytic) in [
                ("input", &input, grads.get(&vi).expect("grad")),
                ("grid", &grid, grads.get(&vg).expect("grad")),
            ] {
                let analytic = analytic.flatten_all()?.to_vec1::<f64>()?;
                let flat = base.flatten_all()?.to_vec1::<f64>()?;
                let eps = 1e-6;
                let mut worst = 0f64;
                for i in 0..flat.len() {
                    let shifted = |d: f64| -> Tensor {
                        let mut v = flat.clone();
                        v[i] += d;
                        Tensor::from_vec(v, base.shape(), &dev).unwrap()
                    };
                    let (plus, minus) = (shifted(eps), shifted(-eps));
                    let (lp, lm) = if what == "input" {
                        (
                            loss_value(op, &plus, &grid, &gout, ac),
                            loss_value(op, &minus, &grid, &gout, ac),
                        )
                    } else {
                        (
                            loss_value(op, &input, &plus, &gout, ac),
                            loss_value(op, &input, &minus, &gout, ac),
                        )
                    };
                    worst = worst.max(((lp - lm) / (2.0 * eps) - analytic[i]).abs());
                }
                println!("ac={ac} {name} d/d{what}: max |analytic − FD| = {worst:.2e}");
                assert!(worst < 1e-7, "ac={ac} {name} d/d{what}: {worst:e}");
            }
        }
    }
    Ok(())
}

#[test]
fn custom_op_equals_composition_forward_and_backward() -> R {
    let dev = Device::Cpu;
    let mut rng = StdRng::seed_from_u64(11);
    let (n, c, h, w, ho, wo) = (2, 3, 16, 12, 10, 14);
    // f64: the same arithmetic up to summation order; f32: within rounding.
    for (ac, dtype, tol) in [
        (false, DType::F64, 1e-12),
        (true, DType::F64, 1e-12),
        (false, DType::F32, 1e-5),
        (true, DType::F32, 1e-5),
    ] {
        let input = Tensor::from_vec(
            random(&mut rng, n * c * h * w, -2.0, 2.0),
            (n, c, h, w),
            &dev,
        )?
        .to_dtype(dtype)?;
        // Mixed: random points, exact pixel positions and far-outside points.
        let mut g = random(&mut rng, n * ho * wo * 2, -1.4, 1.4);
        for (i, v) in g.iter_mut().enumerate().step_by(7) {
            *v = [0.0, 1.0, -1.0, 2.5, -3.0][i % 5];
        }
        let grid = Tensor::from_vec(g, (n, ho, wo, 2), &dev)?.to_dtype(dtype)?;
        let gout = Tensor::from_vec(
            random(&mut rng, n * c * ho * wo, -1.0, 1.0),
            (n, c, ho, wo),
            &dev,
        )?
        .to_dtype(dtype)?;
        let run = |op: fn(&Tensor, &Tensor, bool) -> segdiff_mhvae::Result<Tensor>| {
            let (vi, vg) = (
                Var::from_tensor(&input).unwrap(),
                Var::from_tensor(&grid).unwrap(),
            );
            let out = op(&vi, &vg, ac).unwrap();
            let grads = (&out * &gout)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            (
                out,
                grads.get(&vi).unwrap().clone(),
                grads.get(&vg).unwrap().clone(),
            )
        };
        let a = run(grid_sample);
        let b = run(grid_sample_composed);
        for (what, x, y) in [
            ("out", &a.0, &b.0),
            ("grad input", &a.1, &b.1),
            ("grad grid", &a.2, &b.2),
        ] {
            let err = (x - y)?
                .abs()?
                .flatten_all()?
                .max(0)?
                .to_dtype(DType::F64)?
                .to_scalar::<f64>()?;
            println!("{dtype:?} ac={ac} {what}: custom vs composed max |err| = {err:.2e}");
            assert!(err < tol, "{dtype:?} ac={ac} {what}: {err:e}");
        }
    }
    Ok(())
}

#[test]
fn affine_identity_reproduces_the_input() -> R {
    let dev = Device::Cpu;
    let input = Tensor::arange(0f32, 2.0 * 7.0 * 9.0, &dev)?.reshape((1, 2, 7, 9))?;
    let theta = Tensor::new(&[[[1f32, 0., 0.], [0., 1., 0.]]], &dev)?;
    let out = grid_sample(&input, &affine_grid(&theta, 7, 9, false)?, false)?;
    let err = (out - &input)?
        .abs()?
        .flatten_all()?
        .max(0)?
        .to_scalar::<f32>()?;
    assert!(err < 1e-5, "{err}");
    Ok(())
}

fn tps(layout: ControlPoints, h: usize, w: usize) -> TpsWarp {
    TpsWarp::new(&layout.targets(), h, w, false, &Device::Cpu).unwrap()
}

fn as_tensor(points: &[[f64; 2]]) -> Tensor {
    let flat: Vec<f32> = points
        .iter()
        .flat_map(|p| [p[0] as f32, p[1] as f32])
        .collect();
    Tensor::from_vec(flat, (1, points.len(), 2), &Device::Cpu).unwrap()
}

#[test]
fn tps_identity_interpolation_affine_reproduction_and_partition_of_unity() -> R {
    let mut rng = StdRng::seed_from_u64(3);
    for layout in [
        ControlPoints::Circular { count: 20 },
        ControlPoints::Uniform { n: 5 },
    ] {
        let (h, w) = (24, 40);
        let t = tps(layout, h, w);
        let targets = layout.targets();
        let identity = Tensor::new(&[[[1f32, 0., 0.], [0., 1., 0.]]], &Device::Cpu)?;
        let lattice = affine_grid(&identity, h, w, false)?;
        let err = (t.grid(&as_tensor(&targets))? - &lattice)?
            .abs()?
            .flatten_all()?
            .max(0)?
            .to_scalar::<f32>()?;
        assert!(err < 1e-5, "{layout}: identity {err}");

        // Interpolation at the control points (f64).
        let sources: Vec<[f64; 2]> = targets
            .iter()
            .map(|p| {
                [
                    p[0] + rng.random_range(-0.2..0.2),
                    p[1] + rng.random_range(-0.2..0.2),
                ]
            })
            .collect();
        let at_targets = t.map_points(&sources, &targets)?;
        for (a, b) in at_targets.iter().zip(&sources) {
            assert!(
                (a[0] - b[0]).abs() < 1e-9 && (a[1] - b[1]).abs() < 1e-9,
                "{layout}: {a:?} vs {b:?}"
            );
        }

        // Affine reproduction: p′ = A p + t gives exactly affine_grid([A | t]).
        let (a11, a12, a13, a21, a22, a23) = (0.9, -0.3, 0.1, 0.25, 1.1, -0.05);
        let moved: Vec<[f64; 2]> = targets
            .iter()
            .map(|p| [a11 * p[0] + a12 * p[1] + a13, a21 * p[0] + a22 * p[1] + a23])
            .collect();
        let theta = Tensor::new(
            &[[
                [a11 as f32, a12 as f32, a13 as f32],
                [a21 as f32, a22 as f32, a23 as f32],
            ]],
            &Device::Cpu,
        )?;
        let err = (t.grid(&as_tensor(&moved))? - affine_grid(&theta, h, w, false)?)?
            .abs()?
            .flatten_all()?
            .max(0)?
            .to_scalar::<f32>()?;
        println!("{layout}: affine reproduction max |err| = {err:.2e}");
        assert!(err < 1e-5, "{layout}: affine reproduction {err}");

        // Rows of G sum to one: all sources at one point put the whole grid there.
        let constant = vec![[0.3, -0.7]; targets.len()];
        let g = t
            .grid(&as_tensor(&constant))?
            .flatten_all()?
            .to_vec1::<f32>()?;
        for pair in g.chunks(2) {
            assert!(
                (pair[0] - 0.3).abs() < 1e-5 && (pair[1] + 0.7).abs() < 1e-5,
                "{pair:?}"
            );
        }
    }
    Ok(())
}

#[test]
fn degenerate_control_points_are_refused() {
    let dev = Device::Cpu;
    let repeated = [[0.0, 0.0], [0.5, 0.5], [0.5, 0.5], [-0.5, 0.2]];
    assert!(TpsWarp::new(&repeated, 8, 8, false, &dev).is_err());
    let collinear = [[0.0, 0.0], [0.5, 0.5], [1.0, 1.0], [-0.5, -0.5]];
    assert!(TpsWarp::new(&collinear, 8, 8, false, &dev).is_err());
    assert!(TpsWarp::new(
        &[[0.0, f64::NAN], [1.0, 0.0], [0.0, 1.0]],
        8,
        8,
        false,
        &dev
    )
    .is_err());
    let t = tps(ControlPoints::Circular { count: 20 }, 8, 8);
    assert!(t
        .grid(&Tensor::zeros((1, 19, 2), DType::F32, &dev).unwrap())
        .is_err());
}
