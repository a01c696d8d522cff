//! Hot reload: a file watcher (notify) on the rules folder. After a change and a quiet
//! `debounce`, the whole home is read and every project compiled aside; only if all of it
//! compiles is the new rule set swapped in, atomically. On any error the last good set keeps
//! running and the located errors are logged. Runs in flight finish on the version they started
//! with (they hold a snapshot). Every reload is recorded with the content hash of what is live.
//! The folder is watched, not the files, so editors that save by replacing a file are seen.

use crate::config::{Home, UserConfig};
use crate::domain::UserId;
use crate::rules::{RuleRegistry, RuleSet};
use crate::script::ScriptEngine;
use crate::store::Store;
use notify::{RecursiveMode, Watcher};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;

/// What the reloader needs; cheap handles.
pub struct Reloader {
    /// The users served since the start, with their settings as served: other users' files
    /// are not read again (their errors were reported at start), and a reload keeps these
    /// settings (timezone, permissions): users/ changes need a restart, which a reload says.
    pub served: BTreeMap<UserId, UserConfig>,
    /// users/<user>.yaml files found changed, and what they read then: each change is logged
    /// once.
    pub users_warned: Mutex<BTreeMap<String, String>>,
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
            let (mut home, users_changed, mut out) =
                Home::load_served(&gate_yaml, &served, &live).map_err(|d| d.to_string())?;
            let compiled = match RuleSet::compile(&home, &engine) {
                Ok(set) => Ok(set),
                // Scripts of a project that is not live may still fail: it stays out alone.
                Err(d) => match home.leave_out_not_live(d.0, &live) {
                    Ok(more) => {
                        out.extend(more);
                        RuleSet::compile(&home, &engine).map_err(|d| d.to_string())
                    }
                    Err(d) => Err(d.to_string()),
                },
            };
            for (project, errors) in &out {
                // Said at each reload while it lasts: the project's own errors, not the others'.
                tracing::warn!(project = %project, "a project that is not live still has errors; it stays out, the others reload:\n{errors}");
            }
            // `at:` times already past, by project (warned about when their project changes).
            let now = chrono::Utc::now();
            let past: Vec<(String, String)> = home
                .projects
                .iter()
                .flat_map(|p| {
                    crate::rules::past_ats(&home, &[p], now)
                        .into_iter()
                        .map(|w| (p.name.clone(), w))
                })
                .collect();
            // The files as compiled, for the configuration's history (read now, not after the
            // swap, when the next edit may already be on disk).
            let compiled = compiled.map(|set| {
                let files: Vec<_> = set
                    .projects
                    .iter()
                    .map(|p| crate::history::project(&home.gate.rules_dir, &p.name))
                    .collect();
                (set, files, past)
            });
            Ok((compiled, users_changed))
        })
        .await
        .unwrap_or_else(|e| Err(format!("reload task failed: {e}")));
        let compiled = match compiled {
            Ok((c, users_changed)) => {
                self.warn_users_changed(users_changed);
                c
            }
            Err(e) => Err(e),
        };
        let current = self.registry.snapshot();
        match compiled {
            Ok((set, _, _)) if set.hash() == current.hash() => {
                crate::metrics::reload("unchanged");
                // Back to the live version after a rejected edit (the broken file restored):
                // said and recorded, so that the last word is not the rejection.
                let (hash, projects) = (current.hash(), current.project_hashes());
                let h = hash.clone();
                let recovered = self
                    .store
                    .call(move |s| {
                        let last = s.reloads(1)?;
                        let rejected = last.first().is_some_and(|r| r.outcome == "rejected");
                        if rejected {
                            s.record_reload("live", &h, &projects, None)?;
                        }
                        Ok(rejected)
                    })
                    .await
                    .unwrap_or(false);
                if recovered {
                    tracing::info!(hash = %hash, "rules compile again: the live version is unchanged (the rejected edit was undone)");
                }
                ReloadOutcome::Unchanged
            }
            Ok((set, files, past)) => {
                let (hash, projects) = (set.hash(), set.project_hashes());
                for (project, w) in &past {
                    if current.project_hashes().get(project) != projects.get(project) {
                        tracing::warn!("{}", w.trim_start_matches("warning: "));
                    }
                }
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
                self.warn_orphan_calls().await;
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

    /// Logs, once per change, each served user whose users/<user>.yaml now differs from what
    /// is served: a reload does not apply it.
    fn warn_users_changed(&self, changed: Vec<(String, String, String)>) {
        let mut warned = self.users_warned.lock().unwrap_or_else(|p| p.into_inner());
        // A file back to what is served may warn again at its next change.
        warned.retain(|u, _| changed.iter().any(|(c, _, _)| c == u));
        for (user, file, now) in changed {
            if warned.get(&user) == Some(&now) {
                continue;
            }
            let detail = if now == "removed" {
                " (it was removed; the gate keeps serving this user as it started)".to_string()
            } else if now.starts_with("error") {
                format!(
                    " (it has errors now; `wagate check` shows them):\n{}",
                    now.trim_end()
                )
            } else {
                " (timezone, permissions and other settings stay as served until then)".to_string()
            };
            tracing::warn!(user = %user, "{file} changed; restart the gate to apply it{detail}");
            warned.insert(user, now);
        }
    }

    /// After a new set went live: pending `schedule()` calls that name a rule it no longer
    /// has fail at their due time. Says so now (see [`orphan_calls`]).
    async fn warn_orphan_calls(&self) {
        let zones = self
            .served
            .iter()
            .map(|(id, u)| (id.to_string(), u.timezone))
            .collect();
        orphan_calls(self.store.clone(), self.registry.clone(), zones).await;
    }
}

/// Pending `schedule()` calls that name a rule the live set does not have fail at their due
/// time. Says so now, per user (log and audit), with when the first is due (in the user's
/// timezone, from `zones`), so that the rule can be renamed back in time. Run after a reload
/// goes live, and at start (for rules renamed while the gate was down).
pub async fn orphan_calls(
    store: Store,
    registry: RuleRegistry,
    zones: BTreeMap<String, chrono_tz::Tz>,
) {
    {
        let set = registry.snapshot();
        let Ok(pending) = store.call(|s| s.pending_calls_by_rule()).await else {
            return;
        };
        let mut by_user: BTreeMap<String, Vec<(String, i64, i64)>> = BTreeMap::new();
        for (user, project, rule, n, first) in pending {
            let live = set.projects.iter().any(|p| {
                p.user.as_str() == user
                    && p.name == project
                    && p.rules.iter().any(|r| r.name == rule)
            });
            if !live {
                by_user
                    .entry(user)
                    .or_default()
                    .push((format!("{project}/{rule}"), n, first));
            }
        }
        for (user, rules) in by_user {
            let tz = zones.get(&user).copied().unwrap_or(chrono_tz::UTC);
            let calls: i64 = rules.iter().map(|(_, n, _)| n).sum();
            let first = rules.iter().map(|(_, _, f)| *f).min().unwrap_or_default();
            let first = chrono::DateTime::from_timestamp_millis(first)
                .map(|t| {
                    t.with_timezone(&tz)
                        .format("%Y-%m-%d %H:%M:%S %Z")
                        .to_string()
                })
                .unwrap_or_default();
            let names: Vec<String> = rules.iter().map(|(r, n, _)| format!("{r} ({n})")).collect();
            tracing::warn!(
                user = %user,
                "{calls} pending schedule() call(s) name rules the live rules no longer have: {}; the first is due {first}. They fail at their due time unless the rule is back by then (rename it back)",
                names.join(", ")
            );
            let _ = store
                .call(move |s| s.audit_orphan_calls(&user, &rules))
                .await;
        }
    }
}
