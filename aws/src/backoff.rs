//! Capped exponential backoff with full jitter, for what augur asks again itself
//! (the SDK retries a failed call; a call that succeeds but leaves work undone, as
//! `BatchGetItem` and `BatchWriteItem` do with their unprocessed items, is ours to
//! repeat). AWS recommends exactly this for those items: "If you delay the batch
//! operation using exponential backoff, the individual requests in the batch are
//! much more likely to succeed"
//! (<https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/Programming.Errors.html#Programming.Errors.BatchOperations>),
//! and full jitter (a delay drawn uniformly below the capped exponential) is the
//! variant the SDKs use (<https://aws.amazon.com/blogs/architecture/exponential-backoff-and-jitter/>).

use std::time::Duration;

/// How to wait between tries of one piece of work.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    /// The ceiling of the first wait; each next ceiling doubles it...
    pub base: Duration,
    /// ...up to this.
    pub cap: Duration,
    /// Tries in all, the first included; then the caller gives up.
    pub tries: u32,
}

impl Backoff {
    /// Unprocessed batch items: 50 ms doubling to 5 s, 10 tries (at most ~19 s
    /// of waits, ~9.5 s expected).
    pub const BATCH: Backoff = Backoff {
        base: Duration::from_millis(50),
        cap: Duration::from_secs(5),
        tries: 10,
    };

    /// The ceiling of the wait after the `failed`-th failed try (1: the first):
    /// `min(cap, base × 2^(failed-1))`.
    pub fn ceiling(&self, failed: u32) -> Duration {
        augur_model::backoff::ceiling(self.base, self.cap, failed)
    }

    /// The wait after the `failed`-th failed try: uniform in `[0, ceiling]`.
    pub fn delay(&self, failed: u32) -> Duration {
        augur_model::backoff::full_jitter(self.ceiling(failed), rand::random())
    }

    /// Waits [`delay`](Self::delay) after the `failed`-th failed try; false (at
    /// once) when that was the last try.
    pub async fn wait(&self, failed: u32) -> bool {
        if failed >= self.tries {
            return false;
        }
        tokio::time::sleep(self.delay(failed)).await;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceilings_double_from_the_base_to_the_cap_and_delays_stay_below() {
        let b = Backoff::BATCH;
        let ms: Vec<u128> = (1..=10).map(|n| b.ceiling(n).as_millis()).collect();
        assert_eq!(ms, [50, 100, 200, 400, 800, 1600, 3200, 5000, 5000, 5000]);
        assert_eq!(b.ceiling(u32::MAX), b.cap, "no overflow");
        for n in 1..=12 {
            assert!(b.delay(n) <= b.ceiling(n));
        }
        // Full jitter: the waits spread over the whole range, not at its top.
        let spread: Vec<Duration> = (0..200).map(|_| b.delay(4)).collect();
        assert!(spread.iter().any(|d| *d < Duration::from_millis(100)));
        assert!(spread.iter().any(|d| *d > Duration::from_millis(300)));
    }

    #[tokio::test]
    async fn the_last_try_waits_for_nothing() {
        let b = Backoff {
            base: Duration::from_secs(3600),
            cap: Duration::from_secs(3600),
            tries: 3,
        };
        assert!(!b.wait(3).await, "gives up at once after its last try");
    }
}
