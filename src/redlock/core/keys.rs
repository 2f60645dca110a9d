//! Lock keys: validated, prefixed, and laid out for the scripts.

use super::error::LockError;

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
                .map(|key| format!("{prefix}{kind}:{key}"))
                .collect()
        };
        Ok(LockKeys {
            lock: named("lock"),
            fence: named("fence"),
            channel: named("released"),
            user: user.into_boxed_slice(),
        })
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

    /// Identifies the key set in the local queue: the lock keys themselves, compared key by
    /// key, so that two different key sets never share a line (a joined string could: a
    /// single key may contain the separator). No allocation: this is looked up on every
    /// waiting acquisition.
    pub(crate) fn queue_id(&self) -> QueueId<'_> {
        QueueId(&self.lock)
    }

    /// Keys of one of the engine's own locks (`purpose`, e.g. `"health"`), under a fresh
    /// random name: `{prefix}internal:lock:{purpose}:{random}` and likewise `fence`/
    /// `released`. User keys all start with `{prefix}lock:`, `{prefix}fence:` or
    /// `{prefix}released:`, so no user key (whatever its text) names these, and no two
    /// calls (in this process or another) draw the same 128-bit name.
    pub(crate) fn internal(prefix: &str, purpose: &str) -> LockKeys {
        let mut random = [0u8; 16];
        rand::RngCore::fill_bytes(&mut rand::rng(), &mut random);
        let name: String = std::iter::once(format!("{purpose}:"))
            .chain(random.iter().map(|byte| format!("{byte:02x}")))
            .collect();
        let named =
            |kind: &str| -> Box<[String]> { [format!("{prefix}internal:{kind}:{name}")].into() };
        LockKeys {
            lock: named("lock"),
            fence: named("fence"),
            channel: named("released"),
            user: [format!("internal:{name}")].into(),
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
        assert_eq!(keys.lock_keys(), ["p:lock:a", "p:lock:b"]);
        assert_eq!(keys.fence_keys(), ["p:fence:a", "p:fence:b"]);
        assert_eq!(keys.channels(), ["p:released:a", "p:released:b"]);
        assert_eq!(keys.queue_id().lock_keys(), ["p:lock:a", "p:lock:b"]);
        let one = LockKeys::new("p:", ["x"]).unwrap();
        assert_eq!(one.queue_id().lock_keys(), ["p:lock:x"]);
    }

    /// A key set laid out without validation (as if a key with a NUL got through).
    fn unchecked(prefix: &str, user: &[&str]) -> LockKeys {
        let named = |kind: &str| user.iter().map(|k| format!("{prefix}{kind}:{k}")).collect();
        LockKeys {
            lock: named("lock"),
            fence: named("fence"),
            channel: named("released"),
            user: user.iter().map(|k| k.to_string()).collect(),
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
}
