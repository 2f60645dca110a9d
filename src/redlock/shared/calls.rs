//! The node calls of read and write leases, built from a key set's [`Shape`].

use crate::redlock::core::keys::{LockKeys, Shape};
use crate::redlock::core::shared_scripts::{
    INTENT_WITHDRAW, READ_ACQUIRE, READ_EXTEND, READ_RELEASE, WRITE_ACQUIRE,
};
use crate::redlock::node::Call;

/// The acquire call of a reader or writer (`None` for other shapes). `waits`: the
/// acquisition will try again when refused (a writer then leaves its intent, for
/// `intent_ms`).
pub(crate) fn acquire(
    keys: &LockKeys,
    token: &[u8],
    ttl_ms: u64,
    fencing: bool,
    fence_ttl_ms: u64,
    intent_ms: u64,
) -> Option<Call> {
    Some(match &keys.shape {
        Shape::Read { readers, intent } => Call::script(&READ_ACQUIRE, 3, |cmd| {
            cmd.arg(&keys.lock_keys()[0])
                .arg(readers)
                .arg(intent)
                .arg(token)
                .arg(ttl_ms);
        }),
        Shape::Write { intent, waiter } => Call::script(&WRITE_ACQUIRE, 3, |cmd| {
            cmd.arg(&keys.lock_keys()[0])
                .arg(&keys.fence_keys()[0])
                .arg(intent)
                .arg(token)
                .arg(ttl_ms)
                .arg(if fencing { "1" } else { "0" })
                .arg(fence_ttl_ms)
                .arg(waiter.as_bytes())
                .arg(intent_ms);
        }),
        Shape::Exclusive | Shape::Permits { .. } => return None,
    })
}

/// A reader's extension (`None` for other shapes: theirs is the exclusive one).
pub(crate) fn extend(keys: &LockKeys, token: &[u8], ttl_ms: u64) -> Option<Call> {
    let Shape::Read { readers, .. } = &keys.shape else {
        return None;
    };
    Some(Call::script(&READ_EXTEND, 2, |cmd| {
        cmd.arg(&keys.lock_keys()[0])
            .arg(readers)
            .arg(token)
            .arg(ttl_ms);
    }))
}

/// A reader's release (`None` for other shapes).
pub(crate) fn release(keys: &LockKeys, token: &[u8], announce: bool) -> Option<Call> {
    let Shape::Read { readers, .. } = &keys.shape else {
        return None;
    };
    Some(Call::script(&READ_RELEASE, 2, |cmd| {
        cmd.arg(&keys.lock_keys()[0])
            .arg(readers)
            .arg(token)
            .arg(if announce { "1" } else { "0" })
            .arg(&keys.channels()[0]);
    }))
}

/// A writer's intent withdrawal (`None` for other shapes).
pub(crate) fn withdraw_intent(keys: &LockKeys) -> Option<Call> {
    let Shape::Write { intent, waiter } = &keys.shape else {
        return None;
    };
    Some(Call::script(&INTENT_WITHDRAW, 1, |cmd| {
        cmd.arg(intent).arg(waiter.as_bytes());
    }))
}
