//! `HeldLock::ended()` (and `lost()`, the same future) resolve on loss and on release, for
//! every clone; `is_released()` tells the two apart.

use tower_redlock::LockOptions;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ended_resolves_on_release_and_on_loss_for_every_clone() {
    let cluster = cluster(5).await;
    let redlock = redlock(&cluster).await;

    // Released through one clone: the others see it end.
    let lock = redlock.try_acquire("e:released").await.unwrap();
    let (ended, lost) = (lock.ended(), lock.lost());
    let clone = lock.clone();
    lock.release().await.unwrap();
    tokio::time::timeout(NO_HANG, ended).await.unwrap();
    tokio::time::timeout(NO_HANG, lost).await.unwrap();
    assert!(!clone.is_held() && clone.is_released());

    // Lost (never extended, it runs out): it ends, and is not released.
    let fragile = redlock
        .acquire_with(
            "e:lost",
            LockOptions::new()
                .no_retry()
                .auto_extend(false)
                .ttl(SHORT_TTL),
        )
        .await
        .unwrap();
    tokio::time::timeout(NO_HANG, fragile.ended())
        .await
        .unwrap();
    assert!(!fragile.is_held() && !fragile.is_released());
}
