//! The end-to-end steps on one gate with the echo rule: (2) replies through the outbox,
//! (3) hot reload, (4) the cost of one rule evaluation.

use super::home::{self, TempHome};
use super::{Bench, load, ms, row};
use std::sync::Arc;
use std::time::{Duration, Instant};

impl Bench {
    /// Waits until Graph has accepted `want` replies to contacts of `run` (or time is up);
    /// returns each message's event-to-send latency and the last arrival. While it waits it
    /// only counts arrivals, so that the bench takes no CPU from the gate it measures.
    async fn replies(
        &self,
        run: u32,
        want: usize,
        sent: &load::LoadResult,
        from: usize,
    ) -> (Vec<Duration>, Option<Instant>) {
        let deadline = Instant::now() + self.deadline();
        loop {
            let arrived = self.arrived().saturating_sub(from);
            if arrived >= want || Instant::now() > deadline {
                return self.collect(run, sent, from);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// How many replies Graph has accepted so far.
    fn arrived(&self) -> usize {
        self.arrivals.lock().map_or(0, |a| a.len())
    }

    /// The latencies of the replies to `run` among the arrivals after the first `from`.
    fn collect(
        &self,
        run: u32,
        sent: &load::LoadResult,
        from: usize,
    ) -> (Vec<Duration>, Option<Instant>) {
        let arrivals = self.arrivals.lock().unwrap_or_else(|p| p.into_inner());
        let mut lat = Vec::new();
        let mut last = None;
        for a in arrivals.iter().skip(from) {
            let Some(i) = home::index_of(run, &a.to) else {
                continue;
            };
            let Some(t) = sent.sent_at.get(i) else {
                continue;
            };
            let t = t.load(std::sync::atomic::Ordering::Relaxed);
            if t == 0 {
                continue;
            }
            let at = sent.base + Duration::from_nanos(t);
            lat.push(a.at.saturating_duration_since(at));
            last = Some(last.map_or(a.at, |l: Instant| l.max(a.at)));
        }
        lat.sort();
        (lat, last)
    }

    /// (2) End to end, (3) reload and (4) rule cost, on one gate with the echo rule.
    pub(super) async fn e2e(&mut self) -> anyhow::Result<()> {
        let (home, gate) = self.gate("e2e", 1).await?;
        if self.wants("e2e") {
            // The bare reference for replies: HMAC check, one POST to Graph, 200.
            let cancel = self.cancel.child_token();
            let addr = load::serve_bare(
                &self.users,
                Some(self.graph_url.clone()),
                None,
                cancel.clone(),
            )
            .await?;
            let cpu0 = load::cpu_time();
            let r = load::drive(
                &self.client,
                addr,
                self.shots(3, self.args.n),
                self.args.concurrency,
                self.deadline(),
            )
            .await;
            let (bare_cpu_row, bare_cpu) =
                super::cpu_row("bare.replies.cpu", load::cpu_time() - cpu0, r.ok, None);
            cancel.cancel();
            let bare_replies = r.rate();
            self.rows.push(row(
                "bare.replies",
                format!("{bare_replies:.0} replies/s ({} errors)", r.errors),
                "reference",
                "1.00".into(),
                None,
            ));
            // Saturated: as fast as the gate takes them.
            let g0 = crate::store::group_commit_counts();
            let cpu0 = load::cpu_time();
            let from = self.arrived();
            let r = load::drive(
                &self.client,
                gate.addr,
                self.shots(4, self.args.n),
                self.args.concurrency,
                self.deadline(),
            )
            .await;
            let pending = gate.store.counts("user0").map(|c| c.2).unwrap_or(-1);
            eprintln!(
                "bench: e2e: {:.0} webhooks/s acked; {pending} events of user0 still pending, {} replies sent, when the last was acked",
                r.rate(),
                self.collect(4, &r, from).0.len()
            );
            let (lat, last) = self.replies(4, r.ok, &r, from).await;
            let e2e_cpu = super::cpu_row(
                "e2e.cpu",
                load::cpu_time() - cpu0,
                lat.len(),
                Some(bare_cpu),
            )
            .0;
            let span = last.map_or(r.elapsed, |l| l.saturating_duration_since(r.base));
            super::writer_line("e2e", crate::store::group_commit_counts() - g0, span);
            let rate = lat.len() as f64 / span.as_secs_f64().max(1e-9);
            self.rows.push(row(
                "e2e.rate",
                format!(
                    "{rate:.0} replies/s ({} of {} answered, {} errors)",
                    lat.len(),
                    self.args.n,
                    r.errors
                ),
                ">= 5000 replies/s",
                format!("{:.2}", rate / bare_replies.max(1e-9)),
                Some(rate >= 5000.0 && lat.len() == self.args.n),
            ));
            self.rows.push(bare_cpu_row);
            self.rows.push(e2e_cpu);
            // Paced: the latency at the target's load, and at WhatsApp's cap for one number.
            for (key, paced, target) in [
                ("e2e.latency", self.args.paced_rate, true),
                ("e2e.lat1000", 1000.0f64.min(self.args.paced_rate), false),
            ] {
                let n = self.args.n.min((paced * 10.0) as usize).max(1);
                let run = if target { 5 } else { 8 };
                let from = self.arrived();
                let (g0, cpu0) = (crate::store::group_commit_counts(), load::cpu_time());
                let r = load::drive_paced(
                    &self.client,
                    gate.addr,
                    self.shots(run, n),
                    self.args.concurrency,
                    paced,
                    self.deadline(),
                )
                .await;
                let (lat, last) = self.replies(run, r.ok, &r, from).await;
                let span = last.map_or(r.elapsed, |l| l.saturating_duration_since(r.base));
                super::writer_line(key, crate::store::group_commit_counts() - g0, span);
                eprintln!(
                    "bench: {key}: {:.0}% of the cores busy",
                    100.0 * (load::cpu_time() - cpu0).as_secs_f64()
                        / span.as_secs_f64().max(1e-9)
                        / std::thread::available_parallelism().map_or(1, |n| n.get()) as f64
                );
                let p99 = load::pct(&lat, 0.99);
                self.rows.push(row(
                    key,
                    format!(
                        "p50 {:.2} p99 {:.2} ms at {paced:.0} msg/s ({} of {n} answered)",
                        ms(load::pct(&lat, 0.5)),
                        ms(p99),
                        lat.len()
                    ),
                    if target { "p99 < 50 ms" } else { "(no target)" },
                    format!("p99 {:.2}", ms(p99) / ms(self.bare_p99).max(1e-9)),
                    target.then_some(p99 < Duration::from_millis(50) && lat.len() == n),
                ));
            }
        }
        if self.wants("reload") {
            self.reload(&home, &gate).await?;
        }
        if self.wants("rule") {
            self.rule_cost(&home, &gate)?;
        }
        gate.shutdown(Duration::from_secs(30)).await;
        Ok(())
    }

    /// (3) From the write of a new script to the first reply of its new version.
    async fn reload(
        &mut self,
        home: &TempHome,
        gate: &crate::app::GateHandle,
    ) -> anyhow::Result<()> {
        let u = self.users[0].clone();
        let script = home.dir.join(format!("rules/{}/replies/echo.rhai", u.name));
        let tmp = script.with_extension("tmp~");
        std::fs::write(&tmp, "reply(event, \"v2: \" + event.text);\n")?;
        let written = Instant::now();
        std::fs::rename(&tmp, &script)?;
        let mut answered = None;
        for i in 0..2000usize {
            if written.elapsed() > Duration::from_secs(10) {
                break;
            }
            let from = home::contact(6, i);
            let body = home::text_webhook(&u, &from, &format!("wamid.reload.{i}"), "probe");
            let _ = self
                .client
                .post(format!("http://{}/webhook/whatsapp/{}", gate.addr, u.name))
                .header("content-type", "application/json")
                .header(
                    "x-hub-signature-256",
                    crate::whatsapp::sign(u.secret.as_bytes(), &body),
                )
                .body(body)
                .send()
                .await;
            {
                let arrivals = self.arrivals.lock().unwrap_or_else(|p| p.into_inner());
                answered = arrivals
                    .iter()
                    .find(|a| a.text.starts_with("v2: ") && a.at >= written)
                    .map(|a| a.at - written);
            }
            if answered.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let (value, met, ratio) = match answered {
            Some(d) => (
                format!("{:.0} ms", ms(d)),
                Some(d < Duration::from_millis(250)),
                format!("{:.1}", ms(d) / ms(self.bare_p99).max(1e-9)),
            ),
            None => ("no new version within 10 s".into(), Some(false), "-".into()),
        };
        self.rows.push(row("reload", value, "< 250 ms", ratio, met));
        Ok(())
    }

    /// (4) One evaluation of the typical rule (its `if:` and its script), in process.
    fn rule_cost(&mut self, home: &TempHome, gate: &crate::app::GateHandle) -> anyhow::Result<()> {
        let loaded = crate::app::load(&home.gate_yaml())?;
        let u = &self.users[1];
        let project = loaded
            .rules
            .for_user(&u.name)
            .next()
            .ok_or_else(|| anyhow::anyhow!("the bench user has no project"))?;
        let rule = &project.rules[0];
        let body = home::text_webhook(u, &home::contact(7, 0), "wamid.rule.0", "hello");
        let mut event = crate::whatsapp::parse_webhook(&body)?
            .into_iter()
            .next()
            .ok_or_else(|| anyhow::anyhow!("no event in the bench webhook"))?
            .map;
        if let Some(m) = event.as_object_mut() {
            m.insert("user".into(), u.name.clone().into());
        }
        let host = Arc::new(crate::runner::StoreHost {
            store: gate.store.clone(),
            user: u.name.clone(),
            project: project.name.clone(),
            export: crate::runner::ExportAccess::Denied {
                user: u.name.clone(),
            },
        });
        let user = loaded.users.get(&u.name).map(|x| &x.config.permissions);
        let ctx = crate::runner::context(&loaded.engine, project, user, host);
        let started = Instant::now();
        let mut runs = 0u32;
        while runs < 20_000 && started.elapsed() < Duration::from_secs(2) {
            let r = crate::runner::run_rule(
                &loaded.engine,
                project,
                rule,
                &event,
                None,
                "message",
                &ctx,
            );
            anyhow::ensure!(r.actions.len() == 1, "the typical rule did not reply");
            runs += 1;
        }
        let each = started.elapsed() / runs.max(1);
        // The bare handler's time per request, for scale.
        let bare_each = Duration::from_secs_f64(1.0 / self.bare_rate.max(1e-9));
        self.rows.push(row(
            "rule.eval",
            format!(
                "{:.1} us per evaluation ({runs} runs)",
                each.as_secs_f64() * 1e6
            ),
            "(no target)",
            format!("{:.2}", each.as_secs_f64() / bare_each.as_secs_f64()),
            None,
        ));
        Ok(())
    }
}
