//! The HTTP(S) connector the outgoing calls share (declared http checks, webhooks): the
//! system's root certificates, http and https, HTTP/1.1.

use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;

pub fn connector() -> Result<HttpsConnector<HttpConnector>, String> {
    Ok(hyper_rustls::HttpsConnectorBuilder::new()
        .with_native_roots()
        .map_err(|e| format!("cannot read the system's root certificates: {e}"))?
        .https_or_http()
        .enable_http1()
        .build())
}
