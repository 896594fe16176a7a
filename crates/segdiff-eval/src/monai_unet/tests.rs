//! Unit tests of the MONAI UNet: block values, the fused inference path, shapes, seeded init,
//! config validation and finite-difference gradients.

use super::blocks::{instance_norm, prelu};
use super::*;
use crate::gradient_check::{check_gradients, GradCase};

fn build(cfg: &MonaiUNetConfig, dtype: DType) -> Result<(VarMap, MonaiUNet)> {
    let vm = VarMap::new();
    let vb = VarBuilder::from_varmap(&vm, dtype, &Device::Cpu);
    let net = MonaiUNet::new(cfg, vb)?;
    init_weights_seeded(&vm, 3)?;
    Ok((vm, net))
}

fn seeded_input(shape: (usize, usize, usize, usize), seed: u64) -> candle_core::Result<Tensor> {
    let mut rng = StdRng::seed_from_u64(seed);
    let n = shape.0 * shape.1 * shape.2 * shape.3;
    let v: Vec<f64> = (0..n).map(|_| 2.0 * rng.random::<f64>() - 1.0).collect();
    Tensor::from_vec(v, shape, &Device::Cpu)
}

#[test]
fn instance_norm_and_prelu_values() -> Result<()> {
    let x = Tensor::new(&[[[[1f64, 3.], [5., 7.]]]], &Device::Cpu)?;
    // mean 4, biased var 5.
    let y = instance_norm(&x, None)?.flatten_all()?.to_vec1::<f64>()?;
    let s = (5.0f64 + 1e-5).sqrt();
    for (got, raw) in y.iter().zip([1.0, 3.0, 5.0, 7.0]) {
        assert!((got - (raw - 4.0) / s).abs() < 1e-12);
    }
    let slope = Tensor::new(&[0.25f64], &Device::Cpu)?;
    let p = prelu(&Tensor::new(&[-2f64, 0.5], &Device::Cpu)?, &slope)?.to_vec1::<f64>()?;
    assert_eq!(p, vec![-0.5, 0.5]);
    Ok(())
}

/// Loaded weights (nothing tracks gradients) take the fused norm + PReLU kernel; trainable
/// ones the differentiable ops. Both give the same network.
#[test]
fn fused_inference_path_matches_the_trainable_one() -> Result<()> {
    let dir = tempfile::tempdir().expect("temporary folder");
    for nru in [0, 2] {
        let cfg = MonaiUNetConfig::new(2, 3, vec![4, 6, 8], vec![2, 2], nru);
        let (vm, trainable) = build(&cfg, DType::F32)?;
        let path = dir.path().join(format!("nru{nru}.safetensors"));
        vm.save(&path)?;
        let loaded = MonaiUNet::load(&cfg, &path, &Device::Cpu)?;
        let x = seeded_input((2, 2, 16, 12), 5)?.to_dtype(DType::F32)?;
        let (a, b) = (trainable.forward(&x)?, loaded.forward(&x)?);
        assert!(
            a.track_op() && !b.track_op(),
            "the two paths were not taken"
        );
        let diff = (a - b)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(diff < 1e-5, "nru {nru}: {diff:e}");
    }
    Ok(())
}

#[test]
fn forward_shapes_and_features_for_odd_strides() -> Result<()> {
    // Strides 2 and 3 exercise output_padding = stride - 1.
    let cfg = MonaiUNetConfig::new(2, 3, vec![4, 6, 8], vec![2, 3], 1);
    let (_, net) = build(&cfg, DType::F32)?;
    let x = seeded_input((2, 2, 12, 18), 1)?.to_dtype(DType::F32)?;
    assert_eq!(net.forward(&x)?.dims(), &[2, 3, 12, 18]);
    let f = net.encode_features(&x)?;
    assert_eq!(f.dims(), &[2, 8]);
    assert!(net
        .forward(&seeded_input((1, 2, 12, 16), 1)?.to_dtype(DType::F32)?)
        .is_err());
    assert_eq!(net.segment(&x)?.shape(), (2, 12, 18));
    Ok(())
}

#[test]
fn seeded_init_is_reproducible_and_follows_fan_in() -> Result<()> {
    let cfg = MonaiUNetConfig::new(1, 2, vec![4, 8], vec![2], 0);
    let (a, _) = build(&cfg, DType::F32)?;
    let (b, _) = build(&cfg, DType::F32)?;
    let get = |vm: &VarMap, name: &str| -> Result<Vec<f32>> {
        let data = vm.data().lock().map_err(|_| EvalError::InvalidArgument {
            name: "varmap",
            value: String::new(),
            reason: "poisoned",
        })?;
        Ok(data[name].as_tensor().flatten_all()?.to_vec1::<f32>()?)
    };
    let wa = get(&a, "model.0.conv.weight")?;
    assert_eq!(wa, get(&b, "model.0.conv.weight")?);
    // fan_in = 1 * 3 * 3 -> bound 1/3.
    assert!(wa.iter().all(|v| v.abs() <= 1.0 / 3.0));
    assert!(wa.iter().any(|v| v.abs() > 0.2));
    assert_eq!(get(&a, "model.0.adn.A.weight")?, vec![0.25]);
    Ok(())
}

#[test]
fn rejects_unsupported_config() {
    let mut cfg = MonaiUNetConfig::new(1, 2, vec![4, 8], vec![2], 0);
    cfg.dropout = 0.1;
    assert!(matches!(
        cfg.validate(),
        Err(EvalError::UnsupportedConfig {
            field: "dropout",
            ..
        })
    ));
    let mut cfg = MonaiUNetConfig::new(1, 2, vec![4, 8], vec![2, 2], 0);
    assert!(matches!(
        cfg.validate(),
        Err(EvalError::UnsupportedConfig {
            field: "strides",
            ..
        })
    ));
    cfg.strides = vec![2];
    cfg.norm = "batch".into();
    assert!(matches!(
        cfg.validate(),
        Err(EvalError::UnsupportedConfig { field: "norm", .. })
    ));
}

#[test]
fn config_json_defaults_match_monai() -> Result<()> {
    let cfg: MonaiUNetConfig = serde_json::from_str(
        r#"{"in_channels":1,"out_channels":4,"channels":[16,32,64,128,256],"strides":[2,2,2,2]}"#,
    )
    .map_err(|source| EvalError::Json {
        path: "<inline>".into(),
        source,
    })?;
    assert_eq!(
        cfg,
        MonaiUNetConfig::new(1, 4, vec![16, 32, 64, 128, 256], vec![2, 2, 2, 2], 0)
    );
    Ok(())
}

/// f64 finite differences through every building block, for the input and the weights.
#[test]
fn gradients_match_finite_differences() -> Result<()> {
    for nru in [0, 2] {
        let cfg = MonaiUNetConfig::new(2, 3, vec![3, 4, 5], vec![2, 2], nru);
        let (vm, net) = build(&cfg, DType::F64)?;
        let x = candle_core::Var::from_tensor(&seeded_input((2, 2, 8, 8), 5)?)?;
        let weights = seeded_input((2, 3, 8, 8), 6)?;
        let worst = check_gradients(&GradCase {
            loss: &|| (net.forward(x.as_tensor())? * &weights)?.sum_all(),
            vars: vm.all_vars().into_iter().chain([x.clone()]).collect(),
            samples_per_var: 3,
            seed: 11,
        })?;
        println!("nru {nru}: worst relative FD error {worst:.2e}");
        assert!(worst < 1e-4, "nru {nru}: worst relative FD error {worst}");
        // The feature extractor (bottom layer + pooling) too.
        let worst = check_gradients(&GradCase {
            loss: &|| (net.encode_features(x.as_tensor())?.sqr()?).sum_all(),
            vars: vec![x.clone()],
            samples_per_var: 8,
            seed: 12,
        })?;
        println!("nru {nru} features: worst relative FD error {worst:.2e}");
        assert!(
            worst < 1e-4,
            "nru {nru} features: worst relative FD error {worst}"
        );
    }
    Ok(())
}
