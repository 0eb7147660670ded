//! IAM's policy evaluation, as AWS documents it, for the stand-in to enforce the
//! policies of `infra/augur.yaml` on every request that reaches it: an explicit deny
//! wins, else an allow whose action, resource and every condition match, else the
//! implicit deny
//! (<https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_evaluation-logic.html>).
//! A request is authorized against every resource its action names (the Service
//! Authorization Reference's resource types for the action), each with its own
//! condition keys; it is allowed only if every one of them is.
//!
//! Condition operators: `String{Equals,NotEquals,Like,NotLike}`,
//! `Numeric{Equals,LessThan,LessThanEquals,GreaterThan,GreaterThanEquals}`, `Bool`,
//! `Arn{Equals,Like}`, `Null`, with `ForAllValues:`/`ForAnyValue:` and `...IfExists`
//! (<https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_elements_condition_operators.html>).
//! A key the request lacks fails the condition, but for `...IfExists`, `Null` and
//! `ForAllValues:` (which holds on no values: why a `ForAllValues` grant needs a
//! `Null` beside it,
//! <https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_condition-single-vs-multi-valued-context-keys.html>).

pub mod enforce;
pub mod requests;

use serde_json::Value;
use std::collections::BTreeMap;

/// One statement of an identity policy, its intrinsic functions resolved.
#[derive(Clone, Debug, PartialEq)]
pub struct Statement {
    pub sid: String,
    pub allow: bool,
    pub actions: Vec<String>,
    pub resources: Vec<String>,
    pub conditions: Vec<Condition>,
}

/// One test of a statement's `Condition` block.
#[derive(Clone, Debug, PartialEq)]
pub struct Condition {
    /// As written: `ForAllValues:StringLike`, `NumericLessThanEquals`, ...
    pub operator: String,
    pub key: String,
    pub values: Vec<String>,
}

/// One authorization a request needs: an action on a resource, with the condition
/// keys that resource type gives it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Authorization {
    pub action: String,
    pub resource: String,
    pub context: BTreeMap<String, Vec<String>>,
}

impl Authorization {
    pub fn new(action: &str, resource: &str) -> Authorization {
        Authorization {
            action: action.into(),
            resource: resource.into(),
            context: BTreeMap::new(),
        }
    }

    /// With condition key `key` at `values`.
    pub fn with(mut self, key: &str, values: &[&str]) -> Authorization {
        self.context
            .insert(key.into(), values.iter().map(|v| v.to_string()).collect());
        self
    }
}

/// What the evaluation decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    /// A statement denies it explicitly (its Sid).
    ExplicitDeny(String),
    /// No statement allows it.
    ImplicitDeny,
}

fn strings(v: &Value) -> Vec<String> {
    match v {
        Value::Array(a) => a.iter().flat_map(strings).collect(),
        Value::String(s) => vec![s.clone()],
        Value::Null => Vec::new(),
        other => vec![other.to_string()],
    }
}

impl Statement {
    /// A statement of a policy document (JSON, as IAM takes it).
    pub fn parse(v: &Value) -> Result<Statement, String> {
        let allow = match v["Effect"].as_str() {
            Some("Allow") => true,
            Some("Deny") => false,
            other => return Err(format!("statement with Effect {other:?}")),
        };
        if v.get("NotAction").is_some() || v.get("NotResource").is_some() {
            return Err("NotAction and NotResource are not evaluated here".into());
        }
        let mut conditions = Vec::new();
        if let Some(block) = v.get("Condition").and_then(Value::as_object) {
            for (operator, tests) in block {
                let tests = tests
                    .as_object()
                    .ok_or_else(|| format!("condition {operator} is not a map"))?;
                for (key, values) in tests {
                    conditions.push(Condition {
                        operator: operator.clone(),
                        key: key.clone(),
                        values: strings(values),
                    });
                }
            }
        }
        Ok(Statement {
            sid: v["Sid"].as_str().unwrap_or("").to_string(),
            allow,
            actions: strings(&v["Action"]),
            resources: strings(&v["Resource"]),
            conditions,
        })
    }

    fn applies(&self, a: &Authorization) -> bool {
        self.actions.iter().any(|p| matches_ci(p, &a.action))
            && self
                .resources
                .iter()
                .any(|p| with_variables(p, &a.context).is_some_and(|p| like(&p, &a.resource)))
            && self.conditions.iter().all(|c| c.holds(&a.context))
    }
}

/// A resource pattern with its policy variables (`${aws:username}`) replaced by the
/// request's values; `None` when one has no value, and then the pattern matches
/// nothing
/// (<https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_variables.html>).
fn with_variables(pattern: &str, context: &BTreeMap<String, Vec<String>>) -> Option<String> {
    let mut out = pattern.to_string();
    while let Some(start) = out.find("${") {
        let len = out[start..].find('}')?;
        let key = &out[start + 2..start + len];
        let value = context
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .and_then(|(_, v)| v.first())?
            .clone();
        out.replace_range(start..=start + len, &value);
    }
    Some(out)
}

/// The documented evaluation of one identity's statements for one authorization.
pub fn decide(statements: &[Statement], a: &Authorization) -> Verdict {
    let mut allowed = false;
    for s in statements.iter().filter(|s| s.applies(a)) {
        if !s.allow {
            return Verdict::ExplicitDeny(s.sid.clone());
        }
        allowed = true;
    }
    match allowed {
        true => Verdict::Allow,
        false => Verdict::ImplicitDeny,
    }
}

/// IAM's wildcard match: `*` any run of characters, `?` any one (case-sensitive,
/// as resource ARNs and condition values are).
pub fn like(pattern: &str, value: &str) -> bool {
    let (p, v): (Vec<char>, Vec<char>) = (pattern.chars().collect(), value.chars().collect());
    // Positions in the pattern still possible after each character of the value.
    let mut at = vec![false; p.len() + 1];
    at[0] = true;
    let spread = |at: &mut Vec<bool>| {
        for i in 0..p.len() {
            if at[i] && p[i] == '*' {
                at[i + 1] = true;
            }
        }
    };
    spread(&mut at);
    for c in v {
        let mut next = vec![false; p.len() + 1];
        for i in 0..p.len() {
            if at[i] && (p[i] == '*' || p[i] == '?' || p[i] == c) {
                next[if p[i] == '*' { i } else { i + 1 }] = true;
            }
        }
        spread(&mut next);
        at = next;
    }
    at[p.len()]
}

/// Actions match without regard to case (`dynamodb:getitem` is `dynamodb:GetItem`).
fn matches_ci(pattern: &str, action: &str) -> bool {
    like(&pattern.to_ascii_lowercase(), &action.to_ascii_lowercase())
}

impl Condition {
    fn holds(&self, context: &BTreeMap<String, Vec<String>>) -> bool {
        let (qualifier, base) = match self.operator.split_once(':') {
            Some((q, b)) => (Some(q), b),
            None => (None, self.operator.as_str()),
        };
        let if_exists = base.ends_with("IfExists");
        let base = base.trim_end_matches("IfExists");
        // Keys are case-insensitive; values are not.
        let got = context
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(&self.key))
            .map(|(_, v)| v.as_slice());
        if base == "Null" {
            let absent = got.is_none_or(|v| v.is_empty());
            return self
                .values
                .iter()
                .any(|w| w.eq_ignore_ascii_case("true") == absent);
        }
        let Some(got) = got.filter(|v| !v.is_empty()) else {
            return qualifier == Some("ForAllValues") || if_exists;
        };
        let negated = matches!(
            base,
            "StringNotEquals" | "StringNotLike" | "ArnNotEquals" | "ArnNotLike"
        );
        let one = |g: &String| match negated {
            true => self.values.iter().all(|w| test(base, w, g)),
            false => self.values.iter().any(|w| test(base, w, g)),
        };
        match qualifier {
            Some("ForAllValues") => got.iter().all(one),
            Some("ForAnyValue") => got.iter().any(one),
            _ => got.len() == 1 && one(&got[0]),
        }
    }
}

/// One value `got` tested against one wanted `want` by operator `base`.
fn test(base: &str, want: &str, got: &str) -> bool {
    let num = |s: &str| s.parse::<f64>().ok();
    let cmp = |f: fn(f64, f64) -> bool| num(got).zip(num(want)).is_some_and(|(g, w)| f(g, w));
    match base {
        "StringEquals" | "ArnEquals" => got == want,
        "StringEqualsIgnoreCase" => got.eq_ignore_ascii_case(want),
        "StringNotEquals" | "ArnNotEquals" => got != want,
        "StringLike" | "ArnLike" => like(want, got),
        "StringNotLike" | "ArnNotLike" => !like(want, got),
        "Bool" => got.eq_ignore_ascii_case(want),
        "NumericEquals" => cmp(|g, w| g == w),
        "NumericNotEquals" => cmp(|g, w| g != w),
        "NumericLessThan" => cmp(|g, w| g < w),
        "NumericLessThanEquals" => cmp(|g, w| g <= w),
        "NumericGreaterThan" => cmp(|g, w| g > w),
        "NumericGreaterThanEquals" => cmp(|g, w| g >= w),
        // An operator this evaluator does not know never grants.
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn st(v: Value) -> Statement {
        Statement::parse(&v).expect("statement")
    }

    #[test]
    fn wildcards_match_as_iam_documents() {
        assert!(like(
            "arn:aws:s3:::b/checkpoints/*",
            "arn:aws:s3:::b/checkpoints/s/1/x"
        ));
        assert!(!like(
            "arn:aws:s3:::b/checkpoints/*",
            "arn:aws:s3:::b/studies/s"
        ));
        assert!(like("t3.*", "t3.micro") && like("m7g?.*", "m7gd.large"));
        assert!(!like("t3.*", "m5.large"));
        assert!(like("*", "") && like("a*b*c", "aXXbYc") && !like("a*b*c", "aXXbY"));
    }

    #[test]
    fn an_explicit_deny_wins_and_nothing_allowed_is_denied() {
        let allow = st(json!({"Sid": "A", "Effect": "Allow", "Action": "s3:*", "Resource": "*"}));
        let deny = st(
            json!({"Sid": "NoTls", "Effect": "Deny", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::b/*"}),
        );
        let get = Authorization::new("s3:GetObject", "arn:aws:s3:::b/k");
        assert_eq!(decide(std::slice::from_ref(&allow), &get), Verdict::Allow);
        assert_eq!(
            decide(&[allow, deny], &get),
            Verdict::ExplicitDeny("NoTls".into())
        );
        assert_eq!(decide(&[], &get), Verdict::ImplicitDeny);
    }

    /// `ForAllValues:` holds on a request with no values at all: a grant that names
    /// partitions must also say the key may not be missing (`Null: false`).
    #[test]
    fn for_all_values_holds_on_none_unless_null_says_otherwise() {
        let loose = st(
            json!({"Effect": "Allow", "Action": "dynamodb:Query", "Resource": "*",
            "Condition": {"ForAllValues:StringLike": {"dynamodb:LeadingKeys": ["trials#*"]}}}),
        );
        let tight = st(
            json!({"Effect": "Allow", "Action": "dynamodb:Query", "Resource": "*",
            "Condition": {"ForAllValues:StringLike": {"dynamodb:LeadingKeys": ["trials#*"]},
                          "Null": {"dynamodb:LeadingKeys": "false"}}}),
        );
        let none = Authorization::new("dynamodb:Query", "arn:t");
        let ours = none.clone().with("dynamodb:LeadingKeys", &["trials#s"]);
        let spec = none.clone().with("dynamodb:LeadingKeys", &["s"]);
        assert_eq!(decide(std::slice::from_ref(&loose), &none), Verdict::Allow);
        assert_eq!(
            decide(std::slice::from_ref(&tight), &none),
            Verdict::ImplicitDeny
        );
        assert_eq!(decide(std::slice::from_ref(&tight), &ours), Verdict::Allow);
        assert_eq!(decide(&[tight], &spec), Verdict::ImplicitDeny);
    }

    #[test]
    fn numbers_strings_and_missing_keys() {
        let s = st(
            json!({"Effect": "Allow", "Action": "ec2:RunInstances", "Resource": "arn:i/*",
            "Condition": {"NumericLessThanEquals": {"ec2:MetadataHttpPutResponseHopLimit": "1"},
                          "StringEquals": {"aws:RequestTag/augur:stack": "t"},
                          "StringLike": {"ec2:InstanceType": ["t3.*", "m7g.*"]}}}),
        );
        let ok = Authorization::new("ec2:RunInstances", "arn:i/*")
            .with("ec2:MetadataHttpPutResponseHopLimit", &["1"])
            .with("aws:RequestTag/augur:stack", &["t"])
            .with("ec2:InstanceType", &["m7g.large"]);
        assert_eq!(decide(std::slice::from_ref(&s), &ok), Verdict::Allow);
        let hop2 = ok
            .clone()
            .with("ec2:MetadataHttpPutResponseHopLimit", &["2"]);
        assert_eq!(
            decide(std::slice::from_ref(&s), &hop2),
            Verdict::ImplicitDeny
        );
        let mut untagged = ok.clone();
        untagged.context.remove("aws:RequestTag/augur:stack");
        assert_eq!(
            decide(std::slice::from_ref(&s), &untagged),
            Verdict::ImplicitDeny
        );
        let big = ok.with("ec2:InstanceType", &["p5.48xlarge"]);
        assert_eq!(decide(&[s], &big), Verdict::ImplicitDeny);
    }
}
