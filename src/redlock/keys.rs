//! Lock keys: validated, prefixed, and laid out for the scripts.

use super::error::LockError;

/// Longest user key accepted, in bytes.
pub const MAX_KEY_LEN: usize = 1024;

/// Most keys one lease may hold.
pub const MAX_KEYS_PER_LOCK: usize = 64;

/// The Redis names behind one lease: `n` lock keys, `n` fencing counters, `n` wake-up
/// channels, built once per acquisition.
#[derive(Debug)]
pub(crate) struct LockKeys {
    /// The user's keys, sorted and deduplicated.
    pub(crate) user: Box<[String]>,
    /// `[lock keys.., fence counters..]`: the `KEYS` of the acquire script.
    pub(crate) lock_and_fence: Box<[String]>,
    /// `[lock keys.., channels..]`: the `KEYS` of the release script.
    pub(crate) lock_and_channel: Box<[String]>,
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
        let n = user.len();
        let mut lock_and_fence = Vec::with_capacity(2 * n);
        let mut lock_and_channel = Vec::with_capacity(2 * n);
        for key in &user {
            lock_and_fence.push(format!("{prefix}lock:{key}"));
        }
        lock_and_channel.extend(lock_and_fence.iter().cloned());
        for key in &user {
            lock_and_fence.push(format!("{prefix}fence:{key}"));
            lock_and_channel.push(format!("{prefix}released:{key}"));
        }
        Ok(LockKeys {
            user: user.into_boxed_slice(),
            lock_and_fence: lock_and_fence.into_boxed_slice(),
            lock_and_channel: lock_and_channel.into_boxed_slice(),
        })
    }

    pub(crate) fn len(&self) -> usize {
        self.user.len()
    }

    pub(crate) fn lock_keys(&self) -> &[String] {
        &self.lock_and_fence[..self.len()]
    }

    pub(crate) fn fence_keys(&self) -> &[String] {
        &self.lock_and_fence[self.len()..]
    }

    /// The wake-up channels, one per key.
    pub(crate) fn channels(&self) -> &[String] {
        &self.lock_and_channel[self.len()..]
    }

    /// Identifies the key set in the local queue.
    pub(crate) fn queue_id(&self) -> String {
        self.lock_keys().join("\u{0}")
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
        assert_eq!(
            &keys.lock_and_channel[2..],
            ["p:released:a", "p:released:b"]
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
}
