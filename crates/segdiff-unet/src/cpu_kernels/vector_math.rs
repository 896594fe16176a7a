//! SiLU with an `exp` that vectorises, and [`simd_dispatch`], which compiles a kernel for the
//! widest vector unit of the CPU it runs on (the crate itself targets baseline x86-64).

/// The logistic σ that `silu(z) = z·σ(z)` and its derivative `σ(z)·(1 + z·(1 − σ(z)))` use.
pub(crate) trait Silu: Copy {
    fn sigmoid(self) -> Self;
}

impl Silu for f32 {
    /// `1 / (1 + e^{−z})` like PyTorch's CPU kernel, with [`exp_f32`] (≤ 2 ulp) so the loop
    /// vectorises; saturates to 0 and 1 beyond |z| ≈ 87.
    #[inline(always)]
    fn sigmoid(self) -> f32 {
        1.0 / (1.0 + exp_f32(-self))
    }
}

impl Silu for f64 {
    /// f64 runs only in gradient checks: the exact libm `exp`.
    #[inline(always)]
    fn sigmoid(self) -> f64 {
        1.0 / (1.0 + (-self).exp())
    }
}

/// `e^x` for f32 without a libm call: `x = n·ln2 + r`, `|r| ≤ ln2/2`, a degree-6 polynomial for
/// `e^r` (Cephes `expf` coefficients) and `2^n` built in the exponent bits. Inputs are clamped
/// to [−87, 88], where `e^x` stays a normal f32.
#[inline(always)]
pub(crate) fn exp_f32(x: f32) -> f32 {
    // 1.5·2^23: adding it rounds to an integer held in the low mantissa bits.
    const ROUND: f32 = 12_582_912.0;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    let x = x.clamp(-87.0, 88.0);
    let t = x * std::f32::consts::LOG2_E + ROUND;
    let n = t - ROUND;
    let r = x - n * LN2_HI - n * LN2_LO;
    let p = 1.987_569_1e-4_f32;
    let p = p * r + 1.398_199_9e-3;
    let p = p * r + 8.333_452e-3;
    let p = p * r + 4.166_579_6e-2;
    let p = p * r + 1.666_666_5e-1;
    let p = p * r + 0.5;
    let p = p * r * r + r + 1.0;
    // The low bits of t hold n + 2^22 + 2^23; n + 127 lands in the exponent field.
    let n_bits = t.to_bits().wrapping_sub(ROUND.to_bits()) as i32;
    let scale = f32::from_bits(((n_bits + 127) as u32) << 23);
    p * scale
}

/// Defines `$name`, which runs the `#[inline(always)]` function `$kernel` compiled for AVX-512
/// (or AVX2+FMA) when the CPU has it, else for the baseline target the crate is built for.
/// The kernel and the small closures it calls are inlined into a `#[target_feature]` function,
/// so their loops vectorise with the wide registers (a closure handed to such a function would
/// keep the baseline instruction set).
macro_rules! simd_dispatch {
    ($(#[$meta:meta])* $vis:vis $([$unsafe:ident])? fn $name:ident<$t:ident: $bound:path>(
        $($arg:ident: $ty:ty),* $(,)?
    ) $(-> $ret:ty)? => $kernel:path) => {
        $(#[$meta])*
        #[allow(clippy::too_many_arguments)]
        $vis $($unsafe)? fn $name<$t: $bound>($($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512dq,avx512vl,avx2,fma")]
                #[allow(clippy::too_many_arguments)]
                unsafe fn avx512<$t: $bound>($($arg: $ty),*) $(-> $ret)? {
                    #[allow(unused_unsafe)]
                    unsafe { $kernel($($arg),*) }
                }
                #[target_feature(enable = "avx2,fma")]
                #[allow(clippy::too_many_arguments)]
                unsafe fn avx2<$t: $bound>($($arg: $ty),*) $(-> $ret)? {
                    #[allow(unused_unsafe)]
                    unsafe { $kernel($($arg),*) }
                }
                if std::arch::is_x86_feature_detected!("avx512f") {
                    // SAFETY: the CPU has the features `avx512` is compiled with (and the
                    // caller upholds the kernel's own contract, if any).
                    return unsafe { avx512($($arg),*) };
                }
                if std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
                {
                    // SAFETY: as above.
                    return unsafe { avx2($($arg),*) };
                }
            }
            #[allow(unused_unsafe)]
            // SAFETY: the caller upholds the kernel's contract, if any.
            unsafe { $kernel($($arg),*) }
        }
    };
}
pub(crate) use simd_dispatch;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_f32_is_within_two_ulp_of_libm() {
        let mut worst = 0f64;
        let mut x = -87.0f32;
        while x <= 88.0 {
            let want = (x as f64).exp();
            let got = exp_f32(x) as f64;
            let ulp = (want as f32).abs() * f32::EPSILON;
            worst = worst.max((got - want).abs() / ulp as f64);
            x += 0.001_3;
        }
        println!("exp_f32: worst error {worst:.2} ulp");
        assert!(worst <= 2.0, "{worst} ulp");
        assert_eq!(exp_f32(0.0), 1.0);
        assert!(exp_f32(-1000.0) >= 0.0 && exp_f32(-1000.0) < 1e-37);
        assert!(exp_f32(1000.0).is_finite());
    }

    #[test]
    fn sigmoid_saturates_without_nan() {
        for z in [-1e30f32, -200.0, -88.0, 0.0, 88.0, 200.0, 1e30] {
            let s = z.sigmoid();
            assert!((0.0..=1.0).contains(&s), "{z}: {s}");
        }
        assert_eq!(0f32.sigmoid(), 0.5);
        assert!((1e30f32.sigmoid() - 1.0).abs() < 1e-7);
    }
}
