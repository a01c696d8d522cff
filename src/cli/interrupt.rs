//! Ctrl-C (SIGINT) and SIGTERM for the commands that send (`send`, `groups … send`). Dying
//! while Graph's call is in flight would leave the outbox row `sending`, and the next
//! `wagate serve` would send it again: the first signal waits for Graph's answer and records
//! it; a second one ends the command at once.

use super::CliError;
use std::future::Future;
use std::time::Duration;

/// The signals of a sending command, caught from its start.
pub(super) struct Interrupt {
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
}

impl Interrupt {
    /// Catches SIGINT and SIGTERM from now on (inside a tokio runtime).
    pub(super) fn catch() -> Result<Interrupt, CliError> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(Interrupt {
                int: signal(SignalKind::interrupt())?,
                term: signal(SignalKind::terminate())?,
            })
        }
        #[cfg(not(unix))]
        {
            Ok(Interrupt {})
        }
    }

    /// Waits for the next SIGINT or SIGTERM.
    pub(super) async fn signal(&mut self) {
        #[cfg(unix)]
        {
            tokio::select! {
                _ = self.int.recv() => {}
                _ = self.term.recv() => {}
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }

    /// Awaits `call`, a call to Graph in flight for outbox row `id`, to its end. On a signal
    /// meanwhile it says it waits (up to `limit`, Graph's timeout) and goes on; a second
    /// signal ends the command at once (exit 130). Returns the call's result and whether a
    /// signal came.
    pub(super) async fn in_flight<T>(
        &mut self,
        call: impl Future<Output = T>,
        id: i64,
        limit: Duration,
    ) -> Result<(T, bool), CliError> {
        tokio::pin!(call);
        tokio::select! {
            out = &mut call => return Ok((out, false)),
            () = self.signal() => {}
        }
        eprintln!(
            "waiting for Graph's answer (up to {} s) so the message is not sent twice; Ctrl-C again to leave it to the gate",
            limit.as_secs()
        );
        tokio::select! {
            out = call => Ok((out, true)),
            () = self.signal() => Err(CliError {
                message: format!(
                    "stopped at once: outbox row {id} stays `sending`; the gate's next start sends it again (it may arrive twice)"
                ),
                code: 130,
            }),
        }
    }
}

/// The command's end when a signal came while nothing was in flight: the row stays queued
/// and a running gate sends it.
pub(super) fn left_to_gate(id: i64, state: &str) -> CliError {
    let what = if state == "sending" {
        "being sent by the running gate".to_string()
    } else {
        format!("{state} for the running gate (`wagate serve`), which sends it")
    };
    CliError::failure(format!("interrupted: outbox row {id} is {what}"))
}
