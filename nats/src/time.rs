//! RFC 3339 timestamps: the one format every time on the wire and in KV uses.

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// The current UTC time as RFC 3339 with sub-second precision (`2026-11-23T12:00:00.123456Z`).
pub fn now_rfc3339() -> String {
    format(OffsetDateTime::now_utc())
}

/// Formats a time as RFC 3339.
pub fn format(t: OffsetDateTime) -> String {
    t.format(&Rfc3339)
        .expect("UTC times always format as RFC 3339")
}

/// Parses an RFC 3339 time; `None` when it is not one.
pub fn parse(s: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(s, &Rfc3339).ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn round_trips() {
        let now = super::now_rfc3339();
        assert!(now.ends_with('Z'));
        assert!(super::parse(&now).is_some());
        assert!(super::parse("yesterday").is_none());
    }
}
