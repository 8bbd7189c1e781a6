//! Declared `http` checks: a GET that must answer the expected status in time.

use std::time::Instant;

use http_body_util::Full;
use hyper::body::Bytes;

use super::CheckOutcome;
use crate::clients::http::client;
use crate::repo::checks::CheckSpec;

/// GETs `url` (rendered and checked already: http or https, no credentials in it).
pub async fn check(spec: &CheckSpec, url: &str, expect_status: u16) -> CheckOutcome {
    let started = Instant::now();
    let result = async {
        let uri: hyper::Uri = url
            .parse()
            .map_err(|e| format!("{url} is not a URL: {e}"))?;
        let request = hyper::Request::get(uri)
            .header(
                "user-agent",
                concat!("tenant-reconcile/", env!("CARGO_PKG_VERSION")),
            )
            .body(Full::new(Bytes::new()))
            .map_err(|e| e.to_string())?;
        let response = tokio::time::timeout(spec.timeout(), client()?.request(request))
            .await
            .map_err(|_| {
                format!(
                    "{url} did not answer within {}",
                    humantime::format_duration(spec.timeout())
                )
            })?
            .map_err(|e| format!("{url}: {}", crate::causes::chain(&e)))?;
        let status = response.status().as_u16();
        if status == expect_status {
            Ok(format!("{url} answered {status}"))
        } else {
            Err(format!("{url} answered {status}, expected {expect_status}"))
        }
    }
    .await;
    CheckOutcome::of(&spec.name, started, result)
}
