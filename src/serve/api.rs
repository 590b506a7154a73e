//! The JSON API's handlers, their request and response types, and the OpenAPI document derived from them.
//! Every error is `{"error": "...", "status": N}` with a 4xx status for what the client sent and 5xx for what
//! failed here.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, OpenApi, ToSchema};

use crate::index::{Filter, Hit, MethodInfo};
use crate::masks::CocoRle;
use crate::pipeline::photo_meta::{with_photo_words, PhotoWords};
use crate::pipeline::photo_path::PhotoPathError;
use crate::pipeline::query::{QueryError, SearchOptions, SearchReport};
use crate::pipeline::{query, render};

use super::encoder::EncodeError;
use super::extract::{ApiJson, ApiPath, ApiQuery, ApiResult, ErrorBody, Fields};
use super::metrics::AtScrape;
use super::{schema, AppState, LiveIndex};

pub use super::extract::ApiError;

/// The most hits one query may ask for.
pub const MAX_K: usize = 1000;
/// The longest query text accepted (CLIP reads 77 tokens; this leaves room for any language).
pub const MAX_QUERY_BYTES: usize = 2048;
/// Queries in one POST.
pub const MAX_BATCH_QUERIES: usize = 256;
/// Longest side of a rendered picture.
pub const MAX_PICTURE_SIDE: u32 = 2048;

/// A number or a flag as the client wrote it: text in a query string, a JSON number or boolean in a body.
/// Kept as written so that a value out of range is refused in words that name the parameter and its range,
/// and an empty one (`k=`) means the default, as a form sends it.
#[derive(Debug, Clone, Deserialize)]
#[serde(transparent)]
pub struct Given(Value);

impl Given {
    fn is_blank(&self) -> bool {
        self.0.is_null() || self.0.as_str() == Some("")
    }

    pub(super) fn text(&self) -> String {
        match &self.0 {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        }
    }

    fn whole_number(&self) -> Option<u64> {
        match &self.0 {
            Value::Number(n) => n.as_u64(),
            Value::String(s) => s.parse().ok(),
            _ => None,
        }
    }

    fn real_number(&self) -> Option<f32> {
        match &self.0 {
            Value::Number(n) => n.as_f64().map(|v| v as f32),
            Value::String(s) => s.parse().ok(),
            _ => None,
        }
        .filter(|v: &f32| v.is_finite())
    }

    fn flag(&self) -> Option<bool> {
        match &self.0 {
            Value::Bool(b) => Some(*b),
            Value::String(s) => match s.as_str() {
                "1" | "true" => Some(true),
                "0" | "false" => Some(false),
                _ => None,
            },
            _ => None,
        }
    }
}

/// A parameter that is a whole number from `lo` to `hi`, or its default when absent or empty.
pub(super) fn number(
    name: &str,
    given: Option<&Given>,
    default: usize,
    lo: usize,
    hi: usize,
) -> ApiResult<usize> {
    let Some(g) = given.filter(|g| !g.is_blank()) else {
        return Ok(default);
    };
    match g.whole_number() {
        Some(n) if n >= lo as u64 && n <= hi as u64 => Ok(n as usize),
        _ => Err(ApiError::bad(format!(
            "{name} must be a whole number from {lo} to {hi}, not {:?}",
            g.text()
        ))),
    }
}

fn flag(name: &str, given: Option<&Given>) -> ApiResult<bool> {
    let Some(g) = given.filter(|g| !g.is_blank()) else {
        return Ok(false);
    };
    g.flag()
        .ok_or_else(|| ApiError::bad(format!("{name} must be true or false, not {:?}", g.text())))
}

/// A filter's value; empty means no filter, as a form sends it.
fn filter_value(v: &Option<String>) -> Option<String> {
    v.clone().filter(|v| !v.is_empty())
}

/// `min_score`, a cosine similarity, or None.
fn min_score(given: Option<&Given>) -> ApiResult<Option<f32>> {
    let Some(g) = given.filter(|g| !g.is_blank()) else {
        return Ok(None);
    };
    g.real_number().map(Some).ok_or_else(|| {
        ApiError::bad(format!(
            "min_score must be a number from -1 to 1, not {:?}",
            g.text()
        ))
    })
}

/// `group_by`: `region` (default) or `photo`.
fn grouping(given: &Option<String>) -> ApiResult<query::Grouping> {
    match given.as_deref().filter(|g| !g.is_empty()) {
        None => Ok(query::Grouping::Region),
        Some(g) => g
            .parse()
            .map_err(|e: crate::choice::UnknownChoice| ApiError::bad(e.to_string())),
    }
}

/// The options every search takes, as the client gave them.
#[derive(Debug, Clone, Default)]
pub(super) struct Asked {
    min_score: Option<Given>,
    group_by: Option<String>,
    k: Option<Given>,
    ef: Option<Given>,
    exact: Option<Given>,
    image: Option<String>,
    method: Option<String>,
    source: Option<String>,
    label: Option<String>,
    after: Option<String>,
    before: Option<String>,
    camera: Option<String>,
    near: Option<String>,
}

impl Asked {
    /// What a query of a batch leaves out is taken from the batch.
    fn or(self, batch: &Asked) -> Asked {
        Asked {
            min_score: self.min_score.or_else(|| batch.min_score.clone()),
            group_by: self.group_by.or_else(|| batch.group_by.clone()),
            k: self.k.or_else(|| batch.k.clone()),
            ef: self.ef.or_else(|| batch.ef.clone()),
            exact: self.exact.or_else(|| batch.exact.clone()),
            image: self.image.or_else(|| batch.image.clone()),
            method: self.method.or_else(|| batch.method.clone()),
            source: self.source.or_else(|| batch.source.clone()),
            label: self.label.or_else(|| batch.label.clone()),
            after: self.after.or_else(|| batch.after.clone()),
            before: self.before.or_else(|| batch.before.clone()),
            camera: self.camera.or_else(|| batch.camera.clone()),
            near: self.near.or_else(|| batch.near.clone()),
        }
    }

    /// `k`, `exact` or `ef` and the filters, checked as every front door checks them.
    pub(super) fn options(&self) -> ApiResult<SearchOptions> {
        let k = number("k", self.k.as_ref(), query::DEFAULT_K, 1, MAX_K)?;
        let ef = match self.ef.as_ref().filter(|g| !g.is_blank()) {
            None => None,
            Some(g) => Some(number("ef", Some(g), 0, 1, query::MAX_EF)?),
        };
        let filter = Filter {
            image: filter_value(&self.image),
            method: filter_value(&self.method),
            source: filter_value(&self.source),
            label: filter_value(&self.label),
            ..Filter::default()
        };
        let (after, before, camera, near) = (
            filter_value(&self.after),
            filter_value(&self.before),
            filter_value(&self.camera),
            filter_value(&self.near),
        );
        let words = PhotoWords {
            after: after.as_deref(),
            before: before.as_deref(),
            camera: camera.as_deref(),
            near: near.as_deref(),
        };
        let filter = with_photo_words(filter, words).map_err(|e| ApiError::bad(e.to_string()))?;
        let min_score = min_score(self.min_score.as_ref())?;
        Ok(
            SearchOptions::new(k, filter, flag("exact", self.exact.as_ref())?, ef)
                .and_then(|o| o.with_min_score(min_score))
                .map_err(query_error)?
                .grouped(grouping(&self.group_by)?),
        )
    }
}

/// Declares a request type with the options every search takes beside its own fields (serde's
/// `deny_unknown_fields` does not combine with `flatten`, so they are spelt out in each).
macro_rules! with_search_options {
    ($(#[$meta:meta])* pub struct $name:ident { $($(#[$fmeta:meta])* pub $field:ident: $ty:ty,)* }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Default, Deserialize, IntoParams, ToSchema)]
        #[serde(deny_unknown_fields)]
        #[into_params(parameter_in = Query)]
        pub struct $name {
            $($(#[$fmeta])* pub $field: $ty,)*
            /// Hits to return (default 10; at most `serve --max-hits` in all).
            #[param(value_type = Option<u64>, minimum = 1, maximum = 1000)]
            #[schema(value_type = Option<u64>, minimum = 1, maximum = 1000)]
            pub k: Option<Given>,
            /// Only regions embedded with this method.
            pub method: Option<String>,
            /// Only regions with this label.
            pub label: Option<String>,
            /// Only regions of this photo (its path as indexed, or its sha256).
            pub image: Option<String>,
            /// Only regions from this source.
            pub source: Option<String>,
            /// Only photos taken at or after this date (`YYYY-MM-DD`, midnight UTC) or instant (RFC 3339).
            pub after: Option<String>,
            /// Only photos taken before this date (`YYYY-MM-DD`, midnight UTC) or instant (RFC 3339).
            pub before: Option<String>,
            /// Only photos whose camera make and model contain this text (any case).
            pub camera: Option<String>,
            /// Only photos taken within KM kilometres of a place: `LAT,LON,KM` (degrees).
            pub near: Option<String>,
            /// Scan every candidate (not with `ef`).
            #[param(value_type = Option<bool>)]
            #[schema(value_type = Option<bool>)]
            pub exact: Option<Given>,
            /// Search the HNSW graph with this beam width.
            #[param(value_type = Option<u64>, minimum = 1, maximum = 100000)]
            #[schema(value_type = Option<u64>, minimum = 1, maximum = 100000)]
            pub ef: Option<Given>,
            /// Only hits scoring at least this cosine similarity.
            #[param(value_type = Option<f64>, minimum = -1, maximum = 1)]
            #[schema(value_type = Option<f64>, minimum = -1, maximum = 1)]
            pub min_score: Option<Given>,
            /// `photo`: the best region of each photo, with `other_matches`; `region` (default): every region.
            pub group_by: Option<String>,
        }

        impl $name {
            pub(super) fn asked(&self) -> Asked {
                Asked {
                    min_score: self.min_score.clone(),
                    group_by: self.group_by.clone(),
                    k: self.k.clone(),
                    ef: self.ef.clone(),
                    exact: self.exact.clone(),
                    image: self.image.clone(),
                    method: self.method.clone(),
                    source: self.source.clone(),
                    label: self.label.clone(),
                    after: self.after.clone(),
                    before: self.before.clone(),
                    camera: self.camera.clone(),
                    near: self.near.clone(),
                }
            }
        }
    };
}

with_search_options! {
    /// A text search: the parameters of `GET /api/search`, or one query of a batch as an object.
    pub struct SearchParams {
        /// The query text.
        pub q: Option<String>,
    }
}

with_search_options! {
    /// The parameters of `GET /api/similar/{row}`.
    pub struct SimilarParams {}
}

with_search_options! {
    /// `POST /api/search`: queries, and defaults for the fields each of them leaves out.
    pub struct BatchRequest {
        /// 1 to 256 queries. Each is read on its own, so that a bad one is answered with its error and the
        /// others with their hits.
        #[param(value_type = Vec<QueryEntry>)]
        #[schema(value_type = Vec<QueryEntry>)]
        pub queries: Vec<Value>,
    }
}

with_search_options! {
    /// `POST /api/search/region`: the photo (an `image` upload, or `row` for a photo already in the index),
    /// its region (`box`, `point`, or a `mask` upload; the whole photo without one) and texts mixed in, as
    /// query parameters or as form fields beside the uploads.
    pub struct RegionParams {
        /// The photo of this row (a hit's `row`), read from `serve --images` instead of an upload.
        #[param(value_type = Option<u64>)]
        #[schema(value_type = Option<u64>)]
        pub row: Option<Given>,
        /// The region as a box `x0,y0,x1,y1` in the photo's pixels.
        #[serde(rename = "box")]
        #[param(rename = "box")]
        pub bbox: Option<String>,
        /// The region as SAM's mask for a click at `x,y` (the server needs `--sam DIR`).
        pub point: Option<String>,
        /// A text added to the region, `[W:]TEXT` (as form fields, repeat it for several).
        // Read apart (they may repeat, see `region::read_request`); here for the document.
        #[allow(dead_code)]
        pub text: Option<String>,
        /// A text taken from the region, `[W:]TEXT` (as form fields, repeat it for several).
        #[allow(dead_code)]
        pub minus: Option<String>,
    }
}

/// One query of a batch: its text, or an object with the parameters of `GET /api/search`.
#[derive(ToSchema)]
#[allow(dead_code)]
pub enum QueryEntry {
    Text(String),
    Object(SearchParams),
}

/// The parameter of the picture endpoints.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PictureParams {
    /// The picture's longest side in pixels, 16 to 2048.
    #[param(value_type = Option<u64>, minimum = 16, maximum = 2048)]
    pub size: Option<Given>,
}

/// A GET's k against the server's budget of hits per request (`serve --max-hits`).
pub(super) fn within_budget(k: usize, max_hits: usize) -> ApiResult<()> {
    if k > max_hits {
        return Err(ApiError::bad(format!(
            "k = {k} is over this server's {max_hits} hits per request (serve --max-hits)"
        )));
    }
    Ok(())
}

/// One search as asked, from a query string or one entry of a POST batch.
#[derive(Debug, Clone)]
struct SearchRequest {
    text: String,
    options: SearchOptions,
}

/// A query that cannot run: the client's mistake (400) unless the index failed.
pub(super) fn query_error(e: QueryError) -> ApiError {
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
    fn new(text: Option<String>, asked: &Asked) -> ApiResult<Self> {
        let text = text.unwrap_or_default();
        check_text(&text)?;
        Ok(Self {
            text,
            options: asked.options()?,
        })
    }

    /// One entry of a POST batch: a string, or an object with the GET parameters as fields.
    fn from_entry(entry: &Value, batch: &Asked) -> ApiResult<Self> {
        let params = match entry {
            Value::String(s) => SearchParams {
                q: Some(s.clone()),
                ..Default::default()
            },
            Value::Object(_) => SearchParams::deserialize(entry).map_err(|e| {
                ApiError::from_serde(&e.to_string(), StatusCode::BAD_REQUEST, Fields::BatchEntry)
            })?,
            _ => {
                return Err(ApiError::bad(
                    "each query is a string or an object with \"q\"",
                ))
            }
        };
        Self::new(params.q.clone(), &params.asked().or(batch))
    }
}

/// A failure of the index, logged in full here; the client is told what failed without the server's paths.
pub(super) fn index_error(e: anyhow::Error) -> ApiError {
    tracing::error!("searching the index failed: {e:#}");
    ApiError::internal(
        "the index could not be searched (the server's log says why; `regionseek verify INDEX` checks its files)",
    )
}

/// Runs CPU-bound work off the async threads.
pub(super) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> ApiResult<T> + Send + 'static,
) -> ApiResult<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::internal(format!("the worker failed: {e}")))?
}

/// One answer of `GET /api/search` (and of each query of a batch).
#[derive(Debug, Serialize, ToSchema)]
pub struct SearchResponse {
    #[serde(flatten)]
    pub report: SearchReport,
    /// Hits asked for.
    pub k: usize,
    /// The query's embedding came from the cache.
    pub cached: bool,
    /// Regions in the served commit.
    pub rows: usize,
}

/// One query's part of a batch's answer: its hits, or why it was not run.
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub enum BatchResult {
    Answer(SearchResponse),
    Error(ErrorBody),
}

/// The answer to `POST /api/search`: one result per query, in order.
#[derive(Debug, Serialize, ToSchema)]
pub struct BatchResponse {
    pub results: Vec<BatchResult>,
}

/// The answer to `GET /api/similar/{row}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct SimilarResponse {
    /// The region the others are like.
    pub row: usize,
    pub k: usize,
    /// `"exact"` or `"hnsw"`.
    pub mode: &'static str,
    pub ef: Option<usize>,
    pub candidates: usize,
    pub rows: usize,
    pub ms: f64,
    #[schema(value_type = Vec<schema::Hit>)]
    pub hits: Vec<Hit>,
}

/// Searches for already validated requests: texts embedded together (cache first), then each searched.
async fn run_searches(
    state: &Arc<AppState>,
    requests: Vec<SearchRequest>,
) -> Vec<ApiResult<SearchResponse>> {
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
            Ok(SearchResponse {
                report: SearchReport::new(&req.text, a, t.elapsed().as_secs_f64() * 1e3),
                k: req.options.k,
                cached: enc.cached,
                rows: live.index.len(),
            })
        })
        .await;
        out.push(answer);
    }
    out
}

/// Search the regions for a text.
#[utoipa::path(get, path = "/api/search", params(SearchParams), responses(
    (status = 200, description = "The hits, best first", body = SearchResponse),
    (status = 400, description = "A parameter the search cannot take", body = ErrorBody),
    (status = 503, description = "The text queue is full", body = ErrorBody),
))]
pub async fn search_get(
    State(state): State<Arc<AppState>>,
    ApiQuery(params): ApiQuery<SearchParams>,
) -> ApiResult<Json<SearchResponse>> {
    let req = SearchRequest::new(params.q.clone(), &params.asked())?;
    within_budget(req.options.k, state.config.max_hits_per_request)?;
    let mut answers = run_searches(&state, vec![req]).await;
    answers.remove(0).map(Json)
}

/// Search for many texts at once; a query that cannot run is answered with its error, the others with
/// their hits.
#[utoipa::path(post, path = "/api/search", request_body = BatchRequest, responses(
    (status = 200, description = "One result per query, in order", body = BatchResponse),
    (status = 400, description = "A body the batch cannot take", body = ErrorBody),
))]
pub async fn search_post(
    State(state): State<Arc<AppState>>,
    ApiJson(batch): ApiJson<BatchRequest>,
) -> ApiResult<Json<BatchResponse>> {
    let queries = &batch.queries;
    if queries.is_empty() || queries.len() > MAX_BATCH_QUERIES {
        return Err(ApiError::bad(format!(
            "give 1 to {MAX_BATCH_QUERIES} queries, not {}",
            queries.len()
        )));
    }
    let defaults = batch.asked();
    let parsed: Vec<ApiResult<SearchRequest>> = queries
        .iter()
        .map(|q| SearchRequest::from_entry(q, &defaults))
        .collect();
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
    let results = parsed
        .into_iter()
        .map(|r| {
            let answer = r.and_then(|_| {
                answers
                    .next()
                    .unwrap_or_else(|| Err(ApiError::internal("no answer")))
            });
            match answer {
                Ok(a) => BatchResult::Answer(a),
                Err(e) => BatchResult::Error(e.body()),
            }
        })
        .collect();
    Ok(Json(BatchResponse { results }))
}

pub(super) fn parse_row(raw: &str, live: &LiveIndex) -> ApiResult<usize> {
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
    if live.index.is_deleted(row) {
        return Err(ApiError::not_found(format!(
            "row {row} was deleted (its photo left the folder or changed)"
        )));
    }
    Ok(row)
}

/// The regions most like an indexed one (itself left out).
#[utoipa::path(get, path = "/api/similar/{row}", params(("row" = u64, Path, description = "A hit's row"), SimilarParams), responses(
    (status = 200, description = "The hits, best first", body = SimilarResponse),
    (status = 400, description = "A parameter the search cannot take", body = ErrorBody),
    (status = 404, description = "No such row, or none stored for it", body = ErrorBody),
))]
pub async fn similar(
    State(state): State<Arc<AppState>>,
    ApiPath(row): ApiPath<String>,
    ApiQuery(params): ApiQuery<SimilarParams>,
) -> ApiResult<Json<SimilarResponse>> {
    let t = Instant::now();
    let live = state.index();
    let row = parse_row(&row, &live)?;
    let options = params.asked().options()?;
    within_budget(options.k, state.config.max_hits_per_request)?;
    blocking(move || {
        let (hits, run) = query::search_similar(&live.index, row, &options)
            .map_err(query_error)?
            .ok_or_else(|| ApiError::not_found(format!("row {row} has no stored embedding")))?;
        Ok(Json(SimilarResponse {
            row,
            k: options.k,
            mode: run.mode,
            ef: run.ef,
            candidates: run.candidates,
            rows: live.index.len(),
            ms: t.elapsed().as_secs_f64() * 1e3,
            hits,
        }))
    })
    .await
}

/// Everything the index holds about one region, with the addresses of its pictures.
#[derive(Debug, Serialize, ToSchema)]
pub struct RegionResponse {
    pub row: usize,
    pub image: String,
    pub image_hash: String,
    pub region_id: String,
    #[serde(rename = "box")]
    pub bbox: [f32; 4],
    #[schema(value_type = schema::CocoRle)]
    pub mask_rle: CocoRle,
    /// Pixels in the mask (absent when the stored mask cannot be read).
    pub area: Option<u64>,
    pub method: String,
    #[schema(value_type = schema::MethodInfo)]
    pub method_info: MethodInfo,
    pub source: String,
    pub label: Option<String>,
    pub created_at_ms: i64,
    pub exif_rotated: bool,
    pub crop: String,
    pub thumb: String,
    pub overlay: String,
}

fn region_response(live: &LiveIndex, row: usize) -> RegionResponse {
    let m = &live.index.rows()[row];
    let mut method_info = m.method.clone();
    method_info.model_id = public_model_id(&method_info.model_id);
    RegionResponse {
        row,
        image: m.image.clone(),
        image_hash: m.image_hash.clone(),
        region_id: m.region_id.clone(),
        bbox: m.bbox,
        mask_rle: m.mask.clone(),
        area: crate::masks::Rle::from_coco(&m.mask).map(|r| r.area()).ok(),
        method: m.method.name.clone(),
        method_info,
        source: m.source.clone(),
        label: m.label.clone(),
        created_at_ms: m.created_at_ms,
        exif_rotated: m.exif_rotated,
        crop: format!("/api/regions/{row}/crop.png"),
        thumb: format!("/api/regions/{row}/thumb.jpg"),
        overlay: format!("/api/regions/{row}/overlay.jpg"),
    }
}

/// One region of the index.
#[utoipa::path(get, path = "/api/regions/{row}", params(("row" = u64, Path, description = "A hit's row")), responses(
    (status = 200, description = "The region", body = RegionResponse),
    (status = 400, description = "Not a row number", body = ErrorBody),
    (status = 404, description = "No such row", body = ErrorBody),
))]
pub async fn region(
    State(state): State<Arc<AppState>>,
    ApiPath(row): ApiPath<String>,
) -> ApiResult<Json<RegionResponse>> {
    let live = state.index();
    let row = parse_row(&row, &live)?;
    Ok(Json(region_response(&live, row)))
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
pub(super) fn unavailable_photo(row: usize, name: &str, e: PhotoPathError) -> ApiError {
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
    params: PictureParams,
    kind: Picture,
) -> ApiResult<Response> {
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
    let side = number(
        "size",
        params.size.as_ref(),
        default_side as usize,
        16,
        MAX_PICTURE_SIDE as usize,
    )? as u32;
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

/// A picture of a region: `crop.png` (the box, the mask as alpha), `thumb.jpg` or `overlay.jpg` (the region
/// in its photo, outlined).
#[utoipa::path(get, path = "/api/regions/{row}/{picture}", params(
    ("row" = u64, Path, description = "A hit's row"),
    ("picture" = String, Path, description = "crop.png, thumb.jpg or overlay.jpg"),
    PictureParams,
), responses(
    (status = 200, description = "The picture", content_type = "image/png"),
    (status = 400, description = "A parameter the picture cannot take", body = ErrorBody),
    (status = 404, description = "No such row, picture or photo", body = ErrorBody),
))]
pub async fn picture_of(
    State(state): State<Arc<AppState>>,
    ApiPath((row, name)): ApiPath<(String, String)>,
    ApiQuery(params): ApiQuery<PictureParams>,
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
    picture(state, row, params, kind).await
}

/// How many regions have each value of a field.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Counts {
    /// Values in all.
    pub distinct: usize,
    /// The commonest values, most regions first.
    pub top: Vec<NameCount>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct NameCount {
    pub name: String,
    pub regions: u64,
}

fn counts<'a>(items: impl Iterator<Item = &'a str>, top: usize) -> Counts {
    let mut m: BTreeMap<&str, u64> = BTreeMap::new();
    for i in items {
        *m.entry(i).or_default() += 1;
    }
    let mut v: Vec<(&str, u64)> = m.into_iter().collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    Counts {
        distinct: v.len(),
        top: v
            .into_iter()
            .take(top)
            .map(|(name, regions)| NameCount {
                name: name.to_string(),
                regions,
            })
            .collect(),
    }
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

/// What a commit of the index holds.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct IndexSummary {
    pub rows: usize,
    /// What a search can return: one row per region, its best tier (the rest were superseded).
    pub regions: usize,
    /// Distinct photos (by content).
    pub images: usize,
    pub dim: usize,
    pub model: String,
    pub generation: u64,
    pub methods: Counts,
    pub labels: Counts,
    pub sources: Counts,
}

/// What the index holds, computed once per commit.
pub fn index_summary(live: &LiveIndex) -> IndexSummary {
    // Deleted rows (waiting for a compaction) are not what the index holds.
    let rows: Vec<&crate::index::RegionMeta> = live
        .index
        .rows()
        .iter()
        .enumerate()
        .filter(|(row, _)| !live.index.is_deleted(*row))
        .map(|(_, r)| r)
        .collect();
    let m = live.index.manifest();
    let images: std::collections::HashSet<&str> =
        rows.iter().map(|r| r.image_hash.as_str()).collect();
    IndexSummary {
        rows: rows.len(),
        regions: rows.len() - live.index.superseded_rows(),
        images: images.len(),
        dim: m.dim,
        model: public_model_id(&m.model_id),
        generation: m.generation,
        methods: counts(rows.iter().map(|r| r.method.name.as_str()), 50),
        labels: counts(rows.iter().filter_map(|r| r.label.as_deref()), 500),
        sources: counts(rows.iter().map(|r| r.source.as_str()), 50),
    }
}

/// The answer to `GET /api/stats`.
#[derive(Debug, Serialize, ToSchema)]
pub struct StatsResponse {
    pub index: IndexSummary,
    /// The index folder's name (never where the server keeps it).
    pub index_dir: Option<String>,
    /// The server was given `--images`, so it draws pictures.
    pub photos_served: bool,
    pub opened_at_ms: u64,
    pub uptime_s: f64,
    pub text_model: String,
    pub cache_entries: usize,
    /// Commits picked up since the server started.
    pub reloads: u64,
    pub region_search: RegionSearchInfo,
}

/// What region queries (`POST /api/search/region`) take on this server.
#[derive(Debug, Serialize, ToSchema)]
pub struct RegionSearchInfo {
    /// A point can be given (the server has SAM).
    pub sam: bool,
    /// The index's photos were turned upright by EXIF: uploads are read in that frame too.
    pub exif_rotated: bool,
    /// How regions are embedded (the index's method).
    pub method: String,
    pub max_upload_mb: usize,
}

/// What the served index holds and how the server fares.
#[utoipa::path(get, path = "/api/stats", responses((status = 200, description = "The served commit", body = StatsResponse)))]
pub async fn stats(State(state): State<Arc<AppState>>) -> Json<StatsResponse> {
    let live = state.index();
    let opened = live
        .opened_at
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let index_name = state
        .config
        .index_dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned());
    Json(StatsResponse {
        index: live.summary().clone(),
        index_dir: index_name,
        photos_served: state.config.images.is_some(),
        opened_at_ms: opened,
        uptime_s: state.started.elapsed().as_secs_f64(),
        text_model: public_model_id(&state.model_id),
        cache_entries: state.encoder.cached_entries(),
        reloads: state
            .metrics
            .reloads
            .load(std::sync::atomic::Ordering::Relaxed),
        region_search: RegionSearchInfo {
            sam: state.regions.has_sam(),
            exif_rotated: live.embedding().exif_rotated,
            method: live.embedding().method_name().to_string(),
            max_upload_mb: state.config.max_upload_bytes >> 20,
        },
    })
}

/// The answer to `GET /healthz`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// Always `"ok"`: a server that answers is up.
    pub status: &'static str,
    pub rows: usize,
    pub generation: u64,
}

/// The liveness probe (never behind the token).
#[utoipa::path(get, path = "/healthz", responses((status = 200, description = "Up", body = Health)))]
pub async fn healthz(State(state): State<Arc<AppState>>) -> Json<Health> {
    let live = state.index();
    Json(Health {
        status: "ok",
        rows: live.index.len(),
        generation: live.index.manifest().generation,
    })
}

/// Prometheus metrics.
#[utoipa::path(get, path = "/metrics", responses((status = 200, description = "The Prometheus text format", body = String, content_type = "text/plain")))]
pub async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    let live = state.index();
    let text = state.metrics.render(&AtScrape {
        index_rows: live.index.len(),
        index_generation: live.index.manifest().generation,
        cache_entries: state.encoder.cached_entries(),
        uptime_s: state.started.elapsed().as_secs_f64(),
    });
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "regionseek serve",
        description = "Search photo collections by region."
    ),
    paths(
        search_get,
        search_post,
        super::region::search_region_post,
        similar,
        region,
        picture_of,
        stats,
        healthz,
        metrics,
        openapi
    ),
    components(schemas(ErrorBody))
)]
struct ApiDoc;

/// This API's OpenAPI document.
#[utoipa::path(get, path = "/api/openapi.json", responses((status = 200, description = "OpenAPI 3.1", content_type = "application/json")))]
pub async fn openapi() -> Response {
    static DOC: OnceLock<String> = OnceLock::new();
    let doc = DOC.get_or_init(|| {
        ApiDoc::openapi().to_json().unwrap_or_else(|e| {
            format!("{{\"error\": \"the OpenAPI document: {e}\", \"status\": 500}}")
        })
    });
    ([(header::CONTENT_TYPE, "application/json")], doc.as_str()).into_response()
}

pub async fn not_found() -> ApiError {
    ApiError::not_found("no such endpoint (the API: /api/search, /api/similar/{row}, /api/regions/{row}, /api/stats, /api/openapi.json, /healthz, /metrics)")
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
