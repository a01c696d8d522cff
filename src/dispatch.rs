//! The dispatcher: takes committed events in arrival order (one lane per contact, lanes in
//! parallel up to a bound), runs the rules of the event's user whose trigger and `if:` match, and commits the runs' actions (outbox rows with
//! idempotency keys), their traces and the event's completion in one transaction.
//! A crash before that commit leaves the event pending; the re-run enqueues nothing twice.

use crate::rules::RuleRegistry;
use crate::runner::{self, StoreHost};
use crate::script::ScriptEngine;
use crate::store::{Effects, NewOutbound, Store, StoredEvent};
use crate::users::Users;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// What the dispatcher needs; cheap handles.
#[derive(Clone)]
pub struct Dispatcher {
    pub store: Store,
    pub registry: RuleRegistry,
    pub engine: Arc<ScriptEngine>,
    pub users: Users,
    /// Woken by the webhook handler after a commit.
    pub wake: Arc<Notify>,
    /// Woken after new outbox rows are committed.
    pub sender_wake: Arc<Notify>,
    /// How many lanes (contacts) run at once.
    pub max_parallel: usize,
    /// Events being run right now (observable by status pages and tests).
    pub runs_in_flight: Arc<AtomicUsize>,
}

/// Events that must stay in order share a lane: one per (user, contact); events without a
/// contact (template updates, account alerts) get one lane per (user, kind).
fn lane_of(ev: &StoredEvent) -> String {
    match &ev.contact {
        Some(c) => format!("{}\u{0}c:{c}", ev.user),
        None => format!("{}\u{0}k:{}", ev.user, ev.kind),
    }
}

/// Lanes running now and the events they hold; shared by the loop and its lane tasks.
#[derive(Default)]
struct Lanes {
    busy: HashSet<String>,
    in_flight: HashSet<i64>,
    /// Events whose lane finished since the last look at the store began: that look may
    /// still list them as pending, and must not start them again.
    finished: HashSet<i64>,
}

/// How many pending events one look at the store takes.
const BATCH: usize = 1000;

impl Dispatcher {
    /// Dispatches until `cancel` fires. Each lane handles its events one after the other, in
    /// arrival order; up to `max_parallel` lanes run at once. On cancel, every lane finishes
    /// the event in hand and stops; what it had not started stays pending in the store.
    pub async fn run(self, cancel: CancellationToken) {
        let lanes = Arc::new(Mutex::new(Lanes::default()));
        let permits = Arc::new(Semaphore::new(self.max_parallel));
        let lane_done = Arc::new(Notify::new());
        let tasks = TaskTracker::new();
        while !cancel.is_cancelled() {
            let started = self
                .start_lanes(&lanes, &permits, &lane_done, &tasks, &cancel)
                .await;
            if started {
                continue;
            }
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = lane_done.notified() => {}
                _ = cancel.cancelled() => break,
                // A safety net: events committed by another process are found too.
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
        tasks.close();
        tasks.wait().await;
    }

    /// Looks at the pending events and starts a task for each free lane that has work.
    /// Returns whether any task was started.
    async fn start_lanes(
        &self,
        lanes: &Arc<Mutex<Lanes>>,
        permits: &Arc<Semaphore>,
        lane_done: &Arc<Notify>,
        tasks: &TaskTracker,
        cancel: &CancellationToken,
    ) -> bool {
        // Every slot taken: a finishing lane wakes the loop.
        let free = permits.available_permits();
        if free == 0 {
            return false;
        }
        let skip: HashSet<i64> = {
            let mut l = lock(lanes);
            l.finished.clear();
            l.in_flight.clone()
        };
        // Enough to fill the free slots (events in flight are skipped before being decoded).
        let limit = (free * 8).clamp(64, BATCH);
        let pending = match self
            .store
            .call(move |s| s.pending_events_except(limit, &skip))
            .await
        {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(error = %e, "dispatcher cannot read pending events");
                return false;
            }
        };
        // Group the free lanes' events, keeping arrival order within each lane.
        let mut work: Vec<(String, Vec<StoredEvent>)> = Vec::new();
        let mut index: HashMap<String, usize> = HashMap::new();
        {
            let l = lock(lanes);
            for ev in pending {
                if l.in_flight.contains(&ev.id) || l.finished.contains(&ev.id) {
                    continue;
                }
                let lane = lane_of(&ev);
                if l.busy.contains(&lane) {
                    continue;
                }
                match index.get(&lane) {
                    Some(&i) => work[i].1.push(ev),
                    None => {
                        index.insert(lane.clone(), work.len());
                        work.push((lane, vec![ev]));
                    }
                }
            }
        }
        let mut started = false;
        for (lane, events) in work {
            let Ok(permit) = permits.clone().try_acquire_owned() else {
                break; // every slot is taken; a finishing lane wakes the loop
            };
            {
                let mut l = lock(lanes);
                l.busy.insert(lane.clone());
                l.in_flight.extend(events.iter().map(|e| e.id));
            }
            let this = self.clone();
            let (lanes, lane_done, cancel) = (lanes.clone(), lane_done.clone(), cancel.clone());
            tasks.spawn(async move {
                let ids: Vec<i64> = events.iter().map(|e| e.id).collect();
                this.run_lane(events, &cancel).await;
                let mut l = lock(&lanes);
                l.busy.remove(&lane);
                for id in ids {
                    l.in_flight.remove(&id);
                    l.finished.insert(id);
                }
                drop(l);
                drop(permit);
                lane_done.notify_one();
            });
            started = true;
        }
        started
    }

    /// Handles one lane's events in order; stops at the first that cannot be committed, so
    /// that no later event of the contact overtakes it.
    async fn run_lane(&self, events: Vec<StoredEvent>, cancel: &CancellationToken) {
        for ev in events {
            if cancel.is_cancelled() {
                return;
            }
            let this = self.clone();
            let id = ev.id;
            match tokio::task::spawn_blocking(move || this.dispatch_one(ev)).await {
                Ok(Ok(queued)) => {
                    if queued > 0 {
                        self.sender_wake.notify_one();
                    }
                }
                Ok(Err(e)) => {
                    tracing::error!(event_id = id, error = %e, "cannot commit a dispatch; will retry");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    return;
                }
                Err(e) => {
                    tracing::error!(event_id = id, error = %e, "dispatch task failed; will retry");
                    return;
                }
            }
        }
    }

    /// Runs every matching rule for one event and commits everything they did in one
    /// transaction. Returns how many outbox rows it queued.
    fn dispatch_one(&self, ev: StoredEvent) -> Result<usize, crate::store::StoreError> {
        struct InFlight<'a>(&'a AtomicUsize);
        impl Drop for InFlight<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::SeqCst);
            }
        }
        self.runs_in_flight.fetch_add(1, Ordering::SeqCst);
        let _in_flight = InFlight(&self.runs_in_flight);
        crate::metrics::dispatch_lag(crate::store::now_ms() - ev.created_at_ms);
        let rules = self.registry.snapshot();
        let user = self.users.get(&ev.user).cloned();
        let permissions = user.as_ref().map(|u| &u.config.permissions);
        let mut effects = Effects::default();
        let mut runs = Vec::new();
        for project in rules.for_user(&ev.user) {
            let host = Arc::new(StoreHost {
                store: self.store.clone(),
                user: ev.user.clone(),
                project: project.name.clone(),
                export: runner::ExportAccess::of(
                    &self.store,
                    &ev.user,
                    self.users.get(&ev.user).map(|u| &u.config),
                    false,
                ),
            });
            let ctx = runner::context(&self.engine, project, permissions, host);
            for rule in project
                .rules
                .iter()
                .filter(|r| r.trigger.matches_kind(&ev.kind))
            {
                let res =
                    runner::run_rule(&self.engine, project, rule, &ev.map, None, &ev.kind, &ctx);
                if res.record.outcome == "ok" {
                    tracing::info!(user = %ev.user, project = %project.name, rule = %rule.name, message_id = ev.map.get("id").and_then(|v| v.as_str()).unwrap_or(""), event_id = ev.id, actions = res.actions.len(), "rule ran");
                }
                runner::effects(
                    project,
                    rule,
                    res.actions,
                    &format!("ev{}", ev.id),
                    &mut effects,
                );
                runs.push(res.record);
            }
        }
        if let Some(read) = self.read_receipt(&ev) {
            effects.outbound.push(read);
        }
        self.store.complete_event(ev.id, &ev.user, &effects, &runs)
    }

    /// With `mark_read: true` in the user's file, an incoming message is marked read (blue
    /// ticks) through the outbox, once: its key is the message's wamid.
    fn read_receipt(&self, ev: &StoredEvent) -> Option<NewOutbound> {
        let user = self.users.get(&ev.user)?;
        if ev.kind != "message" || !user.config.mark_read {
            return None;
        }
        let wamid = ev.map.get("id").and_then(serde_json::Value::as_str)?;
        let recipient = ev.contact.clone()?;
        Some(NewOutbound {
            idem_key: format!("read/{wamid}"),
            recipient,
            msg_type: "read".into(),
            body: crate::domain::outgoing::mark_read(wamid, false),
        })
    }
}
