//! [`HeldLocks`]: every lease the layers of one request hold, and the check that nested
//! layers do not lock the same key twice.

use http::Extensions;

use crate::redlock::HeldLock;

/// Every lease the [`RedlockLayer`](super::RedlockLayer)s of a request hold, outermost
/// layer first: a request extension (and, with the `axum` feature, an extractor).
///
/// Each layer that takes a lease appends it here and also sets it as the request's
/// [`HeldLock`] extension, replacing the one an outer layer set: the `HeldLock` extractor
/// gives the **innermost** layer's lease. With nested layers, use `HeldLocks` to reach
/// the others (e.g. the outer lease's fencing token); releasing one lease releases only
/// that one.
///
/// Two layers of one request must not lock the same key: the inner one would wait for the
/// outer one forever. The inner layer detects it and answers `500` (see
/// [`RedlockLayer`](super::RedlockLayer)).
///
/// ```no_run
/// use tower_redlock::layer::HeldLocks;
///
/// async fn transfer(locks: HeldLocks) -> String {
///     let tokens: Vec<_> = locks.iter().map(|lock| lock.fencing_token()).collect();
///     format!("holding {} leases, fencing tokens {tokens:?}", locks.len())
/// }
/// ```
#[derive(Debug, Clone, Default)]
pub struct HeldLocks {
    locks: Vec<HeldLock>,
}

impl HeldLocks {
    /// The leases, outermost layer first.
    pub fn iter(&self) -> std::slice::Iter<'_, HeldLock> {
        self.locks.iter()
    }

    /// The outermost layer's lease.
    pub fn outermost(&self) -> Option<&HeldLock> {
        self.locks.first()
    }

    /// The innermost layer's lease (the same as the request's [`HeldLock`]).
    pub fn innermost(&self) -> Option<&HeldLock> {
        self.locks.last()
    }

    /// How many layers hold a lease for this request.
    pub fn len(&self) -> usize {
        self.locks.len()
    }

    /// `true` when no layer holds a lease.
    pub fn is_empty(&self) -> bool {
        self.locks.is_empty()
    }

    /// Whether one of the leases holds `key`.
    fn holds(&self, key: &str) -> bool {
        self.locks
            .iter()
            .any(|lock| lock.keys().iter().any(|k| k == key))
    }
}

impl<'a> IntoIterator for &'a HeldLocks {
    type Item = &'a HeldLock;
    type IntoIter = std::slice::Iter<'a, HeldLock>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

/// Makes `lock` the request's [`HeldLock`] and appends it to its [`HeldLocks`].
pub(crate) fn record(extensions: &mut Extensions, lock: &HeldLock) {
    extensions.insert(lock.clone());
    match extensions.get_mut::<HeldLocks>() {
        Some(held) => held.locks.push(lock.clone()),
        None => {
            extensions.insert(HeldLocks {
                locks: vec![lock.clone()],
            });
        }
    }
}

/// Whether an outer layer of this request already holds `key`.
pub(crate) fn held_by_outer_layer(extensions: &Extensions, key: &str) -> bool {
    extensions
        .get::<HeldLocks>()
        .is_some_and(|held| held.holds(key))
}
