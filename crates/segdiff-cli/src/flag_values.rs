//! One parser per enum-valued flag, shared by every command that takes it: `--help` lists the
//! accepted values, and a bad value is a command-line error (exit 2) that names them.

use std::ffi::{OsStr, OsString};
use std::marker::PhantomData;

use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser};
use segdiff_data::{Fit, SliceAxis};
use segdiff_diffusion::{MaskEncoding, NeighbourGate, PredictionType, SamplerKind};
use segdiff_mhvae::refiner::{Formulation, RefinerSampler};
use segdiff_mhvae::synth::ShapeKind;
use segdiff_mhvae::{Backbone, ThetaParam, WarpKind};

/// A library enum as a flag value.
pub trait FlagValue: Sized + Clone + Send + Sync + 'static {
    /// The accepted spellings of each value: the first is shown in `--help`, the others are
    /// aliases.
    const NAMES: &'static [&'static [&'static str]];
    /// The value of an accepted spelling (already lower-cased).
    fn from_flag(name: &str) -> Option<Self>;
}

/// The name `--help` shows for `value`.
pub fn flag_name<T: FlagValue + PartialEq>(value: &T) -> &'static str {
    T::NAMES
        .iter()
        .find(|names| T::from_flag(names[0]).as_ref() == Some(value))
        .map_or("?", |names| names[0])
}

/// The clap parser of a [`FlagValue`]: case-insensitive, aliases accepted, `--help` and errors
/// list the names.
pub fn flag<T: FlagValue>() -> FlagParser<T> {
    FlagParser(PhantomData)
}

/// See [`flag`].
#[derive(Clone, Copy)]
pub struct FlagParser<T>(PhantomData<fn() -> T>);

/// Each value's first name with its aliases.
fn possible_values<T: FlagValue>() -> impl Iterator<Item = PossibleValue> {
    T::NAMES
        .iter()
        .map(|names| PossibleValue::new(names[0]).aliases(names[1..].iter().copied()))
}

impl<T: FlagValue> TypedValueParser for FlagParser<T> {
    type Value = T;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &OsStr,
    ) -> Result<T, clap::Error> {
        let lower = OsString::from(value.to_string_lossy().to_ascii_lowercase());
        let name = PossibleValuesParser::new(possible_values::<T>()).parse_ref(cmd, arg, &lower)?;
        T::from_flag(&name).ok_or_else(|| {
            clap::Error::raw(
                clap::error::ErrorKind::InvalidValue,
                format!("{name} is listed but not understood (a bug)\n"),
            )
        })
    }

    fn possible_values(&self) -> Option<Box<dyn Iterator<Item = PossibleValue> + '_>> {
        Some(Box::new(possible_values::<T>()))
    }
}

impl FlagValue for SamplerKind {
    const NAMES: &'static [&'static [&'static str]] = &[
        &["ddim"],
        &["ddpm"],
        &["dpm++", "dpmpp", "dpm-solver++", "dpmsolver++"],
        &["dpm++sde", "dpmpp-sde", "sde-dpm++", "sde-dpmsolver++"],
        &["euler-a", "euler_a", "euler-ancestral"],
        &["unipc", "uni-pc", "unipc-bh2", "uni_pc"],
    ];
    fn from_flag(name: &str) -> Option<Self> {
        match name {
            "ddim" => Some(Self::Ddim),
            "ddpm" => Some(Self::Ddpm),
            "dpm++" | "dpmpp" | "dpm-solver++" | "dpmsolver++" => Some(Self::DpmSolverPlusPlus),
            "dpm++sde" | "dpmpp-sde" | "sde-dpm++" | "sde-dpmsolver++" => {
                Some(Self::SdeDpmSolverPlusPlus)
            }
            "euler-a" | "euler_a" | "euler-ancestral" => Some(Self::EulerAncestral),
            "unipc" | "uni-pc" | "unipc-bh2" | "uni_pc" => Some(Self::UniPc),
            _ => None,
        }
    }
}

impl FlagValue for MaskEncoding {
    const NAMES: &'static [&'static [&'static str]] =
        &[&["single"], &["onehot", "one-hot", "one_hot"]];
    fn from_flag(name: &str) -> Option<Self> {
        Self::parse(name)
    }
}

impl FlagValue for PredictionType {
    const NAMES: &'static [&'static [&'static str]] =
        &[&["epsilon"], &["v_prediction"], &["sample"]];
    fn from_flag(name: &str) -> Option<Self> {
        Self::parse(name)
    }
}

impl FlagValue for Fit {
    const NAMES: &'static [&'static [&'static str]] = &[&["pad"], &["crop"], &["stretch"]];
    fn from_flag(name: &str) -> Option<Self> {
        Self::parse(name)
    }
}

impl FlagValue for NeighbourGate {
    const NAMES: &'static [&'static [&'static str]] = &[&["agreeing"], &["everywhere"]];
    fn from_flag(name: &str) -> Option<Self> {
        Self::parse(name)
    }
}

impl FlagValue for SliceAxis {
    const NAMES: &'static [&'static [&'static str]] = &[&["axial"], &["coronal"], &["sagittal"]];
    fn from_flag(name: &str) -> Option<Self> {
        Self::parse(name)
    }
}

/// `--dtype`: the denoiser's floating-point type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DtypeFlag {
    /// f32 on the CPU; on CUDA, bf16 for sampling and evaluation.
    Auto,
    F32,
    Bf16,
    F16,
}

impl FlagValue for DtypeFlag {
    const NAMES: &'static [&'static [&'static str]] = &[
        &["auto"],
        &["f32", "float32"],
        &["bf16", "bfloat16"],
        &["f16", "float16", "half"],
    ];
    fn from_flag(name: &str) -> Option<Self> {
        match name {
            "auto" => Some(Self::Auto),
            "f32" | "float32" => Some(Self::F32),
            "bf16" | "bfloat16" => Some(Self::Bf16),
            "f16" | "float16" | "half" => Some(Self::F16),
            _ => None,
        }
    }
}

/// `--device`: `cpu`, `cuda` or `cuda:N` (opened later, so a missing GPU is a run failure, not
/// a command-line error).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceFlag {
    Cpu,
    Cuda(usize),
}

/// Parses `--device`.
pub fn parse_device(s: &str) -> Result<DeviceFlag, String> {
    let lower = s.trim().to_ascii_lowercase();
    match lower.strip_prefix("cuda") {
        _ if lower == "cpu" => Ok(DeviceFlag::Cpu),
        Some("") => Ok(DeviceFlag::Cuda(0)),
        Some(rest) => rest
            .strip_prefix(':')
            .and_then(|n| n.parse::<usize>().ok())
            .map(DeviceFlag::Cuda)
            .ok_or_else(|| "expected cpu, cuda or cuda:N".to_string()),
        None => Err("expected cpu, cuda or cuda:N".to_string()),
    }
}

impl FlagValue for WarpKind {
    const NAMES: &'static [&'static [&'static str]] = &[&["affine"], &["tps"], &["none"]];
    fn from_flag(name: &str) -> Option<Self> {
        match name {
            "affine" => Some(Self::Affine),
            "tps" => Some(Self::Tps),
            "none" => Some(Self::None),
            _ => None,
        }
    }
}

impl FlagValue for RefinerSampler {
    const NAMES: &'static [&'static [&'static str]] = &[
        &["em", "euler-maruyama"],
        &["dpm", "dpm-solver", "dpm-solver++"],
        &["dpm-sde", "sde-dpm-solver++"],
    ];
    fn from_flag(name: &str) -> Option<Self> {
        match name {
            "em" | "euler-maruyama" => Some(Self::EulerMaruyama),
            "dpm" | "dpm-solver" | "dpm-solver++" => Some(Self::DpmSolver),
            "dpm-sde" | "sde-dpm-solver++" => Some(Self::DpmSolverSde),
            _ => None,
        }
    }
}

impl FlagValue for Formulation {
    const NAMES: &'static [&'static [&'static str]] = &[&["mhvae"], &["diffusevae2"]];
    fn from_flag(name: &str) -> Option<Self> {
        match name {
            "mhvae" => Some(Self::Mhvae),
            "diffusevae2" => Some(Self::Diffusevae2),
            _ => None,
        }
    }
}

impl FlagValue for Backbone {
    const NAMES: &'static [&'static [&'static str]] =
        &[&["small"], &["resnet50", "resnet-50", "resnet_50"]];
    fn from_flag(name: &str) -> Option<Self> {
        match name {
            "small" => Some(Self::Small),
            "resnet50" | "resnet-50" | "resnet_50" => Some(Self::Resnet50),
            _ => None,
        }
    }
}

impl FlagValue for ThetaParam {
    const NAMES: &'static [&'static [&'static str]] = &[&["offset"], &["absolute"]];
    fn from_flag(name: &str) -> Option<Self> {
        match name {
            "offset" => Some(Self::Offset),
            "absolute" => Some(Self::Absolute),
            _ => None,
        }
    }
}

impl FlagValue for ShapeKind {
    const NAMES: &'static [&'static [&'static str]] =
        &[&["ellipses"], &["blobs"], &["merged-circles"]];
    fn from_flag(name: &str) -> Option<Self> {
        name.parse().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn every_name_parses<T: FlagValue + std::fmt::Debug>() {
        for names in T::NAMES {
            let first = T::from_flag(names[0]).expect(names[0]);
            for alias in &names[1..] {
                let v = T::from_flag(alias).expect(alias);
                assert_eq!(format!("{v:?}"), format!("{first:?}"), "{alias}");
            }
        }
    }

    #[test]
    fn every_listed_spelling_parses_to_its_value() {
        every_name_parses::<SamplerKind>();
        every_name_parses::<MaskEncoding>();
        every_name_parses::<PredictionType>();
        every_name_parses::<Fit>();
        every_name_parses::<SliceAxis>();
        every_name_parses::<NeighbourGate>();
        every_name_parses::<DtypeFlag>();
        every_name_parses::<RefinerSampler>();
        every_name_parses::<Formulation>();
        every_name_parses::<WarpKind>();
        every_name_parses::<Backbone>();
        every_name_parses::<ThetaParam>();
        every_name_parses::<ShapeKind>();
    }

    #[test]
    fn devices() {
        assert_eq!(parse_device("CPU"), Ok(DeviceFlag::Cpu));
        assert_eq!(parse_device("cuda"), Ok(DeviceFlag::Cuda(0)));
        assert_eq!(parse_device("cuda:3"), Ok(DeviceFlag::Cuda(3)));
        assert!(parse_device("cuda:x").is_err());
        assert!(parse_device("tpu").is_err());
    }
}
