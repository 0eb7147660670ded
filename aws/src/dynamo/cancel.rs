//! A cancelled `TransactWriteItems`, read by its reasons.
//!
//! DynamoDB cancels a whole transaction for any one of its items and says why in
//! `CancellationReasons`, one per item in the request's order, `None` for an item
//! that did not cause it
//! (<https://docs.aws.amazon.com/amazondynamodb/latest/APIReference/API_TransactWriteItems.html>,
//! under `TransactionCanceledException`): `ConditionalCheckFailed` (a condition
//! expression failed), `ItemCollectionSizeLimitExceeded`, `TransactionConflict`
//! (another transaction or write was on the item at the same time),
//! `ProvisionedThroughputExceeded`, `ThrottlingError`, `ValidationError` (an item
//! too large, a bad attribute). Only a failed condition is an answer about what is
//! recorded (augur's transactions are conditioned on items not existing yet);
//! conflicts and throttling are worth trying again later; a validation error never
//! mends.

use super::items::fail;
use augur_store::StoreError;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;

/// Reads a failed `TransactWriteItems` whose items are named (in order) by
/// `items`: `Ok` for a failed condition (the transaction conflicts with what is
/// recorded), the error to give the caller otherwise (unavailable, or refused).
pub(super) fn conflict(
    table: &str,
    items: &[String],
    e: SdkError<TransactWriteItemsError>,
) -> Result<(), StoreError> {
    let codes: Vec<(String, Option<String>)> = match e.as_service_error() {
        Some(TransactWriteItemsError::TransactionCanceledException(c)) => {
            let given: Vec<(String, Option<String>)> = c
                .cancellation_reasons()
                .iter()
                .map(|r| {
                    let code = r.code().unwrap_or("None").to_string();
                    (code, r.message().map(str::to_string))
                })
                .collect();
            if given.is_empty() {
                listed(c.message().unwrap_or_default())
            } else {
                given
            }
        }
        _ => return Err(fail(table, "TransactWriteItems", e)),
    };
    read(table, items, &codes)
}

/// The reasons DynamoDB lists in its message when the structured ones are
/// missing: "Transaction cancelled, please refer cancellation reasons for
/// specific reasons [ConditionalCheckFailed, None]".
fn listed(message: &str) -> Vec<(String, Option<String>)> {
    let inner = message
        .rsplit_once('[')
        .and_then(|(_, rest)| rest.split_once(']'))
        .map_or("", |(inner, _)| inner);
    inner
        .split(',')
        .map(|c| (c.trim().to_string(), None))
        .filter(|(c, _)| !c.is_empty())
        .collect()
}

/// The reasons' meaning, the gravest first: a validation error (never mends), a
/// failed condition (the answer), anything else (try again later).
fn read(
    table: &str,
    items: &[String],
    codes: &[(String, Option<String>)],
) -> Result<(), StoreError> {
    let name = |i: usize| items.get(i).cloned().unwrap_or_else(|| format!("item {i}"));
    let with = |i: usize| {
        let (c, m) = &codes[i];
        match m {
            Some(m) => format!("{c}: {m}"),
            None => c.clone(),
        }
    };
    let find = |code: &str| codes.iter().position(|(c, _)| c == code);
    if let Some(i) = find("ValidationError") {
        return Err(StoreError::Refused {
            item: format!("{} in table `{table}`", name(i)),
            reason: with(i),
        });
    }
    if find("ConditionalCheckFailed").is_some() {
        return Ok(());
    }
    let why: Vec<String> = codes
        .iter()
        .enumerate()
        .filter(|(_, (c, _))| c != "None")
        .map(|(i, (c, _))| format!("{} ({c})", name(i)))
        .collect();
    let why = if why.is_empty() {
        "no reason given".to_string()
    } else {
        why.join(", ")
    };
    Err(StoreError::unavailable(format!(
        "DynamoDB TransactWriteItems on `{table}` cancelled: {why}"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn of(codes: &[&str]) -> Result<(), StoreError> {
        let items = vec!["study `s`".to_string(), "index entry of `s`".to_string()];
        let codes: Vec<(String, Option<String>)> =
            codes.iter().map(|c| (c.to_string(), None)).collect();
        read("t", &items, &codes)
    }

    #[test]
    fn only_a_failed_condition_is_a_conflict() {
        assert!(matches!(of(&["ConditionalCheckFailed", "None"]), Ok(())));
        assert!(matches!(of(&["None", "ConditionalCheckFailed"]), Ok(())));
        for retry in [
            "TransactionConflict",
            "ThrottlingError",
            "ProvisionedThroughputExceeded",
        ] {
            match of(&["None", retry]) {
                Err(e @ StoreError::Unavailable(_)) => {
                    assert!(
                        e.to_string()
                            .contains(&format!("index entry of `s` ({retry})")),
                        "{e}"
                    )
                }
                other => panic!("{retry}: {other:?}"),
            }
        }
        match of(&["ValidationError", "ConditionalCheckFailed"]) {
            Err(e @ StoreError::Refused { .. }) => {
                assert!(!e.is_retryable());
                assert!(e.to_string().contains("study `s`"), "{e}");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(of(&[]), Err(StoreError::Unavailable(_))));
    }

    #[test]
    fn reasons_are_read_from_the_message_when_not_given_apart() {
        let m = "Transaction cancelled, please refer cancellation reasons for specific reasons [None, ConditionalCheckFailed]";
        assert_eq!(
            listed(m),
            [
                ("None".to_string(), None),
                ("ConditionalCheckFailed".to_string(), None)
            ]
        );
        assert!(listed("no list").is_empty());
    }
}
