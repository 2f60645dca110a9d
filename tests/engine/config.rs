//! Bad input gets a clear error, never a panic, and never echoes a password.

use std::time::Duration;

use tower_redlock::{ConfigError, LockError, LockOptions, MAX_KEY_LEN, Redlock};

use crate::support::*;

async fn build_err(builder: tower_redlock::RedlockBuilder) -> ConfigError {
    builder
        .build()
        .await
        .expect_err("configuration should be rejected")
}

#[tokio::test]
async fn config_errors_name_the_problem() {
    let url = "redis://127.0.0.1:1";
    assert_eq!(build_err(Redlock::builder()).await, ConfigError::NoNodes);
    assert!(matches!(
        build_err(Redlock::builder().node(url).ttl(Duration::ZERO)).await,
        ConfigError::InvalidTtl { .. }
    ));
    assert!(matches!(
        build_err(Redlock::builder().node(url).ttl(Duration::from_millis(3))).await,
        ConfigError::InvalidTtl { .. }
    ));
    assert!(matches!(
        build_err(Redlock::builder().node(url).ttl(Duration::MAX)).await,
        ConfigError::InvalidTtl { .. }
    ));
    for factor in [f64::NAN, -0.1, 0.5, f64::INFINITY] {
        assert!(matches!(
            build_err(Redlock::builder().node(url).drift_factor(factor)).await,
            ConfigError::InvalidDriftFactor(_)
        ));
    }
    assert!(matches!(
        build_err(Redlock::builder().node(url).node_timeout(Duration::ZERO)).await,
        ConfigError::InvalidNodeTimeout { .. }
    ));
    assert!(matches!(
        build_err(
            Redlock::builder()
                .node(url)
                .ttl(Duration::from_secs(1))
                .node_timeout(Duration::from_secs(1))
        )
        .await,
        ConfigError::InvalidNodeTimeout { .. }
    ));
    assert!(matches!(
        build_err(Redlock::builder().node(url).node_backlog(0)).await,
        ConfigError::InvalidNodeBacklog(0)
    ));
    assert!(matches!(
        build_err(Redlock::builder().node(url).pool_size(0)).await,
        ConfigError::InvalidPoolSize(0)
    ));
    assert!(matches!(
        build_err(Redlock::builder().node(url).key_prefix("x".repeat(300))).await,
        ConfigError::InvalidKeyPrefix(_)
    ));
    assert!(matches!(
        build_err(Redlock::builder().nodes([url, url])).await,
        ConfigError::DuplicateNode { index: 1, .. }
    ));
}

#[tokio::test]
async fn malformed_urls_are_rejected_without_their_password() {
    for bad in [
        "",
        "localhost:6379",
        "http://127.0.0.1:6379",
        "redis://",
        "redis://admin:hunter2@127.0.0.1:99999",
        "redis://admin:hunter2@127.0.0.1:6379/db",
        "redis://admin:hunter2@[::1",
    ] {
        let err = build_err(Redlock::builder().nodes(["redis://127.0.0.1:1", bad])).await;
        match &err {
            ConfigError::InvalidNodeUrl { index, .. } => assert_eq!(*index, 1, "{bad}"),
            other => panic!("{bad}: {other:?}"),
        }
        let shown = format!("{err} {err:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
    }
}

#[tokio::test]
async fn passwords_never_show_in_debug() {
    let builder = Redlock::builder().nodes([
        "redis://app:hunter2@127.0.0.1:1",
        "redis://:hunter2@127.0.0.1:2",
        "redis://app:hunter2@127.0.0.1:3",
    ]);
    assert!(!format!("{builder:?}").contains("hunter2"));
    let redlock = builder.build().await.unwrap();
    let shown = format!("{redlock:?}");
    assert!(!shown.contains("hunter2"), "{shown}");
    assert!(shown.contains("***"));
}

#[tokio::test]
async fn even_node_count_is_allowed() {
    let redlock = Redlock::builder()
        .nodes([
            "redis://127.0.0.1:1",
            "redis://127.0.0.1:2",
            "redis://127.0.0.1:3",
            "redis://127.0.0.1:4",
        ])
        .build()
        .await
        .unwrap();
    assert_eq!(redlock.quorum(), 3);
}

#[tokio::test]
async fn environment_is_parsed_strictly() {
    let vars = |pairs: &'static [(&'static str, &'static str)]| {
        move |name: &str| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        }
    };
    let ok = Redlock::builder()
        .with_vars(vars(&[
            (
                "REDLOCK_NODES",
                "redis://127.0.0.1:1, redis://127.0.0.1:2/1 ,redis://u:p@127.0.0.1:3",
            ),
            ("REDLOCK_TTL_MS", "2500"),
            ("REDLOCK_NODE_TIMEOUT_MS", "40"),
            ("REDLOCK_KEY_PREFIX", "svc:"),
        ]))
        .unwrap()
        .build()
        .await
        .unwrap();
    assert_eq!(ok.node_count(), 3);
    assert_eq!(ok.ttl(), Duration::from_millis(2500));
    assert_eq!(ok.node_timeout(), Duration::from_millis(40));

    for bad in [
        &[][..],
        &[("REDLOCK_NODES", " , ")][..],
        &[
            ("REDLOCK_NODES", "redis://127.0.0.1:1"),
            ("REDLOCK_TTL_MS", "ten"),
        ][..],
        &[
            ("REDLOCK_NODES", "redis://127.0.0.1:1"),
            ("REDLOCK_NODE_TIMEOUT_MS", "-1"),
        ][..],
    ] {
        let pairs: &'static [(&'static str, &'static str)] = bad;
        assert!(matches!(
            Redlock::builder().with_vars(vars(pairs)),
            Err(ConfigError::InvalidEnv { .. })
        ));
    }
    let err = Redlock::builder()
        .with_vars(vars(&[(
            "REDLOCK_NODES",
            "redis://u:hunter2@h:1,garbage://u:hunter2@x",
        )]))
        .unwrap()
        .build()
        .await
        .unwrap_err();
    assert!(!format!("{err} {err:?}").contains("hunter2"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_keys_and_options_are_errors() {
    let cluster = cluster(5).await;
    let redlock = redlock(&cluster).await;
    assert!(matches!(
        redlock.try_acquire("").await,
        Err(LockError::InvalidKey { .. })
    ));
    assert!(matches!(
        redlock.try_acquire("k".repeat(MAX_KEY_LEN + 1)).await,
        Err(LockError::InvalidKey { .. })
    ));
    assert!(matches!(
        redlock.acquire_many(Vec::<String>::new()).await,
        Err(LockError::InvalidKey { .. })
    ));
    for ttl in [Duration::ZERO, Duration::from_millis(1), Duration::MAX] {
        assert!(matches!(
            redlock.acquire_with("k", LockOptions::new().ttl(ttl)).await,
            Err(LockError::InvalidOptions { .. })
        ));
    }
    let lock = redlock.try_acquire("k").await.unwrap();
    assert!(matches!(
        lock.extend(Duration::ZERO).await,
        Err(LockError::InvalidOptions { .. })
    ));
    assert!(lock.is_held(), "a rejected extend must not touch the lease");
    lock.release().await.unwrap();
    // Unicode keys are fine.
    redlock
        .try_acquire("заказ/42 🔒")
        .await
        .unwrap()
        .release()
        .await
        .unwrap();
}

/// Reads variables from `pairs` (no process environment is touched, so tests cannot race).
fn env_of(pairs: Vec<(&'static str, String)>) -> impl Fn(&str) -> Option<String> {
    move |name: &str| {
        pairs
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.clone())
    }
}

fn with_env(extra: &[(&'static str, &str)]) -> Result<tower_redlock::RedlockBuilder, ConfigError> {
    let mut pairs = vec![("REDLOCK_NODES", "redis://127.0.0.1:1".to_owned())];
    pairs.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
    Redlock::builder().with_vars(env_of(pairs))
}

#[tokio::test]
async fn every_deployment_setting_is_read_from_the_environment() {
    let builder = with_env(&[
        ("REDLOCK_FENCING", "true"),
        ("REDLOCK_DRIFT_FACTOR", "0.05"),
        ("REDLOCK_MAX_HOLD_MS", "60000"),
        ("REDLOCK_NODE_BACKLOG", "7"),
        ("REDLOCK_POOL_SIZE", "2"),
        ("REDLOCK_RETRY_MS", "2500"),
    ])
    .unwrap();
    let shown = format!("{builder:?}");
    for expected in [
        "fencing: true",
        "drift_factor: 0.05",
        "max_hold: Some(60s)",
        "node_backlog: 7",
        "pool_size: 2",
        "deadline: Some(2.5s)",
    ] {
        assert!(shown.contains(expected), "{expected} not in {shown}");
    }
    assert!(builder.build().await.is_ok());
    // The other spellings of a boolean, and 0 for "no retry".
    for (value, on) in [("1", true), ("ON", true), ("no", false), (" off ", false)] {
        let shown = format!("{:?}", with_env(&[("REDLOCK_FENCING", value)]).unwrap());
        assert!(
            shown.contains(&format!("fencing: {on}")),
            "{value}: {shown}"
        );
    }
    let one_attempt = format!("{:?}", with_env(&[("REDLOCK_RETRY_MS", "0")]).unwrap());
    assert!(one_attempt.contains("attempts: 1,"), "{one_attempt}");
}

#[test]
fn bad_environment_values_name_the_variable_and_never_echo_the_value() {
    for (var, value) in [
        ("REDLOCK_FENCING", "hunter2"),
        ("REDLOCK_DRIFT_FACTOR", "hunter2"),
        ("REDLOCK_DRIFT_FACTOR", "0.5"),
        ("REDLOCK_DRIFT_FACTOR", "NaN"),
        ("REDLOCK_DRIFT_FACTOR", "-0.1"),
        ("REDLOCK_MAX_HOLD_MS", "hunter2"),
        ("REDLOCK_MAX_HOLD_MS", "0"),
        ("REDLOCK_NODE_BACKLOG", "0"),
        ("REDLOCK_NODE_BACKLOG", "hunter2"),
        ("REDLOCK_POOL_SIZE", "0"),
        ("REDLOCK_POOL_SIZE", "65"),
        ("REDLOCK_POOL_SIZE", "hunter2"),
        ("REDLOCK_RETRY_MS", "-5"),
        ("REDLOCK_RETRY_MS", "hunter2"),
        ("REDLOCK_TLS_CA", "/nonexistent/hunter2.pem"),
    ] {
        let err = with_env(&[(var, value)]).expect_err(var);
        match &err {
            ConfigError::InvalidEnv { var: named, .. } => assert_eq!(*named, var, "{value}"),
            other => panic!("{var}={value}: {other:?}"),
        }
        let shown = format!("{err} {err:?}");
        assert!(shown.contains(var), "{shown}");
        assert!(!shown.contains("hunter2"), "{shown}");
    }
}

/// A CA file must exist and hold a PEM certificate; without the `tls` feature any CA is
/// refused rather than ignored.
#[test]
fn the_tls_ca_variable_reads_a_pem_file() {
    let dir = std::env::temp_dir().join(format!("redlock-ca-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let pem = dir.join("ca.pem");
    std::fs::write(
        &pem,
        "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIU\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let not_pem = dir.join("not.pem");
    std::fs::write(&not_pem, "hunter2").unwrap();
    let read = |path: &std::path::Path| with_env(&[("REDLOCK_TLS_CA", path.to_str().unwrap())]);
    if cfg!(feature = "tls") {
        assert!(read(&pem).is_ok());
        let err = read(&not_pem).unwrap_err();
        assert!(matches!(
            err,
            ConfigError::InvalidEnv {
                var: "REDLOCK_TLS_CA",
                ..
            }
        ));
        assert!(!format!("{err}").contains("hunter2"));
    } else {
        assert!(matches!(
            read(&pem),
            Err(ConfigError::InvalidEnv {
                var: "REDLOCK_TLS_CA",
                ..
            })
        ));
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `build()` outside a Tokio runtime is an error, not a panic (it used to panic spawning
/// the engine's background task).
#[test]
fn building_outside_a_runtime_is_an_error() {
    use std::future::Future;
    use std::task::{Context, Poll, Waker};

    let mut build = Box::pin(Redlock::builder().node("redis://127.0.0.1:1").build());
    let mut cx = Context::from_waker(Waker::noop());
    match build.as_mut().poll(&mut cx) {
        Poll::Ready(Err(err)) => {
            assert_eq!(err, ConfigError::NoRuntime);
            assert!(err.to_string().contains("Tokio runtime"), "{err}");
        }
        Poll::Ready(Ok(_)) => panic!("built without a runtime"),
        Poll::Pending => panic!("waited for something without a runtime"),
    }
}
