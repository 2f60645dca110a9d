//! A misconfigured key extractor is logged once per extractor, as an error.
//!
//! Alone in its test binary on purpose: `tracing` caches each callsite's interest for the
//! whole process, computed against the subscriber of whichever thread reaches it first. A
//! parallel test hitting the same log line with no subscriber (as the extractors' unit
//! tests do) can cache "never" and hide the events from the subscriber installed here.
#![cfg(feature = "testkit")]

#[path = "support/mod.rs"]
mod support;

use http::Method;
use http::request::Parts;
use support::Captured;
use tower_redlock::layer::key::{KeyExtractor, constant, methods, path};

fn head(method: Method, uri: &str) -> Parts {
    let request = http::Request::builder().method(method).uri(uri);
    request.body(()).unwrap().into_parts().0
}

#[test]
fn misconfiguration_is_logged_once_per_extractor() {
    let captured = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(captured.clone())
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
