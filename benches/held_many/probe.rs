//! Raw connections to the nodes, to read their counters (`INFO`) and key counts (`DBSIZE`).

use std::time::Duration;

use redis::aio::MultiplexedConnection;
use tokio::time::sleep;

/// A raw connection per node, to read the nodes' counters.
pub struct Probe(Vec<MultiplexedConnection>);

/// Counters of one node at one moment.
#[derive(Clone, Copy, Default)]
pub struct NodeStats {
    /// `EVALSHA` + `EVAL` calls (extend, release; acquire is a bare `SET`).
    pub script_calls: u64,
    /// `PEXPIRE` calls made inside scripts: one per key extended.
    pub pexpire_calls: u64,
    /// Read events of the node's event loop (`total_reads_processed`): how many separate
    /// chunks the requests arrived in.
    pub reads: u64,
}

/// `field=` or `field:` value of `section` (e.g. `cmdstat_evalsha:`) in an `INFO` reply.
fn info_value(info: &str, section: &str, field: &str) -> u64 {
    info.lines()
        .find_map(|line| line.strip_prefix(section))
        .and_then(|rest| {
            rest.split(',')
                .find_map(|kv| kv.strip_prefix(field))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0)
}

impl Probe {
    pub async fn connect(urls: &[String]) -> Probe {
        let mut conns = Vec::new();
        for url in urls {
            let client = redis::Client::open(url.as_str()).expect("node url");
            conns.push(
                client
                    .get_multiplexed_async_connection()
                    .await
                    .expect("node"),
            );
        }
        Probe(conns)
    }

    pub async fn stats(&self) -> Vec<NodeStats> {
        let mut all = Vec::new();
        for conn in &self.0 {
            let mut conn = conn.clone();
            let info: String = redis::cmd("INFO")
                .arg("everything")
                .query_async(&mut conn)
                .await
                .expect("INFO");
            all.push(NodeStats {
                script_calls: info_value(&info, "cmdstat_evalsha:", "calls=")
                    + info_value(&info, "cmdstat_eval:", "calls="),
                pexpire_calls: info_value(&info, "cmdstat_pexpire:", "calls="),
                reads: info_value(&info, "total_reads_processed:", ""),
            });
        }
        all
    }

    async fn dbsize(&self) -> Vec<u64> {
        let mut sizes = Vec::new();
        for conn in &self.0 {
            let mut conn = conn.clone();
            sizes.push(
                redis::cmd("DBSIZE")
                    .query_async(&mut conn)
                    .await
                    .expect("DBSIZE"),
            );
        }
        sizes
    }

    /// Keys on each node once they are all empty, or after 100 polls 50 ms apart.
    pub async fn wait_empty(&self) -> Vec<u64> {
        let mut sizes = self.dbsize().await;
        for _ in 0..100 {
            if sizes.iter().all(|&n| n == 0) {
                break;
            }
            sleep(Duration::from_millis(50)).await;
            sizes = self.dbsize().await;
        }
        sizes
    }
}
