//! Parsed identifiers. A `UserId` is checked once, at the edge, and trusted afterwards.

use std::fmt;

/// A gate user's name: `[a-z0-9_-]+`, at most 64 characters. It names files and URL paths,
/// so it must never hold a path separator or anything that needs escaping.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(transparent)]
pub struct UserId(String);

impl UserId {
    /// Parses a user name, or says what is wrong with it.
    pub fn parse(s: &str) -> Result<Self, String> {
        if s.is_empty() {
            return Err("a user name cannot be empty".into());
        }
        if s.len() > 64 {
            return Err(format!("user name `{s}` is longer than 64 characters"));
        }
        if let Some(c) = s
            .chars()
            .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_' || *c == '-'))
        {
            return Err(format!(
                "user name `{s}` has `{c}`; use only a-z, 0-9, `_` and `-`"
            ));
        }
        Ok(UserId(s.to_string()))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_names() {
        assert!(UserId::parse("olga").is_ok());
        assert!(UserId::parse("team_2-x").is_ok());
        assert!(UserId::parse("").is_err());
        assert!(UserId::parse("Olga").is_err());
        assert!(UserId::parse("../etc").is_err());
        assert!(UserId::parse(&"a".repeat(65)).is_err());
    }
}
