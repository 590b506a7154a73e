//! `POST /api/search/region`: query by example region. The photo comes as an upload (or as a row of the
//! index, read from `--images`), the region as a box, a point (with `--sam`) or a mask upload. The vision tower
//! is loaded on the first such query and kept; inversions run on a bounded pool of workers (`--region-workers`,
//! `--max-queued-regions`), each stopped at its next step when its request is dropped (timed out, client gone).

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::extract::{FromRequest, Multipart, Request, State};
use axum::http::{header, StatusCode};
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use crate::cancel::Cancel;
use crate::clip::ClipModel;
use crate::pipeline::query;
use crate::pipeline::region_query::{
    indexed_photo, mask_from_png, parse_box, parse_point, region_mask, search_region, RegionPrompt,
    RegionQuery, RegionQueryError, RegionSearchReport, WeightedText, MAX_TEXTS,
};
use crate::sam::SamModel;

use super::api::{
    blocking, parse_row, query_error, unavailable_photo, within_budget, RegionParams,
};
use super::extract::{ApiError, ApiResult, ErrorBody, Fields};
use super::{AppState, ServeConfig};

/// The vision tower (loaded on first use), SAM (when given), and the slots region queries run in.
pub struct RegionService {
    model: Arc<tokio::sync::OnceCell<Arc<ClipModel>>>,
    sam: Option<Arc<Mutex<SamModel>>>,
    workers: Arc<tokio::sync::Semaphore>,
    /// Region queries let in at once (running and waiting): taken before an upload is read, so that
    /// uploads beyond what can be served are refused before they take memory.
    admitted: Arc<tokio::sync::Semaphore>,
    worker_count: usize,
    max_waiting: usize,
}

impl RegionService {
    pub fn new(config: &ServeConfig) -> anyhow::Result<Self> {
        let sam = match &config.sam {
            Some(dir) => {
                let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
                let model = SamModel::load_dir(dir, Default::default(), threads).map_err(|e| {
                    anyhow::anyhow!("loading SAM from {} (--sam): {e}", dir.display())
                })?;
                Some(Arc::new(Mutex::new(model)))
            }
            None => None,
        };
        let workers = config.region_workers.max(1);
        Ok(Self {
            model: Default::default(),
            sam,
            workers: Arc::new(tokio::sync::Semaphore::new(workers)),
            admitted: Arc::new(tokio::sync::Semaphore::new(
                workers + config.max_queued_regions,
            )),
            worker_count: workers,
            max_waiting: config.max_queued_regions,
        })
    }

    pub fn has_sam(&self) -> bool {
        self.sam.is_some()
    }

    /// A place among the region queries let in (running or waiting), or 503 when they are all taken.
    pub fn admit(&self) -> Result<tokio::sync::OwnedSemaphorePermit, ApiError> {
        self.admitted.clone().try_acquire_owned().map_err(|_| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "{} region queries are running or waiting already (serve --region-workers {}, \
                     --max-queued-regions {}): try again shortly",
                    self.worker_count + self.max_waiting,
                    self.worker_count,
                    self.max_waiting
                ),
            )
        })
    }

    /// The index's whole model, loaded by the first region query (text-only servers never read the vision
    /// weights) and kept. The load runs in a task of its own that fills the cell whatever becomes of the
    /// request that started it: a first query that times out does not throw a half-done load away.
    async fn model(&self, state: &Arc<AppState>) -> ApiResult<Arc<ClipModel>> {
        if let Some(model) = self.model.get() {
            return Ok(model.clone());
        }
        let cell = self.model.clone();
        let spec = state.config.model.clone();
        let device = state.config.device.clone();
        let live = state.index();
        let load = tokio::spawn(async move {
            cell.get_or_try_init(|| {
                blocking(move || {
                    let t = Instant::now();
                    // Logged in full here; the client is told without the server's paths.
                    let model = query::load_model(&live.index, spec.as_deref(), &device).map_err(|e| {
                        tracing::error!("loading the vision tower for region queries: {e}");
                        ApiError::internal(
                            "the index's model cannot be loaded for region queries (the server's log says why)",
                        )
                    })?;
                    tracing::info!(
                        "vision tower of {} ready for region queries in {:.1} s",
                        model.id(),
                        t.elapsed().as_secs_f64()
                    );
                    Ok(Arc::new(model))
                })
            })
            .await
            .cloned()
        });
        load.await
            .map_err(|e| ApiError::internal(format!("loading the model failed: {e}")))?
    }

    /// A worker, waited for within the request's timeout (the layer around every handler); the admission
    /// taken before the body was read bounds how many wait.
    async fn slot(&self) -> ApiResult<tokio::sync::OwnedSemaphorePermit> {
        self.workers
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| ApiError::internal("the server is stopping"))
    }
}

/// Cancels the work it guards when dropped: a request dropped by its timeout stops its inversion at the next
/// step instead of holding a worker for nothing.
struct CancelOnDrop(Cancel);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

/// The answer to `POST /api/search/region`.
#[derive(Debug, Serialize, ToSchema)]
pub struct RegionSearchResponse {
    #[serde(flatten)]
    pub report: RegionSearchReport,
    pub k: usize,
    /// Regions in the served commit.
    pub rows: usize,
    /// With `row`: the indexed photo the query region is on (its name as indexed).
    pub photo: Option<String>,
}

/// What a request carries, read from the query string and the form.
struct RegionRequest {
    params: RegionParams,
    texts: Vec<WeightedText>,
    image: Option<Vec<u8>>,
    mask: Option<Vec<u8>>,
}

/// Search for regions like a region of a photo.
#[utoipa::path(post, path = "/api/search/region", params(RegionParams),
    request_body(content_type = "multipart/form-data", description = "`image` (a photo file) and optionally `mask` (a PNG of the photo's size); any parameter may also come as a form field, `text` and `minus` repeated"),
    responses(
        (status = 200, description = "The hits, best first, and the query region", body = RegionSearchResponse),
        (status = 400, description = "A photo, region or parameter the query cannot take", body = ErrorBody),
        (status = 404, description = "No such row, or its photo is not served", body = ErrorBody),
        (status = 408, description = "The query ran past the server's time limit", body = ErrorBody),
        (status = 413, description = "The upload is over serve --max-upload-mb", body = ErrorBody),
        (status = 503, description = "Too many region queries are waiting", body = ErrorBody),
))]
pub async fn search_region_post(
    State(state): State<Arc<AppState>>,
    request: Request,
) -> ApiResult<Json<RegionSearchResponse>> {
    let asked = read_request(&state, request).await?;
    let options = asked.params.asked().options()?;
    within_budget(options.k, state.config.max_hits_per_request)?;
    let live = state.index();
    let row = match asked.params.row.as_ref() {
        Some(r) => Some(parse_row(&r.text(), &live)?),
        None => None,
    };
    let prompt_given = [
        asked.mask.is_some(),
        asked.params.bbox.is_some(),
        asked.params.point.is_some(),
    ];
    if prompt_given.iter().filter(|g| **g).count() > 1 {
        return Err(ApiError::bad(
            "give one region: a box, a point or a mask (or none for the whole photo)",
        ));
    }
    let photo_hit = match (row, &asked.image) {
        (Some(_), Some(_)) => {
            return Err(ApiError::bad(
                "give the photo once: an image upload or a row of the index, not both",
            ))
        }
        (None, None) => {
            return Err(ApiError::bad(
                "no photo: upload one as the form field \"image\", or give the row of a region on a photo already in the index",
            ))
        }
        (Some(row), None) => {
            let hit = live
                .index
                .region(row)
                .ok_or_else(|| ApiError::not_found(format!("no row {row}")))?;
            if state.config.images.is_none() {
                return Err(ApiError::not_found(
                    "this server was started without --images DIR, so it cannot read the photo of a row: upload it instead",
                ));
            }
            Some((row, hit))
        }
        (None, Some(_)) => None,
    };
    if asked.params.point.is_some() && !state.regions.has_sam() {
        return Err(ApiError::bad(RegionQueryError::NoSam.to_string()));
    }
    let prompt_box = asked.params.bbox.as_deref().map(parse_box).transpose();
    let prompt_point = asked.params.point.as_deref().map(parse_point).transpose();
    let (prompt_box, prompt_point) = (
        prompt_box.map_err(region_error)?,
        prompt_point.map_err(region_error)?,
    );

    let slot = state.regions.slot().await?;
    let model = state.regions.model(&state).await?;
    let cancel = Cancel::default();
    let _stop_when_dropped = CancelOnDrop(cancel.clone());
    let sam = state.regions.sam.clone();
    let images = state.config.images.clone();
    let max_pixels = state.config.max_upload_pixels;
    let t = Instant::now();
    let k = options.k;
    let work_live = live.clone();
    let (report, photo) = blocking(move || {
        // Held by the work, not the request: a query whose client left keeps its worker until it has
        // stopped, so abandoned inversions never pile up beyond --region-workers.
        let _slot = slot;
        let live = work_live;
        let how = live.embedding();
        let (image, photo) = match &photo_hit {
            Some((row, hit)) => {
                let root = images.as_deref().expect("checked before");
                let image = indexed_photo(root, hit, max_pixels).map_err(|e| match e {
                    RegionQueryError::IndexedPhoto { name, source } => {
                        unavailable_photo(*row, &name, source)
                    }
                    other => region_error(other),
                })?;
                (image, Some(hit.image.clone()))
            }
            None => {
                let bytes = asked.image.as_deref().expect("checked before");
                let image = crate::decode::decode_rgb(
                    bytes,
                    Path::new("the uploaded photo"),
                    &how.decode_options(max_pixels),
                )
                .map_err(|e| {
                    // The decoder's hint names the CLI's flag; a server's limit is its own.
                    let message = e
                        .message
                        .replace("--max-pixels", "serve --max-upload-pixels");
                    ApiError::bad(format!("the uploaded photo: {message}"))
                })?;
                (image, None)
            }
        };
        let prompt = match (&asked.mask, prompt_box, prompt_point) {
            (Some(png), _, _) => RegionPrompt::Mask(
                mask_from_png(png, (image.width() as u64 * image.height() as u64).max(1))
                    .map_err(region_error)?,
            ),
            (_, Some(b), _) => RegionPrompt::Box(b),
            (_, _, Some(p)) => RegionPrompt::Point(p),
            _ => RegionPrompt::WholePhoto,
        };
        let described = describe(&prompt, photo.as_deref());
        // SAM is held only while it turns a point into a mask, never through an inversion.
        let prompt = match (&prompt, &sam) {
            (RegionPrompt::Point(_), Some(sam)) => {
                let mut sam = sam.lock().unwrap_or_else(|p| p.into_inner());
                match region_mask(&image, &prompt, Some(&mut sam)).map_err(region_error)? {
                    Some(mask) => RegionPrompt::Mask(mask),
                    None => prompt,
                }
            }
            _ => prompt,
        };
        let query = RegionQuery {
            image: &image,
            prompt,
            texts: asked.texts,
        };
        let found = search_region(&live.index, how, &model, &query, &options, None, &cancel)
            .map_err(region_error)?;
        Ok((
            RegionSearchReport::new(&described, found, t.elapsed().as_secs_f64() * 1e3),
            photo,
        ))
    })
    .await?;
    Ok(Json(RegionSearchResponse {
        report,
        k,
        rows: live.index.len(),
        photo,
    }))
}

fn describe(prompt: &RegionPrompt, photo: Option<&str>) -> String {
    let region = match prompt {
        RegionPrompt::WholePhoto => "the whole photo".to_string(),
        RegionPrompt::Mask(_) => "a mask".to_string(),
        RegionPrompt::Box(b) => format!("box {},{},{},{}", b[0], b[1], b[2], b[3]),
        RegionPrompt::Point(p) => format!("point {},{}", p[0], p[1]),
    };
    format!("{}, {region}", photo.unwrap_or("the uploaded photo"))
}

/// A region query's refusal: the asker's mistake is a 400 in its own words, the server's failures a 500.
fn region_error(e: RegionQueryError) -> ApiError {
    match e {
        RegionQueryError::Query(q) => query_error(q),
        RegionQueryError::Cancelled => ApiError::new(StatusCode::REQUEST_TIMEOUT, e.to_string()),
        e if e.is_user_error() => ApiError::bad(e.to_string()),
        e => {
            tracing::warn!("a region query failed: {e}");
            ApiError::internal(e.to_string())
        }
    }
}

/// The query string's parameters and, for a form, its fields and files; a parameter given twice is refused
/// (but `text` and `minus`, which add up).
async fn read_request(state: &Arc<AppState>, request: Request) -> ApiResult<RegionRequest> {
    let mut pairs: Vec<(String, String)> = match request.uri().query() {
        Some(q) => serde_urlencoded::from_str(q)
            .map_err(|_| ApiError::bad("the query string is not valid form encoding"))?,
        None => Vec::new(),
    };
    let (mut image, mut mask) = (None, None);
    let is_form = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().starts_with("multipart/form-data"));
    if is_form {
        let mut form = Multipart::from_request(request, state)
            .await
            .map_err(|e| ApiError::bad(format!("the form cannot be read: {}", e.body_text())))?;
        while let Some(field) = form
            .next_field()
            .await
            .map_err(|e| ApiError::bad(format!("the form cannot be read: {}", e.body_text())))?
        {
            let name = field.name().unwrap_or_default().to_string();
            let bytes = field.bytes().await.map_err(|e| {
                ApiError::bad(format!("the form field {name:?}: {}", e.body_text()))
            })?;
            let slot = match name.as_str() {
                "image" => &mut image,
                "mask" => &mut mask,
                _ => {
                    let value = String::from_utf8(bytes.to_vec()).map_err(|_| {
                        ApiError::bad(format!("the form field {name:?} is not UTF-8 text"))
                    })?;
                    pairs.push((name, value));
                    continue;
                }
            };
            if slot.is_some() {
                return Err(ApiError::bad(format!("the form has two {name:?} files")));
            }
            if bytes.is_empty() {
                return Err(ApiError::bad(format!("the form's {name:?} file is empty")));
            }
            *slot = Some(bytes.to_vec());
        }
    } else if request
        .headers()
        .get(header::CONTENT_LENGTH)
        .is_some_and(|v| v.as_bytes() != b"0")
        || request.headers().contains_key(header::TRANSFER_ENCODING)
    {
        return Err(ApiError::bad(
            "send the photo as multipart/form-data (a form with an \"image\" file), or no body with ?row=N",
        ));
    }
    let text_fields = pairs
        .iter()
        .filter(|(n, v)| (n == "text" || n == "minus") && !v.trim().is_empty())
        .count();
    if text_fields > MAX_TEXTS {
        return Err(region_error(RegionQueryError::TooManyTexts(text_fields)));
    }
    let mut texts = Vec::new();
    let mut rest: Vec<(String, String)> = Vec::new();
    for (name, value) in pairs {
        match name.as_str() {
            "text" | "minus" => {
                if value.trim().is_empty() {
                    continue;
                }
                if value.len() > super::api::MAX_QUERY_BYTES {
                    return Err(ApiError::bad(format!(
                        "a text is at most {} bytes",
                        super::api::MAX_QUERY_BYTES
                    )));
                }
                let t: WeightedText = value.parse().map_err(region_error)?;
                texts.push(if name == "minus" { t.negated() } else { t });
            }
            _ => {
                if rest.iter().any(|(n, _)| *n == name) {
                    return Err(ApiError::bad(format!(
                        "the parameter {name:?} is given twice"
                    )));
                }
                rest.push((name, value));
            }
        }
    }
    let encoded = serde_urlencoded::to_string(&rest)
        .map_err(|_| ApiError::bad("the parameters cannot be read"))?;
    let params: RegionParams = serde_urlencoded::from_str(&encoded).map_err(|e| {
        ApiError::from_serde(&e.to_string(), StatusCode::BAD_REQUEST, Fields::Query)
    })?;
    Ok(RegionRequest {
        params,
        texts,
        image,
        mask,
    })
}
