//! The sender: takes due outbox rows and POSTs each to Graph with its user's token, at most
//! `max_in_flight` at once and one at a time per recipient (so a contact's messages keep their
//! order), within each number's rate limit and each recipient's pacing. Before a call it
//! refuses what cannot succeed: a free-form message outside the contact's 24-hour window, a
//! row older than its maximum age, a token Graph already rejected. After a call it records
//! the wamid, a retry time (backoff with jitter, Retry-After honoured), or a failure with a
//! reason a user can read. Rows found in `sending` at start were in flight when the gate died;
//! they go back to the queue: the one narrow window in which a message can be sent twice.

mod file;
pub mod limit;
mod once;
pub mod policy;

use crate::graph::{GraphClient, GraphError};
use crate::store::{OutboxRow, SendCheck, Store, StoreError, now_ms};
use crate::users::{UserRuntime, Users};
use limit::{Held, Limiter};
use policy::{Limits, Verdict};
use sha2::{Digest, Sha256};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// What the sender needs; cheap handles.
#[derive(Clone)]
pub struct Sender {
    pub store: Store,
    pub graph: GraphClient,
    pub users: Users,
    pub wake: Arc<Notify>,
    pub limits: Limits,
    /// Graph calls at once.
    pub max_in_flight: usize,
    /// Local files already uploaded: media ids by (user, sha256 of the content).
    pub uploads: Uploads,
    /// Tokens Graph rejected while this sender ran: by user, (fingerprint, why). Rows claimed
    /// before the rejection was recorded are refused without a call.
    pub rejected: Rejected,
}

/// See [`Sender::rejected`].
pub type Rejected = Arc<Mutex<HashMap<String, (String, String)>>>;

/// Media ids of uploaded files by (user, sha256), with when they were uploaded. Uploads hold
/// the lock, so a bulk send of one file uploads it once.
pub type Uploads = Arc<tokio::sync::Mutex<HashMap<(String, String), (String, std::time::Instant)>>>;

/// Uploaded media lives 30 days at Meta; the gate re-uploads after 29.
const UPLOAD_TTL: Duration = Duration::from_secs(29 * 24 * 3600);

/// A token's fingerprint: enough to tell tokens apart, nothing to rebuild one from.
pub fn fingerprint(token: &str) -> String {
    hex::encode(&Sha256::digest(token.as_bytes())[..8])
}

pub use crate::domain::window::contact_key;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Why a file could not be uploaded.
enum Upload {
    /// It cannot be sent at all: why.
    Refused(String),
    /// Graph refused or did not answer: handled as a failed send.
    Graph(GraphError),
}

/// Rows claimed at once (in `sending`, each waiting for or making its call), per call at once:
/// the claim of the next rows is under way while the claimed ones are sent.
const CLAIMED_PER_CALL: usize = 4;

/// The sender's two bounds: Graph calls at once, and rows claimed at once.
struct Slots {
    calls: Arc<Semaphore>,
    claims: Arc<Semaphore>,
}

/// One of the `max_in_flight` Graph calls at once. It is given back as soon as Graph has
/// answered, before the answer is recorded: the recipient stays busy until then, so the
/// contact's order holds, while the slot already serves another contact.
struct Slot {
    _permit: tokio::sync::OwnedSemaphorePermit,
    done: Arc<Notify>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.done.notify_one();
    }
}

/// A user's rate limits, as its file sets them.
fn rates_of(u: &UserRuntime) -> limit::Rates {
    limit::Rates {
        per_second: u.config.rate_limit,
        recipient_burst: f64::from(u.config.recipient_burst),
        recipient_every: u.config.recipient_every,
    }
}

/// The row must not be sent: why.
enum Refusal {
    Now(String),
}

impl Sender {
    /// Sends until `cancel` fires; requests in flight are finished first.
    pub async fn run(self, cancel: CancellationToken) {
        match self.store.call(|s| s.recover_inflight()).await {
            Ok(n) if n > 0 => tracing::warn!(
                rows = n,
                "re-queued sends that were in flight when the gate stopped"
            ),
            Ok(_) => {}
            Err(e) => tracing::error!(error = %e, "cannot recover in-flight sends"),
        }
        let limiter = Arc::new(Mutex::new(Limiter::default()));
        let busy: Arc<Mutex<HashSet<(String, String)>>> = Arc::default();
        let slots = Slots {
            calls: Arc::new(Semaphore::new(self.max_in_flight.max(1))),
            claims: Arc::new(Semaphore::new(self.max_in_flight.max(1) * CLAIMED_PER_CALL)),
        };
        let done = Arc::new(Notify::new());
        let tasks = TaskTracker::new();
        // Whether the outbox may hold rows to start: new rows were committed (a wake), rows
        // were left at the last look (a busy recipient, no free slot, a full look), or the
        // time to the next due row is up. A send that ends frees a slot: only then does it
        // call for a look.
        let mut look = true;
        // When the next row comes due (or the number's rate lets more go): a fixed instant, so
        // that sends ending meanwhile do not put it off.
        let mut until = tokio::time::Instant::now();
        while !cancel.is_cancelled() {
            if look {
                let (started, left, hold, looked_at) = self
                    .start_due(&limiter, &busy, &slots, &done, &tasks, &cancel)
                    .await;
                look = left;
                if started > 0 && look {
                    continue;
                }
                {
                    let mut l = lock(&limiter);
                    l.prune(tokio::time::Instant::now());
                    l.deferred.prune(now_ms());
                }
                // Rows due by the look were seen: started, or left for a slot or a recipient
                // to free up (whose end wakes this loop). Those due since then are not.
                let next = self
                    .store
                    .call(move |s| s.next_due_after(looked_at))
                    .await
                    .ok()
                    .flatten();
                let wait = hold
                    .or_else(|| {
                        next.map(|t| Duration::from_millis((t - now_ms()).clamp(0, 1000) as u64))
                    })
                    .unwrap_or(Duration::from_secs(1));
                until = tokio::time::Instant::now() + wait;
            }
            tokio::select! {
                _ = self.wake.notified() => look = true,
                _ = done.notified() => {}
                _ = cancel.cancelled() => break,
                _ = tokio::time::sleep_until(until) => look = true,
            }
        }
        tasks.close();
        tasks.wait().await;
    }

    /// Claims and starts the due rows it can (one at a time per recipient, within the rate
    /// limits and the free slots). Returns how many it started, whether rows were left for a
    /// later look, how long the number's rate limit holds the rest, and the time of the look
    /// (unix ms): rows due by then were seen.
    async fn start_due(
        &self,
        limiter: &Arc<Mutex<Limiter>>,
        busy: &Arc<Mutex<HashSet<(String, String)>>>,
        slots: &Slots,
        done: &Arc<Notify>,
        tasks: &TaskTracker,
        cancel: &CancellationToken,
    ) -> (usize, bool, Option<Duration>, i64) {
        // Enough to fill the free slots, with room for rows whose recipient is busy: a look
        // at more would be read again at the next turn.
        let limit = (slots.claims.available_permits() * 2 + 32).min(512);
        let looked_at = now_ms();
        let due = self
            .store
            .call(move |s| s.due_outbox(looked_at, limit))
            .await
            .unwrap_or_else(|e| {
                tracing::error!(error = %e, "sender cannot read the outbox");
                Vec::new()
            });
        let mut left = due.len() >= limit;
        let mut started = 0;
        let mut hold: Option<Duration> = None;
        // Rows to claim together (one transaction), each with its recipient and permit.
        let mut batch = Vec::new();
        for (id, user, recipient) in due {
            if cancel.is_cancelled() {
                break;
            }
            // A recipient as every row keys it: `+33 6 12…` and `33612…` are one contact, one
            // lane and one pacing, whichever way each send wrote the number.
            let recipient = crate::domain::window::contact_key(&recipient);
            let key = (user.clone(), recipient.clone());
            if lock(busy).contains(&key) {
                left = true;
                continue; // one at a time per recipient, in order
            }
            if let Some(u) = self.users.get(&user) {
                let number = &u.config.phone_number_id;
                // Whether it could go now (the tokens are taken at its call: see `paced`), or
                // until when pacing puts it off; a row behind one put off waits for it, and is
                // never put before it (see `limit::Deferred`).
                let put_off = {
                    let mut l = lock(limiter);
                    let at = match l.deferred.held(number, &recipient, looked_at) {
                        Some(at) => Some(at),
                        None => match l.ready(
                            number,
                            &recipient,
                            &rates_of(u),
                            tokio::time::Instant::now(),
                            false,
                        ) {
                            Ok(()) => None,
                            Err(Held::Number(d)) => {
                                hold = Some(d);
                                break;
                            }
                            // Rounded up: a row put off to a millisecond before its recipient's
                            // next token would find it held again.
                            Err(Held::Recipient(d)) => {
                                Some(now_ms() + d.as_nanos().div_ceil(1_000_000) as i64)
                            }
                        },
                    };
                    at.map(|at| l.deferred.put_off(number, &recipient, at))
                };
                if let Some(at) = put_off {
                    if self
                        .store
                        .call(move |s| s.defer_outbox(id, at))
                        .await
                        .is_err()
                    {
                        left = true;
                    }
                    continue;
                }
            }
            // As many claimed at once as may wait for a call: send what is claimed so far, or
            // wait for a claim to end.
            let permit = match slots.claims.clone().try_acquire_owned() {
                Ok(p) => p,
                Err(_) if !batch.is_empty() => {
                    left = true;
                    break;
                }
                Err(_) => match slots.claims.clone().acquire_owned().await {
                    Ok(p) => p,
                    Err(_) => break,
                },
            };
            lock(busy).insert(key.clone());
            batch.push((id, key, permit));
        }
        let ids: Vec<i64> = batch.iter().map(|(id, _, _)| *id).collect();
        // Each user's token, by fingerprint: the claim reads what the store says of it.
        let fingerprints: HashMap<String, String> = batch
            .iter()
            .filter_map(|(_, (user, _), _)| {
                let u = self.users.get(user)?;
                Some((user.clone(), fingerprint(u.creds().access_token.expose())))
            })
            .collect();
        let claimed = match self
            .store
            .claim_outbox_many(&ids, now_ms(), fingerprints, policy::needs_window)
            .await
        {
            Ok(rows) => rows,
            Err(e) => {
                tracing::error!(error = %e, rows = batch.len(), "sender cannot claim rows");
                left = true;
                Vec::new()
            }
        };
        let mut claimed: HashMap<i64, (OutboxRow, SendCheck)> =
            claimed.into_iter().map(|r| (r.0.id, r)).collect();
        for (id, key, permit) in batch {
            let Some((row, check)) = claimed.remove(&id) else {
                lock(busy).remove(&key);
                continue;
            };
            let (this, busy, done) = (self.clone(), busy.clone(), done.clone());
            let (calls, cancel, limiter) = (slots.calls.clone(), cancel.clone(), limiter.clone());
            tasks.spawn(async move {
                // A claimed row waits here for one of the calls at once, then for its number's
                // and recipient's rate; if the gate stops first, it goes back to the queue
                // unsent.
                let call = tokio::select! {
                    biased;
                    _ = cancel.cancelled() => None,
                    call = calls.acquire_owned() => call.ok(),
                };
                let call = match call {
                    Some(call) => this.paced(&limiter, &row, &cancel).await.then_some(call),
                    None => None,
                };
                match call {
                    Some(call) => {
                        let slot = Slot { _permit: call, done: done.clone() };
                        this.send_checked(row, Some(check), Some(slot)).await;
                    }
                    None => {
                        if let Err(e) = this.store.call(move |s| s.unclaim_outbox(id)).await {
                            tracing::error!(outbox_id = id, error = %e, "cannot give back a claimed row; it is queued again at the next start");
                        }
                    }
                }
                lock(&busy).remove(&key);
                drop(permit);
                done.notify_one();
            });
            started += 1;
        }
        (started, left, hold, looked_at)
    }

    /// Waits until the row's number and recipient may take one more message, and takes it:
    /// the rate limits are charged at the call, not at the claim, so rows that waited for a
    /// call slot (Graph was slow) do not then go out above the number's rate. False if the
    /// gate stopped first.
    async fn paced(
        &self,
        limiter: &Arc<Mutex<Limiter>>,
        row: &OutboxRow,
        cancel: &CancellationToken,
    ) -> bool {
        let Some(u) = self.users.get(&row.user) else {
            return true; // not sent: `send_checked` says why
        };
        let rates = rates_of(u);
        // Each wait ends when a token has come back, so a handful of turns is the most a row
        // takes; the bound only keeps the loop finite.
        for _ in 0..10_000 {
            let taken = lock(limiter).take(
                &u.config.phone_number_id,
                &crate::domain::window::contact_key(&row.recipient),
                &rates,
                tokio::time::Instant::now(),
            );
            let wait = match taken {
                Ok(()) => return true,
                Err(Held::Number(d)) | Err(Held::Recipient(d)) => d,
            };
            tokio::select! {
                biased;
                _ = cancel.cancelled() => return false,
                _ = tokio::time::sleep(wait) => {}
            }
        }
        true
    }

    /// Remembers a token Graph rejected, before the call's slot serves another row: rows
    /// claimed before the rejection reached the store are then refused without a call.
    fn note_rejected(&self, user: &UserRuntime, row: &OutboxRow, e: &GraphError) {
        if matches!(policy::classify(e), Verdict::TokenInvalid) {
            let fp = fingerprint(user.creds().access_token.expose());
            lock(&self.rejected).insert(row.user.clone(), (fp, policy::reason(e)));
        }
    }

    /// Sends one claimed row and records the outcome (sent, retry, failed).
    pub async fn send_one(&self, row: OutboxRow) {
        self.send_checked(row, None, None).await
    }

    /// As [`Sender::send_one`], with what the store said of the row when it was claimed (or
    /// `None`: it is asked now).
    async fn send_checked(&self, row: OutboxRow, check: Option<SendCheck>, mut slot: Option<Slot>) {
        let id = row.id;
        let Some(user) = self.users.get(&row.user).cloned() else {
            let reason = format!(
                "user `{}` is not loaded (check its credentials with `wagate check`)",
                row.user
            );
            let _ = self.store.call(move |s| s.mark_failed(id, &reason)).await;
            return;
        };
        if let Some(Refusal::Now(reason)) = self.refusal(&user, &row, check).await {
            tracing::warn!(user = %row.user, rule = rule_of_key(&row.idem_key), outbox_id = id, to = %row.recipient, reason = %reason, "not sent");
            crate::metrics::send(&row.user, "refused", None);
            let _ = self.store.call(move |s| s.mark_failed(id, &reason)).await;
            return;
        }
        let mut row = row;
        if crate::domain::local_file::marker(&row.body).is_some() {
            match self.upload(&user, &row).await {
                Ok(media_id) => crate::domain::local_file::set_media_id(&mut row.body, &media_id),
                Err(Upload::Refused(reason)) => {
                    tracing::warn!(user = %row.user, outbox_id = id, reason = %reason, "not sent");
                    let _ = self.store.call(move |s| s.mark_failed(id, &reason)).await;
                    return;
                }
                Err(Upload::Graph(e)) => {
                    if let Err(e) = self.failed(&user, row, e).await {
                        tracing::error!(outbox_id = id, error = %e, "cannot record a send result");
                    }
                    return;
                }
            }
        }
        if row.msg_type == "read" {
            let result = self
                .graph
                .mark_read(
                    &user.config.phone_number_id,
                    &user.creds().access_token,
                    &row.body,
                )
                .await;
            if let Err(e) = &result {
                self.note_rejected(&user, &row, e);
            }
            drop(slot.take());
            let recorded = match result {
                Ok(()) => self.store.call(move |s| s.mark_read_sent(&row)).await,
                Err(e) => self.failed(&user, row, e).await,
            };
            if let Err(e) = recorded {
                tracing::error!(outbox_id = id, error = %e, "cannot record a send result");
            }
            return;
        }
        let result = self
            .graph
            .send_message(
                &user.config.phone_number_id,
                &user.creds().access_token,
                &row.body,
            )
            .await;
        if let Err(e) = &result {
            self.note_rejected(&user, &row, e);
        }
        drop(slot.take());
        let recorded = match result {
            Ok(acc) => {
                tracing::info!(user = %row.user, rule = rule_of_key(&row.idem_key), outbox_id = id, message_id = %acc.wamid, to = %row.recipient, "sent");
                crate::metrics::send(&row.user, "sent", None);
                self.store.mark_sent_owned(row, acc.wamid).await
            }
            Err(e) => self.failed(&user, row, e).await,
        };
        if let Err(e) = recorded {
            tracing::error!(outbox_id = id, error = %e, "cannot record a send result");
        }
    }

    /// Uploads the local file a row names (once per content and user) and returns its media id.
    async fn upload(&self, user: &UserRuntime, row: &OutboxRow) -> Result<String, Upload> {
        use crate::domain::local_file;
        let Some((kind, path, mime)) = local_file::marker(&row.body) else {
            return Err(Upload::Refused("not sent: no file named".into()));
        };
        // A rule's file must still be inside its project folder (see `file`).
        let root = row.body[kind.as_str()][local_file::MARKER]
            .get("root")
            .and_then(serde_json::Value::as_str)
            .map(std::path::PathBuf::from);
        let max = local_file::max_bytes(&kind);
        let read = {
            let (path, kind) = (std::path::PathBuf::from(&path), kind.clone());
            tokio::task::spawn_blocking(move || file::read(&path, root.as_deref(), &kind, max))
        };
        let bytes = match read.await {
            Ok(Ok(bytes)) => bytes,
            Ok(Err(why)) => return Err(Upload::Refused(why)),
            Err(e) => return Err(Upload::Refused(format!("not sent: reading {path}: {e}"))),
        };
        let key = (row.user.clone(), hex::encode(Sha256::digest(&bytes)));
        let mut cache = self.uploads.lock().await;
        if let Some((media_id, at)) = cache.get(&key)
            && at.elapsed() < UPLOAD_TTL
        {
            return Ok(media_id.clone());
        }
        let name = std::path::Path::new(&path)
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("file")
            .to_string();
        let media_id = self
            .graph
            .upload_media(
                &user.config.phone_number_id,
                &user.creds().access_token,
                bytes,
                &name,
                &mime,
            )
            .await
            .map_err(Upload::Graph)?;
        tracing::info!(user = %row.user, outbox_id = row.id, media_id = %media_id, file = %name, "uploaded a file");
        cache.insert(key, (media_id.clone(), std::time::Instant::now()));
        Ok(media_id)
    }

    /// Why a row must not be sent now, if it must not: checked before every call.
    async fn refusal(
        &self,
        user: &UserRuntime,
        row: &OutboxRow,
        check: Option<SendCheck>,
    ) -> Option<Refusal> {
        let age = Duration::from_millis((now_ms() - row.created_at).max(0) as u64);
        if age > self.limits.max_age {
            return Some(Refusal::Now(format!(
                "not sent: queued {} ago, longer than the {} a message may wait",
                crate::scheduler::humanize(age),
                crate::scheduler::humanize(self.limits.max_age)
            )));
        }
        let check = match check {
            Some(c) => c,
            None => self.look_before_sending(user, row).await,
        };
        let (mut invalid, last) = (check.token_invalid, check.last_inbound);
        if invalid.is_none() {
            // Rejected since this row's claim read the store.
            let rejected = lock(&self.rejected).get(&row.user).cloned();
            if let Some((fp, why)) = rejected
                && fp == fingerprint(user.creds().access_token.expose())
            {
                invalid = Some(why);
            }
        }
        if let Some(why) = invalid {
            return Some(Refusal::Now(format!(
                "not sent: Graph rejected this user's access token ({why}); set new credentials with `wagate creds set {}`",
                row.user
            )));
        }
        if let Some(last) = last
            && !policy::within_customer_window(last, now_ms() / 1000)
        {
            return Some(Refusal::Now(window_reason(&row.recipient, last)));
        }
        None
    }

    /// What the store says of a row's token and, if it needs the window, its recipient's last
    /// message: one look for both.
    async fn look_before_sending(&self, user: &UserRuntime, row: &OutboxRow) -> SendCheck {
        let fp = fingerprint(user.creds().access_token.expose());
        let r = row.clone();
        let looked = self
            .store
            .call(move |s| s.send_check(&r, &fp, policy::needs_window))
            .await;
        // A store that cannot answer leaves the window unproven: closed.
        looked.unwrap_or_else(|_| SendCheck {
            token_invalid: None,
            last_inbound: policy::needs_window(&row.msg_type).then_some(None),
        })
    }

    async fn failed(
        &self,
        user: &UserRuntime,
        row: OutboxRow,
        e: GraphError,
    ) -> Result<(), StoreError> {
        let id = row.id;
        let verdict = policy::classify(&e);
        let rule = rule_of_key(&row.idem_key);
        let code = match &e {
            GraphError::Api { error: Some(b), .. } => Some(b.code),
            _ => None,
        };
        let reason = policy::reason(&e);
        let age = Duration::from_millis((now_ms() - row.created_at).max(0) as u64);
        match verdict {
            Verdict::Retry | Verdict::SlowDown
                if row.attempts < self.limits.max_attempts && age < self.limits.max_age =>
            {
                let retry_after = match &e {
                    GraphError::Api { retry_after, .. } => *retry_after,
                    _ => None,
                };
                let delay = policy::next_backoff(
                    &self.limits,
                    row.attempts,
                    &verdict,
                    retry_after,
                    rand::random::<f64>(),
                );
                crate::metrics::send(&row.user, "retry", code);
                tracing::warn!(user = %row.user, rule, outbox_id = id, attempt = row.attempts, error = %reason, retry_in_ms = delay.as_millis() as u64, "send failed; will retry");
                let at = now_ms() + delay.as_millis() as i64;
                let recorded = self
                    .store
                    .call(move |s| s.mark_retry(id, at, &reason))
                    .await;
                // The loop learns of the new due time.
                self.wake.notify_one();
                recorded
            }
            Verdict::TokenInvalid => {
                crate::metrics::send(&row.user, "token_invalid", code);
                tracing::error!(user = %row.user, rule, outbox_id = id, error = %reason, "Graph rejected the access token; sends of this user stop until it is replaced");
                let (u, fp, why) = (
                    row.user.clone(),
                    fingerprint(user.creds().access_token.expose()),
                    reason.clone(),
                );
                self.store
                    .call(move |s| s.mark_token_invalid(&u, &fp, &why))
                    .await?;
                let reason = format!("after {} attempt(s): {reason}", row.attempts);
                self.store.call(move |s| s.mark_failed(id, &reason)).await
            }
            _ => {
                crate::metrics::send(&row.user, "failed", code);
                tracing::warn!(user = %row.user, rule, outbox_id = id, attempt = row.attempts, error = %reason, "send failed for good");
                let reason = format!("after {} attempt(s): {reason}", row.attempts);
                self.store.call(move |s| s.mark_failed(id, &reason)).await
            }
        }
    }
}

/// The reason a free-form message to a contact outside the window is refused: it names
/// templates, the one way to reach them.
pub fn window_reason(recipient: &str, last_inbound: Option<i64>) -> String {
    if let Some(g) = crate::domain::groups::group_of(recipient) {
        let why = crate::domain::groups::window_closed(g, last_inbound, now_ms() / 1000);
        return format!("not sent: {why}");
    }
    let when = match last_inbound {
        None => "has never written to this number".to_string(),
        Some(t) => format!(
            "last wrote {} ago",
            crate::scheduler::humanize(Duration::from_secs((now_ms() / 1000 - t).max(0) as u64))
        ),
    };
    format!(
        "not sent: {recipient} {when}, so the 24-hour customer-service window is closed; only an approved template can reach them (send(to, #{{template: \"name\", language: \"en_US\", params: [..]}}), or set fallback_template in project.yaml)"
    )
}

/// The rule that queued an outbox row, read from its idempotency key
/// (`<trigger>/<project…>/<rule>/<n>`); `""` for rows queued outside a rule.
pub fn rule_of_key(idem_key: &str) -> &str {
    let parts: Vec<&str> = idem_key.split('/').collect();
    if parts.len() >= 4 {
        parts[parts.len() - 2]
    } else {
        ""
    }
}
