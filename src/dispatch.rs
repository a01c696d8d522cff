//! The dispatcher: takes committed events in arrival order, runs the rules of the event's
//! user whose trigger and `if:` match, and commits the runs' actions (outbox rows with
//! idempotency keys), their traces and the event's completion in one transaction.
//! A crash before that commit leaves the event pending; the re-run enqueues nothing twice.

use crate::rules::{Project, Rule, RuleRegistry};
use crate::script::{Action, RunContext, ScriptEngine};
use crate::store::{NewOutbound, RunRecord, Store, StoredEvent, now_ms};
use crate::users::Users;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

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
}

impl Dispatcher {
    /// Dispatches until `cancel` fires; finishes the event in hand first.
    pub async fn run(self, cancel: CancellationToken) {
        loop {
            if cancel.is_cancelled() {
                return;
            }
            let batch = match self.store.call(|s| s.pending_events(64)).await {
                Ok(b) => b,
                Err(e) => {
                    tracing::error!(error = %e, "dispatcher cannot read pending events");
                    Vec::new()
                }
            };
            if batch.is_empty() {
                tokio::select! {
                    _ = self.wake.notified() => {}
                    _ = cancel.cancelled() => return,
                    // A safety net: events committed by another process are found too.
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
                continue;
            }
            for ev in batch {
                let this = self.clone();
                let id = ev.id;
                let done = tokio::task::spawn_blocking(move || this.dispatch_one(ev)).await;
                match done {
                    Ok(Ok(queued)) if queued > 0 => self.sender_wake.notify_one(),
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => {
                        tracing::error!(event_id = id, error = %e, "cannot commit a dispatch; will retry");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        break;
                    }
                    Err(e) => tracing::error!(event_id = id, error = %e, "dispatch task failed"),
                }
            }
        }
    }

    /// Runs every matching rule for one event and commits the result. Returns rows queued.
    fn dispatch_one(&self, ev: StoredEvent) -> Result<usize, crate::store::StoreError> {
        let rules = self.registry.snapshot();
        let may_send = self
            .users
            .get(&ev.user)
            .map(|u| u.config.permissions.send)
            .unwrap_or(false);
        let ctx = RunContext {
            user: ev.user.clone(),
            may_send,
            timeout: self.engine.timeout(),
        };
        let mut outbound = Vec::new();
        let mut runs = Vec::new();
        for project in rules.for_user(&ev.user) {
            for rule in project
                .rules
                .iter()
                .filter(|r| r.trigger.matches_kind(&ev.kind))
            {
                let (record, sends) = self.run_rule(project, rule, &ev, &ctx);
                for (ordinal, (recipient, msg_type, body)) in sends.into_iter().enumerate() {
                    outbound.push(NewOutbound {
                        idem_key: format!("ev{}/{}/{}/{ordinal}", ev.id, project.name, rule.name),
                        recipient,
                        msg_type,
                        body,
                    });
                }
                runs.push(record);
            }
        }
        self.store.complete_event(ev.id, &ev.user, &outbound, &runs)
    }

    fn run_rule(
        &self,
        project: &Project,
        rule: &Rule,
        ev: &StoredEvent,
        ctx: &RunContext,
    ) -> (RunRecord, Vec<(String, String, serde_json::Value)>) {
        let started_at_ms = now_ms();
        let t0 = Instant::now();
        let mut record = RunRecord {
            project: project.name.clone(),
            rule: rule.name.clone(),
            outcome: "ok",
            error: None,
            logs: Vec::new(),
            actions: 0,
            started_at_ms,
            duration_us: 0,
        };
        if let Some(cond) = &rule.condition {
            match self.engine.eval_condition(cond, &ev.map, ctx) {
                Ok(true) => {}
                Ok(false) => {
                    record.outcome = "skipped";
                    record.logs.push("`if:` was false".into());
                    record.duration_us = t0.elapsed().as_micros() as i64;
                    return (record, Vec::new());
                }
                Err(e) => {
                    record.outcome = "error";
                    record.error = Some(e);
                    record.duration_us = t0.elapsed().as_micros() as i64;
                    return (record, Vec::new());
                }
            }
        }
        let out = self.engine.run(
            &rule.ast,
            rule.call.as_deref(),
            &ev.map,
            ctx,
            &rule.script_shown,
        );
        record.duration_us = t0.elapsed().as_micros() as i64;
        record.logs = out.logs;
        if let Some(e) = out.error {
            tracing::warn!(user = %ev.user, project = %project.name, rule = %rule.name, error = %e, "rule run failed");
            record.outcome = "error";
            record.error = Some(e);
            return (record, Vec::new());
        }
        let sends: Vec<_> = out
            .actions
            .into_iter()
            .map(|a| match a {
                Action::Send {
                    recipient,
                    msg_type,
                    body,
                } => (recipient, msg_type, body),
            })
            .collect();
        record.actions = sends.len();
        tracing::info!(user = %ev.user, project = %project.name, rule = %rule.name, event_id = ev.id, sends = sends.len(), "rule ran");
        (record, sends)
    }
}
