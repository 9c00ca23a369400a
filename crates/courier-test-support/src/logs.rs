//! Everything a test binary logs, kept in memory so that a test can look
//! for what must never be logged (passwords, keys).

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

fn log() -> &'static Arc<Mutex<Vec<u8>>> {
    static LOG: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOG.get_or_init(Default::default)
}

/// A writer into the captured log.
struct Captured;

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        log()
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Sends the binary's `tracing` output, at debug level (wasmtime and
/// cranelift at warn), into the captured log. Call once, in `main`.
pub fn capture() {
    tracing_subscriber::fmt()
        .with_env_filter("debug,wasmtime=warn,cranelift=warn")
        .with_writer(|| Captured)
        .with_ansi(false)
        .init();
}

/// Everything logged so far, as text.
pub fn logged() -> String {
    String::from_utf8_lossy(&log().lock().unwrap_or_else(|e| e.into_inner())).into_owned()
}
