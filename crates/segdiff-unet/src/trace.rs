//! Optional capture of every block's output during a forward pass, named like the PyTorch
//! modules, to bisect a port against reference activations.

use candle_core::Tensor;

/// Collects `(module name, output)` pairs when enabled; a no-op otherwise.
#[derive(Debug, Default)]
pub struct Trace {
    records: Option<Vec<(String, Tensor)>>,
}

impl Trace {
    /// A trace that records nothing (the normal forward pass).
    pub fn off() -> Self {
        Self { records: None }
    }

    /// A trace that keeps every recorded tensor.
    pub fn on() -> Self {
        Self {
            records: Some(Vec::new()),
        }
    }

    /// Records `t` under the name `name()` (evaluated only when recording).
    pub fn record(&mut self, name: impl FnOnce() -> String, t: &Tensor) {
        if let Some(r) = &mut self.records {
            r.push((name(), t.clone()));
        }
    }

    /// The recorded pairs, in execution order.
    pub fn into_records(self) -> Vec<(String, Tensor)> {
        self.records.unwrap_or_default()
    }
}
