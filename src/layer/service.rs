//! [`RedlockService`]: the middleware created by [`RedlockLayer`](super::RedlockLayer).

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use http_body::Body;
use tower_service::Service;

use super::body::ResponseBody;
use super::future::ResponseFuture;
use super::held;
use super::key::KeyExtractor;
use super::settings::Settings;

/// Runs each request under a distributed lock. Created by
/// [`RedlockLayer`](super::RedlockLayer); see there.
///
/// Its error type is the inner service's: lock failures are responses, not errors.
pub struct RedlockService<S, K> {
    inner: S,
    key: Arc<K>,
    settings: Arc<Settings>,
}

impl<S, K> RedlockService<S, K> {
    pub(crate) fn new(inner: S, key: Arc<K>, settings: Arc<Settings>) -> Self {
        RedlockService {
            inner,
            key,
            settings,
        }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Consumes `self`, returning the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: Clone, K> Clone for RedlockService<S, K> {
    fn clone(&self) -> Self {
        RedlockService {
            inner: self.inner.clone(),
            key: self.key.clone(),
            settings: self.settings.clone(),
        }
    }
}

impl<S: fmt::Debug, K> fmt::Debug for RedlockService<S, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedlockService")
            .field("inner", &self.inner)
            .field("key", &std::any::type_name::<K>())
            .finish_non_exhaustive()
    }
}

impl<S, K, ReqBody, ResBody> Service<Request<ReqBody>> for RedlockService<S, K>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone,
    ResBody: Body,
    K: KeyExtractor,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S, ReqBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        // The service that was polled ready is the one to call, maybe after the lock is
        // taken: keep it, leave a fresh clone in its place.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        let (parts, body) = request.into_parts();
        let key = self.key.extract(&parts).and_then(|key| match key {
            Some(key) if held::held_by_outer_layer(&parts.extensions, &key) => {
                Err(self.settings.nested_on_same_key())
            }
            key => Ok(key),
        });
        let request = Request::from_parts(parts, body);
        ResponseFuture::new(key, inner, request, self.settings.clone())
    }
}
