//! WhatsApp's 24-hour customer-service window, pure: free-form messages reach a contact only
//! within 24 hours of their last inbound message (its WhatsApp timestamp); templates always.

/// Seconds in the window.
pub const WINDOW_SECS: i64 = 24 * 3600;

/// Whether free-form messages may reach a contact whose last inbound message had WhatsApp
/// timestamp `last_inbound` (unix seconds), at `now`. A contact who never wrote is outside.
pub fn within_customer_window(last_inbound: Option<i64>, now: i64) -> bool {
    last_inbound.is_some_and(|t| now - t < WINDOW_SECS)
}

/// Whether a message of `msg_type` needs the window: everything but templates.
pub fn needs_window(msg_type: &str) -> bool {
    !matches!(msg_type, "template" | "read")
}

/// The key of a recipient in the contact book: a business-scoped id as it is, a phone number
/// as its digits (as webhooks give `wa_id`), read by [`super::phone::phone_digits`]
/// (`0033 6…` and `+33 (0)6…` are `336…`). Something that is no phone number (a row stored
/// before numbers were checked) keeps its digits, so it still finds its own rows.
pub fn contact_key(recipient: &str) -> String {
    // A group (`group:<id>`) keeps its key: its window is the group's (domain::groups).
    if super::outgoing::is_bsuid(recipient) || super::groups::group_of(recipient).is_some() {
        recipient.trim().to_string()
    } else {
        super::phone::phone_digits(recipient)
            .unwrap_or_else(|_| recipient.chars().filter(char::is_ascii_digit).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn customer_window() {
        let now = 1_800_000_000;
        assert!(!within_customer_window(None, now), "never wrote: outside");
        assert!(within_customer_window(Some(now - 60), now));
        assert!(within_customer_window(Some(now - WINDOW_SECS + 1), now));
        assert!(!within_customer_window(Some(now - WINDOW_SECS), now));
        assert!(needs_window("text") && needs_window("interactive") && !needs_window("template"));
        assert_eq!(contact_key("+33 6 12-34"), "3361234");
        assert_eq!(contact_key("US.1349"), "US.1349");
        assert_eq!(contact_key("0033 6 12 34 56 78"), "33612345678");
        assert_eq!(contact_key("+33 (0)6 12 34 56 78"), "33612345678");
    }
}
