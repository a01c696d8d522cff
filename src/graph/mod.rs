//! The Graph API client (reqwest): sends Cloud API requests with a user's token and reads
//! Graph's answers and error objects. Also home of the [`simulator`], the fake Cloud API.

pub mod groups;
pub mod simulator;
pub mod versions;

use crate::domain::Secret;
use serde::Deserialize;
use serde_json::Value;
use std::time::Duration;

/// Graph's error object (`{"error":{…}}`), as far as the gate acts on it.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
pub struct GraphErrorBody {
    #[serde(default)]
    pub message: String,
    #[serde(default)]
    pub code: i64,
    #[serde(default)]
    pub error_subcode: Option<i64>,
    #[serde(default)]
    pub error_data: Option<Value>,
    #[serde(default)]
    pub fbtrace_id: Option<String>,
}

/// Why a Graph call failed.
#[derive(Clone, Debug, thiserror::Error, PartialEq)]
pub enum GraphError {
    /// Graph answered with an error status.
    #[error("Graph answered {status}{}", .error.as_ref().map(|e| format!(": (#{}) {}", e.code, e.message)).unwrap_or_default())]
    Api {
        status: u16,
        error: Option<Box<GraphErrorBody>>,
        retry_after: Option<Duration>,
    },
    /// No answer: connection refused, reset, or timed out.
    #[error("no answer from Graph: {0}")]
    Network(String),
    /// A 200 whose body is not what the Cloud API returns.
    #[error("unexpected answer from Graph: {0}")]
    Unexpected(String),
}

impl GraphError {
    /// Whether another attempt may succeed (5xx, 429, throughput codes, network failures).
    /// The full policy (pair rate limits, token invalidation) arrives with the send pipeline.
    pub fn is_transient(&self) -> bool {
        match self {
            GraphError::Network(_) => true,
            GraphError::Unexpected(_) => false,
            GraphError::Api { status, error, .. } => {
                let code = error.as_ref().map(|e| e.code).unwrap_or(0);
                *status >= 500
                    || *status == 429
                    || matches!(
                        code,
                        1 | 2 | 4 | 80007 | 130429 | 131000 | 131016 | 131056 | 131057
                    )
            }
        }
    }
}

/// What Graph returned for an accepted message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Accepted {
    pub wamid: String,
    pub wa_id: Option<String>,
}

/// What `GET /{media_id}` says of a media object. The URL is valid for 5 minutes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MediaInfo {
    pub url: String,
    pub mime_type: Option<String>,
    /// Hex sha256 of the file, as Graph states it.
    pub sha256: Option<String>,
    pub file_size: Option<u64>,
}

/// A Graph API client bound to a base URL and a pinned API version.
#[derive(Clone, Debug)]
pub struct GraphClient {
    http: reqwest::Client,
    base_url: String,
    version: String,
}

impl GraphClient {
    /// A client for `base_url` (e.g. `https://graph.facebook.com`) and `version` (`v23.0`).
    pub fn new(base_url: &str, version: &str, timeout: Duration) -> Result<Self, GraphError> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("wagate/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| GraphError::Network(e.to_string()))?;
        Ok(GraphClient {
            http,
            base_url: base_url.trim_end_matches('/').to_string(),
            version: version.to_string(),
        })
    }

    /// `{base_url}/{version}/{path}`.
    pub fn url(&self, path: &str) -> String {
        format!(
            "{}/{}/{}",
            self.base_url,
            self.version,
            path.trim_start_matches('/')
        )
    }

    /// POST /{version}/{phone_number_id}/messages with `body`.
    pub async fn send_message(
        &self,
        phone_number_id: &str,
        token: &Secret<String>,
        body: &Value,
    ) -> Result<Accepted, GraphError> {
        let url = self.url(&format!("{phone_number_id}/messages"));
        let v = exec(self.http.post(url).bearer_auth(token.expose()).json(body)).await?;
        let wamid = v
            .pointer("/messages/0/id")
            .and_then(Value::as_str)
            .ok_or_else(|| GraphError::Unexpected("no messages[0].id in the answer".into()))?;
        Ok(Accepted {
            wamid: wamid.to_string(),
            wa_id: v
                .pointer("/contacts/0/wa_id")
                .and_then(Value::as_str)
                .map(str::to_string),
        })
    }
}

/// What `debug_token` says of an access token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenDebug {
    pub is_valid: bool,
    /// Unix seconds; 0: never expires (a system user's token).
    pub expires_at: i64,
    /// `USER`, `SYSTEM_USER`, `PAGE`, `APP`…, as Graph says.
    pub kind: Option<String>,
}

impl GraphClient {
    /// GET /{version}/debug_token: whether `token` is valid and when it expires. Asks with the
    /// app token `app_id|app_secret`. Secrets travel in the query, as Graph wants them, and
    /// never appear in errors (reqwest's are stripped of the URL).
    pub async fn debug_token(
        &self,
        token: &Secret<String>,
        app_id: &str,
        app_secret: &Secret<String>,
    ) -> Result<TokenDebug, GraphError> {
        let app_token = format!("{app_id}|{}", app_secret.expose());
        let v = exec(self.http.get(self.url("debug_token")).query(&[
            ("input_token", token.expose().as_str()),
            ("access_token", app_token.as_str()),
        ]))
        .await?;
        let d = v
            .get("data")
            .ok_or_else(|| GraphError::Unexpected("debug_token answered no `data`".into()))?;
        Ok(TokenDebug {
            is_valid: d.get("is_valid").and_then(Value::as_bool).unwrap_or(false),
            expires_at: d.get("expires_at").and_then(Value::as_i64).unwrap_or(0),
            kind: d.get("type").and_then(Value::as_str).map(str::to_string),
        })
    }

    /// GET /{version}/oauth/access_token?grant_type=fb_exchange_token: a new long-lived user
    /// token for `token` (which must not have expired). Returns it and its lifetime in seconds.
    pub async fn exchange_token(
        &self,
        token: &Secret<String>,
        app_id: &str,
        app_secret: &Secret<String>,
    ) -> Result<(Secret<String>, Option<i64>), GraphError> {
        let v = exec(self.http.get(self.url("oauth/access_token")).query(&[
            ("grant_type", "fb_exchange_token"),
            ("client_id", app_id),
            ("client_secret", app_secret.expose().as_str()),
            ("fb_exchange_token", token.expose().as_str()),
        ]))
        .await?;
        let new = v
            .get("access_token")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                GraphError::Unexpected("the exchange answered no access_token".into())
            })?;
        Ok((
            Secret::new(new.to_string()),
            v.get("expires_in").and_then(Value::as_i64),
        ))
    }

    /// POST /{version}/{phone_number_id}/messages with a mark-as-read body (answered
    /// `{"success": true}`, no message id).
    pub async fn mark_read(
        &self,
        phone_number_id: &str,
        token: &Secret<String>,
        body: &Value,
    ) -> Result<(), GraphError> {
        let v = exec(
            self.http
                .post(self.url(&format!("{phone_number_id}/messages")))
                .bearer_auth(token.expose())
                .json(body),
        )
        .await?;
        match v.get("success").and_then(Value::as_bool) {
            Some(true) => Ok(()),
            _ => Err(GraphError::Unexpected(format!(
                "mark-as-read answered {v} instead of success"
            ))),
        }
    }

    /// GET /{version}/{phone_number_id}?fields=…: what Graph knows of the number (display
    /// number, verified name, quality, throughput). Also proves the token may use it.
    pub async fn phone_number(
        &self,
        phone_number_id: &str,
        token: &Secret<String>,
    ) -> Result<Value, GraphError> {
        exec(
            self.http
            .get(self.url(phone_number_id))
            .query(&[(
                "fields",
                "display_phone_number,verified_name,quality_rating,code_verification_status,name_status,throughput",
            )])
            .bearer_auth(token.expose())
        )
        .await
    }

    /// POST /{version}/{phone_number_id}/media, multipart (`messaging_product`, `type`, `file`):
    /// uploads a local file and returns its media id (kept by WhatsApp for 30 days).
    pub async fn upload_media(
        &self,
        phone_number_id: &str,
        token: &Secret<String>,
        bytes: Vec<u8>,
        file_name: &str,
        mime_type: &str,
    ) -> Result<String, GraphError> {
        let part = reqwest::multipart::Part::bytes(bytes)
            .file_name(file_name.to_string())
            .mime_str(mime_type)
            .map_err(|e| GraphError::Unexpected(format!("bad MIME type {mime_type}: {e}")))?;
        let form = reqwest::multipart::Form::new()
            .text("messaging_product", "whatsapp")
            .text("type", mime_type.to_string())
            .part("file", part);
        let v = exec(
            self.http
                .post(self.url(&format!("{phone_number_id}/media")))
                .bearer_auth(token.expose())
                .multipart(form),
        )
        .await?;
        v.get("id")
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| GraphError::Unexpected(format!("no media id in the answer {v}")))
    }

    /// GET /{version}/{media_id}: where to download a media object.
    pub async fn media_info(
        &self,
        media_id: &str,
        token: &Secret<String>,
    ) -> Result<MediaInfo, GraphError> {
        let v = exec(
            self.http
                .get(self.url(media_id))
                .bearer_auth(token.expose()),
        )
        .await?;
        let url = v
            .get("url")
            .and_then(Value::as_str)
            .ok_or_else(|| GraphError::Unexpected("no url in the media answer".into()))?;
        let text = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
        let file_size = match v.get("file_size") {
            Some(Value::Number(n)) => n.as_u64(),
            Some(Value::String(s)) => s.parse().ok(),
            _ => None,
        };
        Ok(MediaInfo {
            url: url.to_string(),
            mime_type: text("mime_type"),
            sha256: text("sha256"),
            file_size,
        })
    }

    /// Downloads a media URL with the token (Graph refuses it without). Refuses bodies larger
    /// than `max_bytes`. Returns the bytes and their content type.
    pub async fn download(
        &self,
        url: &str,
        token: &Secret<String>,
        max_bytes: usize,
    ) -> Result<(Vec<u8>, Option<String>), GraphError> {
        let mut resp = self
            .http
            .get(url)
            .bearer_auth(token.expose())
            .send()
            .await
            .map_err(network_error)?;
        let status = resp.status().as_u16();
        if !(200..300).contains(&status) {
            return read_json(resp).await.and_then(|_| {
                Err(GraphError::Unexpected(format!(
                    "download answered {status}"
                )))
            });
        }
        let ctype = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let mut bytes = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(network_error)? {
            if bytes.len() + chunk.len() > max_bytes {
                return Err(GraphError::Unexpected(format!(
                    "media is larger than {max_bytes} bytes"
                )));
            }
            bytes.extend_from_slice(&chunk);
        }
        Ok((bytes, ctype))
    }
}

/// reqwest errors name the URL, never headers, so they carry no token.
fn network_error(e: reqwest::Error) -> GraphError {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else {
        "request failed"
    };
    GraphError::Network(format!("{kind}: {}", e.without_url()))
}

/// Sends a request and reads Graph's JSON answer (or its error object).
pub(crate) async fn exec(req: reqwest::RequestBuilder) -> Result<Value, GraphError> {
    let resp = req.send().await.map_err(network_error)?;
    read_json(resp).await
}

async fn read_json(resp: reqwest::Response) -> Result<Value, GraphError> {
    let status = resp.status().as_u16();
    let retry_after = resp
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let bytes = resp.bytes().await.map_err(network_error)?;
    if (200..300).contains(&status) {
        return serde_json::from_slice(&bytes)
            .map_err(|e| GraphError::Unexpected(format!("answer is not JSON: {e}")));
    }
    #[derive(Deserialize)]
    struct Wrapper {
        error: GraphErrorBody,
    }
    let error = serde_json::from_slice::<Wrapper>(&bytes)
        .ok()
        .map(|w| Box::new(w.error));
    Err(GraphError::Api {
        status,
        error,
        retry_after,
    })
}
