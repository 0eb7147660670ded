//! Who drives a study: the item `lease` in the study's partition (`holder`, `until`
//! in ms), taken and renewed by one conditional write.

use super::items::*;
use super::{DynamoStore, Item};
use augur_model::Millis;
use augur_store::{Lease, Result};

/// A lease item as its [`Lease`].
fn lease_of(item: &Item) -> Lease {
    Lease {
        holder: get_s(item, "holder").unwrap_or("?").to_string(),
        until: get_n(item, "until").unwrap_or(0) as Millis,
    }
}

impl DynamoStore {
    pub(super) async fn lease_take(
        &self,
        study: &str,
        holder: &str,
        now: Millis,
        until: Millis,
    ) -> Result<Lease> {
        let out = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(study))
            .item("sk", s("lease"))
            .item("holder", s(holder))
            .item("until", n(until))
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
            }),
            Err(e) if conditional(&e) => {
                let item = self.get(study, "lease", true).await?.unwrap_or_default();
                Ok(lease_of(&item))
            }
            Err(e) => Err(fail(&self.table, "PutItem", e)),
        }
    }

    pub(super) async fn lease_release(&self, study: &str, holder: &str) -> Result<()> {
        let out = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key("pk", s(study))
            .key("sk", s("lease"))
            .condition_expression("holder = :me")
            .expression_attribute_values(":me", s(holder))
            .send()
            .await;
        match out {
            Ok(_) => Ok(()),
            Err(e) if conditional(&e) => Ok(()),
            Err(e) => Err(fail(&self.table, "DeleteItem", e)),
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
