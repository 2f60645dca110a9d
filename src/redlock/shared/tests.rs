use crate::{LeaseMode, LockError, LockOptions, Redlock};

/// On simulated nodes, permits (ordinary leases) work; read/write leases fail with a clear
/// error instead of a node error per call.
#[tokio::test]
async fn in_memory_nodes_take_permits_and_refuse_read_write() {
    let redlock = Redlock::builder().in_memory(3).build().await.unwrap();
    let once = LockOptions::new().no_retry();
    let a = redlock
        .acquire_permit_with("k", 2, once.clone())
        .await
        .unwrap();
    let _b = redlock
        .acquire_permit_with("k", 2, once.clone())
        .await
        .unwrap();
    let third = redlock.acquire_permit_with("k", 2, once.clone()).await;
    assert!(
        matches!(third, Err(LockError::Contended { .. })),
        "{third:?}"
    );
    a.release().await.unwrap();
    let _c = redlock
        .acquire_permit_with("k", 2, once.clone())
        .await
        .unwrap();
    for mode in [LeaseMode::Read, LeaseMode::Write] {
        let err = redlock
            .acquire_mode_with("k", mode, once.clone())
            .await
            .unwrap_err();
        assert!(matches!(err, LockError::InvalidOptions { .. }), "{err}");
        assert!(err.to_string().contains("not simulated"), "{err}");
    }
}
