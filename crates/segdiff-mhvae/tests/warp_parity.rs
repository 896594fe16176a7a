//! Parity of the warp ops with torch 2.15 (`F.affine_grid`, `F.grid_sample`, `F.interpolate`:
//! forward and gradients, both `align_corners`) and of the TPS grid with a float64 numpy
//! implementation of the paper's App. B, from `fixtures/warp_oracle.safetensors`
//! (`fixtures/make_warp_fixtures.py`). Tolerances: 1e-6 for affine_grid, 1e-5 for the rest
//! (absolute, f32 against torch's f32 or the f64 oracle).

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor, Var};
use segdiff_mhvae::warp::{
    affine_grid, grid_sample, grid_sample_composed, resize_bilinear, ControlPoints, TpsWarp,
};

type R = Result<(), Box<dyn std::error::Error>>;

fn oracle() -> HashMap<String, Tensor> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/warp_oracle.safetensors");
    candle_core::safetensors::load(&path, &Device::Cpu).expect("warp oracle fixture")
}

fn get<'a>(m: &'a HashMap<String, Tensor>, key: &str) -> &'a Tensor {
    m.get(key).unwrap_or_else(|| panic!("fixture has no {key}"))
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.dims(), b.dims(), "shape");
    let a = a.to_dtype(DType::F64).unwrap().flatten_all().unwrap();
    let b = b.to_dtype(DType::F64).unwrap().flatten_all().unwrap();
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f64>()
        .unwrap()
}

fn check(what: &str, got: &Tensor, want: &Tensor, tol: f64) {
    let err = max_abs_diff(got, want);
    println!("{what}: max |err| = {err:.3e}");
    assert!(err <= tol, "{what}: max |err| {err:.3e} > {tol:.0e}");
}

#[test]
fn affine_grid_matches_torch() -> R {
    let m = oracle();
    for ac in [0, 1] {
        for case in [0, 1] {
            let p = format!("affine_grid.ac{ac}.case{case}");
            let theta = get(&m, &format!("{p}.theta"));
            let want = get(&m, &format!("{p}.grid"));
            let (_, h, w, _) = want.dims4()?;
            check(&p, &affine_grid(theta, h, w, ac == 1)?, want, 1e-6);
        }
    }
    Ok(())
}

/// Forward, grad_input and grad_grid (grid points include exact pixel centres, ±1, 0 and points
/// far outside) for the CPU custom op and for the composed version.
#[test]
fn grid_sample_matches_torch_forward_and_both_gradients() -> R {
    let m = oracle();
    for ac in [false, true] {
        let p = format!("grid_sample.ac{}", ac as u8);
        let input = Var::from_tensor(get(&m, &format!("{p}.input")))?;
        let grid = Var::from_tensor(get(&m, &format!("{p}.grid")))?;
        let gout = get(&m, &format!("{p}.gout"));
        for (name, out) in [
            ("custom op", grid_sample(&input, &grid, ac)?),
            ("composed", grid_sample_composed(&input, &grid, ac)?),
        ] {
            check(
                &format!("{p} {name} out"),
                &out,
                get(&m, &format!("{p}.out")),
                1e-5,
            );
            let grads = (out * gout)?.sum_all()?.backward()?;
            let gi = grads.get(&input).expect("input grad");
            let gg = grads.get(&grid).expect("grid grad");
            check(
                &format!("{p} {name} grad_input"),
                gi,
                get(&m, &format!("{p}.grad_input")),
                1e-5,
            );
            check(
                &format!("{p} {name} grad_grid"),
                gg,
                get(&m, &format!("{p}.grad_grid")),
                1e-5,
            );
        }
    }
    Ok(())
}

#[test]
fn bilinear_resize_matches_torch_forward_and_gradient() -> R {
    let m = oracle();
    for ac in [false, true] {
        for case in 0..5 {
            let p = format!("interpolate.ac{}.case{case}", ac as u8);
            let input = Var::from_tensor(get(&m, &format!("{p}.input")))?;
            let want = get(&m, &format!("{p}.out"));
            let (_, _, oh, ow) = want.dims4()?;
            let out = resize_bilinear(&input, oh, ow, ac)?;
            check(&format!("{p} out"), &out, want, 1e-5);
            let grads = (out * get(&m, &format!("{p}.gout")))?
                .sum_all()?
                .backward()?;
            check(
                &format!("{p} grad_input"),
                grads.get(&input).expect("grad"),
                get(&m, &format!("{p}.grad_input")),
                1e-5,
            );
        }
    }
    Ok(())
}

fn points(t: &Tensor) -> Vec<[f64; 2]> {
    t.to_vec2::<f64>()
        .unwrap()
        .into_iter()
        .map(|p| [p[0], p[1]])
        .collect()
}

#[test]
fn tps_grid_matches_the_float64_app_b_oracle() -> R {
    let m = oracle();
    for (name, layout) in [
        ("circular20", ControlPoints::Circular { count: 20 }),
        ("uniform25", ControlPoints::Uniform { n: 5 }),
    ] {
        for (h, w) in [(32, 32), (64, 64), (24, 40)] {
            let p = format!("tps.{name}.{h}x{w}");
            let targets = points(get(&m, &format!("{p}.targets")));
            // Our layouts are the oracle's.
            for (a, b) in targets.iter().zip(layout.targets()) {
                assert!(
                    (a[0] - b[0]).abs() < 1e-12 && (a[1] - b[1]).abs() < 1e-12,
                    "{p} layout"
                );
            }
            let tps = TpsWarp::new(&targets, h, w, false, &Device::Cpu)?;
            let sources = get(&m, &format!("{p}.sources"));
            let grid = tps.grid(&sources.to_dtype(DType::F32)?)?;
            check(&p, &grid, get(&m, &format!("{p}.grid")), 1e-5);
        }
    }
    Ok(())
}
