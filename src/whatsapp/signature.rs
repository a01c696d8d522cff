//! X-Hub-Signature-256: HMAC-SHA256 of the exact raw body with the app secret, as
//! `sha256=<lowercase hex>`. Checked over bytes before any parsing, in constant time.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Why a signature was refused. The messages are safe to return to the caller.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SignatureError {
    #[error("missing X-Hub-Signature-256 header")]
    Missing,
    #[error("X-Hub-Signature-256 is not of the form sha256=<hex>")]
    Malformed,
    #[error("X-Hub-Signature-256 does not match the body")]
    Mismatch,
}

/// Checks `header` (the X-Hub-Signature-256 value, if any) over `body` with `app_secret`.
pub fn verify_signature(
    app_secret: &[u8],
    body: &[u8],
    header: Option<&str>,
) -> Result<(), SignatureError> {
    let header = header.ok_or(SignatureError::Missing)?;
    let hex_sig = header
        .trim()
        .strip_prefix("sha256=")
        .ok_or(SignatureError::Malformed)?;
    let expected = hex::decode(hex_sig).map_err(|_| SignatureError::Malformed)?;
    let mut mac = HmacSha256::new_from_slice(app_secret).expect("HMAC takes keys of any length");
    mac.update(body);
    // verify_slice compares in constant time.
    mac.verify_slice(&expected)
        .map_err(|_| SignatureError::Mismatch)
}

/// The header value Meta would send for `body`: `sha256=<hex>`. Used by the simulator,
/// `wagate inject`, tests and benchmarks.
pub fn sign(app_secret: &[u8], body: &[u8]) -> String {
    let mut mac = HmacSha256::new_from_slice(app_secret).expect("HMAC takes keys of any length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_refusals() {
        let body = br#"{"object":"whatsapp_business_account","entry":[]}"#;
        let sig = sign(b"s3cret", body);
        assert!(sig.starts_with("sha256="));
        assert_eq!(verify_signature(b"s3cret", body, Some(&sig)), Ok(()));
        assert_eq!(
            verify_signature(b"other", body, Some(&sig)),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify_signature(b"s3cret", b"{}", Some(&sig)),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify_signature(b"s3cret", body, None),
            Err(SignatureError::Missing)
        );
        assert_eq!(
            verify_signature(b"s3cret", body, Some("sha1=abc")),
            Err(SignatureError::Malformed)
        );
        assert_eq!(
            verify_signature(b"s3cret", body, Some("sha256=zz")),
            Err(SignatureError::Malformed)
        );
    }

    #[test]
    fn known_vector() {
        // HMAC-SHA256("key", "The quick brown fox jumps over the lazy dog"), RFC-style vector.
        assert_eq!(
            sign(b"key", b"The quick brown fox jumps over the lazy dog"),
            "sha256=f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8"
        );
    }
}
