//! `rediss://` nodes: TLS with a private CA made here with `openssl`, on 3 real
//! `redis-server --tls-port` nodes (Debian's build supports TLS).
#![cfg(all(feature = "tls", feature = "testkit"))]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tower_redlock::testkit::eventually;
use tower_redlock::{LockOptions, Redlock};

/// The test's nodes and files; stops the nodes (by PID) and removes the files on drop.
struct TlsNodes {
    dir: PathBuf,
    children: Vec<Child>,
    ports: Vec<u16>,
}

impl Drop for TlsNodes {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn run(dir: &Path, args: &[&str]) {
    let status = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("openssl is needed for this test");
    assert!(status.success(), "openssl {args:?} failed");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A CA, a server certificate for 127.0.0.1 signed by it, and 3 TLS-only nodes.
fn start(n: usize) -> TlsNodes {
    let dir = std::env::temp_dir().join(format!("tower-redlock-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut nodes = TlsNodes {
        dir: dir.clone(),
        children: Vec::new(),
        ports: Vec::new(),
    };
    run(
        &dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=tower-redlock test CA",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
        ],
    );
    run(
        &dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
        ],
    );
    std::fs::write(dir.join("san.ext"), "subjectAltName=IP:127.0.0.1\n").unwrap();
    run(
        &dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "san.ext",
            "-out",
            "server.crt",
        ],
    );
    for i in 0..n {
        let port = free_port();
        let data = dir.join(format!("node{i}"));
        std::fs::create_dir_all(&data).unwrap();
        let child = Command::new("redis-server")
            .args([
                "--port",
                "0",
                "--tls-port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
            ])
            // Absolute paths: redis-server changes into `--dir` before loading them.
            .arg("--tls-cert-file")
            .arg(dir.join("server.crt"))
            .arg("--tls-key-file")
            .arg(dir.join("server.key"))
            .arg("--tls-ca-cert-file")
            .arg(dir.join("ca.crt"))
            .args(["--tls-auth-clients", "no"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&data)
            .current_dir(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is needed for this test");
        nodes.children.push(child);
        nodes.ports.push(port);
    }
    nodes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locks_over_tls_with_a_private_ca() {
    let nodes = start(3);
    let ca = std::fs::read(nodes.dir.join("ca.crt")).unwrap();
    let urls: Vec<String> = nodes
        .ports
        .iter()
        .map(|p| format!("rediss://127.0.0.1:{p}"))
        .collect();
    let redlock = Redlock::builder()
        .nodes(urls.clone())
        .tls_root_certificate(ca)
        // Generous: every call below must succeed, also on a loaded machine.
        .node_timeout(Duration::from_secs(1))
        .build()
        .await
        .unwrap();

    // The nodes take a moment to listen: bounded wait for a healthy quorum.
    let healthy = eventually(Duration::from_secs(30), || async {
        redlock.health().await.is_healthy()
    })
    .await;
    let report = redlock.health().await;
    assert!(healthy && report.is_healthy(), "{report:?}");
    assert_eq!(report.reachable, 3);

    let lock = redlock
        .acquire_with("tls", LockOptions::new().fencing(true))
        .await
        .unwrap();
    assert!(lock.fencing_token().is_some());
    assert!(redlock.try_acquire("tls").await.unwrap_err().is_contended());
    lock.extend(Duration::from_secs(5)).await.unwrap();
    lock.release().await.unwrap();

    // Without the private CA the system roots do not trust these nodes: no quorum.
    let untrusting = Redlock::builder()
        .nodes(urls)
        .node_timeout(Duration::from_millis(500))
        .build()
        .await
        .unwrap();
    assert!(
        untrusting
            .try_acquire("tls")
            .await
            .unwrap_err()
            .is_unavailable()
    );
}
