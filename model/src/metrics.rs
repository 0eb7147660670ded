//! The script contract's output lines: `METRICS: name=value,...` and `AUGUR: keepalive=10m`.

use std::collections::BTreeMap;
use std::time::Duration;

/// What one output line means to augur.
#[derive(Debug, PartialEq)]
pub enum Line {
    /// Metric values, to merge over the trial's current metrics.
    Metrics(BTreeMap<String, f64>),
    /// A metrics line that could not be parsed: a warning, never a crash.
    BadMetrics(String),
    /// `keepalive=` directive: a watchdog period (zero disarms it).
    Keepalive(Duration),
    /// An `AUGUR:` directive augur does not understand.
    BadDirective(String),
    /// Anything else.
    Plain,
}

/// Classifies one output line (without its line terminator).
pub fn parse_line(line: &str) -> Line {
    if let Some(rest) = line.strip_prefix("METRICS:") {
        return match parse_metrics(rest) {
            Ok(m) => Line::Metrics(m),
            Err(e) => Line::BadMetrics(e),
        };
    }
    let directive = line
        .strip_prefix("AUGUR:")
        .or_else(|| line.strip_prefix("DIVINER:"));
    if let Some(rest) = directive {
        let rest = rest.trim();
        if let Some(v) = rest.strip_prefix("keepalive=") {
            return match crate::duration::parse(v) {
                Ok(d) => Line::Keepalive(d),
                Err(e) => Line::BadDirective(format!("keepalive: {e}")),
            };
        }
        return Line::BadDirective(format!("unknown directive `{rest}`"));
    }
    Line::Plain
}

/// Parses `name=value,name=value` (spaces around names and values are trimmed).
pub fn parse_metrics(text: &str) -> Result<BTreeMap<String, f64>, String> {
    let mut out = BTreeMap::new();
    let text = text.trim();
    if text.is_empty() {
        return Err("metrics line has no `name=value` pairs".into());
    }
    for pair in text.split(',') {
        let pair = pair.trim();
        if pair.is_empty() {
            continue;
        }
        let (name, value) = pair
            .split_once('=')
            .ok_or_else(|| format!("metrics pair `{pair}` has no `=`"))?;
        let (name, value) = (name.trim(), value.trim());
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-' | '/' | ':'))
        {
            return Err(format!("metric name `{name}` is not a name"));
        }
        let v: f64 = value
            .parse()
            .map_err(|_| format!("metric `{name}` has value `{value}`, not a number"))?;
        if !v.is_finite() {
            return Err(format!("metric `{name}` is not finite ({value})"));
        }
        out.insert(name.to_string(), v);
    }
    if out.is_empty() {
        return Err("metrics line has no `name=value` pairs".into());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(pairs: &[(&str, f64)]) -> BTreeMap<String, f64> {
        pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    }

    #[test]
    fn parses_diviner_format_and_trims() {
        assert_eq!(
            parse_line("METRICS: loss=0.5,acc=0.9"),
            Line::Metrics(m(&[("loss", 0.5), ("acc", 0.9)]))
        );
        assert_eq!(
            parse_line("METRICS:  step = 3 , loss= 1e-3 "),
            Line::Metrics(m(&[("step", 3.0), ("loss", 0.001)]))
        );
    }

    #[test]
    fn malformed_is_a_warning_not_a_crash() {
        assert!(matches!(parse_line("METRICS: loss"), Line::BadMetrics(_)));
        assert!(matches!(
            parse_line("METRICS: loss=abc"),
            Line::BadMetrics(_)
        ));
        assert!(matches!(
            parse_line("METRICS: loss=inf"),
            Line::BadMetrics(_)
        ));
        assert!(matches!(parse_line("METRICS:"), Line::BadMetrics(_)));
        assert!(matches!(parse_line("METRICS: a b=1"), Line::BadMetrics(_)));
    }

    #[test]
    fn only_prefix_lines_count() {
        assert_eq!(parse_line("+ echo 'METRICS: loss=1'"), Line::Plain);
        assert_eq!(parse_line("hello"), Line::Plain);
    }

    #[test]
    fn keepalive_directives() {
        assert_eq!(
            parse_line("AUGUR: keepalive=10m"),
            Line::Keepalive(Duration::from_secs(600))
        );
        assert_eq!(
            parse_line("DIVINER: keepalive=30s"),
            Line::Keepalive(Duration::from_secs(30))
        );
        assert_eq!(
            parse_line("AUGUR: keepalive=0"),
            Line::Keepalive(Duration::ZERO)
        );
        assert!(matches!(
            parse_line("AUGUR: keepalive=soon"),
            Line::BadDirective(_)
        ));
        assert!(matches!(
            parse_line("AUGUR: frobnicate"),
            Line::BadDirective(_)
        ));
    }
}
