//! What one guest instance's store holds: WASI, messaging and limits, and
//! the streams that carry the guest's stdout/stderr into the host log.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use courier_wasi_messaging::{WasiMessaging, WasiMessagingCtx, WasiMessagingView};
use tokio::io::AsyncWrite;
use wasmtime::StoreLimits;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

/// The data of one guest instance's store.
pub struct GuestState {
    pub(crate) wasi: WasiCtx,
    pub(crate) table: ResourceTable,
    pub(crate) messaging: WasiMessagingCtx,
    pub(crate) limits: StoreLimits,
}

impl WasiView for GuestState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiMessagingView for GuestState {
    fn messaging(&mut self) -> WasiMessaging<'_> {
        WasiMessaging {
            ctx: &self.messaging,
            table: &mut self.table,
        }
    }
}

/// A guest's stdout or stderr: each line goes to the host log, tagged with
/// the guest's name and the stream.
#[derive(Clone)]
pub struct GuestLog {
    guest: Arc<str>,
    stream: &'static str,
}

impl GuestLog {
    /// The log stream `stream` ("stdout" or "stderr") of `guest`.
    pub fn new(guest: Arc<str>, stream: &'static str) -> Self {
        Self { guest, stream }
    }
}

impl IsTerminal for GuestLog {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestLog {
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(LineWriter {
            log: self.clone(),
            buf: Vec::new(),
        })
    }
}

/// Longest line kept before it is logged anyway, so a guest cannot grow it unbounded.
const MAX_LINE: usize = 16 * 1024;

struct LineWriter {
    log: GuestLog,
    buf: Vec<u8>,
}

impl LineWriter {
    fn emit(&mut self, line: &[u8]) {
        let text = String::from_utf8_lossy(line);
        let text = text.trim_end_matches(['\n', '\r']);
        if text.is_empty() {
            return;
        }
        tracing::info!(target: "courier::guest", guest = %self.log.guest, stream = self.log.stream, "{text}");
    }
}

impl AsyncWrite for LineWriter {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        for &b in data {
            this.buf.push(b);
            if b == b'\n' || this.buf.len() >= MAX_LINE {
                let line = std::mem::take(&mut this.buf);
                this.emit(&line);
            }
        }
        Poll::Ready(Ok(data.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if !self.buf.is_empty() {
            let line = std::mem::take(&mut self.buf);
            self.emit(&line);
        }
        Poll::Ready(Ok(()))
    }
}

impl Drop for LineWriter {
    fn drop(&mut self) {
        if !self.buf.is_empty() {
            let line = std::mem::take(&mut self.buf);
            self.emit(&line);
        }
    }
}
