//! Topologies: what each kind of node gives, against real servers.
//!
//! - `mixed`: 2 standalone + 1 Cluster + 2 Sentinel nodes are five votes; any two lost
//!   keep it working, a third lost fails closed.
//! - `single`: single-instance mode: one node (a managed endpoint, one server): every
//!   feature works unchanged; the node down fails closed.
#![cfg(all(feature = "testkit", feature = "axum"))]

#[path = "../support/mod.rs"]
mod support;

mod mixed;
mod single;
