//! The model on its own, under paused time: expiry, faults, ordering, pub/sub.

use std::time::Duration;

use redis::Value;
use tokio::time::{Instant, advance, timeout};

use super::{SimConnection, SimNode};
use crate::redlock::core::scripts;
use crate::redlock::node::{Call, NodeError};

const NODE_TIMEOUT: Duration = Duration::from_millis(50);

/// `args` as a command call (the first is the command's name).
pub(super) fn cmd(args: &[&str]) -> Call {
    let mut cmd = redis::cmd(args[0]);
    for arg in &args[1..] {
        cmd.arg(*arg);
    }
    Call::Command(cmd)
}

/// `SET key token NX PX ms`, as the engine sends it for a single key.
pub(super) fn set_nx_px(key: &str, token: &str, ms: u64) -> Call {
    let mut cmd = redis::cmd("SET");
    cmd.arg(key).arg(token).arg("NX").arg("PX").arg(ms);
    Call::Command(cmd)
}

async fn ok(conn: &SimConnection, call: &Call) -> Value {
    match timeout(NODE_TIMEOUT, conn.call(call)).await {
        Ok(Ok(value)) => value,
        other => panic!(
            "expected a reply, got {:?}",
            other.map(|r| r.map_err(|e| e.to_string()))
        ),
    }
}

/// Whether the call's reply failed to come within the node timeout.
async fn times_out(conn: &SimConnection, call: &Call) -> bool {
    timeout(NODE_TIMEOUT, conn.call(call)).await.is_err()
}

#[tokio::test(start_paused = true)]
async fn a_key_lives_exactly_its_px() {
    let node = SimNode::new();
    let conn = node.connect();
    assert_eq!(ok(&conn, &set_nx_px("k", "t", 100)).await, Value::Okay);
    assert_eq!(ok(&conn, &set_nx_px("k", "u", 100)).await, Value::Nil);
    advance(Duration::from_millis(40)).await;
    assert_eq!(ok(&conn, &cmd(&["PTTL", "k"])).await, Value::Int(60));
    advance(Duration::from_millis(60)).await;
    // At its deadline it is still there (Redis expires when `now > when`)...
    assert_eq!(ok(&conn, &cmd(&["PTTL", "k"])).await, Value::Int(0));
    assert_eq!(node.value("k").as_deref(), Some(&b"t"[..]));
    // ... and gone a moment after.
    advance(Duration::from_nanos(1)).await;
    assert_eq!(ok(&conn, &cmd(&["PTTL", "k"])).await, Value::Int(-2));
    assert_eq!(ok(&conn, &cmd(&["GET", "k"])).await, Value::Nil);
    assert_eq!(ok(&conn, &set_nx_px("k", "u", 100)).await, Value::Okay);
    assert!(node.keys().iter().eq([b"k".to_vec()].iter()));
}

#[tokio::test(start_paused = true)]
async fn extend_never_resurrects_an_expired_key() {
    let node = SimNode::new();
    let conn = node.connect();
    ok(&conn, &set_nx_px("k", "t", 10)).await;
    advance(Duration::from_millis(11)).await;
    let extend = Call::script(&scripts::EXTEND, 1, |c| {
        c.arg("k").arg("t").arg(1000).arg(1);
    });
    assert_eq!(ok(&conn, &extend).await, Value::Int(0));
    assert_eq!(node.value("k"), None);
}

#[tokio::test(start_paused = true)]
async fn a_dropped_reply_still_applies_the_write() {
    let node = SimNode::new();
    let conn = node.connect();
    node.drop_replies(true);
    assert!(times_out(&conn, &set_nx_px("k", "t", 1000)).await);
    assert_eq!(node.value("k").as_deref(), Some(&b"t"[..]));
    node.drop_replies(false);
    assert_eq!(
        ok(&conn, &cmd(&["GET", "k"])).await,
        Value::BulkString(b"t".to_vec())
    );
}

#[tokio::test(start_paused = true)]
async fn a_partition_neither_applies_nor_answers() {
    let node = SimNode::new();
    let conn = node.connect();
    let idle = node.connect();
    node.partition(true);
    assert!(times_out(&conn, &set_nx_px("k", "t", 1000)).await);
    assert_eq!(node.value("k"), None);
    // A connection made meanwhile fails; the older one is still open.
    let during = node.connect();
    assert!(during.is_broken());
    let refused = during.call(&cmd(&["PING"])).await.unwrap_err();
    assert!(refused.is_unresponsive());
    assert!(!conn.is_broken());
    node.partition(false);
    assert_eq!(node.value("k"), None, "a lost request is not applied later");
    // The connection that lost a request stays silent; one that stayed idle works.
    assert!(times_out(&conn, &cmd(&["SET", "k", "later"])).await);
    assert_eq!(node.value("k"), None);
    assert!(!conn.is_broken(), "the client cannot tell");
    let pong = Value::SimpleString("PONG".into());
    assert_eq!(ok(&idle, &cmd(&["PING"])).await, pong);
    assert_eq!(ok(&node.connect(), &cmd(&["PING"])).await, pong);
}

#[tokio::test(start_paused = true)]
async fn a_paused_node_applies_queued_requests_in_order_when_resumed() {
    let node = SimNode::new();
    let conn = node.connect();
    ok(&conn, &set_nx_px("before", "t", 1000)).await;
    node.pause();
    assert!(times_out(&conn, &set_nx_px("k", "t", 1000)).await);
    assert!(times_out(&conn, &cmd(&["APPEND", "k", "+"])).await);
    assert_eq!(node.value("k"), None, "nothing applied while paused");
    node.resume();
    assert_eq!(
        ok(&conn, &cmd(&["GET", "k"])).await,
        Value::BulkString(b"t+".to_vec())
    );
    // Applied at the resume; keys kept expiring while the node was stopped (100 ms).
    assert_eq!(ok(&conn, &cmd(&["PTTL", "k"])).await, Value::Int(1000));
    assert_eq!(ok(&conn, &cmd(&["PTTL", "before"])).await, Value::Int(900));
}

#[tokio::test(start_paused = true)]
async fn a_request_whose_caller_left_is_still_applied() {
    let node = SimNode::new();
    let conn = node.connect();
    node.set_delay(Duration::from_millis(200), Duration::ZERO);
    // The caller gives up before the request even reaches the node.
    assert!(times_out(&conn, &set_nx_px("k", "t", 1000)).await);
    assert_eq!(node.value("k"), None);
    advance(Duration::from_millis(60)).await;
    tokio::task::yield_now().await;
    assert_eq!(node.value("k").as_deref(), Some(&b"t"[..]));
}

#[tokio::test(start_paused = true)]
async fn a_call_dropped_before_its_request_was_written_is_never_sent() {
    let node = SimNode::new();
    let conn = node.connect();
    // Polled once (queued on the connection), then dropped before the connection's task
    // ran: redis-rs skips such a request, and so does the model.
    let dropped = timeout(Duration::ZERO, conn.call(&set_nx_px("k", "t", 1000))).await;
    assert!(dropped.is_err());
    assert_eq!(ok(&conn, &cmd(&["GET", "k"])).await, Value::Nil);
    // A request sent without waiting for its reply has nobody to leave: always sent.
    let mut set = redis::cmd("SET");
    set.arg("k").arg("t").set_no_response(true);
    let sent = Call::Command(set);
    let _ = timeout(Duration::ZERO, conn.call(&sent)).await;
    assert_eq!(
        ok(&conn, &cmd(&["GET", "k"])).await,
        Value::BulkString(b"t".to_vec())
    );
}

#[tokio::test(start_paused = true)]
async fn delays_keep_one_connections_order_and_replay_by_seed() {
    let applied_order = |seed| async move {
        let node = SimNode::with_seed(seed);
        let conn = node.connect();
        node.set_delay(Duration::from_millis(2), Duration::from_millis(20));
        let start = Instant::now();
        let calls: Vec<Call> = (0..20)
            .map(|i| cmd(&["APPEND", "k", &format!("{i},")]))
            .collect();
        let replies = futures_util::future::join_all(calls.iter().map(|c| conn.call(c))).await;
        assert!(replies.iter().all(Result::is_ok));
        (node.value("k"), start.elapsed())
    };
    let (value, took) = applied_order(1).await;
    let expected: String = (0..20).map(|i| format!("{i},")).collect();
    assert_eq!(
        value,
        Some(expected.into_bytes()),
        "applied in the order sent"
    );
    assert!(took >= Duration::from_millis(2) && took <= Duration::from_millis(22));
    assert_eq!(applied_order(1).await.1, took, "one seed, one timing");
}

#[tokio::test(start_paused = true)]
async fn a_request_sent_without_waiting_is_applied() {
    let node = SimNode::new();
    let conn = node.connect();
    let mut set = redis::cmd("SET");
    set.arg("k").arg("t").set_no_response(true);
    assert_eq!(ok(&conn, &Call::Command(set)).await, Value::Nil);
    assert_eq!(
        ok(&conn, &cmd(&["GET", "k"])).await,
        Value::BulkString(b"t".to_vec())
    );
}

fn reset(error: &NodeError) -> bool {
    matches!(error, NodeError::Redis(e) if e.is_connection_dropped())
}

#[tokio::test(start_paused = true)]
async fn a_restart_empty_loses_data_and_breaks_connections() {
    let node = SimNode::new();
    let conn = node.connect();
    let mut wakes = conn.subscribe("ch");
    ok(&conn, &set_nx_px("k", "t", 1000)).await;
    node.pause();
    let queued = tokio::spawn({
        let conn = conn.clone();
        async move { conn.call(&cmd(&["DEL", "k"])).await }
    });
    tokio::task::yield_now().await;
    node.restart_empty();
    assert!(
        reset(&queued.await.unwrap().unwrap_err()),
        "queued request fails"
    );
    assert!(conn.is_broken());
    assert!(reset(&conn.call(&cmd(&["PING"])).await.unwrap_err()));
    assert!(wakes.recv().await.is_err(), "subscriptions end");
    let fresh = node.connect();
    assert_eq!(ok(&fresh, &cmd(&["GET", "k"])).await, Value::Nil);
}

#[tokio::test(start_paused = true)]
async fn a_restart_with_data_keeps_keys_and_expiries() {
    let node = SimNode::new();
    let conn = node.connect();
    ok(&conn, &set_nx_px("k", "t", 1000)).await;
    advance(Duration::from_millis(300)).await;
    node.restart_with_data();
    assert!(conn.is_broken());
    let fresh = node.connect();
    assert_eq!(ok(&fresh, &cmd(&["PTTL", "k"])).await, Value::Int(700));
    assert_eq!(
        ok(&fresh, &cmd(&["GET", "k"])).await,
        Value::BulkString(b"t".to_vec())
    );
}

#[tokio::test(start_paused = true)]
async fn releasing_a_marked_key_wakes_subscribers() {
    let node = SimNode::new();
    let conn = node.connect();
    let mut wakes = conn.subscribe("ch");
    let release_one = Call::script(&scripts::RELEASE_ONE, 1, |c| {
        c.arg("k").arg("t").arg("ch");
    });
    ok(&conn, &set_nx_px("k", "t", 1000)).await;
    assert_eq!(ok(&conn, &release_one).await, Value::Int(1));
    assert!(
        wakes.try_recv().is_err(),
        "an unmarked release publishes nothing"
    );

    ok(&conn, &set_nx_px("k", "t", 1000)).await;
    let mark = Call::script(&scripts::MARK, 1, |c| {
        c.arg("k");
    });
    assert_eq!(ok(&conn, &mark).await, Value::Int(1));
    assert_eq!(ok(&conn, &mark).await, Value::Int(1));
    assert_eq!(node.value("k").as_deref(), Some(&b"t+"[..]), "marked once");
    assert_eq!(ok(&conn, &release_one).await, Value::Int(1));
    assert_eq!(wakes.try_recv(), Ok(()));
    assert_eq!(node.value("k"), None);
}

#[tokio::test(start_paused = true)]
async fn scripts_are_known_by_sha_and_by_body_only() {
    let node = SimNode::new();
    let conn = node.connect();
    let unknown = cmd(&["EVALSHA", &"0".repeat(40), "0"]);
    let error = conn.call(&unknown).await.unwrap_err();
    assert!(matches!(&error, NodeError::Redis(e) if e.code() == Some("NOSCRIPT")));
    let eval = cmd(&["EVAL", scripts::MARK.body, "1", "k"]);
    assert_eq!(ok(&conn, &eval).await, Value::Int(0));
    let load = cmd(&["SCRIPT", "LOAD", scripts::MARK.body]);
    assert_eq!(
        ok(&conn, &load).await,
        Value::BulkString(scripts::MARK.sha.clone().into_bytes())
    );
}
