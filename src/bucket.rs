//! A token bucket: a sustained rate with a burst allowance, for per-connection send limits
//! and the server-wide failed-login budget.

use std::time::Duration;

use tokio::time::Instant;

/// Allows `rate` events per second on average and up to `burst` at once.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(rate_per_sec: u32, burst: u32) -> Self {
        let burst = f64::from(burst.max(1));
        TokenBucket {
            rate: f64::from(rate_per_sec.max(1)),
            burst,
            tokens: burst,
            last: Instant::now(),
        }
    }

    /// Takes one token; on refusal, says how long until one is available.
    pub fn take(&mut self) -> Result<(), Duration> {
        let now = Instant::now();
        let elapsed = now.duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - self.tokens) / self.rate))
        }
    }

    /// Gives back a token taken for something that turned out not to count.
    pub fn refund(&mut self) {
        self.tokens = (self.tokens + 1.0).min(self.burst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn bursts_then_refills_at_the_rate() {
        let mut b = TokenBucket::new(10, 3);
        assert!(b.take().is_ok());
        assert!(b.take().is_ok());
        assert!(b.take().is_ok());
        let wait = b.take().unwrap_err();
        assert!(
            wait <= Duration::from_millis(100) && wait > Duration::ZERO,
            "{wait:?}"
        );
        tokio::time::advance(Duration::from_millis(100)).await;
        assert!(b.take().is_ok());
        assert!(b.take().is_err());
        tokio::time::advance(Duration::from_secs(10)).await;
        for _ in 0..3 {
            assert!(b.take().is_ok(), "refills up to the burst only");
        }
        assert!(b.take().is_err());
    }
}
