//! `wagate init DIR`: a working home with a fresh vault identity (0600) and a .gitignore that
//! keeps credentials/, data/ and the identity out of git.

use super::CliError;
use crate::vault;
use std::path::Path;

const GATE_YAML: &str = r#"# wagate home: see README.md for every key.
server:  { listen: "127.0.0.1:8080" }
storage: { path: data/wagate.db }
graph:   { base_url: "https://graph.facebook.com", version: "v23.0" }   # base_url: simulator → built-in fake Cloud API
vault:   { identity_file: identity.txt }     # or env WAGATE_PASSPHRASE for passphrase mode
users_dir: users
rules_dir: rules
"#;

/// What the .gitignore must keep out of git: the vault identity, the encrypted credentials
/// and the data (database, exports, backups).
const IGNORED: [&str; 3] = ["credentials/", "data/", "identity.txt"];

const GITIGNORE: &str = "# never commit secrets or data\ncredentials/\ndata/\nidentity.txt\n";

const FOLDERS: [&str; 4] = ["users", "rules", "data", "credentials"];

pub(super) fn run(dir: &Path) -> Result<(), CliError> {
    // Everything that could stop us is checked before anything is made, so that a refused
    // init leaves the folder as it was, not a half-made home.
    let existing: Vec<String> = ["gate.yaml", "identity.txt"]
        .into_iter()
        .filter(|f| dir.join(f).exists())
        .map(|f| dir.join(f).display().to_string())
        .collect();
    if !existing.is_empty() {
        return Err(CliError::failure(format!(
            "{} already exist{}; wagate init never overwrites a home",
            existing.join(" and "),
            if existing.len() == 1 { "s" } else { "" }
        )));
    }
    if let Some(f) = FOLDERS
        .iter()
        .map(|sub| dir.join(sub))
        .find(|p| p.exists() && !p.is_dir())
    {
        return Err(CliError::failure(format!(
            "{} is a file, not a folder; wagate init never overwrites a home",
            f.display()
        )));
    }
    let gi = dir.join(".gitignore");
    let old_gitignore = match std::fs::read_to_string(&gi) {
        Ok(text) => Some(text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => {
            return Err(CliError::failure(format!(
                "cannot read {}: {e}",
                gi.display()
            )));
        }
    };
    for sub in FOLDERS {
        std::fs::create_dir_all(dir.join(sub)).map_err(|e| {
            CliError::failure(format!("cannot create {}: {e}", dir.join(sub).display()))
        })?;
    }
    let public = vault::generate_identity_file(&dir.join("identity.txt"))?;
    std::fs::write(dir.join("gate.yaml"), GATE_YAML)?;
    let gitignore_note = match old_gitignore {
        None => {
            std::fs::write(&gi, GITIGNORE)?;
            None
        }
        Some(text) => {
            let missing = missing_ignores(&text);
            if !missing.is_empty() {
                std::fs::write(&gi, with_ignores(&text, &missing))?;
            }
            Some(missing)
        }
    };
    println!("created a wagate home in {}", dir.display());
    println!("vault identity: identity.txt (mode 0600; public key {public})");
    match gitignore_note {
        Some(m) if m.is_empty() => {
            println!(
                "the existing .gitignore already keeps {} out of git",
                IGNORED.join(", ")
            );
        }
        Some(m) => println!("added {} to the existing .gitignore", m.join(", ")),
        None => {}
    }
    println!(
        "next: write users/<user>.yaml, then `wagate --config {} creds set <user> --from-file creds.json`",
        dir.join("gate.yaml").display()
    );
    Ok(())
}

/// The entries of [`IGNORED`] that `gitignore` does not already hold, in any of the usual
/// spellings (`data/`, `/data/`, `data`, `/data`).
fn missing_ignores(gitignore: &str) -> Vec<&'static str> {
    let has = |entry: &str| {
        let bare = entry.trim_end_matches('/');
        gitignore.lines().map(str::trim).any(|l| {
            let l = l.strip_prefix('/').unwrap_or(l);
            l == entry || l == bare
        })
    };
    IGNORED.into_iter().filter(|e| !has(e)).collect()
}

/// `gitignore` as it was, then the missing entries under a comment of their own.
fn with_ignores(gitignore: &str, missing: &[&str]) -> String {
    let mut out = gitignore.to_string();
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
    out.push_str("\n# wagate: never commit secrets or data\n");
    for m in missing {
        out.push_str(m);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_missing_entries_are_appended_and_the_rest_is_kept() {
        let old = "target/\n/data\n# notes";
        assert_eq!(missing_ignores(old), ["credentials/", "identity.txt"]);
        assert_eq!(
            with_ignores(old, &missing_ignores(old)),
            "target/\n/data\n# notes\n\n# wagate: never commit secrets or data\ncredentials/\nidentity.txt\n"
        );
        assert!(missing_ignores(GITIGNORE).is_empty());
        assert!(missing_ignores("/credentials/\ndata\n/identity.txt\n").is_empty());
        // A negation or a deeper path does not keep the folder out.
        assert_eq!(missing_ignores("!data/\nsub/identity.txt\n").len(), 3);
    }
}
