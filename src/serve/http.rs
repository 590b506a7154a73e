//! The HTTP stack around the handlers: routes, the embedded page, limits (time, concurrency, body and
//! query size), the bearer token, metrics, and JSON bodies for every error however it arose.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, MethodRouter};
use axum::Router;
use tower::limit::GlobalConcurrencyLimitLayer;
use tower_http::timeout::TimeoutLayer;

use super::api::{self, ApiError};
use super::AppState;

/// The longest query string accepted (a query text is at most 2 kB; percent-encoding triples it).
pub const MAX_QUERY_STRING: usize = 8 * 1024;
/// The largest request body (a batch of 256 queries fits easily).
pub const MAX_BODY: usize = 64 * 1024;
const TOKEN_COOKIE: &str = "regionseek_token";

const PAGE_HTML: &str = include_str!("assets/index.html");
const PAGE_JS: &str = include_str!("assets/page.js");
const PAGE_CSS: &str = include_str!("assets/page.css");

pub fn router(state: Arc<AppState>) -> Router {
    let timeout = state.config.request_timeout;
    let concurrent = state.config.max_concurrent.max(1);
    let api = Router::new()
        .route(
            "/api/search",
            get(api::search_get)
                .post(api::search_post)
                .fallback(not_allowed("GET, HEAD, POST")),
        )
        .route("/api/similar/{row}", get_only(api::similar))
        .route("/api/regions/{row}", get_only(api::region))
        .route("/api/regions/{row}/{picture}", get_only(api::picture_of))
        .route("/api/stats", get_only(api::stats))
        .route("/api/openapi.json", get_only(api::openapi))
        .route(
            "/",
            get_only(|| asset(PAGE_HTML, "text/html; charset=utf-8")),
        )
        .route(
            "/assets/page.js",
            get_only(|| asset(PAGE_JS, "text/javascript; charset=utf-8")),
        )
        .route(
            "/assets/page.css",
            get_only(|| asset(PAGE_CSS, "text/css; charset=utf-8")),
        )
        // Layers added later wrap the earlier ones: the limit, then the timeout (which counts the wait
        // for a slot), then metrics (which see the timeouts).
        .route_layer(GlobalConcurrencyLimitLayer::new(concurrent))
        .route_layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            timeout,
        ))
        .route_layer(middleware::from_fn_with_state(state.clone(), record));
    // Region queries are bounded by their own pool (--region-workers, --max-queued-regions: 503 beyond),
    // not by --max-concurrent: queued inversions must never hold the slots text searches answer from.
    let region_queries = Router::new()
        .route(
            REGION_PATH,
            axum::routing::post(super::region::search_region_post)
                .fallback(not_allowed("POST"))
                .layer(DefaultBodyLimit::max(state.config.max_upload_bytes)),
        )
        .route_layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            timeout,
        ))
        .route_layer(middleware::from_fn_with_state(state.clone(), record));
    api.merge(region_queries)
        // Probes are never queued behind searches.
        .route("/healthz", get_only(api::healthz))
        .route("/metrics", get_only(api::metrics))
        .fallback(unmatched)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            read_body_first,
        ))
        .layer(middleware::from_fn_with_state(state.clone(), guard))
        .layer(middleware::from_fn_with_state(state.clone(), json_errors))
        .with_state(state)
}

/// A GET endpoint whose 405 names the methods it takes.
fn get_only<H, T>(handler: H) -> MethodRouter<Arc<AppState>>
where
    H: axum::handler::Handler<T, Arc<AppState>>,
    T: 'static,
{
    get(handler).fallback(not_allowed("GET, HEAD"))
}

/// The answer to a method an endpoint does not take, naming those it does (axum adds the `Allow` header).
fn not_allowed(
    methods: &'static str,
) -> impl Fn() -> std::future::Ready<ApiError> + Clone + Send + Sync + 'static {
    move || {
        std::future::ready(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("this endpoint does not take that method (it takes {methods})"),
        ))
    }
}

async fn asset(body: &'static str, mime: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, mime),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

async fn unmatched(State(state): State<Arc<AppState>>, req: Request) -> Response {
    let t = Instant::now();
    let resp = api::not_found().await.into_response();
    state.metrics.observe(
        "unmatched",
        req.method().as_str(),
        resp.status().as_u16(),
        t.elapsed().as_secs_f64(),
    );
    resp
}

async fn record(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let method = req.method().clone();
    let t = Instant::now();
    let resp = next.run(req).await;
    state.metrics.observe(
        &route,
        method.as_str(),
        resp.status().as_u16(),
        t.elapsed().as_secs_f64(),
    );
    if resp.status().is_server_error() {
        tracing::warn!("{method} {route}: {}", resp.status());
    }
    resp
}

/// Equal-time comparison: a wrong token takes as long to refuse wherever it differs.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// Every token cookie the request carries: a browser sends a stale one from another path or an earlier
/// server beside the valid one, and either may come first.
fn cookie_tokens(req: &Request) -> impl Iterator<Item = &str> {
    req.headers()
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .filter(|(k, _)| *k == TOKEN_COOKIE)
        .map(|(_, v)| v)
}

/// The credentials of `Authorization: Bearer X` (the scheme is case-insensitive, RFC 9110 §11.1).
fn bearer(req: &Request) -> Option<&str> {
    let v = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// The host part of a `Host` header or an origin's authority: without the port, lower case, and without a
/// trailing dot.
fn host_name(authority: &str) -> String {
    let a = authority.trim();
    let host = if let Some(rest) = a.strip_prefix('[') {
        // `[v6]` or `[v6]:port`, nothing else after the bracket (`[::1]evil` names no host).
        match rest.split_once(']') {
            Some((inside, "")) => inside,
            Some((inside, port))
                if port.len() > 1
                    && port.starts_with(':')
                    && port[1..].bytes().all(|b| b.is_ascii_digit()) =>
            {
                inside
            }
            _ => return String::new(),
        }
    } else {
        match a.rsplit_once(':') {
            Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
            _ => a,
        }
    };
    host.trim_end_matches('.').to_ascii_lowercase()
}

/// Whether a request naming `host` is meant for this server. A web page on another site can make a browser
/// send requests here under its own name once its DNS points at this machine (DNS rebinding): only loopback
/// names, this server's address and the names given with `--allow-host` are answered. Any IP address is
/// accepted when the server listens on all of them (a page cannot rebind an address it does not own).
fn host_allowed(config: &super::ServeConfig, host: &str) -> bool {
    let name = host_name(host);
    if name == "localhost" || name.ends_with(".localhost") {
        return true;
    }
    if let Ok(ip) = name.parse::<std::net::IpAddr>() {
        let bound = config.addr.ip();
        return ip.is_loopback() || ip == bound || bound.is_unspecified();
    }
    config.allowed_hosts.iter().any(|h| host_name(h) == name)
}

/// The `Host` and `Origin` a request names, each checked by [`host_allowed`]; the refusal says which.
fn misdirected(config: &super::ServeConfig, req: &Request) -> Option<String> {
    // An absolute-form target (`GET http://host/path`) names the host instead of the header.
    if let Some(authority) = req.uri().authority() {
        if !host_allowed(config, authority.as_str()) {
            return Some(format!("Host {:?}", authority.as_str()));
        }
    }
    // Every value: a second `Host` or `Origin` behind an allowed one must not slip through.
    for host in req.headers().get_all(header::HOST) {
        let host = host.to_str().unwrap_or("");
        if !host_allowed(config, host) {
            return Some(format!("Host {host:?}"));
        }
    }
    for origin in req.headers().get_all(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or("");
        let authority = origin
            .strip_prefix("http://")
            .or_else(|| origin.strip_prefix("https://"))
            .map(|rest| rest.split('/').next().unwrap_or(""));
        if !authority.is_some_and(|a| host_allowed(config, a)) {
            return Some(format!("Origin {origin:?}"));
        }
    }
    None
}

/// Size limits, then the bearer token when one is set.
async fn guard(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let query_len = req.uri().query().map_or(0, str::len);
    if query_len > MAX_QUERY_STRING {
        return ApiError::new(
            StatusCode::URI_TOO_LONG,
            format!(
                "the query string is {query_len} bytes; at most {MAX_QUERY_STRING} are accepted"
            ),
        )
        .into_response();
    }
    if let Some(what) = misdirected(&state.config, &req) {
        return ApiError::new(
            StatusCode::MISDIRECTED_REQUEST,
            format!(
                "this server does not answer requests addressed to {what}: it answers loopback names, its own \
                 address and the names given with serve --allow-host NAME"
            ),
        )
        .into_response();
    }
    let Some(token) = state.config.token.as_deref() else {
        return next.run(req).await;
    };
    if req.uri().path() == "/healthz" {
        return next.run(req).await;
    }
    if bearer(&req)
        .into_iter()
        .chain(cookie_tokens(&req))
        .any(|t| same(t, token))
    {
        return next.run(req).await;
    }
    // A browser opens /?token=... once; the token then lives in a cookie and leaves the address bar.
    if req.method() == Method::GET && req.uri().path() == "/" {
        let query = req.uri().query().unwrap_or("");
        let mut rest = Vec::new();
        let mut given = None;
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            match pair.strip_prefix("token=") {
                Some(t) => given = Some(t.to_string()),
                None => rest.push(pair),
            }
        }
        // A client may percent-encode the value (`~` as `%7E`).
        let given = given.and_then(|t| {
            percent_encoding::percent_decode_str(&t)
                .decode_utf8()
                .ok()
                .map(|t| t.into_owned())
        });
        if given.is_some_and(|t| same(&t, token)) {
            let location = if rest.is_empty() {
                "/".to_string()
            } else {
                format!("/?{}", rest.join("&"))
            };
            let mut resp = Response::new(Body::empty());
            *resp.status_mut() = StatusCode::SEE_OTHER;
            let h = resp.headers_mut();
            if let Ok(v) = HeaderValue::from_str(&location) {
                h.insert(header::LOCATION, v);
            }
            if let Ok(v) = HeaderValue::from_str(&format!(
                "{TOKEN_COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict"
            )) {
                h.insert(header::SET_COOKIE, v);
            }
            return resp;
        }
    }
    let mut resp = ApiError::new(
        StatusCode::UNAUTHORIZED,
        "this server needs its token: send `Authorization: Bearer TOKEN` (or open /?token=TOKEN in a browser)",
    )
    .into_response();
    resp.headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    resp
}

/// Reads a request's body before it waits for a handler slot, within the idle timeout and the size limit: a
/// client that declares a body and sends it slowly, or never, would otherwise hold one of the
/// `--max-concurrent` slots for the whole `--timeout-s`; a declared length over the limit is refused at once.
async fn read_body_first(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    use axum::body::HttpBody;
    // A region query is let in (or refused with 503) before its upload is read, and keeps its place until
    // it is answered: uploads beyond the queries that can run or wait never take memory.
    let _admitted = if req.uri().path() == REGION_PATH && req.method() == Method::POST {
        match state.regions.admit() {
            Ok(permit) => Some(permit),
            Err(refused) => return refused.into_response(),
        }
    } else {
        None
    };
    if req.body().size_hint().exact() == Some(0) {
        return next.run(req).await;
    }
    let limit = body_limit(&state, req.uri().path());
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            if limit == MAX_BODY {
                format!("the request body is over {MAX_BODY} bytes")
            } else {
                format!(
                    "the upload is over this server's {} MB (serve --max-upload-mb)",
                    limit >> 20
                )
            },
        )
        .into_response()
    };
    if declared.is_some_and(|n| n > limit as u64) {
        return too_large();
    }
    let (parts, body) = req.into_parts();
    // An upload may take longer than a small body: the idle timeout plus the time its largest size takes at
    // a slow link's rate.
    let wait = state.config.connections.head_timeout
        + if limit > MAX_BODY {
            std::time::Duration::from_secs((limit / MIN_UPLOAD_BYTES_PER_S) as u64)
        } else {
            std::time::Duration::ZERO
        };
    match tokio::time::timeout(wait, axum::body::to_bytes(body, limit)).await {
        Ok(Ok(bytes)) => {
            next.run(Request::from_parts(parts, Body::from(bytes)))
                .await
        }
        // Past the limit without a declared length (chunked), or a body that broke off.
        Ok(Err(_)) if declared.is_none() => too_large(),
        Ok(Err(_)) => {
            ApiError::bad("the request body ended before its declared length").into_response()
        }
        Err(_) => ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            format!(
                "the request body did not arrive within {} s (serve --idle-timeout-s)",
                wait.as_secs_f64()
            ),
        )
        .into_response(),
    }
}

const REGION_PATH: &str = "/api/search/region";
/// The slowest upload waited for (a home link sending a phone photo does better).
const MIN_UPLOAD_BYTES_PER_S: usize = 64 * 1024;

/// The largest body a path takes: uploads for region queries, small JSON elsewhere.
fn body_limit(state: &AppState, path: &str) -> usize {
    if path == REGION_PATH {
        state.config.max_upload_bytes
    } else {
        MAX_BODY
    }
}

/// Errors produced outside the handlers (timeouts, body limits, wrong methods, extractor rejections) come
/// with plain-text or empty bodies: they get the API's JSON shape too.
async fn json_errors(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let resp = next.run(req).await;
    let status = resp.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return resp;
    }
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if is_json {
        return resp;
    }
    let (parts, body) = resp.into_parts();
    let text = axum::body::to_bytes(body, MAX_BODY)
        .await
        .ok()
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .filter(|t| !t.is_empty());
    let message = match (status, text) {
        (StatusCode::REQUEST_TIMEOUT, _) => format!(
            "the request took longer than this server's limit of {} s (serve --timeout-s) and was stopped",
            state.config.request_timeout.as_secs_f64()
        ),
        (StatusCode::PAYLOAD_TOO_LARGE, _) => {
            format!("the request body is over {MAX_BODY} bytes")
        }
        (_, Some(t)) => t,
        (s, None) => s.canonical_reason().unwrap_or("error").to_string(),
    };
    let mut out = ApiError::new(status, message).into_response();
    for (name, value) in parts.headers.iter() {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            out.headers_mut().insert(name.clone(), value.clone());
        }
    }
    out
}
