//! Phone numbers as users write them, pure: the one reading of a number every place takes
//! (CLI `send --to`, script `send`/`window_open`, `contacts import`, `inject --from`, lookups,
//! `display_phone_number`). A number is kept as WhatsApp's `wa_id` keeps it: the country code
//! and the number, digits only.
//!
//! Accepted: `+33 6 12 34 56 78`, `+33612345678`, `33612345678` (a wa_id), `0033612345678`
//! (the international `00` prefix), `+33 (0)6 12 34 56 78` (the `(0)` trunk marker is
//! dropped), with spaces, `-`, `.`, `/` or `( )` between digits. Refused: a national number
//! (`06 12 34 56 78`: it starts with 0 and has no country code), letters (`ext 2`), fewer
//! than 5 or more than 15 digits.

/// The canonical digits of a phone number: `+33 (0)6 12-34-56-78` → `33612345678`.
/// The error says what is wrong and how to write it, without a prefix.
pub fn phone_digits(input: &str) -> Result<String, String> {
    let t = input.trim();
    let bad = || {
        format!(
            "`{input}` is not a phone number in international form (country code and number, e.g. +33612345678)"
        )
    };
    let (international, rest) = match t.strip_prefix('+') {
        Some(r) => (true, r),
        None => (false, t),
    };
    // `(0)` after the country code is the trunk prefix some write for national callers.
    let rest = drop_trunk_marker(rest);
    let mut digits = String::with_capacity(rest.len());
    for c in rest.chars() {
        match c {
            '0'..='9' => digits.push(c),
            ' ' | '-' | '.' | '/' | '(' | ')' => {}
            c if c.is_whitespace() => {}
            _ => return Err(bad()),
        }
    }
    let digits = match digits.strip_prefix("00") {
        Some(d) if !international => d.to_string(),
        _ => digits,
    };
    if digits.len() < 5 || digits.len() > 15 {
        return Err(bad());
    }
    if digits.starts_with('0') {
        return Err(if international || t.starts_with("00") {
            format!(
                "`{input}`: a country code never starts with 0; write the number in international form with its country code, e.g. +33 6 12 34 56 78"
            )
        } else {
            format!(
                "`{input}` is a national number (it starts with 0): write it in international form with the country code, e.g. +33 6 12 34 56 78 for the French 06 12 34 56 78"
            )
        });
    }
    Ok(digits)
}

/// `33 (0)6 12…` → `336 12…`: the first `(0)` (spaces inside allowed) after the country code
/// goes. At the very start it is no trunk marker after a country code but a national number,
/// and stays (to be refused as one).
fn drop_trunk_marker(s: &str) -> String {
    let compact: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    match compact.find("(0)") {
        Some(i) if i > 0 => format!("{}{}", &compact[..i], &compact[i + 3..]),
        _ => s.to_string(),
    }
}

/// Whether a table cell or looked-up value reads as a phone number (so that lookups match it
/// written another way): a number [`phone_digits`] accepts with at least 7 digits.
pub fn looks_like_phone(s: &str) -> bool {
    phone_digits(s).is_ok_and(|d| d.len() >= 7)
}

/// A recipient as shown to people: `+` and the digits for a phone number, a business-scoped
/// id or group as it is. `+33 6 44 55 66 77` and `33644556677` both show `+33644556677`.
pub fn shown(recipient: &str) -> String {
    let key = super::window::contact_key(recipient);
    if key.chars().all(|c| c.is_ascii_digit()) && !key.is_empty() {
        format!("+{key}")
    } else {
        key
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_international_form_is_the_same_number() {
        for f in [
            "+33 6 12 34 56 78",
            "+33612345678",
            "33612345678",
            "0033612345678",
            "00 33 6 12 34 56 78",
            "+33 (0)6 12 34 56 78",
            "+33 ( 0 ) 6 12 34 56 78",
            "+33(0)612345678",
            "0033 (0)6 12 34 56 78",
            "33 (0)6 12 34 56 78",
            "+33-6-12-34-56-78",
            "+33.6.12.34.56.78",
            "+33\u{a0}6\u{a0}12\u{a0}34\u{a0}56\u{a0}78",
            " +33 6 12 34 56 78 ",
        ] {
            assert_eq!(phone_digits(f).as_deref(), Ok("33612345678"), "{f}");
        }
        assert_eq!(phone_digits("+1 (555) 010-0123").unwrap(), "15550100123");
    }

    #[test]
    fn national_and_malformed_numbers_are_refused() {
        let e = phone_digits("06 12 34 56 78").unwrap_err();
        assert!(e.contains("national number"), "{e}");
        assert!(e.contains("+33 6 12 34 56 78"), "{e}");
        assert!(phone_digits("0612345678").unwrap_err().contains("national"));
        assert!(phone_digits("(0)6 12 34 56 78").is_err());
        assert!(
            phone_digits("+06 12 34 56 78")
                .unwrap_err()
                .contains("country code")
        );
        assert!(phone_digits("+0033612345678").is_err());
        assert!(phone_digits("000033612345678").is_err());
        assert!(phone_digits("++33612345678").is_err());
        assert!(phone_digits("abc").is_err());
        assert!(phone_digits("+33 6 12 34 56 78 ext 2").is_err());
        assert!(phone_digits("1234").is_err());
        assert!(phone_digits("1234567890123456").is_err());
    }

    #[test]
    fn phone_likeness_and_display() {
        assert!(looks_like_phone("+33 6 12 34 56 78"));
        assert!(
            !looks_like_phone("12345"),
            "too short to be a phone in a table"
        );
        assert!(!looks_like_phone("paris"));
        assert!(!looks_like_phone("06 12 34 56 78"), "national: no guess");
        assert_eq!(shown("+33 6 44 55 66 77"), "+33644556677");
        assert_eq!(shown("33644556677"), "+33644556677");
        assert_eq!(shown("US.1349"), "US.1349");
    }
}
