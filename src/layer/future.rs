//! [`ResponseFuture`]: acquire, run the inner service, release.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use http::{Method, Request, Response};
use http_body::Body;
use pin_project_lite::pin_project;
use tower_service::Service;

use super::body::{BodyGuard, BodyLength, ResponseBody};
use super::estimate::HoldEstimate;
use super::held;
use super::key::KeyError;
use super::lease::{BoxFuture, RequestLease};
use super::policy::OnLost;
use super::response::REJECTION_TARGET;
use super::response::Rejection;
use super::settings::Settings;
use crate::redlock::{HeldLock, LockError};

pin_project! {
    /// Response future of [`RedlockService`](super::RedlockService).
    ///
    /// Dropping it (e.g. the client went away) drops the inner future and releases the
    /// lease in the background, for every clone of the [`HeldLock`].
    pub struct ResponseFuture<S, ReqBody>
    where
        S: Service<Request<ReqBody>>,
    {
        #[pin]
        state: State<S, ReqBody>,
        settings: Arc<Settings>,
        // Tells which responses have a body hyper will poll.
        method: Method,
    }
}

/// The lease while the inner future runs.
struct Lease {
    lease: RequestLease,
    /// Resolves when the lease is lost; only with [`OnLost::Cancel`].
    lost: Option<BoxFuture<()>>,
}

pin_project! {
    #[project = StateProj]
    enum State<S, ReqBody>
    where
        S: Service<Request<ReqBody>>,
    {
        Rejected { rejection: Option<Rejection> },
        Acquiring {
            acquire: BoxFuture<Result<HeldLock, LockError>>,
            call: Option<(S, Request<ReqBody>)>,
            holds: Arc<HoldEstimate>,
        },
        Running { #[pin] future: S::Future, lease: Option<Lease> },
        Releasing {
            release: BoxFuture<()>,
            output: Option<Result<S::Response, S::Error>>,
        },
        Done,
    }
}

impl<S, ReqBody> ResponseFuture<S, ReqBody>
where
    S: Service<Request<ReqBody>>,
{
    pub(crate) fn new(
        key: Result<Option<String>, KeyError>,
        mut inner: S,
        request: Request<ReqBody>,
        settings: Arc<Settings>,
    ) -> Self {
        let method = request.method().clone();
        let state = match key {
            Err(error) => State::Rejected {
                rejection: Some(Rejection::Key(error)),
            },
            Ok(None) => State::Running {
                future: inner.call(request),
                lease: None,
            },
            Ok(Some(key)) => {
                let route = settings.routes.of(request.extensions());
                let options = settings.request_options(&route);
                let mode = settings.sharing.mode(&method);
                State::Acquiring {
                    acquire: Box::pin(settings.redlock.acquire_mode_with(key, mode, options)),
                    call: Some((inner, request)),
                    holds: route.holds,
                }
            }
        };
        ResponseFuture {
            state,
            settings,
            method,
        }
    }
}

impl<S, ReqBody> fmt::Debug for ResponseFuture<S, ReqBody>
where
    S: Service<Request<ReqBody>>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Rejected { .. } => "rejected",
            State::Acquiring { .. } => "acquiring",
            State::Running { .. } => "running",
            State::Releasing { .. } => "releasing",
            State::Done => "done",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish()
    }
}

type Output<B, E> = Result<Response<ResponseBody<B>>, E>;

impl<S, ReqBody, ResBody> Future for ResponseFuture<S, ReqBody>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ResBody: Body,
{
    type Output = Output<ResBody, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Rejected { rejection } => {
                    let rejection = rejection.take().expect("polled after completion");
                    this.state.set(State::Done);
                    return Poll::Ready(Ok(this.settings.reject(&rejection)));
                }
                StateProj::Acquiring {
                    acquire,
                    call,
                    holds,
                } => {
                    let acquired = ready!(acquire.as_mut().poll(cx));
                    let (mut inner, mut request) = call.take().expect("polled after completion");
                    let holds = holds.clone();
                    match acquired {
                        Ok(lock) => {
                            held::record(request.extensions_mut(), &lock);
                            let lost = (this.settings.on_lost == OnLost::Cancel)
                                .then(|| Box::pin(lock.lost_only()) as BoxFuture<()>);
                            let future = inner.call(request);
                            this.state.set(State::Running {
                                future,
                                lease: Some(Lease {
                                    lease: RequestLease::new(lock, holds),
                                    lost,
                                }),
                            });
                        }
                        Err(error) => {
                            let error = Settings::estimated(error, &holds);
                            let rejection =
                                Rejection::of(error, this.settings.sharing.mode(this.method));
                            this.state.set(State::Done);
                            return Poll::Ready(Ok(this.settings.reject(&rejection)));
                        }
                    }
                }
                StateProj::Running { future, lease } => {
                    // Loss first: the inner future's output is only accepted while the lease
                    // holds.
                    if let Some(Lease {
                        lost: Some(lost), ..
                    }) = lease
                        && lost.as_mut().poll(cx).is_ready()
                    {
                        return Poll::Ready(Ok(cancel(this.state, this.settings)));
                    }
                    let output = ready!(future.poll(cx));
                    let Some(Lease { mut lease, lost }) = lease.take() else {
                        this.state.set(State::Done);
                        return Poll::Ready(output.map(|r| r.map(ResponseBody::inner)));
                    };
                    let settings = &**this.settings;
                    if settings.on_lost == OnLost::Cancel && lease.is_lost() {
                        // Lost while the inner future finished (or its validity ran out
                        // before the watchdog noticed): its answer did not run locked.
                        return Poll::Ready(Ok(cancel(this.state, this.settings)));
                    }
                    if settings.hold_body
                        && let Ok(response) = &output
                    {
                        let length = BodyLength::of(this.method, response);
                        if length != BodyLength::Empty {
                            let guard = BodyGuard::new(lease, lost, settings.release, length);
                            this.state.set(State::Done);
                            return Poll::Ready(output.map(|response| {
                                response.map(|body| ResponseBody::guarded(body, guard))
                            }));
                        }
                    }
                    // The request ends with the response head (no body hyper will poll, e.g.
                    // `101 Switching Protocols`, when held until the body's end).
                    match lease.end(settings.release) {
                        Some(release) => this.state.set(State::Releasing {
                            release,
                            output: Some(output),
                        }),
                        None => {
                            this.state.set(State::Done);
                            return Poll::Ready(output.map(|r| r.map(ResponseBody::inner)));
                        }
                    }
                }
                StateProj::Releasing { release, output } => {
                    ready!(release.as_mut().poll(cx));
                    let output = output.take().expect("polled after completion");
                    this.state.set(State::Done);
                    return Poll::Ready(output.map(|r| r.map(ResponseBody::inner)));
                }
                StateProj::Done => panic!("ResponseFuture polled after completion"),
            }
        }
    }
}

/// Drops the inner future and the lease (released in the background) and answers `503`.
fn cancel<S, ReqBody, ResBody>(
    state: Pin<&mut State<S, ReqBody>>,
    settings: &Settings,
) -> Response<ResponseBody<ResBody>>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    tracing::trace!(target: REJECTION_TARGET, "Redlock lease lost while the request ran: cancelling it");
    let mut state = state;
    state.set(State::Done);
    settings.reject(&Rejection::Lock(LockError::Lost))
}
