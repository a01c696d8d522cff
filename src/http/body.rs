//! The body of a webhook POST, read with a deadline: a client that announces a body and then
//! stalls (or trickles it) is answered 408 and its connection closed, instead of holding the
//! connection and a task forever. Only the body read is timed: once the body is in, the
//! handler's commit is never cut short (an acked event must be a committed one). A body
//! refused (too large, cut off, too slow) is an [`HttpError`], JSON like every other error,
//! not axum's plain-text rejection.
//!
//! Not covered here: a client that never finishes its request line or headers. That is
//! `server.header_timeout_ms`, enforced where connections are served (`serve.rs`).

use super::HttpError;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use bytes::Bytes;
use std::time::Duration;

/// How long a webhook's whole body may take to arrive once its headers are in. Meta sends a
/// webhook (at most 3 MB) in one go from its data centres; this leaves ample slack for a slow
/// link while bounding what a stalled client can hold.
pub const BODY_DEADLINE: Duration = Duration::from_secs(10);

/// A webhook's raw body (the bytes the signature covers), read within [`BODY_DEADLINE`] and
/// within the router's body limit.
pub struct WebhookBody(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for WebhookBody {
    type Rejection = HttpError;

    async fn from_request(req: Request, state: &S) -> Result<Self, HttpError> {
        match tokio::time::timeout(BODY_DEADLINE, Bytes::from_request(req, state)).await {
            Ok(Ok(body)) => Ok(WebhookBody(body)),
            Ok(Err(rejection)) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                tracing::warn!("webhook body larger than server.max_body_bytes; answering 413");
                Err(HttpError::TooLarge)
            }
            Ok(Err(rejection)) => {
                tracing::warn!(reason = %rejection.body_text(), "webhook body could not be read");
                Err(HttpError::BadRequest(rejection.body_text()))
            }
            Err(_) => {
                tracing::warn!(
                    deadline_s = BODY_DEADLINE.as_secs(),
                    "webhook body did not arrive in time; answering 408"
                );
                Err(HttpError::Timeout)
            }
        }
    }
}
