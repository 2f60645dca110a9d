//! Shared leases (read/write, permits) against real `redis-server` nodes.
#![cfg(feature = "testkit")]

#[path = "../support/mod.rs"]
mod support;

mod faults;
#[cfg(feature = "axum")]
mod layer;
mod permits;
mod rw;
