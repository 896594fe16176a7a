//! Learning-rate factor of diffusers' `get_cosine_schedule_with_warmup` (the transformers formula).

/// Multiplier of the base learning rate at optimiser step `step` (0-based): linear warmup from 0
/// over `warmup` steps, then a half cosine (num_cycles 0.5) down to 0 at `total`, never negative.
///
/// Like `torch.optim.lr_scheduler.LambdaLR`, the k-th optimiser step (k = 0, 1, ...) runs with
/// `base_lr * cosine_schedule_with_warmup(k, ..)`: the very first step uses factor 0 when warmup > 0.
pub fn cosine_schedule_with_warmup(step: usize, warmup: usize, total: usize) -> f64 {
    if step < warmup {
        return step as f64 / warmup.max(1) as f64;
    }
    let progress = (step - warmup) as f64 / total.saturating_sub(warmup).max(1) as f64;
    let num_cycles = 0.5f64;
    (0.5 * (1.0 + (std::f64::consts::PI * num_cycles * 2.0 * progress).cos())).max(0.0)
}

#[cfg(test)]
mod tests {
    use super::cosine_schedule_with_warmup as f;

    #[test]
    fn known_points() {
        // warmup 500 (the paper's lr_warmup_steps), 10_500 steps in all
        assert_eq!(f(0, 500, 10_500), 0.0);
        assert_eq!(f(250, 500, 10_500), 0.5);
        assert_eq!(f(500, 500, 10_500), 1.0);
        // halfway through the cosine: cos(pi/2) = 0 -> factor 0.5
        assert!((f(5_500, 500, 10_500) - 0.5).abs() < 1e-12);
        // a quarter in: 0.5 * (1 + cos(pi/4))
        let q = 0.5 * (1.0 + std::f64::consts::FRAC_1_SQRT_2);
        assert!((f(3_000, 500, 10_500) - q).abs() < 1e-12);
        assert!(f(10_500, 500, 10_500).abs() < 1e-12);
        // past the end the half cosine rises again, like transformers: progress 1.5 -> cos(1.5 pi) = 0
        assert!((f(15_500, 500, 10_500) - 0.5).abs() < 1e-12);
        // no warmup: starts at 1
        assert_eq!(f(0, 0, 100), 1.0);
    }
}
