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

const GITIGNORE: &str = "# never commit secrets or data\ncredentials/\ndata/\nidentity.txt\n";

pub(super) fn run(dir: &Path) -> Result<(), CliError> {
    let gate = dir.join("gate.yaml");
    if gate.exists() {
        return Err(CliError::failure(format!(
            "{} already exists; wagate init never overwrites a home",
            gate.display()
        )));
    }
    for sub in ["users", "rules", "data", "credentials"] {
        std::fs::create_dir_all(dir.join(sub)).map_err(|e| {
            CliError::failure(format!("cannot create {}: {e}", dir.join(sub).display()))
        })?;
    }
    let public = vault::generate_identity_file(&dir.join("identity.txt"))?;
    std::fs::write(&gate, GATE_YAML)?;
    let gi = dir.join(".gitignore");
    if !gi.exists() {
        std::fs::write(&gi, GITIGNORE)?;
    }
    println!("created a wagate home in {}", dir.display());
    println!("vault identity: identity.txt (mode 0600; public key {public})");
    println!(
        "next: write users/<user>.yaml, then `wagate --config {} creds set <user> --from-file creds.json`",
        gate.display()
    );
    Ok(())
}
