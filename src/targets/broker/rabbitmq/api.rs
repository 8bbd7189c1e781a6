//! RabbitMQ's management HTTP API: its URL and the administrator's credentials from the
//! environment (never the config file), every name percent-encoded as a path segment of its
//! own, transient failures tried again, and a count of requests sent for benchmarks.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, StatusCode};
use serde::de::DeserializeOwned;

use crate::targets::broker::RabbitmqConfig;
use crate::targets::provider::ProviderError;

/// Attempts per request, counting the first: a refused connection or a 5xx (the node
/// restarting, a cluster partition healing) is tried again with a doubling pause.
const ATTEMPTS: u32 = 5;
const TIMEOUT: Duration = Duration::from_secs(30);

pub struct Api {
    /// `…/api/`, with the path the URL gave kept (a management UI behind a path prefix).
    base: url::Url,
    /// `Basic …`: a secret, never logged or shown.
    authorization: String,
    calls: AtomicUsize,
}

impl Api {
    /// The API the environment names; an error says which variable is missing.
    pub fn from_env(config: &RabbitmqConfig) -> Result<Api, ProviderError> {
        let var = |name: &str| {
            std::env::var(name).ok().filter(|v| !v.is_empty()).ok_or_else(|| {
                ProviderError::Setting(format!(
                    "the broker target needs {name}\n  hint: set {}, {} and {} to the management API's URL (http://host:15672) and an administrator's user and password",
                    config.api_url_env, config.api_user_env, config.api_password_env
                ))
            })
        };
        let raw = var(&config.api_url_env)?;
        let mut base = url::Url::parse(&raw)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.username().is_empty())
            .ok_or_else(|| {
                ProviderError::Setting(format!(
                    "{} is not an http(s) URL without credentials",
                    config.api_url_env
                ))
            })?;
        base.path_segments_mut()
            .map_err(|_| ProviderError::Setting(format!("{} has no path", config.api_url_env)))?
            .pop_if_empty()
            .push("api")
            .push("");
        use base64::Engine;
        let token = base64::engine::general_purpose::STANDARD.encode(format!(
            "{}:{}",
            var(&config.api_user_env)?,
            var(&config.api_password_env)?
        ));
        Ok(Api {
            base,
            authorization: format!("Basic {token}"),
            calls: AtomicUsize::new(0),
        })
    }

    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::Relaxed)
    }

    /// `segments` as a URL under the API, each one percent-encoded (`/` included), so a
    /// name can never reach another path.
    fn url(&self, segments: &[&str], query: Option<&str>) -> url::Url {
        let mut url = self.base.clone();
        {
            let mut path = url.path_segments_mut().expect("the base URL has a path");
            path.pop_if_empty();
            for s in segments {
                path.push(s);
            }
        }
        url.set_query(query);
        url
    }

    /// What the API has at `segments`; `None` for a 404.
    pub async fn get<T: DeserializeOwned>(
        &self,
        segments: &[&str],
        query: Option<&str>,
    ) -> Result<Option<T>, ProviderError> {
        let url = self.url(segments, query);
        match self.send(Method::GET, &url, None).await? {
            None => Ok(None),
            Some(body) => serde_json::from_slice(&body).map(Some).map_err(|e| {
                ProviderError::failed(format!("GET {}: an answer that does not parse", url.path()))(
                    e,
                )
            }),
        }
    }

    /// A listing at `segments`, row by row; empty for a 404. A row the broker answers empty
    /// (`[]` or `{}`: a vhost or user deleted while it listed them, by anyone on the broker)
    /// is left out; any other row that does not parse is an error.
    pub async fn list<T: DeserializeOwned>(
        &self,
        segments: &[&str],
        query: Option<&str>,
    ) -> Result<Vec<T>, ProviderError> {
        let rows: Vec<serde_json::Value> = self.get(segments, query).await?.unwrap_or_default();
        rows_of(self.url(segments, query).path(), rows)
    }

    pub async fn put(
        &self,
        segments: &[&str],
        body: &serde_json::Value,
    ) -> Result<(), ProviderError> {
        let body = serde_json::to_vec(body).expect("JSON serializes");
        self.found(Method::PUT, segments, Some(body)).await
    }

    /// An action without a body (`vhosts/NAME/start/NODE`).
    pub async fn post(&self, segments: &[&str]) -> Result<(), ProviderError> {
        self.found(Method::POST, segments, None).await
    }

    /// A request whose 404 is an error: what it acts on must be there.
    async fn found(
        &self,
        method: Method,
        segments: &[&str],
        body: Option<Vec<u8>>,
    ) -> Result<(), ProviderError> {
        let url = self.url(segments, None);
        match self.send(method.clone(), &url, body).await? {
            Some(_) => Ok(()),
            None => Err(ProviderError::Service {
                code: Some("404".into()),
                message: format!("{method} {}: not found", url.path()),
            }),
        }
    }

    /// Deletes what is at `segments`; whether it was there.
    pub async fn delete(&self, segments: &[&str]) -> Result<bool, ProviderError> {
        let url = self.url(segments, None);
        Ok(self.send(Method::DELETE, &url, None).await?.is_some())
    }

    /// One request, tried again while the failure is transient. `None` for a 404.
    async fn send(
        &self,
        method: Method,
        url: &url::Url,
        body: Option<Vec<u8>>,
    ) -> Result<Option<Bytes>, ProviderError> {
        let client = crate::clients::http::client().map_err(ProviderError::Setting)?;
        let what = format!("{method} {}", url.path());
        let mut pause = Duration::from_millis(200);
        for attempt in 1..=ATTEMPTS {
            let mut request = hyper::Request::builder()
                .method(method.clone())
                .uri(url.as_str())
                .header("authorization", &self.authorization)
                .header(
                    "user-agent",
                    concat!("tenant-reconcile/", env!("CARGO_PKG_VERSION")),
                );
            if body.is_some() {
                request = request.header("content-type", "application/json");
            }
            let request = request
                .body(Full::new(Bytes::from(body.clone().unwrap_or_default())))
                .map_err(ProviderError::failed(what.as_str()))?;
            self.calls.fetch_add(1, Ordering::Relaxed);
            // What went wrong this time, when it may go right the next.
            let why = match tokio::time::timeout(TIMEOUT, client.request(request)).await {
                Err(_) => format!("no answer within {} s", TIMEOUT.as_secs()),
                Ok(Err(e)) => crate::causes::chain(&e),
                Ok(Ok(response)) => {
                    let status = response.status();
                    let bytes = response
                        .into_body()
                        .collect()
                        .await
                        .map(|b| b.to_bytes())
                        .map_err(|e| format!("the answer was cut short: {e}"));
                    match (status, bytes) {
                        (StatusCode::NOT_FOUND, _) => return Ok(None),
                        (s, Ok(b)) if s.is_success() => return Ok(Some(b)),
                        (s, Ok(b)) if !s.is_server_error() => {
                            return Err(refused(&what, s, &b));
                        }
                        (s, Ok(b)) => crate::causes::chain(&refused(&what, s, &b)),
                        (_, Err(e)) => e,
                    }
                }
            };
            if attempt == ATTEMPTS {
                return Err(ProviderError::Unreachable(format!(
                    "{what}: {why} (tried {ATTEMPTS} times)\n  hint: is the management plugin enabled (rabbitmq-plugins enable rabbitmq_management) and its URL right?"
                )));
            }
            tracing::debug!(request = %what, attempt, why, "the management API failed; trying again");
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(3));
        }
        unreachable!("the loop returns on its last attempt")
    }
}

/// The API's refusal, with its reason (`{"error": …, "reason": …}`) when it gave one.
fn refused(what: &str, status: StatusCode, body: &[u8]) -> ProviderError {
    let reason = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("reason").and_then(|r| r.as_str()).map(str::to_string))
        .unwrap_or_default();
    let hint = match status {
        StatusCode::UNAUTHORIZED => {
            "\n  hint: the management API refused the administrator's user and password"
        }
        StatusCode::FORBIDDEN => "\n  hint: the API user needs the administrator tag",
        _ => "",
    };
    ProviderError::Service {
        code: Some(status.as_u16().to_string()),
        message: format!(
            "{what}: {status}{}{hint}",
            if reason.is_empty() {
                String::new()
            } else {
                format!(": {reason}")
            }
        ),
    }
}

/// The rows of a listing at `path`, those the broker answered empty left out.
fn rows_of<T: DeserializeOwned>(
    path: &str,
    rows: Vec<serde_json::Value>,
) -> Result<Vec<T>, ProviderError> {
    rows.into_iter()
        .filter(|row| !matches!(row, serde_json::Value::Array(a) if a.is_empty()))
        .filter(|row| !matches!(row, serde_json::Value::Object(o) if o.is_empty()))
        .map(|row| {
            serde_json::from_value(row).map_err(ProviderError::failed(format!(
                "GET {path}: a row that does not parse"
            )))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_one_segment_each() {
        let api = Api {
            base: url::Url::parse("http://127.0.0.1:15672/rabbit/api/").unwrap(),
            authorization: String::new(),
            calls: AtomicUsize::new(0),
        };
        let url = api.url(&["permissions", "a/../b", "x%2Fy"], None);
        assert_eq!(
            url.as_str(),
            "http://127.0.0.1:15672/rabbit/api/permissions/a%2F..%2Fb/x%252Fy"
        );
        assert_eq!(
            api.url(&["vhosts"], Some("columns=name")).as_str(),
            "http://127.0.0.1:15672/rabbit/api/vhosts?columns=name"
        );
    }

    #[derive(serde::Deserialize, Debug, PartialEq)]
    struct Row {
        name: String,
    }

    #[test]
    fn a_row_deleted_while_listed_is_left_out_and_a_bad_one_is_an_error() {
        let rows = serde_json::json!([{"name": "a"}, [], {}, {"name": "b"}]);
        let rows: Vec<Row> = rows_of("/api/vhosts", serde_json::from_value(rows).unwrap()).unwrap();
        assert_eq!(
            rows.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(),
            ["a", "b"]
        );
        let bad = serde_json::json!([{"name": 1}]);
        let e = rows_of::<Row>("/api/vhosts", serde_json::from_value(bad).unwrap()).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("GET /api/vhosts: a row that does not parse"),
            "{e}"
        );
    }
}
