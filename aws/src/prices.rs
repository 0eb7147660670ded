//! What an instance costs per hour, for the [`Billing`] of each attempt.
//!
//! - **Spot:** the price in force in the instance's zone when it launched, from
//!   `DescribeSpotPriceHistory` with a start time of now, which "returns the price in
//!   effect at the start time"
//!   (<https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_DescribeSpotPriceHistory.html>).
//!   Asked again after [`SPOT_FRESH`]; spot prices change slowly.
//! - **On-demand:** the AWS Price List API's `GetProducts`
//!   (<https://docs.aws.amazon.com/aws-cost-management/latest/APIReference/API_pricing_GetProducts.html>),
//!   whose endpoint is in us-east-1 whatever the region priced. Asked once per type
//!   for a provider (a study's drive). When it cannot be asked (no permission, no
//!   network), the packaged table [`TABLE`] of us-east-1's list prices answers, and
//!   the billing says so.
//!
//! A spot price that cannot be learned counts at the on-demand price, which no spot
//! price exceeds: budgets err on the safe side.

use augur_model::cost::Billing;
use aws_sdk_ec2::primitives::DateTime;
use aws_sdk_pricing::types::{Filter as PriceFilter, FilterType};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

/// How long a spot price is reused.
pub const SPOT_FRESH: Duration = Duration::from_secs(600);

/// The packaged on-demand prices: us-east-1, Linux, shared tenancy, USD per hour.
pub const TABLE: &str = include_str!("prices.csv");

/// What the packaged table is, as a billing's `price_from` names it.
pub const TABLE_SOURCE: &str = "packaged table (us-east-1 list prices of 2025)";

/// Prices, asked once and remembered.
pub struct Prices {
    ec2: aws_sdk_ec2::Client,
    list: aws_sdk_pricing::Client,
    region: String,
    spot: Mutex<HashMap<(String, String), (Instant, f64)>>,
    on_demand: Mutex<HashMap<String, (Option<f64>, String)>>,
}

impl Prices {
    /// Prices of instances in `region`, asked with `config`'s credentials and
    /// endpoint.
    pub fn new(config: &aws_config::SdkConfig, ec2: aws_sdk_ec2::Client, region: &str) -> Prices {
        let list = aws_sdk_pricing::Client::from_conf(
            aws_sdk_pricing::config::Builder::from(config)
                .region(aws_sdk_pricing::config::Region::new("us-east-1"))
                .build(),
        );
        Prices {
            ec2,
            list,
            region: region.to_string(),
            spot: Mutex::default(),
            on_demand: Mutex::default(),
        }
    }

    /// How an instance of `instance_type` in `zone` is billed.
    pub async fn billing(&self, instance_type: &str, zone: &str, spot: bool) -> Billing {
        let (on_demand, from) = self.on_demand(instance_type).await;
        let (usd_per_hour, price_from) = if spot {
            match self.spot_price(instance_type, zone).await {
                Some(p) => (Some(p), "spot price history".to_string()),
                None => (
                    on_demand,
                    format!("on-demand price, the most spot costs ({from})"),
                ),
            }
        } else {
            (on_demand, from)
        };
        Billing {
            instance_type: instance_type.to_string(),
            spot,
            zone: zone.to_string(),
            usd_per_hour,
            price_from,
            share: None,
        }
    }

    /// How an instance is billed, from what is known at once: prices already
    /// asked, else the packaged table's on-demand price (for spot too: the most spot
    /// costs), said to be a first guess. Nothing slow stands between a launch and its
    /// record; [`billing`](Self::billing) refines the guess afterwards. The second
    /// value says whether it is final.
    pub fn at_once(&self, instance_type: &str, zone: &str, spot: bool) -> (Billing, bool) {
        let cached = self
            .on_demand
            .lock()
            .ok()
            .and_then(|c| c.get(instance_type).cloned());
        let spot_cached = || {
            let key = (instance_type.to_string(), zone.to_string());
            let cache = self.spot.lock().ok()?;
            let (at, p) = cache.get(&key)?;
            (at.elapsed() < SPOT_FRESH).then_some(*p)
        };
        let billing = |usd_per_hour, price_from| Billing {
            instance_type: instance_type.to_string(),
            spot,
            zone: zone.to_string(),
            usd_per_hour,
            price_from,
            share: None,
        };
        match (cached, spot) {
            (Some((usd, from)), false) => return (billing(usd, from), true),
            (Some(_), true) => {
                if let Some(p) = spot_cached() {
                    return (billing(Some(p), "spot price history".into()), true);
                }
            }
            (None, _) => {}
        }
        let from = format!("{TABLE_SOURCE}, until the price is asked");
        (billing(packaged(instance_type), from), false)
    }

    async fn spot_price(&self, instance_type: &str, zone: &str) -> Option<f64> {
        let key = (instance_type.to_string(), zone.to_string());
        if let Some((at, p)) = self.spot.lock().ok()?.get(&key) {
            if at.elapsed() < SPOT_FRESH {
                return Some(*p);
            }
        }
        // An instance whose launch answer was lost has no zone known: any zone's.
        let out = self
            .ec2
            .describe_spot_price_history()
            .instance_types(aws_sdk_ec2::types::InstanceType::from(instance_type))
            .set_availability_zone((!zone.is_empty()).then(|| zone.to_string()))
            .product_descriptions("Linux/UNIX")
            .start_time(DateTime::from(SystemTime::now()))
            .send()
            .await
            .map_err(|e| tracing::warn!(error = %crate::error_text(&e), "spot price history"))
            .ok()?;
        let p = out
            .spot_price_history()
            .iter()
            .filter(|h| zone.is_empty() || h.availability_zone().is_none_or(|z| z == zone))
            .max_by_key(|h| h.timestamp().map(|t| t.secs()))
            .and_then(|h| h.spot_price()?.parse::<f64>().ok())
            .filter(|p| p.is_finite() && *p >= 0.0)?;
        if let Ok(mut cache) = self.spot.lock() {
            cache.insert(key, (Instant::now(), p));
        }
        Some(p)
    }

    /// The on-demand price and where it came from.
    async fn on_demand(&self, instance_type: &str) -> (Option<f64>, String) {
        if let Some(known) = self
            .on_demand
            .lock()
            .ok()
            .and_then(|c| c.get(instance_type).cloned())
        {
            return known;
        }
        let found = match self.price_list(instance_type).await {
            Ok(Some(p)) => (Some(p), "price list".to_string()),
            Ok(None) | Err(_) => match packaged(instance_type) {
                Some(p) if self.region == "us-east-1" => (Some(p), TABLE_SOURCE.to_string()),
                Some(p) => (
                    Some(p),
                    format!("{TABLE_SOURCE}; {} may differ", self.region),
                ),
                None => (None, format!("no price known for {instance_type}")),
            },
        };
        if let Ok(mut cache) = self.on_demand.lock() {
            cache.insert(instance_type.to_string(), found.clone());
        }
        found
    }

    async fn price_list(&self, instance_type: &str) -> Result<Option<f64>, String> {
        let term = |field: &str, value: &str| {
            PriceFilter::builder()
                .r#type(FilterType::TermMatch)
                .field(field)
                .value(value)
                .build()
                .map_err(|e| e.to_string())
        };
        let out = self
            .list
            .get_products()
            .service_code("AmazonEC2")
            .filters(term("instanceType", instance_type)?)
            .filters(term("regionCode", &self.region)?)
            .filters(term("operatingSystem", "Linux")?)
            .filters(term("tenancy", "Shared")?)
            .filters(term("preInstalledSw", "NA")?)
            .filters(term("capacitystatus", "Used")?)
            .format_version("aws_v1")
            .max_results(10)
            .send()
            .await
            .map_err(|e| {
                let text = crate::error_text(&e);
                tracing::warn!(error = %text, "price list");
                text
            })?;
        Ok(out.price_list().iter().find_map(|doc| on_demand_usd(doc)))
    }
}

/// The on-demand hourly price in one Price List product document: the first
/// positive `terms.OnDemand.*.priceDimensions.*.pricePerUnit.USD` billed in hours.
pub fn on_demand_usd(doc: &str) -> Option<f64> {
    let v: serde_json::Value = serde_json::from_str(doc).ok()?;
    let terms = v.get("terms")?.get("OnDemand")?.as_object()?;
    terms
        .values()
        .filter_map(|t| t.get("priceDimensions")?.as_object())
        .flat_map(|dims| dims.values())
        .filter(|d| d.get("unit").and_then(|u| u.as_str()) == Some("Hrs"))
        .filter_map(|d| {
            d.get("pricePerUnit")?
                .get("USD")?
                .as_str()?
                .parse::<f64>()
                .ok()
        })
        .find(|p| p.is_finite() && *p > 0.0)
}

/// The packaged table's price of `instance_type`.
pub fn packaged(instance_type: &str) -> Option<f64> {
    TABLE
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once(','))
        .find(|(t, _)| t.trim() == instance_type)
        .and_then(|(_, p)| p.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_price_list_document_gives_its_hourly_on_demand_price() {
        // The shape GetProducts answers with (one product, its terms), trimmed.
        let doc = r#"{"product":{"attributes":{"instanceType":"m5.large","regionCode":"us-east-1"}},
            "terms":{"OnDemand":{"ABC.JRTCKXETXF":{"priceDimensions":{"ABC.JRTCKXETXF.6YS6EN2CT7":
            {"unit":"Hrs","pricePerUnit":{"USD":"0.0960000000"}}}}},
            "Reserved":{"ABC.X":{"priceDimensions":{"ABC.X.Y":{"unit":"Quantity","pricePerUnit":{"USD":"500"}}}}}}}"#;
        assert_eq!(on_demand_usd(doc), Some(0.096));
        assert_eq!(on_demand_usd(r#"{"terms":{}}"#), None);
        assert_eq!(on_demand_usd("not json"), None);
    }

    #[test]
    fn the_packaged_table_knows_common_types_and_every_line_reads() {
        assert_eq!(packaged("m5.large"), Some(0.096));
        assert_eq!(packaged("t3.micro"), Some(0.0104));
        assert_eq!(packaged("x99.huge"), None);
        for line in TABLE.lines().filter(|l| !l.starts_with('#')) {
            let (t, p) = line.split_once(',').expect("type,price");
            let p: f64 = p.trim().parse().expect("a price");
            assert!(p > 0.0 && !t.trim().is_empty(), "{line}");
        }
    }
}
