//! Reading, writing and rejecting `scheduler_config.json` as diffusers does.

use super::*;

const META_DPM: &str = r#"{"_class_name": "DPMSolverMultistepScheduler", "_diffusers_version": "0.42.1",
    "num_train_timesteps": 1000, "beta_start": 0.0001, "beta_end": 0.02, "beta_schedule": "linear",
    "trained_betas": null, "solver_order": 2, "prediction_type": "epsilon", "thresholding": false,
    "dynamic_thresholding_ratio": 0.995, "sample_max_value": 1.0, "algorithm_type": "dpmsolver++",
    "solver_type": "midpoint", "lower_order_final": true, "euler_at_final": false,
    "use_karras_sigmas": false, "use_exponential_sigmas": false, "use_beta_sigmas": false,
    "use_lu_lambdas": false, "use_flow_sigmas": false, "flow_shift": 1.0, "final_sigmas_type": "zero",
    "lambda_min_clipped": -Infinity, "variance_type": null, "timestep_spacing": "linspace",
    "steps_offset": 0, "rescale_betas_zero_snr": false, "use_dynamic_shifting": false,
    "time_shift_type": "exponential"}"#;

#[test]
fn reads_python_infinity_and_round_trips() {
    let c = SchedulerConfig::from_json_str(META_DPM).unwrap();
    assert_eq!(
        c,
        SchedulerConfig::DpmSolverMultistep(DpmSolverMultistepConfig::default())
    );
    let text = c.to_json_string();
    assert!(text.contains("\"lambda_min_clipped\": -Infinity"), "{text}");
    assert!(text.ends_with("}\n"));
    assert_eq!(SchedulerConfig::from_json_str(&text).unwrap(), c);
    // every field the reference config has is written
    let ours = c.to_value();
    let reference: Value = serde_json::from_str(&quote_non_finite_tokens(META_DPM)).unwrap();
    let mut ours_keys: Vec<_> = ours.as_object().unwrap().keys().collect();
    let mut ref_keys: Vec<_> = reference.as_object().unwrap().keys().collect();
    ours_keys.sort();
    ref_keys.sort();
    assert_eq!(ours_keys, ref_keys);
}

#[test]
fn tokens_inside_strings_are_untouched() {
    assert_eq!(
        quote_non_finite_tokens(r#"{"a": "NaN -Infinity", "b": -Infinity}"#),
        r#"{"a": "NaN -Infinity", "b": "-Infinity"}"#
    );
}

#[test]
fn missing_fields_take_diffusers_defaults() {
    let c =
        SchedulerConfig::from_json_str(r#"{"_class_name": "DDIMScheduler", "extra": 3}"#).unwrap();
    assert_eq!(c, SchedulerConfig::Ddim(DdimConfig::default()));
    let c = SchedulerConfig::from_json_str(r#"{"_class_name": "DDPMScheduler"}"#).unwrap();
    assert_eq!(c, SchedulerConfig::Ddpm(DdpmConfig::default()));
}

#[test]
fn unsupported_values_name_field_and_value() {
    use SchedulerKind::{Ddim, Ddpm, DpmSolverMultistep as Dpm};
    // (class, field, its value in the JSON, how the error shows that value)
    let cases = [
        (Ddpm, "thresholding", "true", "true"),
        (Ddim, "rescale_betas_zero_snr", "true", "true"),
        (Ddim, "trained_betas", "[0.1, 0.2]", "[0.1,0.2]"),
        (Ddpm, "beta_schedule", r#""sigmoid""#, "sigmoid"),
        (Ddpm, "variance_type", r#""learned_range""#, "learned_range"),
        (Dpm, "solver_order", "3", "3"),
        (Dpm, "use_karras_sigmas", "true", "true"),
        (Dpm, "algorithm_type", r#""sde-dpmsolver""#, "sde-dpmsolver"),
        // wrong values and types in flattened fields name their field too
        (Dpm, "prediction_type", r#""x0""#, "x0"),
        (Ddpm, "num_train_timesteps", r#""1000""#, "1000"),
        (Ddim, "beta_end", r#""big""#, "big"),
        (Ddim, "timestep_spacing", r#""uniform""#, "uniform"),
        (Ddpm, "clip_sample_range", r#""wide""#, "wide"),
    ];
    for (kind, field, json_value, value) in cases {
        let class = kind.class_name();
        let json = format!(r#"{{"_class_name": "{class}", "{field}": {json_value}}}"#);
        let err = SchedulerConfig::from_json_str(&json).unwrap_err();
        let msg = err.to_string();
        assert!(
            matches!(err, DiffusionError::UnsupportedConfigValue { .. }),
            "{json}: {msg}"
        );
        assert!(msg.contains(field) && msg.contains(value), "{msg}");
        assert!(
            matches!(&err, DiffusionError::UnsupportedConfigValue { field: f, .. } if f == field),
            "{msg}"
        );
    }
    let err =
        SchedulerConfig::from_json_str(r#"{"_class_name": "DDPMScheduler", "clip_sample": "yes"}"#)
            .unwrap_err();
    assert!(err.to_string().contains("clip_sample"), "{err}");
    let err = SchedulerConfig::from_json_str(r#"{"_class_name": "PNDMScheduler"}"#).unwrap_err();
    assert!(err.to_string().contains("PNDMScheduler"), "{err}");
}

#[test]
fn convert_carries_shared_fields_like_from_config() {
    let ddpm = SchedulerConfig::Ddpm(DdpmConfig {
        schedule: TrainSchedule {
            beta_schedule: BetaSchedule::ScaledLinear,
            prediction_type: PredictionType::VPrediction,
            ..TrainSchedule::default()
        },
        clipping: SampleClipping {
            clip_sample: false,
            ..SampleClipping::default()
        },
        ..DdpmConfig::default()
    });
    let SchedulerConfig::Ddim(ddim) = ddpm.convert_to(SchedulerKind::Ddim).unwrap() else {
        panic!("wrong kind")
    };
    assert_eq!(ddim.schedule.beta_schedule, BetaSchedule::ScaledLinear);
    assert!(!ddim.clipping.clip_sample);
    assert!(ddim.set_alpha_to_one);
    assert_eq!(ddim.schedule.prediction_type, PredictionType::VPrediction);
    let SchedulerConfig::DpmSolverMultistep(dpm) =
        ddpm.convert_to(SchedulerKind::DpmSolverMultistep).unwrap()
    else {
        panic!("wrong kind")
    };
    // DDPM's "leading" spacing and variance_type carry over, exactly as in diffusers.
    assert_eq!(dpm.timestep_spacing, TimestepSpacing::Leading);
    assert_eq!(dpm.variance_type.as_deref(), Some("fixed_small"));
}

#[test]
fn save_and_load_through_a_directory() {
    let dir = tempfile::tempdir().unwrap();
    let c = SchedulerConfig::Ddim(DdimConfig {
        schedule: TrainSchedule {
            steps_offset: 1,
            ..TrainSchedule::default()
        },
        ..DdimConfig::default()
    });
    let written = c.save(dir.path()).unwrap();
    assert_eq!(written, dir.path().join(SCHEDULER_CONFIG_NAME));
    assert_eq!(SchedulerConfig::load(dir.path()).unwrap(), c);
    let text = std::fs::read_to_string(&written).unwrap();
    assert!(text.starts_with("{\n  \"_class_name\": \"DDIMScheduler\",\n  \"_diffusers_version\""));
    assert!(text.contains("\"beta_start\": 0.0001,"));
    assert!(text.contains("\"clip_sample_range\": 1.0,"));
    let json: SchedulerConfig = serde_json::from_str(&text).unwrap();
    assert_eq!(json, c);
}

/// A config of each class with every implemented field off its default.
fn non_default_configs() -> [SchedulerConfig; 5] {
    let schedule = TrainSchedule {
        num_train_timesteps: 500,
        beta_start: 0.00085,
        beta_end: 0.012,
        beta_schedule: BetaSchedule::ScaledLinear,
        prediction_type: PredictionType::VPrediction,
        dynamic_thresholding_ratio: 0.9,
        sample_max_value: 2.5,
        steps_offset: 1,
        ..TrainSchedule::default()
    };
    [
        SchedulerConfig::Ddpm(DdpmConfig {
            schedule: schedule.clone(),
            variance_type: VarianceType::FixedLarge,
            clipping: SampleClipping {
                clip_sample: false,
                clip_sample_range: 2.0,
            },
            timestep_spacing: TimestepSpacing::Trailing,
        }),
        SchedulerConfig::Ddim(DdimConfig {
            schedule: schedule.clone(),
            clipping: SampleClipping {
                clip_sample: true,
                clip_sample_range: 3.0,
            },
            set_alpha_to_one: false,
            timestep_spacing: TimestepSpacing::Linspace,
        }),
        // Its class has no thresholding fields: those stay at their defaults (not written).
        SchedulerConfig::EulerAncestral(EulerAncestralConfig {
            schedule: TrainSchedule {
                dynamic_thresholding_ratio: 0.995,
                sample_max_value: 1.0,
                ..schedule.clone()
            },
            timestep_spacing: TimestepSpacing::Leading,
        }),
        SchedulerConfig::UniPcMultistep(UniPcMultistepConfig {
            schedule: schedule.clone(),
            solver_order: 3,
            predict_x0: false,
            solver_type: UniPcSolverType::Bh1,
            lower_order_final: false,
            disable_corrector: vec![0, 2],
            flow_shift: 2.0,
            timestep_spacing: TimestepSpacing::Trailing,
            final_sigmas_type: FinalSigmasType::SigmaMin,
            sigma_min: Some(0.1),
            ..UniPcMultistepConfig::default()
        }),
        SchedulerConfig::DpmSolverMultistep(DpmSolverMultistepConfig {
            schedule,
            solver_order: 1,
            solver_type: SolverType::Heun,
            lower_order_final: false,
            euler_at_final: true,
            flow_shift: 3.0,
            final_sigmas_type: FinalSigmasType::SigmaMin,
            lambda_min_clipped: -5.1,
            variance_type: Some("fixed_small".into()),
            timestep_spacing: TimestepSpacing::Trailing,
            time_shift_type: "linear".into(),
            ..DpmSolverMultistepConfig::default()
        }),
    ]
}

#[test]
fn every_class_round_trips_with_the_keys_diffusers_writes() {
    let meta: Value =
        serde_json::from_str(include_str!("../../tests/fixtures/schedulers_meta.json")).unwrap();
    let dpm: Value = serde_json::from_str(&quote_non_finite_tokens(META_DPM)).unwrap();
    let euler: Value = serde_json::from_str(include_str!(
        "../../tests/fixtures/euler_ancestral_meta.json"
    ))
    .unwrap();
    let unipc: Value =
        serde_json::from_str(include_str!("../../tests/fixtures/unipc_meta.json")).unwrap();
    // diffusers' own keys, without the `_class_name`-style bookkeeping
    let keys = |v: &Value| {
        let mut k: Vec<_> = v.as_object().unwrap().keys().cloned().collect();
        k.retain(|k| !k.starts_with('_'));
        k.sort();
        k
    };
    for c in non_default_configs() {
        let text = c.to_json_string();
        assert_eq!(SchedulerConfig::from_json_str(&text).unwrap(), c, "{text}");
        let reference = match c.kind() {
            SchedulerKind::Ddpm => &meta["ddpm_config"],
            SchedulerKind::Ddim => &meta["ddim_config"],
            SchedulerKind::DpmSolverMultistep => &dpm,
            SchedulerKind::EulerAncestralDiscrete => &euler["scheduler"],
            SchedulerKind::UniPcMultistep => &unipc["scheduler"],
        };
        assert_eq!(keys(&c.to_value()), keys(reference), "{:?}", c.kind());
    }
}

#[test]
fn legacy_names_map_as_in_diffusers() {
    let c = SchedulerConfig::from_json_str(
        r#"{"_class_name": "DPMSolverMultistepScheduler", "algorithm_type": "deis",
            "solver_type": "bh2"}"#,
    )
    .unwrap();
    assert_eq!(
        c,
        SchedulerConfig::DpmSolverMultistep(DpmSolverMultistepConfig::default())
    );
    let text = c.to_json_string();
    assert!(
        text.contains(r#""algorithm_type": "dpmsolver++","#),
        "{text}"
    );
    assert!(text.contains(r#""solver_type": "midpoint","#), "{text}");
}

#[test]
fn load_errors_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(SCHEDULER_CONFIG_NAME);
    std::fs::write(&path, r#"{"_class_name": "DDPMScheduler", "#).unwrap();
    let err = SchedulerConfig::load(dir.path()).unwrap_err();
    assert!(
        matches!(&err, DiffusionError::ConfigParse { path: Some(p), .. } if *p == path),
        "{err}"
    );
    assert!(
        err.to_string().contains(&path.display().to_string()),
        "{err}"
    );
    std::fs::write(
        &path,
        r#"{"_class_name": "DDPMScheduler", "clip_sample": 1}"#,
    )
    .unwrap();
    let msg = SchedulerConfig::load(&path).unwrap_err().to_string();
    assert!(msg.contains(&path.display().to_string()), "{msg}");
    assert!(msg.contains("`clip_sample`"), "{msg}");
}

#[test]
fn build_rejects_what_load_rejects() {
    let c = SchedulerConfig::Ddpm(DdpmConfig {
        schedule: TrainSchedule {
            trained_betas: Some(vec![0.01; 1000]),
            ..TrainSchedule::default()
        },
        ..DdpmConfig::default()
    });
    let Err(err) = c.build() else {
        panic!("explicit betas were accepted")
    };
    let msg = err.to_string();
    assert!(
        msg.contains("`trained_betas`") && msg.contains("an array of 1000 values"),
        "{msg}"
    );
}

#[test]
fn euler_ancestral_reads_and_writes_its_class_fields() {
    let c = SchedulerConfig::from_json_str(
        r#"{"_class_name": "EulerAncestralDiscreteScheduler", "thresholding": true,
            "sample_max_value": 3.0}"#,
    )
    .unwrap();
    // diffusers ignores fields the class does not have, thresholding included
    assert_eq!(
        c,
        SchedulerConfig::EulerAncestral(EulerAncestralConfig::default())
    );
    assert_eq!(
        EulerAncestralConfig::default().timestep_spacing,
        TimestepSpacing::Linspace
    );
    let text = c.to_json_string();
    assert!(
        text.contains(r#""_class_name": "EulerAncestralDiscreteScheduler""#),
        "{text}"
    );
    assert!(!text.contains("thresholding"), "{text}");
    assert_eq!(SchedulerConfig::from_json_str(&text).unwrap(), c);
    assert!(c.build().is_ok());
    // from DDPM, as diffusers' `EulerAncestralDiscreteScheduler.from_config`
    let SchedulerConfig::EulerAncestral(e) = SchedulerConfig::Ddpm(DdpmConfig::default())
        .convert_to(SchedulerKind::EulerAncestralDiscrete)
        .unwrap()
    else {
        panic!("wrong kind")
    };
    assert_eq!(e.timestep_spacing, TimestepSpacing::Leading);
    for (field, value) in [
        ("prediction_type", r#""sample""#),
        ("rescale_betas_zero_snr", "true"),
        ("timestep_spacing", r#""uniform""#),
    ] {
        let json =
            format!(r#"{{"_class_name": "EulerAncestralDiscreteScheduler", "{field}": {value}}}"#);
        let err = SchedulerConfig::from_json_str(&json).unwrap_err();
        assert!(
            matches!(&err, DiffusionError::UnsupportedConfigValue { field: f, .. } if f == field),
            "{json}: {err}"
        );
    }
}

/// `UniPCMultistepScheduler(num_train_timesteps=1000).to_json_string()` of diffusers 0.42.1.
const UNIPC_DEFAULT_JSON: &str = r#"{
  "_class_name": "UniPCMultistepScheduler",
  "_diffusers_version": "0.42.1",
  "beta_end": 0.02,
  "beta_schedule": "linear",
  "beta_start": 0.0001,
  "disable_corrector": [],
  "dynamic_thresholding_ratio": 0.995,
  "final_sigmas_type": "zero",
  "flow_shift": 1.0,
  "lower_order_final": true,
  "num_train_timesteps": 1000,
  "predict_x0": true,
  "prediction_type": "epsilon",
  "rescale_betas_zero_snr": false,
  "sample_max_value": 1.0,
  "shift_terminal": null,
  "sigma_max": null,
  "sigma_min": null,
  "solver_order": 2,
  "solver_p": null,
  "solver_type": "bh2",
  "steps_offset": 0,
  "thresholding": false,
  "time_shift_type": "exponential",
  "timestep_spacing": "linspace",
  "trained_betas": null,
  "use_beta_sigmas": false,
  "use_dynamic_shifting": false,
  "use_exponential_sigmas": false,
  "use_flow_sigmas": false,
  "use_karras_sigmas": false
}
"#;

#[test]
fn unipc_config_round_trips_diffusers_text() {
    let c = SchedulerConfig::from_json_str(UNIPC_DEFAULT_JSON).unwrap();
    assert_eq!(
        c,
        SchedulerConfig::UniPcMultistep(UniPcMultistepConfig::default())
    );
    assert_eq!(c.to_json_string(), UNIPC_DEFAULT_JSON);
    assert!(c.build().is_ok());
    // diffusers maps the DPM-Solver solver types to bh2 and writes "bh2"
    let c = SchedulerConfig::from_json_str(
        r#"{"_class_name": "UniPCMultistepScheduler", "solver_type": "midpoint"}"#,
    )
    .unwrap();
    assert!(c.to_json_string().contains(r#""solver_type": "bh2","#));
    // from DPM-Solver++, as `UniPCMultistepScheduler.from_config`: shared fields carry over
    let dpm = SchedulerConfig::DpmSolverMultistep(DpmSolverMultistepConfig {
        solver_order: 1,
        final_sigmas_type: FinalSigmasType::SigmaMin,
        ..DpmSolverMultistepConfig::default()
    });
    let SchedulerConfig::UniPcMultistep(u) = dpm.convert_to(SchedulerKind::UniPcMultistep).unwrap()
    else {
        panic!("wrong kind")
    };
    assert_eq!(u.solver_order, 1);
    assert_eq!(u.final_sigmas_type, FinalSigmasType::SigmaMin);
    assert_eq!(u.solver_type, UniPcSolverType::Bh2);
    assert!(u.predict_x0);
}

#[test]
fn unipc_rejects_what_it_does_not_implement() {
    for (field, value) in [
        ("solver_order", "0"),
        ("solver_p", r#"{"a": 1}"#),
        ("use_karras_sigmas", "true"),
        ("use_flow_sigmas", "true"),
        ("use_dynamic_shifting", "true"),
        ("shift_terminal", "0.1"),
        ("prediction_type", r#""flow_prediction""#),
        ("solver_type", r#""bh3""#),
        // diffusers' last step is NaN here; with a final σ_min both forms are implemented
        ("solver_type", r#""bh1""#),
        ("predict_x0", "false"),
    ] {
        let json = format!(r#"{{"_class_name": "UniPCMultistepScheduler", "{field}": {value}}}"#);
        let err = SchedulerConfig::from_json_str(&json).unwrap_err();
        assert!(
            matches!(&err, DiffusionError::UnsupportedConfigValue { field: f, .. } if f == field),
            "{json}: {err}"
        );
    }
    for ok in [
        r#""solver_type": "bh1", "final_sigmas_type": "sigma_min""#,
        r#""predict_x0": false, "final_sigmas_type": "sigma_min""#,
        r#""solver_order": 3, "disable_corrector": [0, 1], "sigma_min": 0.5"#,
    ] {
        let json = format!(r#"{{"_class_name": "UniPCMultistepScheduler", {ok}}}"#);
        assert!(SchedulerConfig::from_json_str(&json).is_ok(), "{json}");
    }
}
