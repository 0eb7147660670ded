//! Parameter values.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// One parameter value. Integers stay integers all the way to the script and to JSON.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Value {
    Int(i64),
    Float(f64),
    Str(String),
}

/// A trial's parameter values by name (sorted, so every rendering is canonical).
pub type Params = BTreeMap<String, Value>;

impl Value {
    /// The numeric value, if this is a number.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Int(i) => Some(*i as f64),
            Value::Float(f) => Some(*f),
            Value::Str(_) => None,
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Int(i) => write!(f, "{i}"),
            Value::Float(x) => write!(f, "{x}"),
            Value::Str(s) => f.write_str(s),
        }
    }
}

/// `name=value,name=value` in name order: how a point is shown to people.
pub fn params_display(params: &Params) -> String {
    params
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// A canonical key for a point: equal params give equal keys.
pub fn params_key(params: &Params) -> String {
    serde_json::to_string(params).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_keeps_integers_integers() {
        let mut p = Params::new();
        p.insert("n".into(), Value::Int(3));
        p.insert("x".into(), Value::Float(0.5));
        p.insert("act".into(), Value::Str("relu".into()));
        let s = serde_json::to_string(&p).unwrap();
        assert_eq!(s, r#"{"act":"relu","n":3,"x":0.5}"#);
        let back: Params = serde_json::from_str(&s).unwrap();
        assert_eq!(back, p);
    }
}
