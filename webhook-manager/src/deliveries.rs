//! Deliveries: what an attempt's answer means, and when the next attempt comes.

use std::time::Duration;

use chrono::NaiveDateTime;
use common::time;
use proto::webhook::v1 as pb;

use crate::db::models::DeliveryRow;
use crate::error::WebhookError;

/// An answer later than this is a failed attempt (the contract's 10 seconds).
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// The shortest wait a `Retry-After` may ask for.
pub const MIN_RETRY_AFTER: Duration = Duration::from_secs(1);
/// The longest wait between two attempts.
pub const MAX_INTERVAL: Duration = Duration::from_secs(3600);

/// How attempts are retried.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// The wait before the first retry; doubled for each further one, up to `MAX_INTERVAL`.
    pub first_retry: Duration,
    /// How long after its creation a delivery is retried; then it is `failed`.
    pub retry_for: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            first_retry: Duration::from_secs(5),
            retry_for: Duration::from_secs(24 * 3600),
        }
    }
}

/// What an attempt came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// An HTTP answer within the timeout, with its `Retry-After` (when it had a usable one).
    Status {
        code: u16,
        retry_after: Option<Duration>,
    },
    /// No answer: a network error or the timeout.
    NoAnswer(String),
    /// Refused before sending (the SSRF guard): never retried.
    Refused(String),
}

/// The delivery's state after an attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// `succeeded`, `retrying` or `failed`.
    pub status: &'static str,
    pub status_code: i32,
    pub error: String,
    pub next_attempt: NaiveDateTime,
}

impl RetryPolicy {
    /// The wait after attempt number `attempts` (1 for the first) failed: the first retry
    /// after `first_retry`, then twice as long each time, up to an hour, plus up to a tenth
    /// more at random so that retries of many deliveries spread out.
    pub fn backoff(&self, attempts: i32) -> Duration {
        let doublings = u32::try_from(attempts.saturating_sub(1))
            .unwrap_or(0)
            .min(20);
        let base = self
            .first_retry
            .saturating_mul(1 << doublings)
            .min(MAX_INTERVAL);
        let jitter = base.mul_f64(f64::from(uuid::Uuid::new_v4().as_bytes()[0]) / 2550.0);
        (base + jitter).min(MAX_INTERVAL)
    }

    /// The state after attempt number `attempts` of a delivery retried since `created` (its
    /// creation, or a retry by hand) was answered with `answer` at `now`.
    pub fn outcome(
        &self,
        answer: &Answer,
        attempts: i32,
        created: NaiveDateTime,
        now: NaiveDateTime,
    ) -> Outcome {
        let (code, error, retry_after, retryable) = match answer {
            Answer::Status { code, retry_after } => {
                let retryable = matches!(code, 408 | 429 | 500..=599);
                let error = if (200..300).contains(code) {
                    String::new()
                } else {
                    format!("answered {code}")
                };
                (i32::from(*code), error, *retry_after, retryable)
            }
            Answer::NoAnswer(why) => (0, why.clone(), None, true),
            Answer::Refused(why) => (0, why.clone(), None, false),
        };
        if (200..300).contains(&code) {
            return Outcome {
                status: "succeeded",
                status_code: code,
                error,
                next_attempt: now,
            };
        }
        let given_up = now - created
            >= chrono::Duration::from_std(self.retry_for).unwrap_or(chrono::TimeDelta::MAX);
        if !retryable || given_up {
            let error = if retryable {
                format!("{error}; retried for {:?}, given up", self.retry_for)
            } else {
                error
            };
            return Outcome {
                status: "failed",
                status_code: code,
                error,
                next_attempt: now,
            };
        }
        // A `Retry-After` of 0 (or a date gone by) waits a second: never a tight loop.
        let wait = retry_after
            .map(|w| w.clamp(MIN_RETRY_AFTER, MAX_INTERVAL))
            .unwrap_or_else(|| self.backoff(attempts));
        Outcome {
            status: "retrying",
            status_code: code,
            error,
            next_attempt: now + chrono::Duration::from_std(wait).expect("at most an hour"),
        }
    }
}

/// A `Retry-After` value: seconds, or an HTTP date (the wait until then).
pub fn retry_after(value: &str, now: chrono::DateTime<chrono::Utc>) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    Some(
        (at.with_timezone(&chrono::Utc) - now)
            .to_std()
            .unwrap_or(Duration::ZERO),
    )
}

/// A delivery status filter: one of the four, or empty for all.
pub fn status_filter(value: &str) -> Result<Option<String>, WebhookError> {
    match value {
        "" => Ok(None),
        "pending" | "retrying" | "succeeded" | "failed" => Ok(Some(value.to_owned())),
        other => Err(WebhookError::invalid(format!(
            "status: must be pending, retrying, succeeded or failed, not {other:?}"
        ))),
    }
}

pub fn to_proto(row: &DeliveryRow) -> pb::Delivery {
    pb::Delivery {
        id: row.id.clone(),
        webhook_id: row.webhook_id.clone(),
        event_id: row.event_id.clone(),
        event_type: row.event_type.clone(),
        status: row.status.clone(),
        attempts: u32::try_from(row.attempts).unwrap_or(0),
        last_status_code: u32::try_from(row.last_status_code).unwrap_or(0),
        last_error: row.last_error.clone(),
        tm_next_attempt: time::format(row.tm_next_attempt),
        tm_create: time::format(row.tm_create),
        tm_update: time::format(row.tm_update),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> NaiveDateTime {
        chrono::DateTime::from_timestamp(1_800_000_000 + secs, 0)
            .unwrap()
            .naive_utc()
    }

    fn status(code: u16) -> Answer {
        Answer::Status {
            code,
            retry_after: None,
        }
    }

    #[test]
    fn two_hundreds_succeed_transient_failures_retry_and_other_answers_fail_at_once() {
        let p = RetryPolicy::default();
        for code in [200, 201, 204, 299] {
            assert_eq!(
                p.outcome(&status(code), 1, at(0), at(1)).status,
                "succeeded"
            );
        }
        for code in [408, 429, 500, 502, 503, 599] {
            let o = p.outcome(&status(code), 1, at(0), at(1));
            assert_eq!(o.status, "retrying", "{code}");
            assert_eq!(o.error, format!("answered {code}"));
        }
        let o = p.outcome(&Answer::NoAnswer("timed out".into()), 1, at(0), at(1));
        assert_eq!((o.status, o.status_code), ("retrying", 0));
        for code in [100, 301, 302, 400, 401, 404, 410, 413] {
            assert_eq!(
                p.outcome(&status(code), 1, at(0), at(1)).status,
                "failed",
                "{code}"
            );
        }
        let o = p.outcome(&Answer::Refused("uri: private".into()), 1, at(0), at(1));
        assert_eq!(o.status, "failed");
    }

    #[test]
    fn retries_back_off_exponentially_up_to_an_hour_and_end_after_the_retry_period() {
        let p = RetryPolicy::default();
        let first = p.backoff(1);
        assert!(
            first >= Duration::from_secs(5) && first <= Duration::from_secs(10),
            "{first:?}"
        );
        let third = p.backoff(3);
        assert!(
            third >= Duration::from_secs(20) && third <= Duration::from_secs(22),
            "{third:?}"
        );
        assert_eq!(p.backoff(40), MAX_INTERVAL);
        let o = p.outcome(&status(500), 1, at(0), at(1));
        let wait = o.next_attempt - at(1);
        assert!(wait >= chrono::Duration::seconds(5) && wait <= chrono::Duration::seconds(6));
        // Still retried just before a day has passed, failed after.
        assert_eq!(
            p.outcome(&status(503), 30, at(0), at(86_399)).status,
            "retrying"
        );
        let o = p.outcome(&status(503), 31, at(0), at(86_400));
        assert_eq!(o.status, "failed");
        assert!(o.error.contains("given up"), "{}", o.error);
    }

    #[test]
    fn retry_after_is_honoured_in_seconds_or_as_a_date_up_to_an_hour() {
        let p = RetryPolicy::default();
        let o = p.outcome(
            &Answer::Status {
                code: 429,
                retry_after: Some(Duration::from_secs(2)),
            },
            1,
            at(0),
            at(1),
        );
        assert_eq!(o.next_attempt, at(3));
        let o = p.outcome(
            &Answer::Status {
                code: 503,
                retry_after: Some(Duration::from_secs(86_400)),
            },
            1,
            at(0),
            at(1),
        );
        assert_eq!(o.next_attempt, at(3601));
        // Zero (or a date gone by) is a second: never a tight loop.
        let o = p.outcome(
            &Answer::Status {
                code: 429,
                retry_after: Some(Duration::ZERO),
            },
            1,
            at(0),
            at(1),
        );
        assert_eq!(o.next_attempt, at(2));
        let now = at(0).and_utc();
        assert_eq!(retry_after(" 7 ", now), Some(Duration::from_secs(7)));
        let date = (now + chrono::Duration::seconds(30)).to_rfc2822();
        assert_eq!(retry_after(&date, now), Some(Duration::from_secs(30)));
        assert_eq!(retry_after("soon", now), None);
    }

    #[test]
    fn the_status_filter_names_the_field() {
        assert_eq!(status_filter("").unwrap(), None);
        assert_eq!(status_filter("failed").unwrap().as_deref(), Some("failed"));
        assert!(
            status_filter("done")
                .unwrap_err()
                .to_string()
                .starts_with("status: ")
        );
    }
}
