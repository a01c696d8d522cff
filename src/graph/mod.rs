//! The Graph API client (reqwest): sends Cloud API requests with a user's token and reads
//! Graph's answers and error objects. Also home of the [`simulator`], the fake Cloud API.

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
        let resp = self
            .http
            .post(url)
            .bearer_auth(token.expose())
            .json(body)
            .send()
            .await
            .map_err(network_error)?;
        let v = read_json(resp).await?;
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

impl GraphClient {
    /// GET /{version}/{media_id}: where to download a media object.
    pub async fn media_info(
        &self,
        media_id: &str,
        token: &Secret<String>,
    ) -> Result<MediaInfo, GraphError> {
        let resp = self
            .http
            .get(self.url(media_id))
            .bearer_auth(token.expose())
            .send()
            .await
            .map_err(network_error)?;
        let v = read_json(resp).await?;
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
