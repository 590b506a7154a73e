//! `regionseek serve`: the index and the text tower kept in memory behind an HTTP API and a web page.
//! A thin shell over [`crate::pipeline::query`] (text → hits), [`crate::pipeline::render`] (pictures of
//! regions) and [`crate::index`]; it adds what a long-lived process needs: a query-embedding cache, batching
//! of concurrent queries through the text tower, picking up the commits of a concurrent `index` run, limits,
//! metrics and shutdown on a signal.

mod api;
mod encoder;
mod extract;
mod http;
mod listen;
mod metrics;
mod region;
pub mod schema;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use candle_core::Device;

use crate::clip::{TextEncoder, TextModel};
use crate::index::RegionIndex;
use crate::pipeline::query;

pub use encoder::QueryEncoder;
pub use listen::ConnectionLimits;
pub use metrics::Metrics;

/// Everything `serve` can be told.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub index_dir: PathBuf,
    /// The folder the indexed photo names are relative to; without it the picture endpoints answer 404.
    pub images: Option<PathBuf>,
    pub addr: SocketAddr,
    /// The model the index was built with (default: the one its manifest names).
    pub model: Option<String>,
    pub device: Device,
    /// Bearer token every request but `/healthz` must carry (header, or the cookie the page sets).
    pub token: Option<String>,
    /// Serve a non-loopback address without a token.
    pub insecure_open: bool,
    pub request_timeout: Duration,
    /// Requests handled at once; more wait (until their timeout).
    pub max_concurrent: usize,
    /// Query texts whose embeddings are kept.
    pub cache_entries: usize,
    /// How often the index's manifest is checked for a new commit.
    pub reload_every: Duration,
    pub connections: ConnectionLimits,
    /// Host names (besides loopback names and the listening address) that requests may name in `Host` and
    /// `Origin`: the names a reverse proxy or the machine's DNS name reach this server by.
    pub allowed_hosts: Vec<String>,
    /// Hits one request may ask for in all (queries × k).
    pub max_hits_per_request: usize,
    /// Texts waiting for the text tower at most; more are refused with 503.
    pub max_queued_texts: usize,
    /// Pictures drawn at once (each may decode a large photo); more wait for a slot.
    pub max_renders: usize,
    /// SAM's folder (encoder.onnx + decoder.onnx), for region queries given as a point.
    pub sam: Option<PathBuf>,
    /// The largest upload of a region query (a photo and a mask), in bytes.
    pub max_upload_bytes: usize,
    /// The most pixels an uploaded photo (or a row's photo) may have.
    pub max_upload_pixels: u64,
    /// Region queries embedded at once (each inverts a region with the vision tower); more wait.
    pub region_workers: usize,
    /// Region queries waiting for a worker at most; more are answered 503.
    pub max_queued_regions: usize,
}

impl ServeConfig {
    pub fn new(index_dir: PathBuf) -> Self {
        Self {
            index_dir,
            images: None,
            addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            model: None,
            device: Device::Cpu,
            token: None,
            insecure_open: false,
            request_timeout: Duration::from_secs(30),
            max_concurrent: 64,
            cache_entries: 4096,
            reload_every: Duration::from_millis(500),
            connections: ConnectionLimits::default(),
            allowed_hosts: Vec::new(),
            max_hits_per_request: 5000,
            max_queued_texts: 1024,
            max_renders: std::thread::available_parallelism().map_or(2, |n| n.get()),
            sam: None,
            max_upload_bytes: 20 << 20,
            max_upload_pixels: 64_000_000,
            region_workers: 1,
            max_queued_regions: 4,
        }
    }

    /// A server reachable from other machines must be protected, or opened on purpose.
    pub fn check_exposure(&self) -> anyhow::Result<()> {
        if !self.addr.ip().is_loopback() && self.token.is_none() && !self.insecure_open {
            anyhow::bail!(
                "{} is reachable from other machines: give --token SECRET (clients send \
                 `Authorization: Bearer SECRET`, a browser opens /?token=SECRET once), or \
                 --insecure-open to serve it to anyone",
                self.addr
            );
        }
        if let Some(t) = &self.token {
            // The token travels in a header, a cookie and a URL: characters that any of them would split or
            // escape (`;`, `&`, `#`, `%`, spaces, quotes) would make the browser login fail.
            anyhow::ensure!(
                t.len() >= MIN_TOKEN_LEN && t.bytes().all(is_token_byte),
                "--token must be at least {MIN_TOKEN_LEN} characters, each a letter, a digit or one of - . _ ~ \
                 (e.g. `openssl rand -hex 16`)"
            );
        }
        for h in &self.allowed_hosts {
            anyhow::ensure!(
                !h.is_empty()
                    && h.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-._:[]".contains(&b)),
                "--allow-host {h:?}: give a host name or address, without scheme, port or path"
            );
        }
        Ok(())
    }
}

/// The shortest `--token` accepted.
pub const MIN_TOKEN_LEN: usize = 8;

/// A byte a token may hold: URL-unreserved characters, which a header, a cookie and a query string all carry
/// unchanged.
pub fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~".contains(&b)
}

/// The index as last committed, with when it was opened.
pub struct LiveIndex {
    pub index: RegionIndex,
    pub opened_at: SystemTime,
    /// The manifest's bytes when it was opened: a different file means a new commit.
    manifest: Vec<u8>,
    summary: std::sync::OnceLock<api::IndexSummary>,
    embedding: std::sync::OnceLock<crate::pipeline::region_query::IndexEmbedding>,
}

impl LiveIndex {
    /// Counts of what the commit holds (photos, methods, labels), computed on first use.
    pub fn summary(&self) -> &api::IndexSummary {
        self.summary.get_or_init(|| api::index_summary(self))
    }

    /// How the commit's regions were embedded (what a region query must repeat), read on first use.
    pub fn embedding(&self) -> &crate::pipeline::region_query::IndexEmbedding {
        self.embedding
            .get_or_init(|| crate::pipeline::region_query::IndexEmbedding::of(&self.index))
    }
}

pub struct AppState {
    pub config: ServeConfig,
    current: RwLock<Arc<LiveIndex>>,
    pub encoder: QueryEncoder,
    pub metrics: Arc<Metrics>,
    pub started: Instant,
    pub model_id: String,
    /// Slots for drawing pictures (see [`ServeConfig::max_renders`]).
    pub renders: Arc<tokio::sync::Semaphore>,
    /// The vision tower, SAM and the workers of region queries.
    pub regions: region::RegionService,
}

impl AppState {
    /// The index as of the last commit picked up; a request keeps the one it started with.
    pub fn index(&self) -> Arc<LiveIndex> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

fn manifest_bytes(dir: &std::path::Path) -> std::io::Result<Vec<u8>> {
    std::fs::read(dir.join("manifest.json"))
}

fn open_live(dir: &std::path::Path) -> anyhow::Result<LiveIndex> {
    let manifest = manifest_bytes(dir).unwrap_or_default();
    let index = RegionIndex::open(dir)?;
    Ok(LiveIndex {
        index,
        opened_at: SystemTime::now(),
        manifest,
        summary: Default::default(),
        embedding: Default::default(),
    })
}

/// Opens the index and the text tower; what `serve` does before it listens.
pub fn prepare(config: ServeConfig) -> anyhow::Result<Arc<AppState>> {
    config.check_exposure()?;
    if let Some(dir) = &config.images {
        anyhow::ensure!(dir.is_dir(), "--images {}: not a folder", dir.display());
    }
    let live = open_live(&config.index_dir)
        .with_context(|| format!("opening the index {}", config.index_dir.display()))?;
    let spec = config
        .model
        .clone()
        .unwrap_or_else(|| live.index.manifest().model_id.clone());
    let t = Instant::now();
    // Only the text tower: no endpoint embeds photos, so the vision weights are never read.
    let model = TextModel::load_spec(&spec, &config.device).with_context(|| {
        format!("loading the index's model {spec} (pass --model DIR if it moved)")
    })?;
    query::check_model(&live.index, &model)?;
    tracing::info!(
        "text tower of {} ready in {:.1} s; {} regions in {}",
        model.id(),
        t.elapsed().as_secs_f64(),
        live.index.len(),
        config.index_dir.display()
    );
    let metrics = Arc::new(Metrics::default());
    let model_id = model.id();
    let config_renders = config.max_renders.max(1);
    let regions = region::RegionService::new(&config)?;
    let encoder = QueryEncoder::start(
        model,
        config.cache_entries,
        config.max_queued_texts,
        metrics.clone(),
    );
    Ok(Arc::new(AppState {
        config,
        current: RwLock::new(Arc::new(live)),
        encoder,
        metrics,
        started: Instant::now(),
        model_id,
        renders: Arc::new(tokio::sync::Semaphore::new(config_renders)),
        regions,
    }))
}

/// Picks up new commits of the index: a changed manifest is opened in full beside the serving copy and
/// swapped in, so a request sees one committed state from start to end and never a partial batch.
pub(crate) async fn follow_commits(state: Arc<AppState>) {
    let dir = state.config.index_dir.clone();
    let mut last_seen = state.index().manifest.clone();
    let mut tick = tokio::time::interval(state.config.reload_every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Ok(now) = manifest_bytes(&dir) else {
            continue;
        };
        if now == last_seen {
            continue;
        }
        // A commit that cannot be served is not retried until the next one.
        last_seen = now;
        let dir2 = dir.clone();
        let live = match tokio::task::spawn_blocking(move || open_live(&dir2)).await {
            Ok(Ok(live)) => live,
            Ok(Err(e)) => {
                tracing::warn!(
                    "could not open the new commit of {}: {e:#}; still serving the previous one",
                    dir.display()
                );
                state.metrics.reload_failures.add(1);
                continue;
            }
            Err(e) => {
                tracing::warn!("index reload task failed: {e}");
                continue;
            }
        };
        let old = state.index();
        let (new_space, old_space) = (live.index.manifest(), old.index.manifest());
        if (new_space.dim, &new_space.model_id, &new_space.weights_hash)
            != (old_space.dim, &old_space.model_id, &old_space.weights_hash)
        {
            tracing::error!(
                "{} now holds embeddings of {} ({}-d) and this server embeds queries with {}: still \
                 serving the last compatible commit (restart the server to follow the new model)",
                dir.display(),
                new_space.model_id,
                new_space.dim,
                state.model_id
            );
            state.metrics.reload_failures.add(1);
            continue;
        }
        tracing::info!(
            "picked up commit {} of {}: {} regions (was {})",
            new_space.generation,
            dir.display(),
            live.index.len(),
            old.index.len()
        );
        *state.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(live);
        state.metrics.reloads.add(1);
    }
}

/// What `serve` prints once it listens (one JSON line on stdout, for people and for scripts).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Listening {
    pub url: String,
    pub addr: SocketAddr,
    pub rows: usize,
    pub model: String,
}

/// Serves until SIGINT or SIGTERM; requests under way are given the shutdown grace period to finish.
/// `on_listening` hears the bound address (a port 0 in the config is given one by the system).
pub fn run(config: ServeConfig, on_listening: impl FnOnce(&Listening)) -> anyhow::Result<()> {
    let state = prepare(config)?;
    let rt = runtime()?;
    let result = rt.block_on(async move {
        let (listener, listening) = bind(&state).await?;
        on_listening(&listening);
        serve_until(state, listener, shutdown_signal()).await
    });
    // Pictures still being drawn for departed clients must not hold the exit.
    rt.shutdown_timeout(Duration::from_millis(500));
    result
}

/// A server on its own threads, for benchmarks and embedding in other programs; stopped when dropped.
pub struct RunningServer {
    pub listening: Listening,
    pub state: Arc<AppState>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<anyhow::Result<()>>>,
}

impl RunningServer {
    pub fn stop(mut self) -> anyhow::Result<()> {
        self.stop_inner()
    }
    fn stop_inner(&mut self) -> anyhow::Result<()> {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        match self.thread.take() {
            Some(t) => t
                .join()
                .map_err(|_| anyhow::anyhow!("the server thread panicked"))?,
            None => Ok(()),
        }
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        let _ = self.stop_inner();
    }
}

/// Starts a server in the background and returns once it listens.
pub fn spawn(config: ServeConfig) -> anyhow::Result<RunningServer> {
    let state = prepare(config)?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let state2 = state.clone();
    let thread = std::thread::Builder::new()
        .name("regionseek-serve".into())
        .spawn(move || {
            let rt = runtime()?;
            let result = rt.block_on(async move {
                let (listener, listening) = match bind(&state2).await {
                    Ok(b) => b,
                    Err(e) => {
                        let _ = ready_tx.send(Err(format!("{e:#}")));
                        return Err(e);
                    }
                };
                let _ = ready_tx.send(Ok(listening));
                serve_until(state2, listener, async {
                    let _ = stop_rx.await;
                })
                .await
            });
            rt.shutdown_timeout(Duration::from_millis(500));
            result
        })?;
    let listening = ready_rx
        .recv()
        .map_err(|_| anyhow::anyhow!("the server thread ended before listening"))?
        .map_err(anyhow::Error::msg)?;
    Ok(RunningServer {
        listening,
        state,
        stop: Some(stop_tx),
        thread: Some(thread),
    })
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("regionseek-http")
        .build()
        .context("starting the async runtime")
}

async fn bind(state: &Arc<AppState>) -> anyhow::Result<(tokio::net::TcpListener, Listening)> {
    let listener = tokio::net::TcpListener::bind(state.config.addr)
        .await
        .with_context(|| format!("listening on {}", state.config.addr))?;
    let addr = listener.local_addr()?;
    let listening = Listening {
        url: format!("http://{addr}/"),
        addr,
        rows: state.index().index.len(),
        model: state.model_id.clone(),
    };
    Ok((listener, listening))
}

async fn fold_metric_samples(metrics: Arc<Metrics>) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(5));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        metrics.fold_samples();
    }
}

async fn serve_until(
    state: Arc<AppState>,
    listener: tokio::net::TcpListener,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let follower = tokio::spawn(follow_commits(state.clone()));
    let folder = tokio::spawn(fold_metric_samples(state.metrics.clone()));
    let limits = state.config.connections;
    let metrics = state.metrics.clone();
    let app = http::router(state);
    let left_open = listen::serve_connections(listener, app, limits, metrics, stop).await;
    follower.abort();
    folder.abort();
    if left_open == 0 {
        tracing::info!("stopped: every request under way was answered");
    } else {
        tracing::warn!(
            "stopped: {left_open} connections were still open after the {:.0} s grace period and were closed",
            limits.shutdown_grace.as_secs_f64()
        );
    }
    Ok(())
}

async fn shutdown_signal() {
    let interrupt = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = interrupt => tracing::info!("interrupted: finishing the requests under way"),
        _ = terminate => tracing::info!("terminated: finishing the requests under way"),
    }
}
