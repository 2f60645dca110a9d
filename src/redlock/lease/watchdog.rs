//! The automatic extension's pace: every ~ttl/3 (see [`batch`](super::batch),
//! which replaced the watchdog task per lease), and a pause between tries after one failed.

use std::time::Duration;

/// Pause between extension attempts after a failed one.
pub(crate) fn retry_pause(ttl: Duration) -> Duration {
    (ttl / 20).clamp(Duration::from_millis(5), Duration::from_millis(500))
}
