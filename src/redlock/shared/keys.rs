//! The key sets of shared leases. Every name of one resource comes from
//! [`redis_name`] and so carries the key's hash tag (one Cluster slot).

use std::sync::Arc;

use crate::redlock::core::error::LockError;
use crate::redlock::core::keys::{LockKeys, Shape, redis_name, validate};
use crate::redlock::core::token::Token;

/// The key set of a read (`write == false`) or write lease on the single key `key`: its
/// lock key is the exclusive one (`{prefix}{key}:lock`), so exclusive leases and writers
/// exclude each other, and the readers' marker there excludes both; plus
/// `{prefix}{key}:rw.readers` and `{prefix}{key}:rw.intent`.
pub(crate) fn read_write(prefix: &str, key: &str, write: bool) -> Result<LockKeys, LockError> {
    let exclusive = LockKeys::new(prefix, [key])?;
    let intent = redis_name(prefix, key, "rw.intent");
    let shape = if write {
        Shape::Write {
            intent,
            waiter: Token::generate(),
        }
    } else {
        Shape::Read {
            readers: redis_name(prefix, key, "rw.readers"),
            intent,
        }
    };
    Ok(LockKeys::from_parts(
        exclusive.user.clone(),
        exclusive.lock_keys().into(),
        exclusive.fence_keys().into(),
        exclusive.channels().into(),
        shape,
    ))
}

/// The key set of `permits` permits of `key`: slot `i` is an exclusive lease on
/// `{prefix}{key}:permit{i}:lock` (fence `...:permit{i}:fence`); every slot announces its
/// release on one channel, `{prefix}{key}:permits:released`. The set's own lock keys are
/// every slot's (a waiter marks them all).
pub(crate) fn permits(prefix: &str, key: &str, permits: u32) -> Result<LockKeys, LockError> {
    validate(key)?;
    let user: Box<[String]> = [key.to_owned()].into();
    let channel: Box<[String]> = [redis_name(prefix, key, "permits:released")].into();
    let named = |i: u32, kind: &str| redis_name(prefix, key, &format!("permit{i}:{kind}"));
    let slots: Box<[Arc<LockKeys>]> = (0..permits)
        .map(|i| {
            Arc::new(LockKeys::from_parts(
                user.clone(),
                [named(i, "lock")].into(),
                [named(i, "fence")].into(),
                channel.clone(),
                Shape::Exclusive,
            ))
        })
        .collect();
    Ok(LockKeys::from_parts(
        user,
        (0..permits).map(|i| named(i, "lock")).collect(),
        (0..permits).map(|i| named(i, "fence")).collect(),
        channel,
        Shape::Permits { slots },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_names_share_the_key_tag() {
        let rw = read_write("p:", "r:{7}:x", false).unwrap();
        assert_eq!(rw.lock_keys(), ["p:{7}:lock:r:%7B7%7D:x"]);
        let Shape::Read { readers, intent } = &rw.shape else {
            panic!("not a reader");
        };
        assert_eq!(readers, "p:{7}:rw.readers:r:%7B7%7D:x");
        assert_eq!(intent, "p:{7}:rw.intent:r:%7B7%7D:x");
        let permits = permits("p:", "export", 3).unwrap();
        assert_eq!(permits.lock_keys()[2], "p:{export}:permit2:lock");
        assert_eq!(permits.channels(), ["p:{export}:permits:released"]);
        let Shape::Permits { slots } = &permits.shape else {
            panic!("not permits");
        };
        assert_eq!(slots[1].fence_keys(), ["p:{export}:permit1:fence"]);
        assert_eq!(slots[1].lock_keys()[0], permits.lock_keys()[1]);
        assert_eq!(slots[1].channels(), permits.channels());
    }
}
