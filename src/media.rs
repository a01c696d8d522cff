//! Inbound media, fetched in the background: for each media id a webhook brought, ask Graph
//! for its URL (valid 5 minutes), download it with the user's token, check it against Graph's
//! sha256, and write it under `<media dir>/<user>/` with its own sha256 recorded. Retried with
//! backoff; a webhook never waits for any of it.

use crate::graph::{GraphClient, GraphError};
use crate::sender::policy::{Limits, Verdict, next_backoff};
use crate::store::{MediaRow, Store, now_ms};
use crate::users::Users;
use sha2::{Digest, Sha256};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Attempts before a download is given up.
pub const MAX_ATTEMPTS: i64 = 8;
/// Meta's largest inbound media (documents) is 100 MB.
pub const MAX_BYTES: usize = 100 * 1024 * 1024;

/// What the fetcher needs; cheap handles.
#[derive(Clone)]
pub struct MediaFetcher {
    pub store: Store,
    pub graph: GraphClient,
    pub users: Users,
    /// `data/media`: files go to `<dir>/<user>/`.
    pub dir: PathBuf,
    pub wake: Arc<Notify>,
    pub backoff_base: Duration,
}

impl MediaFetcher {
    /// Fetches until `cancel` fires.
    pub async fn run(self, cancel: CancellationToken) {
        while !cancel.is_cancelled() {
            let rows = self
                .store
                .call(|s| s.claim_media(now_ms(), 8))
                .await
                .unwrap_or_else(|e| {
                    tracing::error!(error = %e, "media fetcher cannot claim rows");
                    Vec::new()
                });
            if rows.is_empty() {
                let next = self.store.call(|s| s.next_media_due()).await.ok().flatten();
                let wait = next
                    .map(|t| Duration::from_millis((t - now_ms()).clamp(0, 1000) as u64))
                    .unwrap_or(Duration::from_secs(1));
                tokio::select! {
                    _ = self.wake.notified() => {}
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(wait) => {}
                }
                continue;
            }
            for row in rows {
                self.fetch_one(row).await;
            }
        }
    }

    async fn fetch_one(&self, row: MediaRow) {
        let id = row.id;
        let result = self.download(&row).await;
        let stored = match result {
            Ok((rel, sha, size, mime)) => {
                tracing::info!(user = %row.user, media_id = %row.media_id, bytes = size, "media stored");
                self.store
                    .call(move |s| s.media_done(id, &rel, &sha, size, mime.as_deref()))
                    .await
            }
            Err((e, transient)) => {
                let retry = transient && row.attempts < MAX_ATTEMPTS;
                let at = retry.then(|| {
                    now_ms()
                        + next_backoff(
                            &Limits {
                                base: self.backoff_base,
                                ..Limits::default()
                            },
                            row.attempts,
                            &Verdict::Retry,
                            None,
                            1.0,
                        )
                        .as_millis() as i64
                });
                tracing::warn!(user = %row.user, media_id = %row.media_id, attempt = row.attempts, error = %e, retry, "media download failed");
                let reason = format!("after {} attempt(s): {e}", row.attempts);
                self.store
                    .call(move |s| s.media_failed(id, at, &reason))
                    .await
            }
        };
        if let Err(e) = stored {
            tracing::error!(media_id = %row.media_id, error = %e, "cannot record a media download");
        }
    }

    /// Returns (path under the media dir, hex sha256, size, mime type), or the error and
    /// whether another attempt may help.
    async fn download(
        &self,
        row: &MediaRow,
    ) -> Result<(String, String, i64, Option<String>), (String, bool)> {
        let user = self
            .users
            .get(&row.user)
            .cloned()
            .ok_or_else(|| (format!("user `{}` is not loaded", row.user), false))?;
        let token = &user.creds().access_token;
        let graph_err = |e: GraphError| {
            let transient = e.is_transient() || matches!(e, GraphError::Unexpected(_));
            (e.to_string(), transient)
        };
        // A fresh URL on every attempt: they expire after 5 minutes.
        let info = self
            .graph
            .media_info(&row.media_id, token)
            .await
            .map_err(graph_err)?;
        let (bytes, ctype) = self
            .graph
            .download(&info.url, token, MAX_BYTES)
            .await
            .map_err(graph_err)?;
        let sha = hex::encode(Sha256::digest(&bytes));
        if let Some(expected) = info.sha256.as_deref().filter(|s| s.len() == 64)
            && !expected.eq_ignore_ascii_case(&sha)
        {
            return Err((
                format!("downloaded bytes do not match Graph's sha256 {expected}"),
                true,
            ));
        }
        let mime = info.mime_type.or(ctype).or_else(|| row.mime_type.clone());
        let file = format!("{}{}", safe_name(&row.media_id), extension(mime.as_deref()));
        let rel = format!("{}/{file}", row.user);
        let path = self.dir.join(&rel);
        let size = bytes.len() as i64;
        tokio::task::spawn_blocking(move || write_atomic(&path, &bytes))
            .await
            .map_err(|e| (e.to_string(), true))?
            .map_err(|e| (format!("cannot write the media file: {e}"), true))?;
        Ok((rel, sha, size, mime))
    }
}

/// Media ids are digits; anything else is replaced so that a name can never leave the folder.
fn safe_name(id: &str) -> String {
    id.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn extension(mime: Option<&str>) -> &'static str {
    let base = mime.unwrap_or("").split(';').next().unwrap_or("").trim();
    match base {
        "image/jpeg" => ".jpg",
        "image/png" => ".png",
        "image/webp" => ".webp",
        "video/mp4" => ".mp4",
        "video/3gpp" => ".3gp",
        "audio/ogg" => ".ogg",
        "audio/mpeg" => ".mp3",
        "audio/aac" => ".aac",
        "audio/amr" => ".amr",
        "audio/mp4" => ".m4a",
        "application/pdf" => ".pdf",
        "text/plain" => ".txt",
        _ => ".bin",
    }
}

fn write_atomic(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let dir = path.parent().unwrap_or(std::path::Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = path.with_extension("part");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}
