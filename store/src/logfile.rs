//! The log format of the embedded default: one line per output line,
//! `<RFC 3339 UTC time> <source> <text>`, source one of `out`, `err`, `augur`.

use std::time::{Duration, UNIX_EPOCH};

/// Opens a log file for appending, creating it and its directory.
pub fn open_append(path: &std::path::Path) -> std::io::Result<std::fs::File> {
    let open = || {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
    };
    // The directory is made once, by the first log of the study.
    match (open(), path.parent()) {
        (Err(e), Some(dir)) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(dir)?;
            open()
        }
        (opened, _) => opened,
    }
}

/// Who wrote a log line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    Out,
    Err,
    Augur,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Out => "out",
            Source::Err => "err",
            Source::Augur => "augur",
        }
    }
}

/// One parsed log line.
#[derive(Clone, Debug, PartialEq)]
pub struct LogLine {
    pub t_ms: i64,
    pub source: String,
    pub text: String,
}

/// Formats a line for the file (with its trailing newline).
pub fn format_line(t_ms: i64, source: Source, text: &str) -> String {
    format!("{} {} {}\n", rfc3339(t_ms), source.as_str(), text)
}

/// `2026-11-25T10:00:00.123Z`.
pub fn rfc3339(t_ms: i64) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(t_ms.max(0) as u64))
        .to_string()
}

/// Parses `2026-11-25T10:00:00.123Z`, `2026-11-25T10:00:00`, `2026-11-25T10:00` or
/// `2026-11-25` (UTC) into milliseconds since the epoch.
pub fn parse_time(s: &str) -> Option<i64> {
    let s = s.trim();
    let full = match s.len() {
        10 => format!("{s}T00:00:00Z"),
        16 => format!("{s}:00Z"),
        _ => s.to_string(),
    };
    let t = humantime::parse_rfc3339_weak(&full).ok()?;
    Some(t.duration_since(UNIX_EPOCH).ok()?.as_millis() as i64)
}

/// Parses one line of a log file.
pub fn parse_line(line: &str) -> Option<LogLine> {
    let (ts, rest) = line.split_once(' ')?;
    let (source, text) = rest.split_once(' ').unwrap_or((rest, ""));
    Some(LogLine {
        t_ms: parse_time(ts)?,
        source: source.to_string(),
        text: text.to_string(),
    })
}

/// A CloudWatch-style filter pattern over log text: every plain term or `"quoted
/// phrase"` must appear, no `-term` may appear, and if any `?term` is given at least
/// one of them must appear. Terms are case-sensitive substrings. An empty pattern
/// keeps everything.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FilterPattern {
    all: Vec<String>,
    any: Vec<String>,
    none: Vec<String>,
}

impl FilterPattern {
    pub fn parse(pattern: &str) -> Result<FilterPattern, String> {
        let mut out = FilterPattern::default();
        let mut chars = pattern.chars().peekable();
        loop {
            while chars.next_if(|c| c.is_whitespace()).is_some() {}
            let Some(&first) = chars.peek() else {
                break;
            };
            let kind = match first {
                '-' | '?' => {
                    chars.next();
                    first
                }
                _ => ' ',
            };
            let mut term = String::new();
            if chars.peek() == Some(&'"') {
                chars.next();
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c) => term.push(c),
                            None => return Err(format!("unfinished escape in filter `{pattern}`")),
                        },
                        Some(c) => term.push(c),
                        None => return Err(format!("unbalanced quote in filter `{pattern}`")),
                    }
                }
            } else {
                while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                    term.push(c);
                }
            }
            if term.is_empty() {
                return Err(format!("empty term in filter `{pattern}`"));
            }
            match kind {
                '-' => out.none.push(term),
                '?' => out.any.push(term),
                _ => out.all.push(term),
            }
        }
        Ok(out)
    }

    pub fn matches(&self, text: &str) -> bool {
        self.all.iter().all(|t| text.contains(t.as_str()))
            && !self.none.iter().any(|t| text.contains(t.as_str()))
            && (self.any.is_empty() || self.any.iter().any(|t| text.contains(t.as_str())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_patterns_like_cloudwatch() {
        let p = |s: &str| FilterPattern::parse(s).unwrap();
        assert!(p("").matches("anything"));
        assert!(p("ERROR disk").matches("ERROR: disk full"));
        assert!(!p("ERROR disk").matches("ERROR: network"));
        assert!(p("\"disk full\"").matches("ERROR: disk full"));
        assert!(!p("\"disk full\"").matches("disk is full"));
        assert!(p("ERROR -retrying").matches("ERROR: gave up"));
        assert!(!p("ERROR -retrying").matches("ERROR: retrying"));
        assert!(p("?WARN ?ERROR").matches("WARN low memory"));
        assert!(!p("?WARN ?ERROR").matches("INFO ok"));
        assert!(!p("error").matches("ERROR"), "terms are case-sensitive");
        assert!(p("-\"step=1,\" loss").matches("step=10, loss=1"));
        assert!(FilterPattern::parse("\"open").is_err());
        assert!(FilterPattern::parse("a - b").is_err());
    }

    #[test]
    fn time_round_trips() {
        for t in [0i64, 1_764_064_800_123, 951_782_400_000, 4_102_444_799_999] {
            assert_eq!(parse_time(&rfc3339(t)), Some(t), "{}", rfc3339(t));
        }
        assert_eq!(rfc3339(1_764_064_800_123), "2025-11-25T10:00:00.123Z");
        assert_eq!(parse_time("2025-11-25T10:00"), Some(1_764_064_800_000));
        assert_eq!(parse_time("nonsense"), None);
    }

    #[test]
    fn lines_round_trip() {
        let l = format_line(
            1_764_064_800_123,
            Source::Out,
            "METRICS: loss=1 two  spaces",
        );
        let p = parse_line(l.trim_end()).unwrap();
        assert_eq!(p.source, "out");
        assert_eq!(p.text, "METRICS: loss=1 two  spaces");
    }
}
