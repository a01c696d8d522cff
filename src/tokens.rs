//! Tokens that renew themselves. For each user with an `app_id` in their credentials, the
//! keeper learns when the access token expires (the credentials' `token_expires_at`, or
//! Graph's `debug_token`), leaves tokens that never expire (system users) alone, and renews a
//! long-lived user token `renew_before` its end with the `fb_exchange_token` exchange: the new
//! token is encrypted into credentials/USER.age, used at once, and audited. An expired or
//! invalid token is marked invalid (sends stop; `check` and /healthz show it). The keeper also
//! picks up credentials files changed on disk (`wagate creds set`, `wagate token refresh`)
//! without a restart.

use crate::graph::{GraphClient, GraphError};
use crate::sender::fingerprint;
use crate::store::{Store, StoreError, now_ms};
use crate::users::{UserRuntime, Users};
use crate::vault::{Credentials, Vault, VaultError};
use chrono::{DateTime, Utc};
use serde_json::json;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio_util::sync::CancellationToken;

/// Renew a token when it has less than this left.
pub const RENEW_BEFORE: Duration = Duration::from_secs(7 * 24 * 3600);
/// How often tokens are looked at.
pub const CHECK_EVERY: Duration = Duration::from_secs(3600);
/// How often credentials files are looked at for changes.
pub const FILES_EVERY: Duration = Duration::from_secs(30);
/// debug_token's answer is trusted this long.
const DEBUG_TTL_MS: i64 = 24 * 3600 * 1000;

/// What the keeper did with one user's token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TokenOutcome {
    /// A system user's token: it never expires; nothing to do.
    NeverExpires,
    /// Valid until then, not yet time to renew.
    Valid { expires_at: DateTime<Utc> },
    /// Renewed: the new token is stored and in use.
    Renewed {
        old_expiry: DateTime<Utc>,
        expires_at: Option<DateTime<Utc>>,
    },
    /// The credentials have no `app_id`, which debug_token and the exchange need.
    NoAppId,
    /// Expired or rejected: marked invalid; new credentials are needed.
    Invalid(String),
}

/// Why the keeper could not look at or renew a token.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("{0}")]
    Graph(#[from] GraphError),
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Vault(#[from] VaultError),
}

/// Keeps the users' tokens fresh.
#[derive(Clone)]
pub struct TokenKeeper {
    pub store: Store,
    pub graph: GraphClient,
    pub users: Users,
    pub vault: Arc<Vault>,
    /// credentials/ of the home: `<dir>/<user>.age`.
    pub credentials_dir: PathBuf,
    pub renew_before: Duration,
    /// Modification times of the credentials files as last read.
    seen: Arc<Mutex<HashMap<String, SystemTime>>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn at(secs: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(secs, 0).unwrap_or_default()
}

impl TokenKeeper {
    pub fn new(
        store: Store,
        graph: GraphClient,
        users: Users,
        vault: Arc<Vault>,
        credentials_dir: PathBuf,
    ) -> Self {
        let keeper = TokenKeeper {
            store,
            graph,
            users,
            vault,
            credentials_dir,
            renew_before: RENEW_BEFORE,
            seen: Arc::default(),
        };
        for (name, _) in keeper.users.iter() {
            if let Some(m) = keeper.mtime(name) {
                lock(&keeper.seen).insert(name.clone(), m);
            }
        }
        keeper
    }

    fn path(&self, user: &str) -> PathBuf {
        self.credentials_dir.join(format!("{user}.age"))
    }

    fn mtime(&self, user: &str) -> Option<SystemTime> {
        std::fs::metadata(self.path(user))
            .and_then(|m| m.modified())
            .ok()
    }

    /// Checks the credentials files and then every token, every hour, until `cancel`.
    pub async fn run(self, cancel: CancellationToken) {
        let mut last_check: Option<tokio::time::Instant> = None;
        while !cancel.is_cancelled() {
            self.reload_changed().await;
            if last_check.is_none_or(|t| t.elapsed() >= CHECK_EVERY) {
                self.check_all().await;
                last_check = Some(tokio::time::Instant::now());
            }
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = tokio::time::sleep(FILES_EVERY) => {}
            }
        }
    }

    /// Looks at every user's token once; logs what it did.
    pub async fn check_all(&self) {
        for (name, u) in self.users.iter() {
            match self.check(u, false).await {
                Ok(TokenOutcome::Renewed { expires_at, .. }) => {
                    tracing::info!(user = %name, expires_at = ?expires_at, "access token renewed")
                }
                Ok(TokenOutcome::Invalid(why)) => {
                    tracing::error!(user = %name, reason = %why, "access token is no longer valid; set new credentials")
                }
                Ok(o) => tracing::debug!(user = %name, outcome = ?o, "access token checked"),
                Err(e) => {
                    tracing::warn!(user = %name, error = %e, "cannot check the access token; will try again")
                }
            }
        }
    }

    /// Re-reads credentials files that changed on disk since they were read.
    pub async fn reload_changed(&self) {
        for (name, u) in self.users.iter() {
            let Some(m) = self.mtime(name) else { continue };
            if lock(&self.seen).get(name) == Some(&m) {
                continue;
            }
            match self.vault.read_credentials(&self.path(name)) {
                Ok(c) => {
                    u.set_creds(c);
                    lock(&self.seen).insert(name.clone(), m);
                    tracing::info!(user = %name, "credentials changed on disk; now in use");
                }
                Err(e) => {
                    tracing::error!(user = %name, error = %e, "changed credentials cannot be read; the old ones stay in use")
                }
            }
        }
    }

    /// When the user's current token expires, as far as known: the credentials' date, or
    /// Graph's `debug_token` (cached a day in the store). `Ok(None)`: no app id to ask with.
    async fn expiry(&self, u: &UserRuntime) -> Result<Option<(i64, bool)>, TokenError> {
        let creds = u.creds();
        if let Some(t) = creds.token_expires_at {
            return Ok(Some((t.timestamp(), true)));
        }
        let Some(app_id) = creds.app_id.clone() else {
            return Ok(None);
        };
        let (user, fp) = (
            u.config.id.to_string(),
            fingerprint(creds.access_token.expose()),
        );
        let cached = {
            let (user, fp) = (user.clone(), fp.clone());
            self.store.call(move |s| s.token_info(&user, &fp)).await?
        };
        if let Some((expires_at, checked)) = cached
            && now_ms() - checked < DEBUG_TTL_MS
        {
            return Ok(Some((expires_at, true)));
        }
        let d = self
            .graph
            .debug_token(&creds.access_token, &app_id, &creds.app_secret)
            .await?;
        let expires_at = d.expires_at;
        self.store
            .call(move |s| s.set_token_info(&user, &fp, expires_at))
            .await?;
        Ok(Some((d.expires_at, d.is_valid)))
    }

    /// Looks at one user's token and renews it if it is time (or `force`).
    pub async fn check(&self, u: &UserRuntime, force: bool) -> Result<TokenOutcome, TokenError> {
        let Some((expires_at, valid)) = self.expiry(u).await? else {
            return Ok(TokenOutcome::NoAppId);
        };
        let now = Utc::now().timestamp();
        if !valid || (expires_at != 0 && expires_at <= now) {
            let why = if valid {
                format!(
                    "the access token expired on {}",
                    at(expires_at).to_rfc3339()
                )
            } else {
                "debug_token says the access token is not valid".to_string()
            };
            self.invalid(u, &why).await?;
            return Ok(TokenOutcome::Invalid(why));
        }
        if expires_at == 0 {
            return Ok(TokenOutcome::NeverExpires);
        }
        let left = Duration::from_secs((expires_at - now).max(0) as u64);
        if !force && left > self.renew_before {
            return Ok(TokenOutcome::Valid {
                expires_at: at(expires_at),
            });
        }
        self.renew(u, at(expires_at)).await
    }

    async fn invalid(&self, u: &UserRuntime, why: &str) -> Result<(), TokenError> {
        let (user, fp, why) = (
            u.config.id.to_string(),
            fingerprint(u.creds().access_token.expose()),
            why.to_string(),
        );
        self.store
            .call(move |s| s.mark_token_invalid(&user, &fp, &why))
            .await?;
        Ok(())
    }

    async fn renew(
        &self,
        u: &UserRuntime,
        old_expiry: DateTime<Utc>,
    ) -> Result<TokenOutcome, TokenError> {
        let creds = u.creds();
        let Some(app_id) = creds.app_id.clone() else {
            return Ok(TokenOutcome::NoAppId);
        };
        let (token, lifetime) = match self
            .graph
            .exchange_token(&creds.access_token, &app_id, &creds.app_secret)
            .await
        {
            Ok(t) => t,
            Err(e)
                if crate::sender::policy::classify(&e)
                    == crate::sender::policy::Verdict::TokenInvalid =>
            {
                let why = format!(
                    "the token exchange was refused: {}",
                    crate::sender::policy::reason(&e)
                );
                self.invalid(u, &why).await?;
                return Ok(TokenOutcome::Invalid(why));
            }
            Err(e) => return Err(e.into()),
        };
        let expires_at = lifetime.map(|s| at(Utc::now().timestamp() + s));
        let new = Credentials {
            access_token: token,
            token_expires_at: expires_at,
            ..(*creds).clone()
        };
        let user = u.config.id.to_string();
        let path = self.path(&user);
        self.vault.write_credentials(&path, &new)?;
        if let Some(m) = self.mtime(&user) {
            lock(&self.seen).insert(user.clone(), m);
        }
        let details = json!({
            "old_fingerprint": fingerprint(creds.access_token.expose()),
            "new_fingerprint": fingerprint(new.access_token.expose()),
            "old_expires_at": old_expiry.to_rfc3339(),
            "expires_at": expires_at.map(|t| t.to_rfc3339()),
        });
        u.set_creds(new);
        self.store
            .call(move |s| s.audit(&user, "token.refresh", &details))
            .await?;
        Ok(TokenOutcome::Renewed {
            old_expiry,
            expires_at,
        })
    }
}
