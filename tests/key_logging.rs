//! A misconfigured key extractor is logged once per extractor, as an error.
//!
//! Alone in its test binary on purpose: `tracing` caches each callsite's interest for the
//! whole process, computed against the subscriber of whichever thread reaches it first. A
//! parallel test hitting the same log line with no subscriber (as the extractors' unit
//! tests do) can cache "never" and hide the events from the subscriber installed here.

use std::io;
use std::sync::{Arc, Mutex};

use http::Method;
use http::request::Parts;
use tower_redlock::layer::key::{KeyExtractor, constant, methods, path};

fn head(method: Method, uri: &str) -> Parts {
    let request = http::Request::builder().method(method).uri(uri);
    request.body(()).unwrap().into_parts().0
}

/// Collects what a `tracing` subscriber writes.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn count(&self, needle: &str) -> usize {
        String::from_utf8_lossy(&self.0.lock().unwrap())
            .matches(needle)
            .count()
    }
}

#[test]
fn misconfiguration_is_logged_once_per_extractor() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let parts = head(Method::GET, "/orders/5");
    tracing::subscriber::with_default(subscriber, || {
        let empty = constant("");
        for _ in 0..3 {
            assert!(empty.extract(&parts).is_err());
        }
        // Another extractor logs its own misconfiguration once too.
        let no_methods = methods(&[], path());
        for _ in 0..3 {
            assert!(no_methods.extract(&parts).is_err());
        }
        #[cfg(feature = "axum")]
        {
            let outside = tower_redlock::layer::key::param("id");
            for _ in 0..3 {
                assert!(outside.extract(&parts).is_err());
            }
        }
    });
    assert_eq!(captured.count("key::constant"), 1);
    assert_eq!(captured.count("key::methods"), 1);
    #[cfg(feature = "axum")]
    assert_eq!(captured.count("key::param"), 1);
    assert_eq!(
        captured.count("ERROR"),
        if cfg!(feature = "axum") { 3 } else { 2 }
    );
}
