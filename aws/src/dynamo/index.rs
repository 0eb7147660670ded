//! The index of studies: one item `study#NAME` per study in the partition `#studies`,
//! so that listing studies (the status pages, `/metrics`, `augur studies`) is a query
//! of that partition and a batched read of the studies' items, never a scan of the
//! whole table with every trial in it.
//!
//! A table made before the index has studies without an entry: the first listing
//! that finds no `indexed` mark scans once, writes the missing entries and the mark.

use super::items::{build_err, fail, get_s, s};
use super::{DynamoStore, Item};
use augur_store::Result;
use aws_sdk_dynamodb::types::Put;
use std::collections::HashMap;

/// The partition of the index.
const STUDIES: &str = "#studies";
/// The mark that every study of the table has its entry.
const INDEXED: &str = "indexed";

/// The index entry of `study`.
pub(super) fn entry(study: &str) -> Item {
    HashMap::from([
        ("pk".to_string(), s(STUDIES)),
        ("sk".to_string(), s(format!("study#{study}"))),
        ("study".to_string(), s(study)),
    ])
}

/// The index entry of `study`, as a transaction's put.
pub(super) fn entry_put(table: &str, study: &str) -> Result<Put> {
    Put::builder()
        .table_name(table)
        .set_item(Some(entry(study)))
        .build()
        .map_err(build_err)
}

impl DynamoStore {
    /// The study items, by the index.
    pub(super) async fn study_items(&self) -> Result<Vec<Item>> {
        if self.get(STUDIES, INDEXED, false).await?.is_none() {
            self.backfill_index().await?;
        }
        let names: Vec<String> = self
            .query(STUDIES, Some("study#"))
            .await?
            .iter()
            .filter_map(|i| get_s(i, "study").map(str::to_string))
            .collect();
        self.batch_get_studies(&names).await
    }

    /// Writes the entries of the studies a scan finds, then the mark.
    async fn backfill_index(&self) -> Result<()> {
        for item in self.scan_sk("study").await? {
            let Some(name) = get_s(&item, "pk") else {
                continue;
            };
            self.client
                .put_item()
                .table_name(&self.table)
                .set_item(Some(entry(name)))
                .send()
                .await
                .map_err(|e| fail(&self.table, "PutItem", e))?;
        }
        self.client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(STUDIES))
            .item("sk", s(INDEXED))
            .send()
            .await
            .map_err(|e| fail(&self.table, "PutItem", e))?;
        Ok(())
    }

    /// The study items of `names` (an entry whose study is gone reads as nothing),
    /// consistently.
    async fn batch_get_studies(&self, names: &[String]) -> Result<Vec<Item>> {
        let keys = names
            .iter()
            .map(|n| HashMap::from([("pk".to_string(), s(n)), ("sk".to_string(), s("study"))]))
            .collect();
        self.batch_get(keys, true, "studies").await
    }
}
