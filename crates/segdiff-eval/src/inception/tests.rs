//! Unit tests of Inception-v3: torch parity of the resize, preprocessing and blocks, the
//! torchvision tensor listing, weight checks and the seeded network.

use super::preprocess::interpolation_matrix;
use super::*;
use std::collections::BTreeMap;

/// Tolerance of the block parities (f32 on both sides).
const PARTS_ATOL: f64 = 1e-4;
/// Tolerance of the resize parities (a few float32 ulps of values in [0, 1]).
const RESIZE_ATOL: f64 = 1e-6;

fn parts() -> HashMap<String, Tensor> {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/inception_v3_parts.safetensors");
    match candle_core::safetensors::load(&path, &Device::Cpu) {
        Ok(t) => t,
        Err(e) => panic!("cannot read {}: {e}", path.display()),
    }
}

fn get<'a>(t: &'a HashMap<String, Tensor>, key: &str) -> &'a Tensor {
    t.get(key)
        .unwrap_or_else(|| panic!("fixture has no tensor `{key}`"))
}

/// The tensors under `prefix.` with the prefix removed.
fn block_vb(t: &HashMap<String, Tensor>, prefix: &str) -> VarBuilder<'static> {
    let p = format!("{prefix}.");
    let sub: HashMap<String, Tensor> = t
        .iter()
        .filter_map(|(k, v)| k.strip_prefix(&p).map(|s| (s.to_string(), v.clone())))
        .collect();
    VarBuilder::from_tensors(sub, DType::F32, &Device::Cpu)
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.dims(), b.dims());
    (a.to_dtype(DType::F64).unwrap() - b.to_dtype(DType::F64).unwrap())
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f64>()
        .unwrap()
}

fn check_within(what: &str, got: &Tensor, want: &Tensor, atol: f64) {
    let err = max_abs_diff(got, want);
    println!("{what}: max abs err {err:.3e} (atol {atol:e})");
    assert!(err <= atol, "{what}: max abs err {err}");
}

fn check(what: &str, got: &Tensor, want: &Tensor) {
    check_within(what, got, want, PARTS_ATOL);
}

#[test]
fn interpolation_weights_follow_torch_by_hand() {
    // 2 -> 4: sources -0.25 (clamped to 0), 0.25, 0.75, 1.25 (upper index clamped).
    let m = interpolation_matrix(4, 2);
    assert_eq!(m, vec![1.0, 0.0, 0.75, 0.25, 0.25, 0.75, 0.0, 1.0]);
    // 4 -> 2: sources 0.5 and 2.5, no antialias.
    let m = interpolation_matrix(2, 4);
    assert_eq!(m, vec![0.5, 0.5, 0.0, 0.0, 0.0, 0.0, 0.5, 0.5]);
    assert_eq!(interpolation_matrix(2, 2), vec![1.0, 0.0, 0.0, 1.0]);
    // 1 -> 3: every output copies the single input.
    assert_eq!(interpolation_matrix(3, 1), vec![1.0; 3]);
}

#[test]
fn resize_and_preprocessing_match_torch() -> Result<()> {
    let t = parts();
    let x = get(&t, "resize.x");
    for name in ["up", "down", "mixed", "same"] {
        let want = get(&t, &format!("resize.{name}"));
        let (_, _, h, w) = want.dims4()?;
        let got = resize_bilinear(x, h, w)?;
        check_within(&format!("resize {name}"), &got, want, RESIZE_ATOL);
    }
    let pre = inception_input(get(&t, "preprocess.x"))?;
    assert_eq!(pre.dims(), &[1, 3, 299, 299]);
    let want = get(&t, "preprocess.channel0");
    for c in 0..3 {
        let got = pre.narrow(1, c, 1)?;
        check_within(&format!("preprocess channel {c}"), &got, want, RESIZE_ATOL);
    }
    assert!(inception_input(&Tensor::zeros((1, 2, 8, 8), DType::F32, &Device::Cpu)?).is_err());
    Ok(())
}

#[test]
fn stem_and_blocks_match_torchvision() -> Result<()> {
    let t = parts();
    let vb = block_vb(&t, "stem");
    let stem = [
        BasicConv2d::square(vb.pp("Conv2d_1a_3x3"), 3, 32, 3, 2, 0)?,
        BasicConv2d::square(vb.pp("Conv2d_2a_3x3"), 32, 32, 3, 1, 0)?,
        BasicConv2d::square(vb.pp("Conv2d_2b_3x3"), 32, 64, 3, 1, 1)?,
    ];
    let y = max_pool_3x3_s2(&chain(get(&t, "stem.x"), &stem.iter().collect::<Vec<_>>())?)?;
    check("stem (Conv2d_1a..2b, max pool)", &y, get(&t, "stem.out"));

    let a = InceptionA::new(block_vb(&t, "inception_a"), 5, 6)?;
    let y = a.forward(get(&t, "inception_a.x"))?;
    check(
        "InceptionA(5, pool_features=6)",
        &y,
        get(&t, "inception_a.out"),
    );

    let c = InceptionC::new(block_vb(&t, "inception_c"), 6, 7)?;
    let y = c.forward(get(&t, "inception_c.x"))?;
    check(
        "InceptionC(6, channels_7x7=7)",
        &y,
        get(&t, "inception_c.out"),
    );
    Ok(())
}

/// `name -> shape` and the learnable-parameter total of the committed torchvision listing.
fn torchvision_listing() -> (BTreeMap<String, Vec<usize>>, usize) {
    let text = include_str!("../../tests/fixtures/inception_v3_tensors.txt");
    let mut names = BTreeMap::new();
    let mut total = None;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# total_params\t") {
            total = Some(rest.trim().parse::<usize>().unwrap());
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let cols: Vec<&str> = line.split('\t').collect();
        assert_eq!(cols.len(), 3, "bad line: {line}");
        let dims = cols[1]
            .trim_matches(|c| c == '[' || c == ']')
            .split(", ")
            .map(|d| d.parse::<usize>().unwrap())
            .collect();
        names.insert(cols[0].to_string(), dims);
    }
    (names, total.expect("no total_params line"))
}

#[test]
fn requested_tensors_match_the_torchvision_state_dict() -> Result<()> {
    let requested = InceptionV3::expected_tensors()?;
    let ours: BTreeMap<String, Vec<usize>> = requested.iter().cloned().collect();
    assert_eq!(ours.len(), requested.len(), "a name was requested twice");
    let (reference, total) = torchvision_listing();
    assert_eq!(ours, reference);
    let learnable: usize = ours
        .iter()
        .filter(|(k, _)| !k.ends_with("running_mean") && !k.ends_with("running_var"))
        .map(|(_, d)| d.iter().product::<usize>())
        .sum();
    println!("{} tensors, {learnable} learnable parameters", ours.len());
    assert_eq!(learnable, total);
    Ok(())
}

/// Zero-cost stand-ins for every tensor the network reads.
fn placeholder_weights() -> Result<HashMap<String, Tensor>> {
    let mut map = HashMap::new();
    for (name, dims) in InceptionV3::expected_tensors()? {
        let t = Tensor::zeros((), DType::F32, &Device::Cpu)?.broadcast_as(dims)?;
        map.insert(name, t);
    }
    Ok(map)
}

#[test]
fn weight_check_names_every_problem_and_ignores_the_classifier() -> Result<()> {
    let src = Path::new("w.safetensors");
    let dev = Device::Cpu;
    let mut w = placeholder_weights()?;
    let zero = Tensor::zeros(3, DType::F32, &dev)?;
    for extra in [
        "fc.weight",
        "AuxLogits.conv0.conv.weight",
        "Mixed_5b.branch1x1.bn.num_batches_tracked",
    ] {
        w.insert(extra.into(), zero.clone());
    }
    let filtered = |w: &HashMap<String, Tensor>| {
        w.iter()
            .filter(|(k, _)| !is_ignored(k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect::<HashMap<_, _>>()
    };
    assert!(InceptionV3::from_checked_tensors(filtered(&w), &dev, src).is_ok());

    w.remove("Mixed_6c.branch7x7dbl_3.conv.weight");
    w.insert("Mixed_7c.branch_pool.bn.running_var".into(), zero.clone());
    w.insert("Mixed_8a.conv.weight".into(), zero);
    let err = InceptionV3::from_checked_tensors(filtered(&w), &dev, src).unwrap_err();
    match &err {
        EvalError::WeightMismatch { problems, .. } => {
            assert_eq!(problems.missing, ["Mixed_6c.branch7x7dbl_3.conv.weight"]);
            assert_eq!(
                problems.mis_shaped,
                [(
                    "Mixed_7c.branch_pool.bn.running_var".to_string(),
                    vec![192],
                    vec![3]
                )]
            );
            assert_eq!(problems.unexpected, ["Mixed_8a.conv.weight"]);
        }
        other => panic!("unexpected error {other:?}"),
    }
    let text = err.to_string();
    assert!(
        text.contains("w.safetensors") && text.contains("expected [192], found [3]"),
        "{text}"
    );
    Ok(())
}

#[test]
fn seeded_network_gives_pooled_features_and_treats_grey_as_rgb() -> Result<()> {
    let vm = VarMap::new();
    let net = InceptionV3::new(VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu))?;
    init_inception_seeded(&vm, 3)?;
    // Smallest input the network takes, a grey image and its RGB replica.
    let grey: Vec<f32> = (0..80 * 75)
        .map(|i| ((i * 37) % 101) as f32 / 100.0)
        .collect();
    let grey = Tensor::from_vec(grey, (1, 1, 80, 75), &Device::Cpu)?;
    let small = net.forward(&grey.repeat((1, 3, 1, 1))?.affine(2.0, -1.0)?)?;
    assert_eq!(small.dims(), &[1, INCEPTION_FEATURE_DIM]);
    assert!(net
        .forward(&Tensor::zeros((1, 3, 74, 80), DType::F32, &Device::Cpu)?)
        .is_err());
    let rgb = grey.repeat((1, 3, 1, 1))?;
    let both = Tensor::cat(&[&grey.repeat((1, 3, 1, 1))?, &rgb.affine(0.5, 0.25)?], 0)?;
    let f = net.features_batched(&both, 1)?;
    assert_eq!(f.dims(), &[2, INCEPTION_FEATURE_DIM]);
    let f_grey = net.features(&grey)?;
    let diff = max_abs_diff(&f.narrow(0, 0, 1)?, &f_grey);
    assert!(diff < 1e-5, "grey vs replicated RGB: {diff}");
    let values = f.flatten_all()?.to_vec1::<f32>()?;
    assert!(values.iter().all(|v| v.is_finite() && *v >= 0.0));
    // Post-ReLU means: some features differ between the two images.
    assert!(max_abs_diff(&f.narrow(0, 0, 1)?, &f.narrow(0, 1, 1)?) > 1e-3);
    // Re-seeding with the same seed reproduces the features; another seed changes them.
    init_inception_seeded(&vm, 3)?;
    assert_eq!(max_abs_diff(&net.features(&grey)?, &f_grey), 0.0);
    init_inception_seeded(&vm, 4)?;
    assert!(max_abs_diff(&net.features(&grey)?, &f_grey) > 1e-3);
    Ok(())
}
