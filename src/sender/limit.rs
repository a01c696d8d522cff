//! Rate limits of sending: a token bucket per phone number (Meta's throughput: 80 messages/s
//! by default, more for upgraded numbers, configurable per user), and per-recipient pacing (a
//! burst, then one message every few seconds to the same person: Meta's pair rate limit is
//! about one per 6 s, with short bursts tolerated). Time is tokio's, so tests pause it.

use std::collections::HashMap;
use std::time::Duration;
use tokio::time::Instant;

/// One bucket: `capacity` tokens, refilled at `per_sec`.
#[derive(Clone, Debug)]
struct Bucket {
    tokens: f64,
    last: Instant,
    capacity: f64,
    per_sec: f64,
}

impl Bucket {
    fn new(capacity: f64, per_sec: f64, now: Instant) -> Self {
        Bucket {
            tokens: capacity,
            last: now,
            capacity,
            per_sec,
        }
    }

    fn refill(&mut self, now: Instant) {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + dt * self.per_sec).min(self.capacity);
        self.last = now;
    }

    /// Time until one token is there (zero if it is).
    fn wait(&mut self, now: Instant) -> Duration {
        self.refill(now);
        if self.tokens >= 1.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64((1.0 - self.tokens) / self.per_sec)
        }
    }
}

/// Which limit made a send wait.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Held {
    /// The phone number's throughput: wait a moment and send.
    Number(Duration),
    /// Pacing for one recipient: put the row back until then, send others meanwhile.
    Recipient(Duration),
}

/// Settings of one phone number.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rates {
    /// Messages per second from this number.
    pub per_second: f64,
    /// Messages to one recipient at once before pacing starts.
    pub recipient_burst: f64,
    /// Then one message to that recipient every this many seconds.
    pub recipient_every: Duration,
}

impl Default for Rates {
    fn default() -> Self {
        Rates {
            per_second: 80.0,
            recipient_burst: 10.0,
            recipient_every: Duration::from_secs(6),
        }
    }
}

/// The buckets of every number and recipient seen.
#[derive(Default)]
pub struct Limiter {
    numbers: HashMap<String, Bucket>,
    recipients: HashMap<(String, String), Bucket>,
    /// When recipients were last pruned: a prune walks them all, so it runs once a second.
    pruned: Option<Instant>,
    /// Until when rows held by pacing were put off.
    pub deferred: Deferred,
}

/// Until when (unix ms, the outbox's clock) the rows of each recipient held by pacing were
/// last put off, by (number, recipient). The outbox hands out due rows by that time, then by
/// queue order; so that a contact's messages keep their order, a row is never put off to
/// before the row ahead of it, and a row behind one put off waits for it. (A time taken as
/// the outbox's millisecond clock plus a wait on tokio's clock rounded up comes out a
/// millisecond apart for two rows waiting for the same token: alone, it let later rows go
/// first.)
#[derive(Default)]
pub struct Deferred {
    until: HashMap<(String, String), i64>,
    pruned: i64,
}

impl Deferred {
    /// The time to put a row of `recipient` off to, that wants `at`: not before the time the
    /// row ahead of it was put off to.
    pub fn put_off(&mut self, number: &str, recipient: &str, at: i64) -> i64 {
        let until = self
            .until
            .entry((number.to_string(), recipient.to_string()))
            .or_insert(at);
        *until = (*until).max(at);
        *until
    }

    /// Until when a row of `recipient` due at `now` must wait for rows put off ahead of it;
    /// `None`: it need not.
    pub fn held(&self, number: &str, recipient: &str, now: i64) -> Option<i64> {
        if self.until.is_empty() {
            return None;
        }
        let key = (number.to_string(), recipient.to_string());
        self.until.get(&key).copied().filter(|t| *t > now)
    }

    /// Forgets times that have passed (once a second at most): a row put off from now on
    /// goes after them anyway.
    pub fn prune(&mut self, now: i64) {
        if now - self.pruned < 1000 {
            return;
        }
        self.pruned = now;
        self.until.retain(|_, t| *t > now);
    }
}

impl Limiter {
    /// Takes a token for one message from `number` to `recipient` at `now`, or says how long
    /// to wait and why (taking nothing).
    pub fn take(
        &mut self,
        number: &str,
        recipient: &str,
        rates: &Rates,
        now: Instant,
    ) -> Result<(), Held> {
        self.ready(number, recipient, rates, now, true)
    }

    /// Whether one message from `number` to `recipient` could go at `now` (else how long to
    /// wait and why); with `take`, it takes the tokens when it can ([`Limiter::take`]), and
    /// without, it only looks.
    pub fn ready(
        &mut self,
        number: &str,
        recipient: &str,
        rates: &Rates,
        now: Instant,
        take: bool,
    ) -> Result<(), Held> {
        let nb = self.numbers.entry(number.to_string()).or_insert_with(|| {
            Bucket::new(rates.per_second.max(1.0), rates.per_second.max(0.001), now)
        });
        let wait = nb.wait(now);
        if !wait.is_zero() {
            return Err(Held::Number(wait));
        }
        let every = rates.recipient_every.as_secs_f64().max(0.001);
        let rb = self
            .recipients
            .entry((number.to_string(), recipient.to_string()))
            .or_insert_with(|| Bucket::new(rates.recipient_burst.max(1.0), 1.0 / every, now));
        let wait = rb.wait(now);
        if !wait.is_zero() {
            return Err(Held::Recipient(wait));
        }
        if take {
            nb.tokens -= 1.0;
            rb.tokens -= 1.0;
        }
        Ok(())
    }

    /// Forgets recipients idle long enough to have a full bucket again (bounded memory), at
    /// most once a second.
    pub fn prune(&mut self, now: Instant) {
        if self
            .pruned
            .is_some_and(|t| now.saturating_duration_since(t) < Duration::from_secs(1))
        {
            return;
        }
        self.pruned = Some(now);
        self.recipients.retain(|_, b| {
            b.refill(now);
            b.tokens < b.capacity
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sends `n` messages as fast as the limiter allows, to `recipients` in turn, and returns
    /// the virtual time it took. Time is paused: sleeping costs nothing real.
    async fn drain(n: usize, recipients: &[&str], rates: Rates) -> Duration {
        let mut l = Limiter::default();
        let start = Instant::now();
        let mut sent = 0;
        let mut i = 0;
        while sent < n {
            let to = recipients[i % recipients.len()];
            match l.take("111", to, &rates, Instant::now()) {
                Ok(()) => {
                    sent += 1;
                    i += 1;
                }
                Err(Held::Number(d)) | Err(Held::Recipient(d)) => tokio::time::sleep(d).await,
            }
        }
        Instant::now() - start
    }

    #[tokio::test(start_paused = true)]
    async fn a_tour_of_recipients_flows_at_the_numbers_rate() {
        let people: Vec<String> = (0..400).map(|i| format!("+3361{i:05}")).collect();
        let refs: Vec<&str> = people.iter().map(String::as_str).collect();
        // 400 participants at 80/s: the first 80 at once, the other 320 over 4 s.
        let t = drain(400, &refs, Rates::default()).await;
        assert!(
            t >= Duration::from_millis(3990) && t <= Duration::from_millis(4100),
            "{t:?}"
        );
        // A number upgraded to 1000/s sends the same in well under a second.
        let fast = Rates {
            per_second: 1000.0,
            ..Rates::default()
        };
        assert!(drain(400, &refs, fast).await < Duration::from_millis(100));
    }

    #[tokio::test(start_paused = true)]
    async fn one_recipient_gets_a_burst_then_one_message_every_six_seconds() {
        let t = drain(10, &["+33600"], Rates::default()).await;
        assert_eq!(t, Duration::ZERO, "a burst of 10 goes at once");
        let t = drain(13, &["+33600"], Rates::default()).await;
        assert!(
            t >= Duration::from_secs(18) && t < Duration::from_millis(18_100),
            "{t:?}"
        );
    }

    /// A new limiter, `rates`, and the (paused) time now.
    fn fresh(rates: Rates) -> (Limiter, Rates, Instant) {
        (Limiter::default(), rates, Instant::now())
    }

    #[tokio::test(start_paused = true)]
    async fn a_check_takes_nothing() {
        let (mut l, r, now) = fresh(Rates {
            per_second: 2.0,
            ..Rates::default()
        });
        for _ in 0..5 {
            assert_eq!(l.ready("111", "a", &r, now, false), Ok(()));
        }
        assert_eq!(l.take("111", "a", &r, now), Ok(()));
        assert_eq!(l.take("111", "b", &r, now), Ok(()));
        assert!(matches!(
            l.ready("111", "c", &r, now, false),
            Err(Held::Number(_))
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn pacing_one_recipient_does_not_hold_others() {
        let (mut l, r, now) = fresh(Rates {
            recipient_burst: 1.0,
            ..Rates::default()
        });
        assert_eq!(l.take("111", "a", &r, now), Ok(()));
        assert!(
            matches!(l.take("111", "a", &r, now), Err(Held::Recipient(d)) if d == Duration::from_secs(6))
        );
        assert_eq!(
            l.take("111", "b", &r, now),
            Ok(()),
            "another recipient is free"
        );
        assert_eq!(
            l.take("222", "a", &r, now),
            Ok(()),
            "another number is free"
        );
        tokio::time::advance(Duration::from_secs(6)).await;
        assert_eq!(l.take("111", "a", &r, Instant::now()), Ok(()));
        l.prune(Instant::now() + Duration::from_secs(60));
        assert!(l.recipients.is_empty());
    }

    #[test]
    fn rows_put_off_keep_their_order() {
        let mut d = Deferred::default();
        assert_eq!(d.held("111", "a", 1000), None);
        // The second row wants a millisecond earlier than the first got: it gets the same.
        assert_eq!(d.put_off("111", "a", 2001), 2001);
        assert_eq!(d.put_off("111", "a", 2000), 2001);
        assert_eq!(d.put_off("111", "a", 3000), 3000);
        assert_eq!(d.put_off("111", "b", 1500), 1500, "another recipient");
        // A row due before then waits for them; once they are due, it need not.
        assert_eq!(d.held("111", "a", 1000), Some(3000));
        assert_eq!(d.held("111", "a", 3000), None);
        assert_eq!(d.held("222", "a", 1000), None, "another number");
        d.prune(3000);
        assert!(d.until.is_empty());
    }
}
