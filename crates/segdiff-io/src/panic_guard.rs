//! A guard around third-party decoders and parsers run on user files: a panic inside them (an
//! out-of-bounds index on a damaged file, an overflow) becomes an error message instead of
//! ending the process with a backtrace.
//!
//! [`catch_panic`] runs a closure under `catch_unwind`. While any guarded closure runs, the
//! process's panic hook stays quiet (the message is captured and returned instead of being
//! printed) — also for the worker threads a decoder may spawn (rayon), whose panic surfaces in
//! the guarded thread as an error or a second panic. With no guarded call running, panics are
//! reported by the previous hook as before. The hook is installed once, on first use, and chains
//! to whatever hook was set before.

use std::cell::RefCell;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, Once};

/// Guarded calls running, in all threads.
static GUARDED: AtomicUsize = AtomicUsize::new(0);
/// The first panic message of another thread during a guarded call.
static OTHER: Mutex<Option<String>> = Mutex::new(None);

thread_local! {
    /// Nesting depth of guarded calls on this thread.
    static MINE: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
    /// The message and location of the last panic caught on this thread.
    static LAST: RefCell<Option<String>> = const { RefCell::new(None) };
}

static HOOK: Once = Once::new();

fn install_hook() {
    HOOK.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if GUARDED.load(Ordering::SeqCst) > 0 {
                let message = info
                    .payload()
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| info.payload().downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "unknown panic".into());
                let at = info
                    .location()
                    .map(|l| format!(" (at {}:{})", l.file(), l.line()))
                    .unwrap_or_default();
                let text = format!("{message}{at}");
                if MINE.with(|m| m.get()) > 0 {
                    LAST.with(|l| *l.borrow_mut() = Some(text));
                } else if let Ok(mut other) = OTHER.lock() {
                    other.get_or_insert(text);
                }
            } else {
                previous(info);
            }
        }));
    });
}

/// Runs `f`; a panic inside it is returned as `Err(message)` (the panic's text and where it
/// happened), printed by nobody. Use it around calls into decoders and parsers of user data,
/// and turn the message into the caller's error type with the file's name.
pub fn catch_panic<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    install_hook();
    GUARDED.fetch_add(1, Ordering::SeqCst);
    MINE.with(|m| m.set(m.get() + 1));
    let result = panic::catch_unwind(AssertUnwindSafe(f));
    MINE.with(|m| m.set(m.get() - 1));
    GUARDED.fetch_sub(1, Ordering::SeqCst);
    result.map_err(|_| {
        let other = || OTHER.lock().ok().and_then(|mut o| o.take());
        // A worker thread's panic is the cause; this thread's is only its echo.
        other()
            .or_else(|| LAST.with(|l| l.borrow_mut().take()))
            .unwrap_or_else(|| "unknown panic".into())
    })
}

/// The message of an error made from a caught panic: says that the decoder failed on this
/// input (a bug to report upstream with the file) rather than that the file is bad.
pub fn panic_detail(what: &str, message: &str) -> String {
    format!("{what} panicked on this input ({message}); the file is probably damaged")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_becomes_its_message_and_values_pass_through() {
        assert_eq!(catch_panic(|| 3), Ok(3));
        let v: Vec<u8> = vec![1, 2];
        let i = v.len() + 1;
        let err = catch_panic(|| v[i]).unwrap_err();
        assert!(err.contains("index out of bounds"), "{err}");
        assert!(err.contains("panic_guard.rs"), "{err}");
        let err = catch_panic(|| -> u8 { panic!("custom {}", 7) }).unwrap_err();
        assert!(err.starts_with("custom 7"), "{err}");
        // nested guards and later calls still work
        assert_eq!(catch_panic(|| catch_panic(|| 5)), Ok(Ok(5)));
    }
}
