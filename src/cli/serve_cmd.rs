//! `regionseek serve`: the search server and its page.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use regionseek::serve::{self, ServeConfig};

use super::output::print_json;

#[derive(clap::Args)]
pub struct ServeArgs {
    /// The index to serve; commits of a concurrent `regionseek index` run are picked up as they land.
    index: PathBuf,
    /// The folder the indexed photo names are relative to (what `index` was given): needed to show regions.
    #[arg(long)]
    images: Option<PathBuf>,
    /// Where to listen; port 0 lets the system choose (the chosen address is printed).
    #[arg(long, default_value = "127.0.0.1:8080")]
    addr: SocketAddr,
    /// The model the index was built with (default: the one its manifest names).
    #[arg(long)]
    model: Option<String>,
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Bearer token required of every request but /healthz (needed for a non-loopback --addr): at least 8
    /// characters, each a letter, a digit or one of - . _ ~ (e.g. `openssl rand -hex 16`).
    #[arg(long, env = "REGIONSEEK_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// A host name clients may address this server by, besides loopback names and --addr's address (the
    /// name of a reverse proxy or of this machine); repeat for more. Other names in `Host` or `Origin` are
    /// refused (421), which stops DNS-rebinding pages from reading the server.
    #[arg(long = "allow-host", value_name = "NAME")]
    allow_host: Vec<String>,
    /// Serve a non-loopback address to anyone, without a token.
    #[arg(long)]
    insecure_open: bool,
    /// Seconds a request may take, waiting for a slot included.
    #[arg(long, default_value_t = 30)]
    timeout_s: u64,
    /// Requests handled at once (more wait for a slot).
    #[arg(long, default_value_t = 64)]
    max_concurrent: usize,
    /// Query texts whose embeddings are kept in memory.
    #[arg(long, default_value_t = 4096)]
    cache: usize,
    /// Hits one request may ask for in all (the sum of k over a POST batch's queries); more is refused.
    #[arg(long, default_value_t = 5000)]
    max_hits: usize,
    /// Query texts waiting for the text tower at most; requests beyond are answered 503.
    #[arg(long, default_value_t = 1024)]
    max_queued_texts: usize,
    /// Pictures drawn at once (default: one per core); more wait for a slot.
    #[arg(long)]
    max_renders: Option<usize>,
    /// SAM model directory (encoder.onnx + decoder.onnx): region queries may then be a click (a point).
    #[arg(long, value_name = "DIR")]
    sam: Option<PathBuf>,
    /// The largest upload of a region query (its photo and mask), in megabytes.
    #[arg(long, default_value_t = 20)]
    max_upload_mb: usize,
    /// The most pixels a region query's photo may have (a 48 MP phone photo fits the default).
    #[arg(long, default_value_t = 64_000_000)]
    max_upload_pixels: u64,
    /// Region queries inverted at once (each uses every core for about a second); more wait.
    #[arg(long, default_value_t = 1)]
    region_workers: usize,
    /// Region queries waiting for a worker at most; more are answered 503.
    #[arg(long, default_value_t = 4)]
    max_queued_regions: usize,
    /// Connections open at once; more are answered 503 and closed.
    #[arg(long, default_value_t = 512)]
    max_connections: usize,
    /// Seconds a client has to send a complete request head, and then its body; also how long an idle
    /// kept-alive connection stays open, and how long a response may stay blocked by a client that does not
    /// read it.
    #[arg(long, default_value_t = 10)]
    idle_timeout_s: u64,
    /// Seconds requests under way are given to finish after SIGINT/SIGTERM; connections still open then are
    /// closed.
    #[arg(long, default_value_t = 10)]
    shutdown_grace_s: u64,
    /// Milliseconds between checks of the index for a new commit.
    #[arg(long, default_value_t = 500)]
    reload_ms: u64,
    /// Print the listening address as one JSON line (the default prints a sentence).
    #[arg(long)]
    json: bool,
}

pub fn run(a: ServeArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(a.timeout_s > 0, "--timeout-s must be at least 1");
    anyhow::ensure!(a.reload_ms > 0, "--reload-ms must be at least 1");
    const DAY_S: u64 = 86_400;
    for (flag, value) in [
        ("--timeout-s", a.timeout_s),
        ("--idle-timeout-s", a.idle_timeout_s),
        ("--shutdown-grace-s", a.shutdown_grace_s),
    ] {
        anyhow::ensure!(
            value <= DAY_S,
            "{flag} is at most {DAY_S} (a day), not {value}"
        );
    }
    anyhow::ensure!(a.idle_timeout_s > 0, "--idle-timeout-s must be at least 1");
    anyhow::ensure!(
        (1..=1 << 20).contains(&a.max_connections),
        "--max-connections must be from 1 to 1048576"
    );
    anyhow::ensure!(a.max_hits > 0, "--max-hits must be at least 1");
    anyhow::ensure!(
        a.max_queued_texts > 0,
        "--max-queued-texts must be at least 1"
    );
    anyhow::ensure!(
        (1..=1024).contains(&a.max_upload_mb),
        "--max-upload-mb must be from 1 to 1024"
    );
    anyhow::ensure!(a.region_workers > 0, "--region-workers must be at least 1");
    let mut config = ServeConfig::new(a.index);
    config.sam = a.sam;
    config.max_upload_bytes = a.max_upload_mb << 20;
    anyhow::ensure!(
        a.max_upload_pixels > 0,
        "--max-upload-pixels must be at least 1"
    );
    config.max_upload_pixels = a.max_upload_pixels;
    config.region_workers = a.region_workers;
    config.max_queued_regions = a.max_queued_regions;
    config.images = a.images;
    config.addr = a.addr;
    config.model = a.model;
    config.device = regionseek::device::parse(&a.device)?;
    config.token = a.token;
    config.insecure_open = a.insecure_open;
    config.request_timeout = Duration::from_secs(a.timeout_s);
    config.max_concurrent = a.max_concurrent;
    config.cache_entries = a.cache;
    config.reload_every = Duration::from_millis(a.reload_ms);
    config.allowed_hosts = a.allow_host;
    config.max_hits_per_request = a.max_hits;
    config.max_queued_texts = a.max_queued_texts;
    if let Some(n) = a.max_renders {
        anyhow::ensure!(n > 0, "--max-renders must be at least 1");
        config.max_renders = n;
    }
    config.connections = serve::ConnectionLimits {
        max_connections: a.max_connections,
        head_timeout: Duration::from_secs(a.idle_timeout_s),
        shutdown_grace: Duration::from_secs(a.shutdown_grace_s),
    };
    let json = a.json;
    serve::run(config, |l| {
        if json {
            let _ = print_json(&serde_json::json!({"listening": l}));
        } else {
            println!(
                "serving {} regions ({}) at {}  (Ctrl-C stops)",
                l.rows, l.model, l.url
            );
        }
    })?;
    Ok(ExitCode::SUCCESS)
}
