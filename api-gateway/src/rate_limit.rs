//! Request rate limiting per token: a token bucket for each token presented, so one client
//! cannot take the gateway from the others. Over its limit a request gets 429 with
//! `Retry-After` and reaches no service.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Buckets kept before idle ones (full again) are forgotten.
const PRUNE_ABOVE: usize = 10_000;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    /// Requests per second a token may make, sustained; 0 turns limiting off.
    pub per_second: u32,
    /// Requests a token may make at once, above the sustained rate.
    pub burst: u32,
}

pub const DEFAULT_PER_SECOND: u32 = 100;
pub const DEFAULT_BURST: u32 = 200;

impl Default for RateLimit {
    fn default() -> Self {
        RateLimit {
            per_second: DEFAULT_PER_SECOND,
            burst: DEFAULT_BURST,
        }
    }
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    refilled: Instant,
}

#[derive(Debug, Clone)]
pub struct RateLimiter {
    limit: RateLimit,
    buckets: Arc<Mutex<HashMap<String, Bucket>>>,
}

impl RateLimiter {
    pub fn new(limit: RateLimit) -> Self {
        RateLimiter {
            limit,
            buckets: Arc::default(),
        }
    }

    /// Takes one request from `token`'s bucket: `Ok`, or how long until one is available.
    pub fn check(&self, token: &str) -> Result<(), Duration> {
        self.check_at(token, Instant::now())
    }

    fn check_at(&self, token: &str, now: Instant) -> Result<(), Duration> {
        if self.limit.per_second == 0 {
            return Ok(());
        }
        let rate = f64::from(self.limit.per_second);
        let capacity = f64::from(self.limit.burst.max(1));
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if buckets.len() > PRUNE_ABOVE {
            buckets.retain(|_, b| {
                b.tokens + now.duration_since(b.refilled).as_secs_f64() * rate < capacity
            });
        }
        let bucket = buckets.entry(token.to_owned()).or_insert(Bucket {
            tokens: capacity,
            refilled: now,
        });
        let elapsed = now.saturating_duration_since(bucket.refilled).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * rate).min(capacity);
        bucket.refilled = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - bucket.tokens) / rate))
        }
    }
}

/// `Retry-After` in whole seconds, rounded up (at least 1).
pub fn retry_after_secs(wait: Duration) -> u64 {
    wait.as_secs_f64().ceil().max(1.0) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_gets_its_burst_then_the_sustained_rate() {
        let limiter = RateLimiter::new(RateLimit {
            per_second: 10,
            burst: 5,
        });
        let t0 = Instant::now();
        for i in 0..5 {
            assert!(
                limiter.check_at("a", t0).is_ok(),
                "request {i} of the burst"
            );
        }
        let wait = limiter.check_at("a", t0).unwrap_err();
        assert_eq!(wait, Duration::from_millis(100), "one request per 100 ms");
        // Another token has its own bucket.
        assert!(limiter.check_at("b", t0).is_ok());
        // After 100 ms, one more.
        let later = t0 + Duration::from_millis(100);
        assert!(limiter.check_at("a", later).is_ok());
        assert!(limiter.check_at("a", later).is_err());
    }

    #[test]
    fn zero_turns_limiting_off() {
        let limiter = RateLimiter::new(RateLimit {
            per_second: 0,
            burst: 0,
        });
        let t0 = Instant::now();
        assert!((0..10_000).all(|_| limiter.check_at("a", t0).is_ok()));
    }

    #[test]
    fn idle_buckets_are_forgotten() {
        let limiter = RateLimiter::new(RateLimit {
            per_second: 1000,
            burst: 1,
        });
        let t0 = Instant::now();
        for i in 0..=PRUNE_ABOVE {
            let _ = limiter.check_at(&i.to_string(), t0);
        }
        let _ = limiter.check_at("late", t0 + Duration::from_secs(1));
        assert_eq!(limiter.buckets.lock().unwrap().len(), 1);
    }

    #[test]
    fn retry_after_rounds_up() {
        assert_eq!(retry_after_secs(Duration::from_millis(100)), 1);
        assert_eq!(retry_after_secs(Duration::from_secs(2)), 2);
        assert_eq!(retry_after_secs(Duration::from_millis(2100)), 3);
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
    }
}
