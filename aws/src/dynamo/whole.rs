//! A study's items as a whole: found (its own partition, its trials', its index
//! entry), deleted in batches, or marked to expire.

use super::items::{build_err, conditional, fail};
use super::{index, DynamoStore, Item};
use augur_model::Millis;
use augur_store::{Result, StoreError};
use aws_sdk_dynamodb::types::{AttributeValue, DeleteRequest, WriteRequest};
use std::collections::HashMap;

impl DynamoStore {
    /// The key of every item of a study: its own partition, its trials' (if apart),
    /// its index entry.
    pub(super) async fn keys_of(&self, name: &str) -> Result<Vec<Item>> {
        let mut items = self.query(name, None).await?;
        let trials = self.trials_pk(name).await?;
        if trials != name {
            items.extend(self.query(&trials, None).await?);
        }
        items.push(index::entry(name));
        Ok(items
            .into_iter()
            .map(|i| {
                i.into_iter()
                    .filter(|(k, _)| k == "pk" || k == "sk")
                    .collect()
            })
            .collect())
    }

    /// Deletes the items at `keys` (of study `name`), 25 a batch, what DynamoDB
    /// leaves unprocessed sent again after [`batch_backoff`](Self::batch_backoff),
    /// then given up as unavailable.
    pub(super) async fn delete_keys(&self, name: &str, keys: Vec<Item>) -> Result<()> {
        for chunk in keys.chunks(25) {
            let mut requests: Vec<WriteRequest> = Vec::new();
            for key in chunk {
                let del = DeleteRequest::builder()
                    .set_key(Some(key.clone()))
                    .build()
                    .map_err(build_err)?;
                requests.push(WriteRequest::builder().delete_request(del).build());
            }
            let mut pending = HashMap::from([(self.table.clone(), requests)]);
            let mut tries = 0;
            loop {
                tries += 1;
                let out = self
                    .client
                    .batch_write_item()
                    .set_request_items(Some(pending))
                    .send()
                    .await
                    .map_err(|e| fail(&self.table, "BatchWriteItem", e))?;
                match out.unprocessed_items() {
                    Some(u) if u.values().any(|r| !r.is_empty()) => pending = u.clone(),
                    _ => break,
                }
                if !self.batch_backoff.wait(tries).await {
                    let left: usize = pending.values().map(Vec::len).sum();
                    return Err(StoreError::unavailable(format!(
                        "DynamoDB left {left} deletions of study `{name}` unprocessed after {tries} tries (BatchWriteItem)"
                    )));
                }
            }
        }
        Ok(())
    }

    /// Marks the items at `keys` to expire at `at_ms` (or keeps them again), 16
    /// calls at a time; how many.
    pub(super) async fn expire_keys(
        &self,
        keys: Vec<Item>,
        at_ms: Option<Millis>,
    ) -> Result<usize> {
        use futures_util::{StreamExt, TryStreamExt};
        let n = keys.len();
        futures_util::stream::iter(keys)
            .map(|key| self.set_expiry(key, at_ms))
            .buffer_unordered(16)
            .try_collect::<Vec<()>>()
            .await?;
        Ok(n)
    }

    /// Sets (or removes) the time to live of the item at `key`: `expires_at`, in
    /// epoch seconds, as DynamoDB's TTL reads it
    /// (<https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/time-to-live-ttl-before-you-start.html>).
    /// An item gone meanwhile is not made again.
    async fn set_expiry(&self, key: Item, at_ms: Option<Millis>) -> Result<()> {
        let req = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key))
            .condition_expression("attribute_exists(pk)")
            .expression_attribute_names("#e", "expires_at");
        let req = match at_ms {
            Some(ms) => req
                .update_expression("SET #e = :t")
                .expression_attribute_values(":t", AttributeValue::N((ms / 1000).to_string())),
            None => req.update_expression("REMOVE #e"),
        };
        match req.send().await {
            Ok(_) => Ok(()),
            Err(e) if conditional(&e) => Ok(()),
            Err(e) => Err(fail(&self.table, "UpdateItem", e)),
        }
    }
}
