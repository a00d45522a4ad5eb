//! Per-key request limits: a token bucket per key (directory key or admin token), so one
//! runaway client cannot starve the others. Buckets live in this process; with several
//! instances behind a load balancer each enforces the limit on the requests it receives.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use crate::config::RateLimitConfig;
use crate::error::Error;

#[derive(Debug)]
pub struct RateLimiter {
    /// Tokens added per second; 0 disables the limiter.
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, Bucket>>,
    epoch: Instant,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    /// Seconds since the limiter's epoch at the last refill.
    at: f64,
}

/// Bounds the map; past it, full buckets (idle keys) are dropped.
const TRACKED_LIMIT: usize = 10_000;

impl RateLimiter {
    pub fn new(config: &RateLimitConfig) -> RateLimiter {
        RateLimiter {
            rate: f64::from(config.requests_per_second),
            burst: f64::from(config.burst.max(1)),
            buckets: Mutex::default(),
            epoch: Instant::now(),
        }
    }

    /// Takes one request from `key`'s bucket, or says when to retry.
    pub fn check(&self, key: &str) -> Result<(), Error> {
        self.check_at(key, self.epoch.elapsed().as_secs_f64())
    }

    fn check_at(&self, key: &str, now: f64) -> Result<(), Error> {
        if self.rate <= 0.0 {
            return Ok(());
        }
        let Ok(mut buckets) = self.buckets.lock() else { return Ok(()) };
        if buckets.len() >= TRACKED_LIMIT && !buckets.contains_key(key) {
            let (rate, burst) = (self.rate, self.burst);
            buckets.retain(|_, b| b.tokens + (now - b.at) * rate < burst);
        }
        let bucket = buckets.entry(key.to_string()).or_insert(Bucket { tokens: self.burst, at: now });
        bucket.tokens = (bucket.tokens + (now - bucket.at) * self.rate).min(self.burst);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            return Ok(());
        }
        let wait = (1.0 - bucket.tokens) / self.rate;
        // Retry-After is in whole seconds (RFC 9110 §10.2.3); never tell a client to retry at once.
        let retry_after_secs = wait.ceil().max(1.0) as u64;
        Err(Error::RateLimited {
            detail: format!(
                "this key sent more than {} requests per second (bursts up to {}); retry after {retry_after_secs} s",
                self.rate, self.burst
            ),
            retry_after_secs,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(rate: u32, burst: u32) -> RateLimiter {
        RateLimiter::new(&RateLimitConfig { requests_per_second: rate, burst })
    }

    #[test]
    fn a_key_gets_its_burst_then_the_rate_and_others_are_unaffected() {
        let limiter = limiter(2, 3);
        for _ in 0..3 {
            assert!(limiter.check_at("a", 0.0).is_ok());
        }
        match limiter.check_at("a", 0.0) {
            Err(Error::RateLimited { retry_after_secs, detail }) => {
                assert_eq!(retry_after_secs, 1);
                assert!(detail.contains("2 requests per second"), "{detail}");
            }
            other => panic!("{other:?}"),
        }
        assert!(limiter.check_at("b", 0.0).is_ok(), "another key has its own bucket");
        assert!(limiter.check_at("a", 0.5).is_ok(), "half a second refills one request at 2/s");
        assert!(limiter.check_at("a", 0.5).is_err());
        assert!(limiter.check_at("a", 100.0).is_ok());
        for _ in 0..2 {
            assert!(limiter.check_at("a", 100.0).is_ok(), "refill is capped at the burst");
        }
        assert!(limiter.check_at("a", 100.0).is_err());
    }

    #[test]
    fn a_slow_rate_asks_for_a_longer_wait_and_zero_turns_it_off() {
        let slow = limiter(1, 1);
        assert!(slow.check_at("a", 0.0).is_ok());
        assert!(matches!(slow.check_at("a", 0.0), Err(Error::RateLimited { retry_after_secs: 1, .. })));
        let off = limiter(0, 0);
        for _ in 0..1000 {
            assert!(off.check_at("a", 0.0).is_ok());
        }
    }
}
