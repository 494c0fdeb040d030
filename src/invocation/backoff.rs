//! The delay before a retry (issue 11, item 2): exponential backoff with full jitter, bounded by
//! `NANOFAAS_RETRY_BACKOFF_INITIAL` and `NANOFAAS_RETRY_BACKOFF_MAX`, and a runtime's
//! `Retry-After` honoured up to the maximum. Off (the default) every delay is zero: Java's
//! immediate retry, and a `Retry-After` changes nothing.

use std::time::Duration;

use crate::config::RetryConfig;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RetryBackoff {
    initial: Duration,
    max: Duration,
}

impl From<RetryConfig> for RetryBackoff {
    fn from(c: RetryConfig) -> Self {
        RetryBackoff {
            initial: c.backoff_initial,
            max: c.backoff_max.max(c.backoff_initial),
        }
    }
}

impl RetryBackoff {
    pub fn enabled(&self) -> bool {
        !self.initial.is_zero()
    }

    /// The delay before the attempt after `failed_attempt` (1 for the first).
    pub fn delay(&self, failed_attempt: u32, retry_after: Option<Duration>) -> Duration {
        self.delay_with(failed_attempt, retry_after, &mut fastrand::Rng::new())
    }

    /// `random(0, min(max, initial · 2^(failed_attempt − 1)))` (full jitter), raised to the
    /// runtime's `Retry-After` when it asks for longer, never above `max`.
    pub fn delay_with(
        &self,
        failed_attempt: u32,
        retry_after: Option<Duration>,
        rng: &mut fastrand::Rng,
    ) -> Duration {
        if !self.enabled() {
            return Duration::ZERO;
        }
        let cap = self.cap(failed_attempt);
        let nanos = u64::try_from(cap.as_nanos()).unwrap_or(u64::MAX);
        let jittered = Duration::from_nanos(rng.u64(0..=nanos));
        jittered.max(retry_after.unwrap_or_default()).min(self.max)
    }

    /// `min(max, initial · 2^(failed_attempt − 1))`, without overflow.
    pub fn cap(&self, failed_attempt: u32) -> Duration {
        let doublings = failed_attempt.saturating_sub(1).min(63);
        self.initial
            .checked_mul(1u32.checked_shl(doublings).unwrap_or(u32::MAX))
            .unwrap_or(self.max)
            .min(self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backoff(initial_ms: u64, max_ms: u64) -> RetryBackoff {
        RetryBackoff::from(RetryConfig {
            backoff_initial: Duration::from_millis(initial_ms),
            backoff_max: Duration::from_millis(max_ms),
        })
    }

    #[test]
    fn off_means_no_delay_even_with_retry_after() {
        let off = RetryBackoff::from(RetryConfig::default());
        assert!(!off.enabled());
        for attempt in [1, 2, 10] {
            assert_eq!(
                off.delay(attempt, Some(Duration::from_secs(5))),
                Duration::ZERO
            );
        }
    }

    #[test]
    fn caps_double_per_attempt_up_to_the_maximum() {
        let b = backoff(100, 1000);
        let caps: Vec<u64> = (1..=6).map(|a| b.cap(a).as_millis() as u64).collect();
        assert_eq!(caps, [100, 200, 400, 800, 1000, 1000]);
        // No overflow far out.
        assert_eq!(b.cap(u32::MAX), Duration::from_millis(1000));
        assert_eq!(
            backoff(3_600_000, 3_600_000).cap(40),
            Duration::from_secs(3600)
        );
    }

    #[test]
    fn full_jitter_spans_zero_to_the_cap() {
        let b = backoff(100, 10_000);
        let mut rng = fastrand::Rng::with_seed(7);
        for attempt in 1..=5 {
            let cap = b.cap(attempt);
            let delays: Vec<Duration> = (0..2000)
                .map(|_| b.delay_with(attempt, None, &mut rng))
                .collect();
            assert!(delays.iter().all(|d| *d <= cap), "attempt {attempt}");
            // Uniform over [0, cap]: both ends of the range are reached.
            assert!(delays.iter().any(|d| *d < cap / 10), "attempt {attempt}");
            assert!(
                delays.iter().any(|d| *d > cap * 9 / 10),
                "attempt {attempt}"
            );
        }
    }

    #[test]
    fn retry_after_raises_the_delay_but_never_past_the_maximum() {
        let b = backoff(10, 2000);
        let mut rng = fastrand::Rng::with_seed(1);
        for _ in 0..200 {
            let d = b.delay_with(1, Some(Duration::from_secs(1)), &mut rng);
            assert_eq!(d, Duration::from_secs(1));
            let capped = b.delay_with(1, Some(Duration::from_secs(60)), &mut rng);
            assert_eq!(capped, Duration::from_secs(2));
        }
    }
}
