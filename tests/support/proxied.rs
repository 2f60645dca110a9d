//! A cluster whose nodes are each reached through a fault proxy.

use tower_redlock::testkit::{FaultProxy, LocalCluster};

/// Nodes, each behind its own fault proxy.
pub struct Proxied {
    // Proxies first: they are dropped (closing their sockets) before the nodes.
    pub proxies: Vec<FaultProxy>,
    pub cluster: LocalCluster,
}

impl Proxied {
    pub async fn start(n: usize) -> Proxied {
        let cluster = super::cluster(n).await;
        let proxies = cluster.proxies().await.expect("start fault proxies");
        Proxied { proxies, cluster }
    }

    /// URLs of the proxies (what the engine under test talks to).
    pub fn urls(&self) -> Vec<String> {
        self.proxies.iter().map(FaultProxy::url).collect()
    }

    pub fn blackhole(&self, nodes: impl IntoIterator<Item = usize>) {
        for i in nodes {
            self.proxies[i].blackhole();
        }
    }

    pub fn heal_all(&self) {
        for proxy in &self.proxies {
            proxy.heal();
        }
    }
}
