//! [`ResponseFuture`]: acquire, run the inner service, release.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use http::{Request, Response};
use pin_project_lite::pin_project;
use tower_service::Service;

use super::body::{BodyGuard, BoxFuture, ResponseBody, release, release_in_background};
use super::key::KeyError;
use super::layer::{OnLost, Release, Settings};
use super::response::Rejection;
use crate::redlock::{HeldLock, LockError};

pin_project! {
    /// Response future of [`RedlockService`](super::RedlockService).
    ///
    /// Dropping it (e.g. the client went away) drops the inner future and releases the
    /// lease in the background.
    pub struct ResponseFuture<S, ReqBody>
    where
        S: Service<Request<ReqBody>>,
    {
        #[pin]
        state: State<S, ReqBody>,
        settings: Arc<Settings>,
    }
}

/// The lease while the inner future runs.
struct Lease {
    lock: HeldLock,
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
        let state = match key {
            Err(error) => State::Rejected {
                rejection: Some(Rejection::Key(error)),
            },
            Ok(None) => State::Running {
                future: inner.call(request),
                lease: None,
            },
            Ok(Some(key)) => State::Acquiring {
                acquire: Box::pin(settings.redlock.acquire_with(key, settings.options.clone())),
                call: Some((inner, request)),
            },
        };
        ResponseFuture { state, settings }
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
                StateProj::Acquiring { acquire, call } => {
                    let acquired = ready!(acquire.as_mut().poll(cx));
                    let (mut inner, mut request) = call.take().expect("polled after completion");
                    match acquired {
                        Ok(lock) => {
                            request.extensions_mut().insert(lock.clone());
                            let lost = (this.settings.on_lost == OnLost::Cancel)
                                .then(|| Box::pin(lock.lost_only()) as BoxFuture<()>);
                            let future = inner.call(request);
                            this.state.set(State::Running {
                                future,
                                lease: Some(Lease { lock, lost }),
                            });
                        }
                        Err(error) => {
                            this.state.set(State::Done);
                            return Poll::Ready(Ok(this.settings.reject(&Rejection::Lock(error))));
                        }
                    }
                }
                StateProj::Running { future, lease } => {
                    if let Poll::Ready(output) = future.poll(cx) {
                        let Some(Lease { lock, lost }) = lease.take() else {
                            this.state.set(State::Done);
                            return Poll::Ready(output.map(|r| r.map(ResponseBody::inner)));
                        };
                        let settings = &**this.settings;
                        match output {
                            Ok(response) if settings.hold_body => {
                                this.state.set(State::Done);
                                let guard = BodyGuard::new(lock, lost, settings.release);
                                return Poll::Ready(Ok(
                                    response.map(|body| ResponseBody::guarded(body, guard))
                                ));
                            }
                            output => match settings.release {
                                Release::BeforeResponse => this.state.set(State::Releasing {
                                    release: Box::pin(release(lock)),
                                    output: Some(output),
                                }),
                                Release::InBackground => {
                                    release_in_background(lock);
                                    this.state.set(State::Done);
                                    return Poll::Ready(output.map(|r| r.map(ResponseBody::inner)));
                                }
                            },
                        }
                        continue;
                    }
                    if let Some(Lease {
                        lost: Some(lost), ..
                    }) = lease
                        && lost.as_mut().poll(cx).is_ready()
                    {
                        tracing::warn!("Redlock lease lost while the request ran: cancelling it");
                        // Drops the inner future and the lock (released in the background).
                        this.state.set(State::Done);
                        return Poll::Ready(Ok(this
                            .settings
                            .reject(&Rejection::Lock(LockError::Lost))));
                    }
                    return Poll::Pending;
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
