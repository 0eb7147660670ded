//! How records become DynamoDB items and back, and how SDK errors become
//! [`StoreError`]s.

use super::{DynamoStore, Item};
use augur_model::{Millis, SeriesKeep, Trial, TrialState, TrialUpdate};
use augur_store::{Failure, Result, StoreError};
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::types::AttributeValue;
use std::collections::HashMap;

/// The index of trials by study and change time (`chg`, the writer's clock in ms).
pub const CHANGES_INDEX: &str = "by_change";

/// A `changed_trials` mark: the reader's clock (ms) when it last read, in the low 42
/// bits, and the minute of its last whole read (mod 2^22) above them.
pub(super) fn mark(read_ms: Millis, full_minute: u64) -> u64 {
    ((full_minute & ((1 << 22) - 1)) << 42) | (read_ms.max(0) as u64 & ((1 << 42) - 1))
}

/// The digest of what a driver proposed for a trial (its id, point, replicate,
/// dataset and parameter values), kept with its slot guard where the worker role
/// cannot write ([`augur_store::TrialStore::proposed`]).
pub(super) fn proposal_digest(t: &Trial) -> String {
    use sha2::Digest;
    let what = serde_json::json!([t.id, t.point, t.replicate, t.dataset, t.params]);
    let sum = sha2::Sha256::digest(what.to_string().as_bytes());
    sum.iter().map(|b| format!("{b:02x}")).collect()
}

/// The trials in `items`. An item that is not one of `study`'s trials as augur
/// writes them (undecodable, or naming another study or trial than its key) is set
/// aside with a warning naming its key: anything holding the worker role may write
/// a trial partition, and one planted item must not fail the study's every read.
pub(super) fn decode_trials(study: &str, items: &[Item], keep: &SeriesKeep) -> Result<Vec<Trial>> {
    Ok(items
        .iter()
        .filter_map(|i| {
            let sk = get_s(i, "sk").unwrap_or("?");
            let key = format!("{study}/{sk}");
            match decode_trial(&key, i, keep) {
                Ok(t) if t.study == study && trial_sk(t.id) == sk => Some(t),
                Ok(t) => {
                    let names = format!("{}/{}", t.study, t.id);
                    tracing::warn!(item = %key, names = %names, "set aside: a trial item naming another trial");
                    None
                }
                Err(e) => {
                    tracing::warn!(item = %key, error = %e, "set aside: an undecodable trial item");
                    None
                }
            }
        })
        .collect())
}

/// A trial item as its record. A refusal its boot script wrote
/// ([`crate::boot::REFUSAL`]: the agent was not the pinned one) ends the attempt it
/// names, if still starting, as the agent's own refusal would: failed, not retried,
/// with the reason. Its series as far as `keep` keeps it.
pub(super) fn decode_trial(key: &str, item: &Item, keep: &SeriesKeep) -> Result<Trial> {
    let data = get_s(item, "data").unwrap_or("");
    let mut t = Trial::decode(data, keep).map_err(|source| StoreError::Corrupt {
        key: key.to_string(),
        source,
    })?;
    if let Some(why) = get_s(item, crate::boot::REFUSAL) {
        if t.state == TrialState::Starting && get_n(item, "attempt") == Some(t.attempt.into()) {
            let at = get_n(item, "chg").map_or_else(augur_store::now_ms, |c| c as Millis);
            TrialUpdate::refused(why, at).apply(&mut t);
        }
    }
    Ok(t)
}

/// An item's size as DynamoDB counts it for capacity
/// (<https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/CapacityUnitCalculations.html>):
/// each attribute's name in UTF-8 bytes plus its value: a string's UTF-8 bytes, a
/// number's one byte per two significant digits plus one. (Other types, which augur
/// does not write, count as their debug text.) DynamoDB reports consumed capacity;
/// emulators do not, so the tests count by this rule.
pub fn item_bytes(item: &Item) -> usize {
    item.iter()
        .map(|(k, v)| {
            k.len()
                + match v {
                    AttributeValue::S(s) => s.len(),
                    AttributeValue::N(n) => {
                        let digits = n.trim_start_matches(['-', '0', '.']).replace('.', "");
                        digits.trim_end_matches('0').len().div_ceil(2) + 1
                    }
                    other => format!("{other:?}").len(),
                }
        })
        .sum()
}

/// The write units of writing an item of `bytes` (1 KB each, rounded up; an update
/// pays for the larger of the item before and after).
pub fn write_units(bytes: usize) -> usize {
    bytes.div_ceil(1024).max(1)
}

pub(super) fn unmark(m: u64) -> (Millis, u64) {
    ((m & ((1 << 42) - 1)) as Millis, m >> 42)
}

pub(super) fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

pub(super) fn n(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

pub(super) const SUBMITTED: &str = "#submitted";

/// The partition of a study's trials (since `layout` [`LAYOUT`]): study names have no
/// `#`, so no study's own partition is one.
pub(crate) fn trial_pk(study: &str) -> String {
    format!("trials#{study}")
}

/// The study whose trials are in partition `pk` ([`trial_pk`], or the study's own
/// partition for a study recorded before trials had one of their own).
pub fn study_of_trials(pk: &str) -> &str {
    pk.strip_prefix("trials#").unwrap_or(pk)
}

/// The `layout` of a study item whose trials are in [`trial_pk`].
pub(super) const LAYOUT: u64 = 2;

pub(crate) fn trial_sk(id: u64) -> String {
    format!("trial#{id:010}")
}

/// An SDK failure as a store error, with the SDK's full error context.
pub(super) fn fail<E>(table: &str, op: &str, e: SdkError<E>) -> StoreError
where
    E: std::error::Error + ProvideErrorMetadata + Send + Sync + 'static,
{
    if e.as_service_error().and_then(|x| x.code()) == Some("ResourceNotFoundException") {
        return StoreError::unavailable(format!(
            "DynamoDB table `{table}` not found: create it with `augur init --backend aws` (or the templates in infra/)"
        ));
    }
    if let Some(d) = crate::denied::denied(&format!("DynamoDB {op}"), &format!("dynamodb:{op}"), &e)
    {
        return StoreError::Denied(Box::new(d));
    }
    let what = format!("DynamoDB {op} on `{table}`: {}", crate::error_text(&e));
    StoreError::Unavailable(Failure::caused(what, e))
}

pub(super) fn conditional<E: ProvideErrorMetadata>(e: &SdkError<E>) -> bool {
    e.as_service_error().and_then(|x| x.code()) == Some("ConditionalCheckFailedException")
}

pub(super) fn get_s<'a>(item: &'a Item, key: &str) -> Option<&'a str> {
    item.get(key)
        .and_then(|v| v.as_s().ok())
        .map(String::as_str)
}

pub(super) fn get_n(item: &Item, key: &str) -> Option<u64> {
    item.get(key)
        .and_then(|v| v.as_n().ok())
        .and_then(|v| v.parse().ok())
}

pub(super) fn decode<T: serde::de::DeserializeOwned>(key: &str, item: &Item) -> Result<T> {
    let data = get_s(item, "data").unwrap_or("");
    serde_json::from_str(data).map_err(|source| StoreError::Corrupt {
        key: key.to_string(),
        source,
    })
}

pub(super) fn encode<T: serde::Serialize>(key: &str, v: &T) -> Result<String> {
    serde_json::to_string(v).map_err(|source| StoreError::Encode {
        key: key.to_string(),
        source,
    })
}

pub(super) fn build_err(e: impl std::fmt::Display) -> StoreError {
    StoreError::unavailable(format!("building a DynamoDB request: {e}"))
}

impl DynamoStore {
    /// The item of trial `t` in partition `pk` (the study's trials' partition).
    pub(super) fn trial_item(pk: &str, t: &Trial, rev: u64) -> Result<Item> {
        let data = encode(&format!("{}/{}", t.study, t.id), t)?;
        Ok(HashMap::from([
            ("pk".to_string(), s(pk)),
            ("sk".to_string(), s(trial_sk(t.id))),
            ("state".to_string(), s(t.state.as_str())),
            ("attempt".to_string(), n(t.attempt)),
            ("rev".to_string(), n(rev)),
            ("chg".to_string(), n(augur_store::now_ms())),
            ("data".to_string(), s(data)),
        ]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn trial_json(state: &str, attempt: u32) -> String {
        let mut t = Trial::new("s", 3, 0, 0, Default::default(), 0);
        t.attempt = attempt;
        let mut v = serde_json::to_value(&t).expect("json");
        v["state"] = serde_json::Value::from(state);
        v.to_string()
    }

    proptest! {
        /// Whatever a trial item holds (anything with write access to the table can
        /// write it), decoding never panics; a boot refusal fails only the attempt
        /// it names while starting, and is never retried.
        #[test]
        fn hostile_trial_items_decode_or_are_refused(
            data in prop_oneof![
                any::<String>(),
                (prop::sample::select(vec!["pending", "starting", "running", "failed", "bogus"]), 0u32..4)
                    .prop_map(|(s, a)| trial_json(s, a)),
            ],
            attempt in prop_oneof![any::<String>(), (0u32..4).prop_map(|a| a.to_string())],
            refusal in proptest::option::of(any::<String>()),
            chg in proptest::option::of(any::<String>()),
        ) {
            let mut item = HashMap::from([
                ("data".to_string(), s(data)),
                ("attempt".to_string(), AttributeValue::N(attempt.clone())),
            ]);
            if let Some(r) = &refusal {
                item.insert(crate::boot::REFUSAL.to_string(), s(r.clone()));
            }
            if let Some(c) = chg {
                item.insert("chg".to_string(), AttributeValue::N(c));
            }
            let Ok(plain) = decode::<Trial>("s/3", &item) else {
                prop_assert!(decode_trial("s/3", &item, &SeriesKeep::Whole).is_err());
                return Ok(());
            };
            let t = decode_trial("s/3", &item, &SeriesKeep::Whole).expect("decodes as its data does");
            let names_it = plain.state == TrialState::Starting
                && attempt.parse::<u64>().ok() == Some(plain.attempt.into());
            match &refusal {
                Some(why) if names_it => {
                    prop_assert_eq!(t.state, TrialState::Failed);
                    prop_assert!(!t.retryable);
                    prop_assert_eq!(t.error, Some(format!("refused: {why}")));
                }
                _ => prop_assert_eq!(t, plain),
            }
        }
    }
}
