//! Durations as people write them in study files and flags: `90s`, `10m`, `1h 30m`.

use std::time::Duration;

/// Parses `10m`, `90s`, `1h30m`, `250ms`; a bare `0` means zero.
pub fn parse(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    if t == "0" {
        return Ok(Duration::ZERO);
    }
    humantime::parse_duration(t)
        .map_err(|e| format!("`{text}` is not a duration like 90s, 10m or 1h30m ({e})"))
}

/// Renders a duration compactly: `1h 2m 3s`, `250ms`.
pub fn format(d: Duration) -> String {
    let d = if d.as_secs() >= 10 {
        Duration::from_secs(d.as_secs())
    } else {
        Duration::from_millis(d.as_millis() as u64)
    };
    humantime::format_duration(d).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_common_forms() {
        assert_eq!(parse("10m").unwrap(), Duration::from_secs(600));
        assert_eq!(parse("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse("0").unwrap(), Duration::ZERO);
        assert!(parse("ten minutes").is_err());
        assert!(parse("").is_err());
    }
}
