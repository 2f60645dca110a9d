//! A lock held for a WebSocket's whole life, with the engine.
//!
//! ```text
//! cargo run --example websocket --all-features
//! ```
//!
//! `GET /rooms/{id}/present` upgrades to a WebSocket: one presenter per room at a time, across
//! every instance of the service. The presenter's messages are acknowledged with the lease's
//! fencing token; sending `leave` releases the room (then `left` comes back), and so does
//! closing the socket. A second presenter for a busy room gets the close code `1013`
//! (*Try Again Later*), which browsers can read, unlike a `423` to the handshake.
//!
//! Why not [`RedlockLayer`](tower_redlock::layer::RedlockLayer) on this route: the layer's lease lasts
//! as long as the *request*, and for an upgrade the request is the handshake — it ends when
//! the `101 Switching Protocols` is produced, also for a `HeldLock` clone moved into the
//! `on_upgrade` closure. The socket lives on in a task axum spawns after the `101`; that task
//! takes its own lease with the engine (`redlock.try_acquire(..)`), keeps it (auto-extended)
//! while the socket is open, closes the socket if the lease is lost, and releases it when the
//! socket closes.
//!
//! Nodes come from `REDLOCK_NODES` (comma-separated `redis://` URLs); when it is unset, five
//! local `redis-server` processes are started (and stopped on exit). The server listens on
//! `127.0.0.1:3003`, or `HOST`/`PORT` (`PORT=0` picks a free port). With
//! `EXAMPLE_SELF_TEST=1` it opens sockets to itself, prints what it sees, and exits 0 when
//! it is as expected.

#[path = "common/mod.rs"]
mod common;
#[path = "common/server.rs"]
mod server;

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade, close_code};
use axum::extract::{Path, State};
use axum::response::Response;
use axum::routing::get;
use common::{BoxError, Nodes};
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message as ClientMessage;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tower_redlock::{HeldLock, LockError, Redlock};

/// What a presenter sends to give the room up.
const LEAVE: &str = "leave";
/// Bound on one step of the self-test.
const STEP_TIMEOUT: Duration = Duration::from_secs(10);

/// The handshake: nothing is locked yet; the socket's task takes the lease.
async fn present(
    ws: WebSocketUpgrade,
    Path(room): Path<u32>,
    State(redlock): State<Redlock>,
) -> Response {
    ws.on_upgrade(move |socket| session(socket, redlock, room))
}

/// One presenter's socket, under the room's lease from its first message to its close.
async fn session(mut socket: WebSocket, redlock: Redlock, room: u32) {
    let lock = match redlock.try_acquire(format!("room:{room}:presenter")).await {
        Ok(lock) => lock,
        Err(error) => {
            let reason = match error {
                LockError::Contended { .. } => "another presenter holds this room",
                _ => "the lock service is unavailable",
            };
            close(socket, close_code::AGAIN, reason).await;
            return;
        }
    };
    let token = lock.fencing_token();
    let hello = format!("presenting in room {room} (fencing token {token:?})");
    if socket.send(Message::Text(hello.into())).await.is_err() {
        release(lock).await;
        return;
    }
    let lost = lock.lost();
    tokio::pin!(lost);
    loop {
        tokio::select! {
            () = &mut lost => {
                // Someone else may present now: stop this one.
                tracing::warn!(room, "lease lost: closing the presenter's socket");
                close(socket, close_code::AGAIN, "the room's lock was lost").await;
                return;
            }
            message = socket.recv() => match message {
                Some(Ok(Message::Text(text))) if text.as_str() == LEAVE => {
                    // Released before saying so: the next presenter finds the room free.
                    release(lock).await;
                    let _ = socket.send(Message::Text("left".into())).await;
                    close(socket, close_code::NORMAL, "left").await;
                    return;
                }
                Some(Ok(Message::Text(text))) => {
                    // Pass `token` to whatever the presenter writes to, so it can refuse a
                    // stale presenter whose lease ran out.
                    let ack = format!("ack {:?} under fencing token {token:?}", text.as_str());
                    if socket.send(Message::Text(ack.into())).await.is_err() {
                        break;
                    }
                }
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
                Some(Ok(_)) => {}
            },
        }
    }
    release(lock).await;
}

/// Releases `lock` now. A failure is only logged: the lease then runs out on its own.
async fn release(lock: HeldLock) {
    if let Err(error) = lock.release().await {
        tracing::warn!("release failed, the lease will run out on its own: {error}");
    }
}

async fn close(mut socket: WebSocket, code: u16, reason: &'static str) {
    let frame = CloseFrame {
        code,
        reason: reason.into(),
    };
    let _ = socket.send(Message::Close(Some(frame))).await;
}

fn app(redlock: Redlock) -> Router {
    Router::new()
        .route("/rooms/{id}/present", get(present))
        .with_state(redlock)
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();

    let nodes = Nodes::from_env_or_local().await?;
    let redlock = nodes.builder()?.fencing(true).build().await?;

    let listener = server::listen(3003).await?;
    let addr = listener.local_addr()?;
    println!("listening on http://{addr}");
    println!("try it (with websocat):");
    println!(
        "  websocat ws://{addr}/rooms/1/present     # in two terminals: the second is refused"
    );

    let outcome = server::serve(listener, app(redlock), self_test).await;
    if let Some(cluster) = nodes.local {
        println!("stopping the local nodes");
        drop(cluster);
    }
    outcome
}

type ClientSocket = tokio_tungstenite::WebSocketStream<TcpStream>;

/// Opens a presenter's socket on room `room`.
async fn connect(addr: SocketAddr, room: u32) -> Result<ClientSocket, BoxError> {
    let stream = TcpStream::connect(addr).await?;
    let url = format!("ws://{addr}/rooms/{room}/present");
    let (socket, _) = within(tokio_tungstenite::client_async(url, stream)).await??;
    Ok(socket)
}

/// The next message on `socket`.
async fn next(socket: &mut ClientSocket) -> Result<ClientMessage, BoxError> {
    match within(socket.next()).await? {
        Some(message) => Ok(message?),
        None => Err("the socket ended".into()),
    }
}

async fn within<T>(future: impl Future<Output = T>) -> Result<T, BoxError> {
    tokio::time::timeout(STEP_TIMEOUT, future)
        .await
        .map_err(|_| format!("no answer within {STEP_TIMEOUT:?}").into())
}

/// Two presenters for one room, a hand-over, and checks.
async fn self_test(addr: SocketAddr) -> Result<(), BoxError> {
    let mut failures = Vec::new();

    let mut first = connect(addr, 1).await?;
    let hello = next(&mut first).await?;
    println!("self-test: first presenter:  {hello}");
    if !hello.to_text()?.starts_with("presenting in room 1") {
        failures.push(format!("the first presenter was not let in: {hello}"));
    }

    let mut second = connect(addr, 1).await?;
    match next(&mut second).await? {
        ClientMessage::Close(Some(frame)) if frame.code == CloseCode::Again => {
            println!(
                "self-test: second presenter: closed with 1013 ({})",
                frame.reason
            );
        }
        other => failures.push(format!("the second presenter was not refused: {other:?}")),
    }

    first.send(ClientMessage::text("slide 2")).await?;
    let ack = next(&mut first).await?;
    println!("self-test: first presenter:  {ack}");
    first.send(ClientMessage::text(LEAVE)).await?;
    let left = next(&mut first).await?;
    println!("self-test: first presenter:  {left}");
    if left.to_text()? != "left" {
        failures.push(format!("leaving was not confirmed: {left}"));
    }

    // The room was released before `left` was sent: the next presenter gets in.
    let mut third = connect(addr, 1).await?;
    let hello = next(&mut third).await?;
    println!("self-test: third presenter:  {hello}");
    if !hello.to_text()?.starts_with("presenting in room 1") {
        failures.push(format!("the room was not free after leaving: {hello}"));
    }
    within(third.close(None)).await??;

    if failures.is_empty() {
        println!("self-test passed");
        Ok(())
    } else {
        Err(format!("self-test failed: {}", failures.join("; ")).into())
    }
}
