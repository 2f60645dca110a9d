//! [`Routes`]: a layer's per-route state — the metrics label and the hold estimate of each
//! matched axum route.
//!
//! Kept per layer rather than per service: axum may apply a layer again for each request
//! (a `Router<()>` called as a service without `with_state`/`into_make_service` re-wraps
//! its handlers per call), so per-service state could be thrown away after every request.
//! A layer over many routes (`Router::layer`) keeps one entry per route template, a bounded
//! set; requests without a matched route share one entry.

use std::sync::{Arc, RwLock};

use http::Extensions;

use super::estimate::HoldEstimate;

/// At most this many routes get their own entry; the rest share the unrouted one's
/// estimate (a router has far fewer routes).
const MAX_ROUTES: usize = 256;

/// One request's route: its metrics label (none without a matched route) and the estimate
/// its holds feed.
#[derive(Clone)]
pub(crate) struct RouteState {
    pub(crate) label: Option<Arc<str>>,
    pub(crate) holds: Arc<HoldEstimate>,
}

/// The per-route state of one layer.
#[derive(Default)]
pub(crate) struct Routes {
    routed: RwLock<Vec<RouteState>>,
    unrouted: Arc<HoldEstimate>,
}

impl Routes {
    /// The state of the route `extensions` were matched to.
    pub(crate) fn of(&self, extensions: &Extensions) -> RouteState {
        match matched_path(extensions) {
            Some(path) => self.routed(path),
            None => self.unrouted(None),
        }
    }

    fn unrouted(&self, label: Option<Arc<str>>) -> RouteState {
        RouteState {
            label,
            holds: self.unrouted.clone(),
        }
    }

    fn routed(&self, path: &str) -> RouteState {
        let find = |routes: &[RouteState]| {
            routes
                .iter()
                .find(|route| route.label.as_deref() == Some(path))
                .cloned()
        };
        // A poisoned lock only means a panic elsewhere: the entries are still whole.
        if let Some(route) = find(&self.routed.read().unwrap_or_else(|e| e.into_inner())) {
            return route;
        }
        let mut routes = self.routed.write().unwrap_or_else(|e| e.into_inner());
        if let Some(route) = find(&routes) {
            return route;
        }
        let label: Arc<str> = path.into();
        if routes.len() >= MAX_ROUTES {
            return self.unrouted(Some(label));
        }
        let route = RouteState {
            label: Some(label),
            holds: Arc::default(),
        };
        routes.push(route.clone());
        route
    }
}

#[cfg(feature = "axum")]
fn matched_path(extensions: &Extensions) -> Option<&str> {
    Some(extensions.get::<axum::extract::MatchedPath>()?.as_str())
}

#[cfg(not(feature = "axum"))]
fn matched_path(_: &Extensions) -> Option<&str> {
    None
}

#[cfg(all(test, feature = "axum"))]
mod tests {
    use std::time::Duration;

    use axum::Router;
    use axum::routing::get;
    use http::Request;
    use tower::ServiceExt;

    use super::*;

    /// The `Extensions` axum gives a request to `path` on a route `/orders/{id}`.
    async fn matched(path: &str) -> Extensions {
        let (tx, rx) = std::sync::mpsc::channel();
        let app = Router::new().route(
            "/orders/{id}",
            get(move |request: axum::extract::Request| async move {
                tx.send(request.extensions().clone()).unwrap();
            }),
        );
        let request = Request::get(path).body(axum::body::Body::empty()).unwrap();
        app.oneshot(request).await.unwrap();
        rx.recv().unwrap()
    }

    #[tokio::test]
    async fn one_entry_per_route_shared_by_its_requests() {
        let routes = Routes::default();
        let a = routes.of(&matched("/orders/1").await);
        let b = routes.of(&matched("/orders/2").await);
        assert_eq!(a.label.as_deref(), Some("/orders/{id}"));
        assert!(Arc::ptr_eq(
            a.label.as_ref().unwrap(),
            b.label.as_ref().unwrap()
        ));
        a.holds.record(Duration::from_secs(1));
        assert_eq!(b.holds.get(), Some(Duration::from_secs(1)));

        let plain = routes.of(&Extensions::new());
        assert_eq!(plain.label, None);
        assert_eq!(plain.holds.get(), None);
    }
}
