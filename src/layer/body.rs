//! [`ResponseBody`]: the inner service's body, or a rejection's body.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use super::layer::Release;
use crate::redlock::{HeldLock, LockError};

/// The error type of [`ResponseBody`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

pub(crate) type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

pub(crate) type BoxBody = Pin<Box<dyn Body<Data = Bytes, Error = BoxError> + Send + 'static>>;

/// Boxes a body, mapping its error into a [`BoxError`].
pub(crate) fn box_body<C>(body: C) -> BoxBody
where
    C: Body<Data = Bytes> + Send + 'static,
    C::Error: Into<BoxError>,
{
    Box::pin(MapErr { body })
}

pin_project! {
    /// The response body of a [`RedlockService`](super::RedlockService).
    ///
    /// With [`hold_until_body_end`](super::RedlockLayer::hold_until_body_end) it holds the
    /// lease until the inner body has ended (then releases it before signalling the end) or
    /// is dropped (then releases it in the background).
    pub struct ResponseBody<B> {
        #[pin]
        kind: Kind<B>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<B> {
        Inner { #[pin] body: B, guard: Option<BodyGuard> },
        Full { data: Option<Bytes> },
        Boxed { body: BoxBody },
    }
}

impl<B> ResponseBody<B> {
    pub(crate) fn inner(body: B) -> Self {
        ResponseBody {
            kind: Kind::Inner { body, guard: None },
        }
    }

    pub(crate) fn guarded(body: B, guard: BodyGuard) -> Self {
        ResponseBody {
            kind: Kind::Inner {
                body,
                guard: Some(guard),
            },
        }
    }

    pub(crate) fn full(data: impl Into<Bytes>) -> Self {
        let data: Bytes = data.into();
        ResponseBody {
            kind: Kind::Full {
                data: (!data.is_empty()).then_some(data),
            },
        }
    }

    pub(crate) fn boxed(body: BoxBody) -> Self {
        ResponseBody {
            kind: Kind::Boxed { body },
        }
    }
}

impl<B> fmt::Debug for ResponseBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &self.kind {
            Kind::Inner { guard, .. } if guard.is_some() => "inner, holding the lease",
            Kind::Inner { .. } => "inner",
            Kind::Full { .. } | Kind::Boxed { .. } => "rejection",
        };
        f.debug_tuple("ResponseBody").field(&kind).finish()
    }
}

impl<B> Body for ResponseBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.project().kind.project() {
            KindProj::Full { data } => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            KindProj::Boxed { body } => body.as_mut().poll_frame(cx),
            KindProj::Inner { body, guard } => {
                let Some(held) = guard else {
                    return body.poll_frame(cx).map_err(Into::into);
                };
                if let Some(release) = &mut held.releasing {
                    // The body has ended: finish the release, then report the end.
                    ready!(release.as_mut().poll(cx));
                    *guard = None;
                    return Poll::Ready(None);
                }
                if let Some(lost) = &mut held.lost
                    && lost.as_mut().poll(cx).is_ready()
                {
                    tracing::warn!("Redlock lease lost while streaming the response: aborting");
                    // Dropping the lock releases whatever is left in the background.
                    *guard = None;
                    return Poll::Ready(Some(Err(LockError::Lost.into())));
                }
                match ready!(body.poll_frame(cx)) {
                    Some(Ok(frame)) => Poll::Ready(Some(Ok(frame))),
                    Some(Err(error)) => {
                        *guard = None;
                        Poll::Ready(Some(Err(error.into())))
                    }
                    None => {
                        if held.start_release() {
                            let release = held.releasing.as_mut().expect("just started");
                            ready!(release.as_mut().poll(cx));
                        }
                        *guard = None;
                        Poll::Ready(None)
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Inner { body, guard } => guard.is_none() && body.is_end_stream(),
            Kind::Full { data } => data.is_none(),
            Kind::Boxed { body } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Inner { body, .. } => body.size_hint(),
            Kind::Full { data } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
            Kind::Boxed { body } => body.size_hint(),
        }
    }
}

/// Keeps the lease while the body streams.
pub(crate) struct BodyGuard {
    lock: Option<HeldLock>,
    lost: Option<BoxFuture<()>>,
    release: Release,
    releasing: Option<BoxFuture<()>>,
}

impl BodyGuard {
    pub(crate) fn new(lock: HeldLock, lost: Option<BoxFuture<()>>, release: Release) -> Self {
        BodyGuard {
            lock: Some(lock),
            lost,
            release,
            releasing: None,
        }
    }

    /// Starts the release; `true` when it must be awaited.
    fn start_release(&mut self) -> bool {
        let Some(lock) = self.lock.take() else {
            return false;
        };
        match self.release {
            Release::BeforeResponse => {
                self.releasing = Some(Box::pin(release(lock)));
                true
            }
            Release::InBackground => {
                release_in_background(lock);
                false
            }
        }
    }
}

/// Releases `lock`; a failure only means it will expire on its own.
pub(crate) async fn release(lock: HeldLock) {
    if let Err(error) = lock.release().await {
        tracing::debug!(%error, "Redlock release failed; the lease will expire on its own");
    }
}

/// Releases `lock` on a background task (or, outside a runtime, when it is dropped).
pub(crate) fn release_in_background(lock: HeldLock) {
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        runtime.spawn(release(lock));
    }
}

pin_project! {
    /// Maps a body's error into a [`BoxError`].
    struct MapErr<B> {
        #[pin]
        body: B,
    }
}

impl<B> Body for MapErr<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.project().body.poll_frame(cx).map_err(Into::into)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
