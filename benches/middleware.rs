//! Scenario 5: what `RedlockLayer` adds to a route. Target: a locked request costs at most
//! 1.15 × (bare route + bare lock cycle), in process (`oneshot`) and over loopback HTTP.
//!
//! Run: `cargo bench --bench middleware`

mod common;

use axum::Router;
use axum::body::Body;
use axum::routing::post;
use common::*;
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use tower::ServiceExt;
use tower_redlock::layer::{RedlockLayer, key};

const ROUNDS: usize = 10;
const PER_ROUND: usize = 200;

fn app(layer: Option<RedlockLayer<key::Param>>) -> Router {
    let route = post(|| async { "ok" });
    let router = Router::new().route("/r/{id}", route);
    match layer {
        Some(layer) => router.route_layer(layer),
        None => router,
    }
}

fn main() {
    on_worker(bench());
}

async fn bench() {
    let cluster = cluster().await;
    let redlock = redlock(&cluster.urls()).await;
    let bare = app(None);
    let locked = app(Some(RedlockLayer::new(redlock.clone(), key::param("id"))));

    // In process.
    let (mut s_bare, mut s_lock, mut s_locked) =
        (Samples::default(), Samples::default(), Samples::default());
    let mut n = 0u64;
    for _ in 0..ROUNDS {
        for _ in 0..PER_ROUND {
            n += 1;
            let req = || {
                Request::post(format!("/r/{n}"))
                    .body(Body::empty())
                    .unwrap()
            };
            let (r, d) = timed(bare.clone().oneshot(req())).await;
            assert_eq!(r.unwrap().status(), 200);
            s_bare.push(d);
            let ((), d) = timed(lock_cycle(&redlock, format!("cycle:{n}"))).await;
            s_lock.push(d);
            let (r, d) = timed(locked.clone().oneshot(req())).await;
            assert_eq!(r.unwrap().status(), 200);
            s_locked.push(d);
        }
    }
    report("middleware_in_process", &s_bare, &s_lock, &s_locked);

    // Over loopback HTTP, one keep-alive connection per app.
    let (mut h_bare, mut h_locked) = (Samples::default(), Samples::default());
    let mut c_bare = connect(bare).await;
    let mut c_locked = connect(locked).await;
    let mut s_lock2 = Samples::default();
    for _ in 0..ROUNDS {
        for _ in 0..PER_ROUND {
            n += 1;
            let req = || {
                Request::post(format!("/r/{n}"))
                    .header("host", "bench")
                    .body(Empty::<bytes::Bytes>::new())
                    .unwrap()
            };
            let ((), d) = timed(async {
                c_bare.ready().await.unwrap();
                let r = c_bare.send_request(req()).await.unwrap();
                r.into_body().collect().await.unwrap();
            })
            .await;
            h_bare.push(d);
            let ((), d) = timed(lock_cycle(&redlock, format!("cycle:{n}"))).await;
            s_lock2.push(d);
            let ((), d) = timed(async {
                c_locked.ready().await.unwrap();
                let r = c_locked.send_request(req()).await.unwrap();
                assert_eq!(r.status(), 200);
                r.into_body().collect().await.unwrap();
            })
            .await;
            h_locked.push(d);
        }
    }
    report("middleware_http", &h_bare, &s_lock2, &h_locked);
}

async fn connect(app: Router) -> hyper::client::conn::http1::SendRequest<Empty<bytes::Bytes>> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.set_nodelay(true).unwrap();
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    sender
}

fn report(name: &str, bare: &Samples, lock: &Samples, locked: &Samples) {
    let budget = bare.p50() + lock.p50();
    let ratio = locked.p50().as_secs_f64() / budget.as_secs_f64();
    println!(
        "\n5. {name}: {} requests each (p50 / p99 µs)",
        ROUNDS * PER_ROUND
    );
    println!(
        "   bare route        {:>9.1} {:>9.1}",
        us(bare.p50()),
        us(bare.p99())
    );
    println!(
        "   bare lock cycle   {:>9.1} {:>9.1}",
        us(lock.p50()),
        us(lock.p99())
    );
    println!(
        "   locked route      {:>9.1} {:>9.1}",
        us(locked.p50()),
        us(locked.p99())
    );
    println!(
        "   ratio locked / (bare + cycle) = {ratio:.3} (target ≤ 1.15: {})",
        verdict(ratio <= 1.15)
    );
    json_line(
        name,
        &[
            ("bare_p50_us", us(bare.p50())),
            ("cycle_p50_us", us(lock.p50())),
            ("locked_p50_us", us(locked.p50())),
            ("locked_p99_us", us(locked.p99())),
            ("ratio", ratio),
        ],
    );
}
