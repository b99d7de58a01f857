//! What a web page in a browser may not make the service do. Without a token, the API answers
//! anyone who can reach it, and a browser on the same machine can reach 127.0.0.1:
//! - *DNS rebinding*: a page at `evil.example` re-points its name to 127.0.0.1 and reads the
//!   answers as same-origin. Its requests carry `Host: evil.example`: a `Host` must be a loopback
//!   name (`localhost`, `*.localhost`), an IP address (a rebinding needs a name), or a name
//!   allowed by `--allowed-host` (`*`: any). The same holds whatever address the service listens
//!   on, 0.0.0.0 included: reached by a name, that name must be allowed.
//! - *Cross-site requests*: a page may POST `text/plain` or a form anywhere without a CORS
//!   preflight. A request whose `Origin` is not the service's own (the `Host` it was sent to, or
//!   an allowed name) is refused, and a POST must declare `application/json`, which no page can
//!   send cross-origin without a preflight, which the service never grants.
//!
//! Probes (`/healthz`, `/readyz`, `/metrics`) are exempt: schedulers and scrapers reach them by
//! whatever name the platform gives, and they show no data.

use std::net::IpAddr;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;

/// The paths no check applies to.
const PROBES: [&str; 3] = ["/healthz", "/readyz", "/metrics"];

/// The names a `Host` may carry besides loopback names and IP addresses.
#[derive(Debug, Default)]
pub struct AllowedHosts {
    names: Vec<String>,
    any: bool,
}

impl AllowedHosts {
    /// `names` as configured: host names, matched case-insensitively, without port; `*` allows any.
    pub fn new(names: &[String]) -> Self {
        let names: Vec<String> = names.iter().map(|n| n.trim().trim_end_matches('.').to_ascii_lowercase()).collect();
        Self { any: names.iter().any(|n| n == "*"), names }
    }

    /// Whether a request sent with this `Host` header may be answered.
    pub fn host(&self, authority: &str) -> bool {
        let Some(host) = host_of(authority) else { return false };
        self.any
            || host.parse::<IpAddr>().is_ok()
            || host == "localhost"
            || host.ends_with(".localhost")
            || self.named(&host)
    }

    fn named(&self, host: &str) -> bool {
        self.names.iter().any(|n| n == host)
    }

    /// Whether a request with this `Origin`, sent to `host`, comes from the service's own pages.
    pub fn origin(&self, origin: &str, host: Option<&str>) -> bool {
        let Some((_scheme, authority)) = origin.split_once("://") else { return false }; // `null`, too
        host.is_some_and(|h| h.eq_ignore_ascii_case(authority)) || host_of(authority).is_some_and(|h| self.named(&h))
    }
}

/// The host of an authority (`name:port`, `[v6]:port`), lower-cased, without a trailing dot.
fn host_of(authority: &str) -> Option<String> {
    let authority: axum::http::uri::Authority = authority.parse().ok()?;
    let host = authority.host().trim_start_matches('[').trim_end_matches(']').trim_end_matches('.');
    Some(host.to_ascii_lowercase())
}

/// Whether `path` is an endpoint that takes a POST body (a POST elsewhere is the router's 405).
fn takes_a_body(path: &str) -> bool {
    crate::routes::ENDPOINTS.iter().any(|e| e.method == crate::endpoint::Method::Post && e.path == path)
}

/// Refuses what a browser must not do (see the module's documentation).
pub fn check(allowed: &AllowedHosts, method: &Method, path: &str, headers: &HeaderMap) -> Result<(), ApiError> {
    let text = |name| headers.get(name).map(|v| v.to_str().unwrap_or("(not text)"));
    let host = text(header::HOST);
    if let Some(host) = host.filter(|h| !allowed.host(h)) {
        return Err(ApiError::HostRefused(host.to_owned()));
    }
    if let Some(origin) = text(header::ORIGIN).filter(|o| !allowed.origin(o, host)) {
        return Err(ApiError::OriginRefused(origin.to_owned()));
    }
    if method == Method::POST && takes_a_body(path) {
        let content_type = text(header::CONTENT_TYPE).unwrap_or("none");
        let media = content_type.split(';').next().unwrap_or("").trim();
        if !media.eq_ignore_ascii_case("application/json") {
            return Err(ApiError::NotJson(content_type.to_owned()));
        }
    }
    Ok(())
}

/// The middleware: [`check`] on every request but the probes.
pub async fn guard(State(allowed): State<Arc<AllowedHosts>>, request: Request, next: Next) -> Response {
    if PROBES.contains(&request.uri().path()) {
        return next.run(request).await;
    }
    match check(&allowed, request.method(), request.uri().path(), request.headers()) {
        Ok(()) => next.run(request).await,
        Err(e) => e.into_response(),
    }
}

#[cfg(test)]
mod tests;
