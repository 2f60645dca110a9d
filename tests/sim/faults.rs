//! The fault schedule: per node, and now and then a majority at once.

use std::time::Duration;

use tokio::time::{Instant, sleep};
use tower_redlock::sim::{Fault, SimCluster};

use crate::TTL;
use crate::record::Log;
use crate::rng::Rng;

/// A node's usual network: a small delay and jitter (under the node timeout), or none.
#[derive(Clone, Copy)]
pub struct Baseline(Option<(Duration, Duration)>);

impl Baseline {
    pub fn draw(rng: &mut Rng) -> Baseline {
        Baseline((!rng.one_in(3)).then(|| (rng.millis(0, 2), rng.millis(0, 8))))
    }

    /// Heals `node` back to its usual network.
    pub fn heal(self, cluster: &SimCluster, node: usize) {
        cluster.inject(node, Fault::Heal);
        if let Some((fixed, jitter)) = self.0 {
            cluster.inject(node, Fault::Delay { fixed, jitter });
        }
    }
}

/// A fault's length: often shorter than the ttl, often longer (keys expire meanwhile).
fn length(rng: &mut Rng) -> Duration {
    if rng.one_in(2) {
        rng.millis(10, 300)
    } else {
        rng.millis(300, 900)
    }
}

/// One node's faults until `until`.
pub async fn node_faults(
    cluster: SimCluster,
    node: usize,
    baseline: Baseline,
    mut rng: Rng,
    until: Instant,
    log: Log,
) {
    let who = format!("n{node}");
    loop {
        sleep(rng.millis(20, 500)).await;
        if Instant::now() >= until {
            break;
        }
        let from = Instant::now();
        let length = length(&mut rng);
        let what = match rng.below(8) {
            0 => {
                let (fixed, jitter) = (rng.millis(0, 20), rng.millis(0, 40));
                cluster.inject(node, Fault::Delay { fixed, jitter });
                sleep(length).await;
                "delay"
            }
            1 => {
                cluster.inject(node, Fault::DropReplies(true));
                sleep(length).await;
                "drop replies"
            }
            2 => {
                cluster.inject(node, Fault::Partition(true));
                sleep(length).await;
                "partition"
            }
            3 | 4 => {
                cluster.inject(node, Fault::Pause);
                sleep(length).await;
                "pause"
            }
            5 => {
                cluster.inject(node, Fault::RestartWithData);
                "restart"
            }
            6 => {
                // Redlock's delayed restart: down longer than any lease's ttl (the
                // workers extend by at most 2.5 ttl).
                log.with(|r| {
                    r.emptied.push(node);
                    r.emptied_at.push(Instant::now());
                });
                cluster.inject(node, Fault::RestartEmpty);
                cluster.inject(node, Fault::Partition(true));
                sleep(TTL * 3).await;
                "empty restart"
            }
            _ => continue,
        };
        baseline.heal(&cluster, node);
        log.event(&who, format_args!("{what} from {:?}", from - log.start));
        log.with(|r| r.faults.push((node, from, Instant::now())));
    }
}

/// Now and then, a majority of the nodes paused together for a while (keys expire on
/// them meanwhile), until `until`.
pub async fn majority_pauses(cluster: SimCluster, mut rng: Rng, until: Instant, log: Log) {
    let nodes = cluster.len();
    loop {
        sleep(rng.millis(100, 900)).await;
        if Instant::now() >= until {
            break;
        }
        let from = Instant::now();
        let first = rng.below(nodes as u64) as usize;
        let paused: Vec<usize> = (0..nodes / 2 + 1).map(|i| (first + i) % nodes).collect();
        for &node in &paused {
            cluster.inject(node, Fault::Pause);
        }
        sleep(length(&mut rng)).await;
        for &node in &paused {
            cluster.inject(node, Fault::Resume);
        }
        log.event(
            "cluster",
            format_args!("paused {paused:?} from {:?}", from - log.start),
        );
        log.with(|r| {
            for &node in &paused {
                r.faults.push((node, from, Instant::now()));
            }
        });
    }
}
