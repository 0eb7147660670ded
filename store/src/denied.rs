//! A request the account's IAM policies refused: a configuration error, never a
//! passing outage. It is not retried and costs no attempt; the command that met it
//! exits 2 naming the action, the resource, who asked and the grant to add, and a
//! tick stops the study with that reason.

use std::fmt;

/// One refused request, as AWS described it
/// (<https://docs.aws.amazon.com/IAM/latest/UserGuide/troubleshoot_access-denied.html>).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Denied {
    /// The call refused, as `Service Operation` (`EC2 RunInstances`).
    pub call: String,
    /// The IAM action refused (`ec2:RunInstances`).
    pub action: String,
    /// The resource it was refused on, when AWS said.
    pub resource: Option<String>,
    /// Who asked (an ARN), when AWS said.
    pub principal: Option<String>,
    /// Where the grant belongs in the stack (`infra/augur.yaml`): `CliPolicy`,
    /// `TickRole` or `WorkerRole`, by which of augur's programs asked.
    pub identity: Option<String>,
    /// Refused by an explicit `Deny` rather than for want of an `Allow`.
    pub explicit: bool,
}

impl Denied {
    /// From the service's message, in the form IAM writes it: "User: ARN is not
    /// authorized to perform: ACTION on resource: RESOURCE because ..." (the
    /// resource sometimes quoted, as S3 does). `action` is the fallback when the
    /// message does not say.
    pub fn from_message(call: &str, action: &str, message: &str) -> Denied {
        let principal = between(message, "User: ", " is not authorized");
        let said = between(message, "to perform: ", " on resource")
            .or_else(|| between(message, "to perform: ", " because"));
        let resource = message
            .split(" on resource: ")
            .nth(1)
            .map(|r| {
                let end = [" because", " with an"]
                    .iter()
                    .filter_map(|e| r.find(e))
                    .min()
                    .unwrap_or(r.len());
                &r[..end]
            })
            .map(|r| r.trim().trim_matches('"').to_string())
            .filter(|r| !r.is_empty());
        Denied {
            call: call.to_string(),
            action: said.unwrap_or_else(|| action.to_string()),
            resource,
            principal,
            identity: None,
            explicit: message.contains("explicit deny"),
        }
    }
}

fn between(text: &str, start: &str, end: &str) -> Option<String> {
    let from = text.find(start)? + start.len();
    let len = text[from..].find(end)?;
    Some(text[from..from + len].trim().to_string()).filter(|s| !s.is_empty())
}

impl fmt::Display for Denied {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let who = self.principal.as_deref().unwrap_or("these credentials");
        let on = self.resource.as_deref().unwrap_or("*");
        write!(
            f,
            "access denied: {} was refused: {who} may not {} on {on}",
            self.call, self.action
        )?;
        match (self.explicit, self.identity.as_deref()) {
            (true, _) => write!(f, " (an explicit Deny in a policy; remove it or narrow it)"),
            (false, Some(role)) => write!(
                f,
                "; grant `{}` on `{on}` to {role} (infra/augur.yaml) and deploy again",
                self.action
            ),
            (false, None) => write!(f, "; grant `{}` on `{on}` to {who}", self.action),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iam_messages_are_read_for_action_resource_and_principal() {
        let m = "User: arn:aws:sts::123456789012:assumed-role/augur-tick/x is not authorized to perform: dynamodb:Query on resource: arn:aws:dynamodb:us-east-1:123456789012:table/t because no identity-based policy allows the dynamodb:Query action";
        let d = Denied::from_message("DynamoDB Query", "dynamodb:Query", m);
        assert_eq!(d.action, "dynamodb:Query");
        assert_eq!(
            d.resource.as_deref(),
            Some("arn:aws:dynamodb:us-east-1:123456789012:table/t")
        );
        assert_eq!(
            d.principal.as_deref(),
            Some("arn:aws:sts::123456789012:assumed-role/augur-tick/x")
        );
        assert!(!d.explicit);
        let s3 = "User: arn:aws:iam::1:user/u is not authorized to perform: s3:GetObject on resource: \"arn:aws:s3:::b/k\" with an explicit deny in an identity-based policy";
        let d = Denied::from_message("S3 GetObject", "s3:GetObject", s3);
        assert_eq!(d.resource.as_deref(), Some("arn:aws:s3:::b/k"));
        assert!(d.explicit);
        let bare = Denied::from_message(
            "EC2 RunInstances",
            "ec2:RunInstances",
            "You are not authorized to perform this operation.",
        );
        assert_eq!(
            (bare.action.as_str(), bare.resource),
            ("ec2:RunInstances", None)
        );
        let mut named = Denied::from_message("DynamoDB Query", "dynamodb:Query", m);
        named.identity = Some("TickRole".into());
        let text = named.to_string();
        assert!(text.contains("grant `dynamodb:Query` on `arn:aws:dynamodb:us-east-1:123456789012:table/t` to TickRole"), "{text}");
    }
}
