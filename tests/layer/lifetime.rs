//! The layer's lease lasts exactly as long as the request, on every way hyper ends one —
//! fixed-length, chunked, trailers and empty bodies, HTTP/1 keep-alive and HTTP/2, a client
//! that goes away — whatever `HeldLock` clones the handler kept; and `OnLost::Cancel` never
//! accepts an answer given after the loss.

use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::routing::post;
use bytes::Bytes;
use http::{Method, StatusCode};
use http_body_util::BodyExt;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tower_redlock::layer::Release;
use tower_redlock::layer::{RedlockLayer, key};
use tower_redlock::{HeldLock, LockOptions, Redlock};

use crate::support::*;
use crate::wire::*;

/// How the layer is set up for a round of requests.
#[derive(Debug, Clone, Copy)]
struct Setup {
    hold_body: bool,
    release: Release,
}

const SETUPS: [Setup; 3] = [
    Setup {
        hold_body: false,
        release: Release::BeforeResponse,
    },
    Setup {
        hold_body: true,
        release: Release::BeforeResponse,
    },
    Setup {
        hold_body: true,
        release: Release::InBackground,
    },
];

fn lock_key(kind: BodyKind, setup: Setup) -> String {
    format!("{kind:?}-{}-{:?}", setup.hold_body, setup.release)
}

/// One route per body kind, each locked on its own key; handlers keep a clone of their
/// lease in `escaped`.
fn bodies_app(redlock: &Redlock, setup: Setup, escaped: &Escaped) -> Router {
    let mut app = Router::new();
    for kind in BodyKind::ALL {
        let escaped = escaped.clone();
        let layer = RedlockLayer::new(redlock.clone(), key::constant(lock_key(kind, setup)))
            .hold_until_body_end(setup.hold_body)
            .release(setup.release);
        let handler = post(move |lock: HeldLock| {
            let escaped = escaped.clone();
            async move {
                escaped.keep(lock);
                kind.response()
            }
        });
        app = app.route(kind.path(), handler.layer(layer));
    }
    app
}

/// Two requests per body kind and setup on one connection: each ends its lease for every
/// clone — before its last byte with `Release::BeforeResponse`, soon after otherwise.
async fn each_body_ends_the_lease(protocol: Protocol) {
    let n = patient_nodes().await;
    for setup in SETUPS {
        let escaped = Escaped::default();
        let server = serve(bodies_app(&n.redlock, setup, &escaped)).await;
        let mut connection = Connection::open(server.addr, protocol).await;
        for kind in BodyKind::ALL {
            let what = format!("{protocol:?}, {kind:?}, {setup:?}");
            for round in 0..2 {
                let response = within("the response head", connection.send(kind.path()))
                    .await
                    .unwrap_or_else(|e| panic!("{what}, round {round}: {e}"));
                let reply = read_to_end(response).await;
                assert_eq!(
                    (reply.status, reply.body.as_str()),
                    (kind.status(), kind.text()),
                    "{what}, round {round}: the lock was still held"
                );
                if kind == BodyKind::Trailers && protocol == Protocol::Http2 {
                    let trailers = reply.trailers.expect("trailers");
                    assert_eq!(trailers["grpc-status"], "0", "{what}");
                }
                match setup.release {
                    Release::BeforeResponse => escaped.assert_none_held(&what),
                    _ => escaped.all_ended(&what).await,
                }
            }
            assert!(!is_held(&n.redlock, &lock_key(kind, setup)).await, "{what}");
        }
        assert_eq!(escaped.count(), 2 * BodyKind::ALL.len());
    }
}

#[tokio::test]
async fn http1_keep_alive_every_body_kind_ends_the_lease() {
    each_body_ends_the_lease(Protocol::Http1).await;
}

#[tokio::test]
async fn http2_every_body_kind_ends_the_lease() {
    each_body_ends_the_lease(Protocol::Http2).await;
}

/// Polled by hand, without hyper: the frame after which hyper asks for nothing more — the
/// last data of a known length, the trailers — comes only once the release is done, while
/// the body is still alive.
#[tokio::test]
async fn the_last_frame_comes_after_the_release() {
    let n = patient_nodes().await;
    let setup = Setup {
        hold_body: true,
        release: Release::BeforeResponse,
    };
    let escaped = Escaped::default();
    let app = bodies_app(&n.redlock, setup, &escaped);
    for kind in [BodyKind::Fixed, BodyKind::Declared, BodyKind::Trailers] {
        let request = http::Request::post(kind.path())
            .body(Body::empty())
            .unwrap();
        let response = tower::ServiceExt::oneshot(app.clone(), request)
            .await
            .unwrap();
        let mut body = response.into_body();
        let mut data = Vec::new();
        for _ in 0..10 {
            let frame = within("a frame", body.frame()).await.unwrap().unwrap();
            let Ok(chunk) = frame.into_data() else {
                break; // the trailers
            };
            data.extend_from_slice(&chunk);
            if kind != BodyKind::Trailers && data == kind.text().as_bytes() {
                break;
            }
        }
        assert_eq!(String::from_utf8_lossy(&data), kind.text(), "{kind:?}");
        escaped.assert_none_held(&format!("{kind:?}"));
        assert!(
            !is_held(&n.redlock, &lock_key(kind, setup)).await,
            "{kind:?}"
        );
        drop(body);
    }
}

#[tokio::test]
async fn client_disconnect_ends_the_lease_for_every_clone() {
    let n = patient_nodes().await;
    let (entered, escaped) = (Signal::default(), Escaped::default());
    let (e, esc) = (entered.clone(), escaped.clone());
    let app = Router::new().route(
        "/hang",
        post(move |lock: HeldLock| {
            let (e, esc) = (e.clone(), esc.clone());
            async move {
                // As a handler that spawned work with a clone would.
                esc.keep(lock);
                e.notify();
                std::future::pending::<()>().await;
                "unreachable"
            }
        })
        .layer(RedlockLayer::new(n.redlock.clone(), key::constant("hang"))),
    );
    let server = serve(app).await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream
        .write_all(b"POST /hang HTTP/1.1\r\nhost: test\r\ncontent-length: 0\r\n\r\n")
        .await
        .unwrap();
    entered.wait().await;
    assert!(is_held(&n.redlock, "hang").await);
    drop(stream);

    escaped.all_ended("the escaped clone to see the end").await;
    assert!(!is_held(&n.redlock, "hang").await);
}

#[tokio::test]
async fn client_leaving_mid_body_ends_the_lease_for_every_clone() {
    let n = patient_nodes().await;
    let escaped = Escaped::default();
    let esc = escaped.clone();
    let app = Router::new().route(
        "/export",
        post(move |lock: HeldLock| {
            let esc = esc.clone();
            async move {
                esc.keep(lock);
                let first = futures_util::stream::once(async {
                    Ok::<_, std::io::Error>(Bytes::from_static(b"first"))
                });
                // Then nothing more, ever.
                let never = futures_util::stream::pending();
                Body::from_stream(futures_util::StreamExt::chain(first, never))
            }
        })
        .layer(
            RedlockLayer::new(n.redlock.clone(), key::constant("export")).hold_until_body_end(true),
        ),
    );
    let server = serve(app).await;
    let mut connection = Connection::open(server.addr, Protocol::Http1).await;
    let response = within("the response head", connection.send("/export"))
        .await
        .unwrap();
    let mut body = response.into_body();
    let frame = within("a chunk", body.frame()).await.unwrap().unwrap();
    assert_eq!(frame.into_data().unwrap(), "first");
    assert!(is_held(&n.redlock, "export").await);
    drop((body, connection));

    escaped.all_ended("the escaped clone to see the end").await;
    assert!(!is_held(&n.redlock, "export").await);
}

#[tokio::test]
async fn cancel_rejects_an_answer_given_after_the_loss() {
    let n = patient_nodes().await;
    // Never extended (max_hold), the lease runs out after its ttl while the handler waits.
    let options = LockOptions::new()
        .no_retry()
        .ttl(Duration::from_secs(2))
        .max_hold(Duration::from_millis(1));
    let app = Router::new().route(
        "/job",
        post(|lock: HeldLock| async move {
            within("the loss", lock.lost()).await;
            "finished after the loss"
        })
        .layer(RedlockLayer::new(n.redlock.clone(), key::constant("job")).lock_options(options)),
    );
    let reply = call(&app, Method::POST, "/job").await;
    let doc = reply.problem(503);
    assert_eq!(doc["type"], "urn:tower-redlock:problem:lock-lost");
}

#[tokio::test]
async fn escaped_clone_on_the_plain_path_sees_the_end() {
    let n = patient_nodes().await;
    let escaped = Escaped::default();
    let esc = escaped.clone();
    let app = Router::new().route(
        "/plain",
        post(move |lock: HeldLock| {
            let esc = esc.clone();
            async move {
                esc.keep(lock);
                "done"
            }
        })
        .layer(RedlockLayer::new(n.redlock.clone(), key::constant("plain"))),
    );
    let reply = call(&app, Method::POST, "/plain").await;
    assert_eq!(reply.status, StatusCode::OK);
    escaped.assert_none_held("released before the response");
}
