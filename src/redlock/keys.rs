//! Lock keys: validated, prefixed, and laid out for the scripts.

use std::borrow::Cow;

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

    /// Identifies the key set in the local queue (no allocation for a single key: this is
    /// looked up on every waiting acquisition).
    pub(crate) fn queue_id(&self) -> Cow<'_, str> {
        match &*self.lock {
            [one] => Cow::Borrowed(one),
            many => Cow::Owned(many.join("\u{0}")),
        }
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

/// Checks one user key: non-empty, at most [`MAX_KEY_LEN`] bytes.
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
        assert_eq!(keys.queue_id(), "p:lock:a\u{0}p:lock:b");
        assert_eq!(LockKeys::new("p:", ["x"]).unwrap().queue_id(), "p:lock:x");
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
}
