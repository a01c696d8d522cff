//! The vault: each user's credentials in credentials/<user>.age, encrypted with age to the
//! home's X25519 identity file, or to a passphrase (env WAGATE_PASSPHRASE). Plaintext exists
//! only in memory, inside [`Secret`]s. Files are written 0600 through a temp file and rename.

use crate::domain::Secret;
use age::secrecy::{ExposeSecret, SecretString};
use chrono::{DateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};

/// The env variable that switches the vault to passphrase mode.
pub const PASSPHRASE_ENV: &str = "WAGATE_PASSPHRASE";

/// A user's decrypted credentials. Printing it shows `***` for every secret.
#[derive(Clone, Debug)]
pub struct Credentials {
    pub access_token: Secret<String>,
    pub app_secret: Secret<String>,
    pub webhook_verify_token: Secret<String>,
    pub app_id: Option<String>,
    pub token_expires_at: Option<DateTime<Utc>>,
}

/// Vault failures. None of them carries a secret.
#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    #[error("cannot read the identity file {path}: {source}")]
    Identity {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the identity file {0} holds no age X25519 identity (AGE-SECRET-KEY-1…)")]
    NoIdentity(PathBuf),
    #[error("no credentials for user `{0}`: run `wagate creds set {0} --from-file F`")]
    Missing(String),
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot decrypt {0}: wrong identity or passphrase, or the file is damaged")]
    Decrypt(PathBuf),
    #[error("encryption failed: {0}")]
    Encrypt(String),
    #[error("credentials {0}")]
    Invalid(String),
}

/// The plaintext shape, only ever serialised into the encrypted file.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CredentialsFile {
    access_token: String,
    app_secret: String,
    webhook_verify_token: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    app_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    token_expires_at: Option<serde_json::Value>,
}

enum Key {
    Identity(age::x25519::Identity),
    Passphrase(SecretString),
}

/// Encrypts and decrypts credentials files.
pub struct Vault {
    key: Key,
}

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Vault(***)")
    }
}

impl Vault {
    /// Opens the vault: passphrase mode when `passphrase` is given (from WAGATE_PASSPHRASE),
    /// otherwise the X25519 identity in `identity_file`.
    pub fn open(identity_file: &Path, passphrase: Option<String>) -> Result<Vault, VaultError> {
        if let Some(p) = passphrase.filter(|p| !p.is_empty()) {
            return Ok(Vault {
                key: Key::Passphrase(SecretString::from(p)),
            });
        }
        let text =
            std::fs::read_to_string(identity_file).map_err(|source| VaultError::Identity {
                path: identity_file.to_path_buf(),
                source,
            })?;
        let identity = text
            .lines()
            .map(str::trim)
            .filter(|l| l.starts_with("AGE-SECRET-KEY-1"))
            .find_map(|l| l.parse::<age::x25519::Identity>().ok())
            .ok_or_else(|| VaultError::NoIdentity(identity_file.to_path_buf()))?;
        Ok(Vault {
            key: Key::Identity(identity),
        })
    }

    /// Opens the vault the way the gate does: WAGATE_PASSPHRASE if set, else the identity file.
    pub fn open_from_env(identity_file: &Path) -> Result<Vault, VaultError> {
        Vault::open(identity_file, std::env::var(PASSPHRASE_ENV).ok())
    }

    fn encrypt(&self, plaintext: &[u8]) -> Result<Vec<u8>, VaultError> {
        let r = match &self.key {
            Key::Identity(id) => age::encrypt(&id.to_public(), plaintext),
            Key::Passphrase(p) => age::encrypt(&age::scrypt::Recipient::new(p.clone()), plaintext),
        };
        r.map_err(|e| VaultError::Encrypt(e.to_string()))
    }

    fn decrypt(&self, path: &Path, ciphertext: &[u8]) -> Result<Vec<u8>, VaultError> {
        let r = match &self.key {
            Key::Identity(id) => age::decrypt(id, ciphertext),
            Key::Passphrase(p) => age::decrypt(&age::scrypt::Identity::new(p.clone()), ciphertext),
        };
        r.map_err(|_| VaultError::Decrypt(path.to_path_buf()))
    }

    /// Wraps `out` so that what is written to it is age-encrypted to this vault's key (the
    /// identity's public recipient, or the passphrase): backups. Call `finish()` at the end.
    pub fn encrypt_stream<W: Write>(
        &self,
        out: W,
    ) -> Result<age::stream::StreamWriter<W>, VaultError> {
        let enc = match &self.key {
            Key::Identity(id) => {
                let r = id.to_public();
                age::Encryptor::with_recipients(std::iter::once(&r as &dyn age::Recipient))
            }
            Key::Passphrase(p) => Ok(age::Encryptor::with_user_passphrase(p.clone())),
        }
        .map_err(|e| VaultError::Encrypt(e.to_string()))?;
        enc.wrap_output(out)
            .map_err(|e| VaultError::Encrypt(e.to_string()))
    }

    /// Reads an age stream encrypted to this vault's key; `path` names it in errors.
    pub fn decrypt_stream<R: std::io::Read>(
        &self,
        path: &Path,
        input: R,
    ) -> Result<age::stream::StreamReader<R>, VaultError> {
        let dec =
            age::Decryptor::new(input).map_err(|_| VaultError::Decrypt(path.to_path_buf()))?;
        let r = match &self.key {
            Key::Identity(id) => dec.decrypt(std::iter::once(id as &dyn age::Identity)),
            Key::Passphrase(p) => {
                let id = age::scrypt::Identity::new(p.clone());
                dec.decrypt(std::iter::once(&id as &dyn age::Identity))
            }
        };
        r.map_err(|_| VaultError::Decrypt(path.to_path_buf()))
    }

    /// Encrypts `creds` into `path` (mode 0600, written whole or not at all).
    pub fn write_credentials(&self, path: &Path, creds: &Credentials) -> Result<(), VaultError> {
        let plain = CredentialsFile {
            access_token: creds.access_token.expose().clone(),
            app_secret: creds.app_secret.expose().clone(),
            webhook_verify_token: creds.webhook_verify_token.expose().clone(),
            app_id: creds.app_id.clone(),
            token_expires_at: creds.token_expires_at.map(|t| t.to_rfc3339().into()),
        };
        let json = serde_json::to_vec(&plain).map_err(|e| VaultError::Encrypt(e.to_string()))?;
        // What is written must read back (`check` and `serve` read it): refuse here, with the
        // reader's own message, rather than leave the user with credentials nothing can use.
        parse_credentials(&json)?;
        let sealed = self.encrypt(&json)?;
        write_private(path, &sealed)
    }

    /// Decrypts the credentials in `path`.
    pub fn read_credentials(&self, path: &Path) -> Result<Credentials, VaultError> {
        let bytes = std::fs::read(path).map_err(|source| VaultError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let plain = self.decrypt(path, &bytes)?;
        parse_credentials(&plain)
    }
}

/// Reads credentials JSON as a user gives it to `creds set`. Errors name fields and positions,
/// never values (a mistyped token must not end up in a terminal's scrollback).
/// serde's "unknown field `x`, expected one of …", with the name left out unless it looks like
/// one (a token pasted where a key belongs would otherwise be printed).
fn shown_field_error(msg: &str) -> String {
    let Some(rest) = msg.strip_prefix("unknown field `") else {
        return msg.to_string();
    };
    let Some((name, tail)) = rest.split_once('`') else {
        return msg.to_string();
    };
    let plain = name.len() <= 32
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if plain {
        msg.to_string()
    } else {
        format!("unknown field (its name is not shown: it may be a secret){tail}")
    }
}

pub fn parse_credentials(json: &[u8]) -> Result<Credentials, VaultError> {
    parse_credentials_noting(json).map(|(creds, _)| creds)
}

/// As [`parse_credentials`], also naming the fields whose value had spaces or line breaks
/// around it (a pasted token's newline, a copied secret's trailing space). They are removed:
/// no value Meta gives has them, and kept they would break every signature check or request.
/// Whitespace or control characters inside a token or app secret are refused.
pub fn parse_credentials_noting(
    json: &[u8],
) -> Result<(Credentials, Vec<&'static str>), VaultError> {
    // Windows editors save UTF-8 with a byte-order mark, which JSON readers refuse.
    let json = json.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(json);
    let mut f: CredentialsFile = serde_json::from_slice(json).map_err(|e| {
        let msg = e.to_string();
        let keep = msg.starts_with("missing field") || msg.starts_with("unknown field");
        let what = if keep {
            shown_field_error(msg.split(" at line ").next().unwrap_or(&msg))
        } else if e.is_syntax() || e.is_eof() {
            "are not valid JSON".to_string()
        } else {
            "have a value of the wrong type (every value must be a string)".to_string()
        };
        let what = if keep {
            format!("have an error: {what}")
        } else {
            what
        };
        VaultError::Invalid(format!("{what} (line {}, column {})", e.line(), e.column()))
    })?;
    let mut trimmed = Vec::new();
    for (name, v, inner_space) in [
        ("access_token", &mut f.access_token, false),
        ("app_secret", &mut f.app_secret, false),
        ("webhook_verify_token", &mut f.webhook_verify_token, true),
    ] {
        if v.trim().is_empty() {
            return Err(VaultError::Invalid(format!("field `{name}` is empty")));
        }
        if v.trim() != v.as_str() {
            *v = v.trim().to_string();
            trimmed.push(name);
        }
        let bad = |c: char| c.is_control() || (!inner_space && c.is_whitespace());
        if v.chars().any(bad) {
            let what = if inner_space {
                "a control character (a line break, a tab…)"
            } else {
                "a space, line break or other control character"
            };
            return Err(VaultError::Invalid(format!(
                "field `{name}` has {what} inside it; Meta's values have none: copy it again (the value is not shown)"
            )));
        }
    }
    let token_expires_at = match &f.token_expires_at {
        None | Some(serde_json::Value::Null) => None,
        Some(v) => Some(parse_expiry(v).map_err(VaultError::Invalid)?),
    };
    let creds = Credentials {
        access_token: Secret::new(f.access_token),
        app_secret: Secret::new(f.app_secret),
        webhook_verify_token: Secret::new(f.webhook_verify_token),
        app_id: f.app_id,
        token_expires_at,
    };
    Ok((creds, trimmed))
}

/// The last second RFC 3339 can write (9999-12-31T23:59:59Z): a later expiry would be saved
/// as `+10000-…`, which no reader takes back.
const LAST_UNIX_SECOND: i64 = 253_402_300_799;

/// `token_expires_at` as RFC 3339 or unix seconds (a number or a string of digits), within
/// what can be written back: years 1970 to 9999. The value is a time, not a secret, so the
/// message may show it; a count of milliseconds (a common slip) is named as such.
fn parse_expiry(v: &serde_json::Value) -> Result<DateTime<Utc>, String> {
    const WANT: &str = "field `token_expires_at` must be RFC 3339 or unix seconds";
    let secs = match v {
        serde_json::Value::String(s) => match DateTime::parse_from_rfc3339(s) {
            Ok(t) => return Ok(t.with_timezone(&Utc)),
            Err(_) => s.trim().parse::<i64>().map_err(|_| WANT.to_string())?,
        },
        serde_json::Value::Number(n) => n.as_i64().ok_or_else(|| WANT.to_string())?,
        _ => return Err(WANT.to_string()),
    };
    if (0..=LAST_UNIX_SECOND).contains(&secs) {
        return Utc
            .timestamp_opt(secs, 0)
            .single()
            .ok_or_else(|| WANT.to_string());
    }
    if secs > LAST_UNIX_SECOND && secs / 1000 <= LAST_UNIX_SECOND {
        return Err(format!(
            "field `token_expires_at`: {secs} looks like milliseconds; give unix seconds or RFC 3339"
        ));
    }
    Err(format!(
        "field `token_expires_at`: {secs} is not a time between 1970 and 9999; give unix seconds or RFC 3339"
    ))
}

/// Writes a new X25519 identity to `path` (mode 0600); refuses to overwrite one.
pub fn generate_identity_file(path: &Path) -> Result<String, VaultError> {
    if path.exists() {
        return Err(VaultError::Write {
            path: path.to_path_buf(),
            source: std::io::Error::new(std::io::ErrorKind::AlreadyExists, "already exists"),
        });
    }
    let id = age::x25519::Identity::generate();
    let public = id.to_public().to_string();
    let text = format!(
        "# wagate vault identity: keep it secret, keep a copy, never commit it\n# public key: {public}\n{}\n",
        id.to_string().expose_secret()
    );
    write_private(path, text.as_bytes())?;
    Ok(public)
}

/// Writes `bytes` to `path` with mode 0600 via a temp file in the same folder and a rename.
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<(), VaultError> {
    let err = |source| VaultError::Write {
        path: path.to_path_buf(),
        source,
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(err)?;
    let tmp = dir.join(format!(
        ".{}.tmp",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("vault")
    ));
    let mut f = crate::private_file::create(&tmp).map_err(err)?;
    f.write_all(bytes).map_err(err)?;
    f.sync_all().map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    const JSON: &[u8] = br#"{"access_token":"EAAtok","app_secret":"appsec","webhook_verify_token":"vt","token_expires_at":1900000000}"#;

    #[test]
    fn spaces_around_a_value_are_removed_and_inside_a_token_refused() {
        let (c, trimmed) = parse_credentials_noting(
            b"{\"access_token\":\" EAAtok\\n\",\"app_secret\":\"appsec \",\"webhook_verify_token\":\"my verify\"}",
        )
        .unwrap();
        assert_eq!(c.access_token.expose(), "EAAtok");
        assert_eq!(c.app_secret.expose(), "appsec");
        assert_eq!(c.webhook_verify_token.expose(), "my verify");
        assert_eq!(trimmed, ["access_token", "app_secret"]);
        for bad in [
            r#"{"access_token":"QQQ QQQ","app_secret":"s","webhook_verify_token":"v"}"#,
            r#"{"access_token":"t","app_secret":"WWW\nWWW","webhook_verify_token":"v"}"#,
            r#"{"access_token":"t","app_secret":"s","webhook_verify_token":"ZZZ\tZZZ"}"#,
        ] {
            let e = parse_credentials(bad.as_bytes()).unwrap_err().to_string();
            assert!(e.contains("inside it"), "{bad}: {e}");
            for secret in ["QQQ", "WWW", "ZZZ"] {
                assert!(!e.contains(secret), "{e}");
            }
        }
    }

    #[test]
    fn an_unknown_key_is_named_unless_it_may_be_a_secret() {
        let err = |json: &str| parse_credentials(json.as_bytes()).unwrap_err().to_string();
        let e =
            err(r#"{"access_token":"a","app_secret":"b","webhook_verify_token":"c","colour":"x"}"#);
        assert!(e.contains("unknown field `colour`"), "{e}");
        let e = err(
            r#"{"access_token":"a","app_secret":"b","webhook_verify_token":"c","EAASECRETtoken99":"x"}"#,
        );
        assert!(!e.contains("EAASECRET"), "{e}");
        assert!(e.contains("unknown field (its name is not shown"), "{e}");
    }

    #[test]
    fn round_trip_with_identity_file_and_no_plaintext_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let idp = dir.path().join("identity.txt");
        generate_identity_file(&idp).unwrap();
        let vault = Vault::open(&idp, None).unwrap();
        let creds = parse_credentials(JSON).unwrap();
        let path = dir.path().join("credentials/olga.age");
        vault.write_credentials(&path, &creds).unwrap();
        let on_disk = std::fs::read(&path).unwrap();
        assert!(!on_disk.windows(6).any(|w| w == b"EAAtok"));
        let back = vault.read_credentials(&path).unwrap();
        assert_eq!(back.access_token.expose(), "EAAtok");
        assert_eq!(back.token_expires_at.unwrap().timestamp(), 1900000000);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
            let mode = std::fs::metadata(&idp).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        let other = dir.path().join("other.txt");
        generate_identity_file(&other).unwrap();
        let wrong = Vault::open(&other, None).unwrap();
        assert!(matches!(
            wrong.read_credentials(&path),
            Err(VaultError::Decrypt(_))
        ));
    }

    fn with_expiry(v: &str) -> Result<Credentials, VaultError> {
        let json = format!(
            r#"{{"access_token":"EAAtok","app_secret":"appsec","webhook_verify_token":"vt","token_expires_at":{v}}}"#
        );
        parse_credentials(json.as_bytes())
    }

    #[test]
    fn expiry_is_refused_unless_it_can_be_written_back() {
        let e = with_expiry("1900000000000").unwrap_err().to_string();
        assert_eq!(
            e,
            "credentials field `token_expires_at`: 1900000000000 looks like milliseconds; give unix seconds or RFC 3339"
        );
        let e = with_expiry(r#""1900000000000""#).unwrap_err().to_string();
        assert!(e.contains("looks like milliseconds"), "{e}");
        for bad in ["253402300800", "-5", "1e20", "1900000000.5", r#""soon""#] {
            let e = with_expiry(bad).unwrap_err().to_string();
            assert!(e.contains("`token_expires_at`"), "{bad}: {e}");
            assert!(!e.contains("EAAtok") && !e.contains("appsec"), "{e}");
        }
        // The edges that are kept read back as they were given.
        let dir = tempfile::tempdir().unwrap();
        let idp = dir.path().join("identity.txt");
        generate_identity_file(&idp).unwrap();
        let vault = Vault::open(&idp, None).unwrap();
        let path = dir.path().join("olga.age");
        for (given, secs) in [
            ("0", 0),
            ("253402300799", 253_402_300_799),
            (r#""9999-12-31T23:59:59Z""#, 253_402_300_799),
            (r#""1900000000""#, 1_900_000_000),
        ] {
            vault
                .write_credentials(&path, &with_expiry(given).unwrap())
                .unwrap();
            let back = vault.read_credentials(&path).unwrap();
            assert_eq!(back.token_expires_at.unwrap().timestamp(), secs, "{given}");
        }
    }

    #[test]
    fn a_write_that_cannot_be_read_back_does_not_happen() {
        let dir = tempfile::tempdir().unwrap();
        let idp = dir.path().join("identity.txt");
        generate_identity_file(&idp).unwrap();
        let vault = Vault::open(&idp, None).unwrap();
        let path = dir.path().join("olga.age");
        // A token refresh computes the expiry; one past 9999 would be written as `+10000-…`.
        let mut creds = parse_credentials(JSON).unwrap();
        creds.token_expires_at = Utc.timestamp_opt(LAST_UNIX_SECOND + 1, 0).single();
        let e = vault.write_credentials(&path, &creds).unwrap_err();
        assert!(e.to_string().contains("`token_expires_at`"), "{e}");
        assert!(!path.exists());
        let mut creds = parse_credentials(JSON).unwrap();
        creds.app_secret = Secret::new(" ".into());
        assert!(vault.write_credentials(&path, &creds).is_err());
        assert!(!path.exists());
    }

    #[test]
    fn credentials_saved_with_a_byte_order_mark_are_read() {
        let mut with_bom = b"\xEF\xBB\xBF".to_vec();
        with_bom.extend_from_slice(JSON);
        let creds = parse_credentials(&with_bom).unwrap();
        assert_eq!(
            creds.app_secret.expose(),
            parse_credentials(JSON).unwrap().app_secret.expose()
        );
    }

    #[test]
    fn bad_credentials_never_echo_values() {
        let e = parse_credentials(
            br#"{"access_token":12345678,"app_secret":"x","webhook_verify_token":"y"}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(!e.contains("12345678"), "{e}");
        let e = parse_credentials(br#"{"access_token":"SECRETVALUE","app_secret":"x"}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("missing field `webhook_verify_token`"), "{e}");
        assert!(!e.contains("SECRETVALUE"));
        let e = parse_credentials(b"{not json").unwrap_err().to_string();
        assert!(e.contains("not valid JSON"), "{e}");
        let e = parse_credentials(
            br#"{"access_token":" ","app_secret":"x","webhook_verify_token":"y"}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("`access_token` is empty"), "{e}");
    }
}
