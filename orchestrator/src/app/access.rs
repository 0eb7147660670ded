//! Who may read the status server. On a loopback address, any local client, but only
//! under the server's own name: a request whose `Host` names another site (a DNS
//! rebinding page in a browser) is refused. On any other address, only a holder of
//! the server's bearer token: in an `Authorization: Bearer` header, in the
//! `augur_token` cookie, or once in `?token=`, which sets that cookie for a browser.

use super::serve::Shared;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::net::SocketAddr;

const COOKIE: &str = "augur_token";

/// The server's rule for who may read it.
#[derive(Clone, Debug)]
pub struct Access {
    /// Required beyond loopback.
    token: Option<String>,
    /// The names a loopback server answers to (`127.0.0.1:8080`, `localhost:8080`).
    hosts: Vec<String>,
}

impl Access {
    /// The rule for a server listening on `addr`: beyond loopback a token, `given`
    /// or else a new random one.
    pub fn for_addr(addr: SocketAddr, given: Option<String>) -> Access {
        let port = addr.port();
        if addr.ip().is_loopback() {
            return Access {
                token: None,
                hosts: vec![
                    addr.to_string(),
                    format!("localhost:{port}"),
                    format!("127.0.0.1:{port}"),
                    format!("[::1]:{port}"),
                ],
            };
        }
        let token = given.filter(|t| !t.is_empty()).unwrap_or_else(|| {
            rand::random::<[u8; 16]>()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect()
        });
        Access {
            token: Some(token),
            hosts: Vec::new(),
        }
    }

    /// The token a client must show, if one is required.
    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    /// Whether a request may be answered; `Ok(true)` when it showed the token in its
    /// query, so the answer should set the cookie.
    fn check(&self, headers: &HeaderMap, query: Option<&str>) -> Result<bool, Refused> {
        if !self.hosts.is_empty() {
            let host = headers
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .unwrap_or("");
            if !self.hosts.iter().any(|h| h.eq_ignore_ascii_case(host)) {
                return Err(Refused(
                    StatusCode::FORBIDDEN,
                    "this server answers only to its own address (Host)",
                ));
            }
        }
        let Some(token) = &self.token else {
            return Ok(false);
        };
        let bearer = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        let cookie = headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .find_map(|c| {
                c.trim()
                    .strip_prefix(&format!("{COOKIE}="))
                    .map(str::to_string)
            });
        let in_query = query
            .unwrap_or("")
            .split('&')
            .find_map(|kv| kv.strip_prefix("token="));
        let same = |given: &str| same_secret(given, token);
        if bearer.is_some_and(same) || cookie.as_deref().is_some_and(same) {
            return Ok(false);
        }
        if in_query.is_some_and(same) {
            return Ok(true);
        }
        Err(Refused(
            StatusCode::UNAUTHORIZED,
            "a token is required: open the address augur printed (with ?token=), or send Authorization: Bearer TOKEN",
        ))
    }
}

/// A refused request's status and reason.
struct Refused(StatusCode, &'static str);

/// Compares in time independent of where the strings differ.
fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// What pages may load and run: augur's own scripts, styles and images, nothing
/// inline but styles (the charts set theirs), no plugins, no framing, no other
/// origin. A record's text that escaped into markup still cannot run.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; font-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// The middleware: every route passes here first.
pub async fn guard(State(app): State<Shared>, req: Request, next: Next) -> Response {
    let query = req.uri().query().map(str::to_string);
    match app.access.check(req.headers(), query.as_deref()) {
        Err(Refused(status, why)) => (status, format!("{why}\n")).into_response(),
        Ok(set_cookie) => {
            let mut resp = next.run(req).await;
            resp.headers_mut().insert(
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(CONTENT_SECURITY_POLICY),
            );
            if let (true, Some(token)) = (set_cookie, app.access.token()) {
                let cookie = format!("{COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict");
                if let Ok(v) = HeaderValue::from_str(&cookie) {
                    resp.headers_mut().insert(header::SET_COOKIE, v);
                }
            }
            resp
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(k.clone(), HeaderValue::from_str(v).expect("header"));
        }
        h
    }

    #[test]
    fn loopback_answers_only_to_its_own_names() {
        let a = Access::for_addr("127.0.0.1:8080".parse().expect("addr"), None);
        assert_eq!(a.token(), None);
        for host in ["127.0.0.1:8080", "localhost:8080", "LOCALHOST:8080"] {
            assert!(
                a.check(&headers(&[(header::HOST, host)]), None).is_ok(),
                "{host}"
            );
        }
        for host in ["evil.example:8080", "127.0.0.1:9999", ""] {
            let e = a.check(&headers(&[(header::HOST, host)]), None).err();
            assert_eq!(e.map(|r| r.0), Some(StatusCode::FORBIDDEN), "{host}");
        }
    }

    #[test]
    fn beyond_loopback_a_token_is_required() {
        let a = Access::for_addr("0.0.0.0:8080".parse().expect("addr"), None);
        let t = a.token().expect("generated").to_string();
        assert_eq!(t.len(), 32);
        let refused = |h: HeaderMap, q: Option<&str>| a.check(&h, q).err().map(|r| r.0);
        assert_eq!(refused(headers(&[]), None), Some(StatusCode::UNAUTHORIZED));
        let wrong = headers(&[(header::AUTHORIZATION, "Bearer nope")]);
        assert_eq!(
            refused(wrong, Some("token=nope")),
            Some(StatusCode::UNAUTHORIZED)
        );
        let bearer = format!("Bearer {t}");
        assert_eq!(
            a.check(&headers(&[(header::AUTHORIZATION, &bearer)]), None)
                .ok(),
            Some(false)
        );
        let cookie = format!("other=1; augur_token={t}");
        assert_eq!(
            a.check(&headers(&[(header::COOKIE, &cookie)]), None).ok(),
            Some(false)
        );
        let query = format!("follow&token={t}");
        assert_eq!(a.check(&headers(&[]), Some(&query)).ok(), Some(true));
        let given = Access::for_addr("0.0.0.0:1".parse().expect("addr"), Some("s3cret".into()));
        assert_eq!(given.token(), Some("s3cret"));
    }
}
