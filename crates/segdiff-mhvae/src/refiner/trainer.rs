//! Training the refiner (paper §4, App. D) on segdiff's shared machinery: the VAE frozen, x̂ its
//! reconstruction from a posterior sample, t ~ U(t_eps, 1), x_t from the marginal (eq. 14), and
//! the ε-prediction MSE (Song et al.'s objective with λ(t) = σ²(t)). Images only: masks are not
//! needed.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use rand::rngs::StdRng;
use rand::Rng;
use segdiff_diffusion::train::{
    read_checkpoint, seeded_unet_init, DiffusionBatch, Loss, Method, Optimisation, RunOptions,
    TrainCore,
};
use segdiff_diffusion::DiffusionError;
use segdiff_unet::UNet2DConfig;
use serde::{Deserialize, Serialize};

use super::network::{Refiner, RefinerMeta};
use crate::model::{sample_gaussian, Mhvae};
use crate::Result;

/// What a refiner checkpoint records.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RefinerTrainOptions {
    #[serde(flatten)]
    pub run: RunOptions,
    pub meta: RefinerMeta,
    pub unet: UNet2DConfig,
}

/// A refiner being trained against a frozen VAE.
pub struct RefinerTrainer {
    vae: Mhvae,
    refiner: Refiner,
    core: TrainCore,
    device: Device,
}

impl RefinerTrainer {
    /// A fresh refiner (weights from `run.seed`) for `vae`.
    pub fn new(
        vae: Mhvae,
        meta: RefinerMeta,
        unet: UNet2DConfig,
        run: RunOptions,
        device: &Device,
    ) -> Result<Self> {
        run.validate()?;
        let init = seeded_unet_init(&unet, run.seed, device)?;
        Self::from_weights(vae, meta, unet, run, init, device)
    }

    fn from_weights(
        vae: Mhvae,
        meta: RefinerMeta,
        unet: UNet2DConfig,
        run: RunOptions,
        weights: HashMap<String, Tensor>,
        device: &Device,
    ) -> Result<Self> {
        let varmap = Optimisation::varmap_from(weights, device)?;
        let refiner = Refiner::new(
            meta,
            unet,
            VarBuilder::from_varmap(&varmap, DType::F32, device),
        )?;
        let optimisation = Optimisation::new(varmap, &run)?;
        Ok(Self {
            vae,
            refiner,
            core: TrainCore {
                run,
                optimisation,
                step: 0,
            },
            device: device.clone(),
        })
    }

    /// Continues from a checkpoint folder exactly.
    pub fn resume(vae: Mhvae, checkpoint: &Path, device: &Device) -> Result<Self> {
        let (state, tensors) = read_checkpoint::<RefinerTrainOptions>(checkpoint, device)?;
        let live = Optimisation::live_from_state(&tensors);
        let o = state.options;
        let mut t = Self::from_weights(vae, o.meta, o.unet, o.run, live, device)?;
        t.core.optimisation.load_state_tensors(&tensors)?;
        t.core.step = state.step;
        Ok(t)
    }

    /// The process being learnt (a resumed run keeps its checkpoint's).
    pub fn formulation(&self) -> super::Formulation {
        self.refiner.meta.formulation
    }

    pub fn step(&self) -> usize {
        self.core.step
    }

    pub fn set_total_steps(&mut self, total: usize) {
        self.core.run.total_steps = total;
    }

    /// A refiner with the exportable weights (EMA when on).
    pub fn export(&self) -> Result<Refiner> {
        let vb = VarBuilder::from_tensors(
            self.core.optimisation.export_weights(),
            DType::F32,
            &self.device,
        );
        Refiner::new(
            self.refiner.meta.clone(),
            self.refiner.unet_config.clone(),
            vb,
        )
    }

    /// Writes the refiner folder.
    pub fn save(&self, dir: &Path) -> Result<()> {
        Refiner::save(
            dir,
            &self.refiner.meta,
            &self.refiner.unet_config,
            &self.core.optimisation.export_weights(),
        )
    }

    fn batch_loss(&self, batch: &DiffusionBatch, rng: &mut StdRng) -> Result<Tensor> {
        let x01 = ((batch.images.to_device(&self.device)? + 1.0)? * 0.5)?;
        let post = self.vae.encode(&x01)?;
        let z = sample_gaussian(&post.mu_z, &post.logvar_z, rng)?;
        let theta = post
            .theta
            .as_ref()
            .map(|(mu, lv)| sample_gaussian(mu, lv, rng))
            .transpose()?;
        let x_hat = self
            .vae
            .decode(&z, theta.as_ref())?
            .affine(2.0, -1.0)?
            .detach();
        let x0 = batch.images.to_device(&self.device)?;
        let n = x0.dim(0)?;
        let t_eps = self.refiner.meta.t_eps;
        let t: Vec<f64> = (0..n)
            .map(|_| t_eps + (1.0 - t_eps) * rng.random::<f64>())
            .collect();
        let eps = segdiff_diffusion::random::randn(rng, x0.dims(), DType::F32, &self.device)?;
        let meta = &self.refiner.meta;
        let start = meta.formulation.start(&x0, &x_hat)?;
        let x_t = meta.sde.marginal_sample(&start, &x_hat, &eps, &t)?;
        let pred = self.refiner.eps(&x_t, &x_hat, &t)?;
        Ok((pred - eps)?.sqr()?.mean_all()?)
    }
}

impl Method for RefinerTrainer {
    type Batch = DiffusionBatch;
    type Options = RefinerTrainOptions;

    fn core(&self) -> &TrainCore {
        &self.core
    }

    fn core_mut(&mut self) -> &mut TrainCore {
        &mut self.core
    }

    fn options(&self) -> RefinerTrainOptions {
        RefinerTrainOptions {
            run: self.core.run.clone(),
            meta: self.refiner.meta.clone(),
            unet: self.refiner.unet_config.clone(),
        }
    }

    fn loss(&self, batch: &DiffusionBatch, rng: &mut StdRng) -> segdiff_diffusion::Result<Loss> {
        self.batch_loss(batch, rng)
            .map(Loss::total)
            .map_err(|e| DiffusionError::method("computing the refiner loss", e))
    }

    fn write_model(&self, dir: &Path) -> segdiff_diffusion::Result<()> {
        self.save(dir)
            .map_err(|e| DiffusionError::method("writing the refiner", e))
    }
}
