//! Meta's wire formats, pure: the webhook signature check and the webhook envelope → events.
//! No I/O, no store; the HTTP edge calls in here with bytes it has not trusted yet.

pub mod parse;
pub mod signature;

pub use parse::{ParseError, parse_webhook};
pub use signature::{SignatureError, sign, verify_signature};
