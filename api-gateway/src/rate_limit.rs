//! Request rate limiting: a token bucket per caller, so one client cannot take the gateway
//! from the others, and a bucket of failed authentications per client address.
//!
//! A caller is who a verified token names (the agent, or the customer for a customer-level
//! token), never the token's text: the same token sent with a space or percent-encoded is the
//! same caller, and junk tokens create no bucket at all. They count against their client
//! address instead, and an address out of failures gets 429 before its next token is even
//! checked. Both maps are bounded whatever the traffic: idle buckets (full again) are pruned,
//! and when a map is still full, newcomers share one overflow bucket.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::auth::Caller;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    /// Requests per second a caller may make, sustained; 0 turns limiting off.
    pub per_second: u32,
    /// Requests a caller may make at once, above the sustained rate.
    pub burst: u32,
}

pub const DEFAULT_PER_SECOND: u32 = 100;
pub const DEFAULT_BURST: u32 = 200;
pub const DEFAULT_FAILURES_PER_SECOND: u32 = 20;
pub const DEFAULT_FAILURE_BURST: u32 = 200;

/// The most callers, and client addresses, with a bucket of their own (about 100 bytes each).
pub const MAX_CALLERS: usize = 100_000;
pub const MAX_ADDRESSES: usize = 20_000;

impl Default for RateLimit {
    fn default() -> Self {
        RateLimit {
            per_second: DEFAULT_PER_SECOND,
            burst: DEFAULT_BURST,
        }
    }
}

impl RateLimit {
    /// The default limit of failed authentications per client address.
    pub fn failures() -> Self {
        RateLimit {
            per_second: DEFAULT_FAILURES_PER_SECOND,
            burst: DEFAULT_FAILURE_BURST,
        }
    }

    /// No limit.
    pub fn off() -> Self {
        RateLimit {
            per_second: 0,
            burst: 0,
        }
    }

    fn capacity(&self) -> f64 {
        f64::from(self.burst.max(1))
    }
}

/// Whose requests a bucket counts: a verified identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CallerKey {
    Agent {
        customer: uuid::Uuid,
        agent: uuid::Uuid,
    },
    Customer(uuid::Uuid),
}

impl CallerKey {
    pub fn of(caller: &Caller) -> Self {
        match &caller.agent {
            Some(agent) => CallerKey::Agent {
                customer: caller.customer_id,
                agent: agent.id,
            },
            None => CallerKey::Customer(caller.customer_id),
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    refilled: Instant,
}

impl Bucket {
    fn full(limit: &RateLimit, now: Instant) -> Self {
        Bucket {
            tokens: limit.capacity(),
            refilled: now,
        }
    }

    fn refill(&mut self, limit: &RateLimit, now: Instant) {
        let elapsed = now.saturating_duration_since(self.refilled).as_secs_f64();
        self.tokens = (self.tokens + elapsed * f64::from(limit.per_second)).min(limit.capacity());
        self.refilled = now;
    }

    /// How long until one request is available (zero: now).
    fn wait(&self, limit: &RateLimit) -> Duration {
        if self.tokens >= 1.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64((1.0 - self.tokens) / f64::from(limit.per_second))
        }
    }

    fn is_full_at(&self, limit: &RateLimit, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.refilled).as_secs_f64();
        self.tokens + elapsed * f64::from(limit.per_second) >= limit.capacity()
    }
}

/// Buckets by key, at most `capacity` of them; past that, newcomers share `overflow`.
#[derive(Debug)]
struct Buckets<K> {
    limit: RateLimit,
    capacity: usize,
    map: HashMap<K, Bucket>,
    overflow: Option<Bucket>,
}

impl<K: Eq + Hash + Copy> Buckets<K> {
    fn new(limit: RateLimit, capacity: usize) -> Self {
        Buckets {
            limit,
            capacity,
            map: HashMap::new(),
            overflow: None,
        }
    }

    fn bucket(&mut self, key: K, now: Instant) -> &mut Bucket {
        if !self.map.contains_key(&key) && self.map.len() >= self.capacity {
            let limit = self.limit;
            self.map.retain(|_, b| !b.is_full_at(&limit, now));
        }
        let limit = self.limit;
        if self.map.contains_key(&key) || self.map.len() < self.capacity {
            return self
                .map
                .entry(key)
                .or_insert_with(|| Bucket::full(&limit, now));
        }
        self.overflow
            .get_or_insert_with(|| Bucket::full(&limit, now))
    }

    /// Takes one request from `key`'s bucket: `Ok`, or how long until one is available.
    fn take(&mut self, key: K, now: Instant) -> Result<(), Duration> {
        if self.limit.per_second == 0 {
            return Ok(());
        }
        let limit = self.limit;
        let bucket = self.bucket(key, now);
        bucket.refill(&limit, now);
        match bucket.wait(&limit) {
            Duration::ZERO => {
                bucket.tokens -= 1.0;
                Ok(())
            }
            wait => Err(wait),
        }
    }

    /// `Err(wait)` when `key` has nothing left (without taking anything, or adding a bucket).
    fn peek(&self, key: K, now: Instant) -> Result<(), Duration> {
        if self.limit.per_second == 0 {
            return Ok(());
        }
        let bucket = self.map.get(&key).or(self
            .overflow
            .as_ref()
            .filter(|_| self.map.len() >= self.capacity));
        match bucket {
            None => Ok(()),
            Some(b) => {
                let mut b = *b;
                b.refill(&self.limit, now);
                match b.wait(&self.limit) {
                    Duration::ZERO => Ok(()),
                    wait => Err(wait),
                }
            }
        }
    }
}

/// The gateway's limits; cheap to clone (shared state).
#[derive(Debug, Clone)]
pub struct RateLimiter {
    callers: Arc<Mutex<Buckets<CallerKey>>>,
    failures: Arc<Mutex<Buckets<IpAddr>>>,
}

impl RateLimiter {
    pub fn new(limit: RateLimit) -> Self {
        Self::with_failures(limit, RateLimit::failures())
    }

    pub fn with_failures(limit: RateLimit, failures: RateLimit) -> Self {
        RateLimiter {
            callers: Arc::new(Mutex::new(Buckets::new(limit, MAX_CALLERS))),
            failures: Arc::new(Mutex::new(Buckets::new(failures, MAX_ADDRESSES))),
        }
    }

    /// Takes one request from the caller's bucket: `Ok`, or how long until one is available.
    pub fn check(&self, caller: &Caller) -> Result<(), Duration> {
        self.check_at(CallerKey::of(caller), Instant::now())
    }

    fn check_at(&self, key: CallerKey, now: Instant) -> Result<(), Duration> {
        lock(&self.callers).take(key, now)
    }

    /// Whether `addr` may still fail to authenticate: checked before a token is verified.
    pub fn may_fail(&self, addr: IpAddr) -> Result<(), Duration> {
        lock(&self.failures).peek(addr, Instant::now())
    }

    /// Counts a failed authentication from `addr`.
    pub fn failed(&self, addr: IpAddr) {
        let _ = lock(&self.failures).take(addr, Instant::now());
    }

    /// Buckets held (callers, addresses), overflow buckets included.
    pub fn held(&self) -> (usize, usize) {
        let callers = lock(&self.callers);
        let failures = lock(&self.failures);
        (
            callers.map.len() + usize::from(callers.overflow.is_some()),
            failures.map.len() + usize::from(failures.overflow.is_some()),
        )
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// `Retry-After` in whole seconds, rounded up (at least 1).
pub fn retry_after_secs(wait: Duration) -> u64 {
    wait.as_secs_f64().ceil().max(1.0) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent(customer: u128, agent: u128) -> CallerKey {
        CallerKey::Agent {
            customer: uuid::Uuid::from_u128(customer),
            agent: uuid::Uuid::from_u128(agent),
        }
    }

    #[test]
    fn a_caller_gets_its_burst_then_the_sustained_rate() {
        let limiter = RateLimiter::new(RateLimit {
            per_second: 10,
            burst: 5,
        });
        let t0 = Instant::now();
        for i in 0..5 {
            assert!(
                limiter.check_at(agent(1, 1), t0).is_ok(),
                "request {i} of the burst"
            );
        }
        let wait = limiter.check_at(agent(1, 1), t0).unwrap_err();
        assert_eq!(wait, Duration::from_millis(100), "one request per 100 ms");
        // Another caller has its own bucket: another agent, the same agent id in another
        // tenant, the tenant's customer-level token.
        assert!(limiter.check_at(agent(1, 2), t0).is_ok());
        assert!(limiter.check_at(agent(2, 1), t0).is_ok());
        assert!(
            limiter
                .check_at(CallerKey::Customer(uuid::Uuid::from_u128(1)), t0)
                .is_ok()
        );
        // After 100 ms, one more.
        let later = t0 + Duration::from_millis(100);
        assert!(limiter.check_at(agent(1, 1), later).is_ok());
        assert!(limiter.check_at(agent(1, 1), later).is_err());
    }

    #[test]
    fn zero_turns_limiting_off() {
        let limiter = RateLimiter::with_failures(RateLimit::off(), RateLimit::off());
        let t0 = Instant::now();
        assert!((0..10_000).all(|_| limiter.check_at(agent(1, 1), t0).is_ok()));
        let addr: IpAddr = "10.0.0.1".parse().unwrap();
        (0..10_000).for_each(|_| limiter.failed(addr));
        assert!(limiter.may_fail(addr).is_ok());
        assert_eq!(limiter.held(), (0, 0), "nothing kept when off");
    }

    #[test]
    fn buckets_are_bounded_idle_ones_forgotten_and_newcomers_share_the_overflow() {
        let limit = RateLimit {
            per_second: 1,
            burst: 2,
        };
        let mut buckets = Buckets::new(limit, 100);
        let t0 = Instant::now();
        for i in 0..10_000u128 {
            let _ = buckets.take(agent(i, i), t0);
            assert!(buckets.map.len() <= 100);
        }
        // The newcomers past the first 100 shared one bucket: it is long empty.
        assert!(buckets.take(agent(20_000, 1), t0).is_err());
        assert!(buckets.overflow.is_some());
        // Two seconds on, every bucket is full again (idle): a newcomer prunes them.
        let later = t0 + Duration::from_secs(2);
        assert!(buckets.take(agent(30_000, 1), later).is_ok());
        assert_eq!(buckets.map.len(), 1);
    }

    #[test]
    fn failures_are_counted_per_address_and_peeking_adds_nothing() {
        let limiter = RateLimiter::with_failures(
            RateLimit::default(),
            RateLimit {
                per_second: 1,
                burst: 3,
            },
        );
        let (a, b): (IpAddr, IpAddr) = ("192.0.2.1".parse().unwrap(), "::1".parse().unwrap());
        for _ in 0..100 {
            assert!(limiter.may_fail(b).is_ok());
        }
        assert_eq!(limiter.held(), (0, 0), "peeking creates no bucket");
        for _ in 0..3 {
            assert!(limiter.may_fail(a).is_ok());
            limiter.failed(a);
        }
        let wait = limiter.may_fail(a).unwrap_err();
        assert!(wait > Duration::ZERO && wait <= Duration::from_secs(1));
        assert!(
            limiter.may_fail(b).is_ok(),
            "another address is not affected"
        );
        assert_eq!(limiter.held(), (0, 1));
    }

    #[test]
    fn retry_after_rounds_up() {
        assert_eq!(retry_after_secs(Duration::from_millis(100)), 1);
        assert_eq!(retry_after_secs(Duration::from_secs(2)), 2);
        assert_eq!(retry_after_secs(Duration::from_millis(2100)), 3);
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
    }
}
