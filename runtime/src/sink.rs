//! Where a guest's stdout and stderr go.
//!
//! The runtime knows nothing of log files or the CRI log format: the caller hands it a
//! [`LogSink`] per stream and the guest's bytes are delivered to it unchanged, in order, as
//! the guest writes them. [`SharedSink`] adapts a sink to the stream traits of
//! `wasmtime-wasi` (both the WASIp2 `OutputStream` used by components and preview1 modules,
//! and the `AsyncWrite` form), so one sink serves every store that writes to it (all the
//! per-request instances of an HTTP handler share their pod's sinks).

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// How much a guest may write in one go before the stream reports back (bytes).
const WRITE_BUDGET: usize = 64 * 1024;

/// Receives the bytes a guest writes to one of its output streams.
///
/// `write` is called on the executor thread that runs the guest, so it should be quick (an
/// append to a buffered file is fine). It cannot fail: a sink that cannot store the bytes
/// drops them, as a full disk must not kill the workload.
pub trait LogSink: Send + 'static {
    /// Takes the next bytes written by the guest (any length, not split on lines).
    fn write(&mut self, bytes: &[u8]);

    /// Called when the guest asks for a flush and once more when the guest ends.
    fn flush(&mut self) {}
}

/// A sink that discards everything.
#[derive(Debug, Default, Clone, Copy)]
pub struct NullSink;

impl LogSink for NullSink {
    fn write(&mut self, _bytes: &[u8]) {}
}

/// A sink that keeps everything in memory; clones share the same buffer.
///
/// Meant for tests and for small captures (`wasmkube-runtime`'s `run` example prints through
/// its own sink instead).
#[derive(Debug, Default, Clone)]
pub struct MemorySink {
    buffer: Arc<Mutex<Vec<u8>>>,
}

impl MemorySink {
    /// An empty sink.
    pub fn new() -> Self {
        Self::default()
    }

    /// Everything written so far.
    pub fn contents(&self) -> Vec<u8> {
        self.buffer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Everything written so far, as text (invalid UTF-8 replaced).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.contents()).into_owned()
    }
}

impl LogSink for MemorySink {
    fn write(&mut self, bytes: &[u8]) {
        self.buffer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend_from_slice(bytes);
    }
}

/// A [`LogSink`] shared by every stream handle that writes into it.
#[derive(Clone)]
pub(crate) struct SharedSink {
    sink: Arc<Mutex<Box<dyn LogSink>>>,
}

impl SharedSink {
    /// Wraps a caller's sink.
    pub(crate) fn new(sink: Box<dyn LogSink>) -> Self {
        Self {
            sink: Arc::new(Mutex::new(sink)),
        }
    }

    /// Delivers bytes to the sink.
    pub(crate) fn write_all(&self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        self.sink
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .write(bytes);
    }

    /// Flushes the sink.
    pub(crate) fn flush(&self) {
        self.sink
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .flush();
    }
}

impl IsTerminal for SharedSink {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for SharedSink {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl OutputStream for SharedSink {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.write_all(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        SharedSink::flush(self);
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(WRITE_BUDGET)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for SharedSink {
    async fn ready(&mut self) {}
}

impl AsyncWrite for SharedSink {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.write_all(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.flush();
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_sink_clones_share_one_buffer() {
        let sink = MemorySink::new();
        let shared = SharedSink::new(Box::new(sink.clone()));
        shared.write_all(b"hello ");
        shared.clone().write_all(b"world");
        assert_eq!(sink.text(), "hello world");
    }

    #[test]
    fn shared_sink_accepts_writes_through_the_wasi_output_stream() {
        let sink = MemorySink::new();
        let mut stream = SharedSink::new(Box::new(sink.clone())).p2_stream();
        assert!(stream.check_write().is_ok_and(|n| n > 0));
        assert!(stream.write(Bytes::from_static(b"line\n")).is_ok());
        assert!(stream.flush().is_ok());
        assert_eq!(sink.text(), "line\n");
    }
}
