//! One task's work: random acquisitions of one or two keys, held a random time while
//! extending them (racing the watchdog and each other), then released, dropped, or released
//! with the release cancelled half-way.

use std::time::Duration;

use futures_util::FutureExt;
use tokio::time::{Instant, sleep, sleep_until, timeout};
use tower_redlock::sim::SimCluster;
use tower_redlock::{HeldLock, LockOptions, Redlock, RetryPolicy};

use crate::record::{Grant, Log, Release};
use crate::rng::Rng;
use crate::{PROBE, TTL};

/// The key sets a task asks for: single keys next to a two-key lock on both.
const KEY_SETS: [&[&str]; 3] = [&["a"], &["b"], &["a", "b"]];
/// Most operations per task.
const MAX_OPS: usize = 4;

/// A task's engine, nodes and record.
pub struct Worker {
    pub id: usize,
    pub engine: Redlock,
    pub cluster: SimCluster,
    pub log: Log,
    pub rng: Rng,
    /// No operation starts after this.
    pub until: Instant,
}

impl Worker {
    pub async fn run(mut self) {
        let mut probes = Vec::new();
        for op in 0..MAX_OPS {
            if Instant::now() >= self.until {
                break;
            }
            let holder = self.id * 100 + op;
            let keys = KEY_SETS[self.rng.below(KEY_SETS.len() as u64) as usize];
            let fencing = self.rng.one_in(2);
            // No jitter: the engine would draw it from the OS; the seed varies the delays.
            let retry = RetryPolicy::until(self.rng.millis(0, 500))
                .base_delay(self.rng.millis(10, 40))
                .jitter(0.0);
            let options = LockOptions::new().retry(retry).fencing(fencing);
            let acquire = self.engine.acquire_many_with(keys, options);
            let who = format!("h{holder}");
            let acquired = if self.rng.one_in(5) {
                // Cancel mid-acquire (or get it in time).
                match timeout(self.rng.millis(0, 60), acquire).await {
                    Ok(result) => result,
                    Err(_) => {
                        self.log
                            .event(&who, format_args!("acquire {keys:?} cancelled"));
                        continue;
                    }
                }
            } else {
                acquire.await
            };
            let lock = match acquired {
                Ok(lock) => lock,
                Err(e) => {
                    self.log
                        .event(&who, format_args!("acquire {keys:?}: {e:?}"));
                    continue;
                }
            };
            self.log.event(
                &who,
                format_args!("acquire {keys:?} fenced {:?}", lock.fencing_token()),
            );
            if lock.keys() != keys {
                self.log.violation(format!(
                    "holder {holder} asked for {keys:?} and got a lease on {:?}",
                    lock.keys()
                ));
            }
            if let Some(probe) = self.hold(holder, keys, lock).await {
                probes.push(tokio::spawn(probe));
            }
            sleep(self.rng.millis(0, 50)).await;
        }
        for probe in probes {
            let _ = probe.await;
        }
    }

    /// Holds `lock`, extending it or not, then gives it back; records the grant. Returns
    /// the probe of the nodes after the release, for a lease given back while valid.
    async fn hold(
        &mut self,
        holder: usize,
        keys: &'static [&'static str],
        lock: HeldLock,
    ) -> Option<impl Future<Output = ()> + use<>> {
        let who = format!("h{holder}");
        let acquired = Instant::now();
        let token = lock.fencing_token();
        let hold_for = if self.rng.one_in(4) {
            self.rng.millis(0, 10)
        } else {
            self.rng.millis(0, 900)
        };
        // Extensions: some alone, some two at once (as two clones would), with ttls shorter
        // and longer than the default, at times that often meet the watchdog's.
        let mut plan: Vec<(Duration, Vec<Duration>)> = Vec::new();
        for _ in 0..self.rng.below(4) {
            let at = if self.rng.one_in(2) {
                (TTL / 3) * (1 + self.rng.below(2) as u32) - self.rng.millis(0, 15)
            } else {
                self.rng.millis(0, 700)
            };
            let count = if self.rng.one_in(4) { 2 } else { 1 };
            let ttls = (0..count).map(|_| self.rng.millis(100, 1000)).collect();
            plan.push((at.min(hold_for), ttls));
        }
        plan.sort_by_key(|(at, _)| *at);
        self.check_validity(holder, keys, &lock, acquired);
        let ended = lock.ended();
        tokio::pin!(ended);
        let log = self.log.clone();
        let work = async {
            for (at, ttls) in &plan {
                sleep_until(acquired + *at).await;
                let outcomes =
                    futures_util::future::join_all(ttls.iter().map(|t| lock.extend(*t))).await;
                log.event(&who, format_args!("extend {ttls:?}: {outcomes:?}"));
                self.check_validity(holder, keys, &lock, acquired);
            }
            sleep_until(acquired + hold_for).await;
        };
        let ended_first = tokio::select! {
            biased;
            _ = &mut ended => true,
            _ = work => false,
        };
        let now = Instant::now();
        let valid_until = lock.valid_until();
        if ended_first && !lock.is_released() && now > valid_until {
            self.log.violation(format!(
                "holder {holder} on {keys:?}: ended() at {:?}, after valid_until {:?}",
                self.log.at(now),
                self.log.at(valid_until)
            ));
        }
        if !ended_first && now > valid_until {
            // Give the engine's timers their turn at this instant, then it must have ended.
            for _ in 0..20 {
                tokio::task::yield_now().await;
            }
            if ended.as_mut().now_or_never().is_none() {
                self.log.violation(format!(
                    "holder {holder} on {keys:?}: validity ended at {:?}, ended() not resolved at {:?}",
                    self.log.at(valid_until),
                    self.log.at(now)
                ));
            }
        }
        self.log.with(|r| {
            r.grants.push(Grant {
                holder,
                keys: keys.to_vec(),
                acquired,
                end: now.min(valid_until),
                token,
            })
        });
        self.check_validity(holder, keys, &lock, acquired);
        let valid = lock.is_held() && Instant::now() < lock.valid_until();
        let giving_back = Instant::now();
        let how = match self.rng.below(6) {
            0 | 1 => {
                drop(lock);
                "drop"
            }
            2 => {
                // A release dropped half-way (a client that went away): it must still
                // happen.
                let cut = if self.rng.one_in(2) {
                    Duration::ZERO
                } else {
                    self.rng.millis(0, 10)
                };
                match timeout(cut, lock.release()).await {
                    Ok(outcome) => {
                        self.log.event(&who, format_args!("release: {outcome:?}"));
                        "release"
                    }
                    Err(_) => "cancelled release",
                }
            }
            _ => {
                let outcome = lock.release().await;
                self.log.event(&who, format_args!("release: {outcome:?}"));
                "release"
            }
        };
        self.log.event(&who, how);
        valid.then(|| {
            probe(
                self.cluster.clone(),
                self.log.clone(),
                (holder, how, giving_back),
                keys,
            )
        })
    }
}

impl Worker {
    /// (g) `valid_until` never overstates what a quorum of nodes holds: while the lease is
    /// held, a quorum of nodes keep every key of it until at least `valid_until` (unless a
    /// node restarted empty since `acquired`).
    fn check_validity(&self, holder: usize, keys: &[&str], lock: &HeldLock, acquired: Instant) {
        let now = Instant::now();
        let valid_until = lock.valid_until();
        let emptied = self
            .log
            .with(|r| r.emptied_at.iter().any(|&at| at >= acquired - TTL));
        if !lock.is_held() || now >= valid_until || emptied {
            return;
        }
        let nodes = self.cluster.len();
        let holding = (0..nodes)
            .filter(|&n| {
                keys.iter().all(|key| {
                    let pttl = self.cluster.pttl(n, &format!("redlock:{{{key}}}:lock"));
                    // PTTL is in whole milliseconds, rounded down.
                    pttl >= 0 && now + Duration::from_millis(pttl as u64 + 1) >= valid_until
                })
            })
            .count();
        if holding < nodes / 2 + 1 {
            self.log.violation(format!(
                "holder {holder} on {keys:?}: valid until {:?}, but only {holding} of {nodes} nodes hold its keys that long",
                self.log.at(valid_until)
            ));
        }
    }
}

/// `PROBE` after a lease was given back (`at`, by `holder`, `how`): which of `keys` a
/// quorum of nodes still holds.
async fn probe(
    cluster: SimCluster,
    log: Log,
    (holder, how, at): (usize, &'static str, Instant),
    keys: &'static [&'static str],
) {
    sleep_until(at + PROBE).await;
    let quorum = cluster.len() / 2 + 1;
    let still_held = keys
        .iter()
        .copied()
        .filter(|key| {
            let name = format!("redlock:{{{key}}}:lock");
            (0..cluster.len())
                .filter(|&n| cluster.value(n, &name).is_some())
                .count()
                >= quorum
        })
        .collect();
    log.with(|r| {
        r.releases.push(Release {
            holder,
            how,
            at,
            probed: Instant::now(),
            still_held,
        })
    });
}
