//! Topologies: what each kind of node gives, against real servers.
//!
//! - `single`: single-instance mode: one node (a managed endpoint, one server): every
//!   feature works unchanged; the node down fails closed.
#![cfg(all(feature = "testkit", feature = "axum"))]

#[path = "../support/mod.rs"]
mod support;

mod single;
