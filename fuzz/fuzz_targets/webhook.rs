//! Fuzzes the webhook path exactly as the HTTP edge runs it over untrusted bytes: the
//! X-Hub-Signature-256 check, then the envelope parser. Neither may panic, whatever the input.
//!
//! Input layout: the first 32 bytes are taken as the signature (hex-encoded into
//! `sha256=<hex>`), the rest is the body. A forged signature almost never matches, so the
//! body is parsed whatever the check said, to reach the parser too.

#![no_main]

use libfuzzer_sys::fuzz_target;
use wagate::whatsapp::{parse_webhook, sign, verify_signature};

/// A fixed app secret, as one user's credentials would hold.
const SECRET: &[u8] = b"fuzz-app-secret";

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(2 * bytes.len());
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 0x0f)] as char);
    }
    s
}

fuzz_target!(|data: &[u8]| {
    let (sig, body) = data.split_at(data.len().min(32));
    let header = format!("sha256={}", hex(sig));
    let checked = verify_signature(SECRET, body, Some(&header));
    // Only the right MAC verifies; it is what `sign` gives, and it always verifies.
    let good = sign(SECRET, body);
    assert_eq!(checked.is_ok(), header == good);
    assert_eq!(verify_signature(SECRET, body, Some(&good)), Ok(()));
    // The signature bytes as a raw header value too (any text must be refused cleanly).
    if let Ok(text) = std::str::from_utf8(sig) {
        let _ = verify_signature(SECRET, body, Some(text));
    }
    if let Ok(events) = parse_webhook(body) {
        for e in &events {
            let map = e.map.as_object().expect("an event map is an object");
            assert!(map.contains_key("kind") && map.contains_key("raw"));
        }
    }
});
