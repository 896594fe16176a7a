//! The pipeline's stages, the progress events they report and their timing.

use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::paper_eval::report::StageTiming;

/// A step of the pipeline, for progress and timings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Stage {
    /// Loading the model and the dataset splits.
    Load,
    /// Training (or loading) the segmenter on the real training images.
    RealSegmenter,
    /// Generating one image per test mask.
    GenerateTest,
    /// Generating one image per training mask.
    GenerateTrain,
    /// Segmenting generated and real test images; Table 2.
    MaskFaithfulness,
    /// Training the segmenter on generated images and scoring both; Table 1.
    SyntheticSegmenter,
    /// FID, PSNR/SSIM, HD95.
    ImageQuality,
}

impl Stage {
    /// Human-readable name (the report's timing rows).
    pub fn label(self) -> &'static str {
        match self {
            Self::Load => "load model and data",
            Self::RealSegmenter => "segmenter on real images",
            Self::GenerateTest => "generate from test masks",
            Self::GenerateTrain => "generate from training masks",
            Self::MaskFaithfulness => "Table 2 (mask faithfulness)",
            Self::SyntheticSegmenter => "Table 1 (segmenter on generated images)",
            Self::ImageQuality => "FID, PSNR/SSIM, HD95",
        }
    }

    /// A few characters for a progress bar's prefix.
    pub fn short(self) -> &'static str {
        match self {
            Self::Load => "load",
            Self::RealSegmenter => "seg-real",
            Self::GenerateTest => "gen-test",
            Self::GenerateTrain => "gen-train",
            Self::MaskFaithfulness => "table2",
            Self::SyntheticSegmenter => "seg-gen",
            Self::ImageQuality => "quality",
        }
    }
}

/// Reported while the evaluation runs.
#[derive(Clone, Debug, PartialEq)]
pub enum EvalProgress {
    Start {
        stage: Stage,
    },
    Advance {
        stage: Stage,
        done: usize,
        total: usize,
        message: String,
    },
    /// The stage completed.
    Finish {
        stage: Stage,
        seconds: f64,
    },
    /// The stage failed; the error is returned to the caller.
    Abort {
        stage: Stage,
    },
}

/// Times stages and reports their progress.
pub(super) struct Stages<'p> {
    pub(super) progress: &'p mut dyn FnMut(&EvalProgress),
    pub(super) timings: Vec<StageTiming>,
}

impl Stages<'_> {
    pub(super) fn run<T>(
        &mut self,
        stage: Stage,
        body: impl FnOnce(&mut dyn FnMut(usize, usize, String)) -> Result<T>,
    ) -> Result<T> {
        let start = Instant::now();
        (self.progress)(&EvalProgress::Start { stage });
        let progress = &mut *self.progress;
        let result = body(&mut |done, total, message| {
            progress(&EvalProgress::Advance {
                stage,
                done,
                total,
                message,
            })
        });
        let seconds = start.elapsed().as_secs_f64();
        if result.is_err() {
            (self.progress)(&EvalProgress::Abort { stage });
            return result;
        }
        (self.progress)(&EvalProgress::Finish { stage, seconds });
        self.timings.push(StageTiming {
            stage: stage.label().into(),
            seconds,
        });
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::EvalError;

    #[test]
    fn finished_stages_are_timed_and_failed_ones_aborted() {
        let mut events = Vec::new();
        let mut record = |e: &EvalProgress| events.push(e.clone());
        let mut stages = Stages {
            progress: &mut record,
            timings: Vec::new(),
        };
        let ok = stages.run(Stage::Load, |advance| {
            advance(1, 2, "half".into());
            Ok(7)
        });
        assert_eq!(ok.ok(), Some(7));
        let failed: Result<()> = stages.run(Stage::GenerateTest, |_| {
            Err(EvalError::InvalidArgument {
                name: "x",
                value: "1".into(),
                reason: "test",
            })
        });
        assert!(failed.is_err());
        let timings = std::mem::take(&mut stages.timings);
        assert_eq!(timings.len(), 1);
        assert_eq!(timings[0].stage, Stage::Load.label());
        assert!(timings[0].seconds >= 0.0);
        assert_eq!(events.len(), 5, "{events:?}");
        assert_eq!(
            events[1],
            EvalProgress::Advance {
                stage: Stage::Load,
                done: 1,
                total: 2,
                message: "half".into()
            }
        );
        assert!(matches!(
            events[2],
            EvalProgress::Finish {
                stage: Stage::Load,
                ..
            }
        ));
        assert_eq!(
            events[4],
            EvalProgress::Abort {
                stage: Stage::GenerateTest
            }
        );
    }
}
