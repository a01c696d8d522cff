//! Text from contacts or Graph (message texts, profile names, group subjects, error reasons)
//! shown to the operator: control characters escaped (`\n`, `\u{1b}`), so that such a text
//! stays one line of a log or of a command's output and cannot drive the terminal (an ESC
//! sequence could retitle it, clear it or forge other lines).

use std::borrow::Cow;

/// `s` with every control character escaped, line breaks included: one line.
pub fn one_line(s: &str) -> Cow<'_, str> {
    escape(s, false)
}

/// `s` with every control character but `\n` and `\t` escaped: a block of lines (a
/// diagnostic whose caret lines up under a tab, a run's error the caller indents).
pub fn block(s: &str) -> Cow<'_, str> {
    escape(s, true)
}

fn escape(s: &str, keep_newline: bool) -> Cow<'_, str> {
    let escaped = |c: char| c.is_control() && !(keep_newline && (c == '\n' || c == '\t'));
    if !s.chars().any(escaped) {
        return s.into();
    }
    let mut o = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if escaped(c) {
            o.extend(c.escape_default());
        } else {
            o.push(c);
        }
    }
    o.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped() {
        let raw = "hello\x1b]0;pwned\x07\x1b[2J\r\nnext\u{9b}";
        assert_eq!(
            one_line(raw),
            "hello\\u{1b}]0;pwned\\u{7}\\u{1b}[2J\\r\\nnext\\u{9b}"
        );
        assert_eq!(block("a\n\tb\x1b\r"), "a\n\tb\\u{1b}\\r");
        assert!(matches!(one_line("Claire Martin é"), Cow::Borrowed(_)));
    }
}
