//! Who drives a study: the item `lease` in the study's partition (`holder`, `until`
//! and `since` in ms), taken and renewed by one conditional write; a second only when
//! the chain of leases was broken (`since` starts again).

use super::items::*;
use super::{DynamoStore, Item};
use augur_model::Millis;
use augur_store::{Lease, Result};

/// A lease item as its [`Lease`].
fn lease_of(item: &Item) -> Lease {
    Lease {
        holder: get_s(item, "holder").unwrap_or("?").to_string(),
        until: get_n(item, "until").unwrap_or(0) as Millis,
        since: get_n(item, "since").unwrap_or(0) as Millis,
    }
}

impl DynamoStore {
    /// Takes or renews the lease ([`TrialStore::take_lease`](augur_store::TrialStore::take_lease)):
    /// an `UpdateItem` that keeps the record's `since` and returns the record it
    /// replaced; if that one had ended more than `gap` before `now` (or there was
    /// none), a second write starts `since` at `now`.
    pub(super) async fn lease_take(
        &self,
        study: &str,
        holder: &str,
        (now, until): (Millis, Millis),
        gap: Millis,
    ) -> Result<Lease> {
        use aws_sdk_dynamodb::types::ReturnValue;
        let out = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(study))
            .key("sk", s("lease"))
            .update_expression(
                "SET holder = :me, #until = :until, since = if_not_exists(since, :now)",
            )
            .condition_expression("attribute_not_exists(pk) OR holder = :me OR #until <= :now")
            .expression_attribute_names("#until", "until")
            .expression_attribute_values(":me", s(holder))
            .expression_attribute_values(":until", n(until))
            .expression_attribute_values(":now", n(now))
            .return_values(ReturnValue::AllOld)
            .send()
            .await;
        let old = match out {
            Ok(o) => o.attributes.map(|a| lease_of(&a)),
            Err(e) if conditional(&e) => {
                let item = self.get(study, "lease", true).await?.unwrap_or_default();
                return Ok(lease_of(&item));
            }
            Err(e) => return Err(fail(&self.table, "UpdateItem", e)),
        };
        let since = match old {
            // A new record: `if_not_exists` wrote `now`.
            None => now,
            Some(o) if o.until >= now - gap && o.since > 0 => o.since,
            Some(_) => self.lease_restart(study, holder, now).await?,
        };
        Ok(Lease {
            holder: holder.to_string(),
            until,
            since,
        })
    }

    /// Starts the lease's `since` again at `now` (the chain was broken), if `holder`
    /// still has it.
    async fn lease_restart(&self, study: &str, holder: &str, now: Millis) -> Result<Millis> {
        let out = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(study))
            .key("sk", s("lease"))
            .update_expression("SET since = :now")
            .condition_expression("holder = :me")
            .expression_attribute_values(":me", s(holder))
            .expression_attribute_values(":now", n(now))
            .send()
            .await;
        match out {
            Ok(_) => Ok(now),
            // Taken over meanwhile: the next take reads the record as it is.
            Err(e) if conditional(&e) => Ok(now),
            Err(e) => Err(fail(&self.table, "UpdateItem", e)),
        }
    }

    /// Ends the lease at `now` if `holder` still has it; the record stays, free.
    pub(super) async fn lease_release(&self, study: &str, holder: &str, now: Millis) -> Result<()> {
        let out = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(study))
            .key("sk", s("lease"))
            .update_expression("SET #until = :now")
            .condition_expression("holder = :me AND #until > :now")
            .expression_attribute_names("#until", "until")
            .expression_attribute_values(":me", s(holder))
            .expression_attribute_values(":now", n(now))
            .send()
            .await;
        match out {
            Ok(_) => Ok(()),
            Err(e) if conditional(&e) => Ok(()),
            Err(e) => Err(fail(&self.table, "UpdateItem", e)),
        }
    }

    pub(super) async fn lease_list(&self) -> Result<Vec<(String, Lease)>> {
        let mut out: Vec<(String, Lease)> = self
            .scan_sk("lease")
            .await?
            .iter()
            .map(|i| (get_s(i, "pk").unwrap_or("?").to_string(), lease_of(i)))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    pub(super) async fn lease_expire(&self, study: &str, lease: &Lease) -> Result<bool> {
        let out = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key("pk", s(study))
            .key("sk", s("lease"))
            .condition_expression("holder = :h AND #until = :u")
            .expression_attribute_names("#until", "until")
            .expression_attribute_values(":h", s(&lease.holder))
            .expression_attribute_values(":u", n(lease.until))
            .send()
            .await;
        match out {
            Ok(_) => Ok(true),
            Err(e) if conditional(&e) => Ok(false),
            Err(e) => Err(fail(&self.table, "DeleteItem", e)),
        }
    }
}
