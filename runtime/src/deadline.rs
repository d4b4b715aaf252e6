//! Deadlines from the durations users choose. A timeout too large to add to the
//! clock (`Duration::MAX`, say) means "no deadline", never a panic.

use std::time::Duration;

use tokio::time::Instant;

/// The instant `timeout` after `now`, or one so far ahead that it never comes
/// (about a century) if the sum does not fit in an `Instant`.
pub(crate) fn after(now: Instant, timeout: Duration) -> Instant {
    now.checked_add(timeout).unwrap_or_else(|| never(now))
}

/// An instant that never comes: `Duration::MAX` would overflow an `Instant`.
fn never(now: Instant) -> Instant {
    const CENTURY: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
    now.checked_add(CENTURY).unwrap_or(now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_timeout_too_large_for_the_clock_is_no_deadline() {
        let now = Instant::now();
        let deadline = after(now, Duration::MAX);
        assert!(deadline - now >= Duration::from_secs(99 * 365 * 24 * 3600));
    }

    #[test]
    fn an_ordinary_timeout_is_added() {
        let now = Instant::now();
        assert_eq!(
            after(now, Duration::from_millis(250)) - now,
            Duration::from_millis(250)
        );
    }
}
