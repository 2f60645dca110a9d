//! The circuit breaker around one attempt.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::permits::attempt;
use crate::redlock::config::options::Resolved;
use crate::redlock::core::error::LockError;
use crate::redlock::core::keys::LockKeys;
use crate::redlock::core::telemetry;
use crate::redlock::engine::Engine;
use crate::redlock::lease::HeldLock;

/// One attempt, unless the circuit breaker says to fail fast. The breaker's ticket lives
/// across the attempt: dropped with it (the caller cancelled), it gives a probe slot back.
pub(crate) async fn guarded_attempt(
    engine: &Arc<Engine>,
    keys: &Arc<LockKeys>,
    options: &Resolved,
) -> Result<HeldLock, LockError> {
    let ticket = match engine.breaker.admit() {
        Ok(ticket) => ticket,
        Err(wait) => {
            return Err(LockError::Unavailable {
                reachable: 0,
                total: engine.nodes().total(),
                required: engine.nodes().quorum(),
                retry_after: wait.max(Duration::from_millis(1)),
                circuit_open: true,
            });
        }
    };
    let start = Instant::now();
    let result = attempt(engine, keys, options).await;
    let outcome = telemetry::acquire_outcome(&result.as_ref().map(drop));
    telemetry::attempt(&options.label, outcome, start.elapsed());
    let unavailable = matches!(result, Err(LockError::Unavailable { .. }));
    let probe = ticket.is_probe();
    let opened = ticket.record(unavailable);
    if opened {
        tracing::warn!("Redlock circuit breaker opened: the quorum was unreachable repeatedly");
        telemetry::circuit(true, true);
    } else if probe && !unavailable {
        tracing::info!("Redlock circuit breaker closed: the quorum is reachable again");
        telemetry::circuit(false, false);
    }
    result
}
