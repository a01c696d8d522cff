//! The scheduler: fires timed rules (`cron`, `at`) and scripts' `schedule()` calls, exactly
//! once per scheduled instant, in the project timezone, through restarts and reloads.
//!
//! Each timed rule has a persisted timer (its next instant). A firing is claimed in one
//! transaction (a row unique per (rule, instant), and the timer moved on), then run, then its
//! effects committed with the firing marked done, only if it is still running. A crash between
//! the two leaves the firing running; it runs again, once, at the next start. Time is always a
//! parameter ([`Clock`]), so tests drive it.
//!
//! Downtime: instants missed within a minute's grace fire as usual. Beyond that, with
//! `catch_up: once` (the default) the latest missed instant fires once if it is no later than
//! `max_lateness`; every other missed instant is recorded as skipped, with the reason.

use crate::config::CatchUp;
use crate::rules::{Project, Rule, RuleRegistry, RuleSet};
use crate::runner::{self, StoreHost};
use crate::script::ScriptEngine;
use crate::state_reads::Recording;
use crate::store::{Effects, Store, StoreError, TimerRow};
use crate::users::Users;
use chrono::{DateTime, TimeZone, Utc};
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Where the scheduler reads the time.
pub trait Clock: Send + Sync {
    fn now(&self) -> DateTime<Utc>;
}

/// The real clock.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock that moves only when told (tests, dry runs).
pub struct ManualClock(Mutex<DateTime<Utc>>);

impl ManualClock {
    pub fn new(t: DateTime<Utc>) -> Self {
        ManualClock(Mutex::new(t))
    }
    pub fn set(&self, t: DateTime<Utc>) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = t;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A firing later than this is "missed" and follows the rule's catch-up policy.
pub const GRACE: Duration = Duration::from_secs(60);
/// At most this many missed instants of one rule are walked (and recorded) per tick.
const MAX_MISSED: usize = 10_000;
/// At most this many skipped instants of one rule are logged one by one per tick.
const LOGGED_SKIPS: usize = 3;

/// What one tick did (for tests and logs).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TickReport {
    /// `project/rule` and the instant, for every timed firing that ran.
    pub fired: Vec<(String, DateTime<Utc>)>,
    /// `project/rule`, the instant and why, for every instant recorded as skipped.
    pub skipped: Vec<(String, DateTime<Utc>, String)>,
    /// `project/rule: call` for every `schedule()` call that ran.
    pub calls: Vec<String>,
    /// When the next thing is due.
    pub next: Option<DateTime<Utc>>,
}

/// What the scheduler needs; cheap handles.
#[derive(Clone)]
pub struct Scheduler {
    pub store: Store,
    pub registry: RuleRegistry,
    pub engine: Arc<ScriptEngine>,
    pub users: Users,
    pub clock: Arc<dyn Clock>,
    /// Wakes the scheduler (after a reload, or a clock change in tests).
    pub wake: Arc<Notify>,
    pub sender_wake: Arc<Notify>,
}

fn ms_to_time(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms).single().unwrap_or_default()
}

impl Scheduler {
    /// Ticks whenever something is due (or every minute, or when woken) until cancelled.
    pub async fn run(self, cancel: CancellationToken) {
        while !cancel.is_cancelled() {
            let report = self.tick(self.clock.now()).await;
            let now = self.clock.now();
            let wait = report
                .next
                .map(|t| (t - now).to_std().unwrap_or(Duration::ZERO))
                .unwrap_or(Duration::from_secs(60))
                .min(Duration::from_secs(60));
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = self.wake.notified() => {}
                _ = cancel.cancelled() => return,
            }
        }
    }

    /// Does everything due at `now`: timers in sync with the rules, firings left by a crash,
    /// due timed rules, due `schedule()` calls.
    pub async fn tick(&self, now: DateTime<Utc>) -> TickReport {
        let this = self.clone();
        let report = tokio::task::spawn_blocking(move || this.tick_blocking(now)).await;
        match report {
            Ok(Ok(r)) => {
                r.fired
                    .iter()
                    .for_each(|(_, at)| crate::metrics::schedule_lag(now - *at));
                if !r.fired.is_empty() || !r.calls.is_empty() {
                    self.sender_wake.notify_one();
                }
                r
            }
            Ok(Err(e)) => {
                tracing::error!(error = %e, "scheduler tick failed; will retry");
                TickReport {
                    next: Some(now + chrono::Duration::seconds(1)),
                    ..Default::default()
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "scheduler tick panicked; will retry");
                TickReport {
                    next: Some(now + chrono::Duration::seconds(1)),
                    ..Default::default()
                }
            }
        }
    }

    fn tick_blocking(&self, now: DateTime<Utc>) -> Result<TickReport, StoreError> {
        let set = self.registry.snapshot();
        self.sync(&set, now)?;
        let mut report = TickReport::default();
        for f in self.store.running_firings()? {
            // Claimed but never completed: the gate stopped mid-run. Run it again, once.
            if let Some((project, rule)) = find(&set, &f.user, &f.project, &f.rule) {
                self.run_firing(project, rule, f.id, ms_to_time(f.instant_ms), now)?;
                report.fired.push((
                    format!("{}/{}", f.project, f.rule),
                    ms_to_time(f.instant_ms),
                ));
            }
        }
        for t in self.store.timers()? {
            let Some(next) = t.next_at_ms.filter(|n| *n <= now.timestamp_millis()) else {
                continue;
            };
            if let Some((project, rule)) = find(&set, &t.user, &t.project, &t.rule) {
                self.fire_timer(&t, next, project, rule, now, &mut report)?;
            }
        }
        self.run_calls(&set, now, &mut report)?;
        let timers_next = self
            .store
            .timers()?
            .iter()
            .filter_map(|t| t.next_at_ms)
            .min();
        let calls_next = self.store.next_call_due()?;
        report.next = [timers_next, calls_next]
            .into_iter()
            .flatten()
            .min()
            .map(ms_to_time);
        Ok(report)
    }

    /// Timers of the live timed rules: new and changed ones start from `now`.
    fn sync(&self, set: &RuleSet, now: DateTime<Utc>) -> Result<(), StoreError> {
        let mut live = Vec::new();
        for p in &set.projects {
            for r in p.rules.iter().filter(|r| r.trigger.is_timed()) {
                live.push((
                    p.user.to_string(),
                    p.name.clone(),
                    r.name.clone(),
                    r.trigger.describe(),
                ));
            }
        }
        let next = |u: &str, p: &str, r: &str| {
            let (project, rule) = find(set, u, p, r)?;
            rule.trigger
                .next_after(now, project.timezone)
                .map(|t| t.timestamp_millis())
        };
        self.store.sync_timers(&live, &next)
    }

    /// Handles a due timer: walks the instants from its `next_at` to `now`, fires the one the
    /// policy allows, records the others as skipped, and moves the timer past `now`.
    fn fire_timer(
        &self,
        t: &TimerRow,
        first: i64,
        project: &Project,
        rule: &Rule,
        now: DateTime<Utc>,
        report: &mut TickReport,
    ) -> Result<(), StoreError> {
        let tz = project.timezone;
        let mut instants = vec![ms_to_time(first)];
        let mut next = rule.trigger.next_after(ms_to_time(first), tz);
        while let Some(n) = next.filter(|n| *n <= now) {
            if instants.len() >= MAX_MISSED {
                next = rule.trigger.next_after(now, tz);
                break;
            }
            instants.push(n);
            next = rule.trigger.next_after(n, tz);
        }
        let next_ms = next.map(|n| n.timestamp_millis());
        let latest = *instants.last().expect("one instant at least");
        let lateness = (now - latest).to_std().unwrap_or(Duration::ZERO);
        let fires =
            lateness <= GRACE || (rule.catch_up == CatchUp::Once && lateness <= rule.max_lateness);
        let name = format!("{}/{}", project.name, rule.name);
        let mut skipped_here = 0usize;
        for &i in &instants {
            let late = humanize((now - i).to_std().unwrap_or(Duration::ZERO));
            let skip_reason = if fires && i == latest {
                None
            } else if i != latest {
                Some(format!(
                    "missed by {late} while the gate was down; a later instant superseded it"
                ))
            } else if rule.catch_up == CatchUp::Skip {
                Some(format!(
                    "missed by {late} while the gate was down (catch_up: skip)"
                ))
            } else {
                Some(format!(
                    "missed by {late}, beyond max_lateness {}",
                    humanize(rule.max_lateness)
                ))
            };
            let claimed = self.store.claim_firing(
                t,
                i.timestamp_millis(),
                next_ms,
                skip_reason.as_deref(),
            )?;
            match (claimed, skip_reason) {
                (Some(id), None) => {
                    self.run_firing(project, rule, id, i, now)?;
                    report.fired.push((name.clone(), i));
                }
                (Some(_), Some(why)) => {
                    // A frequent rule (every second) after downtime misses thousands: the
                    // first few are logged one by one, the rest in one line below.
                    if skipped_here < LOGGED_SKIPS {
                        tracing::warn!(user = %project.user, project = %project.name, rule = %rule.name, instant = %i, reason = %why, "timed rule skipped");
                    }
                    skipped_here += 1;
                    report.skipped.push((name.clone(), i, why));
                }
                (None, _) => {} // that instant was claimed before: never twice
            }
        }
        if skipped_here > LOGGED_SKIPS {
            tracing::warn!(user = %project.user, project = %project.name, rule = %rule.name, skipped = skipped_here, "timed rule skipped {} more missed instants (each recorded)", skipped_here - LOGGED_SKIPS);
        }
        Ok(())
    }

    fn run_firing(
        &self,
        project: &Project,
        rule: &Rule,
        firing_id: i64,
        instant: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let event = schedule_event(project, rule, instant, now);
        settle(|| {
            let (effects, runs) = self.run_one(
                project,
                rule,
                &event,
                None,
                &format!("fire{firing_id}"),
                now,
            );
            self.store
                .complete_firing(firing_id, project.user.as_str(), effects, runs)
        })?;
        tracing::info!(user = %project.user, project = %project.name, rule = %rule.name, instant = %instant, "timed rule fired");
        Ok(())
    }

    fn run_one(
        &self,
        project: &Project,
        rule: &Rule,
        input: &Value,
        call: Option<&str>,
        key: &str,
        now: DateTime<Utc>,
    ) -> (Effects, Vec<crate::store::RunRecord>) {
        let user = project.user.to_string();
        let runtime = self.users.get(&user).cloned();
        let permissions = runtime.as_ref().map(|u| &u.config.permissions);
        let store_host = Arc::new(StoreHost {
            store: self.store.clone(),
            export: runner::ExportAccess::of(
                &self.store,
                &user,
                self.users.get(&user).map(|u| &u.config),
                false,
            ),
            user,
            project: project.name.clone(),
        });
        let host = Arc::new(Recording::new(store_host, &project.name));
        let mut ctx = runner::context(&self.engine, project, permissions, host.clone());
        ctx.now = now;
        // Its sends return the keys its outbox rows get (see runner::effects).
        ctx.key_prefix = Some(key.to_string());
        let res = runner::run_rule(&self.engine, project, rule, input, call, "schedule", &ctx);
        runner::count(project.user.as_str(), &res.record);
        let mut effects = Effects::default();
        runner::effects(project, rule, res.actions, key, &mut effects);
        effects.reads = host.take();
        (effects, vec![res.record])
    }

    /// Runs due `schedule()` calls, each once.
    fn run_calls(
        &self,
        set: &RuleSet,
        now: DateTime<Utc>,
        report: &mut TickReport,
    ) -> Result<(), StoreError> {
        for c in self.store.due_calls(now.timestamp_millis())? {
            let Some((project, rule)) = find(set, &c.user, &c.project, &c.rule) else {
                self.fail_missing(set, &c, now)?;
                continue;
            };
            let lateness = (now - ms_to_time(c.due_at_ms))
                .to_std()
                .unwrap_or(Duration::ZERO);
            let late = lateness > GRACE
                && (rule.catch_up == CatchUp::Skip || lateness > rule.max_lateness);
            if c.state == "pending" && late {
                let why = format!("missed by {} while the gate was down", humanize(lateness));
                self.store
                    .set_call_state(c.id, "pending", "skipped", Some(&why))?;
                continue;
            }
            if c.state == "pending"
                && !self
                    .store
                    .set_call_state(c.id, "pending", "running", None)?
            {
                continue;
            }
            settle(|| {
                let (effects, runs) = self.run_one(
                    project,
                    rule,
                    &c.arg,
                    Some(&c.call),
                    &format!("call{}", c.id),
                    now,
                );
                self.store.complete_call(c.id, &c.user, effects, runs)
            })?;
            report
                .calls
                .push(format!("{}/{}: {}", c.project, c.rule, c.call));
        }
        Ok(())
    }
}

impl Scheduler {
    /// A due `schedule()` call whose rule is not in the live rules (renamed, or its project
    /// moved): it cannot run, and fails visibly: a run trace with outcome `error` (`wagate
    /// runs`), its audit entry, a warning in the log and the runs metric.
    fn fail_missing(
        &self,
        set: &RuleSet,
        c: &crate::store::DueCall,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let tz = self
            .users
            .get(&c.user)
            .map_or(chrono_tz::UTC, |u| u.config.timezone);
        let due = ms_to_time(c.due_at_ms).with_timezone(&tz);
        let why = format!(
            "rule `{}/{}` no longer exists (renamed, or its project moved?): its schedule() call `{}` due {} cannot run",
            c.project,
            c.rule,
            c.call,
            due.format("%Y-%m-%d %H:%M:%S %Z")
        );
        let version = set
            .projects
            .iter()
            .find(|p| p.user.as_str() == c.user && p.name == c.project)
            .map(|p| p.hash.clone())
            .unwrap_or_default();
        let record = crate::store::RunRecord {
            project: c.project.clone(),
            rule: c.rule.clone(),
            version,
            trigger: "schedule".into(),
            detail: json!([]),
            outcome: "error",
            error: Some(why.clone()),
            logs: Vec::new(),
            actions: 0,
            started_at_ms: now.timestamp_millis(),
            duration_us: 0,
        };
        let counted = record.clone();
        if self
            .store
            .fail_call(c.id, &c.state, &c.user, &why, record)?
        {
            runner::count(&c.user, &counted);
            tracing::warn!(user = %c.user, project = %c.project, rule = %c.rule, call = %c.call, reason = %why, "schedule() call failed: its rule no longer exists");
        }
        Ok(())
    }
}

/// Runs and commits a timed run (`attempt`) until its commit finds the values it read
/// unchanged (see [`crate::state_reads`]), a bounded number of times; after that the conflict
/// is the tick's error, and the claimed run goes again at the next tick.
fn settle<T>(mut attempt: impl FnMut() -> Result<T, StoreError>) -> Result<T, StoreError> {
    for _ in 1..RERUNS {
        match attempt() {
            Err(e) if e.is_state_conflict() => {
                tracing::debug!(error = %e, "a timed run read a value changed meanwhile; runs again");
            }
            done => return done,
        }
    }
    attempt()
}

/// Most runs of one timed run in one tick, when values it read keep changing.
const RERUNS: usize = 16;

/// The `event` map of a timed rule's firing for `instant`, fired at `now` (times local).
pub fn schedule_event(
    project: &Project,
    rule: &Rule,
    instant: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Value {
    let tz = project.timezone;
    json!({
        "kind": "schedule",
        "user": project.user.as_str(),
        "project": project.name,
        "rule": rule.name,
        "trigger": rule.trigger.describe(),
        "scheduled_for": instant.with_timezone(&tz).to_rfc3339(),
        "fired_at": now.with_timezone(&tz).to_rfc3339(),
    })
}

fn find<'a>(
    set: &'a RuleSet,
    user: &str,
    project: &str,
    rule: &str,
) -> Option<(&'a Project, &'a Rule)> {
    let p = set
        .projects
        .iter()
        .find(|p| p.user.as_str() == user && p.name == project)?;
    let r = p.rules.iter().find(|r| r.name == rule)?;
    Some((p, r))
}

/// `3h 20m`, `45s`: a duration as people say it.
pub fn humanize(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..86_400 => format!("{}h {}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d {}h", s / 86_400, (s % 86_400) / 3600),
    }
}
