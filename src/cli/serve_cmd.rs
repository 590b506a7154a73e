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
    /// Bearer token required of every request but /healthz (needed for a non-loopback --addr).
    #[arg(long, env = "REGIONSEEK_TOKEN", hide_env_values = true)]
    token: Option<String>,
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
    let mut config = ServeConfig::new(a.index);
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
