//! The safety properties checked after a run (see the module docs of `main.rs`).

use std::collections::BTreeMap;

use tokio::time::Instant;

use crate::record::{Grant, Record};
use crate::{CALM, NODE_TIMEOUT};

/// (a) No two holders of a key overlap within validity; (b) fencing tokens strictly
/// increase per key, unless a majority of the nodes restarted empty.
pub fn grants(record: &mut Record, nodes: usize, start: Instant) {
    let show = |g: &Grant| {
        format!(
            "holder {} on {:?} from {:?} to {:?} fenced {:?}",
            g.holder,
            g.keys,
            g.acquired - start,
            g.end - start,
            g.token
        )
    };
    let mut by_key: BTreeMap<&str, Vec<Grant>> = BTreeMap::new();
    for grant in &record.grants {
        for key in &grant.keys {
            by_key.entry(key).or_default().push(grant.clone());
        }
    }
    let mut emptied = record.emptied.clone();
    emptied.sort_unstable();
    emptied.dedup();
    let fencing_holds = emptied.len() < nodes / 2 + 1;
    for (key, mut grants) in by_key {
        grants.sort_by_key(|g| (g.acquired, g.holder));
        for (i, a) in grants.iter().enumerate() {
            for b in &grants[i + 1..] {
                if a.holder != b.holder
                    && a.acquired < a.end
                    && b.acquired < b.end
                    && b.acquired < a.end
                {
                    record.violations.push(format!(
                        "overlap on {key}: {} and {}",
                        show(a),
                        show(b)
                    ));
                }
                if fencing_holds
                    && let (Some(ta), Some(tb)) = (a.token, b.token)
                    && tb <= ta
                    && b.acquired > a.acquired
                {
                    record.violations.push(format!(
                        "fencing on {key}: {} then {}",
                        show(a),
                        show(b)
                    ));
                }
            }
        }
    }
}

/// (f) A lease given back while valid, with every node free of faults from `CALM` before
/// until the probe (a release dropped half-way included), is gone from a quorum of nodes
/// by the probe, unless someone acquired the key meanwhile.
pub fn releases(record: &mut Record, start: Instant) {
    let quiet = |from: Instant, to: Instant| {
        record
            .faults
            .iter()
            .all(|&(_, start, end)| end < from || start > to)
    };
    let mut found = Vec::new();
    for release in &record.releases {
        if !quiet(release.at - CALM, release.probed) {
            continue;
        }
        for key in &release.still_held {
            let taken = record.grants.iter().any(|g| {
                g.holder != release.holder
                    && g.keys.contains(key)
                    && g.acquired >= release.at
                    && g.acquired <= release.probed + NODE_TIMEOUT
            });
            if !taken {
                found.push(format!(
                    "{} by holder {} at {:?}: {key} still set on a quorum at {:?}",
                    release.how,
                    release.holder,
                    release.at - start,
                    release.probed - start
                ));
            }
        }
    }
    record.violations.extend(found);
}
