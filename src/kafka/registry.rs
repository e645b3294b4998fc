//! A client of a Confluent-compatible schema registry: the REST subset sluice uses.
//!
//! - `POST /subjects/<subject>/versions` registers a schema (or finds it registered) and returns
//!   its id. The registry refuses a schema its compatibility rule rejects with 409, and an
//!   invalid one with 422: both are definite, the stage stops and names the subject.
//! - `GET /schemas/ids/<id>` fetches the writer's schema of a record.
//! - `GET /subjects` tells `sluice check` the registry answers (and takes the credentials).
//!
//! Subjects follow the TopicNameStrategy: `<topic>-key` and `<topic>-value`. Calls block (they
//! are made from the stages' blocking threads, and only on a schema not seen before); answers
//! are cached, so a table version costs one registration and a schema id one fetch.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use serde::Deserialize;

use super::avro::{AvroError, AvroSchema};
use crate::config::kafka::{RegistryConfig, RegistryCredentials};
use crate::error::Classify;

const CONTENT_TYPE: &str = "application/vnd.schemaregistry.v1+json";
/// Attempts at a call the registry did not answer (connection refused, 5xx), 0.2 s apart and
/// doubling: about 12 s in all before the error goes up to the stage's supervisor.
const ATTEMPTS: u32 = 6;

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("schema registry {url}: {what}: {detail}")]
    Unreachable {
        url: String,
        what: String,
        detail: String,
    },
    #[error(
        "the schema registry refused the schema of subject `{subject}` ({code}): {message}. {fix}"
    )]
    Refused {
        subject: String,
        code: u16,
        message: String,
        fix: &'static str,
    },
    #[error("schema registry {url}: {what}: HTTP {code}: {message}")]
    Failed {
        url: String,
        what: String,
        code: u16,
        message: String,
    },
    #[error("schema {id} from the registry: {source}")]
    Schema {
        id: u32,
        #[source]
        source: AvroError,
    },
}

impl Classify for RegistryError {
    fn is_transient(&self) -> bool {
        matches!(self, RegistryError::Unreachable { .. })
    }
}

/// The registry's error body: `{"error_code": 409, "message": "…"}`.
#[derive(Deserialize, Default)]
struct ErrorBody {
    #[serde(default)]
    message: String,
}

pub(crate) struct SchemaRegistry {
    base: String,
    authorization: Option<String>,
    agent: ureq::Agent,
    by_id: Mutex<HashMap<u32, Arc<AvroSchema>>>,
    ids: Mutex<HashMap<(String, String), u32>>,
}

impl std::fmt::Debug for SchemaRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SchemaRegistry")
            .field("url", &self.base)
            .finish_non_exhaustive()
    }
}

impl SchemaRegistry {
    pub(crate) fn new(config: &RegistryConfig) -> Self {
        let authorization = match config {
            RegistryConfig::WithCredentials(RegistryCredentials {
                username: Some(user),
                password,
                ..
            }) => {
                let pair = format!("{user}:{}", password.as_deref().unwrap_or(""));
                Some(format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(pair)
                ))
            }
            _ => None,
        };
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(10)))
            .http_status_as_error(false)
            .build()
            .into();
        SchemaRegistry {
            base: config.url().trim_end_matches('/').to_string(),
            authorization,
            agent,
            by_id: Mutex::default(),
            ids: Mutex::default(),
        }
    }

    pub(crate) fn url(&self) -> &str {
        &self.base
    }

    /// The id of `schema` under `subject`, registering it as the subject's next version if the
    /// registry does not have it yet.
    pub(crate) fn register(
        &self,
        subject: &str,
        schema: &AvroSchema,
    ) -> Result<u32, RegistryError> {
        let cache_key = (subject.to_string(), schema.text.clone());
        if let Some(id) = self.ids.lock().expect("not poisoned").get(&cache_key) {
            return Ok(*id);
        }
        #[derive(Deserialize)]
        struct Registered {
            id: u32,
        }
        let path = format!("/subjects/{}/versions", url_segment(subject));
        let body = serde_json::json!({ "schema": schema.text });
        let what = format!("registering a schema under `{subject}`");
        let response = self.call(
            &what,
            ATTEMPTS,
            |agent, url| {
                self.authorized(agent.post(url))
                    .header("Content-Type", CONTENT_TYPE)
                    .send_json(&body)
            },
            &path,
        )?;
        let registered: Registered = match response {
            Answer::Ok(text) => {
                serde_json::from_str(&text).map_err(|e| self.failed(&what, 200, e))?
            }
            Answer::Status(code @ (409 | 422), message) => {
                return Err(RegistryError::Refused {
                    subject: subject.to_string(),
                    code,
                    message,
                    fix: if code == 409 {
                        "The change is not compatible with the subject's compatibility level \
                         (BACKWARD by default: a new column needs a default or must be nullable). \
                         Either undo the change at the source, or relax the subject's level \
                         (PUT /config/<subject> {\"compatibility\": \"NONE\"}) and restart"
                    } else {
                        "The registry finds the schema invalid; report it with the table's definition"
                    },
                });
            }
            Answer::Status(code, message) => {
                return Err(self.failed(&what, code, message));
            }
        };
        self.ids
            .lock()
            .expect("not poisoned")
            .insert(cache_key, registered.id);
        Ok(registered.id)
    }

    /// The schema the registry has under `id`.
    pub(crate) fn schema(&self, id: u32) -> Result<Arc<AvroSchema>, RegistryError> {
        if let Some(s) = self.by_id.lock().expect("not poisoned").get(&id) {
            return Ok(s.clone());
        }
        #[derive(Deserialize)]
        struct Fetched {
            schema: String,
        }
        let what = format!("fetching schema {id}");
        let path = format!("/schemas/ids/{id}");
        let fetched: Fetched = match self.call(
            &what,
            ATTEMPTS,
            |agent, url| self.authorized(agent.get(url)).call(),
            &path,
        )? {
            Answer::Ok(text) => {
                serde_json::from_str(&text).map_err(|e| self.failed(&what, 200, e))?
            }
            Answer::Status(code, message) => return Err(self.failed(&what, code, message)),
        };
        let schema = AvroSchema::parse(&fetched.schema)
            .map_err(|source| RegistryError::Schema { id, source })?;
        let schema = Arc::new(schema);
        self.by_id
            .lock()
            .expect("not poisoned")
            .insert(id, schema.clone());
        Ok(schema)
    }

    /// The registered subjects, asked once: the registry answers and takes the credentials.
    pub(crate) fn subjects(&self) -> Result<Vec<String>, RegistryError> {
        let what = "listing subjects";
        match self.call(
            what,
            1,
            |agent, url| self.authorized(agent.get(url)).call(),
            "/subjects",
        )? {
            Answer::Ok(text) => serde_json::from_str(&text).map_err(|e| self.failed(what, 200, e)),
            Answer::Status(code, message) => Err(self.failed(what, code, message)),
        }
    }

    fn authorized<B>(&self, request: ureq::RequestBuilder<B>) -> ureq::RequestBuilder<B> {
        match &self.authorization {
            Some(value) => request.header("Authorization", value),
            None => request,
        }
    }

    fn failed(&self, what: &str, code: u16, message: impl ToString) -> RegistryError {
        RegistryError::Failed {
            url: self.base.clone(),
            what: what.to_string(),
            code,
            message: message.to_string(),
        }
    }

    /// One call, tried up to `attempts` times while the registry does not answer or answers 5xx.
    fn call(
        &self,
        what: &str,
        attempts: u32,
        send: impl Fn(&ureq::Agent, &str) -> Result<ureq::http::Response<ureq::Body>, ureq::Error>,
        path: &str,
    ) -> Result<Answer, RegistryError> {
        let url = format!("{}{}", self.base, path);
        let mut pause = Duration::from_millis(200);
        let mut attempt = 1;
        loop {
            let outcome = send(&self.agent, &url)
                .map_err(|e| e.to_string())
                .and_then(|mut r| {
                    let code = r.status().as_u16();
                    let text = r.body_mut().read_to_string().map_err(|e| e.to_string())?;
                    Ok((code, text))
                });
            let detail = match outcome {
                Ok((200..=299, text)) => return Ok(Answer::Ok(text)),
                Ok((code, text)) if code < 500 => {
                    let body: ErrorBody = serde_json::from_str(&text).unwrap_or_default();
                    let message = if body.message.is_empty() {
                        text
                    } else {
                        body.message
                    };
                    return Ok(Answer::Status(code, message));
                }
                Ok((code, text)) => format!("HTTP {code}: {text}"),
                Err(e) => e,
            };
            if attempt >= attempts {
                return Err(RegistryError::Unreachable {
                    url: self.base.clone(),
                    what: what.to_string(),
                    detail,
                });
            }
            tracing::warn!(registry = %self.base, what, attempt, error = %detail, "schema registry call failed; retrying");
            std::thread::sleep(pause);
            pause *= 2;
            attempt += 1;
        }
    }
}

enum Answer {
    Ok(String),
    Status(u16, String),
}

/// A subject as one URL path segment (topic names may hold `.` and `_`, which stay; anything
/// else is percent-encoded).
fn url_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}
