//! Lock keys: validated, prefixed, and laid out for the scripts.

use super::error::LockError;
use super::slot::slot;

/// Longest user key accepted, in bytes.
pub const MAX_KEY_LEN: usize = 1024;

/// Most keys one lease may hold.
pub const MAX_KEYS_PER_LOCK: usize = 64;

/// The Redis names behind one lease: `n` lock keys, `n` fencing counters, `n` wake-up
/// channels, built once per acquisition. The scripts take `[locks.., fences..]` or
/// `[locks.., channels..]` as their `KEYS`: two `arg` calls, no copies.
#[derive(Debug)]
pub(crate) struct LockKeys {
    /// The user's keys, sorted and deduplicated.
    pub(crate) user: Box<[String]>,
    lock: Box<[String]>,
    fence: Box<[String]>,
    channel: Box<[String]>,
    /// Exclusive, or one of the shared kinds (see `redlock/shared/`).
    pub(crate) shape: Shape,
}

/// What kind of lease a key set is for, with the extra Redis names the shared kinds use.
/// Every name of one resource carries its hash tag (built by [`redis_name`]).
#[derive(Debug)]
pub(crate) enum Shape {
    /// An ordinary lease: the lock keys hold the token.
    Exclusive,
    /// A reader: the lock key holds the readers' marker, the readers ZSET our token.
    Read { readers: String, intent: String },
    /// A writer: the lock key (the exclusive one) holds our token; while it waits, the
    /// intent key holds `waiter` (one per acquisition, the same on every attempt).
    Write {
        intent: String,
        waiter: super::token::Token,
    },
    /// `N` permits: the slot key sets, each an exclusive lease of its own; the lock keys
    /// are every slot's (to mark them all awaited).
    Permits {
        slots: Box<[std::sync::Arc<LockKeys>]>,
    },
}

impl LockKeys {
    pub(crate) fn new<I, K>(prefix: &str, keys: I) -> Result<LockKeys, LockError>
    where
        I: IntoIterator<Item = K>,
        K: AsRef<str>,
    {
        let mut user = Vec::new();
        for key in keys {
            let key = key.as_ref();
            validate(key)?;
            if user.len() == MAX_KEYS_PER_LOCK {
                return Err(LockError::InvalidKey {
                    reason: format!("at most {MAX_KEYS_PER_LOCK} keys per lock"),
                });
            }
            user.push(key.to_owned());
        }
        if user.is_empty() {
            return Err(LockError::InvalidKey {
                reason: "no key given".to_owned(),
            });
        }
        // A fixed order makes multi-key locks independent of the order the caller used.
        user.sort_unstable();
        user.dedup();
        let named = |kind: &str| -> Box<[String]> {
            user.iter()
                .map(|key| redis_name(prefix, key, kind))
                .collect()
        };
        Ok(LockKeys {
            lock: named("lock"),
            fence: named("fence"),
            channel: named("released"),
            user: user.into_boxed_slice(),
            shape: Shape::Exclusive,
        })
    }

    /// A key set from its parts (the shared kinds build theirs in `shared/keys.rs`).
    pub(crate) fn from_parts(
        user: Box<[String]>,
        lock: Box<[String]>,
        fence: Box<[String]>,
        channel: Box<[String]>,
        shape: Shape,
    ) -> LockKeys {
        LockKeys {
            user,
            lock,
            fence,
            channel,
            shape,
        }
    }

    /// Whether this is an ordinary (exclusive) lease's key set.
    pub(crate) fn is_exclusive(&self) -> bool {
        matches!(self.shape, Shape::Exclusive)
    }

    pub(crate) fn len(&self) -> usize {
        self.user.len()
    }

    pub(crate) fn lock_keys(&self) -> &[String] {
        &self.lock
    }

    pub(crate) fn fence_keys(&self) -> &[String] {
        &self.fence
    }

    /// The wake-up channels, one per key.
    pub(crate) fn channels(&self) -> &[String] {
        &self.channel
    }

    /// The one Redis Cluster hash slot every name of this key set is in, or
    /// [`LockError::InvalidKey`] when the keys are in several (a script's keys must share a
    /// slot on a Cluster node; keys with a common `{tag}` always do).
    pub(crate) fn one_slot(&self) -> Result<u16, LockError> {
        let mut slots = self.lock.iter().map(|name| slot(name.as_bytes()));
        let first = slots.next().unwrap_or(0);
        if slots.all(|other| other == first) {
            return Ok(first);
        }
        Err(LockError::InvalidKey {
            reason: "the keys are in different Redis Cluster hash slots, and a node is a \
                     Cluster: give them a common hash tag (e.g. `order:{42}:a`, \
                     `order:{42}:b`)"
                .to_owned(),
        })
    }

    /// Identifies the key set in the local queue: the lock keys themselves, compared key by
    /// key, so that two different key sets never share a line (a joined string could: a
    /// single key may contain the separator). No allocation: this is looked up on every
    /// waiting acquisition.
    pub(crate) fn queue_id(&self) -> QueueId<'_> {
        QueueId(&self.lock)
    }

    /// Keys of one of the engine's own locks (`purpose`, e.g. `"health"`), under a fresh
    /// random name: `{prefix}internal:{{purpose}:{random}}:lock` and likewise `fence`/
    /// `released` (one hash tag: one Cluster slot). Every user key's names have `{` right
    /// after the prefix (see [`redis_name`]), these have `internal:`, so no user key
    /// (whatever its text) names these, and no two calls (in this process or another) draw
    /// the same 128-bit name.
    pub(crate) fn internal(prefix: &str, purpose: &str) -> LockKeys {
        let mut random = [0u8; 16];
        rand::RngCore::fill_bytes(&mut rand::rng(), &mut random);
        let name: String = std::iter::once(format!("{purpose}:"))
            .chain(random.iter().map(|byte| format!("{byte:02x}")))
            .collect();
        let named = |kind: &str| -> Box<[String]> {
            [format!("{prefix}internal:{{{name}}}:{kind}")].into()
        };
        LockKeys {
            lock: named("lock"),
            fence: named("fence"),
            channel: named("released"),
            user: [format!("internal:{name}")].into(),
            shape: Shape::Exclusive,
        }
    }
}

/// A key set's identity in the local queue: its lock keys, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct QueueId<'a>(&'a [String]);

impl<'a> QueueId<'a> {
    /// The id of the key set whose lock keys are `lock_keys` (sorted, deduplicated).
    pub(crate) fn new(lock_keys: &'a [String]) -> QueueId<'a> {
        QueueId(lock_keys)
    }

    /// The lock keys.
    pub(crate) fn lock_keys(self) -> &'a [String] {
        self.0
    }
}

/// The Redis name of one of user key `key`'s objects (`kind`: `lock`, `fence`, `released`).
///
/// Every name of one key carries the same Redis Cluster hash tag (the text between the
/// first `{` and the next `}`), so one script's `KEYS` always share a slot:
///
/// - `{prefix}{key}:lock` for a key without a hash tag of its own, e.g.
///   `redlock:{order:42}:lock`, `redlock:{order:42}:fence`;
/// - `{prefix}{tag}:lock:{key}` for a key with one (`tenant:{7}:export` has the tag `7`):
///   keys with the same tag share a slot, so a multi-key lock over them works on a Cluster
///   node too.
///
/// `%`, `{` and `}` in the key or tag are written as `%25`, `%7B` and `%7D`, so a key's text
/// cannot end the tag early, and different keys always get different names (the tag part
/// has no `}` of its own; what follows it tells the two shapes apart).
pub(crate) fn redis_name(prefix: &str, key: &str, kind: &str) -> String {
    match hash_tag(key) {
        None => format!("{prefix}{{{}}}:{kind}", escape(key)),
        Some(tag) => format!("{prefix}{{{}}}:{kind}:{}", escape(tag), escape(key)),
    }
}

/// The key's own Redis Cluster hash tag: the text between its first `{` and the next `}`,
/// when that text is not empty (Redis's own rule).
pub(crate) fn hash_tag(key: &str) -> Option<&str> {
    let open = key.find('{')?;
    let rest = &key[open + 1..];
    let close = rest.find('}')?;
    (close > 0).then(|| &rest[..close])
}

/// `text` with `%`, `{` and `}` percent-encoded.
fn escape(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.contains(['%', '{', '}']) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '%' => out.push_str("%25"),
            '{' => out.push_str("%7B"),
            '}' => out.push_str("%7D"),
            c => out.push(c),
        }
    }
    std::borrow::Cow::Owned(out)
}

/// Checks one user key: non-empty, at most [`MAX_KEY_LEN`] bytes, no ASCII control
/// characters (C0, including NUL, and DEL: they make keys look alike in logs and tools, and
/// have no business in a resource name).
pub(crate) fn validate(key: &str) -> Result<(), LockError> {
    if key.is_empty() {
        return Err(LockError::InvalidKey {
            reason: "the key is empty".to_owned(),
        });
    }
    if key.len() > MAX_KEY_LEN {
        return Err(LockError::InvalidKey {
            reason: format!(
                "the key is {} bytes long; at most {MAX_KEY_LEN} are allowed",
                key.len()
            ),
        });
    }
    if key.bytes().any(|b| b.is_ascii_control()) {
        return Err(LockError::InvalidKey {
            reason: "the key contains an ASCII control character (NUL, newline, DEL, ..)"
                .to_owned(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_is_sorted_and_prefixed() {
        let keys = LockKeys::new("p:", ["b", "a", "b"]).unwrap();
        assert_eq!(&*keys.user, ["a", "b"]);
        assert_eq!(keys.lock_keys(), ["p:{a}:lock", "p:{b}:lock"]);
        assert_eq!(keys.fence_keys(), ["p:{a}:fence", "p:{b}:fence"]);
        assert_eq!(keys.channels(), ["p:{a}:released", "p:{b}:released"]);
        assert_eq!(keys.queue_id().lock_keys(), ["p:{a}:lock", "p:{b}:lock"]);
        let one = LockKeys::new("p:", ["x"]).unwrap();
        assert_eq!(one.queue_id().lock_keys(), ["p:{x}:lock"]);
    }

    #[test]
    fn a_key_with_a_hash_tag_keeps_it() {
        let keys = LockKeys::new("p:", ["t:{7}:b", "t:{7}:a"]).unwrap();
        assert_eq!(
            keys.lock_keys(),
            ["p:{7}:lock:t:%7B7%7D:a", "p:{7}:lock:t:%7B7%7D:b"]
        );
        assert_eq!(keys.fence_keys()[0], "p:{7}:fence:t:%7B7%7D:a");
        // An empty tag is no tag (Redis's rule); braces in the key are escaped.
        assert_eq!(redis_name("p:", "a{}b", "lock"), "p:{a%7B%7Db}:lock");
        assert_eq!(redis_name("p:", "50%", "lock"), "p:{50%25}:lock");
        assert_eq!(hash_tag("a{b}c{d}"), Some("b"));
        assert_eq!(hash_tag("a}b{c"), None);
    }

    #[test]
    fn different_keys_never_share_a_name() {
        let keys = [
            "a",
            "a}",
            "a}:lock",
            "{a}",
            "{a}:lock",
            "x{a}",
            "a%7D",
            "a}:lock:a",
            "{a}b",
            "{a",
            "%",
            "%25",
            "}{",
            "{}",
            "{{a}}",
        ];
        let mut names = std::collections::HashSet::new();
        for key in keys {
            for kind in ["lock", "fence", "released"] {
                assert!(names.insert(redis_name("p:", key, kind)), "{key} {kind}");
            }
        }
        // Every name of one key has the same hash tag: one Cluster slot.
        for key in keys {
            let tag = |kind| {
                let name = redis_name("p:", key, kind);
                hash_tag(&name).map(str::to_owned)
            };
            assert_eq!(tag("lock"), tag("fence"), "{key}");
            assert_eq!(tag("lock"), tag("released"), "{key}");
            assert!(tag("lock").is_some(), "{key}");
        }
    }

    /// A key set laid out without validation (as if a key with a NUL got through).
    fn unchecked(prefix: &str, user: &[&str]) -> LockKeys {
        let named = |kind: &str| user.iter().map(|k| redis_name(prefix, k, kind)).collect();
        LockKeys {
            lock: named("lock"),
            fence: named("fence"),
            channel: named("released"),
            user: user.iter().map(|k| k.to_string()).collect(),
            shape: Shape::Exclusive,
        }
    }

    #[test]
    fn different_key_sets_never_share_a_queue_id() {
        let pair = unchecked("p:", &["order:1", "order:2"]);
        // One key that spells the pair's lock keys joined by a NUL.
        let forged = unchecked("p:", &["order:1\u{0}p:lock:order:2"]);
        assert_ne!(pair.queue_id(), forged.queue_id());
        // Nor by any other separator a key may contain.
        let colon = unchecked("p:", &["a", "b"]);
        let joined = unchecked("p:", &["a:p:lock:b"]);
        assert_ne!(colon.queue_id(), joined.queue_id());
        assert_ne!(
            unchecked("p:", &["ab", "c"]).queue_id(),
            unchecked("p:", &["a", "bc"]).queue_id()
        );
    }

    #[test]
    fn bad_keys_are_rejected() {
        assert!(LockKeys::new("p:", [""]).is_err());
        assert!(LockKeys::new("p:", Vec::<String>::new()).is_err());
        assert!(LockKeys::new("p:", ["x".repeat(MAX_KEY_LEN + 1)]).is_err());
        assert!(LockKeys::new("p:", ["x".repeat(MAX_KEY_LEN)]).is_ok());
        assert!(LockKeys::new("p:", ["ключ 🔒"]).is_ok());
        let many: Vec<String> = (0..=MAX_KEYS_PER_LOCK).map(|i| i.to_string()).collect();
        assert!(LockKeys::new("p:", many).is_err());
        let err = LockKeys::new("p:", ["secret-order".repeat(200)]).unwrap_err();
        assert!(!err.to_string().contains("secret-order"));
    }

    #[test]
    fn control_characters_are_rejected_without_echoing_the_key() {
        for bad in [
            "order:1\u{0}redlock:lock:order:2",
            "secret\n",
            "secret\r\n",
            "secret\t",
            "secret\u{1b}[0m",
            "secret\u{7f}",
        ] {
            let err = LockKeys::new("p:", [bad]).unwrap_err();
            assert!(matches!(err, LockError::InvalidKey { .. }), "{bad:?}");
            assert!(!err.to_string().contains("secret"), "{err}");
            assert!(LockKeys::new("p:", ["fine", bad]).is_err());
        }
        // Printable text, non-ASCII included, is fine.
        assert!(LockKeys::new("p:", ["a b/c:d%00é"]).is_ok());
    }

    #[test]
    fn keys_in_several_slots_have_no_one_slot() {
        let one = LockKeys::new("p:", ["order:42"]).unwrap();
        assert_eq!(one.one_slot().unwrap(), slot(b"order:42"));
        let tagged = LockKeys::new("p:", ["t:{7}:a", "t:{7}:b", "u:{7}"]).unwrap();
        assert_eq!(tagged.one_slot().unwrap(), slot(b"7"));
        let spread = LockKeys::new("p:", ["a", "b"]).unwrap();
        assert_ne!(slot(b"a"), slot(b"b"));
        let err = spread.one_slot().unwrap_err();
        assert!(matches!(err, LockError::InvalidKey { .. }), "{err}");
        assert!(err.to_string().contains("hash tag"), "{err}");
        // Internal keys are one slot.
        assert!(LockKeys::internal("p:", "health").one_slot().is_ok());
    }
}
