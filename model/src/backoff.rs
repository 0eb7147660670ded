//! The one doubling every wait in augur follows: a trial's retries
//! (`DriveSettings::backoff_ms`), a driver's passes after its backend failed, an agent's
//! heartbeats, final write and last log lines, and the batch items DynamoDB leaves
//! unprocessed (`augur_aws::backoff`). Each draws its own jitter below the ceiling,
//! or none.

use std::time::Duration;

/// The ceiling of the wait after the `failed`-th failure in a row (1: the first;
/// 0 counts as 1): `min(cap, base × 2^(failed-1))`, without overflow.
pub fn ceiling(base: Duration, cap: Duration, failed: u32) -> Duration {
    let doubled = 1u32
        .checked_shl(failed.saturating_sub(1))
        .map_or(cap, |m| base.saturating_mul(m));
    doubled.min(cap)
}

/// Full jitter: a wait uniform in `[0, ceiling]`, drawn from `random` (any `u64`).
pub fn full_jitter(ceiling: Duration, random: u64) -> Duration {
    let top = ceiling.as_micros().min(u64::MAX as u128 - 1) as u64;
    Duration::from_micros(random % (top + 1))
}

/// Upper-half jitter: a wait in `[ceiling / 2, ceiling]`, drawn from `unit` in
/// `[0, 1)`: no one waits less than half, and not all at once.
pub fn upper_half(ceiling: Duration, unit: f64) -> Duration {
    ceiling / 2 + ceiling.mul_f64(unit.clamp(0.0, 1.0) / 2.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceilings_double_from_the_base_to_the_cap_without_overflow() {
        let (base, cap) = (Duration::from_millis(50), Duration::from_secs(5));
        let ms: Vec<u128> = (0..=10)
            .map(|n| ceiling(base, cap, n).as_millis())
            .collect();
        assert_eq!(
            ms,
            [50, 50, 100, 200, 400, 800, 1600, 3200, 5000, 5000, 5000]
        );
        assert_eq!(ceiling(base, cap, u32::MAX), cap);
        let huge = Duration::from_secs(u64::MAX / 2);
        assert_eq!(ceiling(huge, Duration::MAX, 3), Duration::MAX, "saturates");
    }

    #[test]
    fn jitter_stays_below_its_ceiling() {
        let c = Duration::from_millis(800);
        for r in [0, 1, 799_999, 800_000, 800_001, u64::MAX] {
            assert!(full_jitter(c, r) <= c);
        }
        assert_eq!(full_jitter(Duration::ZERO, u64::MAX), Duration::ZERO);
        assert_eq!(upper_half(c, 0.0), c / 2);
        assert!(upper_half(c, 0.999) <= c && upper_half(c, 0.999) > c / 2);
    }
}
