//! Hot reload: a file watcher (notify) on the rules folder. After a change and a quiet
//! `debounce`, the whole home is read and every project compiled aside; only if all of it
//! compiles is the new rule set swapped in, atomically. On any error the last good set keeps
//! running and the located errors are logged. Runs in flight finish on the version they started
//! with (they hold a snapshot). Every reload is recorded with the content hash of what is live.
//! The folder is watched, not the files, so editors that save by replacing a file are seen.

use crate::config::Home;
use crate::rules::{RuleRegistry, RuleSet};
use crate::script::ScriptEngine;
use crate::store::Store;
use notify::{RecursiveMode, Watcher};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// What the reloader needs; cheap handles.
pub struct Reloader {
    /// The users served since the start: other users' files are not read again (their errors
    /// were reported at start; users/ changes need a restart).
    pub served: std::collections::BTreeSet<String>,
    pub gate_yaml: PathBuf,
    pub rules_dir: PathBuf,
    pub engine: Arc<ScriptEngine>,
    pub registry: RuleRegistry,
    pub store: Store,
    /// How long the folder must stay quiet before a reload (editors write in bursts).
    pub debounce: Duration,
    /// Woken after a new set goes live (the scheduler re-reads its timers).
    pub on_swap: Arc<tokio::sync::Notify>,
}

/// What one reload did.
#[derive(Debug, PartialEq, Eq)]
pub enum ReloadOutcome {
    /// The new set is live; its hash.
    Live(String),
    /// Nothing changed.
    Unchanged,
    /// The new set did not compile; the last good one keeps running.
    Rejected(String),
}

impl Reloader {
    /// Watches until `cancel` fires. A watcher that cannot start is logged; the gate goes on
    /// without hot reload.
    /// Starts watching the rules folder now (so that no change made after this returns is
    /// missed), and returns the reload loop to run until `cancel`. `None`: hot reload is off
    /// (the error is logged).
    pub fn watch(self) -> Option<impl std::future::Future<Output = ()> + Send + 'static> {
        let (tx, rx) = mpsc::unbounded_channel();
        let watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
            if let Ok(ev) = res
                && !matches!(ev.kind, notify::EventKind::Access(_))
            {
                let _ = tx.send(());
            }
        });
        let mut watcher = match watcher {
            Ok(w) => w,
            Err(e) => {
                tracing::error!(error = %e, "cannot watch the rules folder; hot reload is off");
                return None;
            }
        };
        if let Err(e) = watcher.watch(&self.rules_dir, RecursiveMode::Recursive) {
            tracing::error!(error = %e, dir = %self.rules_dir.display(), "cannot watch the rules folder; hot reload is off");
            return None;
        }
        Some(self.run(watcher, rx))
    }

    async fn run(self, watcher: notify::RecommendedWatcher, mut rx: mpsc::UnboundedReceiver<()>) {
        // The watcher lives as long as this loop.
        let _watcher = watcher;
        loop {
            if rx.recv().await.is_none() {
                return;
            }
            // Debounce: wait until the folder has been quiet for `debounce`.
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(self.debounce) => break,
                    got = rx.recv() => if got.is_none() { return },
                }
            }
            self.reload().await;
        }
    }

    /// Reads and compiles the home aside, then swaps it in if it all compiles.
    pub async fn reload(&self) -> ReloadOutcome {
        let gate_yaml = self.gate_yaml.clone();
        let engine = self.engine.clone();
        let served = self.served.clone();
        let live: std::collections::BTreeSet<String> = self
            .registry
            .snapshot()
            .projects
            .iter()
            .map(|p| p.name.clone())
            .collect();
        let compiled = tokio::task::spawn_blocking(move || -> Result<_, String> {
            let (mut home, mut out) =
                Home::load_served(&gate_yaml, &served, &live).map_err(|d| d.to_string())?;
            let set = match RuleSet::compile(&home, &engine) {
                Ok(set) => set,
                Err(d) => {
                    out.extend(home.leave_out_not_live(d.0, &live).map_err(|d| d.to_string())?);
                    RuleSet::compile(&home, &engine).map_err(|d| d.to_string())?
                }
            };
            for (project, errors) in &out {
                // Said at each reload while it lasts: the project's own errors, not the others'.
                tracing::warn!(project = %project, "a project that is not live still has errors; it stays out, the others reload:\n{errors}");
            }
            // The files as compiled, for the configuration's history (read now, not after the
            // swap, when the next edit may already be on disk).
            let files: Vec<_> = set
                .projects
                .iter()
                .map(|p| crate::history::project(&home.gate.rules_dir, &p.name))
                .collect();
            Ok((set, files))
        })
        .await
        .unwrap_or_else(|e| Err(format!("reload task failed: {e}")));
        let current = self.registry.snapshot();
        match compiled {
            Ok((set, _)) if set.hash() == current.hash() => {
                crate::metrics::reload("unchanged");
                ReloadOutcome::Unchanged
            }
            Ok((set, files)) => {
                let (hash, projects) = (set.hash(), set.project_hashes());
                self.registry.swap(set);
                crate::metrics::reload("live");
                self.on_swap.notify_one();
                tracing::info!(hash = %hash, "rules reloaded");
                let store = self.store.clone();
                let h = hash.clone();
                let _ = store
                    .call(move |s| {
                        s.record_reload("live", &h, &projects, None)?;
                        // Every project folder's files as they went live (only changed ones
                        // make a new version).
                        s.record_config(&files).map(drop)
                    })
                    .await;
                ReloadOutcome::Live(hash)
            }
            Err(errors) => {
                crate::metrics::reload("rejected");
                tracing::error!(
                    "rules not reloaded; the last good version keeps running:\n{errors}"
                );
                let (hash, projects) = (current.hash(), current.project_hashes());
                let e = errors.clone();
                let _ = self
                    .store
                    .call(move |s| s.record_reload("rejected", &hash, &projects, Some(&e)))
                    .await;
                ReloadOutcome::Rejected(errors)
            }
        }
    }
}
