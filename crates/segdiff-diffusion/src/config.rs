//! `scheduler/scheduler_config.json` as diffusers 0.42 reads and writes it.
//!
//! Each class's config is a serde struct with diffusers' field names and defaults; the fields the
//! classes share are declared once, in [`TrainSchedule`], and flattened into each. A missing
//! field takes the default, an unknown field is ignored (diffusers warns and ignores too), and a
//! value this crate does not implement (`thresholding: true`, `trained_betas`,
//! `rescale_betas_zero_snr: true`, Karras sigmas, ...) is rejected at load with the field and value
//! named. Python's `json` writes `-Infinity` for DPM-Solver's default `lambda_min_clipped`; we read
//! and write that token the same way.

use std::fmt::Display;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

use crate::error::{DiffusionError, Result};
use crate::noise_schedule::NoiseSchedule;

/// diffusers version written into `_diffusers_version` of configs we save.
pub const DIFFUSERS_VERSION: &str = "0.42.1";

/// File name of a scheduler config inside a diffusers pipeline's `scheduler/` folder.
pub const SCHEDULER_CONFIG_NAME: &str = "scheduler_config.json";

/// Why a diffusers option this crate does not implement is rejected.
const NOT_IMPLEMENTED: &str = "not implemented by segdiff";

mod values;

pub use values::{
    AlgorithmType, BetaSchedule, FinalSigmasType, PredictionType, SolverType, TimestepSpacing,
    UniPcSolverType, VarianceType,
};

/// Which scheduler class a config describes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SchedulerKind {
    /// `DDPMScheduler`.
    Ddpm,
    /// `DDIMScheduler`.
    Ddim,
    /// `DPMSolverMultistepScheduler` (DPM-Solver++ 2M).
    DpmSolverMultistep,
    /// `EulerAncestralDiscreteScheduler`.
    EulerAncestralDiscrete,
    /// `UniPCMultistepScheduler` (UniPC: UniP predictor + UniC corrector).
    UniPcMultistep,
}

impl SchedulerKind {
    const ALL: [Self; 5] = [
        Self::Ddpm,
        Self::Ddim,
        Self::DpmSolverMultistep,
        Self::EulerAncestralDiscrete,
        Self::UniPcMultistep,
    ];

    /// diffusers `_class_name`.
    pub fn class_name(self) -> &'static str {
        match self {
            Self::Ddpm => "DDPMScheduler",
            Self::Ddim => "DDIMScheduler",
            Self::DpmSolverMultistep => "DPMSolverMultistepScheduler",
            Self::EulerAncestralDiscrete => "EulerAncestralDiscreteScheduler",
            Self::UniPcMultistep => "UniPCMultistepScheduler",
        }
    }

    /// Parses a diffusers `_class_name`.
    pub fn from_class_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.class_name() == name)
    }
}

/// Python's `json` spelling of the non-finite floats. serde_json rejects these bare tokens, so they
/// are quoted before parsing and unquoted after writing; in between they are strings.
const NON_FINITE_TOKENS: [(&str, f64); 3] = [
    ("-Infinity", f64::NEG_INFINITY),
    ("Infinity", f64::INFINITY),
    ("NaN", f64::NAN),
];

/// serde `with` module for floats that may be non-finite (as the quoted tokens above).
mod py_float {
    use super::*;

    pub fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
        let token = NON_FINITE_TOKENS
            .iter()
            .find(|(_, x)| x == v || (x.is_nan() && v.is_nan()));
        match token {
            Some((token, _)) => s.serialize_str(token),
            None => s.serialize_f64(*v),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        use serde::de::Error;
        match Value::deserialize(d)? {
            Value::String(s) => NON_FINITE_TOKENS
                .iter()
                .find(|(token, _)| *token == s)
                .map(|(_, x)| *x)
                .ok_or_else(|| D::Error::custom(format_args!("expected a number, found {s:?}"))),
            v => f64::deserialize(v).map_err(D::Error::custom),
        }
    }
}

/// Declares a config struct whose fields carry their diffusers defaults, as the class's
/// `__init__` signature does: `pub name: Type = default` gives the field and its `Default` value.
macro_rules! config_struct {
    ($(#[$m:meta])* pub struct $name:ident {
        $($(#[$fm:meta])* pub $field:ident: $ty:ty = $default:expr),+ $(,)?
    }) => {
        $(#[$m])*
        #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
        #[serde(default)]
        pub struct $name { $($(#[$fm])* pub $field: $ty),+ }

        impl Default for $name {
            fn default() -> Self {
                Self { $($field: $default),+ }
            }
        }
    };
}

/// A diffusers option this crate implements only when off: it reads `false` (anything else is
/// rejected at load) and writes `false`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Off;

impl Serialize for Off {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bool(false)
    }
}

impl<'de> Deserialize<'de> for Off {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match bool::deserialize(d)? {
            false => Ok(Off),
            true => Err(serde::de::Error::custom(format_args!(
                "unsupported value true ({NOT_IMPLEMENTED})"
            ))),
        }
    }
}

config_struct! {
    /// The training noise schedule and model parameterisation every diffusers scheduler shares,
    /// flattened into each class's config.
    pub struct TrainSchedule {
        pub num_train_timesteps: usize = 1000,
        #[serde(with = "py_float")]
        pub beta_start: f64 = 0.0001,
        #[serde(with = "py_float")]
        pub beta_end: f64 = 0.02,
        pub beta_schedule: BetaSchedule = BetaSchedule::Linear,
        /// Explicit β table; only `None` is implemented.
        pub trained_betas: Option<Vec<f64>> = None,
        pub prediction_type: PredictionType = PredictionType::Epsilon,
        /// Dynamic thresholding of x0 (Imagen).
        pub thresholding: Off = Off,
        /// Kept for round trips; only used by thresholding.
        #[serde(with = "py_float")]
        pub dynamic_thresholding_ratio: f64 = 0.995,
        /// Kept for round trips; only used by thresholding.
        #[serde(with = "py_float")]
        pub sample_max_value: f64 = 1.0,
        /// Added to "leading" inference timesteps.
        pub steps_offset: usize = 0,
        /// Zero-terminal-SNR rescaling of β.
        pub rescale_betas_zero_snr: Off = Off,
    }
}

config_struct! {
    /// Clipping of the x0 prediction, shared by DDPM and DDIM (flattened into their configs).
    pub struct SampleClipping {
        /// Clip the x0 prediction to ±`clip_sample_range`.
        pub clip_sample: bool = true,
        #[serde(with = "py_float")]
        pub clip_sample_range: f64 = 1.0,
    }
}

config_struct! {
    /// `DDPMScheduler` config.
    pub struct DdpmConfig {
        #[serde(flatten)]
        pub schedule: TrainSchedule = TrainSchedule::default(),
        pub variance_type: VarianceType = VarianceType::FixedSmall,
        #[serde(flatten)]
        pub clipping: SampleClipping = SampleClipping::default(),
        pub timestep_spacing: TimestepSpacing = TimestepSpacing::Leading,
    }
}

config_struct! {
    /// `DDIMScheduler` config.
    pub struct DdimConfig {
        #[serde(flatten)]
        pub schedule: TrainSchedule = TrainSchedule::default(),
        #[serde(flatten)]
        pub clipping: SampleClipping = SampleClipping::default(),
        /// ᾱ used past the last step: 1.0 if true, else ᾱ_0.
        pub set_alpha_to_one: bool = true,
        pub timestep_spacing: TimestepSpacing = TimestepSpacing::Leading,
    }
}

config_struct! {
    /// `DPMSolverMultistepScheduler` config restricted to `algorithm_type` `"dpmsolver++"` or
    /// `"sde-dpmsolver++"`.
    pub struct DpmSolverMultistepConfig {
        #[serde(flatten)]
        pub schedule: TrainSchedule = TrainSchedule::default(),
        /// 1 or 2 (3 is not implemented).
        pub solver_order: usize = 2,
        pub algorithm_type: AlgorithmType = AlgorithmType::DpmSolverPlusPlus,
        pub solver_type: SolverType = SolverType::Midpoint,
        pub lower_order_final: bool = true,
        pub euler_at_final: bool = false,
        pub use_karras_sigmas: Off = Off,
        pub use_exponential_sigmas: Off = Off,
        pub use_beta_sigmas: Off = Off,
        pub use_lu_lambdas: Off = Off,
        pub use_flow_sigmas: Off = Off,
        /// Kept for round trips; only used with flow sigmas.
        #[serde(with = "py_float")]
        pub flow_shift: f64 = 1.0,
        pub final_sigmas_type: FinalSigmasType = FinalSigmasType::Zero,
        /// Timesteps whose log-SNR λ is below this are never used (−∞ keeps all).
        #[serde(with = "py_float")]
        pub lambda_min_clipped: f64 = f64::NEG_INFINITY,
        /// Anything but "learned"/"learned_range" behaves as None in diffusers; kept verbatim.
        pub variance_type: Option<String> = None,
        pub timestep_spacing: TimestepSpacing = TimestepSpacing::Linspace,
        pub use_dynamic_shifting: Off = Off,
        /// Kept for round trips; only used with dynamic shifting.
        pub time_shift_type: String = "exponential".into(),
    }
}

config_struct! {
    /// `EulerAncestralDiscreteScheduler` config. The class has no thresholding, so the
    /// [`TrainSchedule`] fields of [`EULER_ABSENT_FIELDS`] are neither read nor written.
    pub struct EulerAncestralConfig {
        #[serde(flatten)]
        pub schedule: TrainSchedule = TrainSchedule::default(),
        pub timestep_spacing: TimestepSpacing = TimestepSpacing::Linspace,
    }
}

config_struct! {
    /// `UniPCMultistepScheduler` config (Zhao et al. 2023) without a `solver_p` predictor and with
    /// the default σ spacing (no Karras, exponential, beta or flow sigmas).
    pub struct UniPcMultistepConfig {
        #[serde(flatten)]
        pub schedule: TrainSchedule = TrainSchedule::default(),
        /// Order p of the UniP predictor (any p ≥ 1); the UniC corrector raises it by one.
        pub solver_order: usize = 2,
        /// Integrate the x0 prediction (data form, diffusers default) rather than ε.
        pub predict_x0: bool = true,
        pub solver_type: UniPcSolverType = UniPcSolverType::Bh2,
        /// Lower the order in the last steps (min(order, steps left)).
        pub lower_order_final: bool = true,
        /// Step indices whose predicted sample is not corrected.
        pub disable_corrector: Vec<usize> = Vec::new(),
        /// Another scheduler as the predictor; only `null` is implemented.
        pub solver_p: Option<Value> = None,
        pub use_karras_sigmas: Off = Off,
        pub use_exponential_sigmas: Off = Off,
        pub use_beta_sigmas: Off = Off,
        pub use_flow_sigmas: Off = Off,
        /// Kept for round trips; only used with flow sigmas.
        #[serde(with = "py_float")]
        pub flow_shift: f64 = 1.0,
        pub timestep_spacing: TimestepSpacing = TimestepSpacing::Linspace,
        pub final_sigmas_type: FinalSigmasType = FinalSigmasType::Zero,
        pub use_dynamic_shifting: Off = Off,
        /// Kept for round trips; only used with dynamic shifting.
        pub time_shift_type: String = "exponential".into(),
        /// Kept for round trips; only used with Karras/exponential/beta sigmas.
        pub sigma_min: Option<f64> = None,
        /// Kept for round trips; only used with Karras/exponential/beta sigmas.
        pub sigma_max: Option<f64> = None,
        /// Only `null`: diffusers allows it with flow sigmas alone.
        pub shift_terminal: Option<f64> = None,
    }
}

/// [`TrainSchedule`] fields `EulerAncestralDiscreteScheduler` does not have: diffusers ignores
/// them in a config it reads and never writes them, and so do we.
pub const EULER_ABSENT_FIELDS: [&str; 3] = [
    "thresholding",
    "dynamic_thresholding_ratio",
    "sample_max_value",
];

impl TrainSchedule {
    /// The β / ᾱ tables of this schedule.
    pub fn noise_schedule(&self) -> Result<NoiseSchedule> {
        let (n, start, end) = (self.num_train_timesteps, self.beta_start, self.beta_end);
        NoiseSchedule::new(n, start, end, self.beta_schedule)
    }
}

/// A field value this crate rejects: the field, the value as written, and why.
struct Rejected(&'static str, String, &'static str);

type Checked = Result<(), Rejected>;

fn reject_if(bad: bool, field: &'static str, value: impl Display, why: &'static str) -> Checked {
    if bad {
        Err(Rejected(field, value.to_string(), why))
    } else {
        Ok(())
    }
}

fn check_schedule(s: &TrainSchedule) -> Checked {
    let n = s.num_train_timesteps;
    reject_if(n == 0, "num_train_timesteps", n, "must be at least 1")?;
    for (field, b) in [("beta_start", s.beta_start), ("beta_end", s.beta_end)] {
        reject_if(!(0.0..1.0).contains(&b), field, b, "must be in [0, 1)")?;
    }
    if let Some(betas) = &s.trained_betas {
        let value = describe(&betas.clone().into());
        return Err(Rejected("trained_betas", value, NOT_IMPLEMENTED));
    }
    Ok(())
}

fn check_clipping(c: &SampleClipping) -> Checked {
    let r = c.clip_sample_range;
    let bad = !(r.is_finite() && r > 0.0);
    reject_if(bad, "clip_sample_range", r, "must be finite and > 0")
}

fn check_dpm_solver(c: &DpmSolverMultistepConfig) -> Checked {
    let (order, lambda) = (c.solver_order, c.lambda_min_clipped);
    let bad_order = !(1..=2).contains(&order);
    reject_if(
        bad_order,
        "solver_order",
        order,
        "only orders 1 and 2 are implemented",
    )?;
    let variance = c.variance_type.as_deref().unwrap_or_default();
    let learned = variance == "learned" || variance == "learned_range";
    let quoted = format!("{variance:?}");
    reject_if(
        learned,
        "variance_type",
        quoted,
        "learned variances are not implemented",
    )?;
    reject_if(
        lambda.is_nan(),
        "lambda_min_clipped",
        lambda,
        "must not be NaN",
    )
}

fn check_euler_ancestral(c: &EulerAncestralConfig) -> Checked {
    let prediction = c.schedule.prediction_type;
    reject_if(
        prediction == PredictionType::Sample,
        "prediction_type",
        prediction,
        "diffusers' EulerAncestralDiscreteScheduler does not implement it",
    )
}

fn check_unipc(c: &UniPcMultistepConfig) -> Checked {
    let order = c.solver_order;
    reject_if(order == 0, "solver_order", order, "must be at least 1")?;
    if let Some(p) = &c.solver_p {
        return Err(Rejected("solver_p", describe(p), NOT_IMPLEMENTED));
    }
    if let Some(s) = c.shift_terminal {
        return Err(Rejected("shift_terminal", s.to_string(), NOT_IMPLEMENTED));
    }
    // diffusers' last step to σ = 0 computes inf·0 in these two forms and returns NaN.
    let zero = c.final_sigmas_type == FinalSigmasType::Zero;
    let nan_last_step = "diffusers' last step is NaN with final_sigmas_type \"zero\"; \
                         use \"sigma_min\"";
    reject_if(
        zero && c.solver_type == UniPcSolverType::Bh1,
        "solver_type",
        c.solver_type,
        nan_last_step,
    )?;
    reject_if(zero && !c.predict_x0, "predict_x0", false, nan_last_step)
}

/// A diffusers scheduler config, tagged by `_class_name`.
#[derive(Clone, Debug, PartialEq)]
pub enum SchedulerConfig {
    Ddpm(DdpmConfig),
    Ddim(DdimConfig),
    DpmSolverMultistep(DpmSolverMultistepConfig),
    EulerAncestral(EulerAncestralConfig),
    UniPcMultistep(UniPcMultistepConfig),
}

/// Quotes bare `-Infinity` / `Infinity` / `NaN` tokens outside strings so serde_json can parse them.
fn quote_non_finite_tokens(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 16);
    let (mut in_string, mut escaped) = (false, false);
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        let token = NON_FINITE_TOKENS
            .iter()
            .find(|(t, _)| !in_string && rest.starts_with(t));
        if let Some((token, _)) = token {
            out.push_str(&format!("\"{token}\""));
            rest = &rest[token.len()..];
            continue;
        }
        match c {
            _ if escaped => escaped = false,
            '\\' if in_string => escaped = true,
            '"' => in_string = !in_string,
            _ => {}
        }
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    out
}

fn describe(v: &Value) -> String {
    match v {
        Value::Array(a) if a.len() > 4 => format!("an array of {} values", a.len()),
        other => other.to_string(),
    }
}

fn parse_error(message: impl Into<String>) -> DiffusionError {
    DiffusionError::ConfigParse {
        path: None,
        message: message.into(),
    }
}

fn field_error(class: &str, field: &str, problem: String) -> DiffusionError {
    DiffusionError::UnsupportedConfigValue {
        path: None,
        class: class.into(),
        field: field.into(),
        problem,
    }
}

/// Deserializes `T` from `class`'s config object. serde_json's errors from a `Value` carry no
/// position, so after a failure the entries are tried one at a time to name the field at fault
/// (every field has a default: an entry fails on its own only if it is bad).
fn from_fields<T: DeserializeOwned>(class: &str, object: &Value) -> Result<T> {
    let one = |k: &String, v: &Value| Value::Object(Map::from_iter([(k.clone(), v.clone())]));
    T::deserialize(object).map_err(|e| {
        let mut entries = object.as_object().into_iter().flatten();
        match entries.find_map(|(k, v)| T::deserialize(&one(k, v)).err().map(|e| (k, e))) {
            Some((field, e)) => field_error(class, field, e.to_string()),
            None => parse_error(format!("{class}: {e}")),
        }
    })
}

impl SchedulerConfig {
    /// Which scheduler class this is.
    pub fn kind(&self) -> SchedulerKind {
        match self {
            Self::Ddpm(_) => SchedulerKind::Ddpm,
            Self::Ddim(_) => SchedulerKind::Ddim,
            Self::DpmSolverMultistep(_) => SchedulerKind::DpmSolverMultistep,
            Self::EulerAncestral(_) => SchedulerKind::EulerAncestralDiscrete,
            Self::UniPcMultistep(_) => SchedulerKind::UniPcMultistep,
        }
    }

    /// The training schedule, shared by every class.
    pub fn schedule(&self) -> &TrainSchedule {
        match self {
            Self::Ddpm(c) => &c.schedule,
            Self::Ddim(c) => &c.schedule,
            Self::DpmSolverMultistep(c) => &c.schedule,
            Self::EulerAncestral(c) => &c.schedule,
            Self::UniPcMultistep(c) => &c.schedule,
        }
    }

    /// Training timesteps T.
    pub fn num_train_timesteps(&self) -> usize {
        self.schedule().num_train_timesteps
    }

    /// Prediction target of the model this scheduler drives.
    pub fn prediction_type(&self) -> PredictionType {
        self.schedule().prediction_type
    }

    /// Parses a JSON object with a `_class_name`; non-finite floats may be Python's bare tokens.
    pub fn from_json_str(text: &str) -> Result<Self> {
        let value: Value = serde_json::from_str(&quote_non_finite_tokens(text))
            .map_err(|e| parse_error(e.to_string()))?;
        Self::from_value(&value)
    }

    /// Builds a config from a parsed JSON object (see [`SchedulerConfig::from_json_str`]).
    pub fn from_value(value: &Value) -> Result<Self> {
        let object = value.as_object().ok_or_else(|| {
            parse_error(format!("expected a JSON object, found {}", describe(value)))
        })?;
        let class = object.get("_class_name").and_then(Value::as_str);
        let class = class.ok_or_else(|| parse_error("missing or non-string `_class_name`"))?;
        Self::from_object_as(value, class)
    }

    fn from_object_as(object: &Value, class: &str) -> Result<Self> {
        let kind = SchedulerKind::from_class_name(class)
            .ok_or_else(|| DiffusionError::UnsupportedScheduler(class.to_string()))?;
        let config = match kind {
            SchedulerKind::Ddpm => Self::Ddpm(from_fields(class, object)?),
            SchedulerKind::Ddim => Self::Ddim(from_fields(class, object)?),
            SchedulerKind::DpmSolverMultistep => {
                Self::DpmSolverMultistep(from_fields(class, object)?)
            }
            SchedulerKind::EulerAncestralDiscrete => {
                let mut object = object.clone();
                if let Some(fields) = object.as_object_mut() {
                    for field in EULER_ABSENT_FIELDS {
                        fields.remove(field);
                    }
                }
                Self::EulerAncestral(from_fields(class, &object)?)
            }
            SchedulerKind::UniPcMultistep => Self::UniPcMultistep(from_fields(class, object)?),
        };
        config.validate()?;
        Ok(config)
    }

    /// Rejects values this crate does not implement, or that make no schedule (done at load and
    /// by [`SchedulerConfig::build`]).
    pub fn validate(&self) -> Result<()> {
        let schedule = check_schedule(self.schedule());
        let checked = match self {
            Self::Ddpm(c) => schedule.and_then(|()| check_clipping(&c.clipping)),
            Self::Ddim(c) => schedule.and_then(|()| check_clipping(&c.clipping)),
            Self::DpmSolverMultistep(c) => schedule.and_then(|()| check_dpm_solver(c)),
            Self::EulerAncestral(c) => schedule.and_then(|()| check_euler_ancestral(c)),
            Self::UniPcMultistep(c) => schedule.and_then(|()| check_unipc(c)),
        };
        let Err(Rejected(field, value, why)) = checked else {
            return Ok(());
        };
        let problem = format!("unsupported value {value} ({why})");
        Err(field_error(self.kind().class_name(), field, problem))
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
        Self::from_json_str(&text).map_err(|mut e| {
            if let DiffusionError::ConfigParse { path: p, .. }
            | DiffusionError::UnsupportedConfigValue { path: p, .. } = &mut e
            {
                *p = Some(path);
            }
            e
        })
    }

    /// All fields as diffusers saves them (plus `_class_name`, `_diffusers_version`); non-finite
    /// floats appear as the strings "-Infinity" / "Infinity" / "NaN".
    pub fn to_value(&self) -> Value {
        let fields = match self {
            Self::Ddpm(c) => serde_json::to_value(c),
            Self::Ddim(c) => serde_json::to_value(c),
            Self::DpmSolverMultistep(c) => serde_json::to_value(c),
            Self::EulerAncestral(c) => serde_json::to_value(c),
            Self::UniPcMultistep(c) => serde_json::to_value(c),
        };
        // Plain structs of numbers, strings and flags: serde_json cannot fail on them.
        let Ok(Value::Object(mut m)) = fields else {
            unreachable!("scheduler configs serialize to JSON objects")
        };
        if let Self::EulerAncestral(_) = self {
            for field in EULER_ABSENT_FIELDS {
                m.remove(field);
            }
        }
        m.insert("_class_name".into(), self.kind().class_name().into());
        m.insert("_diffusers_version".into(), DIFFUSERS_VERSION.into());
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
        for (tok, _) in NON_FINITE_TOKENS {
            text = text.replace(&format!("\"{tok}\""), tok);
        }
        text.push('\n');
        text
    }

    /// Writes the config to `path` (a file, or a directory that gets `scheduler_config.json`).
    pub fn save(&self, path: impl AsRef<Path>) -> Result<PathBuf> {
        let mut path = path.as_ref().to_path_buf();
        if path.is_dir() {
            path.push(SCHEDULER_CONFIG_NAME);
        }
        segdiff_io::write_bytes_atomic(&path, self.to_json_string().as_bytes()).map_err(
            |source| DiffusionError::ConfigIo {
                path: path.clone(),
                source,
            },
        )?;
        Ok(path)
    }

    /// The config another scheduler class gets from this one, as diffusers' `Target.from_config`
    /// does: fields the target knows are carried over, the rest take the target's defaults.
    pub fn convert_to(&self, kind: SchedulerKind) -> Result<Self> {
        Self::from_object_as(&self.to_value(), kind.class_name())
    }

    /// Builds the scheduler this config describes.
    pub fn build(&self) -> Result<Box<dyn crate::scheduler::Scheduler>> {
        self.validate()?;
        Ok(match self {
            Self::Ddpm(c) => Box::new(crate::ddpm::DdpmScheduler::new(c.clone())?),
            Self::Ddim(c) => Box::new(crate::ddim::DdimScheduler::new(c.clone())?),
            Self::DpmSolverMultistep(c) => Box::new(
                crate::dpm_solver::DpmSolverMultistepScheduler::new(c.clone())?,
            ),
            Self::EulerAncestral(c) => Box::new(
                crate::euler_ancestral::EulerAncestralScheduler::new(c.clone())?,
            ),
            Self::UniPcMultistep(c) => {
                Box::new(crate::unipc::UniPcMultistepScheduler::new(c.clone())?)
            }
        })
    }
}

/// Writes `text` to a temporary file in `path`'s folder and renames it into place.
impl Default for SchedulerConfig {
    /// The paper's training scheduler: `DDPMScheduler(num_train_timesteps=1000)`.
    fn default() -> Self {
        Self::Ddpm(DdpmConfig::default())
    }
}

impl Serialize for SchedulerConfig {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.to_value().serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for SchedulerConfig {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(deserializer)?;
        Self::from_value(&value).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests;
