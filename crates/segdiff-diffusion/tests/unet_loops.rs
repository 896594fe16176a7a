//! The seg-guided loops with the real network: the tiny `UNet2DModel` (weights committed in
//! `segdiff-unet/tests/fixtures`) against diffusers' 50-step DDIM and 10/20-step DPM-Solver++
//! loops (`loop.unet_tiny.*`, `dpmpp.unet_tiny{10,20}.*`), and the sampler API's guarantees
//! (sharding, batch independence, interpolation, guidance, model directories) on that network.
//! Tolerances (shared fixtures README): per step atol 1e-4, tiny loop end to end atol 1e-3.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use segdiff_diffusion::sampler::initial_noise;
use segdiff_diffusion::{
    guided_sample, load_model_dir, sample, sample_images, save_model_dir, ConditioningMeta,
    DdimConfig, DpmSolverMultistepConfig, LatentInterpolation, MixPoint, SampleInput,
    SampleOptions, SampleOutput, SamplerKind, SamplingOptions, SchedulerConfig, Shard, StepNoise,
    UnetDenoiser,
};
use segdiff_unet::{model_from_tensors, UNet2DConfig, UNet2DModel};

const STEP_ATOL: f64 = 1e-4;
const LOOP_ATOL: f64 = 1e-3;

fn manifest() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn unet_fixture(name: &str) -> PathBuf {
    manifest().join("../segdiff-unet/tests/fixtures").join(name)
}

fn fixture(name: &str) -> HashMap<String, Tensor> {
    let path = manifest().join("tests/fixtures").join(name);
    candle_core::safetensors::load(&path, &Device::Cpu)
        .unwrap_or_else(|e| panic!("cannot read committed fixture {}: {e}", path.display()))
}

fn get<'a>(f: &'a HashMap<String, Tensor>, key: &str) -> &'a Tensor {
    f.get(key)
        .unwrap_or_else(|| panic!("fixture key {key} missing"))
}

fn tiny_parts() -> (UNet2DConfig, HashMap<String, Tensor>) {
    let cfg = UNet2DConfig::from_file(&unet_fixture("unet_tiny_config.json")).unwrap();
    let tensors =
        candle_core::safetensors::load(unet_fixture("unet_tiny_weights.safetensors"), &Device::Cpu)
            .unwrap();
    (cfg, tensors)
}

fn tiny() -> UNet2DModel {
    let (cfg, tensors) = tiny_parts();
    model_from_tensors(&cfg, tensors, DType::F32, &Device::Cpu, Path::new("tiny"))
        .unwrap()
        .0
}

/// The official checkpoints' conditioning: one channel of class_id/255, class count unknown.
fn official_meta() -> ConditioningMeta {
    ConditioningMeta::official_for(&tiny_parts().0)
}

fn max_abs(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.dims(), b.dims(), "shape mismatch");
    (a.to_dtype(DType::F64).unwrap() - b.to_dtype(DType::F64).unwrap())
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f64>()
        .unwrap()
}

fn assert_close(what: &str, got: &Tensor, want: &Tensor, atol: f64) {
    let err = max_abs(got, want);
    println!("{what}: max abs err {err:.3e} (atol {atol:.0e})");
    assert!(err <= atol, "{what}: max abs err {err:.3e} > {atol:.0e}");
}

fn bits(t: &Tensor) -> Vec<u32> {
    t.flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
        .into_iter()
        .map(f32::to_bits)
        .collect()
}

/// `loop.mask_index` (1,1,32,32) float class ids as a u8 class-id mask (1,32,32).
fn loop_mask(f: &HashMap<String, Tensor>) -> Tensor {
    get(f, "loop.mask_index")
        .squeeze(1)
        .unwrap()
        .to_dtype(DType::U8)
        .unwrap()
}

fn run_sampler(unet: &UNet2DModel, masks: &Tensor, o: &SampleOptions) -> SampleOutput {
    let mut den = UnetDenoiser::new(unet, DType::F32);
    sample_images(
        &mut den,
        &SchedulerConfig::default(),
        &official_meta(),
        SampleInput::Masks(masks),
        o,
        &Device::Cpu,
        &mut |_| {},
    )
    .unwrap()
}

#[test]
fn tiny_unet_ddim50_loop_matches_diffusers() {
    let f = fixture("schedulers.safetensors");
    let unet = tiny();
    let x_t = get(&f, "loop.x_T");
    // reference loop with the trajectory
    let mut den = UnetDenoiser::new(&unet, DType::F32);
    let mut ddim = SchedulerConfig::Ddim(DdimConfig::default())
        .build()
        .unwrap();
    let out = guided_sample(
        ddim.as_mut(),
        &mut den,
        x_t,
        Some(get(&f, "loop.mask")),
        &SamplingOptions {
            record_trajectory: true,
            ..SamplingOptions::default()
        },
        None,
    )
    .unwrap();
    let traj = out.trajectory.unwrap();
    assert_close(
        "ddim50 unet_tiny trajectory (free-running)",
        &traj,
        get(&f, "loop.unet_tiny.trajectory"),
        LOOP_ATOL,
    );
    assert_close(
        "ddim50 unet_tiny final",
        &out.final_sample,
        get(&f, "loop.unet_tiny.final"),
        LOOP_ATOL,
    );

    // the sampler API: scheduler built from the (default DDPM) training schedule, mask encoded
    // from class ids, x_T given explicitly
    let o = SampleOptions {
        init_noise: Some(x_t.clone()),
        ..SampleOptions::default()
    };
    let s = run_sampler(&unet, &loop_mask(&f), &o);
    assert_close(
        "ddim50 unet_tiny image01 via sampler",
        &s.images01,
        get(&f, "loop.unet_tiny.image01"),
        LOOP_ATOL,
    );
    assert_eq!(
        bits(&s.images01),
        bits(&out.image01),
        "sampler vs reference loop"
    );
}

/// Step i from diffusers' own x after step i−1: isolates one network call + one step.
#[test]
fn tiny_unet_ddim50_teacher_forced_steps_match_diffusers() {
    let f = fixture("schedulers.safetensors");
    let unet = tiny();
    let traj = get(&f, "loop.unet_tiny.trajectory");
    let mask = get(&f, "loop.mask");
    let mut ddim = SchedulerConfig::Ddim(DdimConfig::default())
        .build()
        .unwrap();
    ddim.set_timesteps(50).unwrap();
    let ts = ddim.timesteps().to_vec();
    let mut worst: f64 = 0.0;
    for (i, &t) in ts.iter().enumerate() {
        let x = if i == 0 {
            get(&f, "loop.x_T").clone()
        } else {
            traj.narrow(0, i - 1, 1).unwrap()
        };
        let input = Tensor::cat(&[&x, mask], 1).unwrap();
        let eps = unet
            .forward(&input, &Tensor::new(t as i64, &Device::Cpu).unwrap())
            .unwrap();
        let next = ddim.step(&eps, t, &x, StepNoise::None).unwrap().prev_sample;
        let err = max_abs(&next, &traj.narrow(0, i, 1).unwrap());
        worst = worst.max(err);
        assert!(err <= STEP_ATOL, "step {i} (t={t}): {err:.3e}");
    }
    println!("ddim50 unet_tiny teacher-forced: max abs err over 50 steps {worst:.3e} (atol {STEP_ATOL:.0e})");
}

#[test]
fn tiny_unet_dpmpp_loops_match_diffusers() {
    let sched = fixture("schedulers.safetensors");
    let f = fixture("dpmsolver.safetensors");
    let unet = tiny();
    let x_t = get(&sched, "loop.x_T");
    for steps in [10usize, 20] {
        let key = format!("dpmpp.unet_tiny{steps}");
        let o = SampleOptions {
            scheduler: SamplerKind::DpmSolverPlusPlus,
            steps: Some(steps),
            init_noise: Some(x_t.clone()),
            ..SampleOptions::default()
        };
        let s = run_sampler(&unet, &loop_mask(&sched), &o);
        assert_close(
            &format!("{key} image01 via sampler"),
            &s.images01,
            get(&f, &format!("{key}.image01")),
            LOOP_ATOL,
        );
        let mut dpm = SchedulerConfig::DpmSolverMultistep(DpmSolverMultistepConfig::default())
            .build()
            .unwrap();
        let mut den = UnetDenoiser::new(&unet, DType::F32);
        let out = guided_sample(
            dpm.as_mut(),
            &mut den,
            x_t,
            Some(get(&sched, "loop.mask")),
            &SamplingOptions {
                num_inference_steps: steps,
                record_trajectory: true,
                ..SamplingOptions::default()
            },
            None,
        )
        .unwrap();
        assert_close(
            &format!("{key} trajectory (free-running)"),
            &out.trajectory.unwrap(),
            get(&f, &format!("{key}.trajectory")),
            LOOP_ATOL,
        );
        assert_close(
            &format!("{key} final"),
            &out.final_sample,
            get(&f, &format!("{key}.final")),
            LOOP_ATOL,
        );
    }
}

/// Three 32×32 masks with classes 0..=3 (rectangles shifted per mask).
fn masks3() -> Tensor {
    let mut v = vec![0u8; 3 * 32 * 32];
    for n in 0..3 {
        for y in 0..32 {
            for x in 0..32 {
                let k = if (4 + n..20 + n).contains(&y) && (6..26).contains(&x) {
                    if (10..16).contains(&y) && (10 + 2 * n..20).contains(&x) {
                        2
                    } else {
                        1
                    }
                } else if y > 26 && x < 8 + 4 * n {
                    3
                } else {
                    0
                };
                v[(n * 32 + y) * 32 + x] = k;
            }
        }
    }
    Tensor::from_vec(v, (3, 32, 32), &Device::Cpu).unwrap()
}

#[test]
fn shards_reproduce_the_single_run_bit_for_bit() {
    let unet = tiny();
    let base = SampleOptions {
        eta: 0.5, // stochastic steps too
        steps: Some(4),
        seed: 5,
        batch_size: 2,
        samples_per_mask: 2,
        ..SampleOptions::default()
    };
    let single = run_sampler(&unet, &masks3(), &base);
    assert_eq!(single.images01.dims(), &[6, 1, 32, 32]);
    for count in [2usize, 3, 4] {
        let mut rows = Vec::new();
        let mut indices = Vec::new();
        for index in 0..count {
            let o = SampleOptions {
                shard: Some(Shard::new(index, count).unwrap()),
                ..base.clone()
            };
            let part = run_sampler(&unet, &masks3(), &o);
            assert_eq!(part.total_images, 6);
            indices.extend(part.image_indices.clone());
            rows.push(part.images01);
        }
        assert_eq!(indices, (0..6).collect::<Vec<_>>(), "{count} shards");
        let joined = Tensor::cat(&rows, 0).unwrap();
        assert_eq!(bits(&joined), bits(&single.images01), "{count} shards");
    }
}

/// Per-image seeds: image 4 alone, or in batches of other sizes, gets the same x_T and step
/// noise. The network itself is not bit-for-bit batch-invariant (kernels sum in another order for
/// another batch shape), so the images agree to within the 1e-4 of a forward pass.
#[test]
fn images_do_not_depend_on_batch_size() {
    let unet = tiny();
    let base = SampleOptions {
        eta: 1.0,
        steps: Some(4),
        seed: 8,
        samples_per_mask: 2,
        ..SampleOptions::default()
    };
    let b6 = run_sampler(
        &unet,
        &masks3(),
        &SampleOptions {
            batch_size: 6,
            ..base.clone()
        },
    );
    let b4 = run_sampler(
        &unet,
        &masks3(),
        &SampleOptions {
            batch_size: 4,
            ..base.clone()
        },
    );
    let alone = run_sampler(
        &unet,
        &masks3(),
        &SampleOptions {
            batch_size: 1,
            shard: Some(Shard::new(4, 6).unwrap()),
            ..base.clone()
        },
    );
    let e_batch = max_abs(&b6.images01, &b4.images01);
    let e_alone = max_abs(&alone.images01, &b6.images01.narrow(0, 4, 1).unwrap());
    println!(
        "batch 6 vs 4: max abs diff {e_batch:.3e}; image 4 alone vs in batch 6: {e_alone:.3e}"
    );
    assert!(e_batch <= STEP_ATOL && e_alone <= STEP_ATOL);
    let reseeded = run_sampler(&unet, &masks3(), &SampleOptions { seed: 9, ..base });
    assert!(max_abs(&reseeded.images01, &b6.images01) > 0.05);
}

fn mse(a: &Tensor, b: &Tensor) -> f64 {
    (a.to_dtype(DType::F64).unwrap() - b.to_dtype(DType::F64).unwrap())
        .unwrap()
        .sqr()
        .unwrap()
        .mean_all()
        .unwrap()
        .to_scalar::<f64>()
        .unwrap()
}

#[test]
fn latent_interpolation_moves_toward_the_real_image() {
    let unet = tiny();
    // smooth "real" images in [-1, 1]
    let v: Vec<f32> = (0..3 * 32 * 32)
        .map(|i| {
            let (n, y, x) = (i / 1024, (i / 32) % 32, i % 32);
            ((x as f32 / 5.0 + n as f32).sin() * (y as f32 / 7.0).cos()) * 0.8
        })
        .collect();
    let real = Tensor::from_vec(v, (3, 1, 32, 32), &Device::Cpu).unwrap();
    let real01 = real.affine(0.5, 0.5).unwrap();
    let base = SampleOptions {
        steps: Some(10),
        seed: 3,
        batch_size: 3,
        ..SampleOptions::default()
    };
    // The tiny network has random weights, so it only preserves an image over the last steps:
    // mix at 80 % of the 10 steps, t̃ = timesteps[8] = 100.
    let with = |lambda: f64| SampleOptions {
        interpolation: Some(LatentInterpolation {
            real_images: real.clone(),
            lambda,
            at: MixPoint::Fraction(0.8),
        }),
        ..base.clone()
    };
    let plain = run_sampler(&unet, &masks3(), &base);
    let l0 = run_sampler(&unet, &masks3(), &with(0.0));
    assert_eq!(
        bits(&l0.images01),
        bits(&plain.images01),
        "λ = 0 must be the plain sample"
    );
    let l1 = run_sampler(&unet, &masks3(), &with(1.0));
    let half = run_sampler(&unet, &masks3(), &with(0.5));
    let (m0, mh, m1) = (
        mse(&plain.images01, &real01),
        mse(&half.images01, &real01),
        mse(&l1.images01, &real01),
    );
    println!("MSE to the real image (in [0,1]): λ=0 {m0:.4}, λ=0.5 {mh:.4}, λ=1 {m1:.4}");
    assert!(m1 < 0.25 * m0, "λ=1 should be much closer to x_real");
    assert!(m1 < mh && mh < m0, "closeness should grow with λ");
}

#[test]
fn guidance_scale_one_equals_plain_conditioning() {
    let unet = tiny();
    let base = SampleOptions {
        steps: Some(5),
        seed: 1,
        batch_size: 3,
        ..SampleOptions::default()
    };
    let plain = run_sampler(&unet, &masks3(), &base);
    let w1 = run_sampler(
        &unet,
        &masks3(),
        &SampleOptions {
            guidance_scale: Some(1.0),
            ..base.clone()
        },
    );
    assert_eq!(bits(&w1.images01), bits(&plain.images01));
    let w0 = run_sampler(
        &unet,
        &masks3(),
        &SampleOptions {
            guidance_scale: Some(0.0),
            ..base.clone()
        },
    );
    let empty = run_sampler(
        &unet,
        &masks3(),
        &SampleOptions {
            empty_mask: true,
            ..base.clone()
        },
    );
    assert_eq!(bits(&w0.images01), bits(&empty.images01));
    let w3 = run_sampler(
        &unet,
        &masks3(),
        &SampleOptions {
            guidance_scale: Some(3.0),
            ..base
        },
    );
    let d = max_abs(&w3.images01, &plain.images01);
    println!("guidance 3 vs plain: max abs diff {d:.3e}");
    assert!(d > 1e-3);
}

/// `sample` on a saved model directory (`single` encoding, 4 classes recorded in segdiff.json)
/// equals the generic sampler on the same network.
#[test]
fn sample_reads_everything_from_a_model_directory() {
    let (cfg, tensors) = tiny_parts();
    let dir = tempfile::tempdir().unwrap();
    let meta = ConditioningMeta {
        num_classes: Some(4),
        ..official_meta()
    };
    save_model_dir(
        dir.path(),
        &cfg,
        &tensors,
        &SchedulerConfig::default(),
        &meta,
    )
    .unwrap();
    let model = load_model_dir(dir.path(), DType::F32, &Device::Cpu).unwrap();
    let o = SampleOptions {
        steps: Some(3),
        seed: 4,
        ..SampleOptions::default()
    };
    let mut last = None;
    let out = sample(&model, SampleInput::Masks(&masks3()), &o, &mut |p| {
        last = Some(*p)
    })
    .unwrap();
    let direct = run_sampler(&tiny(), &masks3(), &o);
    assert_eq!(bits(&out.images01), bits(&direct.images01));
    assert_eq!(last.map(|p| (p.images_done, p.images_total)), Some((3, 3)));
    // class 4 is outside the 4 classes recorded in segdiff.json
    let mut v = vec![0u8; 32 * 32];
    v[100] = 4;
    let bad = Tensor::from_vec(v, (1, 32, 32), &Device::Cpu).unwrap();
    assert!(sample(&model, SampleInput::Masks(&bad), &o, &mut |_| {}).is_err());
    // x_T drawn by the sampler is the documented per-image draw
    let x_t: Vec<Tensor> = (0..3)
        .map(|g| initial_noise(4, g, (1, 32, 32), &Device::Cpu).unwrap())
        .collect();
    let given = run_sampler(
        &tiny(),
        &masks3(),
        &SampleOptions {
            init_noise: Some(Tensor::cat(&x_t, 0).unwrap()),
            ..o
        },
    );
    assert_eq!(bits(&given.images01), bits(&out.images01));
}
