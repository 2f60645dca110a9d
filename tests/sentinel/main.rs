//! A Sentinel-managed primary as one node, against real `redis-server --sentinel` groups.
//!
//! - `basic`: locking through a Sentinel node (acquire, extend, release, fencing; health
//!   names the primary); passwords for the Sentinels and the primary from the URL, never
//!   shown; an unknown master fails closed; a (writable) replica the Sentinels name as
//!   the primary gets no lock call (`ROLE`); a frozen Sentinel holds no call up;
//! - `failover`: a failover while a lease is held keeps it or ends it, never leaves a
//!   silent second holder;
//! - `caveat`: with replication cut, the promoted replica lacks the lock: one Sentinel node
//!   alone lets a rival in (the documented caveat); among three votes it cannot;
//! - `mixed`: five votes from standalone masters and two Sentinel groups, through two
//!   failovers.
#![cfg(feature = "testkit")]

#[path = "../support/mod.rs"]
mod support;

mod basic;
mod caveat;
mod failover;
mod mixed;
