//! Locked access to the variables of a candle `VarMap` (its mutex is poisoned only by a panic
//! elsewhere, reported as an error rather than a second panic).

use std::collections::HashMap;
use std::sync::MutexGuard;

use candle_core::Var;
use candle_nn::VarMap;

use crate::error::{EvalError, Result};

/// The variables of `varmap`, by name, locked for the guard's lifetime.
pub(crate) fn lock_vars(varmap: &VarMap) -> Result<MutexGuard<'_, HashMap<String, Var>>> {
    varmap.data().lock().map_err(|_| poisoned("varmap"))
}

/// The error for a mutex of `name` poisoned by a panic elsewhere.
pub(crate) fn poisoned(name: &'static str) -> EvalError {
    EvalError::InvalidArgument {
        name,
        value: "<lock>".into(),
        reason: "mutex poisoned by a panic elsewhere",
    }
}
