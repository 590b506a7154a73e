//! `regionseek bench-serve`: a bounded load run of `/api/search` over loopback with concurrent clients,
//! each on its own keep-alive connection: cache hits (texts asked before) and misses (new texts), with the
//! latency percentiles, requests per second and the process's memory. One JSON line.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use anyhow::Context;
use regionseek::serve::{self, ServeConfig};
use serde_json::json;

use super::output::{print_json, write_atomic};

#[derive(clap::Args)]
pub struct BenchServeArgs {
    /// The index to serve (a server is started in this process on a loopback port).
    index: PathBuf,
    #[arg(long, default_value_t = 32)]
    clients: usize,
    /// Requests per phase (hits, misses), spread over the clients.
    #[arg(long, default_value_t = 640)]
    requests: usize,
    #[arg(long, default_value_t = 10)]
    k: usize,
    /// The model the index was built with (default: the one its manifest names).
    #[arg(long)]
    model: Option<String>,
    /// Also write the result to this file.
    #[arg(long)]
    out: Option<PathBuf>,
    /// The result is always one JSON line; accepted for symmetry with the other commands.
    #[arg(long)]
    json: bool,
}

/// A keep-alive HTTP/1.1 connection that GETs and reads one response at a time.
struct Client {
    reader: BufReader<TcpStream>,
}

impl Client {
    fn connect(addr: SocketAddr) -> anyhow::Result<Self> {
        let s = TcpStream::connect(addr)?;
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(Duration::from_secs(120)))?;
        Ok(Self {
            reader: BufReader::new(s),
        })
    }

    fn get(&mut self, target: &str) -> anyhow::Result<u16> {
        let req = format!("GET {target} HTTP/1.1\r\nHost: localhost\r\n\r\n");
        self.reader.get_mut().write_all(req.as_bytes())?;
        let mut line = String::new();
        self.reader.read_line(&mut line)?;
        let status: u16 = line
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .context("no status line")?;
        let mut length = 0usize;
        loop {
            line.clear();
            self.reader.read_line(&mut line)?;
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    length = v.trim().parse()?;
                }
            }
        }
        let mut body = vec![0u8; length];
        self.reader.read_exact(&mut body)?;
        Ok(status)
    }
}

const OBJECTS: [&str; 16] = [
    "dog", "cat", "person", "car", "bicycle", "bus", "pizza", "cup", "chair", "horse", "bird",
    "umbrella", "train", "boat", "bench", "kite",
];
const COLOURS: [&str; 8] = [
    "red", "blue", "green", "white", "black", "yellow", "brown", "striped",
];

fn target(text: &str, k: usize) -> String {
    format!("/api/search?k={k}&q={}", text.replace(' ', "+"))
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Every client sends its share of `texts` in turn; latencies in milliseconds.
fn phase(
    addr: SocketAddr,
    clients: usize,
    texts: &[String],
    k: usize,
) -> anyhow::Result<serde_json::Value> {
    let t = Instant::now();
    let results: Vec<anyhow::Result<(Vec<f64>, usize)>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..clients)
            .map(|c| {
                s.spawn(move || -> anyhow::Result<(Vec<f64>, usize)> {
                    let mut client = Client::connect(addr)?;
                    let mut lat = Vec::new();
                    let mut errors = 0;
                    for text in texts.iter().skip(c).step_by(clients) {
                        let t = Instant::now();
                        if client.get(&target(text, k))? != 200 {
                            errors += 1;
                        }
                        lat.push(t.elapsed().as_secs_f64() * 1e3);
                    }
                    Ok((lat, errors))
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("a client panicked")))
            })
            .collect()
    });
    let wall = t.elapsed().as_secs_f64();
    let mut lat = Vec::new();
    let mut errors = 0;
    for r in results {
        let (l, e) = r?;
        lat.extend(l);
        errors += e;
    }
    lat.sort_by(f64::total_cmp);
    Ok(json!({
        "requests": lat.len(),
        "errors": errors,
        "p50_ms": percentile(&lat, 0.5),
        "p99_ms": percentile(&lat, 0.99),
        "max_ms": lat.last().copied().unwrap_or(f64::NAN),
        "requests_per_s": lat.len() as f64 / wall,
        "wall_s": wall,
    }))
}

use regionseek::device::process_memory_kib as memory_kib;

pub fn run(a: BenchServeArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(
        a.clients > 0 && a.requests > 0,
        "--clients and --requests must be at least 1"
    );
    let mut config = ServeConfig::new(a.index.clone());
    config.addr = SocketAddr::from(([127, 0, 0, 1], 0));
    config.model = a.model.clone();
    config.max_concurrent = a.clients.max(64);
    config.cache_entries = 4 * a.requests + 64;
    let rss_before = memory_kib("VmRSS:");
    let server = serve::spawn(config)?;
    let rss_loaded = memory_kib("VmRSS:");
    let addr = server.listening.addr;
    // Hits: a few texts asked once beforehand, then asked again and again.
    let warm: Vec<String> = OBJECTS
        .iter()
        .map(|o| format!("a photo of a {o}"))
        .collect();
    phase(addr, a.clients.min(warm.len()), &warm, a.k)?;
    let hits: Vec<String> = (0..a.requests)
        .map(|i| warm[i % warm.len()].clone())
        .collect();
    let hit_result = phase(addr, a.clients, &hits, a.k)?;
    // Misses: every text new to the server.
    let misses: Vec<String> = (0..a.requests)
        .map(|i| {
            format!(
                "a {} {} number {i}",
                COLOURS[i % COLOURS.len()],
                OBJECTS[(i / COLOURS.len()) % OBJECTS.len()]
            )
        })
        .collect();
    let batches_before = server.state.metrics.encoded_batches.load(Relaxed);
    let texts_before = server.state.metrics.encoded_texts.load(Relaxed);
    let miss_result = phase(addr, a.clients, &misses, a.k)?;
    let batches = server.state.metrics.encoded_batches.load(Relaxed) - batches_before;
    let texts = server.state.metrics.encoded_texts.load(Relaxed) - texts_before;
    let live = server.state.index();
    let result = json!({
        "bench": "serve",
        "index": a.index,
        "rows": live.index.len(),
        "model": server.state.model_id,
        "clients": a.clients,
        "k": a.k,
        "threads": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        "cache_hits": hit_result,
        "cache_misses": miss_result,
        "miss_batches": batches,
        "miss_mean_batch": texts as f64 / batches.max(1) as f64,
        "rss_before_server_mib": rss_before.map(|k| k as f64 / 1024.0),
        "rss_serving_mib": rss_loaded.map(|k| k as f64 / 1024.0),
        "rss_after_load_mib": memory_kib("VmRSS:").map(|k| k as f64 / 1024.0),
        "rss_peak_mib": memory_kib("VmHWM:").map(|k| k as f64 / 1024.0),
    });
    drop(live);
    server.stop()?;
    print_json(&result)?;
    if let Some(out) = &a.out {
        write_atomic(out, serde_json::to_string_pretty(&result)?.as_bytes())?;
    }
    Ok(ExitCode::SUCCESS)
}
