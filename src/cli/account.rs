//! What the commands that talk to Graph for one user share: the home, the user's settings and
//! decrypted credentials, the store, and a Graph client pointed where `serve` points it (with
//! `graph.base_url: simulator`, the simulator inside the running gate).

use super::CliError;
use crate::config::Home;
use crate::domain::UserId;
use crate::graph::GraphClient;
use crate::store::Store;
use crate::users::{UserRuntime, Users};
use crate::vault::Vault;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

pub(super) struct Account {
    pub home: Home,
    pub id: UserId,
    pub user: Arc<UserRuntime>,
    /// Just this user, as the sender wants them.
    pub users: Users,
    pub graph: GraphClient,
    /// Where Graph is, for messages: `the simulator in the gate at …` or the base URL.
    pub graph_at: String,
}

impl Account {
    /// Loads USER of the home at `config`, with credentials decrypted.
    pub fn open(config: &Path, user: &str) -> Result<Account, CliError> {
        let id = super::args::user_arg(user)?;
        let home = Home::load(config).map_err(CliError::failure)?;
        if !home.users.contains_key(&id) {
            return Err(CliError::failure(format!(
                "no user `{id}` in {}",
                home.gate.display_path(&home.gate.users_dir).display()
            )));
        }
        let vault = Vault::open_from_env(&home.gate.identity_file)?;
        let (users, failed) = Users::load_one(&home, &vault, &id);
        if let Some((_, e)) = failed.into_iter().next() {
            return Err(CliError::failure(format!("user `{id}`: {e}")));
        }
        let user = users
            .get(id.as_str())
            .cloned()
            .ok_or_else(|| CliError::failure(format!("user `{id}` did not load")))?;
        let g = &home.gate.file.graph;
        let (base, graph_at) = if g.base_url == "simulator" {
            let listen = home.gate.file.server.listen.replace("0.0.0.0", "127.0.0.1");
            let base = format!("http://{listen}/simulator");
            let at = format!(
                "the simulator in the gate at http://{listen} (is `wagate serve` running?)"
            );
            (base, at)
        } else {
            (g.base_url.clone(), g.base_url.clone())
        };
        let graph = GraphClient::new(&base, &g.version, Duration::from_secs(g.timeout_secs))
            .map_err(CliError::failure)?;
        Ok(Account {
            home,
            id,
            user,
            users,
            graph,
            graph_at,
        })
    }

    /// The home's vault (to write renewed credentials).
    pub fn vault(&self) -> Result<Vault, CliError> {
        Ok(Vault::open_from_env(&self.home.gate.identity_file)?)
    }

    /// The home's store (created if missing, migrated).
    pub fn store(&self) -> Result<Store, CliError> {
        Ok(Store::open_with(
            &self.home.gate.db_path,
            Duration::from_millis(self.home.gate.file.storage.busy_timeout_ms),
        )?)
    }
}
