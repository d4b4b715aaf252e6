//! What several of the runtime's test files share.

use std::time::Duration;

/// Checks `condition` until it holds, for at most `limit` (a wait for other tasks
/// to reach a state, not for time to pass; on a paused clock, virtual time).
pub async fn until(what: &str, limit: Duration, condition: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + limit;
    while !condition() {
        assert!(tokio::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}
