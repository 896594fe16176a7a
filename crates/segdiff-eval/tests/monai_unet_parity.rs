//! MONAI `UNet` structure and forward parity (`../shared/fixtures/oracle-scripts/monai_fixture.py`:
//! UNet(spatial_dims=2, in_channels=1, out_channels=4, channels=(16,32,64,128,256),
//! strides=(2,2,2,2)), num_res_units 0 and 2).

mod shared_fixtures;

use std::collections::BTreeMap;

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{VarBuilder, VarMap};
use segdiff_eval::{init_weights_seeded, LabelMaps, MonaiUNet, MonaiUNetConfig};
use shared_fixtures::{get, shared, shared_path, values};

type TestResult = Result<(), Box<dyn std::error::Error>>;
/// State-dict tensor name -> shape.
type NameShapes = BTreeMap<String, Vec<usize>>;

/// fixtures README: MONAI UNet forward atol 1e-4.
const FORWARD_ATOL: f64 = 1e-4;

fn fixture_config(nru: usize) -> MonaiUNetConfig {
    MonaiUNetConfig::new(1, 4, vec![16, 32, 64, 128, 256], vec![2, 2, 2, 2], nru)
}

/// `name -> shape` from a committed `*_weights.txt` (`name<TAB>[d0, d1]<TAB>dtype`), and the total.
fn reference_names(file: &str) -> Result<(NameShapes, usize), Box<dyn std::error::Error>> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(file);
    let text = std::fs::read_to_string(&path)?;
    let mut names = BTreeMap::new();
    let mut total = None;
    for line in text.lines() {
        let cols: Vec<&str> = line.split('\t').collect();
        if let Some(rest) = line.strip_prefix("# total_params\t") {
            total = Some(rest.trim().parse::<usize>()?);
            continue;
        }
        let [name, shape, _dtype] = cols[..] else {
            return Err(format!("bad line in {file}: {line}").into());
        };
        let dims = shape
            .trim_matches(|c| c == '[' || c == ']')
            .split(", ")
            .map(str::parse::<usize>)
            .collect::<Result<Vec<_>, _>>()?;
        names.insert(name.to_string(), dims);
    }
    Ok((names, total.ok_or("no total_params line")?))
}

#[test]
fn varmap_names_shapes_and_parameter_counts_match_pytorch() -> TestResult {
    for (nru, file, expected_total) in [
        (0, "monai_unet_nru0_weights.txt", 660_860),
        (2, "monai_unet_nru2_weights.txt", 1_625_849),
    ] {
        let vm = VarMap::new();
        MonaiUNet::new(
            &fixture_config(nru),
            VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu),
        )?;
        let ours: NameShapes = vm
            .data()
            .lock()
            .map_err(|_| "varmap lock poisoned")?
            .iter()
            .map(|(k, v)| (k.clone(), v.as_tensor().dims().to_vec()))
            .collect();
        let (reference, total) = reference_names(file)?;
        assert_eq!(total, expected_total);
        assert_eq!(
            ours, reference,
            "nru{nru}: names/shapes differ from the PyTorch state_dict"
        );
        let count: usize = ours.values().map(|d| d.iter().product::<usize>()).sum();
        println!("nru{nru}: {} tensors, {count} parameters", ours.len());
        assert_eq!(count, expected_total);
    }
    Ok(())
}

#[test]
fn amos_sized_variant_builds_and_runs() -> TestResult {
    // channels (16..512) with five stride-2 levels, as used for AMOS.
    let cfg = MonaiUNetConfig::new(1, 16, vec![16, 32, 64, 128, 256, 512], vec![2; 5], 2);
    let vm = VarMap::new();
    let net = MonaiUNet::new(&cfg, VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu))?;
    init_weights_seeded(&vm, 0)?;
    let x = Tensor::zeros((1, 1, 64, 64), DType::F32, &Device::Cpu)?;
    assert_eq!(net.forward(&x)?.dims(), &[1, 16, 64, 64]);
    assert_eq!(net.encode_features(&x)?.dims(), &[1, 512]);
    assert_eq!(net.feature_dim(), 512);
    Ok(())
}

fn max_abs(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}

fn forward_parity(nru: usize) -> TestResult {
    let net = MonaiUNet::load(
        &fixture_config(nru),
        &shared_path(&format!("monai_unet_nru{nru}_weights.safetensors")),
        &Device::Cpu,
    )?;
    let io = shared("monai_unet_io.safetensors");
    for (input, output) in [("x", "out"), ("x2", "out2")] {
        let x = get(&io, &format!("nru{nru}.{input}"));
        let y = net.forward(x)?;
        let want = get(&io, &format!("nru{nru}.{output}"));
        assert_eq!(y.dims(), want.dims());
        let err = max_abs(&values(&y), &values(want));
        println!("nru{nru} {output}: max abs err {err:.3e} (tol {FORWARD_ATOL:e})");
        assert!(err <= FORWARD_ATOL, "nru{nru} {output}");
    }
    let seg = net.segment(get(&io, &format!("nru{nru}.x2")))?;
    let want = LabelMaps::from_tensor(get(&io, &format!("nru{nru}.argmax2")))?;
    let mismatches = seg
        .as_slice()
        .iter()
        .zip(want.as_slice())
        .filter(|(a, b)| a != b)
        .count();
    println!(
        "nru{nru} argmax2: {mismatches} of {} pixels differ",
        want.as_slice().len()
    );
    assert_eq!(mismatches, 0);
    Ok(())
}

#[test]
#[ignore = "needs ../shared/fixtures; run by cargo xtask parity"]
fn forward_matches_monai_nru0() -> TestResult {
    forward_parity(0)
}

#[test]
#[ignore = "needs ../shared/fixtures; run by cargo xtask parity"]
fn forward_matches_monai_nru2() -> TestResult {
    forward_parity(2)
}
