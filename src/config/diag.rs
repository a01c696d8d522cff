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
    pub fn from_yaml(file: &Path, source: &str, err: &serde_yaml::Error) -> Self {
        let mut message = err.to_string();
        if let Some(i) = message.rfind(" at line ") {
            message.truncate(i);
        }
        match err.location() {
            Some(loc) => Self::at(file, source, loc.line(), loc.column(), message),
            None => Self::file(file, message),
        }
    }
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
}
