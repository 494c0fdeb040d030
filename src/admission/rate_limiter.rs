//! Global fixed-window rate limiter aligned to the epoch second (REFERENCE §4, DECISIONS).
//!
//! The window start and the count share one `AtomicU64` (second << 24 | count), so a call is one
//! compare-and-swap: no lock, and never more than `max` admissions in one epoch second, even under
//! concurrency. Rejected calls count too, as in Java. The limit can change at run time.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

const COUNT_BITS: u32 = 24;
const COUNT_MASK: u64 = (1 << COUNT_BITS) - 1;

pub struct RateLimiter {
    state: AtomicU64,
    max_per_second: AtomicU64,
}

impl RateLimiter {
    pub fn new(max_per_second: u64) -> Self {
        RateLimiter {
            state: AtomicU64::new(0),
            max_per_second: AtomicU64::new(max_per_second),
        }
    }

    pub fn max_per_second(&self) -> u64 {
        self.max_per_second.load(Ordering::Relaxed)
    }

    pub fn set_max_per_second(&self, max: u64) {
        self.max_per_second.store(max, Ordering::Relaxed);
    }

    pub fn try_acquire(&self) -> bool {
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        self.try_acquire_at(now_ms)
    }

    /// `try_acquire` for a given wall-clock time in epoch milliseconds.
    pub fn try_acquire_at(&self, now_ms: u64) -> bool {
        let second = now_ms / 1000;
        let max = self.max_per_second();
        let mut current = self.state.load(Ordering::Relaxed);
        loop {
            let (window, count) = (current >> COUNT_BITS, current & COUNT_MASK);
            let count = if second > window { 0 } else { count };
            let window = window.max(second);
            let next_count = (count + 1).min(COUNT_MASK);
            let next = (window << COUNT_BITS) | next_count;
            match self.state.compare_exchange_weak(
                current,
                next,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                // The count saturates at 2^24-1; limits above that never reject.
                Ok(_) => return count < max,
                Err(actual) => current = actual,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn allows_n_per_second_then_rejects_until_the_next_second() {
        let l = RateLimiter::new(3);
        let t = 1_781_611_200_500;
        assert!(l.try_acquire_at(t));
        assert!(l.try_acquire_at(t + 1));
        assert!(l.try_acquire_at(t + 2));
        assert!(!l.try_acquire_at(t + 3));
        assert!(!l.try_acquire_at(t + 499));
        // The window is aligned to the epoch second, not to the first call.
        assert!(l.try_acquire_at(t + 500));
    }

    #[test]
    fn zero_rejects_everything_and_limits_change_live() {
        let l = RateLimiter::new(0);
        assert!(!l.try_acquire_at(1000));
        l.set_max_per_second(1);
        assert!(l.try_acquire_at(2000));
        assert!(!l.try_acquire_at(2001));
    }

    #[test]
    fn never_more_than_n_under_concurrency() {
        let l = Arc::new(RateLimiter::new(1000));
        let t = 5_000_000;
        let allowed: usize = (0..8)
            .map(|_| {
                let l = l.clone();
                std::thread::spawn(move || (0..1000).filter(|_| l.try_acquire_at(t)).count())
            })
            .map(|h| h.join().unwrap())
            .sum();
        assert_eq!(allowed, 1000);
    }

    #[test]
    fn a_late_caller_from_an_older_second_does_not_reset_the_window() {
        let l = RateLimiter::new(1);
        assert!(l.try_acquire_at(10_000));
        assert!(!l.try_acquire_at(9_999));
    }
}
