//! `ledger-api`: HTTP queries over the live projection, for finance, partner portals and
//! ERP systems. JSON everywhere; errors are `{ "code", "message" }`; every response
//! carries the log position it reflects in `X-Ledger-Position`.
//!
//! Access is by bearer token with a role: `admin` and `finance` read everything;
//! `partner:<id>` reads only that partner's balances, claims and payouts (and the program
//! definitions) — asking for another partner's data answers 404, exactly as if it did
//! not exist. Health endpoints need no token.
//!
//! It reads through the service's [`ledger_service::Handle`] — typed queries, no lock —
//! and never writes; it knows nothing of NATS or of the storage engine. Response shapes
//! are its own ([`views`]).

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use ledger_service::Handle;
use serde::Deserialize;
use serde_json::json;
use std::sync::Arc;

pub mod events;
mod operations;
mod planning;
mod routes;
pub mod server;
pub mod ui;
pub mod views;

/// Bearer tokens of the HTTP API (the `[auth]` table of the configuration).
#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    pub tokens: Vec<TokenConfig>,
}

/// One bearer token and its role. The token is given in exactly one way: as is
/// (`token`), as the hex SHA-256 of it (`token_sha256`: the configuration then holds no
/// secret), or read at start from an environment variable (`token_env`) or a file
/// (`token_file`, its content without surrounding white space).
#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// A name for the token's holder (default: its role): the web console's events carry
    /// it in their source (`console/<name>`).
    pub name: Option<String>,
    pub token: Option<String>,
    pub token_sha256: Option<String>,
    pub token_env: Option<String>,
    pub token_file: Option<std::path::PathBuf>,
    /// `admin`, `finance`, `producer` or `partner:<partner_id>`.
    pub role: String,
}

/// The SHA-256 of a bearer token: what the API keeps and compares.
pub type TokenDigest = [u8; 32];

/// The digest of `token`.
pub fn token_digest(token: &str) -> TokenDigest {
    use sha2::Digest;
    sha2::Sha256::digest(token.as_bytes()).into()
}

impl TokenConfig {
    /// The token as the API keeps it: digest, role and name.
    pub fn known(&self) -> Result<KnownToken, String> {
        let (digest, role) = self.resolve()?;
        Ok(KnownToken {
            digest,
            name: self.name.clone().unwrap_or_else(|| self.role.clone()),
            role,
        })
    }

    /// The token's digest and role, reading the environment or the file it names; an
    /// error says which entry and what is wrong with it.
    pub fn resolve(&self) -> Result<(TokenDigest, Role), String> {
        let role = Role::parse(&self.role).ok_or_else(|| {
            format!(
                "auth token role {:?}: expected admin, finance, producer or partner:<id>",
                self.role
            )
        })?;
        let given = [
            self.token.is_some(),
            self.token_sha256.is_some(),
            self.token_env.is_some(),
            self.token_file.is_some(),
        ];
        if given.iter().filter(|g| **g).count() != 1 {
            return Err(format!(
                "auth token for role {:?}: give exactly one of token, token_sha256, token_env, token_file",
                self.role
            ));
        }
        let plain = |t: &str| {
            let t = t.trim();
            if t.is_empty() {
                Err(format!("auth token for role {:?} is empty", self.role))
            } else {
                Ok(token_digest(t))
            }
        };
        let digest = if let Some(t) = &self.token {
            plain(t)?
        } else if let Some(hex) = &self.token_sha256 {
            parse_hex_digest(hex).ok_or_else(|| {
                format!(
                    "auth token_sha256 for role {:?}: expected 64 hex digits (sha256sum of the token)",
                    self.role
                )
            })?
        } else if let Some(var) = &self.token_env {
            let value = std::env::var(var)
                .map_err(|_| format!("auth token_env {var:?} (role {:?}) is not set", self.role))?;
            plain(&value)?
        } else if let Some(path) = &self.token_file {
            let value = std::fs::read_to_string(path).map_err(|e| {
                format!(
                    "auth token_file {} (role {:?}): {e}",
                    path.display(),
                    self.role
                )
            })?;
            plain(&value)?
        } else {
            unreachable!("exactly one way was given");
        };
        Ok((digest, role))
    }
}

fn parse_hex_digest(hex: &str) -> Option<TokenDigest> {
    let hex = hex.trim();
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// A token the API knows: its SHA-256, its role, and a name for its holder.
#[derive(Debug, Clone, PartialEq)]
pub struct KnownToken {
    pub digest: TokenDigest,
    pub role: Role,
    pub name: String,
}

/// Who a token speaks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    Admin,
    Finance,
    /// A system that feeds events (ERP, CRM, LMS): posts them, reads nothing.
    Producer,
    Partner(String),
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Role::Admin => f.write_str("admin"),
            Role::Finance => f.write_str("finance"),
            Role::Producer => f.write_str("producer"),
            Role::Partner(id) => write!(f, "partner:{id}"),
        }
    }
}

impl Role {
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "admin" => Some(Role::Admin),
            "finance" => Some(Role::Finance),
            "producer" => Some(Role::Producer),
            _ => s
                .strip_prefix("partner:")
                .filter(|id| !id.is_empty())
                .map(|id| Role::Partner(id.to_string())),
        }
    }

    /// Whether this role may see data of `partner_id`.
    pub(crate) fn sees(&self, partner_id: &str) -> bool {
        match self {
            Role::Admin | Role::Finance => true,
            Role::Producer => false,
            Role::Partner(own) => own == partner_id,
        }
    }
}

#[derive(Clone)]
pub struct ApiState {
    /// The projection's queries (and, when it has a data directory, `?as_of_seq=`).
    pub handle: Handle,
    /// Every known token by its SHA-256 (no token is kept in the clear).
    pub tokens: Arc<Vec<KnownToken>>,
    /// The web pages' sign-in sessions, and the throttle of failed sign-ins and unknown
    /// bearer tokens.
    pub sessions: Arc<ui::Sessions>,
    /// What the server's limits turned away.
    pub counters: Arc<server::HttpCounters>,
    /// Where `POST /v1/events` publishes (`None`: events are not taken over HTTP).
    pub events: Option<Arc<dyn events::EventSink>>,
    /// Request latency per route pattern.
    pub http_latency: Arc<
        std::sync::Mutex<std::collections::BTreeMap<String, ledger_service::histogram::Histogram>>,
    >,
}

impl ApiState {
    /// With tokens in the clear (tests, tools): they are hashed here.
    pub fn new(handle: Handle, tokens: Vec<(String, Role)>) -> ApiState {
        ApiState::with_digests(
            handle,
            tokens
                .into_iter()
                .map(|(t, r)| (token_digest(&t), r))
                .collect(),
        )
    }

    /// With the tokens' SHA-256 digests ([`TokenConfig::resolve`]), named by role.
    pub fn with_digests(handle: Handle, tokens: Vec<(TokenDigest, Role)>) -> ApiState {
        let named = tokens
            .into_iter()
            .map(|(digest, role)| KnownToken {
                digest,
                name: role.to_string(),
                role,
            })
            .collect();
        ApiState::with_tokens(handle, named)
    }

    /// With the tokens as the configuration gives them ([`TokenConfig::known`]).
    pub fn with_tokens(handle: Handle, tokens: Vec<KnownToken>) -> ApiState {
        ApiState {
            handle,
            tokens: Arc::new(tokens),
            sessions: Default::default(),
            counters: Default::default(),
            events: None,
            http_latency: Default::default(),
        }
    }

    /// The role and name of a presented token: its digest compared with every known
    /// one in full (no early exit on the first differing byte), so the answer's timing
    /// says nothing about how close a guess was.
    pub(crate) fn known_token(&self, token: &str) -> Option<(Role, String)> {
        let presented = token_digest(token);
        self.tokens
            .iter()
            .find(|known| {
                known
                    .digest
                    .iter()
                    .zip(presented.iter())
                    .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                    == 0
            })
            .map(|k| (k.role.clone(), k.name.clone()))
    }

    /// Takes events over HTTP, publishing them through `sink`.
    pub fn with_events(mut self, sink: Arc<dyn events::EventSink>) -> ApiState {
        self.events = Some(sink);
        self
    }
}

/// An API error: status, machine-readable code and a message.
pub struct ApiError {
    pub(crate) status: StatusCode,
    pub(crate) code: &'static str,
    pub(crate) message: String,
}

impl ApiError {
    pub(crate) fn not_found(what: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::NOT_FOUND,
            code: "not_found",
            message: what.into(),
        }
    }

    pub(crate) fn forbidden() -> ApiError {
        ApiError {
            status: StatusCode::FORBIDDEN,
            code: "forbidden",
            message: "this token's role may not read this resource".into(),
        }
    }

    pub(crate) fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            code: "bad_request",
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(json!({ "code": self.code, "message": self.message })),
        )
            .into_response()
    }
}

type ApiResult = Result<Response, ApiError>;

/// Every route with the status codes it can answer — the contract that
/// `schemas/openapi.json` documents (a test keeps the two equal).
pub const ROUTES: &[(&str, &str, &[u16])] = &[
    ("get", "/health/live", &[200]),
    ("get", "/health/ready", &[200, 503]),
    ("get", "/metrics", &[200, 400, 401, 403, 503]),
    ("get", "/v1/status", &[200, 400, 401, 403, 503]),
    (
        "get",
        "/v1/partners/{id}/balances",
        &[200, 400, 401, 404, 503],
    ),
    (
        "get",
        "/v1/partners/{id}/statement",
        &[200, 400, 401, 404, 503],
    ),
    ("get", "/v1/claims/{id}", &[200, 400, 401, 404, 503]),
    ("get", "/v1/payouts", &[200, 400, 401, 404, 503]),
    ("get", "/v1/rejected", &[200, 400, 401, 403, 503]),
    ("get", "/v1/programs", &[200, 400, 401, 503]),
    ("get", "/v1/programs/{id}", &[200, 400, 401, 404, 503]),
    (
        "get",
        "/v1/programs/{id}/leaderboard",
        &[200, 400, 401, 403, 404, 503],
    ),
    (
        "get",
        "/v1/programs/{id}/report",
        &[200, 400, 401, 403, 404, 429, 503],
    ),
    (
        "get",
        "/v1/reports/accruals",
        &[200, 400, 401, 403, 429, 503],
    ),
    (
        "get",
        "/v1/partners/{id}/opportunities",
        &[200, 400, 401, 404, 503],
    ),
    (
        "post",
        "/v1/simulations",
        &[200, 400, 401, 403, 422, 429, 503],
    ),
    ("get", "/v1/export", &[200, 400, 401, 403, 503]),
    ("get", "/v1/verify", &[200, 400, 401, 403, 429, 503]),
    ("get", "/v1/backup", &[200, 400, 401, 403, 503]),
    (
        "post",
        "/v1/events",
        &[200, 202, 400, 401, 403, 413, 415, 422, 503],
    ),
];

/// The HTTP router over `state`.
pub fn router(state: ApiState) -> Router {
    let v1 = Router::new()
        .route("/v1/status", get(routes::status))
        .route("/v1/partners/{id}/balances", get(routes::balances))
        .route("/v1/partners/{id}/statement", get(routes::statement))
        .route("/v1/claims/{id}", get(routes::claim))
        .route("/v1/payouts", get(routes::payouts))
        .route("/v1/rejected", get(routes::rejected))
        .route("/v1/programs", get(routes::programs))
        .route("/v1/programs/{id}", get(routes::program))
        .route("/v1/programs/{id}/leaderboard", get(routes::leaderboard))
        .route("/v1/programs/{id}/report", get(planning::program_report))
        .route("/v1/reports/accruals", get(planning::accruals))
        .route(
            "/v1/partners/{id}/opportunities",
            get(planning::opportunities),
        )
        .route("/v1/simulations", post(planning::simulate))
        .route("/v1/export", get(routes::export))
        .route("/v1/events", post(events::post))
        .route("/v1/verify", get(operations::verify))
        .route("/v1/backup", get(operations::backup))
        .route("/metrics", get(routes::metrics))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            read_your_writes,
        ))
        .route_layer(middleware::from_fn_with_state(state.clone(), authenticate));
    Router::new()
        .merge(ui::router(state.clone()))
        .route(
            "/health/live",
            get(|| async { Json(json!({ "status": "live" })) }),
        )
        .route("/health/ready", get(routes::ready))
        .merge(v1)
        .fallback(|| async { ApiError::not_found("no such endpoint") })
        .method_not_allowed_fallback(|req: Request| async move {
            ApiError {
                status: StatusCode::METHOD_NOT_ALLOWED,
                code: "method_not_allowed",
                message: format!("{} is not a method of {}", req.method(), req.uri().path()),
            }
        })
        .layer(middleware::from_fn_with_state(
            state.clone(),
            position_header,
        ))
        .with_state(state)
}

/// Bearer-token check; the role travels to the handlers as a request extension.
async fn authenticate(State(state): State<ApiState>, mut req: Request, next: Next) -> Response {
    let token = req
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let role = token
        .and_then(|t| state.known_token(t))
        .map(|(role, _)| role);
    if token.is_some() && role.is_none() {
        // A guess: counted, and answered later the more guesses came this minute (a
        // right token is never slowed).
        let wait = state.sessions.failed();
        tokio::time::sleep(wait).await;
    }
    match role {
        // A producer's token posts events and reads nothing.
        Some(Role::Producer) if req.uri().path() != "/v1/events" => ApiError {
            status: StatusCode::FORBIDDEN,
            code: "forbidden",
            message: "a producer token may only post events (POST /v1/events)".into(),
        }
        .into_response(),
        Some(role) => {
            req.extensions_mut().insert(role);
            next.run(req).await
        }
        None => (
            StatusCode::UNAUTHORIZED,
            [(axum::http::header::WWW_AUTHENTICATE, "Bearer")],
            Json(json!({
                "code": "unauthorized",
                "message": if token.is_some() { "unknown bearer token" } else { "an Authorization: Bearer <token> header is required" },
            })),
        )
            .into_response(),
    }
}

/// Every response says which log position it reflects; its latency is recorded per
/// route pattern.
async fn position_header(State(state): State<ApiState>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or("unmatched", |m| m.as_str())
        .to_string();
    let started = std::time::Instant::now();
    let mut response = next.run(req).await;
    if let Ok(mut h) = state.http_latency.lock() {
        h.entry(route).or_default().observe(started.elapsed());
    }
    let position = state.handle.position();
    if let Ok(v) = HeaderValue::from_str(&position.to_string()) {
        response.headers_mut().insert("x-ledger-position", v);
    }
    response
}

/// `?min_position=N`: wait (at most `MIN_POSITION_WAIT`) until the projection has
/// folded position N, else answer 503 with a retry hint.
const MIN_POSITION_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

async fn read_your_writes(State(state): State<ApiState>, req: Request, next: Next) -> Response {
    let wanted = req.uri().query().and_then(|q| {
        q.split('&')
            .filter_map(|kv| kv.split_once('='))
            .find(|(k, _)| *k == "min_position")
            .map(|(_, v)| v.parse::<u64>())
    });
    match wanted {
        None => next.run(req).await,
        Some(Err(_)) => ApiError::bad_request("min_position must be a log position (an integer)")
            .into_response(),
        Some(Ok(n)) => {
            if state.handle.wait_for_position(n, MIN_POSITION_WAIT).await {
                return next.run(req).await;
            }
            let mut resp = ApiError {
                status: StatusCode::SERVICE_UNAVAILABLE,
                code: "position_not_reached",
                message: format!("the ledger has not folded position {n} yet; retry shortly"),
            }
            .into_response();
            resp.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                HeaderValue::from_static("1"),
            );
            resp
        }
    }
}

/// Serves the API on a bound listener until `shutdown` resolves, with the default
/// [`server::HttpLimits`]. The caller binds, so that an address already in use is
/// reported before the service starts its work.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: ApiState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    server::serve_with(listener, state, server::HttpLimits::default(), shutdown).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(role: &str) -> TokenConfig {
        TokenConfig {
            role: role.into(),
            ..TokenConfig::default()
        }
    }

    /// A token given as is, as its SHA-256, from the environment or from a file resolves
    /// to the same digest; a bad entry says which and why.
    #[test]
    fn tokens_resolve_from_every_source_to_one_digest() {
        let secret = "s3cret-finance";
        let expected = token_digest(secret);
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, format!("{secret}\n")).unwrap();
        std::env::set_var("LEDGER_API_TEST_TOKEN", secret);
        let hex: String = expected.iter().map(|b| format!("{b:02x}")).collect();
        let forms = [
            TokenConfig {
                token: Some(secret.into()),
                ..entry("finance")
            },
            TokenConfig {
                token_sha256: Some(hex.to_uppercase()),
                ..entry("finance")
            },
            TokenConfig {
                token_env: Some("LEDGER_API_TEST_TOKEN".into()),
                ..entry("finance")
            },
            TokenConfig {
                token_file: Some(file.clone()),
                ..entry("finance")
            },
        ];
        for f in &forms {
            assert_eq!(f.resolve(), Ok((expected, Role::Finance)), "{f:?}");
        }
        let bad = [
            (entry("finance"), "exactly one"),
            (
                TokenConfig {
                    token: Some("a".into()),
                    token_env: Some("X".into()),
                    ..entry("admin")
                },
                "exactly one",
            ),
            (
                TokenConfig {
                    token_sha256: Some("abc".into()),
                    ..entry("admin")
                },
                "64 hex digits",
            ),
            (
                TokenConfig {
                    token_env: Some("LEDGER_API_TEST_UNSET".into()),
                    ..entry("admin")
                },
                "is not set",
            ),
            (
                TokenConfig {
                    token_file: Some(dir.path().join("nope")),
                    ..entry("admin")
                },
                "token_file",
            ),
            (
                TokenConfig {
                    token: Some("  ".into()),
                    ..entry("admin")
                },
                "is empty",
            ),
            (
                TokenConfig {
                    token: Some("t".into()),
                    ..entry("boss")
                },
                "expected admin, finance",
            ),
        ];
        for (f, says) in bad {
            let e = f.resolve().unwrap_err();
            assert!(e.contains(says), "{f:?}: {e}");
        }
    }
}
