//! Finite-difference check of the whole denoiser's backward pass in f64: every building block
//! that training goes through (convolutions, GroupNorm + SiLU, the time embedding MLP,
//! self-attention, nearest upsampling with skip connections) gets its gradient compared with
//! central differences, for sampled weights and for the input.

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use segdiff_unet::{expected_parameters, UNet2DConfig, UNet2DModel};

fn lcg(state: &mut u64) -> f64 {
    *state = state
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    ((*state >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
}

#[test]
fn unet_backward_matches_finite_differences() {
    let dev = Device::Cpu;
    let cfg: UNet2DConfig = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/micro_config.json"
        ))
        .unwrap(),
    )
    .unwrap();
    let mut state = 7u64;
    let varmap = VarMap::new();
    {
        let mut data = varmap.data().lock().unwrap();
        for (name, shape) in expected_parameters(&cfg).unwrap() {
            let n: usize = shape.iter().product();
            let v: Vec<f64> = (0..n)
                .map(|_| {
                    if name.contains("norm") && name.ends_with("weight") {
                        1.0 + 0.2 * lcg(&mut state)
                    } else {
                        0.4 * lcg(&mut state)
                    }
                })
                .collect();
            data.insert(
                name,
                Var::from_tensor(&Tensor::from_vec(v, shape, &dev).unwrap()).unwrap(),
            );
        }
    }
    let model = UNet2DModel::new(&cfg, VarBuilder::from_varmap(&varmap, DType::F64, &dev)).unwrap();
    let xv: Vec<f64> = (0..2 * 2 * 8 * 8).map(|_| lcg(&mut state)).collect();
    let x = Var::from_tensor(&Tensor::from_vec(xv, (2, 2, 8, 8), &dev).unwrap()).unwrap();
    let r = Tensor::from_vec(
        (0..2 * 8 * 8)
            .map(|_| lcg(&mut state))
            .collect::<Vec<f64>>(),
        (2, 1, 8, 8),
        &dev,
    )
    .unwrap();
    let t = Tensor::new(&[37i64, 612], &dev).unwrap();
    let loss = |m: &UNet2DModel, x: &Tensor| -> f64 {
        (m.forward(x, &t).unwrap() * &r)
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f64>()
            .unwrap()
    };
    let l = (model.forward(x.as_tensor(), &t).unwrap() * &r)
        .unwrap()
        .sum_all()
        .unwrap();
    let grads = l.backward().unwrap();

    let vars = varmap.data().lock().unwrap().clone();
    let mut checked = 0;
    let mut worst: f64 = 0.0;
    let mut check = |name: &str, var: &Var, grad: &Tensor| {
        let flat = var
            .as_tensor()
            .flatten_all()
            .unwrap()
            .to_vec1::<f64>()
            .unwrap();
        let g = grad.flatten_all().unwrap().to_vec1::<f64>().unwrap();
        let picks = [0, flat.len() / 3, flat.len() - 1];
        for &i in &picks {
            let eps = 1e-5;
            let mut plus = flat.clone();
            plus[i] += eps;
            var.set(&Tensor::from_vec(plus, var.shape(), &dev).unwrap())
                .unwrap();
            let lp = loss(&model, x.as_tensor());
            let mut minus = flat.clone();
            minus[i] -= eps;
            var.set(&Tensor::from_vec(minus, var.shape(), &dev).unwrap())
                .unwrap();
            let lm = loss(&model, x.as_tensor());
            var.set(&Tensor::from_vec(flat.clone(), var.shape(), &dev).unwrap())
                .unwrap();
            let fd = (lp - lm) / (2.0 * eps);
            let err = (fd - g[i]).abs() / (fd.abs().max(g[i].abs()).max(1e-3));
            worst = worst.max(err);
            assert!(
                err < 1e-4,
                "{name}[{i}]: analytic {} vs finite difference {fd}",
                g[i]
            );
            checked += 1;
        }
    };
    let mut names: Vec<&String> = vars.keys().collect();
    names.sort();
    for name in names {
        let grad = grads
            .get(vars[name].as_tensor())
            .unwrap_or_else(|| panic!("no gradient for {name}"));
        check(name, &vars[name], grad);
    }
    let gx = grads.get(x.as_tensor()).expect("no gradient for the input");
    check("input", &x, gx);
    println!("checked {checked} coordinates, worst relative error {worst:.2e}");
}
