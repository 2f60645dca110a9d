//! Engine tests against real `redis-server` nodes started by the test kit.
#![cfg(feature = "testkit")]

#[path = "../support/mod.rs"]
mod support;

mod basics;
mod cancellation;
mod config;
mod ended;
mod exclusion;
mod extend;
mod faults;
mod fencing;
mod handoff;
mod health;
mod quorum;
mod safety_a;
mod safety_b1;
mod safety_b2;
mod settings;
mod shutdown;
mod watchdog;
