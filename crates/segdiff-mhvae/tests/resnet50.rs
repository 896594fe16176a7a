//! The ResNet-50 trunk against torchvision.
//!
//! Always: a VarMap-built model's tensor names and shapes equal torchvision's
//! (`fixtures/resnet50_state_dict.txt`), and loading a state dict that lacks a tensor fails naming
//! it. With `SEGDIFF_RESNET50_PARITY=<folder>` written by `fixtures/make_resnet50_parity.py`
//! (random-init torchvision weights with non-trivial BatchNorm statistics, ~100 MB, kept outside
//! the repository): the pooled features of a (2, 3, 64, 64) batch equal torchvision's eval-mode
//! output within 1e-4 (absolute, f32). Run in release:
//! `SEGDIFF_RESNET50_PARITY=/tmp/resnet50_parity cargo test --release -p segdiff-mhvae \
//! --test resnet50`.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use segdiff_mhvae::resnet::{resnet50_parameter_shapes, ResNet50};

type R = Result<(), Box<dyn std::error::Error>>;

const PARITY_TOLERANCE: f32 = 1e-4;

/// `name → shape` of torchvision's `resnet50().state_dict()` without `fc.*` and
/// `num_batches_tracked`.
fn torchvision_shapes() -> Vec<(String, Vec<usize>)> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/resnet50_state_dict.txt");
    let text = std::fs::read_to_string(&path).expect("resnet50_state_dict.txt fixture");
    let mut shapes: Vec<(String, Vec<usize>)> = text
        .lines()
        .map(|l| {
            let (name, shape) = l.split_once(' ').expect("`name shape` line");
            let shape = shape.split(',').map(|d| d.parse().expect("dim")).collect();
            (name.to_string(), shape)
        })
        .collect();
    shapes.sort();
    shapes
}

#[test]
fn varmap_model_has_torchvision_names_and_shapes() -> R {
    let vm = VarMap::new();
    ResNet50::new(1, VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu))?;
    let mut built: Vec<(String, Vec<usize>)> = vm
        .data()
        .lock()
        .expect("varmap lock")
        .iter()
        .map(|(name, var)| (name.clone(), var.dims().to_vec()))
        .collect();
    built.sort();
    let expected = torchvision_shapes();
    assert_eq!(built.len(), 265);
    assert_eq!(built, expected);
    assert_eq!(resnet50_parameter_shapes(), expected);
    Ok(())
}

#[test]
fn loading_a_state_dict_without_a_tensor_names_it() -> R {
    let dev = Device::Cpu;
    let mut tensors: HashMap<String, Tensor> = torchvision_shapes()
        .into_iter()
        .map(|(name, shape)| Ok((name, Tensor::zeros(shape, DType::F32, &dev)?)))
        .collect::<candle_core::Result<_>>()?;
    // The complete state dict loads (extra tensors such as torchvision's `fc.*` are ignored).
    tensors.insert(
        "fc.weight".into(),
        Tensor::zeros((1000, 2048), DType::F32, &dev)?,
    );
    ResNet50::new(
        3,
        VarBuilder::from_tensors(tensors.clone(), DType::F32, &dev),
    )?;

    let missing = "layer3.4.bn2.running_var";
    tensors.remove(missing);
    let err = match ResNet50::new(
        3,
        VarBuilder::from_tensors(tensors.clone(), DType::F32, &dev),
    ) {
        Ok(_) => panic!("a state dict without {missing} loaded"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains(missing),
        "error does not name {missing}: {err}"
    );

    // A wrong shape is named too.
    let wrong = "layer2.0.downsample.0.weight";
    tensors.insert(missing.into(), Tensor::zeros(256, DType::F32, &dev)?);
    tensors.insert(
        wrong.into(),
        Tensor::zeros((512, 256, 3, 3), DType::F32, &dev)?,
    );
    let err = match ResNet50::new(3, VarBuilder::from_tensors(tensors, DType::F32, &dev)) {
        Ok(_) => panic!("a state dict with a 3×3 {wrong} loaded"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains(wrong), "error does not name {wrong}: {err}");
    Ok(())
}

#[test]
fn forward_matches_torchvision() -> R {
    let Some(dir) = std::env::var_os("SEGDIFF_RESNET50_PARITY") else {
        eprintln!("SEGDIFF_RESNET50_PARITY unset: torchvision forward parity skipped");
        return Ok(());
    };
    let dir = Path::new(&dir);
    let dev = Device::Cpu;
    let weights = candle_core::safetensors::load(dir.join("weights.safetensors"), &dev)?;
    let io = candle_core::safetensors::load(dir.join("io.safetensors"), &dev)?;
    let model = ResNet50::new(3, VarBuilder::from_tensors(weights, DType::F32, &dev))?;
    let ours = model.forward(&io["input"])?;
    let torch = &io["features"];
    assert_eq!(ours.dims(), torch.dims());
    let err = (&ours - torch)?.abs()?.max_all()?.to_scalar::<f32>()?;
    let scale = torch.abs()?.max_all()?.to_scalar::<f32>()?;
    eprintln!(
        "ResNet-50 vs torchvision: max |ours − torch| = {err:.3e} (features up to {scale:.3})"
    );
    assert!(
        err <= PARITY_TOLERANCE,
        "max error {err} > {PARITY_TOLERANCE}"
    );
    Ok(())
}
