//! Typed replies: the one place that reads what the scripts and commands answer.
//!
//! Each request's reply has its own enum, parsed from the `redis::Value` a
//! [transport](super::transport) returns; no magic integer appears outside this module. An
//! answer that fits none of a request's replies is a [`NodeError::Reply`] (a "no" vote).
//! The meaning of each value is documented with its script in
//! [`scripts`](crate::redlock::core::scripts).

use redis::Value;

use super::error::NodeError;

/// The reply to `SET key token NX PX ttl` (one key, no fencing).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SetReply {
    /// The key was free and now holds our token.
    Acquired,
    /// Someone holds the key (their remaining time is not told).
    Held,
}

impl SetReply {
    pub(crate) fn parse(value: &Value) -> Result<SetReply, NodeError> {
        match value {
            Value::Okay => Ok(SetReply::Acquired),
            Value::Nil => Ok(SetReply::Held),
            _ => Err(NodeError::Reply("unexpected SET NX reply")),
        }
    }
}

/// The reply of the [`ACQUIRE`](crate::redlock::core::scripts::ACQUIRE) script.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AcquireReply {
    /// Every key was free and now holds our token; the highest fencing counter (0 without
    /// fencing).
    Acquired { fence: u64 },
    /// A key is held by someone else, who has `pttl` ms left (negative: no expiry).
    Held { pttl: i64 },
}

impl AcquireReply {
    pub(crate) fn parse(value: &Value) -> Result<AcquireReply, NodeError> {
        match int_pair(value)? {
            (1, fence) => Ok(AcquireReply::Acquired {
                fence: u64::try_from(fence).unwrap_or(0),
            }),
            (0, pttl) => Ok(AcquireReply::Held { pttl }),
            _ => Err(NodeError::Reply("unexpected acquire reply")),
        }
    }
}

/// The reply of the [`EXTEND`](crate::redlock::core::scripts::EXTEND) script.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ExtendReply {
    /// Every key held our token and has a new expiry.
    Extended,
    /// A key no longer holds our token: nothing was changed.
    NotOwner,
}

impl ExtendReply {
    pub(crate) fn parse(value: &Value) -> Result<ExtendReply, NodeError> {
        match int(value)? {
            1 => Ok(ExtendReply::Extended),
            0 => Ok(ExtendReply::NotOwner),
            _ => Err(NodeError::Reply("unexpected extend reply")),
        }
    }
}

/// The reply of the [`EXTEND_MANY`](crate::redlock::core::scripts::EXTEND_MANY) script: one
/// [`ExtendReply`] per lease, in the order the leases were sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ExtendManyReply(pub(crate) Vec<ExtendReply>);

impl ExtendManyReply {
    /// Parses the reply to a call for `leases` leases: anything but exactly one 1 or 0 per
    /// lease is a reply error (a "no" vote for every lease of the call).
    pub(crate) fn parse(value: &Value, leases: usize) -> Result<ExtendManyReply, NodeError> {
        match value {
            Value::Array(items) if items.len() == leases => items
                .iter()
                .map(ExtendReply::parse)
                .collect::<Result<_, _>>()
                .map(ExtendManyReply),
            _ => Err(NodeError::Reply("unexpected extend-many reply")),
        }
    }
}

/// The reply of the [`RELEASE`](crate::redlock::core::scripts::RELEASE) and
/// [`RELEASE_ONE`](crate::redlock::core::scripts::RELEASE_ONE) scripts, hand-offs included.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReleaseReply {
    /// Our token was deleted from at least one key.
    Released,
    /// None of the keys was there: expired (also a carried hand-off that found a key no
    /// longer holding our token, which leaves the keys alone).
    Gone,
    /// A key is held by another token; none held ours.
    NotOwner,
    /// A hand-off: every key now holds the next holder's token; `marked`: a waiter elsewhere
    /// had marked the keys, and the mark moved with it (carried hand-offs only).
    HandedOver { marked: bool },
}

impl ReleaseReply {
    pub(crate) fn parse(value: &Value) -> Result<ReleaseReply, NodeError> {
        match int(value)? {
            1 => Ok(ReleaseReply::Released),
            0 => Ok(ReleaseReply::Gone),
            -1 => Ok(ReleaseReply::NotOwner),
            2 => Ok(ReleaseReply::HandedOver { marked: false }),
            3 => Ok(ReleaseReply::HandedOver { marked: true }),
            _ => Err(NodeError::Reply("unexpected release reply")),
        }
    }
}

/// The reply of the [`MARK`](crate::redlock::core::scripts::MARK) script.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MarkReply {
    /// Every key was held and is now marked: its release will announce itself.
    Marked,
    /// A key was free.
    Free,
}

impl MarkReply {
    pub(crate) fn parse(value: &Value) -> Result<MarkReply, NodeError> {
        match int(value)? {
            1 => Ok(MarkReply::Marked),
            0 => Ok(MarkReply::Free),
            _ => Err(NodeError::Reply("unexpected mark reply")),
        }
    }
}

/// The reply of the [`FENCE_SYNC`](crate::redlock::core::scripts::FENCE_SYNC) script: the
/// counters are at least the token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FenceSynced;

impl FenceSynced {
    pub(crate) fn parse(value: &Value) -> Result<FenceSynced, NodeError> {
        match int(value)? {
            1 => Ok(FenceSynced),
            _ => Err(NodeError::Reply("unexpected fence sync reply")),
        }
    }
}

/// The reply to `PTTL key`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PttlReply {
    /// No such key.
    Missing,
    /// The key has no expiry.
    Persistent,
    /// The key expires in that many milliseconds.
    Left(u64),
}

impl PttlReply {
    pub(crate) fn parse(value: &Value) -> Result<PttlReply, NodeError> {
        match int(value)? {
            -2 => Ok(PttlReply::Missing),
            -1 => Ok(PttlReply::Persistent),
            ms => u64::try_from(ms)
                .map(PttlReply::Left)
                .map_err(|_| NodeError::Reply("unexpected PTTL reply")),
        }
    }
}

fn int(value: &Value) -> Result<i64, NodeError> {
    match value {
        Value::Int(i) => Ok(*i),
        _ => Err(NodeError::Reply("expected an integer")),
    }
}

fn int_pair(value: &Value) -> Result<(i64, i64), NodeError> {
    match value {
        Value::Array(items) if items.len() == 2 => Ok((int(&items[0])?, int(&items[1])?)),
        _ => Err(NodeError::Reply("expected a pair of integers")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(a: i64, b: i64) -> Value {
        Value::Array(vec![Value::Int(a), Value::Int(b)])
    }

    #[test]
    fn replies_parse_to_their_meaning() {
        assert_eq!(SetReply::parse(&Value::Okay).unwrap(), SetReply::Acquired);
        assert_eq!(SetReply::parse(&Value::Nil).unwrap(), SetReply::Held);
        assert_eq!(
            AcquireReply::parse(&pair(1, 7)).unwrap(),
            AcquireReply::Acquired { fence: 7 }
        );
        assert_eq!(
            AcquireReply::parse(&pair(0, -1)).unwrap(),
            AcquireReply::Held { pttl: -1 }
        );
        assert_eq!(
            ExtendReply::parse(&Value::Int(0)).unwrap(),
            ExtendReply::NotOwner
        );
        let many = Value::Array(vec![Value::Int(1), Value::Int(0), Value::Int(1)]);
        assert_eq!(
            ExtendManyReply::parse(&many, 3).unwrap().0,
            [
                ExtendReply::Extended,
                ExtendReply::NotOwner,
                ExtendReply::Extended
            ]
        );
        let release: Vec<_> = [1, 0, -1, 2, 3]
            .map(|i| ReleaseReply::parse(&Value::Int(i)).unwrap())
            .into();
        assert_eq!(
            release,
            [
                ReleaseReply::Released,
                ReleaseReply::Gone,
                ReleaseReply::NotOwner,
                ReleaseReply::HandedOver { marked: false },
                ReleaseReply::HandedOver { marked: true },
            ]
        );
        assert_eq!(MarkReply::parse(&Value::Int(1)).unwrap(), MarkReply::Marked);
        assert_eq!(
            PttlReply::parse(&Value::Int(-2)).unwrap(),
            PttlReply::Missing
        );
        assert_eq!(
            PttlReply::parse(&Value::Int(5)).unwrap(),
            PttlReply::Left(5)
        );
    }

    #[test]
    fn anything_else_is_a_reply_error() {
        assert!(SetReply::parse(&Value::Int(1)).is_err());
        assert!(AcquireReply::parse(&pair(2, 0)).is_err());
        assert!(AcquireReply::parse(&Value::Int(1)).is_err());
        assert!(ExtendReply::parse(&Value::Int(2)).is_err());
        let ints = |v: &[i64]| Value::Array(v.iter().map(|i| Value::Int(*i)).collect());
        assert!(ExtendManyReply::parse(&ints(&[1, 0]), 3).is_err());
        assert!(ExtendManyReply::parse(&ints(&[1, 2]), 2).is_err());
        assert!(ExtendManyReply::parse(&Value::Int(1), 1).is_err());
        assert!(ReleaseReply::parse(&Value::Int(4)).is_err());
        assert!(MarkReply::parse(&Value::Nil).is_err());
        assert!(FenceSynced::parse(&Value::Int(0)).is_err());
        assert!(PttlReply::parse(&Value::Int(-3)).is_err());
    }
}
