//! [`ResponseBody`]: the inner service's body, or a rejection's body.

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::header::CONTENT_LENGTH;
use http::{Method, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use super::lease::{BoxFuture, RequestLease};
use super::policy::Release;
use crate::redlock::LockError;

/// The error type of [`ResponseBody`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

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
    /// lease until the inner body's last frame (then releases it before passing that frame
    /// on) or until it is dropped (then releases it in the background).
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
            KindProj::Inner { mut body, guard } => {
                let Some(held) = guard else {
                    return body.poll_frame(cx).map_err(Into::into);
                };
                if held.ending.is_none() {
                    if let Some(lost) = &mut held.lost
                        && lost.as_mut().poll(cx).is_ready()
                    {
                        tracing::trace!(
                            target: super::response::REJECTION_TARGET,
                            "Redlock lease lost while streaming the response: aborting"
                        );
                        // Dropping the guard releases whatever is left in the background.
                        *guard = None;
                        return Poll::Ready(Some(Err(LockError::Lost.into())));
                    }
                    match ready!(body.as_mut().poll_frame(cx)) {
                        Some(Ok(frame)) => {
                            if !held.is_last(&frame, body.is_end_stream()) {
                                return Poll::Ready(Some(Ok(frame)));
                            }
                            held.start_ending(Some(frame));
                        }
                        Some(Err(error)) => {
                            *guard = None;
                            return Poll::Ready(Some(Err(error.into())));
                        }
                        None => held.start_ending(None),
                    }
                }
                let last = ready!(held.poll_ending(cx));
                *guard = None;
                Poll::Ready(last.map(Ok))
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

/// How much body a response will stream, as hyper sees it before sending the head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BodyLength {
    /// None: hyper never polls the body (a `HEAD` request, `1xx` — `101 Switching
    /// Protocols` included —, `204`, `304`, a `CONNECT`'s `2xx`, an empty body).
    Empty,
    /// Exactly this many bytes (size hint or `Content-Length`): hyper stops polling after
    /// the last one.
    Known(u64),
    /// Until the body ends (chunked, HTTP/2 streams).
    Unknown,
}

impl BodyLength {
    /// The body `response` to a `method` request will stream.
    pub(crate) fn of<B: Body>(method: &Method, response: &Response<B>) -> BodyLength {
        let status = response.status();
        let bodyless = method == Method::HEAD
            || (method == Method::CONNECT && status.is_success())
            || status.is_informational()
            || status == StatusCode::NO_CONTENT
            || status == StatusCode::NOT_MODIFIED;
        let body = response.body();
        if bodyless || body.is_end_stream() {
            return BodyLength::Empty;
        }
        let declared = || {
            let value = response.headers().get(CONTENT_LENGTH)?;
            value.to_str().ok()?.trim().parse::<u64>().ok()
        };
        match body.size_hint().exact().or_else(declared) {
            Some(0) => BodyLength::Empty,
            Some(length) => BodyLength::Known(length),
            None => BodyLength::Unknown,
        }
    }
}

/// Holds the request's lease while the body streams; ends it (for every clone) before
/// passing on the body's last frame — the last data frame of a known length or of a body
/// that reports its end, the trailers, or the end itself —, or when dropped.
pub(crate) struct BodyGuard {
    lease: RequestLease,
    lost: Option<BoxFuture<()>>,
    release: Release,
    /// Bytes left of a known length.
    remaining: Option<u64>,
    /// Set once the last frame came.
    ending: Option<Ending>,
}

/// The release under way after the body's last frame, and that frame.
struct Ending {
    /// `None` with [`Release::InBackground`].
    release: Option<BoxFuture<()>>,
    /// `None`: the end of the body.
    last: Option<Frame<Bytes>>,
}

impl BodyGuard {
    pub(crate) fn new(
        lease: RequestLease,
        lost: Option<BoxFuture<()>>,
        release: Release,
        length: BodyLength,
    ) -> Self {
        let remaining = match length {
            BodyLength::Known(length) => Some(length),
            BodyLength::Empty => Some(0),
            BodyLength::Unknown => None,
        };
        BodyGuard {
            lease,
            lost,
            release,
            remaining,
            ending: None,
        }
    }

    /// Whether `frame` is the last one hyper will ask for (`body_ended`: the body reports
    /// its end after it).
    fn is_last(&mut self, frame: &Frame<Bytes>, body_ended: bool) -> bool {
        match frame.data_ref() {
            Some(data) => {
                if let Some(remaining) = &mut self.remaining {
                    *remaining = remaining.saturating_sub(data.len() as u64);
                }
                body_ended || self.remaining == Some(0)
            }
            None => frame.is_trailers(),
        }
    }

    /// Ends the lease; `last` goes out once the release is done.
    fn start_ending(&mut self, last: Option<Frame<Bytes>>) {
        self.ending = Some(Ending {
            release: self.lease.end(self.release),
            last,
        });
    }

    /// Waits for the release started by [`start_ending`](Self::start_ending), then gives the
    /// last frame.
    fn poll_ending(&mut self, cx: &mut Context<'_>) -> Poll<Option<Frame<Bytes>>> {
        let ending = self.ending.as_mut().expect("the ending has started");
        if let Some(release) = &mut ending.release {
            ready!(release.as_mut().poll(cx));
        }
        Poll::Ready(ending.last.take())
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
