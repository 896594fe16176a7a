//! `scheduler/scheduler_config.json` as diffusers 0.42 reads and writes it.
//!
//! Each class keeps diffusers' field names and defaults; a missing field takes the default, an
//! unknown field is ignored (diffusers warns and ignores too), and a value this crate does not
//! implement (`thresholding: true`, `trained_betas`, `rescale_betas_zero_snr: true`, Karras sigmas,
//! ...) is rejected with the field and value named. Python's `json` writes `-Infinity` for
//! DPM-Solver's default `lambda_min_clipped`; we read and write that token the same way.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::error::{DiffusionError, Result};

/// diffusers version written into `_diffusers_version` of configs we save.
pub const DIFFUSERS_VERSION: &str = "0.42.1";

/// File name of a scheduler config inside a diffusers pipeline's `scheduler/` folder.
pub const SCHEDULER_CONFIG_NAME: &str = "scheduler_config.json";

macro_rules! string_enum {
    ($(#[$m:meta])* $name:ident, $field:literal, $reason:literal, { $($(#[$vm:meta])* $var:ident = $s:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum $name { $($(#[$vm])* $var),+ }

        impl $name {
            /// The string diffusers uses for this value.
            pub fn as_str(self) -> &'static str {
                match self { $(Self::$var => $s),+ }
            }

            /// Parses diffusers' string; `None` for anything this crate does not implement.
            pub fn parse(s: &str) -> Option<Self> {
                match s { $($s => Some(Self::$var),)+ _ => None }
            }

            fn read(fields: &Fields<'_>, default: Self) -> Result<Self> {
                match fields.get($field) {
                    None => Ok(default),
                    Some(Value::String(s)) => Self::parse(s).ok_or_else(|| fields.unsupported($field, &Value::String(s.clone()), $reason)),
                    Some(v) => Err(fields.type_error($field, "a string", v)),
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

string_enum!(
    /// `beta_schedule`.
    BetaSchedule, "beta_schedule", "supported: linear, scaled_linear, squaredcos_cap_v2", {
        /// β linear from `beta_start` to `beta_end` (DDPM paper, diffusers default).
        Linear = "linear",
        /// √β linear (latent diffusion).
        ScaledLinear = "scaled_linear",
        /// Cosine ᾱ schedule of Nichol & Dhariwal, β capped at 0.999.
        SquaredcosCapV2 = "squaredcos_cap_v2",
    }
);

string_enum!(
    /// `prediction_type`: what the network predicts.
    PredictionType, "prediction_type", "supported: epsilon, v_prediction, sample", {
        /// The added noise ε (paper and diffusers default).
        Epsilon = "epsilon",
        /// v = sqrt(ᾱ)·ε − sqrt(1−ᾱ)·x0.
        VPrediction = "v_prediction",
        /// x0 directly.
        Sample = "sample",
    }
);

string_enum!(
    /// `timestep_spacing` of inference timesteps.
    TimestepSpacing, "timestep_spacing", "supported: leading, trailing, linspace", {
        /// `arange(n) * (T // n) + steps_offset`, descending.
        Leading = "leading",
        /// `round(arange(T, 0, -T/n)) - 1`.
        Trailing = "trailing",
        /// `round(linspace(0, T-1, n))`, descending.
        Linspace = "linspace",
    }
);

string_enum!(
    /// DDPM `variance_type`.
    VarianceType, "variance_type", "supported: fixed_small, fixed_small_log, fixed_large", {
        /// β̃_t = (1−ᾱ_{t−1})/(1−ᾱ_t)·β_t (diffusers default).
        FixedSmall = "fixed_small",
        /// Same variance as `fixed_small`, computed through its log.
        FixedSmallLog = "fixed_small_log",
        /// β_t.
        FixedLarge = "fixed_large",
    }
);

string_enum!(
    /// DPM-Solver `solver_type` of the second-order update.
    SolverType, "solver_type", "supported: midpoint, heun", {
        /// diffusers default.
        Midpoint = "midpoint",
        /// Heun-style correction.
        Heun = "heun",
    }
);

string_enum!(
    /// DPM-Solver `final_sigmas_type`: the σ after the last step.
    FinalSigmasType, "final_sigmas_type", "supported: zero, sigma_min", {
        /// σ = 0: the last step returns the x0 prediction (diffusers default).
        Zero = "zero",
        /// σ of the first training timestep.
        SigmaMin = "sigma_min",
    }
);

/// Which scheduler class a config describes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SchedulerKind {
    /// `DDPMScheduler`.
    Ddpm,
    /// `DDIMScheduler`.
    Ddim,
    /// `DPMSolverMultistepScheduler` (DPM-Solver++ 2M).
    DpmSolverMultistep,
}

impl SchedulerKind {
    /// diffusers `_class_name`.
    pub fn class_name(self) -> &'static str {
        match self {
            Self::Ddpm => "DDPMScheduler",
            Self::Ddim => "DDIMScheduler",
            Self::DpmSolverMultistep => "DPMSolverMultistepScheduler",
        }
    }

    /// Parses a diffusers `_class_name`.
    pub fn from_class_name(name: &str) -> Option<Self> {
        match name {
            "DDPMScheduler" => Some(Self::Ddpm),
            "DDIMScheduler" => Some(Self::Ddim),
            "DPMSolverMultistepScheduler" => Some(Self::DpmSolverMultistep),
            _ => None,
        }
    }
}

/// `DDPMScheduler` config (diffusers defaults in `Default`).
#[derive(Clone, Debug, PartialEq)]
pub struct DdpmConfig {
    pub num_train_timesteps: usize,
    pub beta_start: f64,
    pub beta_end: f64,
    pub beta_schedule: BetaSchedule,
    pub variance_type: VarianceType,
    pub clip_sample: bool,
    pub prediction_type: PredictionType,
    /// Kept for round trips; only used by thresholding, which is not supported.
    pub dynamic_thresholding_ratio: f64,
    pub clip_sample_range: f64,
    /// Kept for round trips; only used by thresholding, which is not supported.
    pub sample_max_value: f64,
    pub timestep_spacing: TimestepSpacing,
    pub steps_offset: usize,
}

impl Default for DdpmConfig {
    fn default() -> Self {
        Self {
            num_train_timesteps: 1000,
            beta_start: 0.0001,
            beta_end: 0.02,
            beta_schedule: BetaSchedule::Linear,
            variance_type: VarianceType::FixedSmall,
            clip_sample: true,
            prediction_type: PredictionType::Epsilon,
            dynamic_thresholding_ratio: 0.995,
            clip_sample_range: 1.0,
            sample_max_value: 1.0,
            timestep_spacing: TimestepSpacing::Leading,
            steps_offset: 0,
        }
    }
}

/// `DDIMScheduler` config (diffusers defaults in `Default`).
#[derive(Clone, Debug, PartialEq)]
pub struct DdimConfig {
    pub num_train_timesteps: usize,
    pub beta_start: f64,
    pub beta_end: f64,
    pub beta_schedule: BetaSchedule,
    pub clip_sample: bool,
    /// ᾱ used past the last step: 1.0 if true, else ᾱ_0.
    pub set_alpha_to_one: bool,
    pub steps_offset: usize,
    pub prediction_type: PredictionType,
    /// Kept for round trips; only used by thresholding, which is not supported.
    pub dynamic_thresholding_ratio: f64,
    pub clip_sample_range: f64,
    /// Kept for round trips; only used by thresholding, which is not supported.
    pub sample_max_value: f64,
    pub timestep_spacing: TimestepSpacing,
}

impl Default for DdimConfig {
    fn default() -> Self {
        Self {
            num_train_timesteps: 1000,
            beta_start: 0.0001,
            beta_end: 0.02,
            beta_schedule: BetaSchedule::Linear,
            clip_sample: true,
            set_alpha_to_one: true,
            steps_offset: 0,
            prediction_type: PredictionType::Epsilon,
            dynamic_thresholding_ratio: 0.995,
            clip_sample_range: 1.0,
            sample_max_value: 1.0,
            timestep_spacing: TimestepSpacing::Leading,
        }
    }
}

/// `DPMSolverMultistepScheduler` config restricted to `algorithm_type = "dpmsolver++"`
/// (diffusers defaults in `Default`).
#[derive(Clone, Debug, PartialEq)]
pub struct DpmSolverMultistepConfig {
    pub num_train_timesteps: usize,
    pub beta_start: f64,
    pub beta_end: f64,
    pub beta_schedule: BetaSchedule,
    /// 1 or 2 (3 is not implemented).
    pub solver_order: usize,
    pub prediction_type: PredictionType,
    /// Kept for round trips; only used by thresholding, which is not supported.
    pub dynamic_thresholding_ratio: f64,
    /// Kept for round trips; only used by thresholding, which is not supported.
    pub sample_max_value: f64,
    pub solver_type: SolverType,
    pub lower_order_final: bool,
    pub euler_at_final: bool,
    /// Kept for round trips; only used with flow sigmas, which are not supported.
    pub flow_shift: f64,
    pub final_sigmas_type: FinalSigmasType,
    /// Timesteps whose log-SNR λ is below this are never used (−∞ keeps all).
    pub lambda_min_clipped: f64,
    /// Anything but "learned"/"learned_range" behaves as None in diffusers; kept verbatim.
    pub variance_type: Option<String>,
    pub timestep_spacing: TimestepSpacing,
    pub steps_offset: usize,
    /// Kept for round trips; only used with dynamic shifting, which is not supported.
    pub time_shift_type: String,
}

impl Default for DpmSolverMultistepConfig {
    fn default() -> Self {
        Self {
            num_train_timesteps: 1000,
            beta_start: 0.0001,
            beta_end: 0.02,
            beta_schedule: BetaSchedule::Linear,
            solver_order: 2,
            prediction_type: PredictionType::Epsilon,
            dynamic_thresholding_ratio: 0.995,
            sample_max_value: 1.0,
            solver_type: SolverType::Midpoint,
            lower_order_final: true,
            euler_at_final: false,
            flow_shift: 1.0,
            final_sigmas_type: FinalSigmasType::Zero,
            lambda_min_clipped: f64::NEG_INFINITY,
            variance_type: None,
            timestep_spacing: TimestepSpacing::Linspace,
            steps_offset: 0,
            time_shift_type: "exponential".into(),
        }
    }
}

/// A diffusers scheduler config, tagged by `_class_name`.
#[derive(Clone, Debug, PartialEq)]
pub enum SchedulerConfig {
    Ddpm(DdpmConfig),
    Ddim(DdimConfig),
    DpmSolverMultistep(DpmSolverMultistepConfig),
}

// Python's json module writes these bare tokens for non-finite floats; serde_json rejects them.
const NON_FINITE_TOKENS: [&str; 3] = ["-Infinity", "Infinity", "NaN"];

/// Quotes bare `-Infinity` / `Infinity` / `NaN` tokens outside strings so serde_json can parse them.
fn quote_non_finite_tokens(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 16);
    let mut in_string = false;
    let mut escaped = false;
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        if in_string {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
            rest = &rest[c.len_utf8()..];
            continue;
        }
        if c == '"' {
            in_string = true;
            out.push(c);
            rest = &rest[1..];
            continue;
        }
        if let Some(tok) = NON_FINITE_TOKENS.iter().find(|t| rest.starts_with(**t)) {
            out.push('"');
            out.push_str(tok);
            out.push('"');
            rest = &rest[tok.len()..];
            continue;
        }
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    out
}

/// Read access to one class's fields with errors naming the field and value.
struct Fields<'a> {
    class: &'a str,
    map: &'a Map<String, Value>,
}

fn describe(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Array(a) if a.len() > 4 => format!("an array of {} values", a.len()),
        other => other.to_string(),
    }
}

impl<'a> Fields<'a> {
    fn get(&self, field: &str) -> Option<&'a Value> {
        self.map.get(field)
    }

    fn type_error(&self, field: &'static str, expected: &'static str, v: &Value) -> DiffusionError {
        DiffusionError::ConfigFieldType {
            class: self.class.to_string(),
            field,
            expected,
            found: describe(v),
        }
    }

    fn unsupported(&self, field: &'static str, v: &Value, reason: &'static str) -> DiffusionError {
        DiffusionError::UnsupportedConfigValue {
            class: self.class.to_string(),
            field,
            value: describe(v),
            reason,
        }
    }

    fn usize(&self, field: &'static str, default: usize) -> Result<usize> {
        match self.get(field) {
            None => Ok(default),
            Some(v) => v
                .as_u64()
                .and_then(|u| usize::try_from(u).ok())
                .ok_or_else(|| self.type_error(field, "a non-negative integer", v)),
        }
    }

    fn f64(&self, field: &'static str, default: f64) -> Result<f64> {
        match self.get(field) {
            None => Ok(default),
            Some(Value::String(s)) => match s.as_str() {
                "-Infinity" => Ok(f64::NEG_INFINITY),
                "Infinity" => Ok(f64::INFINITY),
                "NaN" => Ok(f64::NAN),
                _ => Err(self.type_error(field, "a number", &Value::String(s.clone()))),
            },
            Some(v) => v
                .as_f64()
                .ok_or_else(|| self.type_error(field, "a number", v)),
        }
    }

    fn bool(&self, field: &'static str, default: bool) -> Result<bool> {
        match self.get(field) {
            None => Ok(default),
            Some(v) => v
                .as_bool()
                .ok_or_else(|| self.type_error(field, "true or false", v)),
        }
    }

    fn string(&self, field: &'static str, default: &str) -> Result<String> {
        match self.get(field) {
            None => Ok(default.to_string()),
            Some(Value::String(s)) => Ok(s.clone()),
            Some(v) => Err(self.type_error(field, "a string", v)),
        }
    }

    /// A flag this crate only implements in its `false` state.
    fn must_be_false(&self, field: &'static str, reason: &'static str) -> Result<()> {
        match self.get(field) {
            None | Some(Value::Bool(false)) => Ok(()),
            Some(v @ Value::Bool(true)) => Err(self.unsupported(field, v, reason)),
            Some(v) => Err(self.type_error(field, "true or false", v)),
        }
    }

    /// An optional field this crate only implements when null/absent.
    fn must_be_null(&self, field: &'static str, reason: &'static str) -> Result<()> {
        match self.get(field) {
            None | Some(Value::Null) => Ok(()),
            Some(v) => Err(self.unsupported(field, v, reason)),
        }
    }

    fn finite(&self, field: &'static str, default: f64) -> Result<f64> {
        let v = self.f64(field, default)?;
        if !v.is_finite() {
            return Err(self.unsupported(field, &Value::String(v.to_string()), "must be finite"));
        }
        Ok(v)
    }

    fn betas(&self) -> Result<(usize, f64, f64, BetaSchedule)> {
        let n = self.usize("num_train_timesteps", 1000)?;
        if n == 0 {
            return Err(self.unsupported(
                "num_train_timesteps",
                &Value::from(0),
                "must be at least 1",
            ));
        }
        let start = self.finite("beta_start", 0.0001)?;
        let end = self.finite("beta_end", 0.02)?;
        for (field, b) in [("beta_start", start), ("beta_end", end)] {
            if !(0.0..1.0).contains(&b) {
                return Err(self.unsupported(field, &Value::from(b), "must be in [0, 1)"));
            }
        }
        let schedule = BetaSchedule::read(self, BetaSchedule::Linear)?;
        self.must_be_null("trained_betas", "explicit betas are not supported")?;
        self.must_be_false(
            "rescale_betas_zero_snr",
            "zero-terminal-SNR rescaling is not supported",
        )?;
        self.must_be_false("thresholding", "dynamic thresholding is not supported")?;
        Ok((n, start, end, schedule))
    }

    fn clip_range(&self) -> Result<f64> {
        let r = self.finite("clip_sample_range", 1.0)?;
        if r <= 0.0 {
            return Err(self.unsupported("clip_sample_range", &Value::from(r), "must be > 0"));
        }
        Ok(r)
    }
}

fn number(v: f64) -> Value {
    if v.is_finite() {
        // Integral floats stay floats ("1.0"), as Python writes them.
        serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number)
    } else if v.is_nan() {
        Value::String("NaN".into())
    } else if v > 0.0 {
        Value::String("Infinity".into())
    } else {
        Value::String("-Infinity".into())
    }
}

impl DdpmConfig {
    fn from_fields(f: &Fields<'_>) -> Result<Self> {
        let d = Self::default();
        let (num_train_timesteps, beta_start, beta_end, beta_schedule) = f.betas()?;
        Ok(Self {
            num_train_timesteps,
            beta_start,
            beta_end,
            beta_schedule,
            variance_type: VarianceType::read(f, d.variance_type)?,
            clip_sample: f.bool("clip_sample", d.clip_sample)?,
            prediction_type: PredictionType::read(f, d.prediction_type)?,
            dynamic_thresholding_ratio: f
                .f64("dynamic_thresholding_ratio", d.dynamic_thresholding_ratio)?,
            clip_sample_range: f.clip_range()?,
            sample_max_value: f.f64("sample_max_value", d.sample_max_value)?,
            timestep_spacing: TimestepSpacing::read(f, d.timestep_spacing)?,
            steps_offset: f.usize("steps_offset", d.steps_offset)?,
        })
    }

    fn to_map(&self, m: &mut Map<String, Value>) {
        m.insert(
            "num_train_timesteps".into(),
            self.num_train_timesteps.into(),
        );
        m.insert("beta_start".into(), number(self.beta_start));
        m.insert("beta_end".into(), number(self.beta_end));
        m.insert("beta_schedule".into(), self.beta_schedule.as_str().into());
        m.insert("trained_betas".into(), Value::Null);
        m.insert("variance_type".into(), self.variance_type.as_str().into());
        m.insert("clip_sample".into(), self.clip_sample.into());
        m.insert(
            "prediction_type".into(),
            self.prediction_type.as_str().into(),
        );
        m.insert("thresholding".into(), false.into());
        m.insert(
            "dynamic_thresholding_ratio".into(),
            number(self.dynamic_thresholding_ratio),
        );
        m.insert("clip_sample_range".into(), number(self.clip_sample_range));
        m.insert("sample_max_value".into(), number(self.sample_max_value));
        m.insert(
            "timestep_spacing".into(),
            self.timestep_spacing.as_str().into(),
        );
        m.insert("steps_offset".into(), self.steps_offset.into());
        m.insert("rescale_betas_zero_snr".into(), false.into());
    }
}

impl DdimConfig {
    fn from_fields(f: &Fields<'_>) -> Result<Self> {
        let d = Self::default();
        let (num_train_timesteps, beta_start, beta_end, beta_schedule) = f.betas()?;
        Ok(Self {
            num_train_timesteps,
            beta_start,
            beta_end,
            beta_schedule,
            clip_sample: f.bool("clip_sample", d.clip_sample)?,
            set_alpha_to_one: f.bool("set_alpha_to_one", d.set_alpha_to_one)?,
            steps_offset: f.usize("steps_offset", d.steps_offset)?,
            prediction_type: PredictionType::read(f, d.prediction_type)?,
            dynamic_thresholding_ratio: f
                .f64("dynamic_thresholding_ratio", d.dynamic_thresholding_ratio)?,
            clip_sample_range: f.clip_range()?,
            sample_max_value: f.f64("sample_max_value", d.sample_max_value)?,
            timestep_spacing: TimestepSpacing::read(f, d.timestep_spacing)?,
        })
    }

    fn to_map(&self, m: &mut Map<String, Value>) {
        m.insert(
            "num_train_timesteps".into(),
            self.num_train_timesteps.into(),
        );
        m.insert("beta_start".into(), number(self.beta_start));
        m.insert("beta_end".into(), number(self.beta_end));
        m.insert("beta_schedule".into(), self.beta_schedule.as_str().into());
        m.insert("trained_betas".into(), Value::Null);
        m.insert("clip_sample".into(), self.clip_sample.into());
        m.insert("set_alpha_to_one".into(), self.set_alpha_to_one.into());
        m.insert("steps_offset".into(), self.steps_offset.into());
        m.insert(
            "prediction_type".into(),
            self.prediction_type.as_str().into(),
        );
        m.insert("thresholding".into(), false.into());
        m.insert(
            "dynamic_thresholding_ratio".into(),
            number(self.dynamic_thresholding_ratio),
        );
        m.insert("clip_sample_range".into(), number(self.clip_sample_range));
        m.insert("sample_max_value".into(), number(self.sample_max_value));
        m.insert(
            "timestep_spacing".into(),
            self.timestep_spacing.as_str().into(),
        );
        m.insert("rescale_betas_zero_snr".into(), false.into());
    }
}

impl DpmSolverMultistepConfig {
    fn from_fields(f: &Fields<'_>) -> Result<Self> {
        let d = Self::default();
        let (num_train_timesteps, beta_start, beta_end, beta_schedule) = f.betas()?;
        let algorithm = f.string("algorithm_type", "dpmsolver++")?;
        // diffusers silently maps the legacy "deis" to dpmsolver++.
        if algorithm != "dpmsolver++" && algorithm != "deis" {
            return Err(f.unsupported(
                "algorithm_type",
                &Value::String(algorithm),
                "only dpmsolver++ is implemented",
            ));
        }
        let solver_order = f.usize("solver_order", d.solver_order)?;
        if !(1..=2).contains(&solver_order) {
            return Err(f.unsupported(
                "solver_order",
                &Value::from(solver_order),
                "only orders 1 and 2 are implemented",
            ));
        }
        let solver_type = match f.get("solver_type") {
            // diffusers maps the UniPC/DEIS names to midpoint.
            Some(Value::String(s)) if ["logrho", "bh1", "bh2"].contains(&s.as_str()) => {
                SolverType::Midpoint
            }
            _ => SolverType::read(f, d.solver_type)?,
        };
        for flag in [
            "use_karras_sigmas",
            "use_exponential_sigmas",
            "use_beta_sigmas",
            "use_lu_lambdas",
            "use_flow_sigmas",
            "use_dynamic_shifting",
        ] {
            f.must_be_false(flag, "only the default sigma schedule is implemented")?;
        }
        let variance_type = match f.get("variance_type") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if s == "learned" || s == "learned_range" => {
                return Err(f.unsupported(
                    "variance_type",
                    &Value::String(s.clone()),
                    "learned variances are not supported",
                ))
            }
            Some(Value::String(s)) => Some(s.clone()),
            Some(v) => return Err(f.type_error("variance_type", "null or a string", v)),
        };
        let lambda_min_clipped = f.f64("lambda_min_clipped", d.lambda_min_clipped)?;
        if lambda_min_clipped.is_nan() {
            return Err(f.unsupported(
                "lambda_min_clipped",
                &Value::String("NaN".into()),
                "must not be NaN",
            ));
        }
        Ok(Self {
            num_train_timesteps,
            beta_start,
            beta_end,
            beta_schedule,
            solver_order,
            prediction_type: PredictionType::read(f, d.prediction_type)?,
            dynamic_thresholding_ratio: f
                .f64("dynamic_thresholding_ratio", d.dynamic_thresholding_ratio)?,
            sample_max_value: f.f64("sample_max_value", d.sample_max_value)?,
            solver_type,
            lower_order_final: f.bool("lower_order_final", d.lower_order_final)?,
            euler_at_final: f.bool("euler_at_final", d.euler_at_final)?,
            flow_shift: f.f64("flow_shift", d.flow_shift)?,
            final_sigmas_type: FinalSigmasType::read(f, d.final_sigmas_type)?,
            lambda_min_clipped,
            variance_type,
            timestep_spacing: TimestepSpacing::read(f, d.timestep_spacing)?,
            steps_offset: f.usize("steps_offset", d.steps_offset)?,
            time_shift_type: f.string("time_shift_type", &d.time_shift_type)?,
        })
    }

    fn to_map(&self, m: &mut Map<String, Value>) {
        m.insert(
            "num_train_timesteps".into(),
            self.num_train_timesteps.into(),
        );
        m.insert("beta_start".into(), number(self.beta_start));
        m.insert("beta_end".into(), number(self.beta_end));
        m.insert("beta_schedule".into(), self.beta_schedule.as_str().into());
        m.insert("trained_betas".into(), Value::Null);
        m.insert("solver_order".into(), self.solver_order.into());
        m.insert(
            "prediction_type".into(),
            self.prediction_type.as_str().into(),
        );
        m.insert("thresholding".into(), false.into());
        m.insert(
            "dynamic_thresholding_ratio".into(),
            number(self.dynamic_thresholding_ratio),
        );
        m.insert("sample_max_value".into(), number(self.sample_max_value));
        m.insert("algorithm_type".into(), "dpmsolver++".into());
        m.insert("solver_type".into(), self.solver_type.as_str().into());
        m.insert("lower_order_final".into(), self.lower_order_final.into());
        m.insert("euler_at_final".into(), self.euler_at_final.into());
        for flag in [
            "use_karras_sigmas",
            "use_exponential_sigmas",
            "use_beta_sigmas",
            "use_lu_lambdas",
            "use_flow_sigmas",
            "use_dynamic_shifting",
        ] {
            m.insert(flag.into(), false.into());
        }
        m.insert("flow_shift".into(), number(self.flow_shift));
        m.insert(
            "final_sigmas_type".into(),
            self.final_sigmas_type.as_str().into(),
        );
        m.insert("lambda_min_clipped".into(), number(self.lambda_min_clipped));
        m.insert(
            "variance_type".into(),
            self.variance_type
                .clone()
                .map_or(Value::Null, Value::String),
        );
        m.insert(
            "timestep_spacing".into(),
            self.timestep_spacing.as_str().into(),
        );
        m.insert("steps_offset".into(), self.steps_offset.into());
        m.insert("rescale_betas_zero_snr".into(), false.into());
        m.insert(
            "time_shift_type".into(),
            self.time_shift_type.clone().into(),
        );
    }
}

impl SchedulerConfig {
    /// Which scheduler class this is.
    pub fn kind(&self) -> SchedulerKind {
        match self {
            Self::Ddpm(_) => SchedulerKind::Ddpm,
            Self::Ddim(_) => SchedulerKind::Ddim,
            Self::DpmSolverMultistep(_) => SchedulerKind::DpmSolverMultistep,
        }
    }

    /// Training timesteps T.
    pub fn num_train_timesteps(&self) -> usize {
        match self {
            Self::Ddpm(c) => c.num_train_timesteps,
            Self::Ddim(c) => c.num_train_timesteps,
            Self::DpmSolverMultistep(c) => c.num_train_timesteps,
        }
    }

    /// Prediction target of the model this scheduler drives.
    pub fn prediction_type(&self) -> PredictionType {
        match self {
            Self::Ddpm(c) => c.prediction_type,
            Self::Ddim(c) => c.prediction_type,
            Self::DpmSolverMultistep(c) => c.prediction_type,
        }
    }

    /// Parses a JSON object with a `_class_name`; non-finite floats may be Python's bare tokens.
    pub fn from_json_str(text: &str) -> Result<Self> {
        let value: Value = serde_json::from_str(&quote_non_finite_tokens(text)).map_err(|e| {
            DiffusionError::ConfigParse {
                path: None,
                message: e.to_string(),
            }
        })?;
        Self::from_value(&value)
    }

    /// Builds a config from a parsed JSON object (see [`SchedulerConfig::from_json_str`]).
    pub fn from_value(value: &Value) -> Result<Self> {
        let map = value
            .as_object()
            .ok_or_else(|| DiffusionError::ConfigParse {
                path: None,
                message: format!("expected a JSON object, found {}", describe(value)),
            })?;
        let class = match map.get("_class_name") {
            Some(Value::String(s)) => s.as_str(),
            Some(v) => {
                return Err(DiffusionError::ConfigFieldType {
                    class: "scheduler config".into(),
                    field: "_class_name",
                    expected: "a string",
                    found: describe(v),
                })
            }
            None => {
                return Err(DiffusionError::ConfigParse {
                    path: None,
                    message: "missing `_class_name`".into(),
                })
            }
        };
        Self::from_map_as(map, class)
    }

    fn from_map_as(map: &Map<String, Value>, class: &str) -> Result<Self> {
        let kind = SchedulerKind::from_class_name(class)
            .ok_or_else(|| DiffusionError::UnsupportedScheduler(class.to_string()))?;
        let f = Fields { class, map };
        Ok(match kind {
            SchedulerKind::Ddpm => Self::Ddpm(DdpmConfig::from_fields(&f)?),
            SchedulerKind::Ddim => Self::Ddim(DdimConfig::from_fields(&f)?),
            SchedulerKind::DpmSolverMultistep => {
                Self::DpmSolverMultistep(DpmSolverMultistepConfig::from_fields(&f)?)
            }
        })
    }

    /// Reads `path`, or `path/scheduler_config.json` when `path` is a directory.
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let mut path: PathBuf = path.as_ref().to_path_buf();
        if path.is_dir() {
            path.push(SCHEDULER_CONFIG_NAME);
        }
        let text = std::fs::read_to_string(&path).map_err(|source| DiffusionError::ConfigIo {
            path: path.clone(),
            source,
        })?;
        Self::from_json_str(&text).map_err(|e| match e {
            DiffusionError::ConfigParse {
                path: None,
                message,
            } => DiffusionError::ConfigParse {
                path: Some(path.clone()),
                message,
            },
            other => other,
        })
    }

    /// All fields as diffusers saves them (plus `_class_name`, `_diffusers_version`); non-finite
    /// floats appear as the strings "-Infinity" / "Infinity" / "NaN".
    pub fn to_value(&self) -> Value {
        let mut m = Map::new();
        m.insert("_class_name".into(), self.kind().class_name().into());
        m.insert("_diffusers_version".into(), DIFFUSERS_VERSION.into());
        match self {
            Self::Ddpm(c) => c.to_map(&mut m),
            Self::Ddim(c) => c.to_map(&mut m),
            Self::DpmSolverMultistep(c) => c.to_map(&mut m),
        }
        Value::Object(m)
    }

    /// The text diffusers' `to_json_string` would write: sorted keys, indent 2, trailing newline,
    /// bare `-Infinity` for non-finite floats.
    pub fn to_json_string(&self) -> String {
        // A BTreeMap sorts keys whatever serde_json features other crates enable.
        let sorted: std::collections::BTreeMap<String, Value> = match self.to_value() {
            Value::Object(m) => m.into_iter().collect(),
            _ => std::collections::BTreeMap::new(),
        };
        let mut text = serde_json::to_string_pretty(&sorted).unwrap_or_default();
        for tok in NON_FINITE_TOKENS {
            text = text.replace(&format!("\"{tok}\""), tok);
        }
        text.push('\n');
        text
    }

    /// Writes the config to `path` (a file, or a directory that gets `scheduler_config.json`),
    /// through a temporary file in the same folder renamed into place.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<PathBuf> {
        let mut path = path.as_ref().to_path_buf();
        if path.is_dir() {
            path.push(SCHEDULER_CONFIG_NAME);
        }
        let file_name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| SCHEDULER_CONFIG_NAME.to_string());
        let tmp = path.with_file_name(format!(".{file_name}.tmp{}", std::process::id()));
        let io_err = |source| DiffusionError::ConfigIo {
            path: path.clone(),
            source,
        };
        std::fs::write(&tmp, self.to_json_string()).map_err(io_err)?;
        if let Err(e) = std::fs::rename(&tmp, &path) {
            let _ = std::fs::remove_file(&tmp);
            return Err(io_err(e));
        }
        Ok(path)
    }

    /// The config another scheduler class gets from this one, as diffusers' `Target.from_config`
    /// does: fields the target knows are carried over, the rest take the target's defaults.
    pub fn convert_to(&self, kind: SchedulerKind) -> Result<Self> {
        let value = self.to_value();
        let map = value.as_object().cloned().unwrap_or_default();
        Self::from_map_as(&map, kind.class_name())
    }

    /// Builds the scheduler this config describes.
    pub fn build(&self) -> Result<Box<dyn crate::scheduler::Scheduler>> {
        Ok(match self {
            Self::Ddpm(c) => Box::new(crate::ddpm::DdpmScheduler::new(c.clone())?),
            Self::Ddim(c) => Box::new(crate::ddim::DdimScheduler::new(c.clone())?),
            Self::DpmSolverMultistep(c) => Box::new(
                crate::dpm_solver::DpmSolverMultistepScheduler::new(c.clone())?,
            ),
        })
    }
}

impl Default for SchedulerConfig {
    /// The paper's training scheduler: `DDPMScheduler(num_train_timesteps=1000)`.
    fn default() -> Self {
        Self::Ddpm(DdpmConfig::default())
    }
}

impl serde::Serialize for SchedulerConfig {
    fn serialize<S: serde::Serializer>(
        &self,
        serializer: S,
    ) -> std::result::Result<S::Ok, S::Error> {
        self.to_value().serialize(serializer)
    }
}

impl<'de> serde::Deserialize<'de> for SchedulerConfig {
    fn deserialize<D: serde::Deserializer<'de>>(
        deserializer: D,
    ) -> std::result::Result<Self, D::Error> {
        let value = Value::deserialize(deserializer)?;
        Self::from_value(&value).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
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
        let c = SchedulerConfig::from_json_str(r#"{"_class_name": "DDIMScheduler", "extra": 3}"#)
            .unwrap();
        assert_eq!(c, SchedulerConfig::Ddim(DdimConfig::default()));
        let c = SchedulerConfig::from_json_str(r#"{"_class_name": "DDPMScheduler"}"#).unwrap();
        assert_eq!(c, SchedulerConfig::Ddpm(DdpmConfig::default()));
    }

    #[test]
    fn unsupported_values_name_field_and_value() {
        let cases = [
            (
                r#"{"_class_name": "DDPMScheduler", "thresholding": true}"#,
                "thresholding",
                "true",
            ),
            (
                r#"{"_class_name": "DDIMScheduler", "rescale_betas_zero_snr": true}"#,
                "rescale_betas_zero_snr",
                "true",
            ),
            (
                r#"{"_class_name": "DDIMScheduler", "trained_betas": [0.1, 0.2]}"#,
                "trained_betas",
                "[0.1,0.2]",
            ),
            (
                r#"{"_class_name": "DDPMScheduler", "beta_schedule": "sigmoid"}"#,
                "beta_schedule",
                "sigmoid",
            ),
            (
                r#"{"_class_name": "DDPMScheduler", "variance_type": "learned_range"}"#,
                "variance_type",
                "learned_range",
            ),
            (
                r#"{"_class_name": "DPMSolverMultistepScheduler", "solver_order": 3}"#,
                "solver_order",
                "3",
            ),
            (
                r#"{"_class_name": "DPMSolverMultistepScheduler", "use_karras_sigmas": true}"#,
                "use_karras_sigmas",
                "true",
            ),
            (
                r#"{"_class_name": "DPMSolverMultistepScheduler", "algorithm_type": "sde-dpmsolver++"}"#,
                "algorithm_type",
                "sde-dpmsolver++",
            ),
        ];
        for (json, field, value) in cases {
            let err = SchedulerConfig::from_json_str(json).unwrap_err();
            let msg = err.to_string();
            assert!(
                matches!(err, DiffusionError::UnsupportedConfigValue { .. }),
                "{json}: {msg}"
            );
            assert!(msg.contains(field) && msg.contains(value), "{msg}");
        }
        let err = SchedulerConfig::from_json_str(
            r#"{"_class_name": "DDPMScheduler", "clip_sample": "yes"}"#,
        )
        .unwrap_err();
        assert!(err.to_string().contains("clip_sample"), "{err}");
        let err =
            SchedulerConfig::from_json_str(r#"{"_class_name": "PNDMScheduler"}"#).unwrap_err();
        assert!(err.to_string().contains("PNDMScheduler"), "{err}");
    }

    #[test]
    fn convert_carries_shared_fields_like_from_config() {
        let ddpm = SchedulerConfig::Ddpm(DdpmConfig {
            beta_schedule: BetaSchedule::ScaledLinear,
            clip_sample: false,
            prediction_type: PredictionType::VPrediction,
            ..DdpmConfig::default()
        });
        let SchedulerConfig::Ddim(ddim) = ddpm.convert_to(SchedulerKind::Ddim).unwrap() else {
            panic!("wrong kind")
        };
        assert_eq!(ddim.beta_schedule, BetaSchedule::ScaledLinear);
        assert!(!ddim.clip_sample);
        assert!(ddim.set_alpha_to_one);
        assert_eq!(ddim.prediction_type, PredictionType::VPrediction);
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
            steps_offset: 1,
            ..DdimConfig::default()
        });
        let written = c.save(dir.path()).unwrap();
        assert_eq!(written, dir.path().join(SCHEDULER_CONFIG_NAME));
        assert_eq!(SchedulerConfig::load(dir.path()).unwrap(), c);
        let text = std::fs::read_to_string(&written).unwrap();
        assert!(
            text.starts_with("{\n  \"_class_name\": \"DDIMScheduler\",\n  \"_diffusers_version\"")
        );
        assert!(text.contains("\"beta_start\": 0.0001,"));
        assert!(text.contains("\"clip_sample_range\": 1.0,"));
        let json: SchedulerConfig = serde_json::from_str(&text).unwrap();
        assert_eq!(json, c);
    }
}
