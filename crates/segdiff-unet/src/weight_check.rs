//! Building a network from a name → tensor map while listing every problem at once: a
//! `VarBuilder` backend that notes each tensor the network asks for, serves what fits and a
//! zero placeholder (no memory) for what is missing or mis-shaped, so that one error can name
//! every missing, mis-shaped and unexpected tensor. Used for the denoiser here and for the
//! evaluator's networks.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::VarBuilder;

/// A tensor whose shape does not fit: (name, shape asked for, shape found).
pub type MisShaped = (String, Vec<usize>, Vec<usize>);

/// What a network asked for against what the map held (each list sorted by name).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WeightReport {
    /// Every tensor the network asked for, as (name, shape), in construction order.
    pub requested: Vec<(String, Vec<usize>)>,
    /// Asked for, not in the map.
    pub missing: Vec<String>,
    /// In the map, never asked for.
    pub unexpected: Vec<String>,
    /// Present with another shape.
    pub mis_shaped: Vec<MisShaped>,
}

impl WeightReport {
    /// Nothing missing, mis-shaped or unexpected.
    pub fn is_clean(&self) -> bool {
        self.missing.is_empty() && self.unexpected.is_empty() && self.mis_shaped.is_empty()
    }
}

/// Runs `build` on a `VarBuilder` (of `dtype` on `device`) that serves `tensors`, and returns
/// what it built with the report. A 1×1 convolution weight stored where a linear weight is
/// asked for (older diffusers checkpoints' attention projections) is reshaped, not reported.
/// With an empty map this lists what a network reads without allocating weights.
pub fn build_checked<M, E>(
    tensors: HashMap<String, Tensor>,
    dtype: DType,
    device: &Device,
    build: impl FnOnce(VarBuilder) -> Result<M, E>,
) -> Result<(M, WeightReport, HashMap<String, Tensor>), E> {
    let state = Arc::new(Checked {
        tensors,
        requested: Mutex::new(Vec::new()),
        mis_shaped: Mutex::new(Vec::new()),
    });
    let backend: Box<dyn SimpleBackend> = Box::new(CheckingBackend(state.clone()));
    let model = build(VarBuilder::from_backend(backend, dtype, device.clone()))?;
    // The backend (inside the VarBuilder, dropped by `build`) held the other reference; a
    // poisoned lock can only follow a panic in `build`, which has already propagated.
    let requested = state
        .requested
        .lock()
        .map(|r| r.clone())
        .unwrap_or_default();
    let mut mis_shaped = state
        .mis_shaped
        .lock()
        .map(|r| r.clone())
        .unwrap_or_default();
    let wanted: HashSet<&str> = requested.iter().map(|(n, _)| n.as_str()).collect();
    let mut missing: Vec<String> = requested
        .iter()
        .filter(|(n, _)| !state.tensors.contains_key(n))
        .map(|(n, _)| n.clone())
        .collect();
    let mut unexpected: Vec<String> = state
        .tensors
        .keys()
        .filter(|k| !wanted.contains(k.as_str()))
        .cloned()
        .collect();
    missing.sort();
    unexpected.sort();
    mis_shaped.sort();
    let tensors = match Arc::try_unwrap(state) {
        Ok(s) => s.tensors,
        Err(shared) => shared.tensors.clone(),
    };
    let report = WeightReport {
        requested,
        missing,
        unexpected,
        mis_shaped,
    };
    Ok((model, report, tensors))
}

struct Checked {
    tensors: HashMap<String, Tensor>,
    requested: Mutex<Vec<(String, Vec<usize>)>>,
    mis_shaped: Mutex<Vec<MisShaped>>,
}

struct CheckingBackend(Arc<Checked>);

impl SimpleBackend for CheckingBackend {
    fn get(
        &self,
        s: Shape,
        name: &str,
        _h: candle_nn::Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        let want = s.dims().to_vec();
        if let Ok(mut r) = self.0.requested.lock() {
            r.push((name.to_string(), want.clone()));
        }
        match self.0.tensors.get(name) {
            Some(t) if t.dims() == want.as_slice() => t.to_dtype(dtype)?.to_device(dev),
            Some(t)
                if t.elem_count() == s.elem_count()
                    && t.dims().ends_with(&[1, 1])
                    && want.len() == 2 =>
            {
                t.reshape(s)?.to_dtype(dtype)?.to_device(dev)
            }
            found => {
                if let (Some(t), Ok(mut p)) = (found, self.0.mis_shaped.lock()) {
                    p.push((name.to_string(), want, t.dims().to_vec()));
                }
                Tensor::zeros((), dtype, dev)?.broadcast_as(s)
            }
        }
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        match self.0.tensors.get(name) {
            Some(t) => t.to_dtype(dtype)?.to_device(dev),
            None => candle_core::bail!("tensor {name} not found"),
        }
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.0.tensors.contains_key(name)
    }
}
