//! Who drives a study: the item `lease` in the study's partition (`holder`, `until`
//! and `since` in ms), taken and renewed by one conditional write; a second only when
//! the chain of leases was broken (`since` starts again) or another holder has it.

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
    /// one `UpdateItem` that keeps the record's `since`, conditional on the chain
    /// holding too (the record ended at most `gap` before `now`); where only the
    /// chain fails, a second write takes it with `since` started at `now`. A failure
    /// between the two leaves the lease untaken, never a stale `since`.
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
            .update_expression("SET holder = :me, #until = :until, since = if_not_exists(since, :now)")
            .condition_expression(
                "attribute_not_exists(pk) OR ((holder = :me OR #until <= :now) AND #until >= :chain)",
            )
            .expression_attribute_names("#until", "until")
            .expression_attribute_values(":me", s(holder))
            .expression_attribute_values(":until", n(until))
            .expression_attribute_values(":now", n(now))
            .expression_attribute_values(":chain", n(now - gap))
            .return_values(ReturnValue::AllNew)
            .send()
            .await;
        match out {
            Ok(o) => Ok(Lease {
                holder: holder.to_string(),
                until,
                since: o.attributes.map_or(now, |a| lease_of(&a).since),
            }),
            Err(e) if conditional(&e) => self.lease_restart(study, holder, (now, until)).await,
            Err(e) => Err(fail(&self.table, "UpdateItem", e)),
        }
    }

    /// Takes the lease with `since` started at `now` (the chain was broken), unless
    /// another holder's is live: the lease as it stands.
    async fn lease_restart(
        &self,
        study: &str,
        holder: &str,
        (now, until): (Millis, Millis),
    ) -> Result<Lease> {
        let out = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(study))
            .item("sk", s("lease"))
            .item("holder", s(holder))
            .item("until", n(until))
            .item("since", n(now))
            .condition_expression("attribute_not_exists(pk) OR holder = :me OR #until <= :now")
            .expression_attribute_names("#until", "until")
            .expression_attribute_values(":me", s(holder))
            .expression_attribute_values(":now", n(now))
            .send()
            .await;
        match out {
            Ok(_) => Ok(Lease {
                holder: holder.to_string(),
                until,
                since: now,
            }),
            Err(e) if conditional(&e) => {
                let item = self.get(study, "lease", true).await?.unwrap_or_default();
                Ok(lease_of(&item))
            }
            Err(e) => Err(fail(&self.table, "PutItem", e)),
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
