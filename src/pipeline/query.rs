//! Text against regions: searching an index, zero-shot classification of regions, and the paper's COCO
//! class-retrieval evaluation (each object mask against "a photo of a {}." of every category).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use crate::clip::{ClipModel, TextEncoder, TextModel};
use crate::index::{Filter, Hit, RegionIndex, SearchMode, SearchRun};
use crate::invert::InversionConfig;
use crate::masks::BinaryMask;

use super::inputs::{given_mask, ImageInput};
use super::run::{embed_masks, weights_fingerprint};
use super::spec::EmbedStage;

/// The paper's prompt template for class names.
pub const PROMPT: &str = "a photo of a {}.";

pub fn prompt(label: &str) -> String {
    PROMPT.replace("{}", label)
}

pub(crate) fn unit(v: &[f32]) -> Vec<f32> {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
    v.iter().map(|x| x / n).collect()
}

/// Unit text embeddings, one per text.
pub fn text_embeddings(
    model: &(impl TextEncoder + ?Sized),
    texts: &[String],
) -> anyhow::Result<Vec<Vec<f32>>> {
    let mut out = Vec::with_capacity(texts.len());
    for chunk in texts.chunks(64) {
        let t = model.embed_texts(chunk)?;
        out.extend(t.to_vec2::<f32>()?.iter().map(|v| unit(v)));
    }
    Ok(out)
}

/// A text query's answer, with what a caller should tell its user about how it ran.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SearchAnswer {
    pub hits: Vec<Hit>,
    #[serde(flatten)]
    pub run: SearchRun,
    /// Tokens of the query with its start and end tokens.
    pub query_tokens: usize,
    /// The query was longer than the text tower's context and was cut (as CLIP cuts it).
    pub truncated: bool,
}

/// A text search's answer as front doors report it (the CLI's `search --json`, each answer of `serve`'s
/// `/api/search`); each adds what only it knows beside it. Serialised from the structs, never through a
/// `serde_json::Value`, which would widen f32 boxes and scores to f64 (334.3699951171875 for the 334.37 that
/// was indexed).
#[derive(Debug, Clone, serde::Serialize)]
#[cfg_attr(feature = "serve", derive(utoipa::ToSchema))]
pub struct SearchReport {
    pub query: String,
    /// Time to answer, in milliseconds.
    pub ms: f64,
    /// `"exact"` or `"hnsw"`.
    pub mode: &'static str,
    /// The graph's beam width, for `"hnsw"`.
    pub ef: Option<usize>,
    /// Rows the filter keeps (all rows without a filter).
    pub candidates: usize,
    /// Tokens of the query with its start and end tokens.
    pub query_tokens: usize,
    /// The query was longer than the text tower's context and was cut.
    pub truncated: bool,
    #[cfg_attr(feature = "serve", schema(value_type = Vec<crate::serve::schema::Hit>))]
    pub hits: Vec<Hit>,
}

impl SearchReport {
    pub fn new(query: &str, answer: SearchAnswer, ms: f64) -> Self {
        Self {
            query: query.to_string(),
            ms,
            mode: answer.run.mode,
            ef: answer.run.ef,
            candidates: answer.run.candidates,
            query_tokens: answer.query_tokens,
            truncated: answer.truncated,
            hits: answer.hits,
        }
    }
}

/// Hits a search returns unless asked for another number.
pub const DEFAULT_K: usize = 10;
/// The widest graph beam a front door accepts (beyond it a search is slower than scanning).
pub const MAX_EF: usize = 100_000;

/// Why a query cannot run, in words a user of any front door understands.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("k must be at least 1")]
    NoHitsAsked,
    #[error("ef must be at least 1")]
    NoBeam,
    #[error("ef is at most {MAX_EF}")]
    BeamTooWide,
    #[error("give exact or ef, not both")]
    ExactAndBeam,
    #[error("min_score is a cosine similarity, from -1 to 1 (got {0})")]
    MinScoreOutOfRange(f32),
    #[error("the query text is empty")]
    EmptyText,
    #[error(
        "{given} numbers were given as a query vector, but the index holds {dim}-d embeddings"
    )]
    WrongDimension { given: usize, dim: usize },
    #[error("the query vector has NaN or infinite values")]
    NotFinite,
    /// A filter that keeps no row: the user's mistake, said with what the index holds.
    #[error("nothing to search: {0}")]
    NothingToSearch(String),
    /// The index's model cannot be loaded (its files moved, or were never fetched here): each front door
    /// adds how to give its folder.
    #[error("loading the index's model {spec}: {message}")]
    Model { spec: String, message: String },
    /// The model given embeds into another space than the index's.
    #[error("{0}")]
    Space(String),
    #[error("{0}")]
    Index(#[from] crate::index::IndexError),
    #[error("embedding the query failed: {0}")]
    Embed(String),
}

/// What one hit stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Grouping {
    /// Each region on its own.
    #[default]
    Region,
    /// The best region of each photo, with how many more of its regions matched (`other_matches`).
    Photo,
}

crate::choice::named_choice!(Grouping, "grouping", { Region => "region", Photo => "photo" });

/// With hits grouped by photo, regions searched per photo asked for at first (then four times more while
/// too few photos come back): photos hold a handful of regions that match a query at once.
const REGIONS_PER_PHOTO_SEARCHED: usize = 8;

/// How a search runs, the same for every front door: how many hits, which rows, exact or through the graph,
/// the relevance cut-off and whether hits are regions or photos.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchOptions {
    pub k: usize,
    pub filter: Filter,
    pub mode: SearchMode,
    /// Only hits scoring at least this (cosine similarity).
    pub min_score: Option<f32>,
    pub group: Grouping,
}

impl Default for SearchOptions {
    fn default() -> Self {
        Self {
            k: DEFAULT_K,
            filter: Filter::default(),
            mode: SearchMode::Auto,
            min_score: None,
            group: Grouping::Region,
        }
    }
}

impl SearchOptions {
    /// From the words every front door takes: `k`, `exact` (scan every candidate) or `ef` (the graph's
    /// beam), and the filters.
    pub fn new(
        k: usize,
        filter: Filter,
        exact: bool,
        ef: Option<usize>,
    ) -> Result<Self, QueryError> {
        if k == 0 {
            return Err(QueryError::NoHitsAsked);
        }
        let mode = match (exact, ef) {
            (true, Some(_)) => return Err(QueryError::ExactAndBeam),
            (_, Some(0)) => return Err(QueryError::NoBeam),
            (_, Some(ef)) if ef > MAX_EF => return Err(QueryError::BeamTooWide),
            (true, None) => SearchMode::Exact,
            (false, Some(ef)) => SearchMode::Approximate { ef },
            (false, None) => SearchMode::Auto,
        };
        Ok(Self {
            k,
            filter,
            mode,
            ..Default::default()
        })
    }

    /// Keeps only hits scoring at least `min_score` (a cosine similarity, from -1 to 1).
    pub fn with_min_score(mut self, min_score: Option<f32>) -> Result<Self, QueryError> {
        if let Some(m) = min_score {
            if !(-1.0..=1.0).contains(&m) {
                return Err(QueryError::MinScoreOutOfRange(m));
            }
        }
        self.min_score = min_score;
        Ok(self)
    }

    pub fn grouped(mut self, group: Grouping) -> Self {
        self.group = group;
        self
    }
}

/// The text tower an index's queries are embedded with: its own model unless `model` names another, which
/// must embed into the same space. Only the text tower is read.
pub fn load_text_model(
    index: &RegionIndex,
    model: Option<&str>,
    device: &candle_core::Device,
) -> Result<TextModel, QueryError> {
    let spec = model.map_or_else(|| index.manifest().model_id.clone(), str::to_string);
    let loaded = TextModel::load_spec(&spec, device).map_err(|e| QueryError::Model {
        spec: spec.clone(),
        message: e.to_string(),
    })?;
    check_model(index, &loaded).map_err(|e| QueryError::Space(format!("{e:#}")))?;
    Ok(loaded)
}

/// The index's whole model (both towers: a region query embeds with the vision tower), checked to embed into
/// the index's space; `model` overrides the one its manifest names.
pub fn load_model(
    index: &RegionIndex,
    model: Option<&str>,
    device: &candle_core::Device,
) -> Result<ClipModel, QueryError> {
    let spec = model.map_or_else(|| index.manifest().model_id.clone(), str::to_string);
    let loaded = ClipModel::load_spec(&spec, device).map_err(|e| QueryError::Model {
        spec: spec.clone(),
        message: e.to_string(),
    })?;
    check_model(index, &loaded).map_err(|e| QueryError::Space(format!("{e:#}")))?;
    Ok(loaded)
}

/// The regions of an index closest to a text query. The model must be the one the index was built with.
pub fn search_text(
    index: &RegionIndex,
    model: &(impl TextEncoder + ?Sized),
    text: &str,
    options: &SearchOptions,
) -> Result<SearchAnswer, QueryError> {
    check_model(index, model).map_err(|e| QueryError::Space(format!("{e:#}")))?;
    let query = embed_query(model, text)?;
    search_query(index, &query, options)
}

/// Refuses a model whose embedding space is not the index's.
pub fn check_model(index: &RegionIndex, model: &(impl TextEncoder + ?Sized)) -> anyhow::Result<()> {
    index.check_space(
        model.config().embed_dim,
        &model.id(),
        &weights_fingerprint(model.weights_dir(), &model.id()),
    )?;
    Ok(())
}

/// A query text as the index searches it: its unit embedding and how the tokenizer read it.
#[derive(Debug, Clone)]
pub struct TextQuery {
    pub embedding: Vec<f32>,
    pub query_tokens: usize,
    pub truncated: bool,
}

impl TextQuery {
    /// A query that is a vector already (a region's embedding, one computed elsewhere): checked and made
    /// unit length.
    pub fn from_vector(vector: &[f32], dim: usize) -> Result<Self, QueryError> {
        if vector.len() != dim {
            return Err(QueryError::WrongDimension {
                given: vector.len(),
                dim,
            });
        }
        if vector.iter().any(|v| !v.is_finite()) {
            return Err(QueryError::NotFinite);
        }
        Ok(Self {
            embedding: unit(vector),
            query_tokens: 0,
            truncated: false,
        })
    }
}

/// Embeds one query text (see [`embed_queries`]).
pub fn embed_query(
    model: &(impl TextEncoder + ?Sized),
    text: &str,
) -> Result<TextQuery, QueryError> {
    Ok(embed_queries(model, &[text.to_string()])?.remove(0))
}

/// Embeds query texts in batches; an empty text is refused, a text longer than the context is cut as CLIP
/// cuts it (and said so).
pub fn embed_queries(
    model: &(impl TextEncoder + ?Sized),
    texts: &[String],
) -> Result<Vec<TextQuery>, QueryError> {
    let context = model.config().text.context_length;
    let mut counts = Vec::with_capacity(texts.len());
    for t in texts {
        if t.trim().is_empty() {
            return Err(QueryError::EmptyText);
        }
        counts.push(
            model
                .token_count(t)
                .map_err(|e| QueryError::Embed(e.to_string()))?,
        );
    }
    let embeddings =
        text_embeddings(model, texts).map_err(|e| QueryError::Embed(format!("{e:#}")))?;
    Ok(embeddings
        .into_iter()
        .zip(counts)
        .map(|(embedding, query_tokens)| TextQuery {
            embedding,
            query_tokens,
            truncated: query_tokens > context,
        })
        .collect())
}

/// Searches an index with an embedded query. A filter that keeps no row is refused with what the index
/// holds (asked only when the search found no candidate, so that a good filter is not scanned twice).
pub fn search_query(
    index: &RegionIndex,
    query: &TextQuery,
    options: &SearchOptions,
) -> Result<SearchAnswer, QueryError> {
    let (hits, run) = match options.group {
        Grouping::Region => {
            let (hits, run) = index.search_explained(
                &query.embedding,
                options.k,
                &options.filter,
                options.mode,
            )?;
            (above(hits, options.min_score), run)
        }
        Grouping::Photo => best_per_photo(index, &query.embedding, options, None)?,
    };
    if run.candidates == 0 {
        if let Some(why) = explain_empty_filter(index, &options.filter) {
            return Err(QueryError::NothingToSearch(why));
        }
    }
    Ok(SearchAnswer {
        hits,
        run,
        query_tokens: query.query_tokens,
        truncated: query.truncated,
    })
}

/// Hits scoring at least `min_score` (hits come best first).
fn above(mut hits: Vec<Hit>, min_score: Option<f32>) -> Vec<Hit> {
    if let Some(m) = min_score {
        hits.retain(|h| h.score >= m);
    }
    hits
}

/// The best region of each of the `k` best photos, each with how many more of its regions matched: scored at
/// least `min_score`, or without one, at least the last photo's best (the regions an ungrouped list would show
/// down to the same score). Regions are searched, four times more each round, until every region above that
/// score is in hand or none are left.
fn best_per_photo(
    index: &RegionIndex,
    query: &[f32],
    options: &SearchOptions,
    leave_out: Option<u64>,
) -> Result<(Vec<Hit>, SearchRun), QueryError> {
    let mut asked = options.k.saturating_mul(REGIONS_PER_PHOTO_SEARCHED);
    loop {
        let (mut hits, run) =
            index.search_explained(query, asked, &options.filter, options.mode)?;
        let searched_all = hits.len() < asked || asked >= run.candidates;
        hits.retain(|h| Some(h.row) != leave_out);
        let lowest = hits.last().map_or(f32::NEG_INFINITY, |h| h.score);
        let bar = options
            .min_score
            .or_else(|| best_of_kth_photo(&hits, options.k));
        let all_above_bar_found = bar.is_some_and(|bar| lowest < bar);
        if searched_all || all_above_bar_found {
            let matching = above(hits, bar);
            return Ok((
                group_by_photo(matching)
                    .into_iter()
                    .take(options.k)
                    .collect(),
                run,
            ));
        }
        asked = asked.saturating_mul(4).min(run.candidates);
    }
}

/// The best score of the `k`-th photo among hits (best first), None with fewer photos.
fn best_of_kth_photo(hits: &[Hit], k: usize) -> Option<f32> {
    let mut seen = std::collections::HashSet::new();
    hits.iter()
        .filter(|h| seen.insert(h.image.as_str()))
        .nth(k.saturating_sub(1))
        .map(|h| h.score)
}

/// Per photo (by its path as indexed) its best hit, `other_matches` set to the count of the others; in the
/// order of their best hits.
fn group_by_photo(hits: Vec<Hit>) -> Vec<Hit> {
    let mut order: Vec<Hit> = Vec::new();
    let mut at: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    for hit in hits {
        match at.get(&hit.image) {
            Some(&i) => *order[i].other_matches.get_or_insert(0) += 1,
            None => {
                at.insert(hit.image.clone(), order.len());
                order.push(Hit {
                    other_matches: Some(0),
                    ..hit
                });
            }
        }
    }
    order
}

/// The regions most like an indexed one (itself left out); None when the row has no stored embedding.
pub fn search_similar(
    index: &RegionIndex,
    row: usize,
    options: &SearchOptions,
) -> Result<Option<(Vec<Hit>, SearchRun)>, QueryError> {
    let (hits, run) = match options.group {
        Grouping::Region => {
            let Some((hits, run)) = index.similar(row, options.k, &options.filter, options.mode)?
            else {
                return Ok(None);
            };
            (above(hits, options.min_score), run)
        }
        Grouping::Photo => {
            let Some(like) = index.embedding(row) else {
                return Ok(None);
            };
            best_per_photo(index, &like, options, Some(row as u64))?
        }
    };
    if run.candidates == 0 {
        if let Some(why) = explain_empty_filter(index, &options.filter) {
            return Err(QueryError::NothingToSearch(why));
        }
    }
    Ok(Some((hits, run)))
}

/// An index opened for text queries, with the text tower of its model: what the CLI and Python search with.
/// (`serve` shares every piece but holds them apart: it swaps in new commits of the index under a text
/// tower that batches queries from many requests.)
pub struct Searcher {
    index: RegionIndex,
    model: Arc<dyn TextEncoder + Send + Sync>,
}

impl Searcher {
    /// Opens the index and its text tower (`model` overrides the one its manifest names).
    pub fn open(
        dir: &Path,
        model: Option<&str>,
        device: &candle_core::Device,
    ) -> Result<Self, QueryError> {
        let index = RegionIndex::open(dir)?;
        let model = load_text_model(&index, model, device)?;
        Ok(Self {
            index,
            model: Arc::new(model),
        })
    }

    /// An opened index with a model already loaded (checked to embed into the index's space).
    pub fn with_model(
        index: RegionIndex,
        model: Arc<dyn TextEncoder + Send + Sync>,
    ) -> Result<Self, QueryError> {
        check_model(&index, model.as_ref()).map_err(|e| QueryError::Space(format!("{e:#}")))?;
        Ok(Self { index, model })
    }

    pub fn index(&self) -> &RegionIndex {
        &self.index
    }

    pub fn model(&self) -> &(dyn TextEncoder + Send + Sync) {
        self.model.as_ref()
    }

    pub fn search(&self, text: &str, options: &SearchOptions) -> Result<SearchAnswer, QueryError> {
        let query = embed_query(self.model.as_ref(), text)?;
        search_query(&self.index, &query, options)
    }

    /// Searches with a vector (any scale: it is normalised).
    pub fn search_vector(
        &self,
        vector: &[f32],
        options: &SearchOptions,
    ) -> Result<SearchAnswer, QueryError> {
        search_query(
            &self.index,
            &TextQuery::from_vector(vector, self.index.dim())?,
            options,
        )
    }
}

/// The rows of an index not deleted.
fn live_rows(index: &RegionIndex) -> impl Iterator<Item = &crate::index::RegionMeta> {
    index
        .rows()
        .iter()
        .enumerate()
        .filter(|(row, _)| !index.is_deleted(*row))
        .map(|(_, m)| m)
}

/// Why a filter keeps no row of an index, in the words of the flags that set it; None when it keeps some
/// or the index is empty.
pub fn explain_empty_filter(index: &RegionIndex, filter: &Filter) -> Option<String> {
    if index.is_empty() || index.count_matching(filter) > 0 {
        return None;
    }
    let distinct = |f: &dyn Fn(&crate::index::RegionMeta) -> Option<&str>| {
        let set: std::collections::BTreeSet<&str> = live_rows(index).filter_map(f).collect();
        let n = set.len();
        let shown: Vec<&str> = set.into_iter().take(8).collect();
        format!("{}{}", shown.join(", "), if n > 8 { ", ..." } else { "" })
    };
    let mut why = Vec::new();
    if let Some(m) = &filter.method {
        if !live_rows(index).any(|r| r.method.name == *m) {
            why.push(format!(
                "no region was embedded with method {m:?} (the index holds: {})",
                distinct(&|r| Some(r.method.name.as_str()))
            ));
        }
    }
    if let Some(i) = &filter.image {
        if !live_rows(index).any(|r| r.image == *i || r.image_hash == *i) {
            why.push(format!(
                "no photo {i:?} is indexed (give its path as indexed, e.g. {}, or its sha256)",
                distinct(&|r| Some(r.image.as_str()))
            ));
        }
    }
    if let Some(l) = &filter.label {
        if !live_rows(index).any(|r| r.label.as_deref() == Some(l)) {
            why.push(format!(
                "no region has label {l:?} (labels: {})",
                distinct(&|r| r.label.as_deref())
            ));
        }
    }
    if let Some(s) = &filter.source {
        if !live_rows(index).any(|r| r.source == *s) {
            why.push(format!(
                "no region comes from source {s:?} (sources: {})",
                distinct(&|r| Some(r.source.as_str()))
            ));
        }
    }
    why.extend(photo_meta_reasons(index, filter));
    if why.is_empty() {
        why.push("no region matches all the filters together".into());
    }
    Some(why.join("; "))
}

/// Why the metadata words of a filter keep no photo: each word that alone keeps none, with what the
/// photos' metadata holds.
fn photo_meta_reasons(index: &RegionIndex, filter: &Filter) -> Vec<String> {
    let rows = index.rows();
    let alone = |f: Filter| rows.iter().any(|r| f.matches_photo(&r.photo));
    let mut why = Vec::new();
    if filter.after_ms.is_some() || filter.before_ms.is_some() {
        let range = Filter {
            after_ms: filter.after_ms,
            before_ms: filter.before_ms,
            ..Filter::default()
        };
        if !alone(range) {
            let times: Vec<&str> = rows
                .iter()
                .filter_map(|r| Some((r.photo.taken_at_ms?, r.photo.taken_at.as_deref()?)))
                .fold(
                    None,
                    |span: Option<((i64, &str), (i64, &str))>, t| match span {
                        None => Some((t, t)),
                        Some((lo, hi)) => Some((
                            if t.0 < lo.0 { t } else { lo },
                            if t.0 > hi.0 { t } else { hi },
                        )),
                    },
                )
                .map(|(lo, hi)| vec![lo.1, hi.1])
                .unwrap_or_default();
            why.push(match times.as_slice() {
                [first, last] => format!(
                    "no photo was taken in that time range (the photos' capture times run from {first} to {last})"
                ),
                _ => "no indexed photo has a capture time (EXIF DateTimeOriginal)".into(),
            });
        }
    }
    if let Some(c) = &filter.camera {
        if !alone(Filter {
            camera: Some(c.clone()),
            ..Filter::default()
        }) {
            let cameras: std::collections::BTreeSet<&str> = rows
                .iter()
                .filter_map(|r| r.photo.camera.as_deref())
                .collect();
            why.push(if cameras.is_empty() {
                "no indexed photo names its camera (EXIF Make/Model)".into()
            } else {
                let shown: Vec<&str> = cameras.iter().copied().take(8).collect();
                let more = if cameras.len() > 8 { ", ..." } else { "" };
                format!(
                    "no photo was taken with a camera matching {c:?} (cameras: {}{more})",
                    shown.join(", ")
                )
            });
        }
    }
    if let Some((lat, lon, km)) = filter.near {
        if !alone(Filter {
            near: filter.near,
            ..Filter::default()
        }) {
            let nearest = rows
                .iter()
                .filter_map(|r| r.photo.gps)
                .map(|g| crate::index::haversine_km(g, [lat, lon]))
                .fold(None, |m: Option<f64>, d| Some(m.map_or(d, |m| m.min(d))));
            why.push(match nearest {
                Some(d) => format!(
                    "no photo was taken within {km} km of {lat},{lon} (the nearest is {d:.1} km away)"
                ),
                None => "no indexed photo has a GPS position (EXIF GPS)".into(),
            });
        }
    }
    why
}

/// Labels ranked for one region embedding: (label, softmax probability), best first.
pub fn rank_labels(
    model: &ClipModel,
    region: &[f32],
    labels: &[String],
    texts: &[Vec<f32>],
) -> Vec<(String, f32)> {
    let e = unit(region);
    let logits: Vec<f32> = texts
        .iter()
        .map(|t| model.logit_scale * t.iter().zip(&e).map(|(a, b)| a * b).sum::<f32>())
        .collect();
    let mx = logits.iter().copied().fold(f32::MIN, f32::max);
    let z: f32 = logits.iter().map(|l| (l - mx).exp()).sum();
    let mut r: Vec<(String, f32)> = labels
        .iter()
        .cloned()
        .zip(logits.iter().map(|l| (l - mx).exp() / z))
        .collect();
    r.sort_by(|x, y| y.1.total_cmp(&x.1));
    r
}

/// Class-retrieval accuracy of one method.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct MethodScore {
    pub method: String,
    pub regions: usize,
    pub failed: usize,
    pub acc_at_1: f64,
    pub acc_at_5: f64,
    pub acc_at_10: f64,
    pub seconds: f64,
    pub ms_per_region: f64,
}

/// COCO class retrieval: every region with a label, every method, ranks of the true class among all
/// categories' prompts. `images` come from [`super::inputs::from_coco`].
pub fn eval_class_retrieval(
    model: &ClipModel,
    images: &[ImageInput],
    categories: &[String],
    methods: &[EmbedStage],
    cfg: &InversionConfig,
    mut on_image: impl FnMut(&str, usize),
) -> anyhow::Result<Vec<MethodScore>> {
    let prompts: Vec<String> = categories.iter().map(|c| prompt(c)).collect();
    let texts = text_embeddings(model, &prompts)?;
    let class_index: BTreeMap<&str, usize> = categories
        .iter()
        .enumerate()
        .map(|(i, c)| (c.as_str(), i))
        .collect();
    let mut scores: Vec<MethodScore> = methods
        .iter()
        .map(|m| MethodScore {
            method: m.name().to_string(),
            ..Default::default()
        })
        .collect();
    let mut hits = vec![[0usize; 3]; methods.len()];
    for (n, input) in images.iter().enumerate() {
        let regions: Vec<_> = input.regions.iter().filter(|r| r.label.is_some()).collect();
        if regions.is_empty() {
            continue;
        }
        let image = match crate::decode::load_rgb(&input.path) {
            Ok(i) => i,
            Err(e) => {
                tracing::warn!("{}: {e}", input.name);
                for s in &mut scores {
                    s.failed += regions.len();
                }
                continue;
            }
        };
        let (w, h) = (image.width() as usize, image.height() as usize);
        let masks: Vec<Result<BinaryMask, String>> =
            regions.iter().map(|r| given_mask(r, w, h)).collect();
        let good: Vec<(usize, BinaryMask)> = masks
            .into_iter()
            .enumerate()
            .filter_map(|(i, m)| m.ok().map(|m| (i, m)))
            .collect();
        let only_masks: Vec<BinaryMask> = good.iter().map(|(_, m)| m.clone()).collect();
        for (mi, method) in methods.iter().enumerate() {
            scores[mi].failed += regions.len() - good.len();
            if only_masks.is_empty() {
                continue;
            }
            let t = Instant::now();
            let embs = embed_masks(model, &image, &only_masks, *method, cfg);
            scores[mi].seconds += t.elapsed().as_secs_f64();
            let embs = match embs {
                Ok(e) => e,
                Err(e) => {
                    tracing::warn!("{} {}: {e}", input.name, method.name());
                    scores[mi].failed += only_masks.len();
                    continue;
                }
            };
            for ((ri, _), emb) in good.iter().zip(embs) {
                let Ok(emb) = emb else {
                    scores[mi].failed += 1;
                    continue;
                };
                let label = regions[*ri].label.as_deref().unwrap_or_default();
                let Some(&truth) = class_index.get(label) else {
                    scores[mi].failed += 1;
                    continue;
                };
                let e = unit(&emb);
                let sims: Vec<f32> = texts
                    .iter()
                    .map(|t| t.iter().zip(&e).map(|(a, b)| a * b).sum())
                    .collect();
                // rank = how many classes score strictly higher than the true one
                let rank = sims.iter().filter(|&&s| s > sims[truth]).count();
                for (j, k) in [1usize, 5, 10].iter().enumerate() {
                    if rank < *k {
                        hits[mi][j] += 1;
                    }
                }
                scores[mi].regions += 1;
            }
        }
        on_image(&input.name, n);
    }
    for (s, h) in scores.iter_mut().zip(hits) {
        let n = s.regions.max(1) as f64;
        s.acc_at_1 = 100.0 * h[0] as f64 / n;
        s.acc_at_5 = 100.0 * h[1] as f64 / n;
        s.acc_at_10 = 100.0 * h[2] as f64 / n;
        s.ms_per_region = 1e3 * s.seconds / s.regions.max(1) as f64;
    }
    Ok(scores)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::{IndexSpec, IndexWriter, MethodInfo, RegionMeta, RegionRecord};

    /// Three photos: "a" with three regions near the query, "b" with one, "c" with two far from it.
    fn photos_index(dir: &Path) -> RegionIndex {
        let spec = IndexSpec {
            dim: 2,
            model_id: "random:test".into(),
            weights_hash: "random:test".into(),
            hnsw: Default::default(),
        };
        let mut writer = IndexWriter::create(dir, &spec).unwrap();
        let region = |photo: &str, id: &str, angle: f32| RegionRecord {
            meta: RegionMeta {
                image: format!("{photo}.jpg"),
                image_hash: format!("{photo:0>64}"),
                region_id: id.into(),
                bbox: [0.0, 0.0, 1.0, 1.0],
                mask: crate::masks::Rle::encode(
                    &crate::masks::BinaryMask::new(1, 1, vec![1]).unwrap(),
                )
                .to_coco(),
                source: "gt".into(),
                method: MethodInfo {
                    name: "maskinversion".into(),
                    steps: None,
                    lr: None,
                    alpha: None,
                    resolution: None,
                    model_id: "random:test".into(),
                    weights_hash: "random:test".into(),
                },
                label: None,
                created_at_ms: 0,
                exif_rotated: false,
                photo: Default::default(),
            },
            embedding: vec![angle.cos(), angle.sin()],
        };
        writer
            .append(vec![
                region("a", "1", 0.00),
                region("a", "2", 0.05),
                region("a", "3", 0.10),
                region("b", "1", 0.02),
                region("c", "1", 1.50),
                region("c", "2", 1.55),
            ])
            .unwrap();
        drop(writer);
        RegionIndex::open(dir).unwrap()
    }

    fn ask(index: &RegionIndex, options: SearchOptions) -> Vec<(String, f32, Option<u32>)> {
        let query = TextQuery::from_vector(&[1.0, 0.0], 2).unwrap();
        search_query(index, &query, &options)
            .unwrap()
            .hits
            .into_iter()
            .map(|h| (h.image, h.score, h.other_matches))
            .collect()
    }

    #[test]
    fn hits_grouped_by_photo_are_each_photos_best_region_with_the_count_of_its_others() {
        let dir = tempfile::tempdir().unwrap();
        let index = photos_index(dir.path());
        let by_photo = SearchOptions {
            k: 3,
            mode: SearchMode::Exact,
            ..Default::default()
        }
        .grouped(Grouping::Photo);
        let hits = ask(&index, by_photo.clone());
        let photos: Vec<(&str, Option<u32>)> =
            hits.iter().map(|(p, _, n)| (p.as_str(), *n)).collect();
        // c's second region scores below c's best, the last photo's: it is not counted.
        assert_eq!(
            photos,
            [("a.jpg", Some(2)), ("b.jpg", Some(0)), ("c.jpg", Some(0))]
        );
        assert!(
            (hits[0].1 - 1.0).abs() < 1e-6,
            "the best of a's regions: {hits:?}"
        );
        // Two photos asked for: the two with the best regions; a's others score below b's best.
        let two = ask(
            &index,
            SearchOptions {
                k: 2,
                ..by_photo.clone()
            },
        );
        assert_eq!(
            two.iter().map(|h| (h.0.as_str(), h.2)).collect::<Vec<_>>(),
            [("a.jpg", Some(0)), ("b.jpg", Some(0))]
        );
        // A cut-off above c's regions leaves a and b, and counts only a's regions above it.
        let cut = ask(&index, by_photo.with_min_score(Some(0.998)).unwrap());
        assert_eq!(
            cut.iter().map(|h| (h.0.as_str(), h.2)).collect::<Vec<_>>(),
            [("a.jpg", Some(1)), ("b.jpg", Some(0))]
        );
    }

    #[test]
    fn a_relevance_cut_off_keeps_regions_scoring_at_least_it() {
        let dir = tempfile::tempdir().unwrap();
        let index = photos_index(dir.path());
        let options = SearchOptions {
            k: 10,
            mode: SearchMode::Exact,
            ..Default::default()
        };
        assert_eq!(ask(&index, options.clone()).len(), 6);
        let kept = ask(&index, options.clone().with_min_score(Some(0.99)).unwrap());
        assert_eq!(kept.len(), 4, "{kept:?}");
        assert!(kept.iter().all(|h| h.1 >= 0.99 && h.2.is_none()));
        assert!(matches!(
            options.with_min_score(Some(1.5)),
            Err(QueryError::MinScoreOutOfRange(_))
        ));
    }
}
