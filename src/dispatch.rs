//! The dispatcher: takes committed events in arrival order (one lane per contact, lanes in
//! parallel up to a bound), runs the rules of the event's user whose trigger and `if:` match, and commits the runs' actions (outbox rows with
//! idempotency keys), their traces and the event's completion in one transaction.
//! A crash before that commit leaves the event pending; the re-run enqueues nothing twice.

use crate::rules::{RuleRegistry, RuleSet};
use crate::runner::{self, StoreHost};
use crate::script::ScriptEngine;
use crate::state_reads::Recording;
use crate::store::{Effects, NewOutbound, Store, StoredEvent};
use crate::users::Users;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
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
    /// The scheduler's: woken after `schedule()` calls are committed, so that one due in
    /// seconds is not left to the scheduler's next look (up to a minute away).
    pub schedule_wake: Arc<Notify>,
    /// The gate's clock: a run's `now()`, and what `schedule()` counts from.
    pub clock: Arc<dyn crate::scheduler::Clock>,
    /// How many lanes (contacts) run at once.
    pub max_parallel: usize,
    /// Events being run right now (observable by status pages and tests).
    pub runs_in_flight: Arc<AtomicUsize>,
    /// Whose rules run on the lane's own worker (see [`Placement`]).
    pub placement: Arc<Placement>,
}

/// Where an event's rules run. Most rules take microseconds: run on the async worker that
/// holds the lane, they spare the trip to the blocking pool and back, two thread switches that
/// cost more CPU than the rules themselves (`wagate bench --only e2e`: a tenth to a fifth of
/// the CPU of an event answered end to end). A rule can also take long (a loop, a lookup in a
/// large history) and must then hold no worker, or webhooks would wait for it: each user's
/// rules for each kind of event run on the blocking pool until [`PROVEN`] events in a row were quick (under [`QUICK`]
/// of CPU, and under [`WAITED`] from start to end), and go back there at the first event that
/// is not. The time is the thread's CPU time, so that a run the system merely paused (two busy
/// cores, more threads) still counts as quick; the bound on the whole time catches a rule that
/// waits. A new rule set (a reload) starts every user over, so a new version of a script is
/// timed on the blocking pool before it is trusted. A project whose scripts name `lookup` or
/// `export` always runs there. On a worker, a rule is cut off at [`WORKER_BUDGET`]: should one
/// proven quick turn slow, the event's attempt is dropped (a run only collects what it would
/// do) and the event runs again on the pool, so no rule holds a worker longer than that.
#[derive(Default)]
pub struct Placement {
    streaks: Mutex<Streaks>,
}

#[derive(Default)]
struct Streaks {
    /// The rule set the streaks were counted on (held, so that its address is not reused).
    set: Option<Arc<RuleSet>>,
    /// Each user's events in a row that were quick, by kind of event.
    quick: HashMap<String, HashMap<String, u32>>,
}

/// The most CPU an event's rules may take and still count as quick.
const QUICK: Duration = Duration::from_millis(1);

/// The longest an event's rules may take from start to end (waits included) and still count as
/// quick.
const WAITED: Duration = Duration::from_millis(20);

/// How long one event's rules took.
#[derive(Clone, Copy, Debug)]
pub struct Took {
    /// CPU time of the thread that ran them.
    pub cpu: Duration,
    /// From start to end.
    pub wall: Duration,
}

impl Took {
    /// What a run that panicked counts as.
    const SLOW: Took = Took {
        cpu: QUICK,
        wall: WAITED,
    };

    fn quick(self) -> bool {
        self.cpu < QUICK && self.wall < WAITED
    }
}

/// CPU time of the calling thread so far.
fn thread_cpu() -> Duration {
    let ts = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(
        ts.tv_sec.max(0) as u64,
        ts.tv_nsec.clamp(0, 999_999_999) as u32,
    )
}

/// Quick events in a row before a user's rules run on the lane's worker.
const PROVEN: u32 = 32;

/// The longest a rule may run on a worker: one that would take longer is cut off there and
/// the event runs again on the blocking pool.
const WORKER_BUDGET: Duration = Duration::from_millis(10);

impl Placement {
    /// Whether one event of `kind` of `user` under `set` runs on the lane's worker: its rules
    /// are proven quick and none may block.
    pub fn runs_on_worker(&self, user: &str, kind: &str, set: &Arc<RuleSet>) -> bool {
        let blocks = set
            .for_user(user)
            .any(|p| p.may_block && p.rules.iter().any(|r| r.trigger.matches_kind(kind)));
        !blocks && self.on_worker(user, kind, set)
    }

    /// Whether `user`'s rules of `set` for events of `kind` are proven quick.
    pub fn on_worker(&self, user: &str, kind: &str, set: &Arc<RuleSet>) -> bool {
        let s = lock(&self.streaks);
        s.set.as_ref().is_some_and(|c| Arc::ptr_eq(c, set))
            && s.quick
                .get(user)
                .and_then(|k| k.get(kind))
                .is_some_and(|n| *n >= PROVEN)
    }

    /// `user`'s rules of `set` took `took` for one event of `kind`. `set` is the live one: a
    /// run that began before a reload is not counted.
    pub fn record(&self, user: &str, kind: &str, set: &Arc<RuleSet>, took: Took) {
        let mut s = lock(&self.streaks);
        if !s.set.as_ref().is_some_and(|c| Arc::ptr_eq(c, set)) {
            s.set = Some(set.clone());
            s.quick.clear();
        }
        let quick = took.quick();
        if !s.quick.contains_key(user) {
            s.quick.insert(user.to_string(), HashMap::new());
        }
        let kinds = s.quick.get_mut(user).expect("inserted above");
        match kinds.get_mut(kind) {
            Some(n) if quick => *n = n.saturating_add(1),
            Some(n) => {
                if *n >= PROVEN {
                    tracing::debug!(
                        user,
                        cpu_us = took.cpu.as_micros() as u64,
                        wall_us = took.wall.as_micros() as u64,
                        "rules were slow; they run on the blocking pool again"
                    );
                }
                *n = 0;
            }
            None => {
                kinds.insert(kind.to_string(), u32::from(quick));
            }
        }
    }
}

/// Events that must stay in order share a lane: one per (user, contact); events without a
/// contact (template updates, account alerts) get one lane per (user, kind).
fn lane_of(ev: &StoredEvent) -> String {
    match &ev.contact {
        Some(c) => format!("{}\u{0}c:{c}", ev.user),
        None => format!("{}\u{0}k:{}", ev.user, ev.kind),
    }
}

/// The events the dispatcher holds: read from the store and not yet done. Reading goes on
/// from the last event id read (events are committed in id order), so each new event is read
/// and decoded once.
#[derive(Default)]
struct Lanes {
    /// Events not started yet, per lane, in arrival order.
    waiting: HashMap<String, VecDeque<StoredEvent>>,
    /// Lanes with waiting events and no task, oldest first: the next to start.
    ready: VecDeque<String>,
    /// Lanes with a task running.
    busy: HashSet<String>,
    /// Events held (waiting or running).
    held: usize,
    /// The last event id read.
    cursor: i64,
}

impl Lanes {
    /// Takes in events read from the store.
    fn add(&mut self, events: Vec<StoredEvent>) {
        for ev in events {
            self.cursor = self.cursor.max(ev.id);
            self.held += 1;
            self.queue(lane_of(&ev), [ev]);
        }
    }

    /// Queues events at the end of `lane` (or, coming back from a failed commit, in front of
    /// what waits there).
    fn queue(&mut self, lane: String, events: impl IntoIterator<Item = StoredEvent>) {
        let q = self.waiting.entry(lane.clone()).or_default();
        let fresh = q.is_empty();
        q.extend(events);
        if fresh && !self.busy.contains(&lane) {
            self.ready.push_back(lane);
        }
    }

    /// A lane's task ended, leaving `unfinished` (in order) when a commit failed.
    fn finished(&mut self, lane: String, done: usize, unfinished: Vec<StoredEvent>) {
        self.busy.remove(&lane);
        self.held -= done;
        let rest = self.waiting.remove(&lane).unwrap_or_default();
        if !unfinished.is_empty() || !rest.is_empty() {
            self.waiting
                .insert(lane.clone(), unfinished.into_iter().chain(rest).collect());
            self.ready.push_back(lane);
        }
    }
}

/// Most events held at once (read ahead of the lanes).
const HOLD: usize = 4096;

impl Dispatcher {
    /// Dispatches until `cancel` fires. Each lane handles its events one after the other, in
    /// arrival order; up to `max_parallel` lanes run at once. On cancel, every lane finishes
    /// the event in hand and stops; what it had not started stays pending in the store.
    pub async fn run(self, cancel: CancellationToken) {
        let lanes = Arc::new(Mutex::new(Lanes::default()));
        let permits = Arc::new(Semaphore::new(self.max_parallel));
        let lane_done = Arc::new(Notify::new());
        let tasks = TaskTracker::new();
        // Whether the store may hold events not read yet: a commit of new ones woke the
        // loop, the last look stopped short (its room was full), or a second went by.
        let mut look = true;
        while !cancel.is_cancelled() {
            if look {
                look = self.read_more(&lanes).await;
            }
            self.start_lanes(&lanes, &permits, &lane_done, &tasks, &cancel);
            tokio::select! {
                _ = self.wake.notified() => look = true,
                _ = lane_done.notified() => {}
                _ = cancel.cancelled() => break,
                // A safety net: events committed by another process are found too.
                _ = tokio::time::sleep(Duration::from_secs(1)) => look = true,
            }
        }
        tasks.close();
        tasks.wait().await;
    }

    /// Reads the events committed since the last look, while fewer than [`HOLD`] are held.
    /// Returns whether more may be waiting (the look stopped at the room it had, or failed).
    async fn read_more(&self, lanes: &Arc<Mutex<Lanes>>) -> bool {
        let (after, room) = {
            let l = lock(lanes);
            (l.cursor, HOLD.saturating_sub(l.held))
        };
        if room == 0 {
            return true;
        }
        match self
            .store
            .call(move |s| s.pending_events_after(after, room))
            .await
        {
            Ok(events) => {
                let full = events.len() >= room;
                lock(lanes).add(events);
                full
            }
            Err(e) => {
                tracing::error!(error = %e, "dispatcher cannot read pending events");
                true
            }
        }
    }

    /// Starts a task for each ready lane, while slots are free.
    fn start_lanes(
        &self,
        lanes: &Arc<Mutex<Lanes>>,
        permits: &Arc<Semaphore>,
        lane_done: &Arc<Notify>,
        tasks: &TaskTracker,
        cancel: &CancellationToken,
    ) {
        loop {
            let Ok(permit) = permits.clone().try_acquire_owned() else {
                return; // every slot is taken; a finishing lane wakes the loop
            };
            let (lane, events) = {
                let mut l = lock(lanes);
                let Some(lane) = l.ready.pop_front() else {
                    return;
                };
                let events = l.waiting.remove(&lane).unwrap_or_default();
                l.busy.insert(lane.clone());
                (lane, events)
            };
            let this = self.clone();
            let (lanes, lane_done, cancel) = (lanes.clone(), lane_done.clone(), cancel.clone());
            tasks.spawn(async move {
                let total = events.len();
                let unfinished = this.run_lane(events, &cancel).await;
                let done = total - unfinished.len();
                lock(&lanes).finished(
                    lane,
                    done,
                    if cancel.is_cancelled() {
                        Vec::new()
                    } else {
                        unfinished
                    },
                );
                drop(permit);
                lane_done.notify_one();
            });
        }
    }

    /// Handles one lane's events in order; stops at the first that cannot be committed, so
    /// that no later event of the contact overtakes it, and gives back those not done.
    async fn run_lane(
        &self,
        events: VecDeque<StoredEvent>,
        cancel: &CancellationToken,
    ) -> Vec<StoredEvent> {
        let mut events = events.into_iter();
        while let Some(ev) = events.next() {
            if cancel.is_cancelled() {
                return std::iter::once(ev).chain(events).collect();
            }
            let (id, user) = (ev.id, ev.user.clone());
            crate::metrics::dispatch_lag(crate::store::now_ms() - ev.created_at_ms);
            let set = self.registry.snapshot();
            // On the worker, within its budget; what does not fit runs again on the pool.
            let mut on_worker = None;
            if self.placement.runs_on_worker(&user, &ev.kind, &set) {
                let run =
                    std::panic::AssertUnwindSafe(|| self.timed_run(&ev, &set, Some(WORKER_BUDGET)));
                on_worker = match std::panic::catch_unwind(run) {
                    Ok(Some(out)) => Some(Ok(out)),
                    Ok(None) => None,
                    Err(p) => {
                        self.placement.record(&user, &ev.kind, &set, Took::SLOW);
                        Some(Err(panic_text(p.as_ref())))
                    }
                };
            }
            let ran = match on_worker {
                Some(out) => out.map(|out| (ev, out)),
                None => {
                    let this = self.clone();
                    tokio::task::spawn_blocking(move || {
                        let out = this.timed_run(&ev, &set, None);
                        (ev, out)
                    })
                    .await
                    .map_err(|e| e.to_string())
                    .and_then(|(ev, out)| {
                        out.map(|out| (ev, out))
                            .ok_or_else(|| "a run without a budget was cut short".to_string())
                    })
                }
            };
            let (ev, (effects, runs)) = match ran {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!(event_id = id, error = %e, "dispatch task failed; the event stays pending until the gate restarts");
                    return events.collect();
                }
            };
            let scheduled = !effects.schedules.is_empty();
            match self.store.complete_event(id, user, effects, runs).await {
                Ok(queued) => {
                    if queued > 0 {
                        self.sender_wake.notify_one();
                    }
                    if scheduled {
                        self.schedule_wake.notify_one();
                    }
                }
                Err(e) if e.is_state_conflict() => {
                    // Nothing was written: the event runs again at once, with the value as
                    // another contact's run left it.
                    tracing::debug!(event_id = id, error = %e, "a dispatch read a value changed meanwhile; runs again");
                    return std::iter::once(ev).chain(events).collect();
                }
                Err(e) => {
                    tracing::error!(event_id = id, error = %e, "cannot commit a dispatch; will retry");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    return std::iter::once(ev).chain(events).collect();
                }
            }
        }
        Vec::new()
    }

    /// [`Dispatcher::run_rules`], timed for the [`Placement`] of the user's next events.
    fn timed_run(
        &self,
        ev: &StoredEvent,
        set: &Arc<RuleSet>,
        budget: Option<Duration>,
    ) -> Option<(Effects, Vec<crate::store::RunRecord>)> {
        let (t0, cpu0) = (Instant::now(), thread_cpu());
        let out = self.run_rules(ev, set, budget);
        let took = Took {
            cpu: thread_cpu().saturating_sub(cpu0),
            wall: t0.elapsed(),
        };
        if Arc::ptr_eq(set, &self.registry.snapshot()) {
            self.placement.record(&ev.user, &ev.kind, set, took);
        }
        out
    }

    /// Runs every matching rule of `rules` for one event: what they did, to commit in one
    /// transaction, and their traces. With a `budget`, each run is cut off at it, and `None`
    /// says a run did not fit: nothing of the attempt counts (a run only collects what it
    /// would do, and its rules are not ones that may export), and the event is run again
    /// without a budget.
    fn run_rules(
        &self,
        ev: &StoredEvent,
        rules: &RuleSet,
        budget: Option<Duration>,
    ) -> Option<(Effects, Vec<crate::store::RunRecord>)> {
        struct InFlight<'a>(&'a AtomicUsize);
        impl Drop for InFlight<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::SeqCst);
            }
        }
        self.runs_in_flight.fetch_add(1, Ordering::SeqCst);
        let _in_flight = InFlight(&self.runs_in_flight);
        let user = self.users.get(&ev.user).cloned();
        let permissions = user.as_ref().map(|u| &u.config.permissions);
        let mut effects = Effects::default();
        let mut runs = Vec::new();
        // What the event's effects are keyed with (see `runner::effects`).
        let prefix = format!("ev{}", ev.id);
        for project in rules.for_user(&ev.user) {
            if !project
                .rules
                .iter()
                .any(|r| r.trigger.matches_kind(&ev.kind))
            {
                continue;
            }
            let store_host = Arc::new(StoreHost {
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
            let host = Arc::new(Recording::new(store_host, &project.name));
            let mut ctx = runner::context(&self.engine, project, permissions, host.clone());
            ctx.now = self.clock.now();
            ctx.key_prefix = Some(prefix.clone());
            if let Some(b) = budget {
                ctx.timeout = ctx.timeout.min(b);
            }
            for rule in project
                .rules
                .iter()
                .filter(|r| r.trigger.matches_kind(&ev.kind))
            {
                let res =
                    runner::run_rule(&self.engine, project, rule, &ev.map, None, &ev.kind, &ctx);
                if budget.is_some_and(|b| res.record.duration_us as u128 >= b.as_micros()) {
                    return None;
                }
                runner::effects(project, rule, res.actions, &prefix, &mut effects);
                runs.push(res.record);
            }
            effects.reads.extend(host.take());
        }
        for r in &runs {
            runner::count(&ev.user, r);
            if r.outcome == "ok" {
                tracing::info!(user = %ev.user, project = %r.project, rule = %r.rule, message_id = ev.map.get("id").and_then(|v| v.as_str()).unwrap_or(""), event_id = ev.id, actions = r.actions, "rule ran");
            }
        }
        if let Some(read) = self.read_receipt(ev) {
            effects.outbound.push(read);
        }
        Some((effects, runs))
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

/// What a panic said, as a blocking task's join error says it.
fn panic_text(p: &(dyn std::any::Any + Send)) -> String {
    let what = p
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic".into());
    format!("panicked: {what}")
}

#[cfg(test)]
mod tests {
    use super::{PROVEN, Placement, QUICK, Took, WAITED};
    use crate::rules::RuleSet;
    use std::sync::Arc;
    use std::time::Duration;

    fn set() -> Arc<RuleSet> {
        Arc::new(RuleSet {
            projects: Vec::new(),
        })
    }

    const FAST: Took = Took {
        cpu: Duration::from_micros(30),
        wall: Duration::from_micros(40),
    };

    #[test]
    fn a_users_rules_go_to_the_worker_after_proven_quick_events_and_back_at_a_slow_one() {
        let (p, s) = (Placement::default(), set());
        for i in 0..PROVEN {
            assert!(
                !p.on_worker("olga", "message", &s),
                "not yet, after {i} quick events"
            );
            p.record("olga", "message", &s, FAST);
        }
        assert!(p.on_worker("olga", "message", &s));
        assert!(
            !p.on_worker("azarya", "message", &s),
            "each user proves their own rules"
        );
        let busy = Took {
            cpu: QUICK,
            wall: QUICK,
        };
        p.record("olga", "message", &s, busy);
        assert!(
            !p.on_worker("olga", "message", &s),
            "an event of {QUICK:?} of CPU is not quick"
        );
        for _ in 0..PROVEN - 1 {
            p.record("olga", "message", &s, FAST);
        }
        assert!(
            !p.on_worker("olga", "message", &s),
            "the streak starts over"
        );
        p.record("olga", "message", &s, FAST);
        assert!(p.on_worker("olga", "message", &s));
        // Paused by the system, not busy: still quick. Waiting long: not.
        let paused = Took {
            cpu: FAST.cpu,
            wall: Duration::from_millis(5),
        };
        p.record("olga", "message", &s, paused);
        assert!(p.on_worker("olga", "message", &s));
        let waited = Took {
            cpu: FAST.cpu,
            wall: WAITED,
        };
        p.record("olga", "message", &s, waited);
        assert!(!p.on_worker("olga", "message", &s));
    }

    #[test]
    fn the_cpu_time_of_a_thread_counts_its_work_not_its_sleep() {
        let t0 = super::thread_cpu();
        std::thread::sleep(Duration::from_millis(30));
        let slept = super::thread_cpu() - t0;
        let t1 = super::thread_cpu();
        let until = std::time::Instant::now() + Duration::from_millis(30);
        let mut spins = 0u64;
        while std::time::Instant::now() < until {
            spins = std::hint::black_box(spins + 1);
        }
        let worked = super::thread_cpu() - t1;
        assert!(
            slept < Duration::from_millis(10),
            "asleep: {slept:?} of CPU"
        );
        assert!(
            worked > slept,
            "30 ms of work took {worked:?} of CPU, asleep {slept:?}"
        );
    }

    #[test]
    fn each_kind_of_event_proves_itself() {
        let (p, s) = (Placement::default(), set());
        for _ in 0..PROVEN {
            p.record("olga", "status", &s, FAST);
        }
        assert!(p.on_worker("olga", "status", &s));
        assert!(
            !p.on_worker("olga", "message", &s),
            "statuses nobody handles say nothing of the message rules"
        );
    }

    #[test]
    fn a_new_rule_set_starts_every_user_over() {
        let (p, old, new) = (Placement::default(), set(), set());
        for _ in 0..PROVEN {
            p.record("olga", "message", &old, FAST);
        }
        assert!(p.on_worker("olga", "message", &old));
        assert!(
            !p.on_worker("olga", "message", &new),
            "a reloaded script is timed again"
        );
        p.record("olga", "message", &new, FAST);
        assert!(!p.on_worker("olga", "message", &old));
        assert!(!p.on_worker("olga", "message", &new));
        for _ in 1..PROVEN {
            p.record("olga", "message", &new, FAST);
        }
        assert!(p.on_worker("olga", "message", &new));
    }
}
