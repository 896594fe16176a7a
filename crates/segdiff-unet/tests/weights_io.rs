//! Loading and saving diffusers model directories: formats, legacy names, round trips, and the
//! errors a user gets for a wrong or unsupported checkpoint.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use segdiff_unet::{load_unet, save_unet, UNet2DConfig, UnetError};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// A model dir holding `config` and the weight file `weights` under the name `file_name`.
fn model_dir(config: &str, weights: &str, file_name: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(fixture(config), dir.path().join("config.json")).unwrap();
    std::fs::copy(fixture(weights), dir.path().join(file_name)).unwrap();
    dir
}

fn micro_input() -> (Tensor, Tensor) {
    let x: Vec<f32> = (0..2 * 2 * 8 * 8)
        .map(|i| ((i * 37 % 101) as f32 / 50.0) - 1.0)
        .collect();
    let x = Tensor::from_vec(x, (2, 2, 8, 8), &Device::Cpu).unwrap();
    let t = Tensor::new(&[3i64, 870], &Device::Cpu).unwrap();
    (x, t)
}

fn bits(t: &Tensor) -> Vec<u32> {
    t.flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
        .iter()
        .map(|v| v.to_bits())
        .collect()
}

#[test]
fn pytorch_bin_with_legacy_names_equals_safetensors() {
    let st = model_dir(
        "micro_config.json",
        "micro_weights.safetensors",
        "diffusion_pytorch_model.safetensors",
    );
    let bin = model_dir(
        "micro_config.json",
        "micro_legacy.bin",
        "diffusion_pytorch_model.bin",
    );
    let a = load_unet(st.path(), DType::F32, &Device::Cpu).unwrap();
    let b = load_unet(bin.path(), DType::F32, &Device::Cpu).unwrap();
    assert_eq!(a.format, segdiff_unet::WeightFormat::Safetensors);
    assert_eq!(b.format, segdiff_unet::WeightFormat::PytorchBin);
    let (x, t) = micro_input();
    let ya = a.model.forward(&x, &t).unwrap();
    let yb = b.model.forward(&x, &t).unwrap();
    assert_eq!(
        bits(&ya),
        bits(&yb),
        "identical weights must give identical outputs"
    );
    // The output actually depends on the attention weights that were renamed.
    assert!(
        ya.abs()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
            > 0.0
    );
}

#[test]
fn save_then_load_gives_identical_outputs_and_diffusers_keys() {
    let src = model_dir(
        "micro_config.json",
        "micro_legacy.bin",
        "diffusion_pytorch_model.bin",
    );
    let a = load_unet(src.path(), DType::F32, &Device::Cpu).unwrap();
    let out = tempfile::tempdir().unwrap();
    let unet_dir = out.path().join("unet");
    save_unet(&unet_dir, &a.config, &a.tensors).unwrap();
    let b = load_unet(out.path(), DType::F32, &Device::Cpu).unwrap();
    let (x, t) = micro_input();
    assert_eq!(
        bits(&a.model.forward(&x, &t).unwrap()),
        bits(&b.model.forward(&x, &t).unwrap())
    );
    // Written with the current diffusers names, nothing else in the folder.
    let saved = candle_core::safetensors::load(
        unet_dir.join("diffusion_pytorch_model.safetensors"),
        &Device::Cpu,
    )
    .unwrap();
    assert!(saved.contains_key("down_blocks.1.attentions.0.to_out.0.weight"));
    assert!(!saved
        .keys()
        .any(|k| k.contains("proj_attn") || k.contains(".query.")));
    let mut names: Vec<_> = std::fs::read_dir(&unet_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["config.json", "diffusion_pytorch_model.safetensors"]
    );
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(unet_dir.join("config.json")).unwrap())
            .unwrap();
    assert_eq!(cfg["_class_name"], "UNet2DModel");
    assert_eq!(cfg["block_out_channels"], serde_json::json!([4, 8]));
}

#[test]
fn half_precision_loads_and_stays_close() {
    let st = model_dir(
        "micro_config.json",
        "micro_weights.safetensors",
        "diffusion_pytorch_model.safetensors",
    );
    let f32m = load_unet(st.path(), DType::F32, &Device::Cpu).unwrap();
    let (x, t) = micro_input();
    let want = f32m.model.forward(&x, &t).unwrap();
    // candle's CPU backend has no bf16 matmul: bf16 weights load everywhere, run on CUDA only.
    let bf16 = load_unet(st.path(), DType::BF16, &Device::Cpu).unwrap();
    assert!(bf16.tensors.values().all(|t| t.dtype() == DType::BF16));
    {
        let dtype = DType::F16;
        let m = load_unet(st.path(), dtype, &Device::Cpu).unwrap();
        assert!(m.tensors.values().all(|t| t.dtype() == dtype));
        let got = m
            .model
            .forward(&x.to_dtype(dtype).unwrap(), &t)
            .unwrap()
            .to_dtype(DType::F32)
            .unwrap();
        let err = (got - &want)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        let scale = want
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        println!("{dtype:?}: max abs err {err:.3e} (output scale {scale:.3})");
        assert!(err < 0.1 * scale.max(1.0), "{dtype:?} drifted by {err}");
    }
}

#[test]
fn missing_unexpected_and_misshaped_tensors_are_all_listed() {
    let cfg = UNet2DConfig::from_file(&fixture("micro_config.json")).unwrap();
    let mut tensors: HashMap<String, Tensor> =
        candle_core::safetensors::load(fixture("micro_weights.safetensors"), &Device::Cpu).unwrap();
    tensors.remove("conv_in.bias");
    tensors.insert(
        "extra.weight".into(),
        Tensor::zeros(3, DType::F32, &Device::Cpu).unwrap(),
    );
    tensors.insert(
        "conv_out.bias".into(),
        Tensor::zeros(5, DType::F32, &Device::Cpu).unwrap(),
    );
    let err = segdiff_unet::model_from_tensors(
        &cfg,
        tensors,
        DType::F32,
        &Device::Cpu,
        Path::new("w.safetensors"),
    )
    .unwrap_err();
    let UnetError::WeightMismatch {
        missing,
        unexpected,
        shape,
        ..
    } = &err
    else {
        panic!("wrong error {err}");
    };
    assert_eq!(missing, &["conv_in.bias"]);
    assert_eq!(unexpected, &["extra.weight"]);
    assert_eq!(shape, &[("conv_out.bias".to_string(), vec![1], vec![5])]);
    let msg = err.to_string();
    assert!(
        msg.contains("w.safetensors")
            && msg.contains("conv_in.bias")
            && msg.contains("extra.weight"),
        "{msg}"
    );
}

#[test]
fn unsupported_config_values_are_rejected_by_name() {
    let base = std::fs::read_to_string(fixture("unet_tiny_config.json")).unwrap();
    let cases = [
        (
            "\"time_embedding_type\": \"positional\"",
            "\"time_embedding_type\": \"fourier\"",
            "time_embedding_type",
        ),
        (
            "\"class_embed_type\": null",
            "\"class_embed_type\": \"timestep\"",
            "class_embed_type",
        ),
        (
            "\"AttnDownBlock2D\"",
            "\"CrossAttnDownBlock2D\"",
            "down_block_types",
        ),
        (
            "\"AttnUpBlock2D\"",
            "\"AttnSkipUpBlock2D\"",
            "up_block_types",
        ),
        (
            "\"resnet_time_scale_shift\": \"default\"",
            "\"resnet_time_scale_shift\": \"scale_shift\"",
            "resnet_time_scale_shift",
        ),
        ("\"act_fn\": \"silu\"", "\"act_fn\": \"gelu\"", "act_fn"),
        (
            "\"norm_num_groups\": 8",
            "\"norm_num_groups\": 3",
            "block_out_channels",
        ),
    ];
    for (from, to, field) in cases {
        assert!(base.contains(from), "fixture lacks {from}");
        let err = UNet2DConfig::from_json_str(&base.replacen(from, to, 1)).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains(field), "{to}: {msg}");
    }
    assert!(UNet2DConfig::from_json_str(&base).is_ok());
}

#[test]
fn not_a_model_directory_and_missing_weights_are_clear() {
    let empty = tempfile::tempdir().unwrap();
    let err = load_unet(empty.path(), DType::F32, &Device::Cpu).unwrap_err();
    assert!(matches!(err, UnetError::NotAModelDir { .. }), "{err}");
    std::fs::copy(
        fixture("micro_config.json"),
        empty.path().join("config.json"),
    )
    .unwrap();
    let err = load_unet(empty.path(), DType::F32, &Device::Cpu).unwrap_err();
    assert!(matches!(err, UnetError::MissingWeights { .. }), "{err}");
    std::fs::write(
        empty.path().join("diffusion_pytorch_model.safetensors"),
        b"not a safetensors file",
    )
    .unwrap();
    let err = load_unet(empty.path(), DType::F32, &Device::Cpu).unwrap_err();
    assert!(
        err.to_string()
            .contains("diffusion_pytorch_model.safetensors"),
        "{err}"
    );
}

/// The message and every source, joined as anyhow's `{:#}` prints them.
fn chain(e: &UnetError) -> String {
    let top: &dyn std::error::Error = e;
    std::iter::successors(Some(top), |e| e.source())
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join(": ")
}

#[test]
fn a_wrapped_cause_is_named_once_after_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.json");
    std::fs::write(&path, r#"{"a":"#).unwrap();
    let err = UNet2DConfig::from_file(&path).unwrap_err();
    assert!(matches!(err, UnetError::ConfigParse { .. }), "{err:?}");
    let text = chain(&err);
    let head = format!("{}: not a valid config.json: ", path.display());
    assert!(text.starts_with(&head), "{text}");
    assert_eq!(text.matches("EOF while parsing").count(), 1, "{text}");

    let absent = dir.path().join("absent.json");
    let err = UNet2DConfig::from_file(&absent).unwrap_err();
    assert!(matches!(err, UnetError::Io { .. }), "{err:?}");
    let cause = std::fs::read(&absent).unwrap_err().to_string();
    assert_eq!(chain(&err), format!("{}: {cause}", absent.display()));

    let weights = dir.path().join("w.safetensors");
    std::fs::write(&weights, b"not a safetensors file").unwrap();
    let err = segdiff_unet::read_weight_file(&weights).unwrap_err();
    assert!(matches!(err, UnetError::WeightsRead { .. }), "{err:?}");
    let cause = std::error::Error::source(&err).unwrap().to_string();
    let text = chain(&err);
    assert!(
        text.contains("w.safetensors: cannot read weights: "),
        "{text}"
    );
    assert_eq!(text.matches(&cause).count(), 1, "{text}");
}

#[test]
fn wrong_input_shapes_are_errors_not_panics() {
    let st = model_dir(
        "micro_config.json",
        "micro_weights.safetensors",
        "diffusion_pytorch_model.safetensors",
    );
    let m = load_unet(st.path(), DType::F32, &Device::Cpu)
        .unwrap()
        .model;
    let t = Tensor::new(500i64, &Device::Cpu).unwrap();
    let x3 = Tensor::zeros((1, 3, 8, 8), DType::F32, &Device::Cpu).unwrap();
    assert!(m
        .forward(&x3, &t)
        .unwrap_err()
        .to_string()
        .contains("in_channels"));
    let odd = Tensor::zeros((1, 2, 7, 7), DType::F32, &Device::Cpu).unwrap();
    assert!(m.forward(&odd, &t).is_err());
    let x = Tensor::zeros((2, 2, 8, 8), DType::F32, &Device::Cpu).unwrap();
    let t3 = Tensor::new(&[1i64, 2, 3], &Device::Cpu).unwrap();
    assert!(m
        .forward(&x, &t3)
        .unwrap_err()
        .to_string()
        .contains("batch"));
    // A 0-d timestep is broadcast over the batch: same as passing it per sample.
    let per_sample = Tensor::new(&[500i64, 500], &Device::Cpu).unwrap();
    assert_eq!(
        bits(&m.forward(&x, &t).unwrap()),
        bits(&m.forward(&x, &per_sample).unwrap())
    );
}
