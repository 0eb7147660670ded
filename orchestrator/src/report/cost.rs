//! Cost as every view shows it: a trial's, an attempt's machine, a study's.

use augur_model::cost::{Billing, Spend};
use augur_model::{Millis, Trial};
use serde_json::{json, Value};

pub use augur_model::cost::usd;

/// "m5.large spot in us-east-1a at $0.0350/h (spot price history)".
pub fn billing_display(b: &Billing) -> String {
    let price = b.usd_per_hour.map_or_else(
        || "an unknown price".to_string(),
        |p| format!("{}/h", usd(p)),
    );
    if b.is_local() {
        return format!("a local machine at {price} ({})", b.price_from);
    }
    let shared = b
        .share
        .map(|part| {
            format!(
                "; shared in slots, each attempt billed {:.0}% of it",
                part * 100.0
            )
        })
        .unwrap_or_default();
    format!(
        "{} {} in {} at {price} ({}){shared}",
        b.instance_type,
        if b.spot { "spot" } else { "on-demand" },
        if b.zone.is_empty() { "?" } else { &b.zone },
        b.price_from
    )
}

/// A trial's cost line for `augur show`: "$0.0123 over 2.1 machine-minutes".
pub fn trial_cost_display(t: &Trial, now: Millis) -> String {
    let minutes = t.machine_ms(now) as f64 / 60_000.0;
    format!("{} over {minutes:.1} machine-minutes", usd(t.cost_usd(now)))
}

/// A study's cost in a table cell: dollars, or `-` when nothing was priced (free
/// local machines).
pub fn spend_cell(s: &Spend) -> String {
    if s.priced() {
        usd(s.usd)
    } else {
        "-".into()
    }
}

/// The JSON of how an attempt's machine is billed.
pub fn billing_json(b: &Billing) -> Value {
    json!({
        "instance_type": b.instance_type,
        "lifecycle": if b.spot { "spot" } else { "on-demand" },
        "zone": b.zone,
        "usd_per_hour": b.usd_per_hour,
        "price_from": b.price_from,
        "share": b.share,
    })
}

/// A study's spend as JSON (`studies --json`, the status API).
pub fn spend_json(s: &Spend) -> Value {
    json!({
        "usd": round(s.usd),
        "machine_hours": s.machine_ms as f64 / 3_600_000.0,
        "spot_share": (s.cloud_ms > 0).then(|| s.spot_ms as f64 / s.cloud_ms as f64),
        "pruning_saved_usd": s.pruning_saved_usd.map(round),
        "unpriced_attempts": s.unpriced,
        "summary": s.summary(),
    })
}

/// Dollars to a hundredth of a cent (what the views show; no float noise in JSON).
pub fn round(v: f64) -> f64 {
    (v * 10_000.0).round() / 10_000.0
}

/// Whether any trial ran on a priced machine (a cloud one, or a local one its study
/// prices): views add cost columns then.
pub fn priced(trials: &[Trial]) -> bool {
    trials
        .iter()
        .any(|t| t.billing.is_some() || t.history.iter().any(|h| h.billing.is_some()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dollars_and_machines_read_plainly() {
        assert_eq!(usd(12.4), "$12.40");
        assert_eq!(usd(0.01234), "$0.0123");
        let b = Billing {
            instance_type: "m5.large".into(),
            spot: true,
            zone: "us-east-1a".into(),
            usd_per_hour: Some(0.035),
            price_from: "spot price history".into(),
            share: None,
        };
        assert_eq!(
            billing_display(&b),
            "m5.large spot in us-east-1a at $0.0350/h (spot price history)"
        );
    }
}
