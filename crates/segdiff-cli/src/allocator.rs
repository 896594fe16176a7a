//! Settings of mimalloc, the global allocator of the `segdiff` binary and the xtask.
//!
//! Tensors of a few MiB to a few hundred MiB are allocated and freed many times per denoiser
//! step. mimalloc by default hands freed memory back to the kernel after 1 s ("purging"), so
//! the next step's tensors of the same sizes are page-faulted in and zeroed by the kernel all over
//! again: about a tenth of a small-config training step here (`BENCHMARKS.md`). Keeping freed
//! memory for reuse removes that; the process's peak memory is what it was, it is only not
//! returned before the process ends.

/// `mi_option_purge_delay` of `mimalloc.h` (the same position in its v2 and v3 headers);
/// libmimalloc-sys does not name it.
const PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Stops mimalloc from returning freed memory to the kernel, unless the user chose a purge
/// delay with `MIMALLOC_PURGE_DELAY` (mimalloc's own variable, which then applies as usual).
/// Call it first thing in `main`.
pub fn keep_freed_memory() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: sets one of mimalloc's integer options; valid at any time.
        unsafe { libmimalloc_sys::mi_option_set(PURGE_DELAY, -1) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The option at our position is the purge delay: it holds mimalloc v3's default of
    /// 1000 ms (`src/options.c`; the neighbouring positions hold 1 and 0), and setting it takes
    /// effect.
    #[test]
    fn purge_delay_position_holds_the_purge_delay() {
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
            return; // the user's value, not the default, is in effect
        }
        // SAFETY: reads and sets integer options.
        unsafe {
            assert_eq!(libmimalloc_sys::mi_option_get(PURGE_DELAY), 1000);
            keep_freed_memory();
            assert_eq!(libmimalloc_sys::mi_option_get(PURGE_DELAY), -1);
        }
    }
}
