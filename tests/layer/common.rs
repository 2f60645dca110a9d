//! Helpers: nodes, servers, HTTP calls, bounded polling.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::routing::post;
use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use tower::ServiceExt;
use tower_redlock::layer::RedlockLayer;
use tower_redlock::testkit::{LocalCluster, eventually};
use tower_redlock::{LockError, Redlock};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Where a streaming handler leaves the sender of its body's chunks.
pub type ChunkSender = Arc<std::sync::Mutex<Option<tokio::sync::mpsc::Sender<Bytes>>>>;

/// `POST /export` streams whatever the test sends through the returned slot, under
/// `RedlockLayer` on a constant key with `hold_until_body_end(true)`.
pub fn streaming_export(redlock: &Redlock) -> (Router, ChunkSender) {
    let slot = ChunkSender::default();
    let s = slot.clone();
    let app = Router::new()
        .route(
            "/export",
            axum::routing::post(move || {
                let s = s.clone();
                async move {
                    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(4);
                    *s.lock().unwrap() = Some(tx);
                    let chunks = futures_util::stream::unfold(rx, |mut rx| async move {
                        let chunk = rx.recv().await?;
                        Some((Ok::<_, std::io::Error>(chunk), rx))
                    });
                    Body::from_stream(chunks)
                }
            }),
        )
        .layer(
            tower_redlock::layer::RedlockLayer::new(
                redlock.clone(),
                tower_redlock::layer::key::constant("export"),
            )
            .hold_until_body_end(true),
        );
    (app, slot)
}

/// Upper bound for anything that should happen "soon".
pub const LONG: Duration = Duration::from_secs(10);

/// Five local nodes and an engine on them.
pub struct Nodes {
    pub cluster: LocalCluster,
    pub redlock: Redlock,
}

pub async fn nodes(ttl: Duration) -> Nodes {
    let cluster = LocalCluster::start(5)
        .await
        .expect("start 5 redis-server nodes");
    let redlock = engine(&cluster.urls(), ttl).await;
    Nodes { cluster, redlock }
}

/// An engine on `urls`. The node timeout is a quarter of the ttl, at most 1 s: generous, so
/// that a loaded machine (CI, two cores) does not turn a slow answer into a `503`, and short
/// enough that the watchdog still extends in time.
pub async fn engine(urls: &[String], ttl: Duration) -> Redlock {
    Redlock::builder()
        .nodes(urls.iter().cloned())
        .ttl(ttl)
        .node_timeout((ttl / 4).min(Duration::from_secs(1)))
        .build()
        .await
        .expect("build Redlock")
}

/// A response, fully read.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

impl Reply {
    /// Reads `response` to its end.
    pub async fn from_response<B>(response: Response<B>) -> Reply
    where
        B: http_body::Body,
        B::Error: std::fmt::Debug,
    {
        Reply::read(response).await
    }

    async fn read<B>(response: Response<B>) -> Reply
    where
        B: http_body::Body,
        B::Error: std::fmt::Debug,
    {
        let (parts, body) = response.into_parts();
        let body = body.collect().await.expect("read body").to_bytes();
        Reply {
            status: parts.status,
            headers: parts.headers,
            body: String::from_utf8(body.to_vec()).expect("UTF-8 body"),
        }
    }

    /// `Retry-After` in seconds.
    pub fn retry_after(&self) -> Option<u64> {
        self.headers.get("retry-after")?.to_str().ok()?.parse().ok()
    }

    /// Checks a problem+json rejection and returns its document.
    pub fn problem(&self, status: u16) -> serde_json::Value {
        assert_eq!(self.status.as_u16(), status, "{self:?}");
        assert_eq!(
            self.headers
                .get("content-type")
                .map(|v| v.to_str().unwrap()),
            Some("application/problem+json"),
            "{self:?}"
        );
        let doc: serde_json::Value = serde_json::from_str(&self.body).expect("JSON body");
        assert_eq!(doc["status"], status, "{doc}");
        assert!(doc["type"].is_string() && doc["title"].is_string(), "{doc}");
        doc
    }
}

/// One request through `app` without a server.
pub async fn call(app: &Router, method: Method, uri: &str) -> Reply {
    let request = Request::builder()
        .method(method)
        .uri(uri)
        .body(Body::empty())
        .unwrap();
    let response = app.clone().oneshot(request).await.unwrap();
    Reply::read(response).await
}

/// A real HTTP server on `127.0.0.1:0`, aborted on drop.
pub struct Server {
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub async fn serve(app: Router) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    Server { addr, task }
}

/// Sends one request on a fresh connection; returns the response head and streaming body.
pub async fn send(
    addr: SocketAddr,
    method: Method,
    path: &str,
) -> Result<Response<Incoming>, BoxError> {
    let stream = TcpStream::connect(addr).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let request = Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr.to_string())
        .body(http_body_util::Empty::<Bytes>::new())?;
    Ok(sender.send_request(request).await?)
}

/// Sends one request on a fresh connection and reads the whole response.
pub async fn http(addr: SocketAddr, method: Method, path: &str) -> Reply {
    let response = tokio::time::timeout(LONG, send(addr, method, path))
        .await
        .expect("response in time")
        .expect("HTTP request");
    Reply::read(response).await
}

/// Polls `try_acquire(key)` until it succeeds (then releases), bounded by count and time.
pub async fn eventually_free(redlock: &Redlock, key: &str, within: Duration) -> bool {
    eventually(within, || async {
        match redlock.try_acquire(key).await {
            Ok(lock) => {
                lock.release().await.expect("release");
                true
            }
            Err(LockError::Contended { .. }) | Err(LockError::Unavailable { .. }) => false,
            Err(other) => panic!("unexpected error: {other}"),
        }
    })
    .await
}

/// `true` if `key` is held by someone else right now.
pub async fn is_held(redlock: &Redlock, key: &str) -> bool {
    match redlock.try_acquire(key).await {
        Ok(lock) => {
            lock.release().await.expect("release");
            false
        }
        Err(LockError::Contended { .. }) => true,
        Err(other) => panic!("unexpected error: {other}"),
    }
}

/// A gate handlers wait at until the test opens it.
#[derive(Clone)]
pub struct Gate(Arc<watch::Sender<bool>>);

impl Gate {
    pub fn new() -> Self {
        Gate(Arc::new(watch::Sender::new(false)))
    }

    pub fn open(&self) {
        self.0.send_replace(true);
    }

    pub async fn wait(&self) {
        let mut rx = self.0.subscribe();
        let _ = rx.wait_for(|open| *open).await;
    }
}

/// A signal a handler sends when it has started.
#[derive(Clone, Default)]
pub struct Signal(Arc<Notify>);

impl Signal {
    pub fn notify(&self) {
        self.0.notify_one();
    }

    pub async fn wait(&self) {
        tokio::time::timeout(LONG, self.0.notified())
            .await
            .expect("signal in time");
    }
}

/// Sets a flag when dropped: tells whether a handler future was dropped.
pub struct DropFlag(pub Option<tokio::sync::oneshot::Sender<()>>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        if let Some(tx) = self.0.take() {
            let _ = tx.send(());
        }
    }
}

/// Awaits `future` or panics after [`LONG`].
pub async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(LONG, future)
        .await
        .unwrap_or_else(|_| panic!("timed out: {what}"))
}

/// One request through `app` without a server.
pub async fn call_request(app: &Router, request: Request<Body>) -> Reply {
    let response = app.clone().oneshot(request).await.unwrap();
    Reply::read(response).await
}

/// A handler that signals, then never finishes; reports when its future is dropped.
pub fn hanging_app(
    layer: RedlockLayer<tower_redlock::layer::key::Constant>,
) -> (Router, Signal, tokio::sync::oneshot::Receiver<()>) {
    let entered = Signal::default();
    let (dropped_tx, dropped_rx) = tokio::sync::oneshot::channel();
    let slot = Arc::new(std::sync::Mutex::new(Some(dropped_tx)));
    let e = entered.clone();
    let app = Router::new()
        .route(
            "/hang",
            post(move || {
                let (e, slot) = (e.clone(), slot.clone());
                async move {
                    let _flag = DropFlag(slot.lock().unwrap().take());
                    e.notify();
                    std::future::pending::<()>().await;
                    "unreachable"
                }
            }),
        )
        .layer(layer);
    (app, entered, dropped_rx)
}
