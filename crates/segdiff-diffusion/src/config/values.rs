//! The enum-valued fields of scheduler configs, spelled as diffusers' strings.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An enum spelled as diffusers' strings (first string of a variant is the one written; the others
/// are legacy names diffusers maps to it), with serde reading and writing those strings.
macro_rules! string_enum {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $var:ident = $s:literal $(| $alias:literal)*),+ $(,)? }) => {
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
                match s { $($s $(| $alias)* => Some(Self::$var),)+ _ => None }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Self::parse(&s).ok_or_else(|| serde::de::Error::custom(format_args!(
                    "unsupported value {s:?} (supported: {})", [$($s),+].join(", ")
                )))
            }
        }
    };
}

string_enum!(
    /// `beta_schedule`.
    BetaSchedule {
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
    PredictionType {
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
    TimestepSpacing {
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
    VarianceType {
        /// β̃_t = (1−ᾱ_{t−1})/(1−ᾱ_t)·β_t (diffusers default).
        FixedSmall = "fixed_small",
        /// Same variance as `fixed_small`, computed through its log.
        FixedSmallLog = "fixed_small_log",
        /// β_t.
        FixedLarge = "fixed_large",
    }
);

string_enum!(
    /// DPM-Solver `algorithm_type`: the data-prediction variants are implemented.
    AlgorithmType {
        /// Data-prediction DPM-Solver++ (diffusers default; it maps the legacy "deis" here).
        DpmSolverPlusPlus = "dpmsolver++" | "deis",
        /// Its stochastic (SDE) form: each step adds fresh noise (Lu et al. 2022, §5).
        SdeDpmSolverPlusPlus = "sde-dpmsolver++",
    }
);

string_enum!(
    /// DPM-Solver `solver_type` of the second-order update.
    SolverType {
        /// diffusers default; diffusers maps the UniPC/DEIS names here.
        Midpoint = "midpoint" | "logrho" | "bh1" | "bh2",
        /// Heun-style correction.
        Heun = "heun",
    }
);

string_enum!(
    /// UniPC `solver_type`: the B(h) of its update (Zhao et al. 2023, §3.2).
    UniPcSolverType {
        /// B(h) = h.
        Bh1 = "bh1",
        /// B(h) = e^h − 1 (diffusers default; it maps the DPM-Solver names here).
        Bh2 = "bh2" | "midpoint" | "heun" | "logrho",
    }
);

string_enum!(
    /// DPM-Solver and UniPC `final_sigmas_type`: the σ after the last step.
    FinalSigmasType {
        /// σ = 0: the last step returns the x0 prediction (diffusers default).
        Zero = "zero",
        /// σ of the first training timestep.
        SigmaMin = "sigma_min",
    }
);
