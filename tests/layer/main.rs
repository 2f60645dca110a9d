#![cfg(all(feature = "testkit", feature = "axum"))]
//! The Tower middleware and the Axum extractors, on real `redis-server` nodes.

mod apps;
#[path = "../support/mod.rs"]
mod support;

mod axum_extract;
mod basic;
mod extractors;
mod faults;
mod keys;
mod lifecycle;
mod lifetime;
mod multi;
mod nesting;
mod options;
mod upgrade;
mod wire;
