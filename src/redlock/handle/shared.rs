//! The shared leases' methods of [`Redlock`] (see the README's *Shared leases*).

use std::future::Future;

use super::Redlock;
use crate::redlock::config::options::LockOptions;
use crate::redlock::core::error::LockError;
use crate::redlock::lease::HeldLock;
use crate::redlock::shared::LeaseMode;

impl Redlock {
    /// Acquires a read lease on `key`: shared with other readers, excluding writers and
    /// exclusive leases; refused while a writer waits (write preference).
    pub fn acquire_read(
        &self,
        key: impl AsRef<str>,
    ) -> impl Future<Output = Result<HeldLock, LockError>> + Send + 'static {
        self.acquire_mode_with(key, LeaseMode::Read, LockOptions::default())
    }

    /// [`acquire_read`](Redlock::acquire_read) with explicit options (fencing must be off).
    pub fn acquire_read_with(
        &self,
        key: impl AsRef<str>,
        options: LockOptions,
    ) -> impl Future<Output = Result<HeldLock, LockError>> + Send + 'static {
        self.acquire_mode_with(key, LeaseMode::Read, options)
    }

    /// Acquires a write lease on `key`: no reader, writer or exclusive lease holds with it.
    /// While it waits, new readers are refused.
    pub fn acquire_write(
        &self,
        key: impl AsRef<str>,
    ) -> impl Future<Output = Result<HeldLock, LockError>> + Send + 'static {
        self.acquire_mode_with(key, LeaseMode::Write, LockOptions::default())
    }

    /// [`acquire_write`](Redlock::acquire_write) with explicit options.
    pub fn acquire_write_with(
        &self,
        key: impl AsRef<str>,
        options: LockOptions,
    ) -> impl Future<Output = Result<HeldLock, LockError>> + Send + 'static {
        self.acquire_mode_with(key, LeaseMode::Write, options)
    }

    /// Acquires one of `permits` permits of `key`: at most `permits` holders at once, in
    /// every process (all callers must use the same count; 1 to
    /// [`MAX_PERMITS`](crate::MAX_PERMITS)).
    pub fn acquire_permit(
        &self,
        key: impl AsRef<str>,
        permits: u32,
    ) -> impl Future<Output = Result<HeldLock, LockError>> + Send + 'static {
        self.acquire_mode_with(key, LeaseMode::Permit(permits), LockOptions::default())
    }

    /// [`acquire_permit`](Redlock::acquire_permit) with explicit options (fencing must be
    /// off).
    pub fn acquire_permit_with(
        &self,
        key: impl AsRef<str>,
        permits: u32,
        options: LockOptions,
    ) -> impl Future<Output = Result<HeldLock, LockError>> + Send + 'static {
        self.acquire_mode_with(key, LeaseMode::Permit(permits), options)
    }

    /// Acquires a lease of any [`LeaseMode`] on `key`.
    pub fn acquire_mode_with(
        &self,
        key: impl AsRef<str>,
        mode: LeaseMode,
        options: LockOptions,
    ) -> impl Future<Output = Result<HeldLock, LockError>> + Send + 'static {
        let keys = mode.keys(&self.engine.settings.key_prefix, key.as_ref());
        self.acquire_keys(keys, options)
    }
}
