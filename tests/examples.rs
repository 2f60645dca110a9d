//! Runs each example to completion: it must exit with status 0 and print its success line.
//!
//! The binaries live next to this test, in `target/<profile>/examples/`; each is (re)built
//! first with this test's features, as `cargo test --test examples` does not build examples.
//! Each run is bounded by a timeout; the example runs in its own process group, so that on
//! timeout or panic it is killed together with the `redis-server` nodes it started, and the
//! test fails if the example leaves any process behind. The examples run one at a time, on
//! local nodes (`REDLOCK_NODES` is removed from their environment, except where a test sets
//! it: the quickstart against a local Redis Cluster).
#![cfg(feature = "testkit")]

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Bound on one example run.
const TIMEOUT: Duration = Duration::from_secs(60);
/// Bound on building one example (the build directory may be locked by other builds).
const BUILD_TIMEOUT: Duration = Duration::from_secs(600);

/// Examples start their own nodes and some are timing-sensitive: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

#[test]
fn transfer_conserves_the_total() {
    run_example("transfer", &[], "OK: total conserved, no balance negative");
}

#[test]
fn cron_runs_each_tick_once() {
    run_example("cron", &[], "OK: each of the 10 ticks ran exactly once");
}

#[test]
fn cache_loads_once() {
    run_example("cache", &[], "loader calls: 1\n");
}

#[test]
fn batch_warms_each_item_once() {
    run_example("batch", &[], "OK: every item warmed exactly once");
}

/// With `QUICKSTART_SELF_TEST=1` the quickstart serves on a free port, sends itself two
/// concurrent payments for one order, and exits 0 when one got `200` and the other `423`.
#[test]
#[cfg(feature = "axum")]
fn quickstart_self_test() {
    run_example(
        "quickstart",
        &[("QUICKSTART_SELF_TEST", "1"), ("PORT", "0")],
        "self-test passed",
    );
}

/// The quickstart runs unchanged with one Redis Cluster as its only node
/// (`REDLOCK_NODES=redis+cluster://h:p,h:p,...`, a local 3-primary cluster).
#[test]
#[cfg(feature = "axum")]
fn quickstart_self_test_on_a_redis_cluster() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let cluster = runtime
        .block_on(tower_redlock::testkit::RedisCluster::start(3, 0))
        .expect("a local redis cluster");
    run_example(
        "quickstart",
        &[
            ("QUICKSTART_SELF_TEST", "1"),
            ("PORT", "0"),
            ("REDLOCK_NODES", &cluster.url()),
        ],
        "self-test passed",
    );
}

/// With `EXAMPLE_SELF_TEST=1` the `handler_lock` server, on a free port, checks early
/// release, `Locked<K>` (`200`/`423`/`400`), a job stopping on lease loss (`503`),
/// `acquire()?` in a handler (`200`/`423`) and a payment retried safely after its lease was
/// lost (`503`, then `200` with the same charge), then stops.
#[test]
#[cfg(feature = "axum")]
fn handler_lock_self_test() {
    run_example(
        "handler_lock",
        &[("EXAMPLE_SELF_TEST", "1"), ("PORT", "0")],
        "self-test passed",
    );
}

/// With `EXAMPLE_SELF_TEST=1` the `observability` server, on a free port, pays twice
/// concurrently (`200`, `423`), then checks `GET /health` and that `GET /metrics` counts both
/// outcomes under `lock="pay"`, then stops.
#[test]
#[cfg(all(feature = "axum", feature = "metrics"))]
fn observability_self_test() {
    run_example(
        "observability",
        &[("EXAMPLE_SELF_TEST", "1"), ("PORT", "0")],
        "self-test passed",
    );
}

/// With `EXAMPLE_SELF_TEST=1` the `websocket` server, on a free port, lets one presenter into
/// a room, refuses a second (close code `1013`), and lets a third in once the first left.
#[test]
#[cfg(feature = "axum")]
fn websocket_self_test() {
    run_example(
        "websocket",
        &[("EXAMPLE_SELF_TEST", "1"), ("PORT", "0")],
        "self-test passed",
    );
}

/// With `EXAMPLE_SELF_TEST=1` the `reports` server, on a free port, runs two GETs of one
/// report together and refuses a rebuild meanwhile (`423`), rebuilds after them (`200`), and
/// lets 2 exports of a tenant in at once: the third gets `429` with `Retry-After`.
#[test]
#[cfg(feature = "axum")]
fn reports_self_test() {
    run_example(
        "reports",
        &[("EXAMPLE_SELF_TEST", "1"), ("PORT", "0")],
        "self-test passed",
    );
}

/// `target/<profile>/deps/examples-HASH` → `target/<profile>/examples/NAME`.
fn example_path(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("path of the test binary");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("the test binary lives in target/<profile>/deps");
    profile_dir
        .join("examples")
        .join(format!("{name}{}", std::env::consts::EXE_SUFFIX))
}

/// The features this test was built with, to build the examples with the same ones.
fn features() -> String {
    let mut features = vec!["testkit"];
    for (on, name) in [
        (cfg!(feature = "default"), "default"),
        (cfg!(feature = "axum"), "axum"),
        (cfg!(feature = "metrics"), "metrics"),
        (cfg!(feature = "serde"), "serde"),
    ] {
        if on {
            features.push(name);
        }
    }
    features.join(",")
}

/// Builds `name` into the profile directory this test runs from. `cargo test` builds the
/// examples only when no target is selected, so `cargo test --test examples` would otherwise
/// run stale binaries (or none). Cheap when they are up to date.
fn build_example(name: &str, path: &Path) {
    let profile_dir = path
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/examples");
    let (Some(target_dir), Some(profile)) = (
        profile_dir.parent(),
        profile_dir.file_name().and_then(|p| p.to_str()),
    ) else {
        panic!("unexpected target layout: {}", profile_dir.display());
    };
    let profile = if profile == "debug" { "dev" } else { profile };
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| env!("CARGO").into());
    let mut command = Command::new(cargo);
    command
        .args(["build", "--quiet", "--example", name])
        .args(["--no-default-features", "--features", &features()])
        .args(["--profile", profile, "--manifest-path"])
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"))
        .arg("--target-dir")
        .arg(target_dir);
    let run = Run::bounded(command, BUILD_TIMEOUT);
    assert!(
        run.succeeded(),
        "building example {name} failed ({}); a missing feature? build it with \
         `cargo build --example {name} --all-features`\n{}",
        run.describe(),
        run.output()
    );
}

fn run_example(name: &str, envs: &[(&str, &str)], expect: &str) {
    let _serial = SERIAL.lock().unwrap_or_else(PoisonError::into_inner);
    let path = example_path(name);
    build_example(name, &path);
    assert!(
        path.is_file(),
        "example binary {} not found after building it",
        path.display()
    );
    let mut command = Command::new(&path);
    command
        .env_remove("REDLOCK_NODES")
        .envs(envs.iter().copied());
    let run = Run::bounded(command, TIMEOUT);
    assert!(
        run.succeeded(),
        "example {name} failed ({})\n{}",
        run.describe(),
        run.output()
    );
    assert!(
        run.stdout.contains(expect),
        "example {name} did not print {expect:?}\n{}",
        run.output()
    );
    assert!(
        run.leftovers.is_empty(),
        "example {name} left processes running (now killed): {:?}\n{}",
        run.leftovers,
        run.output()
    );
}

/// A finished (or killed) child process.
struct Run {
    /// `None`: killed on timeout.
    status: Option<ExitStatus>,
    timeout: Duration,
    stdout: String,
    stderr: String,
    /// Processes left in its group after it exited (killed since).
    leftovers: Vec<u32>,
}

impl Run {
    /// Runs `command` in its own process group; past `timeout` the group is killed.
    fn bounded(mut command: Command, timeout: Duration) -> Run {
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        #[cfg(unix)]
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        let mut child = Group(
            command
                .spawn()
                .unwrap_or_else(|e| panic!("spawn {:?}: {e}", command.get_program())),
        );
        let stdout = drain(child.0.stdout.take());
        let stderr = drain(child.0.stderr.take());
        let status = child.wait_until(Instant::now() + timeout);
        if status.is_none() {
            child.kill();
        }
        let leftovers = child.leftovers();
        drop(child);
        Run {
            status,
            timeout,
            stdout: collect(stdout),
            stderr: collect(stderr),
            leftovers,
        }
    }

    fn succeeded(&self) -> bool {
        self.status.is_some_and(|s| s.success())
    }

    fn describe(&self) -> String {
        match self.status {
            Some(status) => status.to_string(),
            None => format!("did not finish within {:?}, killed", self.timeout),
        }
    }

    fn output(&self) -> String {
        format!(
            "--- stdout ---\n{}--- stderr ---\n{}",
            self.stdout, self.stderr
        )
    }
}

/// The example's process, leader of its own process group. Dropping it kills the group
/// (the example and any `redis-server` it started) if the example is still running.
struct Group(Child);

impl Group {
    fn pgid(&self) -> u32 {
        self.0.id()
    }

    /// Waits for the example to exit, until `deadline` (bounded polling).
    fn wait_until(&mut self, deadline: Instant) -> Option<ExitStatus> {
        while Instant::now() < deadline {
            match self.0.try_wait() {
                Ok(Some(status)) => return Some(status),
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                Err(e) => panic!("waiting for the example: {e}"),
            }
        }
        self.0.try_wait().ok().flatten()
    }

    /// `SIGKILL`s the whole group, then reaps the leader.
    fn kill(&mut self) {
        if cfg!(unix) {
            let _ = Command::new("kill")
                .args(["-s", "KILL", "--", &format!("-{}", self.pgid())])
                .stderr(Stdio::null())
                .status();
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }

    /// After the leader exited: processes still in its group (Linux only), killed by pid.
    fn leftovers(&self) -> Vec<u32> {
        let pids = group_members(self.pgid());
        for pid in &pids {
            let _ = Command::new("kill")
                .args(["-s", "KILL", &pid.to_string()])
                .stderr(Stdio::null())
                .status();
        }
        pids
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            self.kill();
        }
    }
}

/// Pids whose process group is `pgid`, from `/proc`.
#[cfg(target_os = "linux")]
fn group_members(pgid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| {
            let pid: u32 = entry.ok()?.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            // Fields after the parenthesised command name: state, ppid, pgrp, ...
            let rest = &stat[stat.rfind(')')? + 1..];
            let pgrp: u32 = rest.split_whitespace().nth(2)?.parse().ok()?;
            // Zombies are dead already, waiting to be reaped by their parent.
            let zombie = rest.split_whitespace().next() == Some("Z");
            (pgrp == pgid && !zombie).then_some(pid)
        })
        .collect()
}

#[cfg(not(target_os = "linux"))]
fn group_members(_pgid: u32) -> Vec<u32> {
    Vec::new()
}

/// Reads a pipe to its end on a thread.
fn drain(pipe: Option<impl Read + Send + 'static>) -> Option<JoinHandle<String>> {
    let mut pipe = pipe?;
    Some(std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    }))
}

fn collect(reader: Option<JoinHandle<String>>) -> String {
    reader
        .and_then(|handle| handle.join().ok())
        .unwrap_or_default()
}
