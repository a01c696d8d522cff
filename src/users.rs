//! The users the gate serves: each one's settings and decrypted credentials, loaded once at
//! start. A user whose credentials cannot be read is reported and left out; the others go on.

use crate::config::{Home, UserConfig};
use crate::domain::UserId;
use crate::vault::{Credentials, Vault, VaultError};
use arc_swap::ArcSwap;
use std::collections::BTreeMap;
use std::sync::Arc;

/// One served user. The credentials can be replaced while the gate runs (a refreshed token,
/// `wagate creds set`): readers take the current ones with [`UserRuntime::creds`].
#[derive(Debug)]
pub struct UserRuntime {
    pub config: UserConfig,
    creds: ArcSwap<Credentials>,
}

impl UserRuntime {
    pub fn new(config: UserConfig, creds: Credentials) -> Self {
        UserRuntime {
            config,
            creds: ArcSwap::from_pointee(creds),
        }
    }

    /// The current credentials.
    pub fn creds(&self) -> Arc<Credentials> {
        self.creds.load_full()
    }

    /// Replaces the credentials (every later call uses the new ones).
    pub fn set_creds(&self, creds: Credentials) {
        self.creds.store(Arc::new(creds));
    }
}

/// Every served user, by name; cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct Users(Arc<BTreeMap<String, Arc<UserRuntime>>>);

impl Users {
    /// Decrypts every user's credentials; returns the users that loaded and, for the others,
    /// why they did not.
    pub fn load(home: &Home, vault: &Vault) -> (Users, Vec<(String, VaultError)>) {
        Self::load_where(home, vault, |_| true)
    }

    /// Like [`Users::load`], for one user only (the CLI's commands for a user).
    pub fn load_one(
        home: &Home,
        vault: &Vault,
        user: &UserId,
    ) -> (Users, Vec<(String, VaultError)>) {
        Self::load_where(home, vault, |id| id == user)
    }

    fn load_where(
        home: &Home,
        vault: &Vault,
        wanted: impl Fn(&UserId) -> bool,
    ) -> (Users, Vec<(String, VaultError)>) {
        let mut ok = BTreeMap::new();
        let mut failed = Vec::new();
        for (id, cfg) in home.users.iter().filter(|(id, _)| wanted(id)) {
            let path = home.gate.credentials_path(id);
            if !path.exists() {
                failed.push((id.to_string(), VaultError::Missing(id.to_string())));
                continue;
            }
            match vault.read_credentials(&path) {
                Ok(creds) => {
                    ok.insert(
                        id.to_string(),
                        Arc::new(UserRuntime::new(cfg.clone(), creds)),
                    );
                }
                Err(e) => failed.push((id.to_string(), e)),
            }
        }
        (Users(Arc::new(ok)), failed)
    }

    /// A user by name.
    pub fn get(&self, name: &str) -> Option<&Arc<UserRuntime>> {
        self.0.get(name)
    }

    /// The user owning a phone_number_id.
    pub fn by_phone_number_id(&self, id: &str) -> Option<&Arc<UserRuntime>> {
        self.0.values().find(|u| u.config.phone_number_id == id)
    }

    /// The user owning a WhatsApp Business Account id.
    pub fn by_business_account_id(&self, id: &str) -> Option<&Arc<UserRuntime>> {
        self.0
            .values()
            .find(|u| u.config.business_account_id.as_deref() == Some(id))
    }

    /// All users, by name.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &Arc<UserRuntime>)> {
        self.0.iter()
    }

    /// How many users are served.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether no user is served.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}
