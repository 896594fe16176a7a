//! The sampling algorithms a run can use: a scheduler class, and where diffusers has variants of
//! one class (DPM-Solver++'s ODE and SDE forms), the variant.

use crate::config::{
    AlgorithmType, DdimConfig, DdpmConfig, DpmSolverMultistepConfig, EulerAncestralConfig,
    SchedulerConfig, SchedulerKind, TrainSchedule, UniPcMultistepConfig,
};

/// A sampling algorithm.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SamplerKind {
    /// DDIM (the paper's default), with η from the run's options.
    Ddim,
    /// Ancestral DDPM sampling.
    Ddpm,
    /// DPM-Solver++ 2M: deterministic, good in 15–25 steps.
    DpmSolverPlusPlus,
    /// SDE-DPM-Solver++ 2M: the stochastic form, fresh noise at every step.
    SdeDpmSolverPlusPlus,
    /// Euler ancestral (k-diffusion's `euler_a`): Euler steps of the probability-flow ODE with
    /// fresh noise at every step.
    EulerAncestral,
    /// UniPC (diffusers' `UniPCMultistepScheduler`, bh2, order 2): deterministic
    /// predictor-corrector multistep solver.
    UniPc,
}

impl SamplerKind {
    /// Every sampler, in the order the CLI lists them.
    pub const ALL: [Self; 6] = [
        Self::Ddim,
        Self::Ddpm,
        Self::DpmSolverPlusPlus,
        Self::SdeDpmSolverPlusPlus,
        Self::EulerAncestral,
        Self::UniPc,
    ];

    /// The name the CLI uses (`--scheduler`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Ddim => "ddim",
            Self::Ddpm => "ddpm",
            Self::DpmSolverPlusPlus => "dpm++",
            Self::SdeDpmSolverPlusPlus => "dpm++sde",
            Self::EulerAncestral => "euler-a",
            Self::UniPc => "unipc",
        }
    }

    /// The diffusers scheduler class it runs.
    pub fn class(self) -> SchedulerKind {
        match self {
            Self::Ddim => SchedulerKind::Ddim,
            Self::Ddpm => SchedulerKind::Ddpm,
            Self::DpmSolverPlusPlus | Self::SdeDpmSolverPlusPlus => {
                SchedulerKind::DpmSolverMultistep
            }
            Self::EulerAncestral => SchedulerKind::EulerAncestralDiscrete,
            Self::UniPc => SchedulerKind::UniPcMultistep,
        }
    }

    /// Inference steps when none are given: 50 for DDIM (the paper), 1000 for DDPM (every
    /// training timestep), 20 for the DPM-Solver++ forms (diffusers' usual fast setting), 30 for
    /// Euler ancestral (diffusers' documentation examples use 20–30; ancestral noise needs
    /// somewhat more steps than the ODE solvers), 20 for UniPC (a deterministic multistep ODE
    /// solver of DPM-Solver++ 2M's kind, so the same setting; its paper targets even fewer steps,
    /// 5–10).
    pub fn default_steps(self) -> usize {
        match self {
            Self::Ddim => 50,
            Self::Ddpm => 1000,
            Self::DpmSolverPlusPlus | Self::SdeDpmSolverPlusPlus => 20,
            Self::EulerAncestral => 30,
            Self::UniPc => 20,
        }
    }

    /// Whether its steps draw noise (DDIM only with η > 0).
    pub fn is_stochastic(self, eta: f64) -> bool {
        match self {
            Self::Ddim => eta > 0.0,
            Self::Ddpm | Self::SdeDpmSolverPlusPlus | Self::EulerAncestral => true,
            Self::DpmSolverPlusPlus | Self::UniPc => false,
        }
    }

    /// The scheduler config used for sampling: the training schedule's `num_train_timesteps`,
    /// `beta_start`, `beta_end`, `beta_schedule` and `prediction_type`, every other field at the
    /// class's diffusers default (as the paper builds `DDIMScheduler(num_train_timesteps=1000)`),
    /// plus the variant's `algorithm_type`. Unlike diffusers' `from_config`, training-only
    /// choices such as a DDPM `clip_sample` are not carried over.
    pub fn scheduler_config(self, training: &SchedulerConfig) -> SchedulerConfig {
        let t = training.schedule();
        let schedule = TrainSchedule {
            num_train_timesteps: t.num_train_timesteps,
            beta_start: t.beta_start,
            beta_end: t.beta_end,
            beta_schedule: t.beta_schedule,
            prediction_type: t.prediction_type,
            ..TrainSchedule::default()
        };
        let dpm = |algorithm_type| {
            SchedulerConfig::DpmSolverMultistep(DpmSolverMultistepConfig {
                schedule: schedule.clone(),
                algorithm_type,
                ..DpmSolverMultistepConfig::default()
            })
        };
        match self {
            Self::Ddpm => SchedulerConfig::Ddpm(DdpmConfig {
                schedule: schedule.clone(),
                ..DdpmConfig::default()
            }),
            Self::Ddim => SchedulerConfig::Ddim(DdimConfig {
                schedule: schedule.clone(),
                ..DdimConfig::default()
            }),
            Self::DpmSolverPlusPlus => dpm(AlgorithmType::DpmSolverPlusPlus),
            Self::SdeDpmSolverPlusPlus => dpm(AlgorithmType::SdeDpmSolverPlusPlus),
            Self::EulerAncestral => SchedulerConfig::EulerAncestral(EulerAncestralConfig {
                schedule: schedule.clone(),
                ..EulerAncestralConfig::default()
            }),
            Self::UniPc => SchedulerConfig::UniPcMultistep(UniPcMultistepConfig {
                schedule: schedule.clone(),
                ..UniPcMultistepConfig::default()
            }),
        }
    }
}

impl std::fmt::Display for SamplerKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
