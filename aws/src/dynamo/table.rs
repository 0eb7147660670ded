//! The table itself: creating it, and the reads and conditional puts every store
//! operation is made of (paginated, consistent where a decision depends on it).

use super::items::*;
use super::{DynamoStore, Item};
use augur_model::Millis;
use augur_store::{Result, StoreError};
use aws_sdk_dynamodb::error::ProvideErrorMetadata;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType,
    KeysAndAttributes, Projection, ProjectionType, ScalarAttributeType, StreamSpecification,
    StreamViewType,
};

impl DynamoStore {
    /// Creates the table if it does not exist (on-demand, with a stream of new and old
    /// images for the serverless tick); returns whether it created it.
    pub async fn ensure_table(&self) -> Result<bool> {
        let exists = self
            .client
            .describe_table()
            .table_name(&self.table)
            .send()
            .await;
        match exists {
            Ok(_) => return Ok(false),
            Err(e)
                if e.as_service_error().and_then(|x| x.code())
                    == Some("ResourceNotFoundException") => {}
            Err(e) => return Err(fail(&self.table, "DescribeTable", e)),
        }
        if !self.create_table().await? {
            return Ok(false);
        }
        self.wait_active().await?;
        Ok(true)
    }

    /// Creates the table (on-demand, keyed by `pk` and `sk`, the changes index, a
    /// stream); false if another caller created it first.
    async fn create_table(&self) -> Result<bool> {
        let attr = |name: &str| {
            AttributeDefinition::builder()
                .attribute_name(name)
                .attribute_type(ScalarAttributeType::S)
                .build()
                .map_err(build_err)
        };
        let key = |name: &str, kind| {
            KeySchemaElement::builder()
                .attribute_name(name)
                .key_type(kind)
                .build()
                .map_err(build_err)
        };
        let made = self
            .client
            .create_table()
            .table_name(&self.table)
            .attribute_definitions(attr("pk")?)
            .attribute_definitions(attr("sk")?)
            .attribute_definitions(
                AttributeDefinition::builder()
                    .attribute_name("chg")
                    .attribute_type(ScalarAttributeType::N)
                    .build()
                    .map_err(build_err)?,
            )
            .key_schema(key("pk", KeyType::Hash)?)
            .key_schema(key("sk", KeyType::Range)?)
            .global_secondary_indexes(
                GlobalSecondaryIndex::builder()
                    .index_name(CHANGES_INDEX)
                    .key_schema(key("pk", KeyType::Hash)?)
                    .key_schema(key("chg", KeyType::Range)?)
                    .projection(
                        Projection::builder()
                            .projection_type(ProjectionType::All)
                            .build(),
                    )
                    .build()
                    .map_err(build_err)?,
            )
            .billing_mode(BillingMode::PayPerRequest)
            .stream_specification(
                StreamSpecification::builder()
                    .stream_enabled(true)
                    .stream_view_type(StreamViewType::NewAndOldImages)
                    .build()
                    .map_err(build_err)?,
            )
            .send()
            .await;
        match made {
            Ok(_) => Ok(true),
            Err(e)
                if e.as_service_error().and_then(|x| x.code())
                    == Some("ResourceInUseException") =>
            {
                Ok(false)
            }
            Err(e) => Err(fail(&self.table, "CreateTable", e)),
        }
    }

    /// Waits until the table is ACTIVE (at once on emulators, seconds on AWS).
    async fn wait_active(&self) -> Result<()> {
        for _ in 0..120 {
            let d = self
                .client
                .describe_table()
                .table_name(&self.table)
                .send()
                .await
                .map_err(|e| fail(&self.table, "DescribeTable", e))?;
            if d.table()
                .and_then(|t| t.table_status())
                .is_some_and(|s| s.as_str() == "ACTIVE")
            {
                return Ok(());
            }
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        }
        Err(StoreError::unavailable(format!(
            "DynamoDB table `{}` did not become active",
            self.table
        )))
    }

    pub(super) async fn get(&self, pk: &str, sk: &str, consistent: bool) -> Result<Option<Item>> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", s(pk))
            .key("sk", s(sk))
            .consistent_read(consistent)
            .send()
            .await
            .map_err(|e| fail(&self.table, "GetItem", e))?;
        Ok(out.item().cloned())
    }

    /// The items at `keys` (a key with no item reads as nothing), 100 keys per
    /// `BatchGetItem`, with the keys DynamoDB leaves unprocessed asked again after
    /// [`batch_backoff`](Self::batch_backoff), then given up as unavailable; `what`
    /// names them in errors.
    pub(super) async fn batch_get(
        &self,
        keys: Vec<Item>,
        consistent: bool,
        what: &str,
    ) -> Result<Vec<Item>> {
        let mut out = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(100) {
            let mut pending = KeysAndAttributes::builder()
                .set_keys(Some(chunk.to_vec()))
                .consistent_read(consistent)
                .build()
                .map_err(build_err)?;
            let mut tries = 0;
            loop {
                tries += 1;
                let page = self
                    .client
                    .batch_get_item()
                    .request_items(&self.table, pending)
                    .send()
                    .await
                    .map_err(|e| fail(&self.table, "BatchGetItem", e))?;
                if let Some(items) = page.responses().and_then(|r| r.get(&self.table)) {
                    out.extend(items.iter().cloned());
                }
                match page
                    .unprocessed_keys()
                    .and_then(|u| u.get(&self.table))
                    .filter(|k| !k.keys().is_empty())
                {
                    None => break,
                    Some(left) => pending = left.clone(),
                }
                if !self.batch_backoff.wait(tries).await {
                    return Err(StoreError::unavailable(format!(
                        "DynamoDB left {} keys of `{}`'s {what} unprocessed after {tries} tries (BatchGetItem)",
                        pending.keys().len(),
                        self.table
                    )));
                }
            }
        }
        Ok(out)
    }

    /// Every item whose sort key is `sk`, across studies: a filtered scan, which
    /// reads the whole table (`augur gc`, and a table's first study listing only).
    pub(super) async fn scan_sk(&self, sk: &str) -> Result<Vec<Item>> {
        let mut out = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let page = self
                .client
                .scan()
                .table_name(&self.table)
                .filter_expression("sk = :sk")
                .expression_attribute_values(":sk", s(sk))
                .consistent_read(true)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| fail(&self.table, "Scan", e))?;
            out.extend(page.items().iter().cloned());
            match page.last_evaluated_key() {
                Some(k) if !k.is_empty() => start = Some(k.clone()),
                _ => return Ok(out),
            }
        }
    }

    /// Every item of `pk` (whose sort key starts with `prefix`), paginated.
    pub(super) async fn query(&self, pk: &str, prefix: Option<&str>) -> Result<Vec<Item>> {
        let mut out = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let mut q = self
                .client
                .query()
                .table_name(&self.table)
                .expression_attribute_values(":pk", s(pk));
            q = match prefix {
                Some(p) => q
                    .key_condition_expression("pk = :pk AND begins_with(sk, :prefix)")
                    .expression_attribute_values(":prefix", s(p)),
                None => q.key_condition_expression("pk = :pk"),
            };
            let page = q
                .consistent_read(true)
                .set_limit(self.page_size)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| fail(&self.table, "Query", e))?;
            out.extend(page.items().iter().cloned());
            match page.last_evaluated_key() {
                Some(k) if !k.is_empty() => start = Some(k.clone()),
                _ => return Ok(out),
            }
        }
    }

    /// The trials in partition `pk` written at `from_ms` or later, by the changes
    /// index (eventually consistent); `None` if the table has no such index.
    pub(super) async fn query_changes(
        &self,
        pk: &str,
        from_ms: Millis,
    ) -> Result<Option<Vec<Item>>> {
        let mut out = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let page = self
                .client
                .query()
                .table_name(&self.table)
                .index_name(CHANGES_INDEX)
                .key_condition_expression("pk = :pk AND chg >= :from")
                .expression_attribute_values(":pk", s(pk))
                .expression_attribute_values(":from", n(from_ms))
                .set_limit(self.page_size)
                .set_exclusive_start_key(start.take())
                .send()
                .await;
            let page = match page {
                Ok(p) => p,
                // DynamoDB says ValidationException for a missing index, emulators
                // ResourceNotFoundException; a whole read then says if the table
                // itself is missing.
                Err(e)
                    if matches!(
                        e.as_service_error().and_then(|x| x.code()),
                        Some("ValidationException" | "ResourceNotFoundException")
                    ) =>
                {
                    tracing::warn!(table = %self.table, "no `{CHANGES_INDEX}` index: reading whole studies (augur init adds it to new tables; see infra/augur.yaml)");
                    return Ok(None);
                }
                Err(e) => return Err(fail(&self.table, "Query", e)),
            };
            out.extend(
                page.items()
                    .iter()
                    .filter(|i| get_s(i, "sk").is_some_and(|k| k.starts_with("trial#")))
                    .cloned(),
            );
            match page.last_evaluated_key() {
                Some(k) if !k.is_empty() => start = Some(k.clone()),
                _ => return Ok(Some(out)),
            }
        }
    }

    /// Writes a whole item if its `rev` is still `rev` (or, with `None`, if absent).
    pub(super) async fn put_if(&self, item: Item, rev: Option<u64>) -> Result<bool> {
        let mut req = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item));
        req = match rev {
            Some(r) => req
                .condition_expression("rev = :rev")
                .expression_attribute_values(":rev", n(r)),
            None => req.condition_expression("attribute_not_exists(pk)"),
        };
        match req.send().await {
            Ok(_) => Ok(true),
            Err(e) if conditional(&e) => Ok(false),
            Err(e) => Err(fail(&self.table, "PutItem", e)),
        }
    }
}
