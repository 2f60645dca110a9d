//! Helpers for the lease-lifetime tests: HTTP/1 keep-alive and HTTP/2 connections, response
//! bodies of every kind hyper treats differently, and `HeldLock` clones that escape their
//! request.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use futures_util::stream;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::{BodyExt, Empty, StreamBody};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;
use tower_redlock::testkit::LocalCluster;
use tower_redlock::{HeldLock, Redlock};

use crate::apps::Nodes;
use crate::support::{BoxError, within};

/// `HeldLock` clones that handlers keep past their request (as a spawned task, an
/// `on_upgrade` closure or shared state would).
#[derive(Clone, Default)]
pub struct Escaped(Arc<Mutex<Vec<HeldLock>>>);

impl Escaped {
    pub fn keep(&self, lock: HeldLock) {
        self.0.lock().unwrap().push(lock);
    }

    pub fn count(&self) -> usize {
        self.0.lock().unwrap().len()
    }

    /// Asserts that no kept clone holds its lease any more, right now.
    pub fn assert_none_held(&self, what: &str) {
        for lock in self.0.lock().unwrap().iter() {
            assert!(
                !lock.is_held(),
                "{what}: an escaped clone still holds its lease"
            );
        }
    }

    /// Waits until every kept clone saw its lease end (`lost()` resolved).
    pub async fn all_ended(&self, what: &str) {
        let ended: Vec<_> = self.0.lock().unwrap().iter().map(HeldLock::lost).collect();
        for lost in ended {
            within(what, lost).await;
        }
        self.assert_none_held(what);
    }
}

/// The response bodies hyper ends differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    /// A `String`: exact size hint, hyper never polls for the end.
    Fixed,
    /// A stream: chunked in HTTP/1, ends with `None`.
    Chunked,
    /// A stream with a `Content-Length` header: HTTP/1 stops after that many bytes.
    Declared,
    /// Data then trailers: hyper never polls after the trailers (gRPC's shape).
    Trailers,
    /// `204 No Content`: hyper never polls the body.
    NoContent,
}

impl BodyKind {
    pub const ALL: [BodyKind; 5] = [
        BodyKind::Fixed,
        BodyKind::Chunked,
        BodyKind::Declared,
        BodyKind::Trailers,
        BodyKind::NoContent,
    ];

    /// The route serving this kind.
    pub fn path(self) -> &'static str {
        match self {
            BodyKind::Fixed => "/fixed",
            BodyKind::Chunked => "/chunked",
            BodyKind::Declared => "/declared",
            BodyKind::Trailers => "/trailers",
            BodyKind::NoContent => "/no-content",
        }
    }

    pub fn status(self) -> StatusCode {
        match self {
            BodyKind::NoContent => StatusCode::NO_CONTENT,
            _ => StatusCode::OK,
        }
    }

    /// The body a client reads.
    pub fn text(self) -> &'static str {
        match self {
            BodyKind::Fixed => "fixed body",
            BodyKind::Chunked | BodyKind::Declared => "first,last",
            BodyKind::Trailers => "data",
            BodyKind::NoContent => "",
        }
    }

    /// The response a handler gives.
    pub fn response(self) -> Response<Body> {
        let body = match self {
            BodyKind::Fixed => Body::from(self.text()),
            BodyKind::Chunked | BodyKind::Declared => Body::from_stream(stream::iter([
                Ok::<_, std::io::Error>(Bytes::from_static(b"first,")),
                Ok(Bytes::from_static(b"last")),
            ])),
            BodyKind::Trailers => {
                let mut trailers = HeaderMap::new();
                trailers.insert("grpc-status", HeaderValue::from_static("0"));
                Body::new(StreamBody::new(stream::iter([
                    Ok::<_, std::io::Error>(Frame::data(Bytes::from_static(b"data"))),
                    Ok(Frame::trailers(trailers)),
                ])))
            }
            BodyKind::NoContent => Body::empty(),
        };
        let mut response = Response::new(body);
        *response.status_mut() = self.status();
        let headers = response.headers_mut();
        match self {
            BodyKind::Trailers => {
                headers.insert("trailer", HeaderValue::from_static("grpc-status"));
            }
            BodyKind::Declared => {
                headers.insert("content-length", HeaderValue::from(self.text().len()));
            }
            _ => {}
        }
        response
    }
}

/// HTTP/1.1 (one kept-alive connection) or HTTP/2 (prior knowledge).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Http1,
    Http2,
}

/// One client connection; requests go one after the other on it.
pub enum Connection {
    Http1(hyper::client::conn::http1::SendRequest<Empty<Bytes>>),
    Http2(hyper::client::conn::http2::SendRequest<Empty<Bytes>>),
}

impl Connection {
    pub async fn open(addr: SocketAddr, protocol: Protocol) -> Connection {
        let io = TokioIo::new(TcpStream::connect(addr).await.expect("connect"));
        match protocol {
            Protocol::Http1 => {
                let (sender, conn) = hyper::client::conn::http1::handshake(io)
                    .await
                    .expect("HTTP/1 handshake");
                tokio::spawn(conn);
                Connection::Http1(sender)
            }
            Protocol::Http2 => {
                let (sender, conn) =
                    hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                        .await
                        .expect("HTTP/2 handshake");
                tokio::spawn(conn);
                Connection::Http2(sender)
            }
        }
    }

    /// Sends `POST path` and returns the response head and streaming body.
    pub async fn send(&mut self, path: &str) -> Result<Response<Incoming>, BoxError> {
        let request = Request::builder()
            .method(Method::POST)
            .header("te", "trailers");
        Ok(match self {
            Connection::Http1(sender) => {
                sender.ready().await?;
                let request = request.uri(path).header("host", "localhost");
                sender.send_request(request.body(Empty::new())?).await?
            }
            Connection::Http2(sender) => {
                sender.ready().await?;
                let request = request.uri(format!("http://localhost{path}"));
                sender.send_request(request.body(Empty::new())?).await?
            }
        })
    }
}

/// A response read to its end: status, body text, whether trailers came.
#[derive(Debug)]
pub struct ReadToEnd {
    pub status: StatusCode,
    pub body: String,
    pub trailers: Option<HeaderMap>,
}

pub async fn read_to_end(response: Response<Incoming>) -> ReadToEnd {
    let status = response.status();
    let collected = within("the body", response.into_body().collect())
        .await
        .expect("read the body");
    let trailers = collected.trailers().cloned();
    ReadToEnd {
        status,
        body: String::from_utf8(collected.to_bytes().to_vec()).expect("UTF-8 body"),
        trailers,
    }
}

/// Five local nodes and an engine with a generous node timeout and a 30 s ttl: these tests
/// check when a lease ends, not how fast nodes answer, so a loaded machine must not turn a
/// check into a `503`, and only a release (never expiry) frees a key within their bounds.
pub async fn patient_nodes() -> Nodes {
    let cluster = LocalCluster::start(5)
        .await
        .expect("start 5 redis-server nodes");
    let redlock = Redlock::builder()
        .nodes(cluster.urls())
        .ttl(Duration::from_secs(30))
        .node_timeout(Duration::from_secs(1))
        .build()
        .await
        .expect("build Redlock");
    Nodes { cluster, redlock }
}
