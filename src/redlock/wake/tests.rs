//! Wake-on-release tests.

use redis::Client;

use super::*;

#[test]
fn subscribers_keep_their_node_index_when_a_client_fails() {
    let client = || Client::open("redis://127.0.0.1:1").ok();
    let nodes = subscribers([client(), None, client()], Duration::from_secs(1));
    let indexes: Vec<usize> = nodes.iter().map(|node| node.index).collect();
    assert_eq!(indexes, [0, 2]);
}

#[cfg(feature = "testkit")]
mod interleaving {
    use super::*;
    use crate::testkit::{LocalCluster, eventually};

    const CHANNEL: &str = "t:wake:hot";
    const DEADLINE: Duration = Duration::from_secs(10);

    async fn hub(cluster: &LocalCluster) -> Arc<WakeHub> {
        let urls: Vec<NodeUrl> = cluster
            .urls()
            .iter()
            .map(|url| NodeUrl::parse(url).unwrap())
            .collect();
        Arc::new(WakeHub::new(&urls, Duration::from_secs(2), None))
    }

    /// Waits (bounded) until no background unsubscription is left.
    async fn settled(hub: &WakeHub) {
        let done = eventually(DEADLINE, || async {
            hub.channels.unsubscribing.load(Ordering::Acquire) == 0
        })
        .await;
        assert!(done, "a background unsubscription never finished");
    }

    /// Subscribers of `CHANNEL` on node `i`.
    async fn numsub(cluster: &LocalCluster, i: usize) -> i64 {
        let mut conn = Client::open(cluster.url(i))
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        let (_, count): (String, i64) = redis::cmd("PUBSUB")
            .arg("NUMSUB")
            .arg(CHANNEL)
            .query_async(&mut conn)
            .await
            .unwrap();
        count
    }

    /// Every node still has the channel subscribed, and a release published there wakes
    /// the waiter.
    async fn still_woken(cluster: &LocalCluster, waiter: &mut Interest) {
        for i in 0..cluster.len() {
            assert_eq!(
                numsub(cluster, i).await,
                1,
                "node {i} lost the subscription"
            );
        }
        waiter.mark_seen();
        let mut conn = Client::open(cluster.url(1))
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        let _: i64 = redis::cmd("PUBLISH")
            .arg(CHANNEL)
            .arg("released")
            .query_async(&mut conn)
            .await
            .unwrap();
        assert!(
            tokio::time::timeout(DEADLINE, waiter.released())
                .await
                .is_ok(),
            "the release did not wake the waiter"
        );
    }

    /// Single-threaded: the last waiter leaves (its unsubscription is spawned, not run)
    /// and a new waiter registers before that task runs.
    #[tokio::test]
    async fn a_waiter_back_before_the_unsubscription_keeps_the_subscription() {
        let cluster = LocalCluster::start(2).await.unwrap();
        let hub = hub(&cluster).await;
        let channels = [CHANNEL.to_owned()];
        let first = hub.interest(&channels).await;
        drop(first);
        let mut second = hub.interest(&channels).await;
        settled(&hub).await;
        still_woken(&cluster, &mut second).await;
    }

    /// Single-threaded: the unsubscription has decided and is under way when a new waiter
    /// registers.
    #[tokio::test]
    async fn a_waiter_back_during_the_unsubscription_subscribes_after_it() {
        let cluster = LocalCluster::start(2).await.unwrap();
        let hub = hub(&cluster).await;
        let channels = [CHANNEL.to_owned()];
        let first = hub.interest(&channels).await;
        drop(first);
        let mut forgotten = false;
        for _ in 0..1000 {
            tokio::task::yield_now().await;
            let map = hub.channels.map.lock().unwrap();
            if !map.contains_key(CHANNEL) {
                forgotten = true;
                break;
            }
        }
        assert!(forgotten, "the unsubscription never started");
        let mut second = hub.interest(&channels).await;
        settled(&hub).await;
        still_woken(&cluster, &mut second).await;
    }
}
