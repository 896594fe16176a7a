//! Sampler behaviour with closed-form ε-models (element-wise, hence exactly batch-invariant).

use super::*;
use crate::config::{BetaSchedule, DdimConfig, DdpmConfig, PredictionType};
use crate::mask_conditioning::{encode_mask, MaskEncoding};
use crate::sampler::guided_loop::{guided_sample, SamplingOptions};

const H: usize = 4;
const W: usize = 4;

fn meta(encoding: &str, num_classes: Option<usize>) -> ConditioningMeta {
    ConditioningMeta {
        segmentation_guided: true,
        mask_encoding: MaskEncoding::parse(encoding).unwrap(),
        num_classes,
        class_names: Vec::new(),
        image_channels: 1,
        ablation_trained: true,
        class_colors: None,
        neighbours: None,
    }
}

fn unconditional_meta() -> ConditioningMeta {
    ConditioningMeta {
        segmentation_guided: false,
        ..meta("single", None)
    }
}

/// Three 4×4 masks with classes 0..=3.
fn masks() -> Tensor {
    let v: Vec<u8> = (0..3 * H * W)
        .map(|i| ((i * 7 + i / 5) % 4) as u8)
        .collect();
    Tensor::from_vec(v, (3, H, W), &Device::Cpu).unwrap()
}

/// The fixtures' closed form, summed over mask channels: 0.5·x + 10·Σmask − 0.3·sin(t/100).
fn fake_eps(input: &Tensor, t: f64) -> candle_core::Result<Tensor> {
    let img = input.narrow(1, 0, 1)?;
    let c = input.dim(1)?;
    let m = if c > 1 {
        input.narrow(1, 1, c - 1)?.sum_keepdim(1)?
    } else {
        img.zeros_like()?
    };
    let s = ((img * 0.5)? + (m * 10.0)?)?;
    s - 0.3 * (t / 100.0).sin()
}

fn run(meta: &ConditioningMeta, masks: &Tensor, o: &SampleOptions) -> SampleOutput {
    let mut model = fake_eps;
    sample_images(
        &mut model,
        &SchedulerConfig::default(),
        meta,
        SampleInput::Masks(masks),
        o,
        &Device::Cpu,
        &mut |_| {},
    )
    .unwrap()
}

fn vals(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1().unwrap()
}

fn max_abs(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims());
    vals(a)
        .iter()
        .zip(vals(b))
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn opts(kind: SamplerKind, steps: usize) -> SampleOptions {
    SampleOptions {
        scheduler: kind,
        steps: Some(steps),
        seed: 11,
        ..SampleOptions::default()
    }
}

#[test]
fn default_steps_per_scheduler() {
    assert_eq!(default_steps(SamplerKind::Ddim), 50);
    assert_eq!(default_steps(SamplerKind::Ddpm), 1000);
    assert_eq!(default_steps(SamplerKind::DpmSolverPlusPlus), 20);
    assert_eq!(default_steps(SamplerKind::EulerAncestral), 30);
    assert_eq!(default_steps(SamplerKind::UniPc), 20);
}

/// UniPC gets the training noise schedule with its class defaults, draws no step noise, and
/// keeps one multistep state per batch without mixing batch mates.
#[test]
fn unipc_takes_the_training_schedule_and_is_deterministic() {
    let training = SchedulerConfig::Ddpm(DdpmConfig {
        schedule: crate::config::TrainSchedule {
            num_train_timesteps: 500,
            prediction_type: PredictionType::VPrediction,
            ..Default::default()
        },
        ..DdpmConfig::default()
    });
    let SchedulerConfig::UniPcMultistep(u) =
        sampling_scheduler_config(&training, SamplerKind::UniPc)
    else {
        panic!("expected a UniPC config");
    };
    assert_eq!(u.schedule.num_train_timesteps, 500);
    assert_eq!(u.schedule.prediction_type, PredictionType::VPrediction);
    let defaults = crate::config::UniPcMultistepConfig {
        schedule: u.schedule.clone(),
        ..Default::default()
    };
    assert_eq!(u, defaults);
    assert!(!SamplerKind::UniPc.is_stochastic(0.0));
    let m = meta("single", Some(4));
    let base = SampleOptions {
        samples_per_mask: 2,
        ..opts(SamplerKind::UniPc, 8)
    };
    let one = run(
        &m,
        &masks(),
        &SampleOptions {
            batch_size: 1,
            ..base.clone()
        },
    );
    let all = run(
        &m,
        &masks(),
        &SampleOptions {
            batch_size: 6,
            ..base
        },
    );
    assert_eq!(vals(&one.images01), vals(&all.images01));
    assert!(max_abs(&all.images01, &all.images01.zeros_like().unwrap()) > 0.0);
}

/// Euler ancestral through the sampler: x_T = σ_max·z, the model sees x/sqrt(σ²+1) and diffusers'
/// fractional timesteps, and the loop ends near the data scale.
#[test]
fn euler_ancestral_scales_the_noise_and_gets_float_timesteps() {
    let z = Tensor::ones((3, 1, H, W), DType::F32, &Device::Cpu).unwrap();
    let seen = std::cell::RefCell::new(Vec::new());
    let mut model = |input: &Tensor, t: f64| {
        let first: f32 = input.narrow(1, 0, 1)?.max_all()?.to_scalar()?;
        seen.borrow_mut().push((t, first));
        fake_eps(input, t)
    };
    let o = SampleOptions {
        init_noise: Some(z),
        ..opts(SamplerKind::EulerAncestral, 20)
    };
    let out = sample_images(
        &mut model,
        &SchedulerConfig::default(),
        &meta("single", Some(4)),
        SampleInput::Masks(&masks()),
        &o,
        &Device::Cpu,
        &mut |_| {},
    )
    .unwrap();
    let seen = seen.borrow();
    assert_eq!(seen.len(), 20);
    assert_eq!(seen[0].0, 999.0);
    assert_eq!(seen[1].0, 946.4211f32 as f64);
    // σ_max·1 / sqrt(σ_max² + 1) is just below 1
    assert!((seen[0].1 - 1.0).abs() < 1e-4, "{}", seen[0].1);
    assert_eq!(out.images01.dims(), &[3, 1, H, W]);
}

#[test]
fn sampling_scheduler_takes_only_the_noise_schedule_from_training() {
    let training = SchedulerConfig::Ddpm(DdpmConfig {
        schedule: crate::config::TrainSchedule {
            num_train_timesteps: 500,
            beta_start: 2e-4,
            beta_end: 0.03,
            beta_schedule: BetaSchedule::ScaledLinear,
            prediction_type: PredictionType::VPrediction,
            ..Default::default()
        },
        clipping: crate::config::SampleClipping {
            clip_sample: false,
            clip_sample_range: 2.0,
        },
        ..DdpmConfig::default()
    });
    let SchedulerConfig::Ddim(d) = sampling_scheduler_config(&training, SamplerKind::Ddim) else {
        panic!("expected a DDIM config");
    };
    assert_eq!(
        (
            d.schedule.num_train_timesteps,
            d.schedule.beta_start,
            d.schedule.beta_end
        ),
        (500, 2e-4, 0.03)
    );
    assert_eq!(d.schedule.beta_schedule, BetaSchedule::ScaledLinear);
    assert_eq!(d.schedule.prediction_type, PredictionType::VPrediction);
    // diffusers' DDIMScheduler defaults, not the training config's clipping
    assert!(d.clipping.clip_sample && d.set_alpha_to_one);
    assert_eq!(d.clipping.clip_sample_range, 1.0);
    let SchedulerConfig::DpmSolverMultistep(p) =
        sampling_scheduler_config(&training, SamplerKind::DpmSolverPlusPlus)
    else {
        panic!("expected a DPM-Solver config");
    };
    assert_eq!(p.schedule.num_train_timesteps, 500);
    assert_eq!(p.schedule.prediction_type, PredictionType::VPrediction);
    assert_eq!(p.solver_order, 2);
    let SchedulerConfig::Ddpm(q) = sampling_scheduler_config(&training, SamplerKind::Ddpm) else {
        panic!("expected a DDPM config");
    };
    assert!(
        q.clipping.clip_sample,
        "DDPM sampling uses DDPMScheduler's default clip_sample"
    );
    assert_eq!(q.schedule.beta_end, 0.03);
}

#[test]
fn stochastic_results_do_not_depend_on_batch_size_or_batch_mates() {
    let m = meta("single", Some(4));
    for (kind, eta) in [
        (SamplerKind::Ddpm, 0.0),
        (SamplerKind::Ddim, 0.8),
        (SamplerKind::SdeDpmSolverPlusPlus, 0.0),
        (SamplerKind::EulerAncestral, 0.0),
    ] {
        let base = SampleOptions {
            eta,
            samples_per_mask: 2,
            ..opts(kind, 8)
        };
        let one = run(
            &m,
            &masks(),
            &SampleOptions {
                batch_size: 1,
                ..base.clone()
            },
        );
        let all = run(
            &m,
            &masks(),
            &SampleOptions {
                batch_size: 6,
                ..base.clone()
            },
        );
        let four = run(
            &m,
            &masks(),
            &SampleOptions {
                batch_size: 4,
                ..base.clone()
            },
        );
        assert_eq!(vals(&one.images01), vals(&all.images01), "{kind:?}");
        assert_eq!(vals(&four.images01), vals(&all.images01), "{kind:?}");
        // image 3 alone (its own one-image shard) is the same image
        let alone = run(
            &m,
            &masks(),
            &SampleOptions {
                batch_size: 1,
                shard: Some(Shard::new(3, 6).unwrap()),
                ..base.clone()
            },
        );
        assert_eq!(alone.image_indices, vec![3]);
        assert_eq!(alone.mask_indices, vec![1]);
        assert_eq!(
            vals(&alone.images01),
            vals(&all.images01.narrow(0, 3, 1).unwrap())
        );
        // the seed matters, and the two samples of one mask differ
        let other = run(&m, &masks(), &SampleOptions { seed: 12, ..base });
        assert!(max_abs(&other.images01, &all.images01) > 1e-3);
        assert!(
            max_abs(
                &all.images01.narrow(0, 0, 1).unwrap(),
                &all.images01.narrow(0, 1, 1).unwrap()
            ) > 1e-3
        );
    }
}

#[test]
fn init_noise_reproduces_the_seeded_draw_and_orders_by_mask() {
    let m = meta("single", Some(4));
    let base = SampleOptions {
        samples_per_mask: 2,
        batch_size: 4,
        ..opts(SamplerKind::Ddim, 6)
    };
    let seeded = run(&m, &masks(), &base);
    let x_t: Vec<Tensor> = (0..6)
        .map(|g| initial_noise(base.seed, g, (1, H, W), &Device::Cpu).unwrap())
        .collect();
    let given = run(
        &m,
        &masks(),
        &SampleOptions {
            init_noise: Some(Tensor::cat(&x_t, 0).unwrap()),
            ..base.clone()
        },
    );
    assert_eq!(vals(&seeded.images01), vals(&given.images01));
    assert_eq!(seeded.mask_indices, vec![0, 0, 1, 1, 2, 2]);
    assert_eq!(seeded.image_indices, (0..6).collect::<Vec<_>>());
    assert_eq!(seeded.total_images, 6);

    // one x_T for everyone: the two samples of a mask coincide, different masks do not
    let same = Tensor::cat(&vec![x_t[0].clone(); 6], 0).unwrap();
    let out = run(
        &m,
        &masks(),
        &SampleOptions {
            init_noise: Some(same),
            ..base
        },
    );
    let row = |i| out.images01.narrow(0, i, 1).unwrap();
    assert_eq!(vals(&row(0)), vals(&row(1)));
    assert_eq!(vals(&row(4)), vals(&row(5)));
    assert!(max_abs(&row(0), &row(2)) > 1e-3);
}

/// The sampler's plain path is the reference loop `guided_sample` (checked against diffusers in
/// tests/scheduler_parity.rs) fed the same x_T and encoded mask.
#[test]
fn plain_ddim_equals_the_reference_loop() {
    let m = meta("onehot", Some(4));
    let o = SampleOptions {
        batch_size: 3,
        ..opts(SamplerKind::Ddim, 7)
    };
    let out = run(&m, &masks(), &o);
    let x_t: Vec<Tensor> = (0..3)
        .map(|g| initial_noise(o.seed, g, (1, H, W), &Device::Cpu).unwrap())
        .collect();
    let cond = encode_mask(&masks(), 4, MaskEncoding::OneHot).unwrap();
    let mut sched = SchedulerConfig::Ddim(DdimConfig::default())
        .build()
        .unwrap();
    let mut model = fake_eps;
    let reference = guided_sample(
        sched.as_mut(),
        &mut model,
        &Tensor::cat(&x_t, 0).unwrap(),
        Some(&cond),
        &SamplingOptions {
            num_inference_steps: 7,
            ..SamplingOptions::default()
        },
        None,
    )
    .unwrap();
    assert_eq!(vals(&out.images01), vals(&reference.image01));
}

#[test]
fn guidance_scale_one_is_plain_and_zero_is_the_empty_mask() {
    let m = meta("single", Some(4));
    let base = opts(SamplerKind::Ddim, 6);
    let plain = run(&m, &masks(), &base);
    let w1 = run(
        &m,
        &masks(),
        &SampleOptions {
            guidance_scale: Some(1.0),
            ..base.clone()
        },
    );
    assert_eq!(vals(&plain.images01), vals(&w1.images01));
    // w = 0: ε(x|∅) + 0·(…) is ε(x|∅) exactly
    let w0 = run(
        &m,
        &masks(),
        &SampleOptions {
            guidance_scale: Some(0.0),
            ..base.clone()
        },
    );
    let empty = run(
        &m,
        &masks(),
        &SampleOptions {
            empty_mask: true,
            ..base.clone()
        },
    );
    assert_eq!(vals(&w0.images01), vals(&empty.images01));
    assert!(max_abs(&w0.images01, &plain.images01) > 1e-3);
}

/// fake_eps is affine in the mask channel with ε(x|∅) = ε at mask 0, so guidance w equals plain
/// conditioning on the mask channel scaled by w.
#[test]
fn guidance_scale_extrapolates_the_mask_effect() {
    let m = meta("single", Some(4));
    let o = SampleOptions {
        guidance_scale: Some(2.5),
        ..opts(SamplerKind::Ddim, 6)
    };
    let guided = run(&m, &masks(), &o);
    let x_t: Vec<Tensor> = (0..3)
        .map(|g| initial_noise(o.seed, g, (1, H, W), &Device::Cpu).unwrap())
        .collect();
    let cond = (encode_mask(&masks(), 4, MaskEncoding::Single).unwrap() * 2.5).unwrap();
    let mut sched = SchedulerConfig::Ddim(DdimConfig::default())
        .build()
        .unwrap();
    let mut model = fake_eps;
    let reference = guided_sample(
        sched.as_mut(),
        &mut model,
        &Tensor::cat(&x_t, 0).unwrap(),
        Some(&cond),
        &SamplingOptions {
            num_inference_steps: 6,
            ..SamplingOptions::default()
        },
        None,
    )
    .unwrap();
    let err = max_abs(&guided.images01, &reference.image01);
    println!("guidance 2.5 vs scaled mask: max abs err {err:.3e}");
    assert!(err < 1e-5, "{err}");
}

#[test]
fn kept_classes_equal_a_hand_edited_mask() {
    let m = meta("onehot", Some(4));
    let base = opts(SamplerKind::Ddim, 5);
    let kept = run(
        &m,
        &masks(),
        &SampleOptions {
            keep_classes: Some(vec![2]),
            ..base.clone()
        },
    );
    let edited: Vec<u8> = vals(&masks().to_dtype(DType::F32).unwrap())
        .iter()
        .map(|&k| if k == 2.0 { 2 } else { 0 })
        .collect();
    let edited = Tensor::from_vec(edited, (3, H, W), &Device::Cpu).unwrap();
    let by_hand = run(&m, &edited, &base);
    assert_eq!(vals(&kept.images01), vals(&by_hand.images01));
    let plain = run(&m, &masks(), &base);
    assert!(max_abs(&kept.images01, &plain.images01) > 1e-3);
}

#[test]
fn encodings_and_unconditional_models_get_the_right_channels() {
    let seen = std::cell::RefCell::new(Vec::new());
    let mut model = |input: &Tensor, t: f64| {
        seen.borrow_mut().push(input.dim(1)?);
        fake_eps(input, t)
    };
    let o = opts(SamplerKind::DpmSolverPlusPlus, 3);
    let onehot = meta("onehot", Some(4));
    sample_images(
        &mut model,
        &SchedulerConfig::default(),
        &onehot,
        SampleInput::Masks(&masks()),
        &o,
        &Device::Cpu,
        &mut |_| {},
    )
    .unwrap();
    let out = sample_images(
        &mut model,
        &SchedulerConfig::default(),
        &unconditional_meta(),
        SampleInput::Unconditional {
            count: 2,
            height: H,
            width: 8,
        },
        &o,
        &Device::Cpu,
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(out.images01.dims(), &[2, 1, H, 8]);
    assert_eq!(*seen.borrow(), vec![4, 4, 4, 1, 1, 1]);
}

#[test]
fn progress_counts_steps_and_images() {
    let mut model = fake_eps;
    let mut calls = Vec::new();
    let o = SampleOptions {
        batch_size: 2,
        ..opts(SamplerKind::Ddim, 4)
    };
    sample_images(
        &mut model,
        &SchedulerConfig::default(),
        &meta("single", Some(4)),
        SampleInput::Masks(&masks()),
        &o,
        &Device::Cpu,
        &mut |p| calls.push(*p),
    )
    .unwrap();
    assert_eq!(calls.len(), 2 * 4);
    assert_eq!(calls[3].images_done, 2);
    assert_eq!(calls[2].images_done, 0);
    assert_eq!(
        calls
            .last()
            .map(|p| (p.images_done, p.images_total, p.step, p.steps)),
        Some((3, 3, 4, 4))
    );
}

/// The model input at the mix step is (1−λ)·x_gen(t̃) + λ·(sqrt(ᾱ)·x_real + sqrt(1−ᾱ)·z), z from
/// the image's interpolation stream; λ = 0 leaves the run unchanged bit for bit.
#[test]
fn interpolation_mixes_at_the_chosen_step() {
    let m = meta("single", Some(4));
    let k = 3;
    let real = (Tensor::arange(0f32, (3 * H * W) as f32, &Device::Cpu)
        .unwrap()
        .reshape((3, 1, H, W))
        .unwrap()
        / (3 * H * W) as f64)
        .unwrap();
    let inputs = |lambda: f64| {
        let recorded = std::cell::RefCell::new(Vec::new());
        let mut model = |input: &Tensor, t: f64| {
            recorded.borrow_mut().push(input.narrow(1, 0, 1)?.copy()?);
            fake_eps(input, t)
        };
        let o = SampleOptions {
            interpolation: Some(LatentInterpolation {
                real_images: real.clone(),
                lambda,
                at: MixPoint::Fraction(0.5),
            }),
            ..opts(SamplerKind::Ddim, 6)
        };
        let out = sample_images(
            &mut model,
            &SchedulerConfig::default(),
            &m,
            SampleInput::Masks(&masks()),
            &o,
            &Device::Cpu,
            &mut |_| {},
        )
        .unwrap();
        (out, recorded.into_inner())
    };
    let plain = run(&m, &masks(), &opts(SamplerKind::Ddim, 6));
    let (zero, gen_inputs) = inputs(0.0);
    assert_eq!(vals(&zero.images01), vals(&plain.images01));

    let lambda = 0.3;
    let (_, mixed_inputs) = inputs(lambda);
    assert_eq!(vals(&mixed_inputs[k - 1]), vals(&gen_inputs[k - 1]));
    // DDIM "leading" with 6 steps: 166·[5, 4, 3, 2, 1, 0]; fraction 0.5 → k = 3, t̃ = 332
    let t = 332;
    let ac = crate::noise_schedule::NoiseSchedule::new(1000, 1e-4, 0.02, BetaSchedule::Linear)
        .unwrap()
        .alpha_cumprod(t)
        .unwrap() as f64;
    let z: Vec<Tensor> = (0..3)
        .map(|g| {
            let mut r = image_rng(11, g, NoiseStream::Interpolation);
            crate::random::randn(&mut r, (1, 1, H, W), DType::F32, &Device::Cpu).unwrap()
        })
        .collect();
    let real_t = ((&real * ac.sqrt()).unwrap()
        + (Tensor::cat(&z, 0).unwrap() * (1.0 - ac).sqrt()).unwrap())
    .unwrap();
    let want = ((&gen_inputs[k] * (1.0 - lambda)).unwrap() + (real_t * lambda).unwrap()).unwrap();
    let err = max_abs(&mixed_inputs[k], &want);
    println!("mixed input vs formula: {err:.3e}");
    assert!(err < 1e-6, "{err}");
}

#[test]
fn invalid_requests_are_rejected_with_the_value() {
    let m = meta("single", Some(4));
    let mut model = fake_eps;
    let mut try_run = |meta: &ConditioningMeta, input: SampleInput<'_>, o: SampleOptions| {
        sample_images(
            &mut model,
            &SchedulerConfig::default(),
            meta,
            input,
            &o,
            &Device::Cpu,
            &mut |_| {},
        )
    };
    let mk = masks();
    let masks_in = SampleInput::Masks(&mk);
    let base = opts(SamplerKind::Ddim, 4);
    let uncond_in = SampleInput::Unconditional {
        count: 1,
        height: H,
        width: W,
    };
    let cases: Vec<(&str, ConditioningMeta, SampleInput<'_>, SampleOptions)> = vec![
        (
            "class 3 with 3 classes",
            meta("single", Some(3)),
            masks_in,
            base.clone(),
        ),
        (
            "masks for an unconditional model",
            unconditional_meta(),
            masks_in,
            base.clone(),
        ),
        (
            "no masks for a guided model",
            m.clone(),
            uncond_in,
            base.clone(),
        ),
        (
            "guidance on an unconditional model",
            unconditional_meta(),
            uncond_in,
            SampleOptions {
                guidance_scale: Some(2.0),
                ..base.clone()
            },
        ),
        (
            "batch 0",
            m.clone(),
            masks_in,
            SampleOptions {
                batch_size: 0,
                ..base.clone()
            },
        ),
        (
            "eta on DPM-Solver++",
            m.clone(),
            masks_in,
            SampleOptions {
                eta: 0.5,
                ..opts(SamplerKind::DpmSolverPlusPlus, 4)
            },
        ),
        (
            "negative eta",
            m.clone(),
            masks_in,
            SampleOptions {
                eta: -1.0,
                ..base.clone()
            },
        ),
        (
            "init_noise of the wrong size",
            m.clone(),
            masks_in,
            SampleOptions {
                init_noise: Some(Tensor::zeros((2, 1, H, W), DType::F32, &Device::Cpu).unwrap()),
                ..base.clone()
            },
        ),
        (
            "lambda 1.5",
            m.clone(),
            masks_in,
            SampleOptions {
                interpolation: Some(LatentInterpolation {
                    real_images: Tensor::zeros((3, 1, H, W), DType::F32, &Device::Cpu).unwrap(),
                    lambda: 1.5,
                    at: MixPoint::StepIndex(1),
                }),
                ..base.clone()
            },
        ),
        (
            "mix step past the schedule",
            m.clone(),
            masks_in,
            SampleOptions {
                interpolation: Some(LatentInterpolation {
                    real_images: Tensor::zeros((3, 1, H, W), DType::F32, &Device::Cpu).unwrap(),
                    lambda: 0.5,
                    at: MixPoint::StepIndex(4),
                }),
                ..base.clone()
            },
        ),
        (
            "steps 0",
            m.clone(),
            masks_in,
            SampleOptions {
                steps: Some(0),
                ..base.clone()
            },
        ),
    ];
    for (what, meta, input, o) in cases {
        let r = try_run(&meta, input, o);
        assert!(r.is_err(), "{what} was accepted");
        println!("{what}: {}", r.unwrap_err());
    }
    assert!(MixPoint::Fraction(1.0).step_index(10).is_err());
    assert_eq!(MixPoint::Fraction(0.55).step_index(10).unwrap(), 5);
}
