//! Timestamps as the contract writes them: UTC, microseconds, `2022-09-22 02:41:44.884828`.

use chrono::{DateTime, NaiveDate, NaiveDateTime, Timelike, Utc};

const FORMAT: &str = "%Y-%m-%d %H:%M:%S%.6f";

/// `tm_delete` of a live resource, as the contract writes it.
pub const LIVE: &str = "9999-01-01 00:00:00.000000";

/// `tm_delete` of a live resource: 9999-01-01 00:00:00.000000.
pub fn live() -> NaiveDateTime {
    NaiveDate::from_ymd_opt(9999, 1, 1)
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .expect("a valid constant date")
}

/// Now, truncated to microseconds: what the databases store, so what a write returns equals
/// what a later read returns.
pub fn now() -> NaiveDateTime {
    truncate(Utc::now().naive_utc())
}

pub fn truncate(t: NaiveDateTime) -> NaiveDateTime {
    let nanos = t.nanosecond();
    t.with_nanosecond(nanos - nanos % 1_000).unwrap_or(t)
}

pub fn format(t: NaiveDateTime) -> String {
    t.format(FORMAT).to_string()
}

/// Parses the contract's format (fewer fractional digits are accepted too).
pub fn parse(s: &str) -> Option<NaiveDateTime> {
    NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f")
        .ok()
        .map(truncate)
}

/// RFC 3339, for the CloudEvents `time` attribute.
pub fn rfc3339(t: NaiveDateTime) -> String {
    DateTime::<Utc>::from_naive_utc_and_offset(t, Utc)
        .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_with_six_fractional_digits() {
        let t = parse("2022-09-22 02:41:44.884828").unwrap();
        assert_eq!(format(t), "2022-09-22 02:41:44.884828");
        assert_eq!(format(live()), LIVE);
        assert_eq!(
            format(parse("2022-09-22 02:41:44").unwrap()),
            "2022-09-22 02:41:44.000000"
        );
    }

    #[test]
    fn now_has_no_sub_microsecond_part() {
        assert_eq!(now().nanosecond() % 1_000, 0);
    }

    #[test]
    fn rejects_other_shapes() {
        assert!(parse("2022-09-22T02:41:44Z").is_none());
        assert!(parse("yesterday").is_none());
        assert!(parse("").is_none());
    }

    #[test]
    fn rfc3339_is_utc() {
        let t = parse("2022-09-22 02:41:44.884828").unwrap();
        assert_eq!(rfc3339(t), "2022-09-22T02:41:44.884828Z");
    }
}
