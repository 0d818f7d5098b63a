//! RFC 3339 text for times: what every time on the wire looks like, and how people see them.
//!
//! Times are [`OffsetDateTime`] everywhere in the code (compared as times, never as strings);
//! serde writes them as RFC 3339 through `time::serde::rfc3339`.

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// Formats a time as RFC 3339 (`2026-11-23T12:00:00.123456Z`).
pub fn format(t: OffsetDateTime) -> String {
    t.format(&Rfc3339)
        .expect("UTC times always format as RFC 3339")
}

/// The current UTC time as RFC 3339, for text that is not a typed field (markers, reports).
pub fn now_rfc3339() -> String {
    format(OffsetDateTime::now_utc())
}

#[cfg(test)]
mod tests {
    #[test]
    fn formats_as_rfc3339_in_utc() {
        let now = super::now_rfc3339();
        assert!(now.ends_with('Z'));
        assert!(
            time::OffsetDateTime::parse(&now, &time::format_description::well_known::Rfc3339)
                .is_ok()
        );
    }
}
