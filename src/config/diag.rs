//! Compiler-grade diagnostics for users' files: `error: …`, `--> file:line:col`, the source
//! line and a caret. Every error in gate.yaml, users/*.yaml, project.yaml or a script is one.

use std::fmt;
use std::path::{Path, PathBuf};

/// One located error in a user's file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    pub message: String,
    /// The file as the user names it (relative to the gate home where possible).
    pub file: PathBuf,
    /// 1-based; 0 when the error concerns the whole file.
    pub line: usize,
    /// 1-based; 0 when unknown.
    pub col: usize,
    /// The text of `line`, if known.
    pub source_line: Option<String>,
}

impl Diagnostic {
    /// An error at `line:col` of `file` whose text is `source`.
    pub fn at(
        file: &Path,
        source: &str,
        line: usize,
        col: usize,
        message: impl Into<String>,
    ) -> Self {
        let source_line = if line > 0 {
            source.lines().nth(line - 1).map(str::to_string)
        } else {
            None
        };
        Diagnostic {
            message: message.into(),
            file: file.to_path_buf(),
            line,
            col,
            source_line,
        }
    }

    /// An error about a whole file (unreadable, missing).
    pub fn file(file: &Path, message: impl Into<String>) -> Self {
        Diagnostic {
            message: message.into(),
            file: file.to_path_buf(),
            line: 0,
            col: 0,
            source_line: None,
        }
    }

    /// An error located at the first `key:` in `source` (the field a semantic check rejects);
    /// the caret points at the key's value when there is one on the same line.
    pub fn at_key(file: &Path, source: &str, key: &str, message: impl Into<String>) -> Self {
        match locate_key(source, key, 0) {
            Some((line, col)) => Self::at(file, source, line, col, message),
            None => Self::file(file, message),
        }
    }

    /// Turns a serde_yaml error into a diagnostic with its position.
    /// A syntax error keeps the parser's words, minus its own position (given as file:line:col);
    /// a duplicated key is shown at the duplicate, not at the start of its mapping.
    pub fn from_yaml(file: &Path, source: &str, err: &serde_yaml::Error) -> Self {
        let mut message = err.to_string();
        let loc = err.location().map(|l| (l.line(), l.column()));
        if let Some((line, col)) = loc {
            let own = format!(" at line {line} column {col}");
            if message.ends_with(&own) {
                message.truncate(message.len() - own.len());
            } else if let Some(i) = message.find(&own) {
                // libyaml's syntax errors: `<problem> at line L column C, while parsing <what>
                // at line …`: the problem is here, what it was part of started there.
                message.replace_range(i..i + own.len(), "");
                message.insert_str(0, "YAML syntax: ");
                if message.contains("while parsing a block") {
                    message.push_str(" (check the indentation of this line)");
                }
            } else if let Some(i) = message.rfind(" at line ") {
                message.truncate(i);
            }
        }
        if let (Some(key), Some((line, col))) = (duplicate_key(&message), loc)
            && let Some((l, c)) = duplicate_at(source, &key, line, col)
        {
            return Self::at(
                file,
                source,
                l,
                c,
                format!("{message}: written a second time here"),
            );
        }
        match loc {
            Some((line, col)) => Self::at(file, source, line, col, message),
            None => Self::file(file, message),
        }
    }
}

/// The key a serde_yaml `duplicate field `k`` / `duplicate entry with key "k"` error names.
fn duplicate_key(message: &str) -> Option<String> {
    if let Some(i) = message.find("duplicate field `") {
        let rest = &message[i + "duplicate field `".len()..];
        return rest.find('`').map(|j| rest[..j].to_string());
    }
    let i = message.find("duplicate entry with key \"")?;
    let rest = &message[i + "duplicate entry with key \"".len()..];
    rest.find('"').map(|j| rest[..j].to_string())
}

/// 1-based (line, col) of the second `key:` of the block mapping whose first key is at
/// `line:col` (where serde_yaml reports a duplicate): only keys at that column count, and the
/// mapping ends at the first line indented less. `None` for flow style or when not found.
fn duplicate_at(source: &str, key: &str, line: usize, col: usize) -> Option<(usize, usize)> {
    let lines: Vec<&str> = source.lines().collect();
    let keys_at = col.checked_sub(1)?;
    let mut seen = 0;
    for (n, text) in lines.iter().enumerate().skip(line.checked_sub(1)?) {
        let body = text.trim_start_matches(' ');
        if body.is_empty() || body.starts_with('#') {
            continue;
        }
        let indent = text.len() - body.len();
        if n + 1 > line && indent < keys_at {
            break;
        }
        let at_col = text.get(keys_at..)?;
        if (n + 1 == line || indent == keys_at)
            && at_col
                .strip_prefix(key)
                .is_some_and(|r| r.starts_with(':') || r.trim_start().starts_with(':'))
        {
            seen += 1;
            if seen == 2 {
                return Some((n + 1, col));
            }
        }
    }
    None
}

/// 1-based (line, col) of the value of the `nth` (0-based) occurrence of `key:` in YAML text,
/// or of the key itself if its value is on the next lines.
pub fn locate_key(source: &str, key: &str, nth: usize) -> Option<(usize, usize)> {
    let mut seen = 0;
    for (i, line) in source.lines().enumerate() {
        let trimmed = line.trim_start_matches([' ', '-']);
        let indent = line.len() - trimmed.len();
        let Some(rest) = trimmed.strip_prefix(key) else {
            continue;
        };
        let Some(after) = rest.strip_prefix(':') else {
            continue;
        };
        if seen < nth {
            seen += 1;
            continue;
        }
        let value_off = after.len() - after.trim_start().len();
        let col = if after.trim().is_empty() || after.trim_start().starts_with('#') {
            indent + 1
        } else {
            indent + key.len() + 1 + value_off + 1
        };
        return Some((i + 1, col));
    }
    None
}

/// Where a position inside a YAML scalar lands in its file. `value` is the 1-based (line, col)
/// where the scalar is written, as [`locate_key`] gives it (a quote, a block indicator `|` or
/// `>`, or the first character); `inner` is the 1-based (line, col) in the scalar's text.
/// Folded (`>`) and plain or quoted scalars that go on over the next lines join those lines
/// with a space; literal (`|`) ones keep them. Escapes inside quotes are not counted, so the
/// column is then approximate, but it stays within the line.
pub fn place_in_scalar(src: &str, value: (usize, usize), inner: (usize, usize)) -> (usize, usize) {
    let lines: Vec<&str> = src.lines().collect();
    let (line, col) = value;
    let Some(first) = line.checked_sub(1).and_then(|l| lines.get(l)) else {
        return (0, 0);
    };
    let key_indent = first.len() - first.trim_start_matches([' ', '-']).len();
    let start: String = first.chars().skip(col.saturating_sub(1)).collect();
    let block = start.starts_with(['|', '>']);
    let literal = start.starts_with('|');
    // The scalar's lines as (line, col of their first character, text); blank ones empty.
    let mut parts: Vec<(usize, usize, String)> = Vec::new();
    if !block {
        let quote = usize::from(start.starts_with(['"', '\'']));
        parts.push((line, col + quote, start.chars().skip(quote).collect()));
    }
    for (n, l) in lines.iter().enumerate().skip(line) {
        let body = l.trim_start_matches(' ');
        let indent = l.len() - body.len();
        if !body.is_empty() && indent <= key_indent {
            break;
        }
        parts.push((n + 1, indent + 1, body.to_string()));
    }
    // Walk the text as the parser builds it, and keep the last part starting at or before
    // `inner` on its line.
    let (mut at_line, mut at_col) = (1, 1);
    let mut blanks = 0;
    let mut started = false;
    let mut found = None;
    for (l, c, text) in &parts {
        if literal {
            if started {
                at_line += 1;
            }
            at_col = 1;
        } else if text.is_empty() {
            blanks += 1;
            continue;
        } else if started {
            // A line break becomes a space; one followed by blank lines, that many newlines.
            if blanks > 0 {
                at_line += blanks;
                at_col = 1;
            } else {
                at_col += 1;
            }
        }
        started = true;
        blanks = 0;
        if at_line == inner.0 && at_col <= inner.1 {
            found = Some((*l, c + inner.1 - at_col));
        }
        at_col += text.chars().count();
    }
    let (l, c) = found.unwrap_or((line, col + inner.1.saturating_sub(1)));
    let width = lines.get(l - 1).map_or(0, |t| t.chars().count());
    (l, c.min(width + 1))
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "error: {}", self.message)?;
        if self.line == 0 {
            return write!(f, "  --> {}", self.file.display());
        }
        write!(
            f,
            "  --> {}:{}:{}",
            self.file.display(),
            self.line,
            self.col
        )?;
        if let Some(src) = &self.source_line {
            let num = self.line.to_string();
            let pad = " ".repeat(num.len());
            // Tabs before the caret keep their width so the caret lines up.
            let lead: String = src
                .chars()
                .take(self.col.saturating_sub(1))
                .map(|c| if c == '\t' { '\t' } else { ' ' })
                .collect();
            write!(f, "\n{pad} |\n{num} | {src}\n{pad} | {lead}^")?;
        }
        Ok(())
    }
}

impl Diagnostic {
    /// The diagnostic shown as a warning (`warning: …` instead of `error: …`).
    pub fn as_warning(&self) -> String {
        let text = self.to_string();
        match text.strip_prefix("error: ") {
            Some(rest) => format!("warning: {rest}"),
            None => text,
        }
    }
}

/// Several diagnostics, shown one after the other.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
                writeln!(f)?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Diagnostics {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_with_caret() {
        let src = "user: olga\ntimezone: Mars/Base\n";
        let d = Diagnostic::at_key(
            Path::new("users/olga.yaml"),
            src,
            "timezone",
            "unknown timezone `Mars/Base`",
        );
        assert_eq!(
            d.to_string(),
            "error: unknown timezone `Mars/Base`\n  --> users/olga.yaml:2:11\n  |\n2 | timezone: Mars/Base\n  |           ^"
        );
    }

    #[test]
    fn locates_nested_and_nth_keys() {
        let src = "rules:\n  - name: a\n    on: message\n  - name: b\n    on:\n      cron: x\n";
        assert_eq!(locate_key(src, "name", 1), Some((4, 11)));
        assert_eq!(locate_key(src, "on", 1), Some((5, 5)));
        assert_eq!(locate_key(src, "cron", 0), Some((6, 13)));
        assert_eq!(locate_key(src, "missing", 0), None);
    }

    #[test]
    fn yaml_errors_are_shown_where_they_are() {
        let file = Path::new("p.yaml");
        // A duplicated key: at the second one, not at the start of its mapping.
        let src =
            "rules:\n  - name: b\n    call: x\n    if: >-\n      call: not a key\n    call: y\n";
        let e = serde_yaml::from_str::<serde_yaml::Value>(src).unwrap_err();
        let d = Diagnostic::from_yaml(file, src, &e);
        assert_eq!((d.line, d.col), (6, 5), "{d}");
        assert!(d.message.ends_with("written a second time here"), "{d}");
        // A syntax error: the parser's words without its own position.
        let src = "rules:\n  - name: a\n    on: message\n   bad: [\n";
        let e = serde_yaml::from_str::<serde_yaml::Value>(src).unwrap_err();
        let d = Diagnostic::from_yaml(file, src, &e);
        assert_eq!((d.line, d.col), (4, 4), "{d}");
        assert!(!d.message.contains("line 4"), "{d}");
        assert!(d.message.starts_with("YAML syntax: "), "{d}");
        assert_eq!(duplicate_at("a: 1\nb: 2\n", "a", 1, 1), None);
        assert_eq!(duplicate_at("- a: 1\n  a: 2\n", "a", 1, 3), Some((2, 3)));
    }

    #[test]
    fn places_positions_inside_scalars() {
        // One line, plain and quoted: the column shifts by the value's start (and the quote).
        assert_eq!(place_in_scalar("    if: a ==\n", (1, 9), (1, 5)), (1, 13));
        assert_eq!(place_in_scalar("    if: 'a =='\n", (1, 9), (1, 5)), (1, 14));
        // Folded: the lines join with spaces; the position lands on the line that holds it.
        let src = "  - if: >-\n      event.text == \"hi\" &&\n      event.from ==\n    script: x\n";
        assert_eq!(place_in_scalar(src, (1, 9), (1, 3)), (2, 9));
        assert_eq!(place_in_scalar(src, (1, 9), (1, 25)), (3, 9));
        assert_eq!(place_in_scalar(src, (1, 9), (1, 36)), (3, 20));
        // Literal: lines are lines.
        let src = "if: |\n  let a = 1;\n\n  a +\nnext: 1\n";
        assert_eq!(place_in_scalar(src, (1, 5), (3, 4)), (4, 6));
        // A plain scalar going on over the next line.
        let src = "    if: event.text ==\n      \"hi\" &&\n    script: x\n";
        assert_eq!(place_in_scalar(src, (1, 9), (1, 15)), (2, 7));
        // Never beyond the end of the line.
        assert_eq!(place_in_scalar("if: >-\n  ab\n", (1, 5), (1, 40)), (2, 5));
        assert_eq!(place_in_scalar("if: a\n", (0, 0), (1, 1)), (0, 0));
    }
}
