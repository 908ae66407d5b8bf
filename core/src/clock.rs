//! The host's clock and its one time format: milliseconds since the Unix epoch inside, RFC 3339
//! UTC (`2025-04-05T10:30:00Z`) in everything it writes.

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Milliseconds since the Unix epoch (0 for a clock before 1970).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// RFC 3339 UTC time of `ms` since the epoch, e.g. `2025-04-05T10:30:00Z` (fractions only when
/// there are any: `2025-04-05T10:30:00.25Z`).
pub fn rfc3339(ms: i64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| ms.to_string())
}

/// Milliseconds since the epoch of an RFC 3339 time (any offset).
pub fn parse_rfc3339(s: &str) -> Result<i64, time::error::Parse> {
    let t = OffsetDateTime::parse(s, &Rfc3339)?;
    Ok((t.unix_timestamp_nanos() / 1_000_000) as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_rfc3339_utc_and_read_back() {
        assert_eq!(rfc3339(1_743_849_000_000), "2025-04-05T10:30:00Z");
        assert_eq!(rfc3339(1_743_849_000_250), "2025-04-05T10:30:00.25Z");
        assert_eq!(parse_rfc3339("2025-04-05T12:30:00.25+02:00").unwrap(), 1_743_849_000_250);
        assert!(parse_rfc3339("yesterday").is_err());
        assert!(now_ms() > 1_700_000_000_000);
    }
}
