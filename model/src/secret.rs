//! Secrets by reference (`run.secrets`): a study names where a value lives, never the
//! value. On AWS the agent reads it on the machine with the instance role; on the
//! local backend it comes from the environment of the same name. Values never enter
//! a record, a log, a page or an export.

use std::fmt;

/// Where a secret's value lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SecretRef {
    /// An SSM Parameter Store parameter (`ssm:/team/wandb`), read with decryption.
    Ssm(String),
    /// A Secrets Manager secret, by its ARN (its `SecretString`).
    SecretsManager(String),
}

impl SecretRef {
    /// Parses `ssm:NAME` or `arn:PARTITION:secretsmanager:REGION:ACCOUNT:secret:NAME`.
    pub fn parse(s: &str) -> Result<SecretRef, String> {
        if let Some(name) = s.strip_prefix("ssm:") {
            let ok = !name.is_empty()
                && name.len() <= 2048
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_.-/".contains(c))
                && !name.contains("//");
            return if ok {
                Ok(SecretRef::Ssm(name.to_string()))
            } else {
                Err(format!(
                    "`{s}`: an SSM parameter name is letters, digits and _ . - / (as in ssm:/team/wandb)"
                ))
            };
        }
        let parts: Vec<&str> = s.splitn(7, ':').collect();
        let arn = parts.len() == 7
            && parts[0] == "arn"
            && parts[1].starts_with("aws")
            && parts[2] == "secretsmanager"
            && !parts[3].is_empty()
            && parts[3]
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && parts[4].len() == 12
            && parts[4].chars().all(|c| c.is_ascii_digit())
            && parts[5] == "secret"
            && !parts[6].is_empty()
            && parts[6].len() <= 512
            && parts[6]
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "/_+=.@-".contains(c));
        if arn {
            return Ok(SecretRef::SecretsManager(s.to_string()));
        }
        Err(format!(
            "`{s}`: expected ssm:NAME (SSM Parameter Store) or a Secrets Manager ARN (arn:aws:secretsmanager:REGION:ACCOUNT:secret:NAME)"
        ))
    }
}

impl SecretRef {
    /// Whether the stack's instance role may read it: an SSM parameter under
    /// `/PREFIX`, a secret whose name starts with `PREFIX` (the stack's
    /// `SecretsPrefix`, as IAM scopes the role).
    pub fn within(&self, prefix: &str) -> bool {
        match self {
            SecretRef::Ssm(name) => name.trim_start_matches('/').starts_with(prefix),
            SecretRef::SecretsManager(arn) => arn
                .split_once(":secret:")
                .is_some_and(|(_, name)| name.starts_with(prefix)),
        }
    }
}

impl fmt::Display for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretRef::Ssm(name) => write!(f, "ssm:{name}"),
            SecretRef::SecretsManager(arn) => f.write_str(arn),
        }
    }
}

/// The shortest text masked: shorter ones would garble ordinary text.
pub const MASK_MIN_CHARS: usize = 4;

/// What to mask for secret `values`, the longest first: each value whole; each
/// line of a value of several lines (a PEM key printed line by line), trimmed;
/// each string in a value that is a JSON object or array (`{"password": "…"}`
/// whose password is printed alone), and each of its lines. Pieces shorter than
/// [`MASK_MIN_CHARS`] are left.
pub fn masks(values: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let add = |piece: &str, out: &mut Vec<String>| {
        let lines = piece.lines().map(str::trim);
        for p in std::iter::once(piece).chain(lines) {
            if p.chars().count() >= MASK_MIN_CHARS && !out.iter().any(|o| o == p) {
                out.push(p.to_string());
            }
        }
    };
    for v in values {
        add(v, &mut out);
        if let Ok(json) = serde_json::from_str::<serde_json::Value>(v) {
            let mut leaves = Vec::new();
            strings(&json, &mut leaves);
            for leaf in leaves {
                add(leaf, &mut out);
            }
        }
    }
    out.sort_by_key(|p| std::cmp::Reverse(p.len()));
    out
}

/// The strings of a JSON value, at any depth.
fn strings<'a>(v: &'a serde_json::Value, out: &mut Vec<&'a str>) {
    match v {
        serde_json::Value::String(s) => out.push(s),
        serde_json::Value::Array(a) => a.iter().for_each(|x| strings(x, out)),
        serde_json::Value::Object(o) => o.values().for_each(|x| strings(x, out)),
        _ => {}
    }
}

/// `line` with every occurrence of each value replaced by `***` (values shorter than
/// [`MASK_MIN_CHARS`] are left: masking them would garble ordinary text).
pub fn mask(line: &str, values: &[String]) -> String {
    let mut out = line.to_string();
    for v in values
        .iter()
        .filter(|v| v.chars().count() >= MASK_MIN_CHARS)
    {
        if out.contains(v.as_str()) {
            out = out.replace(v.as_str(), "***");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_parse_or_say_what_is_expected() {
        assert_eq!(
            SecretRef::parse("ssm:/team/wandb"),
            Ok(SecretRef::Ssm("/team/wandb".into()))
        );
        let arn = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:team/hf-AbCdEf";
        assert_eq!(
            SecretRef::parse(arn),
            Ok(SecretRef::SecretsManager(arn.into()))
        );
        assert_eq!(SecretRef::parse(arn).map(|r| r.to_string()), Ok(arn.into()));
        for bad in [
            "",
            "hunter2",
            "ssm:",
            "ssm:/a b",
            "ssm:/a;reboot",
            "ssm:/a//b",
            "arn:aws:secretsmanager:eu-west-1:1234:secret:x",
            "arn:aws:ssm:eu-west-1:123456789012:parameter/x",
            "arn:aws:secretsmanager:eu-west-1:123456789012:secret:",
            "arn:aws:secretsmanager:eu-west-1:123456789012:secret:a'b",
        ] {
            let e = SecretRef::parse(bad).expect_err(bad);
            assert!(e.contains("expected") || e.contains("SSM"), "{bad}: {e}");
        }
    }

    #[test]
    fn a_reference_is_within_a_prefix_as_iam_scopes_it() {
        let ssm = |n: &str| SecretRef::Ssm(n.into());
        assert!(ssm("/augur/wandb").within("augur/"));
        assert!(ssm("augur/wandb").within("augur/"));
        assert!(!ssm("/team/wandb").within("augur/"));
        assert!(!ssm("/augurx/wandb").within("augur/"));
        let sm = |n: &str| {
            SecretRef::SecretsManager(format!(
                "arn:aws:secretsmanager:us-east-1:123456789012:secret:{n}"
            ))
        };
        assert!(sm("augur/hf-AbCdEf").within("augur/"));
        assert!(!sm("other/hf-AbCdEf").within("augur/"));
    }

    #[test]
    fn values_are_masked_in_text() {
        let values = vec!["s3cr3t-value".to_string(), "ab".to_string()];
        assert_eq!(
            mask("key=s3cr3t-value and s3cr3t-value; ab", &values),
            "key=*** and ***; ab"
        );
        assert_eq!(mask("nothing here", &values), "nothing here");
    }

    #[test]
    fn lines_of_a_value_and_strings_of_a_json_secret_are_masked() {
        let pem = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\nAbC\n-----END PRIVATE KEY-----\n";
        let json =
            r#"{"user":"ann","password":"hunter22","nested":{"token":["tok-123456"]},"port":5432}"#;
        let m = masks(&[pem.to_string(), json.to_string()]);
        assert_eq!(mask("MIIEvQIBADANBgkqhkiG9w0BAQEFAASC", &m), "***");
        assert_eq!(mask("  -----END PRIVATE KEY-----", &m), "  ***");
        assert_eq!(mask("pw: hunter22, t: tok-123456", &m), "pw: ***, t: ***");
        assert_eq!(mask(json, &m), "***", "the whole value first");
        // Short pieces are left.
        assert_eq!(mask("AbC ann 5432", &m), "AbC ann 5432");
        assert!(m.windows(2).all(|w| w[0].len() >= w[1].len()), "{m:?}");
    }
}
