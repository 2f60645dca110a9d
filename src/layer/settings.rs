//! [`Settings`]: what a layer's services share, and what each request's acquisition gets
//! from them (merged options, the metrics label, the `Retry-After` estimate).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use http::Response;

use super::body::{BoxBody, ResponseBody};
use super::estimate::HoldEstimate;
use super::key::KeyError;
use super::policy::{OnLost, Release};
use super::response::{REJECTION_TARGET, Rejection};
use super::routes::{RouteState, Routes};
use super::sharing::Sharing;
use crate::redlock::{LockError, LockOptions, Redlock};

pub(crate) type RejectFn = dyn Fn(&Rejection) -> Response<BoxBody> + Send + Sync + 'static;

/// Settings shared by a layer's services and their futures.
#[derive(Clone)]
pub(crate) struct Settings {
    pub(crate) redlock: Redlock,
    pub(crate) options: LockOptions,
    pub(crate) on_lost: OnLost,
    pub(crate) release: Release,
    pub(crate) hold_body: bool,
    /// Exclusive, read/write by method, or permits.
    pub(crate) sharing: Sharing,
    pub(crate) on_rejection: Option<Arc<RejectFn>>,
    /// Set once the self-contention of nested layers on one key was logged.
    pub(crate) nesting_logged: Arc<AtomicBool>,
    /// Each route's metrics label and hold estimate.
    pub(crate) routes: Arc<Routes>,
}

impl Settings {
    pub(crate) fn new(redlock: Redlock) -> Self {
        Settings {
            redlock,
            options: LockOptions::new().no_retry(),
            on_lost: OnLost::default(),
            release: Release::default(),
            hold_body: false,
            sharing: Sharing::default(),
            on_rejection: None,
            nesting_logged: Arc::default(),
            routes: Arc::default(),
        }
    }

    /// The options of one request's acquisition on `route`: the layer's, labelled by the
    /// matched route unless a label was set, and without the holder's `PTTL` lookup once
    /// the route's hold estimate can answer a `423` instead.
    pub(crate) fn request_options(&self, route: &RouteState) -> LockOptions {
        let mut options = self.options.clone();
        if options.label.is_none() {
            options.label.clone_from(&route.label);
        }
        options.skip_holder_ttl(route.holds.get().is_some())
    }

    /// `error` with a contended `retry_after` lowered to `holds`' estimate, if there is one.
    pub(crate) fn estimated(error: LockError, holds: &HoldEstimate) -> LockError {
        match (error, holds.get()) {
            (LockError::Contended { retry_after }, Some(typical)) => LockError::Contended {
                retry_after: retry_after.min(typical).max(Duration::from_millis(1)),
            },
            (error, _) => error,
        }
    }

    /// The response for `rejection`, custom or default.
    pub(crate) fn reject<B>(&self, rejection: &Rejection) -> Response<ResponseBody<B>> {
        tracing::trace!(
            target: REJECTION_TARGET,
            status = rejection.status().as_u16(),
            %rejection,
            "Redlock rejected a request"
        );
        match &self.on_rejection {
            Some(respond) => respond(rejection).map(ResponseBody::boxed),
            None => rejection.to_response().map(ResponseBody::full),
        }
    }

    /// The error for a request whose key an outer layer of the same request already holds:
    /// the inner layer would wait for the outer one forever. Logged once per layer.
    pub(crate) fn nested_on_same_key(&self) -> KeyError {
        const WHY: &str = "two RedlockLayers of one request lock the same key: the inner one \
                           would wait for the outer one forever; remove one of them or give \
                           them different keys";
        if !self.nesting_logged.swap(true, Ordering::Relaxed) {
            tracing::error!("{WHY}");
        }
        KeyError::misconfigured(WHY)
    }
}

/// `later` over `base`: each option `later` sets replaces `base`'s, the others stay.
pub(crate) fn merge(base: LockOptions, later: LockOptions) -> LockOptions {
    // Destructured so that a new option cannot be forgotten here.
    let LockOptions {
        ttl,
        retry,
        auto_extend,
        max_hold,
        fencing,
        label,
        skip_holder_ttl,
    } = later;
    LockOptions {
        ttl: ttl.or(base.ttl),
        retry: retry.or(base.retry),
        auto_extend: auto_extend.or(base.auto_extend),
        max_hold: max_hold.or(base.max_hold),
        fencing: fencing.or(base.fencing),
        label: label.or(base.label),
        skip_holder_ttl: skip_holder_ttl || base.skip_holder_ttl,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::redlock::RetryPolicy;

    #[test]
    fn merge_overrides_only_what_is_set() {
        let base = LockOptions::new()
            .no_retry()
            .ttl(Duration::from_secs(5))
            .label("pay");
        let merged = merge(base, LockOptions::new().max_hold(Duration::from_secs(60)));
        assert_eq!(
            merged,
            LockOptions::new()
                .no_retry()
                .ttl(Duration::from_secs(5))
                .label("pay")
                .max_hold(Duration::from_secs(60))
        );
        let merged = merge(
            merged,
            LockOptions::new()
                .ttl(Duration::from_secs(1))
                .retry(RetryPolicy::until(Duration::from_secs(2))),
        );
        assert_eq!(merged.ttl, Some(Duration::from_secs(1)));
        assert_eq!(
            merged.retry,
            Some(RetryPolicy::until(Duration::from_secs(2)))
        );
        assert_eq!(merged.label.as_deref(), Some("pay"));
        assert_eq!(merged.max_hold, Some(Duration::from_secs(60)));
    }
}
