//! The contact book, pure: labels (what they may be), contact keys (what a contact is called in
//! the store), and the CSV files `wagate contacts USER import` reads. No I/O.

use super::outgoing::{is_bsuid, normalize_phone};

/// The longest label, in characters.
pub const LABEL_MAX: usize = 64;

/// A label as stored: trimmed, non-empty, at most [`LABEL_MAX`] characters, no control
/// characters. Labels are compared exactly (`PARIS-2026` is not `paris-2026`).
pub fn validate_label(label: &str) -> Result<String, String> {
    let t = label.trim();
    if t.is_empty() {
        return Err("a label cannot be empty".into());
    }
    if t.chars().count() > LABEL_MAX {
        return Err(format!(
            "label `{}…` is longer than {LABEL_MAX} characters",
            t.chars().take(20).collect::<String>()
        ));
    }
    if t.chars().any(char::is_control) {
        return Err(format!(
            "label {:?} holds a control character (tab, newline…)",
            t
        ));
    }
    Ok(t.to_string())
}

/// The contact key of a phone number or business-scoped user id, as webhooks write it (wa_id
/// digits, or the id as it is): `+33 6 12-34-56-78` → `33612345678`.
pub fn contact_key_of(input: &str) -> Result<String, String> {
    if is_bsuid(input) {
        return Ok(input.trim().to_string());
    }
    let phone = normalize_phone(input).map_err(|e| {
        e.trim_start_matches("send: ").replacen(
            "is not a phone number",
            "is not a phone number or wa_id",
            1,
        )
    })?;
    Ok(phone.trim_start_matches('+').to_string())
}

/// One contact of an imported file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImportRow {
    /// The contact key (digits).
    pub contact: String,
    pub name: Option<String>,
    /// The file's line, for messages.
    pub line: usize,
}

/// Reads a contacts CSV: a header naming a `phone` or `wa_id` column and optionally `name`
/// (other columns are ignored), then one contact per line. The first bad line fails the whole
/// file with `file:line: why`, so an import is all or nothing.
pub fn parse_contacts_csv(file: &str, text: &str) -> Result<Vec<ImportRow>, String> {
    let mut reader = csv::ReaderBuilder::new()
        .flexible(false)
        .trim(csv::Trim::All)
        .from_reader(text.as_bytes());
    let headers = reader
        .headers()
        .map_err(|e| format!("{file}:1: cannot read the header: {e}"))?
        .clone();
    let find = |names: &[&str]| {
        headers
            .iter()
            .position(|h| names.iter().any(|n| h.eq_ignore_ascii_case(n)))
    };
    let Some(phone_col) = find(&["phone", "wa_id"]) else {
        let seen: Vec<&str> = headers.iter().collect();
        return Err(format!(
            "{file}:1: the header needs a `phone` or `wa_id` column; it has: {}",
            seen.join(", ")
        ));
    };
    let name_col = find(&["name"]);
    let mut rows = Vec::new();
    let mut seen = std::collections::HashMap::new();
    for rec in reader.records() {
        let rec = rec.map_err(|e| {
            let line = e.position().map_or(0, |p| p.line() as usize);
            format!("{file}:{line}: {}", csv_reason(&e))
        })?;
        let line = rec
            .position()
            .map_or(0, |p| line_at(text, p.byte() as usize));
        if rec.iter().all(str::is_empty) {
            continue;
        }
        let raw = rec.get(phone_col).unwrap_or("");
        if raw.is_empty() {
            return Err(format!("{file}:{line}: the phone is empty"));
        }
        let contact = contact_key_of(raw).map_err(|e| format!("{file}:{line}: {e}"))?;
        if let Some(first) = seen.insert(contact.clone(), line) {
            return Err(format!(
                "{file}:{line}: {contact} is listed twice (first on line {first})"
            ));
        }
        let name = name_col
            .and_then(|c| rec.get(c))
            .filter(|n| !n.is_empty())
            .map(str::to_string);
        if let Some(n) = &name
            && n.chars().any(char::is_control)
        {
            return Err(format!("{file}:{line}: the name holds a control character"));
        }
        rows.push(ImportRow {
            contact,
            name,
            line,
        });
    }
    Ok(rows)
}

/// The 1-based line of the record starting at byte `at` (csv starts a record's position
/// before the blank lines it skips).
pub(crate) fn line_at(text: &str, at: usize) -> usize {
    let at = at.min(text.len());
    let before = text.as_bytes()[..at]
        .iter()
        .filter(|b| **b == b'\n')
        .count();
    let blank = text[at..]
        .bytes()
        .take_while(|b| *b == b'\n' || *b == b'\r')
        .filter(|b| *b == b'\n')
        .count();
    before + blank + 1
}

fn csv_reason(e: &csv::Error) -> String {
    match e.kind() {
        csv::ErrorKind::UnequalLengths {
            expected_len, len, ..
        } => format!("{len} field(s) where the header has {expected_len}"),
        csv::ErrorKind::Utf8 { .. } => "not UTF-8 text".into(),
        _ => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels() {
        assert_eq!(validate_label("  PARIS-2026 ").unwrap(), "PARIS-2026");
        assert!(validate_label(" ").unwrap_err().contains("empty"));
        assert!(
            validate_label(&"x".repeat(65))
                .unwrap_err()
                .contains("longer than 64")
        );
        assert_eq!(validate_label(&"é".repeat(64)).unwrap().chars().count(), 64);
        assert!(validate_label("a\tb").unwrap_err().contains("control"));
        assert!(validate_label("a\u{7}").unwrap_err().contains("control"));
    }

    #[test]
    fn contact_keys() {
        assert_eq!(contact_key_of("+33 6 12-34-56-78").unwrap(), "33612345678");
        assert_eq!(contact_key_of("33612345678").unwrap(), "33612345678");
        assert_eq!(contact_key_of("US.1349").unwrap(), "US.1349");
        assert_eq!(contact_key_of("0033612345678").unwrap(), "33612345678");
        assert_eq!(
            contact_key_of("+33 (0)6 12 34 56 78").unwrap(),
            "33612345678"
        );
        let e = contact_key_of("06 12 34 56 78").unwrap_err();
        assert!(e.contains("national number"), "{e}");
        let e = contact_key_of("call me").unwrap_err();
        assert!(
            e.contains("`call me` is not a phone number or wa_id"),
            "{e}"
        );
    }

    #[test]
    fn csv_files() {
        let rows = parse_contacts_csv(
            "p.csv",
            "Name,Phone,room\nAnn,+33 611 111 111,12\n\nBob,33622222222,\n,15550001,\n",
        )
        .unwrap();
        assert_eq!(
            rows,
            vec![
                ImportRow {
                    contact: "33611111111".into(),
                    name: Some("Ann".into()),
                    line: 2
                },
                ImportRow {
                    contact: "33622222222".into(),
                    name: Some("Bob".into()),
                    line: 4
                },
                ImportRow {
                    contact: "15550001".into(),
                    name: None,
                    line: 5
                },
            ]
        );
        let wa = parse_contacts_csv("w.csv", "wa_id\n33611111111\n").unwrap();
        assert_eq!(wa[0].contact, "33611111111");
        let e = parse_contacts_csv("p.csv", "name,phone\nAnn,33611\nBob,12ab\n").unwrap_err();
        assert!(
            e.starts_with("p.csv:3: `12ab` is not a phone number"),
            "{e}"
        );
        let e = parse_contacts_csv(
            "p.csv",
            "name,phone\nAnn,0033611111111\nBob,06 22 22 22 22\n",
        )
        .unwrap_err();
        assert!(
            e.starts_with("p.csv:3: `06 22 22 22 22` is a national number"),
            "{e}"
        );
        let e = parse_contacts_csv("p.csv", "name,tel\nAnn,33611\n").unwrap_err();
        assert_eq!(
            e,
            "p.csv:1: the header needs a `phone` or `wa_id` column; it has: name, tel"
        );
        let e =
            parse_contacts_csv("p.csv", "name,phone\nAnn,33611111\nAnn,33611111\n").unwrap_err();
        assert!(
            e.contains("p.csv:3: 33611111 is listed twice (first on line 2)"),
            "{e}"
        );
        let e = parse_contacts_csv("p.csv", "name,phone\nAnn,33611111,x\n").unwrap_err();
        assert!(
            e.starts_with("p.csv:2: 3 field(s) where the header has 2"),
            "{e}"
        );
        let e = parse_contacts_csv("p.csv", "name,phone\nAnn,\n").unwrap_err();
        assert_eq!(e, "p.csv:2: the phone is empty");
    }
}
