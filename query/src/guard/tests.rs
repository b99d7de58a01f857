use axum::http::{HeaderName, HeaderValue, StatusCode};

use super::*;

fn headers(pairs: &[(HeaderName, &str)]) -> HeaderMap {
    pairs.iter().map(|(k, v)| (k.clone(), HeaderValue::from_str(v).unwrap())).collect()
}

fn status(allowed: &AllowedHosts, method: Method, pairs: &[(HeaderName, &str)]) -> StatusCode {
    check(allowed, &method, "/api/v1/sql", &headers(pairs)).map_or_else(|e| e.status(), |()| StatusCode::OK)
}

#[test]
fn hosts_are_loopback_names_addresses_or_allowed_names() {
    let none = AllowedHosts::new(&[]);
    for host in
        ["127.0.0.1:8080", "localhost:8080", "LOCALHOST", "app.localhost:1", "[::1]:8080", "10.1.2.3", "0.0.0.0"]
    {
        assert!(none.host(host), "{host}");
    }
    // A rebinding page's name: refused unless allowed.
    for host in ["evil.example:8080", "localhost.evil.example", "127.0.0.1.nip.io", "", "a b"] {
        assert!(!none.host(host), "{host}");
    }
    let some = AllowedHosts::new(&["Testlake.Internal.".into()]);
    assert!(some.host("testlake.internal:8080") && some.host("TESTLAKE.internal"));
    assert!(!some.host("evil.example"));
    assert!(AllowedHosts::new(&["*".into()]).host("evil.example"));
}

#[test]
fn rebinding_and_cross_site_requests_are_refused() {
    let allowed = AllowedHosts::new(&["dash.example".into()]);
    let (host, origin, ct) = (header::HOST, header::ORIGIN, header::CONTENT_TYPE);
    let json = "application/json";
    assert_eq!(status(&allowed, Method::GET, &[]), StatusCode::OK, "no Host: not a browser");
    assert_eq!(status(&allowed, Method::GET, &[(host.clone(), "evil.example:8080")]), StatusCode::FORBIDDEN);
    // Same origin, scheme aside (TLS may end at a proxy); an allowed name's pages.
    for o in ["http://127.0.0.1:8080", "https://127.0.0.1:8080", "https://dash.example"] {
        let pairs = [(host.clone(), "127.0.0.1:8080"), (origin.clone(), o), (ct.clone(), json)];
        assert_eq!(status(&allowed, Method::POST, &pairs), StatusCode::OK, "{o}");
    }
    for o in ["http://evil.example", "http://127.0.0.1:9999", "http://localhost:8080", "null", "garbage"] {
        let pairs = [(host.clone(), "127.0.0.1:8080"), (origin.clone(), o), (ct.clone(), json)];
        assert_eq!(status(&allowed, Method::POST, &pairs), StatusCode::FORBIDDEN, "{o}");
        assert_eq!(status(&allowed, Method::GET, &pairs[..2]), StatusCode::FORBIDDEN, "{o}");
    }
    // A form or text/plain POST needs no preflight: only JSON is accepted.
    for c in ["text/plain", "text/plain; charset=utf-8", "application/x-www-form-urlencoded", "multipart/form-data"] {
        let pairs = [(host.clone(), "127.0.0.1:8080"), (ct.clone(), c)];
        assert_eq!(status(&allowed, Method::POST, &pairs), StatusCode::UNSUPPORTED_MEDIA_TYPE, "{c}");
    }
    assert_eq!(status(&allowed, Method::POST, &[]), StatusCode::UNSUPPORTED_MEDIA_TYPE, "no content type");
    let pairs = [(ct.clone(), "Application/JSON; charset=utf-8")];
    assert_eq!(status(&allowed, Method::POST, &pairs), StatusCode::OK);
}

/// A POST to a route that takes none is the router's 405, whatever its content type.
#[test]
fn only_endpoints_taking_a_body_check_its_type() {
    let text = headers(&[(header::CONTENT_TYPE, "text/plain")]);
    let allowed = AllowedHosts::new(&[]);
    assert!(check(&allowed, &Method::POST, "/", &text).is_ok());
    assert!(check(&allowed, &Method::POST, "/api/v1/trends", &text).is_ok());
    assert!(check(&allowed, &Method::POST, "/api/v1/sql", &text).is_err());
}
