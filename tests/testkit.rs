#![cfg(feature = "testkit")]
//! Tests of the test kit itself: real `redis-server` processes and the fault proxy.

use std::{
    net::SocketAddr,
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};
use tower_redlock::testkit::{
    ClusterOptions, LocalCluster, NodeState, TestkitError, eventually, ping,
};

const SHORT: Duration = Duration::from_millis(300);
/// For events that come at once (a node or proxy answering): a bound against hanging,
/// not a speed requirement; checks that expect silence use [`SHORT`].
const LONG: Duration = Duration::from_secs(30);

/// Sends one inline command on a fresh connection; returns the first reply line.
async fn command(addr: SocketAddr, cmd: &str, timeout: Duration) -> Option<String> {
    tokio::time::timeout(timeout, async {
        let mut stream = TcpStream::connect(addr).await.ok()?;
        stream
            .write_all(format!("{cmd}\r\n").as_bytes())
            .await
            .ok()?;
        read_line(&mut stream).await
    })
    .await
    .ok()
    .flatten()
}

async fn read_line(stream: &mut TcpStream) -> Option<String> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 512];
    loop {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(pos) = buf.windows(2).position(|w| w == b"\r\n") {
            return Some(String::from_utf8_lossy(&buf[..pos]).into_owned());
        }
    }
}

/// Polls `ping` until it answers, bounded by count and deadline.
async fn eventually_pings(addr: SocketAddr) -> bool {
    eventually(LONG, || ping(addr, Duration::from_millis(500))).await
}

fn alive(pid: u32) -> bool {
    if Path::new("/proc/self").exists() {
        Path::new(&format!("/proc/{pid}")).exists()
    } else {
        Command::new("kill")
            .args(["-0", &pid.to_string()])
            .status()
            .is_ok_and(|s| s.success())
    }
}

#[tokio::test]
async fn start_five_nodes_all_answer() {
    let cluster = LocalCluster::start(5).await.unwrap();
    assert_eq!(cluster.len(), 5);
    let urls = cluster.urls();
    let mut pids = Vec::new();
    for (i, url) in urls.iter().enumerate() {
        assert_eq!(*url, format!("redis://127.0.0.1:{}", cluster.port(i)));
        assert_eq!(cluster.url(i), *url);
        assert_eq!(cluster.state(i), NodeState::Running);
        assert!(cluster.ping(i, LONG).await, "node {i} does not answer");
        pids.push(cluster.pid(i).unwrap());
    }
    pids.sort_unstable();
    pids.dedup();
    assert_eq!(pids.len(), 5);
}

#[tokio::test]
async fn kill_and_restart_on_same_port_with_empty_data() {
    let cluster = LocalCluster::start(2).await.unwrap();
    let (port, old_pid) = (cluster.port(0), cluster.pid(0).unwrap());
    let set = command(cluster.addr(0), "SET k v", LONG).await;
    assert_eq!(set.as_deref(), Some("+OK"));

    cluster.kill(0).await.unwrap();
    assert_eq!(cluster.state(0), NodeState::Killed);
    assert_eq!(cluster.pid(0), None);
    assert!(!alive(old_pid));
    assert!(!cluster.ping(0, SHORT).await);
    assert!(cluster.ping(1, LONG).await, "other nodes are unaffected");
    assert!(matches!(
        cluster.pause(0),
        Err(TestkitError::NodeDown { index: 0 })
    ));
    cluster.kill(0).await.unwrap(); // idempotent

    cluster.restart(0).await.unwrap();
    assert_eq!(cluster.state(0), NodeState::Running);
    assert_eq!(cluster.port(0), port);
    assert_ne!(cluster.pid(0), Some(old_pid));
    assert!(cluster.ping(0, LONG).await);
    let get = command(cluster.addr(0), "GET k", LONG).await;
    assert_eq!(get.as_deref(), Some("$-1"), "restarted node starts empty");

    // Restarting a running node works too.
    cluster.restart(1).await.unwrap();
    assert!(cluster.ping(1, LONG).await);
}

#[tokio::test]
async fn pause_and_resume() {
    let cluster = LocalCluster::start(2).await.unwrap();
    cluster.pause(0).unwrap();
    assert_eq!(cluster.state(0), NodeState::Paused);
    cluster.pause(0).unwrap(); // idempotent
    assert!(
        !cluster.ping(0, SHORT).await,
        "a paused node must not answer"
    );
    assert!(cluster.ping(1, LONG).await);

    // A request sent while paused is answered after resume.
    let mut stream = TcpStream::connect(cluster.addr(0)).await.unwrap();
    stream.write_all(b"PING\r\n").await.unwrap();
    cluster.resume(0).unwrap();
    assert_eq!(cluster.state(0), NodeState::Running);
    let reply = tokio::time::timeout(LONG, read_line(&mut stream))
        .await
        .unwrap();
    assert_eq!(reply.as_deref(), Some("+PONG"));
    assert!(cluster.ping(0, LONG).await);

    // A paused node can be restarted.
    cluster.pause(1).unwrap();
    cluster.restart(1).await.unwrap();
    assert!(cluster.ping(1, LONG).await);
}

#[tokio::test]
async fn invalid_index_is_an_error() {
    let cluster = LocalCluster::start(1).await.unwrap();
    assert!(matches!(
        cluster.kill(3).await,
        Err(TestkitError::InvalidIndex { index: 3, len: 1 })
    ));
    assert!(matches!(
        cluster.resume(1),
        Err(TestkitError::InvalidIndex { .. })
    ));
}

#[tokio::test]
async fn extra_args_are_applied() {
    let opts = ClusterOptions::new().args(["--requirepass", "s3cret"]);
    let cluster = LocalCluster::start_with(1, opts).await.unwrap();
    let reply = command(cluster.addr(0), "PING", LONG).await.unwrap();
    assert!(reply.starts_with("-NOAUTH"), "{reply}");
    let auth = command(cluster.addr(0), "AUTH s3cret", LONG).await;
    assert_eq!(auth.as_deref(), Some("+OK"));
}

#[tokio::test]
async fn bad_args_report_the_server_log() {
    let opts = ClusterOptions::new().arg("--no-such-directive");
    let err = LocalCluster::start_with(1, opts).await.unwrap_err();
    match err {
        TestkitError::Exited { log, .. } => assert!(log.contains("no-such-directive"), "{log}"),
        other => panic!("unexpected error: {other}"),
    }
}

#[tokio::test]
async fn drop_kills_every_process_and_removes_dirs() {
    let cluster = LocalCluster::start(3).await.unwrap();
    let pids: Vec<u32> = (0..3).map(|i| cluster.pid(i).unwrap()).collect();
    let dirs: Vec<_> = (0..3).map(|i| cluster.data_dir(i)).collect();
    cluster.pause(1).unwrap(); // a stopped process must die too
    assert!(pids.iter().all(|&p| alive(p)));
    drop(cluster);
    for (pid, dir) in pids.iter().zip(&dirs) {
        assert!(!alive(*pid), "redis-server {pid} survived drop");
        assert!(!dir.exists(), "{} survived drop", dir.display());
    }
}

#[tokio::test]
async fn drop_during_panic_kills_every_process() {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(async move {
        let cluster = LocalCluster::start(2).await.unwrap();
        let pids: Vec<u32> = (0..2).map(|i| cluster.pid(i).unwrap()).collect();
        tx.send(pids).unwrap();
        panic!("test failure while the cluster is alive");
    });
    let pids = rx.await.unwrap();
    assert!(task.await.unwrap_err().is_panic());
    for pid in pids {
        assert!(!alive(pid), "redis-server {pid} survived a panic");
    }
}

/// Runs only when re-executed by `missing_binary_is_reported` below.
#[tokio::test]
#[ignore = "helper, run in a child process"]
async fn missing_binary_helper() {
    if std::env::var_os("TESTKIT_MISSING_HELPER").is_none() {
        return;
    }
    let err = LocalCluster::start(1).await.unwrap_err();
    assert!(matches!(err, TestkitError::RedisServerNotFound { .. }));
    let msg = err.to_string();
    for hint in [
        "apt-get install redis-server",
        "brew install redis",
        "REDIS_SERVER=",
    ] {
        assert!(msg.contains(hint), "{msg}");
    }
}

#[test]
fn missing_binary_is_reported() {
    // Environment changes would race with the other tests: use a child process.
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["missing_binary_helper", "--exact", "--ignored"])
        .env("TESTKIT_MISSING_HELPER", "1")
        .env("REDIS_SERVER", "/nonexistent/redis-server")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "helper failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn proxy_latency_adds_delay() {
    let cluster = LocalCluster::start(1).await.unwrap();
    let proxies = cluster.proxies().await.unwrap();
    let proxy = &proxies[0];
    assert_eq!(proxy.url(), format!("redis://{}", proxy.addr()));
    assert_eq!(proxy.upstream(), cluster.addr(0));
    assert!(ping(proxy.addr(), LONG).await);

    proxy.set_latency(Duration::from_millis(100));
    let started = Instant::now();
    assert!(ping(proxy.addr(), LONG).await);
    // Request and reply are each delayed by 100 ms.
    assert!(
        started.elapsed() >= Duration::from_millis(150),
        "{:?}",
        started.elapsed()
    );

    proxy.set_latency(Duration::ZERO);
    proxy.set_jitter(Duration::from_millis(20));
    assert!(ping(proxy.addr(), LONG).await);
    proxy.heal();

    // A real client works through the proxy, with latency.
    proxy.set_latency(Duration::from_millis(5));
    // Patient replies: redis-rs gives up after 500 ms by default, too soon on a loaded
    // machine.
    let config = redis::AsyncConnectionConfig::new().set_response_timeout(Some(LONG));
    let client = redis::Client::open(proxy.url()).unwrap();
    let mut conn = client
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .unwrap();
    let () = redis::cmd("SET")
        .arg("key")
        .arg("value")
        .query_async(&mut conn)
        .await
        .unwrap();
    let value: String = redis::cmd("GET")
        .arg("key")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(value, "value");
}

#[tokio::test]
async fn proxy_blackhole_then_heal() {
    let cluster = LocalCluster::start(1).await.unwrap();
    let proxies = cluster.proxies().await.unwrap();
    let proxy = &proxies[0];
    let mut existing = TcpStream::connect(proxy.addr()).await.unwrap();
    existing.write_all(b"PING\r\n").await.unwrap();
    assert_eq!(read_line(&mut existing).await.as_deref(), Some("+PONG"));

    proxy.blackhole();
    assert!(
        !ping(proxy.addr(), SHORT).await,
        "blackholed proxy answered"
    );
    existing.write_all(b"PING\r\n").await.unwrap();
    assert!(
        tokio::time::timeout(SHORT, read_line(&mut existing))
            .await
            .is_err(),
        "existing connection must hang, not close"
    );

    proxy.heal();
    assert!(eventually_pings(proxy.addr()).await, "heal did not restore");
    assert!(cluster.ping(0, LONG).await);
    // The connection that lost a request stays dead rather than desynchronised.
    existing.write_all(b"PING\r\n").await.unwrap();
    assert!(
        tokio::time::timeout(SHORT, read_line(&mut existing))
            .await
            .is_err()
    );
}

#[tokio::test]
async fn proxy_reset_closes_connections() {
    let cluster = LocalCluster::start(1).await.unwrap();
    let proxies = cluster.proxies().await.unwrap();
    let proxy = &proxies[0];
    let mut existing = TcpStream::connect(proxy.addr()).await.unwrap();
    existing.write_all(b"PING\r\n").await.unwrap();
    assert_eq!(read_line(&mut existing).await.as_deref(), Some("+PONG"));

    proxy.reset();
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(LONG, existing.read(&mut buf)).await;
    assert!(
        matches!(read, Ok(Ok(0) | Err(_))),
        "connection not closed: {read:?}"
    );
    assert!(
        !ping(proxy.addr(), LONG).await,
        "new connections must be reset"
    );

    proxy.heal();
    assert!(eventually_pings(proxy.addr()).await);

    // One-shot disconnect: existing dropped, new ones fine.
    let mut existing = TcpStream::connect(proxy.addr()).await.unwrap();
    existing.write_all(b"PING\r\n").await.unwrap();
    assert_eq!(read_line(&mut existing).await.as_deref(), Some("+PONG"));
    proxy.disconnect_all();
    let read = tokio::time::timeout(LONG, existing.read(&mut buf)).await;
    assert!(
        matches!(read, Ok(Ok(0) | Err(_))),
        "connection not closed: {read:?}"
    );
    assert!(ping(proxy.addr(), LONG).await);
}

#[tokio::test]
async fn proxy_follows_node_restart_and_stops_on_drop() {
    let cluster = LocalCluster::start(1).await.unwrap();
    let proxies = cluster.proxies().await.unwrap();
    let addr = proxies[0].addr();
    cluster.kill(0).await.unwrap();
    assert!(!ping(addr, SHORT).await);
    cluster.restart(0).await.unwrap();
    assert!(eventually_pings(addr).await);

    drop(proxies);
    // The listener goes away once the aborted task is dropped.
    let closed = eventually(LONG, || async { TcpStream::connect(addr).await.is_err() }).await;
    assert!(closed, "proxy still listening after drop");
}
