//! Prometheus metrics (prometheus-client, OpenMetrics text). Counters and histograms live in
//! one process-wide registry and are bumped by one-line calls where things happen (webhook
//! handler, runner, sender, scheduler, watcher). Gauges that describe the store (outbox depth,
//! dispatch backlog, schedule lag) and token expiry are computed at scrape time, so they are
//! never stale. Labels carry user, rule and outcome names, never a secret or a phone number.

use crate::store::{Store, now_ms};
use crate::users::Users;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::{encode_eof, encode_registry};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::OnceLock;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

/// The content type of [`render`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// The content type of [`to_prometheus_text`]'s output.
pub const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WebhookLabels {
    user: String,
    field: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RunLabels {
    user: String,
    project: String,
    rule: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RuleLabels {
    user: String,
    project: String,
    rule: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SendLabels {
    user: String,
    outcome: String,
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UserLabels {
    user: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DepthLabels {
    user: String,
    state: String,
}

type SecondsGauge = Gauge<f64, AtomicU64>;
type HistFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// The process-wide counters and histograms.
struct Metrics {
    registry: Registry,
    webhooks: Family<WebhookLabels, Counter>,
    ack: Histogram,
    dispatch_lag: Histogram,
    runs: Family<RunLabels, Counter>,
    run_seconds: HistFamily<RuleLabels>,
    sends: Family<SendLabels, Counter>,
    schedule_lag: Histogram,
    reloads: Family<OutcomeLabels, Counter>,
}

/// 1 ms … ~33 s.
fn fast_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

/// 10 ms … ~1.5 h.
fn slow_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.01, 3.0, 14))
}

fn metrics() -> &'static Metrics {
    static M: OnceLock<Metrics> = OnceLock::new();
    M.get_or_init(|| {
        let mut r = Registry::default();
        let m = Metrics {
            webhooks: Family::default(),
            ack: fast_buckets(),
            dispatch_lag: slow_buckets(),
            runs: Family::default(),
            run_seconds: Family::new_with_constructor(fast_buckets),
            sends: Family::default(),
            schedule_lag: slow_buckets(),
            reloads: Family::default(),
            registry: Registry::default(),
        };
        r.register(
            "wagate_webhooks_received",
            "Webhook requests by user, Meta field and outcome (stored, duplicate, foreign, unauthorized, bad_request, unknown_user, unavailable)",
            m.webhooks.clone(),
        );
        r.register(
            "wagate_webhook_ack_seconds",
            "Time from a webhook's arrival to its answer (the 200 comes after the commit)",
            m.ack.clone(),
        );
        r.register(
            "wagate_dispatch_lag_seconds",
            "Time from an event's commit to the start of its dispatch",
            m.dispatch_lag.clone(),
        );
        r.register(
            "wagate_rule_runs",
            "Rule runs by user, project, rule and outcome (ok, skipped, error)",
            m.runs.clone(),
        );
        r.register(
            "wagate_rule_run_seconds",
            "Duration of rule runs",
            m.run_seconds.clone(),
        );
        r.register(
            "wagate_sends",
            "Send attempts by user, outcome (sent, retry, failed, refused, token_invalid) and Graph error code",
            m.sends.clone(),
        );
        r.register(
            "wagate_schedule_lag_seconds",
            "How late timed rules and schedule() calls fired after their instant",
            m.schedule_lag.clone(),
        );
        r.register(
            "wagate_reloads",
            "Rule reloads by outcome (live, unchanged, rejected)",
            m.reloads.clone(),
        );
        Metrics { registry: r, ..m }
    })
}

/// A webhook request was answered. `field` is Meta's `changes[].field` of its first event.
pub fn webhook(user: &str, field: &str, outcome: &str) {
    let l = WebhookLabels {
        user: user.into(),
        field: field.into(),
        outcome: outcome.into(),
    };
    metrics().webhooks.get_or_create(&l).inc();
}

/// A webhook was answered this long after it arrived.
pub fn ack(elapsed: Duration) {
    metrics().ack.observe(elapsed.as_secs_f64());
}

/// An event started its dispatch `lag_ms` after its commit.
pub fn dispatch_lag(lag_ms: i64) {
    metrics()
        .dispatch_lag
        .observe(lag_ms.max(0) as f64 / 1000.0);
}

/// A rule ran.
pub fn rule_run(user: &str, project: &str, rule: &str, outcome: &str, duration_us: i64) {
    let m = metrics();
    let rl = RuleLabels {
        user: user.into(),
        project: project.into(),
        rule: rule.into(),
    };
    m.run_seconds
        .get_or_create(&rl)
        .observe(duration_us.max(0) as f64 / 1e6);
    let l = RunLabels {
        user: rl.user,
        project: rl.project,
        rule: rl.rule,
        outcome: outcome.into(),
    };
    m.runs.get_or_create(&l).inc();
}

/// A send attempt ended; `code` is Graph's error code, if it gave one.
pub fn send(user: &str, outcome: &str, code: Option<i64>) {
    let l = SendLabels {
        user: user.into(),
        outcome: outcome.into(),
        code: code.map(|c| c.to_string()).unwrap_or_default(),
    };
    metrics().sends.get_or_create(&l).inc();
}

/// A timed firing or scheduled call ran `late` after its instant.
pub fn schedule_lag(late: chrono::Duration) {
    let secs = late.num_milliseconds().max(0) as f64 / 1000.0;
    metrics().schedule_lag.observe(secs);
}

/// A reload ended with `outcome`.
pub fn reload(outcome: &str) {
    let l = OutcomeLabels {
        outcome: outcome.into(),
    };
    metrics().reloads.get_or_create(&l).inc();
}

/// The store's and the users' gauges, read now.
struct Scrape {
    /// Each user's token expiry, as far as known.
    expiry: Vec<(String, Option<chrono::DateTime<chrono::Utc>>)>,
    depth: Vec<(String, String, i64)>,
    pending: (i64, Option<i64>),
    overdue: Option<i64>,
}

/// Every metric in OpenMetrics text: the counters and histograms, then gauges read from the
/// store and the users' credentials at this moment.
pub async fn render(store: &Store, users: &Users) -> String {
    let now = now_ms();
    let creds: Vec<_> = users.iter().map(|(n, u)| (n.clone(), u.creds())).collect();
    let scrape = store
        .call(move |s| {
            Ok(Scrape {
                expiry: creds
                    .iter()
                    .map(|(n, c)| Ok((n.clone(), s.token_expiry(n, c)?)))
                    .collect::<Result<_, crate::store::StoreError>>()?,
                depth: s.outbox_depth()?,
                pending: s.pending_backlog()?,
                overdue: s.oldest_overdue(now)?,
            })
        })
        .await;
    let mut out = String::new();
    let _ = encode_registry(&mut out, &metrics().registry);
    let mut r = Registry::default();
    let expiries = match &scrape {
        Ok(s) => s.expiry.clone(),
        Err(_) => Vec::new(),
    };
    match scrape {
        Ok(s) => register_store_gauges(&mut r, &s, users, now),
        Err(e) => tracing::error!(error = %e, "metrics: cannot read the store"),
    }
    let expiry: Family<UserLabels, SecondsGauge> = Family::default();
    let now_s = now as f64 / 1000.0;
    for (name, t) in expiries {
        // Absent expiry: no sample (a system-user token that never expires, or not known yet).
        if let Some(t) = t {
            let left = t.timestamp_millis() as f64 / 1000.0 - now_s;
            let l = UserLabels { user: name.clone() };
            expiry.get_or_create(&l).set(left);
        }
    }
    r.register(
        "wagate_token_expires_in_seconds",
        "Seconds until each user's access token expires (negative: expired); no sample when unknown",
        expiry,
    );
    let _ = encode_registry(&mut out, &r);
    let _ = encode_eof(&mut out);
    out
}

fn register_store_gauges(r: &mut Registry, s: &Scrape, users: &Users, now: i64) {
    let depth: Family<DepthLabels, Gauge> = Family::default();
    // Every served user shows every state, so that a drained queue reads 0, not absent.
    for (name, _) in users.iter() {
        for state in ["queued", "sending", "sent", "failed"] {
            let l = DepthLabels {
                user: name.clone(),
                state: state.into(),
            };
            depth.get_or_create(&l).set(0);
        }
    }
    for (user, state, n) in &s.depth {
        let l = DepthLabels {
            user: user.clone(),
            state: state.clone(),
        };
        depth.get_or_create(&l).set(*n);
    }
    r.register(
        "wagate_outbox_depth",
        "Outbox rows by user and state",
        depth,
    );
    let pending: Gauge = Gauge::default();
    pending.set(s.pending.0);
    r.register(
        "wagate_events_pending",
        "Committed events waiting for dispatch",
        pending,
    );
    let age = |t: Option<i64>| t.map(|t| (now - t).max(0) as f64 / 1000.0).unwrap_or(0.0);
    let backlog: SecondsGauge = Gauge::default();
    backlog.set(age(s.pending.1));
    r.register(
        "wagate_dispatch_backlog_seconds",
        "Age of the oldest event waiting for dispatch (0 when none waits)",
        backlog,
    );
    let overdue: SecondsGauge = Gauge::default();
    overdue.set(age(s.overdue));
    r.register(
        "wagate_schedule_overdue_seconds",
        "How long the most overdue timed rule or schedule() call has been waiting to fire (0 when none)",
        overdue,
    );
}

/// OpenMetrics text as the classic Prometheus text format (0.0.4), for scrapers that do not
/// ask for OpenMetrics: counters are typed under their `_total` name and there is no `# EOF`.
pub fn to_prometheus_text(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let meta = ["# HELP ", "# TYPE "]
            .into_iter()
            .find_map(|p| line.strip_prefix(p).map(|rest| (p, rest)));
        match meta {
            Some((prefix, rest)) => {
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                let suffix = if counters.contains(name) {
                    "_total"
                } else {
                    ""
                };
                out.push_str(&format!("{prefix}{name}{suffix} {tail}\n"));
            }
            None => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::to_prometheus_text;

    #[test]
    fn classic_text_types_counters_by_their_total_name() {
        let om = "# HELP wagate_x Things.\n# TYPE wagate_x counter\nwagate_x_total{user=\"olga\"} 2\n# HELP wagate_y_seconds Lag.\n# TYPE wagate_y_seconds gauge\nwagate_y_seconds 0.5\n# EOF\n";
        assert_eq!(
            to_prometheus_text(om),
            "# HELP wagate_x_total Things.\n# TYPE wagate_x_total counter\nwagate_x_total{user=\"olga\"} 2\n# HELP wagate_y_seconds Lag.\n# TYPE wagate_y_seconds gauge\nwagate_y_seconds 0.5\n"
        );
    }
}
