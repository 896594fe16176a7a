//! Whole volumes from a 3-D label map: one image per mask slice, in slice order along the axis.
//!
//! With a neighbour-conditioned model ([`crate::NeighbourScheme`]) generation starts at anchor
//! slices, generated without a neighbour, and proceeds outward one slice at a time, each slice
//! conditioned on the adjacent slice generated before it ([`generation_order`]): by default
//! only at the pixels where the two slices' masks agree ([`NeighbourGate`]), and optionally only
//! in part of the denoising trajectory ([`VolumeSampleOptions::neighbour_window`]).
//! Independently (`independent`, or a model without a neighbour scheme) every slice is generated
//! alone.
//!
//! Slice `i` draws all its noise from the streams of image `i` ([`super::image_rng`]; of image
//! 0 for every slice with [`SampleOptions::shared_noise`]) in both modes, so an independent run
//! equals [`sample_images`] (`segdiff sample`) over the same masks with the same seed, image by
//! image. The entry point takes whole volumes so that a true
//! 3-D denoiser can later be dispatched here without changing callers.

use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::config::SchedulerConfig;
use crate::error::{DiffusionError, Result};
use crate::model_dir::ConditioningMeta;
use crate::neighbours::neighbour_channels;
use crate::sampler::guided_loop::{to_image01, EpsModel};
use crate::sampler::image_rng::{draw_batch, image_rng, NoiseStream};
use crate::sampler::{
    check_counts, conditions, noise_index, sample_images, NeighbourSteps, SampleInput,
    SampleOptions, SamplingRun,
};

/// Settings of a volume run.
#[derive(Clone, Debug)]
pub struct VolumeSampleOptions {
    /// Scheduler, steps, seed, batch size, guidance, mask edits…; `samples_per_mask` must be 1
    /// and `shard` unset (a volume is one run).
    pub sample: SampleOptions,
    /// Generate every slice alone, even with a neighbour-conditioned model (its neighbour is
    /// then absent, as for an anchor).
    pub independent: bool,
    /// Anchor slices (≥ 1), evenly spaced, from which neighbour-conditioned generation
    /// proceeds outward.
    pub anchors: usize,
    /// The part of the denoising trajectory in which a conditioned slice sees its neighbour,
    /// as fractions of the steps from the first (noisiest) one: the neighbour is fed at the
    /// steps with index in [⌊from·steps⌉, ⌊until·steps⌉) and absent (as for an anchor) at the
    /// others. The whole trajectory (0, 1) by default.
    pub neighbour_window: (f64, f64),
    /// Where a conditioned slice's prediction uses the neighbour (segmentation-guided models;
    /// an unconditional model's is used everywhere).
    pub neighbour_gate: NeighbourGate,
}

/// Where, within a slice, the denoiser's prediction uses the neighbour.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NeighbourGate {
    /// At the pixels whose class in the slice's mask equals the neighbour's mask's there; at
    /// the others (where the anatomy changes from slice to slice) the prediction without a
    /// neighbour, as for an anchor. The neighbour's texture and intensities carry over where
    /// the tissue continues, and the slice's own mask alone draws what is new. Two network
    /// calls per step for conditioned slices.
    #[default]
    Agreeing,
    /// At every pixel (one network call per step): the model may also copy the neighbour's
    /// boundaries, which costs in-plane mask faithfulness.
    Everywhere,
}

impl NeighbourGate {
    /// The flag name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Agreeing => "agreeing",
            Self::Everywhere => "everywhere",
        }
    }

    /// Parses a flag name (case-insensitive).
    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "agreeing" => Some(Self::Agreeing),
            "everywhere" => Some(Self::Everywhere),
            _ => None,
        }
    }
}

impl Default for VolumeSampleOptions {
    /// The paper's sampler settings, neighbour-conditioned from one anchor (the middle slice).
    fn default() -> Self {
        Self {
            sample: SampleOptions::default(),
            independent: false,
            anchors: 1,
            neighbour_window: (0.0, 1.0),
            neighbour_gate: NeighbourGate::Agreeing,
        }
    }
}

/// The step indices of `steps` denoising steps at which a conditioned slice sees its neighbour
/// ([`VolumeSampleOptions::neighbour_window`], checked: 0 ≤ from < until ≤ 1).
pub fn neighbour_step_window(window: (f64, f64), steps: usize) -> Result<std::ops::Range<usize>> {
    let (from, until) = window;
    if !(0.0..=1.0).contains(&from) || !(0.0..=1.0).contains(&until) || from >= until {
        return Err(DiffusionError::InvalidParameter {
            name: "neighbour window",
            value: format!("{from}..{until}"),
            reason: "needs 0 ≤ from < until ≤ 1 (fractions of the denoising steps)",
        });
    }
    let at = |f: f64| ((f * steps as f64).round() as usize).min(steps);
    Ok(at(from)..at(until))
}

/// Reported after every denoising step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VolumeSampleProgress {
    /// Slices finished, counting the current batch after its last step.
    pub slices_done: usize,
    /// Slices of the volume.
    pub slices_total: usize,
    /// Steps of the current batch done (1-based).
    pub step: usize,
    /// Steps per batch.
    pub steps: usize,
}

/// One slice of the generation order and the already-generated slice it is conditioned on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PlannedSlice {
    /// Slice index along the axis.
    pub slice: usize,
    /// Its neighbour (`slice ± 1`), or `None` for an anchor.
    pub neighbour: Option<usize>,
}

/// Anchor slices of a volume of `slices` slices: `min(anchors, slices)` evenly spaced ones,
/// anchor `j` at ⌊(2j+1)·slices / (2·anchors)⌋ (the middle slice for one anchor).
pub fn anchor_slices(slices: usize, anchors: usize) -> Vec<usize> {
    let a = anchors.min(slices);
    (0..a).map(|j| (2 * j + 1) * slices / (2 * a)).collect()
}

/// The generation order as waves: wave 0 holds the anchors, wave `d` the slices at distance `d`
/// from their nearest anchor, each conditioned on its neighbour toward that anchor (generated in
/// wave `d − 1`). Between two anchors the gap is filled from both sides; the fronts meet in the
/// middle, a slice equally far from both belonging to the lower anchor's front. Every slice
/// appears exactly once; slices of one wave may be generated in one batch.
pub fn generation_order(slices: usize, anchors: usize) -> Vec<Vec<PlannedSlice>> {
    let anchor = anchor_slices(slices, anchors.max(1));
    let mut waves: Vec<Vec<PlannedSlice>> = Vec::new();
    for s in 0..slices {
        // nearest anchor, ties to the lower one (anchors are sorted)
        let Some(&a) = anchor.iter().min_by_key(|&&a| (a.abs_diff(s), a)) else {
            continue;
        };
        let d = a.abs_diff(s);
        let neighbour = match s.cmp(&a) {
            std::cmp::Ordering::Equal => None,
            std::cmp::Ordering::Greater => Some(s - 1),
            std::cmp::Ordering::Less => Some(s + 1),
        };
        if waves.len() <= d {
            waves.resize(d + 1, Vec::new());
        }
        waves[d].push(PlannedSlice {
            slice: s,
            neighbour,
        });
    }
    waves
}

/// Generates one image per slice of `masks` ((N, H, W) class ids in slice order; for an
/// unconditional model only its shape is used) with any ε-model; `training` is the model's
/// training scheduler config and `meta` its conditioning. Returns f32 images in [0, 1],
/// (N, C, H, W) on the CPU in slice order. Every scheduler, guidance (the neighbour is kept in
/// both branches), mask edits, `init_noise` and latent interpolation work as in
/// [`sample_images`], with slice `i` as image `i`.
pub fn sample_volume_slices(
    denoiser: &mut dyn EpsModel,
    training: &SchedulerConfig,
    meta: &ConditioningMeta,
    masks: &Tensor,
    options: &VolumeSampleOptions,
    device: &Device,
    progress: &mut dyn FnMut(&VolumeSampleProgress),
) -> Result<Tensor> {
    let sample = &options.sample;
    check_counts(sample)?;
    if sample.samples_per_mask != 1 || sample.shard.is_some() {
        return Err(DiffusionError::InvalidParameter {
            name: "samples_per_mask / shard",
            value: format!("{} / {:?}", sample.samples_per_mask, sample.shard),
            reason: "a volume is sampled whole, one image per slice",
        });
    }
    if options.anchors == 0 {
        return Err(DiffusionError::InvalidParameter {
            name: "anchors",
            value: "0".into(),
            reason: "must be at least 1",
        });
    }
    let (slices, height, width) = volume_dims(masks)?;
    let input = if meta.segmentation_guided {
        SampleInput::Masks(masks)
    } else {
        SampleInput::Unconditional {
            count: slices,
            height,
            width,
        }
    };
    let scheme = match meta.neighbours.as_ref() {
        Some(scheme) if !options.independent => scheme,
        // Slice i is image i of a plain run (a neighbour-conditioned model without neighbours).
        _ => {
            let out = sample_images(denoiser, training, meta, input, sample, device, &mut |p| {
                progress(&VolumeSampleProgress {
                    slices_done: p.images_done,
                    slices_total: p.images_total,
                    step: p.step,
                    steps: p.steps,
                })
            })?;
            return Ok(out.images01);
        }
    };
    let waves = generation_order(slices, options.anchors);
    let (mask_cond, slots, h, w) = conditions(meta, input, sample, device)?;
    let mut run = SamplingRun::plan(
        training,
        sample,
        mask_cond.clone(),
        slots,
        (meta.image_channels, h, w),
        device,
    )?;
    run.guided_channels = Some(meta.mask_channels()?);
    let window = neighbour_step_window(options.neighbour_window, run.timesteps.len())?;
    let whole = window == (0..run.timesteps.len());
    // Class ids (N, H, W) on the device, for the gate.
    let class_ids = match (options.neighbour_gate, meta.segmentation_guided) {
        (NeighbourGate::Agreeing, true) => Some(
            masks
                .reshape((slices, height, width))?
                .to_dtype(DType::U32)?
                .to_device(device)?,
        ),
        _ => None,
    };
    let shape = (1, meta.image_channels, h, w);
    // x_0 of each generated slice in [-1, 1] on the device (the next slice's neighbour).
    let mut generated: Vec<Option<Tensor>> = vec![None; slices];
    let mut images01: Vec<Option<Tensor>> = vec![None; slices];
    let mut done = 0;
    for wave in &waves {
        for chunk in wave.chunks(sample.batch_size) {
            let n = chunk.len();
            let images: Vec<usize> = chunk.iter().map(|p| p.slice).collect();
            let rows = index_tensor(&images, device)?;
            let present: Vec<bool> = chunk.iter().map(|p| p.neighbour.is_some()).collect();
            let nb_images = chunk
                .iter()
                .map(|p| match p.neighbour.and_then(|k| generated[k].clone()) {
                    Some(x) => Ok(x),
                    None => Ok(Tensor::zeros(shape, DType::F32, device)?),
                })
                .collect::<Result<Vec<_>>>()?;
            let nb_images = scheme.augment(&Tensor::cat(&nb_images, 0)?, || {
                let mut rngs: Vec<_> = images
                    .iter()
                    .map(|&s| {
                        image_rng(sample.seed, noise_index(sample, s), NoiseStream::Neighbour)
                    })
                    .collect();
                draw_batch(&mut rngs, (shape.1, shape.2, shape.3), device)
            })?;
            let nb_rows: Vec<usize> = chunk
                .iter()
                .map(|p| p.neighbour.unwrap_or(p.slice))
                .collect();
            let nb_masks = match &mask_cond {
                Some(c) => Some(c.index_select(&index_tensor(&nb_rows, device)?, 0)?),
                None => None,
            };
            let with_mask = |nb: Tensor| -> Result<Tensor> {
                Ok(match &mask_cond {
                    Some(c) => Tensor::cat(&[&c.index_select(&rows, 0)?, &nb], 1)?,
                    None => nb,
                })
            };
            let nb = neighbour_channels(scheme, &nb_images, nb_masks.as_ref(), &present)?;
            let cond = with_mask(nb)?;
            // Anchors see no neighbour at any step; the others see it in the window, where the
            // gate allows.
            let neighbour = if !present.iter().any(|&p| p) {
                None
            } else {
                let gate = match &class_ids {
                    Some(ids) => {
                        let own = ids.index_select(&rows, 0)?;
                        let other = ids.index_select(&index_tensor(&nb_rows, device)?, 0)?;
                        Some(own.eq(&other)?.to_dtype(DType::F32)?.unsqueeze(1)?)
                    }
                    None => None,
                };
                if whole && gate.is_none() {
                    None
                } else {
                    let absent = vec![false; n];
                    let nb = neighbour_channels(scheme, &nb_images, nb_masks.as_ref(), &absent)?;
                    Some(NeighbourSteps {
                        window: window.clone(),
                        absent: with_mask(nb)?,
                        gate,
                    })
                }
            };
            let x = run.sample_at(
                denoiser,
                &images,
                &rows,
                Some(cond),
                neighbour,
                &mut |step, steps| {
                    progress(&VolumeSampleProgress {
                        slices_done: done + if step == steps { n } else { 0 },
                        slices_total: slices,
                        step,
                        steps,
                    })
                },
            )?;
            done += n;
            let x = x.clamp(-1.0, 1.0)?;
            let x01 = to_image01(&x)?.to_device(&Device::Cpu)?;
            for (row, &s) in images.iter().enumerate() {
                generated[s] = Some(x.narrow(0, row, 1)?);
                images01[s] = Some(x01.narrow(0, row, 1)?);
            }
        }
    }
    let images01 = images01
        .into_iter()
        .enumerate()
        .map(|(s, x)| {
            x.ok_or_else(|| DiffusionError::InvalidMask(format!("slice {s} was not generated")))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Tensor::cat(&images01, 0)?)
}

/// (N, H, W) of a label volume ((N, H, W) or (N, 1, H, W)).
fn volume_dims(masks: &Tensor) -> Result<(usize, usize, usize)> {
    match *masks.dims() {
        [n, h, w] | [n, 1, h, w] if n > 0 && h > 0 && w > 0 => Ok((n, h, w)),
        _ => Err(DiffusionError::ShapeMismatch {
            what: "label volume (N, H, W) with N, H, W > 0",
            got: masks.dims().to_vec(),
            expected: vec![],
        }),
    }
}

fn index_tensor(indices: &[usize], device: &Device) -> Result<Tensor> {
    let v: Vec<u32> = indices.iter().map(|&i| i as u32).collect();
    Ok(Tensor::from_vec(v, indices.len(), device)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mask_conditioning::MaskEncoding;
    use crate::neighbours::NeighbourScheme;
    use crate::sampler::SamplerKind;

    const H: usize = 4;
    const W: usize = 4;

    fn meta(neighbours: Option<NeighbourScheme>) -> ConditioningMeta {
        ConditioningMeta {
            segmentation_guided: true,
            mask_encoding: MaskEncoding::Single,
            num_classes: Some(4),
            class_names: Vec::new(),
            image_channels: 1,
            ablation_trained: true,
            class_colors: None,
            neighbours,
        }
    }

    fn with_mask() -> Option<NeighbourScheme> {
        Some(NeighbourScheme {
            with_mask: true,
            ..NeighbourScheme::default()
        })
    }

    /// `n` 4×4 masks with classes 0..=3.
    fn volume(n: usize) -> Tensor {
        let v: Vec<u32> = (0..n * H * W)
            .map(|i| ((i * 7 + i / 5) % 4) as u32)
            .collect();
        Tensor::from_vec(v, (n, H, W), &Device::Cpu).unwrap()
    }

    /// Element-wise (hence batch-invariant) ε: 0.5·x + 2·mask + `nb`·(neighbour image) +
    /// 0.3·presence + 0.7·(neighbour mask), with input channels [x, mask, nb image, presence,
    /// nb mask].
    fn eps(nb: f64) -> impl FnMut(&Tensor, f64) -> candle_core::Result<Tensor> {
        move |input: &Tensor, t: f64| {
            let ch = |k: usize| input.narrow(1, k, 1);
            let mut s = ((ch(0)? * 0.5)? + (ch(1)? * 2.0)?)?;
            if input.dim(1)? > 2 {
                s = ((s + (ch(2)? * nb)?)? + (ch(3)? * 0.3)?)?;
            }
            if input.dim(1)? > 4 {
                s = (s + (ch(4)? * 0.7)?)?;
            }
            s - 0.1 * (t / 100.0).sin()
        }
    }

    fn options(anchors: usize, independent: bool) -> VolumeSampleOptions {
        VolumeSampleOptions {
            sample: SampleOptions {
                scheduler: SamplerKind::Ddim,
                steps: Some(4),
                seed: 5,
                batch_size: 3,
                ..SampleOptions::default()
            },
            independent,
            anchors,
            // one network call per step and pixel-independent of the masks: the tests of the
            // neighbour's mechanics count calls and inputs; the gate has its own test
            neighbour_gate: NeighbourGate::Everywhere,
            ..VolumeSampleOptions::default()
        }
    }

    fn volume_run(
        model: &mut dyn EpsModel,
        meta: &ConditioningMeta,
        masks: &Tensor,
        o: &VolumeSampleOptions,
    ) -> Tensor {
        sample_volume_slices(
            model,
            &SchedulerConfig::default(),
            meta,
            masks,
            o,
            &Device::Cpu,
            &mut |_| {},
        )
        .unwrap()
    }

    fn slice(t: &Tensor, k: usize) -> Vec<f32> {
        t.get(k).unwrap().flatten_all().unwrap().to_vec1().unwrap()
    }

    #[test]
    fn generation_order_grows_outward_from_evenly_spaced_anchors() {
        let p = |slice, neighbour| PlannedSlice { slice, neighbour };
        assert_eq!(anchor_slices(7, 1), vec![3]);
        assert_eq!(anchor_slices(12, 2), vec![3, 9]);
        assert_eq!(anchor_slices(3, 5), vec![0, 1, 2]);
        assert_eq!(
            generation_order(7, 1),
            vec![
                vec![p(3, None)],
                vec![p(2, Some(3)), p(4, Some(3))],
                vec![p(1, Some(2)), p(5, Some(4))],
                vec![p(0, Some(1)), p(6, Some(5))],
            ]
        );
        // two fronts fill the gap 4..=8 and meet; the middle slice 6 joins the lower anchor
        let order = generation_order(12, 2);
        assert_eq!(order[0], vec![p(3, None), p(9, None)]);
        assert_eq!(order[3], vec![p(0, Some(1)), p(6, Some(5))]);
        assert_eq!(
            order[2],
            vec![p(1, Some(2)), p(5, Some(4)), p(7, Some(8)), p(11, Some(10))]
        );
        let mut seen: Vec<usize> = order.iter().flatten().map(|q| q.slice).collect();
        seen.sort();
        assert_eq!(seen, (0..12).collect::<Vec<_>>());
        for (d, wave) in order.iter().enumerate().skip(1) {
            for q in wave {
                let nb = q.neighbour.unwrap();
                assert_eq!(nb.abs_diff(q.slice), 1);
                assert!(order[d - 1].iter().any(|r| r.slice == nb), "{q:?}");
            }
        }
    }

    /// Independent slices are the images of `sample_images` for the same seed, for plain and
    /// neighbour-conditioned models; every slice an anchor is the same run.
    #[test]
    fn independent_slices_equal_sample_images() {
        let masks = volume(5);
        for m in [meta(None), meta(with_mask())] {
            let o = options(1, true);
            let mut model = eps(0.4);
            let vol = volume_run(&mut model, &m, &masks, &o);
            let mut model = eps(0.4);
            let plain = sample_images(
                &mut model,
                &SchedulerConfig::default(),
                &m,
                SampleInput::Masks(&masks),
                &o.sample,
                &Device::Cpu,
                &mut |_| {},
            )
            .unwrap();
            assert_eq!(vol.dims(), &[5, 1, H, W]);
            for k in 0..5 {
                assert_eq!(slice(&vol, k), slice(&plain.images01, k), "slice {k}");
            }
        }
        let m = meta(with_mask());
        let mut model = eps(0.4);
        let all_anchors = volume_run(&mut model, &m, &masks, &options(5, false));
        let mut model = eps(0.4);
        let independent = volume_run(&mut model, &m, &masks, &options(1, true));
        assert_eq!(slice(&all_anchors, 2), slice(&independent, 2));
        assert_eq!(
            all_anchors.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            independent.flatten_all().unwrap().to_vec1::<f32>().unwrap()
        );
    }

    /// Slice 3 follows slice 2 (the anchor of 5): changing slice 2's mask changes slice 3 when
    /// the model reads the neighbour, and only then.
    #[test]
    fn conditioned_slices_see_their_neighbour() {
        let masks = volume(5);
        let mut edited: Vec<u32> = masks.flatten_all().unwrap().to_vec1().unwrap();
        for v in &mut edited[2 * H * W..3 * H * W] {
            *v = (*v + 1) % 4;
        }
        let edited = Tensor::from_vec(edited, (5, H, W), &Device::Cpu).unwrap();
        let o = options(1, false);
        for (scheme, nb, changes) in [
            (Some(NeighbourScheme::default()), 0.4, true),
            (Some(NeighbourScheme::default()), 0.0, false),
            (with_mask(), 0.0, true),
        ] {
            let m = meta(scheme);
            let mut model = eps(nb);
            let a = volume_run(&mut model, &m, &masks, &o);
            let mut model = eps(nb);
            let b = volume_run(&mut model, &m, &edited, &o);
            assert_ne!(slice(&a, 2), slice(&b, 2));
            assert_eq!(slice(&a, 3) != slice(&b, 3), changes, "nb {nb}");
            assert_eq!(slice(&a, 4) != slice(&b, 4), changes && nb != 0.0);
        }
    }

    /// Anchors get presence 0 and zero neighbour channels, the others presence 1 and their
    /// neighbour's image; guidance zeroes only the mask in its ∅ branch.
    #[test]
    fn anchors_have_no_neighbour_and_guidance_keeps_it() {
        let m = meta(with_mask());
        let masks = volume(8);
        let mut o = options(2, false);
        o.sample.batch_size = 8;
        o.sample.guidance_scale = Some(2.0);
        let mut calls: Vec<Tensor> = Vec::new();
        let mut inner = eps(0.4);
        let mut model = |input: &Tensor, t: f64| {
            calls.push(input.clone());
            inner(input, t)
        };
        let mut last = None;
        let out = sample_volume_slices(
            &mut model,
            &SchedulerConfig::default(),
            &m,
            &masks,
            &o,
            &Device::Cpu,
            &mut |p| last = Some(*p),
        )
        .unwrap();
        assert_eq!(out.dims(), &[8, 1, H, W]);
        let last = last.unwrap();
        assert_eq!((last.slices_done, last.slices_total), (8, 8));
        // waves of 8 slices from anchors 2 and 6: [2, 6], [1, 3, 5, 7], [0, 4]
        let steps = 4;
        assert_eq!(calls.len(), 3 * steps * 2);
        let channel = |t: &Tensor, k: usize| -> Vec<f32> {
            t.narrow(1, k, 1)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap()
        };
        for (i, call) in calls.iter().enumerate() {
            let wave = i / (2 * steps);
            assert_eq!(call.dim(0).unwrap(), [2, 4, 2][wave]);
            let presence = channel(call, 3);
            let want = if wave == 0 { 0.0 } else { 1.0 };
            assert!(presence.iter().all(|&v| v == want), "call {i}");
            if wave == 0 {
                assert!(channel(call, 2).iter().all(|&v| v == 0.0));
                assert!(channel(call, 4).iter().all(|&v| v == 0.0));
            }
            if i % 2 == 1 {
                // the ∅ branch: no mask, same neighbour channels as the conditional call
                assert!(channel(call, 1).iter().all(|&v| v == 0.0));
                for k in 2..5 {
                    assert_eq!(channel(call, k), channel(&calls[i - 1], k));
                }
            }
        }
        // slice 3's neighbour is slice 2's result, in [-1, 1]
        let nb: Vec<f32> = calls[2 * steps]
            .narrow(1, 2, 1)
            .unwrap()
            .get(1)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let want: Vec<f32> = slice(&out, 2).iter().map(|v| v * 2.0 - 1.0).collect();
        let err = nb
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        assert!(err < 1e-6, "{err}");
    }

    /// The neighbour window: steps outside it see no neighbour (presence 0, zero neighbour
    /// channels, in guidance's ∅ branch too), steps inside it see the neighbour; the window
    /// rounds to whole steps and is checked.
    #[test]
    fn the_neighbour_window_feeds_the_neighbour_only_inside_it() {
        assert_eq!(neighbour_step_window((0.0, 1.0), 20).unwrap(), 0..20);
        assert_eq!(neighbour_step_window((0.0, 0.5), 4).unwrap(), 0..2);
        assert_eq!(neighbour_step_window((0.3, 0.72), 10).unwrap(), 3..7);
        for bad in [
            (0.5, 0.5),
            (0.6, 0.4),
            (-0.1, 1.0),
            (0.0, 1.5),
            (f64::NAN, 1.0),
        ] {
            assert!(neighbour_step_window(bad, 10).is_err(), "{bad:?}");
        }
        let m = meta(with_mask());
        let masks = volume(3);
        let mut o = options(1, false);
        o.sample.batch_size = 3;
        o.sample.guidance_scale = Some(2.0);
        o.neighbour_window = (0.25, 0.75);
        let mut calls: Vec<Tensor> = Vec::new();
        let mut inner = eps(0.4);
        let mut model = |input: &Tensor, t: f64| {
            calls.push(input.clone());
            inner(input, t)
        };
        let windowed = volume_run(&mut model, &m, &masks, &o);
        // waves [1], [0, 2]; 4 steps, two calls each
        assert_eq!(calls.len(), 2 * 4 * 2);
        for (i, call) in calls.iter().enumerate().skip(8) {
            let step = (i - 8) / 2;
            let inside = (1..3).contains(&step);
            let presence: Vec<f32> = call
                .narrow(1, 3, 1)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            assert!(
                presence
                    .iter()
                    .all(|&v| v == if inside { 1.0 } else { 0.0 }),
                "call {i}"
            );
            if !inside {
                for k in [2, 4] {
                    let c: Vec<f32> = call
                        .narrow(1, k, 1)
                        .unwrap()
                        .flatten_all()
                        .unwrap()
                        .to_vec1()
                        .unwrap();
                    assert!(c.iter().all(|&v| v == 0.0), "call {i} channel {k}");
                }
            }
        }
        let run = |window| {
            let mut o = o.clone();
            o.neighbour_window = window;
            let mut model = eps(0.4);
            volume_run(&mut model, &m, &masks, &o)
        };
        let whole = run((0.0, 1.0));
        let mut independent = o.clone();
        independent.independent = true;
        let mut model = eps(0.4);
        let independent = volume_run(&mut model, &m, &masks, &independent);
        assert_eq!(slice(&windowed, 1), slice(&whole, 1), "the anchor");
        for s in [0, 2] {
            assert_ne!(slice(&windowed, s), slice(&whole, s), "slice {s}");
            assert_ne!(slice(&windowed, s), slice(&independent, s), "slice {s}");
        }
    }

    /// The agreeing gate: a conditioned slice's pixel follows the neighbour-conditioned
    /// prediction where its class equals the neighbour's and the prediction without a
    /// neighbour elsewhere. With an element-wise ε every pixel of the slices next to the anchor
    /// is then exactly the gate-everywhere run's pixel or the independent run's.
    #[test]
    fn the_agreeing_gate_uses_the_neighbour_only_where_the_masks_agree() {
        let m = meta(with_mask());
        let masks = volume(5);
        let run = |gate, independent| {
            let mut o = options(1, independent);
            o.neighbour_gate = gate;
            let mut model = eps(0.4);
            volume_run(&mut model, &m, &masks, &o)
        };
        let gated = run(NeighbourGate::Agreeing, false);
        let everywhere = run(NeighbourGate::Everywhere, false);
        let independent = run(NeighbourGate::Everywhere, true);
        let classes = |k: usize| -> Vec<u32> {
            masks
                .get(k)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap()
        };
        let (mut agreeing, mut differing) = (0, 0);
        for s in [1, 3] {
            let (g, e, i) = (
                slice(&gated, s),
                slice(&everywhere, s),
                slice(&independent, s),
            );
            for (p, (own, nb)) in classes(s).iter().zip(classes(2)).enumerate() {
                let want = if *own == nb { e[p] } else { i[p] };
                assert!(
                    (g[p] - want).abs() < 1e-5,
                    "slice {s} pixel {p}: {} vs {want}",
                    g[p]
                );
                if *own == nb {
                    agreeing += 1;
                } else {
                    differing += 1;
                }
            }
            assert_ne!(e, i, "slice {s}: the neighbour matters");
        }
        assert!(agreeing > 0 && differing > 0, "{agreeing} {differing}");
        assert_eq!(slice(&gated, 2), slice(&independent, 2), "the anchor");
        assert_eq!(
            NeighbourGate::parse("Agreeing"),
            Some(NeighbourGate::Agreeing)
        );
        assert_eq!(
            NeighbourGate::parse(NeighbourGate::Everywhere.name()),
            Some(NeighbourGate::Everywhere)
        );
        assert_eq!(NeighbourGate::parse("x"), None);
    }

    /// Neighbour augmentation noise: seeded (same seed, same volume), it changes the conditioned
    /// slices but not the anchor, and anchors still see zero neighbour channels.
    #[test]
    fn neighbour_noise_is_seeded_and_spares_the_anchor() {
        let noisy = meta(Some(NeighbourScheme {
            noise: 0.5,
            ..NeighbourScheme::default()
        }));
        let plain = meta(Some(NeighbourScheme::default()));
        let masks = volume(5);
        let o = options(1, false);
        let run = |m: &ConditioningMeta, o: &VolumeSampleOptions| {
            let mut model = eps(0.4);
            volume_run(&mut model, m, &masks, o)
        };
        let a = run(&noisy, &o);
        assert_eq!(
            a.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            run(&noisy, &o)
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
        );
        let b = run(&plain, &o);
        assert_eq!(slice(&a, 2), slice(&b, 2), "the anchor has no neighbour");
        for s in [0, 1, 3, 4] {
            assert_ne!(slice(&a, s), slice(&b, s), "slice {s}");
        }
        let mut other = options(1, false);
        other.sample.seed += 1;
        assert_ne!(slice(&a, 3), slice(&run(&noisy, &other), 3));
    }

    /// Shared noise: slices with the same mask come out identical; with per-slice noise they
    /// differ.
    #[test]
    fn shared_noise_makes_equal_masks_equal_images() {
        let one = volume(1);
        let same = Tensor::cat(&[&one, &one, &one], 0).unwrap();
        for shared in [false, true] {
            let mut o = options(1, true);
            o.sample.shared_noise = shared;
            let mut model = eps(0.4);
            let out = volume_run(&mut model, &meta(None), &same, &o);
            assert_eq!(slice(&out, 0) == slice(&out, 2), shared, "shared {shared}");
            assert_eq!(slice(&out, 1) == slice(&out, 2), shared, "shared {shared}");
        }
    }
}
