//! Upgrades through hyper: on `101 Switching Protocols` (a WebSocket) and a `CONNECT`'s `2xx`
//! hyper never polls a body, so the layer's lease covers the handshake only — it ends when
//! the response is produced, also for the clone the upgraded task keeps.

use axum::Router;
use axum::extract::Request;
use axum::extract::ws::{Message, WebSocketUpgrade};
use axum::routing::get;
use futures_util::StreamExt;
use http::StatusCode;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tower_redlock::layer::{RedlockLayer, key};
use tower_redlock::{HeldLock, Redlock};

use crate::support::*;
use crate::wire::patient_nodes;

/// `GET /ws` under the layer: the upgraded socket first says whether the clone of the
/// handshake's lease it kept is still held.
fn websocket_app(redlock: &Redlock, lock_key: &str, hold_body: bool) -> Router {
    let layer =
        RedlockLayer::new(redlock.clone(), key::constant(lock_key)).hold_until_body_end(hold_body);
    Router::new().route(
        "/ws",
        get(|lock: HeldLock, ws: WebSocketUpgrade| async move {
            ws.on_upgrade(move |mut socket| async move {
                let report = format!("held={}", lock.is_held());
                if socket.send(Message::Text(report.into())).await.is_ok() {
                    // Until the client closes.
                    while let Some(Ok(message)) = socket.recv().await {
                        if matches!(message, Message::Close(_)) {
                            break;
                        }
                    }
                }
            })
        })
        .layer(layer),
    )
}

#[tokio::test]
async fn websocket_lease_ends_with_the_101() {
    let n = patient_nodes().await;
    for hold_body in [false, true] {
        let lock_key = format!("ws-{hold_body}");
        let server = serve(websocket_app(&n.redlock, &lock_key, hold_body)).await;
        let what = format!("hold_until_body_end({hold_body})");
        let mut sockets = Vec::new();
        // The second handshake finds the key free although the first socket is open.
        for _ in 0..2 {
            let stream = TcpStream::connect(server.addr).await.unwrap();
            let (mut socket, response) = within(
                "the handshake",
                tokio_tungstenite::client_async("ws://localhost/ws", stream),
            )
            .await
            .unwrap_or_else(|e| panic!("{what}: {e}"));
            assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS, "{what}");
            // Released before the 101 was produced.
            assert!(!is_held(&n.redlock, &lock_key).await, "{what}");
            let report = within("the report", socket.next()).await.unwrap().unwrap();
            assert_eq!(report.into_text().unwrap().as_str(), "held=false", "{what}");
            sockets.push(socket);
        }
        for mut socket in sockets {
            within("the close", socket.close(None)).await.unwrap();
        }
    }
}

#[tokio::test]
async fn connect_tunnel_lease_ends_with_the_2xx() {
    let n = patient_nodes().await;
    let app = Router::new()
        .fallback(|lock: HeldLock, request: Request| async move {
            let upgrade = hyper::upgrade::on(request);
            tokio::spawn(async move {
                if let Ok(upgraded) = upgrade.await {
                    let mut io = TokioIo::new(upgraded);
                    let report = format!("held={};", lock.is_held());
                    let _ = io.write_all(report.as_bytes()).await;
                }
            });
            StatusCode::OK
        })
        .layer(
            RedlockLayer::new(n.redlock.clone(), key::constant("tunnel")).hold_until_body_end(true),
        );
    let server = serve(app).await;

    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream
        .write_all(b"CONNECT example.com:443 HTTP/1.1\r\nhost: example.com:443\r\n\r\n")
        .await
        .unwrap();
    let mut received = Vec::new();
    for _ in 0..100 {
        if received.ends_with(b";") {
            break;
        }
        let mut chunk = [0u8; 512];
        let read = within("the tunnel", stream.read(&mut chunk)).await.unwrap();
        assert!(
            read > 0,
            "closed early: {}",
            String::from_utf8_lossy(&received)
        );
        received.extend_from_slice(&chunk[..read]);
    }
    let text = String::from_utf8(received).unwrap();
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.ends_with("\r\n\r\nheld=false;"), "{text}");
    assert!(!is_held(&n.redlock, "tunnel").await);
}
