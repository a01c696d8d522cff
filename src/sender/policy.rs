//! Send policy, pure and table-tested: what Graph's answer means (retry, slow down for one
//! recipient, or stop), the reason a user reads when a message fails, how long to wait before
//! the next attempt, and whether a contact's 24-hour customer-service window is open.

use crate::graph::GraphError;
use std::time::Duration;

/// What to do after a failed attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Try again after a backoff (5xx, network, timeouts, 429, throughput limits).
    Retry,
    /// Too many messages to this recipient (pair rate limit): wait 4^n seconds.
    SlowDown,
    /// Never retry: the reason is for the user.
    Stop,
    /// Stop, and the user's token is invalid or expired: mark it, alert.
    TokenInvalid,
}

/// Classifies an attempt's failure by Graph's error code (its `error_subcode` is deprecated)
/// and the HTTP status (shared/reference §5).
pub fn classify(e: &GraphError) -> Verdict {
    let (status, code) = match e {
        GraphError::Network(_) => return Verdict::Retry,
        GraphError::Unexpected(_) => return Verdict::Stop,
        GraphError::Api { status, error, .. } => (*status, error.as_ref().map(|e| e.code)),
    };
    match code {
        Some(190) => Verdict::TokenInvalid,
        Some(0) if status == 401 => Verdict::TokenInvalid,
        Some(131056) => Verdict::SlowDown,
        Some(1 | 2 | 4 | 80007 | 130429 | 131000 | 131016 | 131057 | 133016) => Verdict::Retry,
        Some(_) if status >= 500 => Verdict::Retry,
        Some(_) => Verdict::Stop,
        None if status >= 500 || status == 429 || status == 408 => Verdict::Retry,
        None if status == 401 => Verdict::TokenInvalid,
        None => Verdict::Stop,
    }
}

/// A sentence a user can act on, from Graph's error code (and Graph's own words).
pub fn reason(e: &GraphError) -> String {
    let GraphError::Api {
        status,
        error: Some(err),
        ..
    } = e
    else {
        return e.to_string();
    };
    let code = err.code;
    let what = match code {
        131047 => {
            "the 24-hour customer-service window is closed: only a template can reach this contact now"
        }
        131026 => {
            "the message could not be delivered (the number is not on WhatsApp, uses an old version, or has not accepted the terms)"
        }
        131030 => "this recipient is not in the test number's allowed list",
        131021 => "the recipient is the sender's own number",
        131050 => "the contact has opted out of marketing messages",
        131051 => "this message type is not supported",
        131052 | 131053 => "the media could not be downloaded or uploaded (URL, type or size)",
        131008 => "a required parameter is missing",
        131009 => "a parameter value is invalid",
        131048 => "spam rate limit reached (quality): sending is paused for this number",
        131049 | 131064 => {
            "Meta did not deliver this marketing message (per-user or ecosystem limit)"
        }
        131031 | 368 | 130497 => {
            "the business account is locked, restricted or blocked in this country"
        }
        131005 | 3 | 10 | 200..=299 => {
            "access denied: the token lacks permission for this WhatsApp Business Account"
        }
        100 => "invalid parameter (or wrong phone_number_id)",
        132000 => "the template's parameter count does not match",
        132001 => "the template does not exist in this language (or is not approved)",
        132005 => "the template's text is too long with its parameters",
        132007 => "the template breaks WhatsApp's policy",
        132012 => "a template parameter has the wrong format",
        132015 | 132016 => "the template is paused or disabled",
        190 => {
            "the access token is invalid or expired: set new credentials with `wagate creds set`"
        }
        130429 | 4 | 80007 => "rate limit reached",
        _ => "",
    };
    let graph = err.message.trim();
    if what.is_empty() {
        format!("Graph answered {status}: (#{code}) {graph}")
    } else {
        format!("{what} (#{code}: {graph})")
    }
}

/// Attempt limits of one outbox row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub max_attempts: i64,
    /// A message older than this is not sent any more (a reminder a day late is worse than none).
    pub max_age: Duration,
    pub base: Duration,
    pub cap: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_attempts: 8,
            max_age: Duration::from_secs(24 * 3600),
            base: Duration::from_secs(1),
            cap: Duration::from_secs(300),
        }
    }
}

/// The wait before attempt `attempts + 1` (attempts ≥ 1 made so far). Retry-After wins when
/// Graph gives it; a pair rate limit waits 4^n seconds; otherwise exponential with "full
/// jitter": a random point in [½·d, d], so that many rows failing together do not return
/// together. `jitter` is in [0, 1] (random in production, fixed in tests).
pub fn next_backoff(
    l: &Limits,
    attempts: i64,
    verdict: &Verdict,
    retry_after: Option<Duration>,
    jitter: f64,
) -> Duration {
    if let Some(r) = retry_after {
        return r.min(l.cap);
    }
    let n = attempts.clamp(1, 16) as u32;
    let d = match verdict {
        Verdict::SlowDown => Duration::from_secs(4u64.saturating_pow(n)),
        _ => l.base.saturating_mul(1 << (n - 1)),
    }
    .min(l.cap);
    d.mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0))
}

pub use crate::domain::window::{WINDOW_SECS, needs_window, within_customer_window};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::GraphErrorBody;

    fn api(status: u16, code: Option<i64>) -> GraphError {
        GraphError::Api {
            status,
            error: code.map(|c| {
                Box::new(GraphErrorBody {
                    code: c,
                    message: format!("message {c}"),
                    ..Default::default()
                })
            }),
            retry_after: None,
        }
    }

    #[test]
    fn classification_table() {
        use Verdict::*;
        let table: &[(u16, Option<i64>, Verdict)] = &[
            (500, None, Retry),
            (502, Some(1), Retry),
            (503, Some(2), Retry),
            (500, Some(131000), Retry),
            (429, None, Retry),
            (429, Some(130429), Retry),
            (400, Some(130429), Retry),
            (400, Some(4), Retry),
            (400, Some(80007), Retry),
            (503, Some(131016), Retry),
            (400, Some(131057), Retry),
            (400, Some(131056), SlowDown),
            (400, Some(131047), Stop),
            (400, Some(131026), Stop),
            (400, Some(100), Stop),
            (400, Some(131008), Stop),
            (400, Some(131009), Stop),
            (400, Some(132001), Stop),
            (403, Some(200), Stop),
            (403, Some(10), Stop),
            (400, Some(131030), Stop),
            (401, Some(190), TokenInvalid),
            (400, Some(190), TokenInvalid),
            (401, Some(0), TokenInvalid),
            (401, None, TokenInvalid),
            (404, None, Stop),
        ];
        for (status, code, want) in table {
            assert_eq!(&classify(&api(*status, *code)), want, "{status} {code:?}");
        }
        assert_eq!(classify(&GraphError::Network("timed out".into())), Retry);
        assert_eq!(classify(&GraphError::Unexpected("no id".into())), Stop);
    }

    #[test]
    fn reasons_are_readable() {
        let r = reason(&api(400, Some(131047)));
        assert!(
            r.starts_with("the 24-hour customer-service window is closed"),
            "{r}"
        );
        assert!(r.contains("#131047"));
        assert_eq!(
            reason(&api(400, Some(999999))),
            "Graph answered 400: (#999999) message 999999"
        );
        assert_eq!(
            reason(&GraphError::Network("connection failed".into())),
            "no answer from Graph: connection failed"
        );
    }

    #[test]
    fn backoff() {
        let l = Limits::default();
        let d = |a, v: Verdict, ra, j| next_backoff(&l, a, &v, ra, j);
        assert_eq!(d(1, Verdict::Retry, None, 1.0), Duration::from_secs(1));
        assert_eq!(d(2, Verdict::Retry, None, 1.0), Duration::from_secs(2));
        assert_eq!(d(4, Verdict::Retry, None, 1.0), Duration::from_secs(8));
        assert_eq!(
            d(4, Verdict::Retry, None, 0.0),
            Duration::from_secs(4),
            "jitter halves at most"
        );
        assert_eq!(
            d(12, Verdict::Retry, None, 1.0),
            Duration::from_secs(300),
            "capped"
        );
        assert_eq!(d(1, Verdict::SlowDown, None, 1.0), Duration::from_secs(4));
        assert_eq!(d(3, Verdict::SlowDown, None, 1.0), Duration::from_secs(64));
        assert_eq!(
            d(3, Verdict::Retry, Some(Duration::from_secs(17)), 0.0),
            Duration::from_secs(17)
        );
        assert_eq!(
            d(3, Verdict::Retry, Some(Duration::from_secs(9999)), 0.0),
            Duration::from_secs(300)
        );
    }
}
