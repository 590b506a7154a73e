//! The JSON API's handlers. Every error is `{"error": "...", "status": N}` with a 4xx status for what the
//! client sent and 5xx for what failed here.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use crate::index::{Filter, Hit};
use crate::pipeline::photo_path::PhotoPathError;
use crate::pipeline::query::{QueryError, SearchOptions};
use crate::pipeline::{query, render};

use super::encoder::EncodeError;
use super::{AppState, LiveIndex};

/// The most hits one query may ask for.
pub const MAX_K: usize = 1000;
/// The longest query text accepted (CLIP reads 77 tokens; this leaves room for any language).
pub const MAX_QUERY_BYTES: usize = 2048;
/// Queries in one POST.
pub const MAX_BATCH_QUERIES: usize = 256;
/// Longest side of a rendered picture.
pub const MAX_PICTURE_SIDE: u32 = 2048;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }
    pub fn bad(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }
    fn body(&self) -> Value {
        json!({"error": self.message, "status": self.status.as_u16()})
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(self.body())).into_response()
    }
}

type ApiResult<T> = Result<T, ApiError>;

/// A query string's parameters, percent-decoded; text that is not UTF-8 is refused, not replaced.
pub struct Params(Vec<(String, String)>);

fn decode_component(s: &str, what: &str) -> ApiResult<String> {
    let spaced = s.replace('+', " ");
    percent_encoding::percent_decode_str(&spaced)
        .decode_utf8()
        .map(|c| c.into_owned())
        .map_err(|_| ApiError::bad(format!("{what} is not valid UTF-8 once percent-decoded")))
}

impl Params {
    pub fn parse(raw: Option<&str>, known: &[&str]) -> ApiResult<Self> {
        let mut out = Vec::new();
        for pair in raw.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let k = decode_component(k, "a parameter name")?;
            if !known.contains(&k.as_str()) {
                return Err(ApiError::bad(format!(
                    "unknown parameter {k:?} (this endpoint takes: {})",
                    known.join(", ")
                )));
            }
            let v = decode_component(v, &format!("parameter {k}"))?;
            out.push((k, v));
        }
        Ok(Self(out))
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// A non-empty value, or None.
    fn text(&self, name: &str) -> Option<String> {
        self.get(name).filter(|v| !v.is_empty()).map(str::to_string)
    }

    fn number(&self, name: &str, default: usize, lo: usize, hi: usize) -> ApiResult<usize> {
        match self.get(name).filter(|v| !v.is_empty()) {
            None => Ok(default),
            Some(v) => number_in(name, v.parse::<u64>().ok(), v, lo, hi),
        }
    }

    fn flag(&self, name: &str) -> ApiResult<bool> {
        match self.get(name) {
            None | Some("") | Some("0") | Some("false") => Ok(false),
            Some("1") | Some("true") => Ok(true),
            Some(v) => Err(ApiError::bad(format!(
                "{name} must be true or false, not {v:?}"
            ))),
        }
    }
}

/// A GET's k against the server's budget of hits per request (`serve --max-hits`).
fn within_budget(k: usize, max_hits: usize) -> ApiResult<usize> {
    if k > max_hits {
        return Err(ApiError::bad(format!(
            "k = {k} is over this server's {max_hits} hits per request (serve --max-hits)"
        )));
    }
    Ok(k)
}

fn number_in(name: &str, parsed: Option<u64>, raw: &str, lo: usize, hi: usize) -> ApiResult<usize> {
    match parsed {
        Some(n) if n >= lo as u64 && n <= hi as u64 => Ok(n as usize),
        _ => Err(ApiError::bad(format!(
            "{name} must be a whole number from {lo} to {hi}, not {raw:?}"
        ))),
    }
}

/// One search as asked, from a query string or one entry of a POST batch.
#[derive(Debug, Clone)]
struct SearchRequest {
    text: String,
    options: SearchOptions,
}

const SEARCH_PARAMS: &[&str] = &[
    "q", "k", "method", "label", "image", "source", "exact", "ef",
];
/// A POST batch's fields: its queries, and defaults for each of them.
const BATCH_FIELDS: &[&str] = &[
    "queries", "k", "method", "label", "image", "source", "exact", "ef",
];
const SIMILAR_PARAMS: &[&str] = &["k", "method", "label", "image", "source", "exact", "ef"];

/// Refuses a JSON object's fields that the endpoint does not take, as a query string's are refused.
fn refuse_unknown_fields(v: &Value, known: &[&str], what: &str) -> ApiResult<()> {
    let Some(o) = v.as_object() else {
        return Ok(());
    };
    match o.keys().find(|k| !known.contains(&k.as_str())) {
        Some(k) => Err(ApiError::bad(format!(
            "unknown field {k:?} in {what} (it takes: {})",
            known.join(", ")
        ))),
        None => Ok(()),
    }
}

fn filter_from(p: &Params) -> Filter {
    Filter {
        image: p.text("image"),
        method: p.text("method"),
        source: p.text("source"),
        label: p.text("label"),
    }
}

/// `k`, `exact=true` or `ef=N` and the filters of a query string, checked as every front door checks them.
fn options_from_params(p: &Params, max_hits: usize) -> ApiResult<SearchOptions> {
    let k = within_budget(p.number("k", query::DEFAULT_K, 1, MAX_K)?, max_hits)?;
    let ef = match p.text("ef") {
        None => None,
        Some(_) => Some(p.number("ef", 0, 1, query::MAX_EF)?),
    };
    SearchOptions::new(k, filter_from(p), p.flag("exact")?, ef).map_err(query_error)
}

/// A query that cannot run: the client's mistake (400) unless the index failed.
fn query_error(e: QueryError) -> ApiError {
    match e {
        QueryError::Index(e) => index_error(e.into()),
        QueryError::Embed(e) => ApiError::internal(format!("cannot embed the query: {e}")),
        other => ApiError::bad(other.to_string()),
    }
}

fn check_text(text: &str) -> ApiResult<()> {
    if text.trim().is_empty() {
        return Err(ApiError::bad("the query text (q) is empty"));
    }
    if text.len() > MAX_QUERY_BYTES {
        return Err(ApiError::bad(format!(
            "the query text is {} bytes; at most {MAX_QUERY_BYTES} are accepted (CLIP reads its first 77 tokens)",
            text.len()
        )));
    }
    Ok(())
}

impl SearchRequest {
    fn from_params(p: &Params, max_hits: usize) -> ApiResult<Self> {
        let text = p.get("q").unwrap_or("").to_string();
        check_text(&text)?;
        Ok(Self {
            text,
            options: options_from_params(p, max_hits)?,
        })
    }

    /// One entry of a POST batch: a string, or an object with the GET parameters as fields.
    fn from_json(v: &Value, defaults: &Value) -> ApiResult<Self> {
        refuse_unknown_fields(v, SEARCH_PARAMS, "a query")?;
        let field = |name: &str| v.get(name).or_else(|| defaults.get(name));
        let text = match v {
            Value::String(s) => s.clone(),
            Value::Object(o) => match o.get("q") {
                Some(Value::String(s)) => s.clone(),
                _ => return Err(ApiError::bad("each query needs a text field \"q\"")),
            },
            _ => {
                return Err(ApiError::bad(
                    "each query is a string or an object with \"q\"",
                ))
            }
        };
        check_text(&text)?;
        let string = |name: &str| -> ApiResult<Option<String>> {
            match field(name) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) if s.is_empty() => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.clone())),
                Some(other) => Err(ApiError::bad(format!(
                    "{name} must be a string, not {other}"
                ))),
            }
        };
        let number = |name: &str, default: usize, lo: usize, hi: usize| -> ApiResult<usize> {
            match field(name) {
                None | Some(Value::Null) => Ok(default),
                Some(x) => number_in(name, x.as_u64(), &x.to_string(), lo, hi),
            }
        };
        let exact = match field("exact") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(other) => {
                return Err(ApiError::bad(format!(
                    "exact must be true or false, not {other}"
                )))
            }
        };
        let ef = match field("ef") {
            None | Some(Value::Null) => None,
            Some(_) => Some(number("ef", 0, 1, query::MAX_EF)?),
        };
        let filter = Filter {
            image: string("image")?,
            method: string("method")?,
            source: string("source")?,
            label: string("label")?,
        };
        Ok(Self {
            text,
            options: SearchOptions::new(number("k", query::DEFAULT_K, 1, MAX_K)?, filter, exact, ef)
                .map_err(query_error)?,
        })
    }
}

/// A failure of the index, logged in full here; the client is told what failed without the server's paths.
fn index_error(e: anyhow::Error) -> ApiError {
    tracing::error!("searching the index failed: {e:#}");
    ApiError::internal(
        "the index could not be searched (the server's log says why; `regionseek verify INDEX` checks its files)",
    )
}

/// Runs CPU-bound work off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> ApiResult<T> + Send + 'static,
) -> ApiResult<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::internal(format!("the worker failed: {e}")))?
}

/// Searches for already validated requests: texts embedded together (cache first), then each searched.
async fn run_searches(
    state: &Arc<AppState>,
    requests: Vec<SearchRequest>,
) -> Vec<ApiResult<Value>> {
    let t = Instant::now();
    let texts: Vec<String> = requests.iter().map(|r| r.text.clone()).collect();
    let encoded = state.encoder.encode(&texts).await;
    let live = state.index();
    let mut out = Vec::with_capacity(requests.len());
    for (req, enc) in requests.into_iter().zip(encoded) {
        let enc = match enc {
            Ok(e) => e,
            Err(e @ EncodeError::Busy(_)) => {
                out.push(Err(ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    e.to_string(),
                )));
                continue;
            }
            Err(e) => {
                out.push(Err(ApiError::internal(format!(
                    "cannot embed {:?}: {e}",
                    req.text
                ))));
                continue;
            }
        };
        let live = live.clone();
        let answer = blocking(move || {
            let a =
                query::search_query(&live.index, &enc.query, &req.options).map_err(query_error)?;
            Ok(json!({
                "query": req.text,
                "k": req.options.k,
                "mode": a.run.mode,
                "ef": a.run.ef,
                "candidates": a.run.candidates,
                "query_tokens": a.query_tokens,
                "truncated": a.truncated,
                "cached": enc.cached,
                "rows": live.index.len(),
                "ms": t.elapsed().as_secs_f64() * 1e3,
                "hits": a.hits,
            }))
        })
        .await;
        out.push(answer);
    }
    out
}

pub async fn search_get(
    State(state): State<Arc<AppState>>,
    RawQuery(raw): RawQuery,
) -> ApiResult<Json<Value>> {
    let p = Params::parse(raw.as_deref(), SEARCH_PARAMS)?;
    let req = SearchRequest::from_params(&p, state.config.max_hits_per_request)?;
    let mut answers = run_searches(&state, vec![req]).await;
    answers.remove(0).map(Json)
}

pub async fn search_post(
    State(state): State<Arc<AppState>>,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    let v: Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad(format!("the body is not JSON: {e}")))?;
    let queries = v.get("queries").and_then(Value::as_array).ok_or_else(|| {
        ApiError::bad("the body is {\"queries\": [...]} (strings or objects with \"q\")")
    })?;
    refuse_unknown_fields(&v, BATCH_FIELDS, "the body")?;
    if queries.is_empty() || queries.len() > MAX_BATCH_QUERIES {
        return Err(ApiError::bad(format!(
            "give 1 to {MAX_BATCH_QUERIES} queries, not {}",
            queries.len()
        )));
    }
    // Fields beside "queries" are defaults for every query.
    let mut parsed = Vec::with_capacity(queries.len());
    for q in queries {
        parsed.push(SearchRequest::from_json(q, &v));
    }
    let good: Vec<SearchRequest> = parsed
        .iter()
        .filter_map(|r| r.as_ref().ok().cloned())
        .collect();
    // The answer's size is bounded before any work: 256 queries at k = 1000 would be a quarter of a million
    // hits (over 100 MB of JSON) for a 2 kB request.
    let asked: usize = good.iter().map(|r| r.options.k).sum();
    let limit = state.config.max_hits_per_request;
    if asked > limit {
        return Err(ApiError::bad(format!(
            "this batch asks for {asked} hits in all (the sum of its queries' k); at most {limit} per request \
             (serve --max-hits): lower k or split the batch"
        )));
    }
    let mut answers = run_searches(&state, good).await.into_iter();
    let results: Vec<Value> = parsed
        .into_iter()
        .map(|r| match r {
            Err(e) => e.body(),
            Ok(_) => match answers.next() {
                Some(Ok(v)) => v,
                Some(Err(e)) => e.body(),
                None => ApiError::internal("no answer").body(),
            },
        })
        .collect();
    Ok(Json(json!({ "results": results })))
}

fn parse_row(raw: &str, live: &LiveIndex) -> ApiResult<usize> {
    let row: usize = raw.parse().map_err(|_| {
        ApiError::bad(format!(
            "a row is a whole number (the \"row\" of a hit), not {raw:?}"
        ))
    })?;
    if row >= live.index.len() {
        return Err(ApiError::not_found(format!(
            "no row {row}: the index holds {} regions",
            live.index.len()
        )));
    }
    Ok(row)
}

pub async fn similar(
    State(state): State<Arc<AppState>>,
    Path(row): Path<String>,
    RawQuery(raw): RawQuery,
) -> ApiResult<Json<Value>> {
    let t = Instant::now();
    let p = Params::parse(raw.as_deref(), SIMILAR_PARAMS)?;
    let live = state.index();
    let row = parse_row(&row, &live)?;
    let options = options_from_params(&p, state.config.max_hits_per_request)?;
    blocking(move || {
        let (hits, run) = query::search_similar(&live.index, row, &options)
            .map_err(query_error)?
            .ok_or_else(|| ApiError::not_found(format!("row {row} has no stored embedding")))?;
        Ok(Json(json!({
            "row": row,
            "k": options.k,
            "mode": run.mode,
            "ef": run.ef,
            "candidates": run.candidates,
            "rows": live.index.len(),
            "ms": t.elapsed().as_secs_f64() * 1e3,
            "hits": hits,
        })))
    })
    .await
}

fn public_method(method: &crate::index::MethodInfo) -> Value {
    let mut info = serde_json::to_value(method).unwrap_or(Value::Null);
    if let Some(Value::String(id)) = info.get_mut("model_id") {
        *id = public_model_id(id);
    }
    info
}

fn region_json(live: &LiveIndex, row: usize) -> Value {
    let m = &live.index.rows()[row];
    json!({
        "row": row,
        "image": m.image,
        "image_hash": m.image_hash,
        "region_id": m.region_id,
        "box": m.bbox,
        "mask_rle": m.mask,
        "area": crate::masks::Rle::from_coco(&m.mask).map(|r| r.area()).ok(),
        "method": m.method.name,
        "method_info": public_method(&m.method),
        "source": m.source,
        "label": m.label,
        "created_at_ms": m.created_at_ms,
        "exif_rotated": m.exif_rotated,
        "crop": format!("/api/regions/{row}/crop.png"),
        "thumb": format!("/api/regions/{row}/thumb.jpg"),
        "overlay": format!("/api/regions/{row}/overlay.jpg"),
    })
}

pub async fn region(
    State(state): State<Arc<AppState>>,
    Path(row): Path<String>,
) -> ApiResult<Json<Value>> {
    let live = state.index();
    let row = parse_row(&row, &live)?;
    Ok(Json(region_json(&live, row)))
}

/// Whether the request that queued some work is still waiting for it: the request holds one handle and the
/// work the other, so when the request is dropped (timed out, its client gone) the work can see it and skip.
#[derive(Clone, Default)]
struct Waiting(Arc<()>);

impl Waiting {
    fn abandoned(&self) -> bool {
        Arc::strong_count(&self.0) < 2
    }
}

/// Why a row's photo is not drawn, naming the row and never where the server looks for photos.
fn unavailable_photo(row: usize, name: &str, e: PhotoPathError) -> ApiError {
    match e {
        PhotoPathError::Missing(_) | PhotoPathError::NotAFile(_) => ApiError::not_found(format!(
            "the photo {name} of row {row} is not in the images folder (moved since indexing?)"
        )),
        PhotoPathError::Root(_) => ApiError::internal("the images folder cannot be read"),
        _ => ApiError::not_found(format!(
            "row {row}'s photo is not inside the images folder, so it is not served"
        )),
    }
}

#[derive(Clone, Copy)]
enum Picture {
    Cutout,
    Thumbnail,
    Overlay,
}

async fn picture(
    state: Arc<AppState>,
    row: String,
    raw: Option<String>,
    kind: Picture,
) -> ApiResult<Response> {
    let p = Params::parse(raw.as_deref(), &["size"])?;
    let live = state.index();
    let row = parse_row(&row, &live)?;
    let Some(root) = state.config.images.clone() else {
        return Err(ApiError::not_found(
            "this server was started without --images DIR, so it has no photos to draw regions on",
        ));
    };
    let default_side = match kind {
        Picture::Cutout => MAX_PICTURE_SIDE,
        Picture::Thumbnail => 320,
        Picture::Overlay => 1024,
    };
    let side = p.number("size", default_side as usize, 16, MAX_PICTURE_SIDE as usize)? as u32;
    let hit: Hit = live
        .index
        .region(row)
        .ok_or_else(|| ApiError::not_found(format!("no row {row}")))?;
    // Held by the drawing itself, not by the request: a render whose client timed out keeps its slot until
    // it ends, so abandoned renders can never pile up beyond --max-renders.
    let slot = state
        .renders
        .clone()
        .acquire_owned()
        .await
        .map_err(|_| ApiError::internal("the server is stopping"))?;
    let waiting = Waiting::default();
    let work = waiting.clone();
    let (bytes, mime) = blocking(move || {
        let _slot = slot;
        if work.abandoned() {
            return Err(ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "the client has gone",
            ));
        }
        // A photo that cannot be read where it should be is the client's 404; anything else failed here.
        let drawn = |e: anyhow::Error| match e.downcast::<PhotoPathError>() {
            Ok(unreadable) => unavailable_photo(row, &hit.image, unreadable),
            Err(e) => {
                tracing::warn!("drawing row {row}: {e:#}");
                ApiError::internal(format!("cannot draw row {row}: {e:#}"))
            }
        };
        let gone = || ApiError::new(StatusCode::REQUEST_TIMEOUT, "the client has gone");
        // Checked again before encoding, the other costly step.
        match kind {
            Picture::Cutout => {
                let img = render::region_cutout_sized(&root, &hit, side).map_err(drawn)?;
                if work.abandoned() {
                    return Err(gone());
                }
                Ok((render::png_bytes(&img).map_err(drawn)?, "image/png"))
            }
            Picture::Thumbnail | Picture::Overlay => {
                let img = match kind {
                    Picture::Thumbnail => render::region_thumbnail(&root, &hit, side),
                    _ => render::region_overlay(&root, &hit, side),
                }
                .map_err(drawn)?;
                if work.abandoned() {
                    return Err(gone());
                }
                Ok((render::jpeg_bytes(&img).map_err(drawn)?, "image/jpeg"))
            }
        }
    })
    .await?;
    drop(waiting);
    Ok((
        [
            (header::CONTENT_TYPE, mime),
            (header::CACHE_CONTROL, "private, max-age=300"),
        ],
        bytes,
    )
        .into_response())
}

/// `GET /api/regions/{row}/{picture}`: `crop.png`, `thumb.jpg` or `overlay.jpg`.
pub async fn picture_of(
    State(state): State<Arc<AppState>>,
    Path((row, name)): Path<(String, String)>,
    RawQuery(raw): RawQuery,
) -> ApiResult<Response> {
    let kind = match name.as_str() {
        "crop.png" => Picture::Cutout,
        "thumb.jpg" => Picture::Thumbnail,
        "overlay.jpg" => Picture::Overlay,
        _ => {
            return Err(ApiError::not_found(format!(
                "no picture {name:?} of a region: crop.png, thumb.jpg or overlay.jpg"
            )))
        }
    };
    picture(state, row, raw, kind).await
}

fn counts<'a>(items: impl Iterator<Item = &'a str>, top: usize) -> Value {
    let mut m: BTreeMap<&str, u64> = BTreeMap::new();
    for i in items {
        *m.entry(i).or_default() += 1;
    }
    let mut v: Vec<(&str, u64)> = m.into_iter().collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    let distinct = v.len();
    json!({
        "distinct": distinct,
        "top": v.into_iter().take(top).map(|(k, n)| json!({"name": k, "regions": n})).collect::<Vec<_>>(),
    })
}

/// A model as clients see it: a model folder by its name, never by where the server keeps it.
pub fn public_model_id(id: &str) -> String {
    let path = std::path::Path::new(id);
    if path.is_absolute() {
        if let Some(name) = path.file_name() {
            return name.to_string_lossy().into_owned();
        }
    }
    id.to_string()
}

/// What the index holds, computed once per commit.
pub fn index_summary(live: &LiveIndex) -> Value {
    let rows = live.index.rows();
    let m = live.index.manifest();
    let images: std::collections::HashSet<&str> =
        rows.iter().map(|r| r.image_hash.as_str()).collect();
    json!({
        "rows": rows.len(),
        // What a search can return: one row per region, its best tier (the rest were superseded).
        "regions": rows.len() - live.index.superseded_rows(),
        "images": images.len(),
        "dim": m.dim,
        "model": public_model_id(&m.model_id),
        "generation": m.generation,
        "methods": counts(rows.iter().map(|r| r.method.name.as_str()), 50),
        "labels": counts(rows.iter().filter_map(|r| r.label.as_deref()), 500),
        "sources": counts(rows.iter().map(|r| r.source.as_str()), 50),
    })
}

pub async fn stats(State(state): State<Arc<AppState>>) -> ApiResult<Json<Value>> {
    let live = state.index();
    let summary = live.summary();
    let opened = live
        .opened_at
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    // The folder's name only: where the server keeps its files is none of a client's business.
    let index_name = state
        .config
        .index_dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned());
    Ok(Json(json!({
        "index": summary,
        "index_dir": index_name,
        "photos_served": state.config.images.is_some(),
        "opened_at_ms": opened,
        "uptime_s": state.started.elapsed().as_secs_f64(),
        "text_model": public_model_id(&state.model_id),
        "cache_entries": state.encoder.cached_entries(),
        "reloads": state.metrics.reloads.load(std::sync::atomic::Ordering::Relaxed),
    })))
}

pub async fn healthz(State(state): State<Arc<AppState>>) -> Json<Value> {
    let live = state.index();
    Json(json!({
        "status": "ok",
        "rows": live.index.len(),
        "generation": live.index.manifest().generation,
    }))
}

pub async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    let live = state.index();
    let text = state.metrics.render(&[
        (
            "regionseek_index_rows",
            "Regions in the served commit.",
            live.index.len() as f64,
        ),
        (
            "regionseek_index_generation",
            "Generation of the served commit.",
            live.index.manifest().generation as f64,
        ),
        (
            "regionseek_text_cache_entries",
            "Query embeddings cached.",
            state.encoder.cached_entries() as f64,
        ),
        (
            "regionseek_uptime_seconds",
            "Since the server started.",
            state.started.elapsed().as_secs_f64(),
        ),
    ]);
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

pub async fn not_found() -> ApiError {
    ApiError::not_found("no such endpoint (the API: /api/search, /api/similar/{row}, /api/regions/{row}, /api/stats, /healthz, /metrics)")
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_model_folder_is_named_without_its_path() {
        assert_eq!(
            super::public_model_id("/srv/models/clip-vit-b-16"),
            "clip-vit-b-16"
        );
        assert_eq!(
            super::public_model_id("random:vit-b-32:0"),
            "random:vit-b-32:0"
        );
        assert_eq!(
            super::public_model_id("openai/clip-vit-base-patch16"),
            "openai/clip-vit-base-patch16"
        );
    }
}
