//! [`Captured`]: what a `tracing` subscriber writes, kept for a test to read.
//!
//! A scoped subscriber (`with_default`, `set_default`) sees an event only if no other
//! thread of the test binary reached that log line first without a subscriber: `tracing`
//! caches each callsite's interest once per process. A test asserting that a line *is*
//! logged needs a line no parallel test reaches, or a binary of its own
//! (`tests/key_logging.rs`), or a global subscriber.

use std::io;
use std::sync::{Arc, Mutex, PoisonError};

use tracing_subscriber::fmt::MakeWriter;

/// A shared buffer a subscriber writes into (`.with_writer(captured.clone())`).
#[derive(Clone, Default)]
pub struct Captured(Arc<Mutex<Vec<u8>>>);

impl Captured {
    /// Everything written so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(PoisonError::into_inner)).into_owned()
    }

    /// How often `needle` occurs in what was written.
    pub fn count(&self, needle: &str) -> usize {
        self.text().matches(needle).count()
    }
}

impl io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Captured {
    type Writer = Captured;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}
