//! The server's Prometheus metrics: requests by route, method and status, latency histograms by route, the
//! text-embedding cache, index reloads and connections. Recorded through the `metrics` facade into a recorder
//! each server owns (not the process-global one: a process may run several servers, as tests and benchmarks
//! do) and rendered by `metrics-exporter-prometheus`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use metrics::{Counter, Gauge};
use metrics_exporter_prometheus::{
    Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};

/// Upper bounds (seconds) of the latency buckets: from cache hits (sub-millisecond) to cold model calls.
const BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
const REQUESTS: &str = "regionseek_http_requests_total";
const DURATION: &str = "regionseek_http_request_duration_seconds";

/// A counter exported to Prometheus whose value the server also reads back (`/api/stats`, `bench-serve`):
/// the exporter's own counters cannot be read.
pub struct Count {
    value: AtomicU64,
    exported: Counter,
}

impl Count {
    pub fn add(&self, n: u64) {
        self.value.fetch_add(n, Ordering::Relaxed);
        self.exported.increment(n);
    }

    pub fn load(&self, order: Ordering) -> u64 {
        self.value.load(order)
    }
}

/// Values read when Prometheus scrapes rather than counted as they change.
pub struct AtScrape {
    pub index_rows: usize,
    pub index_generation: u64,
    pub cache_entries: usize,
    pub uptime_s: f64,
}

struct ScrapeGauges {
    index_rows: Gauge,
    index_generation: Gauge,
    cache_entries: Gauge,
    uptime: Gauge,
}

pub struct Metrics {
    recorder: Arc<PrometheusRecorder>,
    handle: PrometheusHandle,
    pub cache_hits: Count,
    pub cache_misses: Count,
    pub reloads: Count,
    pub reload_failures: Count,
    pub encoded_batches: Count,
    pub encoded_texts: Count,
    /// Texts dropped unencoded because every request waiting for them had gone.
    pub abandoned_texts: Count,
    /// Requests refused because the text queue was full.
    pub queue_full: Count,
    pub open_connections: Gauge,
    /// Connections answered 503 because the cap was reached.
    pub refused_connections: Count,
    scrape: ScrapeGauges,
}

/// The methods metrics name; anything else a client invents is counted as `other`, so that the label set
/// stays closed.
fn method_label(method: &str) -> &'static str {
    match method {
        "GET" => "GET",
        "HEAD" => "HEAD",
        "POST" => "POST",
        "PUT" => "PUT",
        "DELETE" => "DELETE",
        "PATCH" => "PATCH",
        "OPTIONS" => "OPTIONS",
        _ => "other",
    }
}

fn recorder() -> PrometheusRecorder {
    // Only an empty list of buckets is refused; without buckets the exporter would send summaries instead.
    PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Full(DURATION.into()), &BUCKETS)
        .unwrap_or_else(|_| PrometheusBuilder::new())
        .build_recorder()
}

impl Default for Metrics {
    fn default() -> Self {
        let recorder = Arc::new(recorder());
        metrics::with_local_recorder(recorder.as_ref(), || {
            metrics::describe_counter!(REQUESTS, "HTTP requests answered.");
            metrics::describe_histogram!(DURATION, "Time to answer a request.");
            let count = |name: &'static str, help: &'static str| {
                metrics::describe_counter!(name, help);
                Count {
                    value: AtomicU64::new(0),
                    exported: metrics::counter!(name),
                }
            };
            let gauge = |name: &'static str, help: &'static str| {
                metrics::describe_gauge!(name, help);
                metrics::gauge!(name)
            };
            Self {
                cache_hits: count(
                    "regionseek_text_cache_hits_total",
                    "Query texts answered from the embedding cache.",
                ),
                cache_misses: count(
                    "regionseek_text_cache_misses_total",
                    "Query texts run through the text tower.",
                ),
                encoded_batches: count("regionseek_text_batches_total", "Text-tower batches run."),
                encoded_texts: count(
                    "regionseek_text_encoded_total",
                    "Texts run through the text tower.",
                ),
                abandoned_texts: count(
                    "regionseek_text_abandoned_total",
                    "Texts dropped unencoded because their requests had gone.",
                ),
                queue_full: count(
                    "regionseek_text_queue_full_total",
                    "Requests refused because the text queue was full.",
                ),
                refused_connections: count(
                    "regionseek_connections_refused_total",
                    "Connections answered 503 because the connection cap was reached.",
                ),
                reloads: count(
                    "regionseek_index_reloads_total",
                    "New index commits picked up.",
                ),
                reload_failures: count(
                    "regionseek_index_reload_failures_total",
                    "Index commits that could not be opened (the previous one kept serving).",
                ),
                open_connections: gauge("regionseek_open_connections", "Connections open now."),
                scrape: ScrapeGauges {
                    index_rows: gauge("regionseek_index_rows", "Regions in the served commit."),
                    index_generation: gauge(
                        "regionseek_index_generation",
                        "Generation of the served commit.",
                    ),
                    cache_entries: gauge(
                        "regionseek_text_cache_entries",
                        "Query embeddings cached.",
                    ),
                    uptime: gauge("regionseek_uptime_seconds", "Since the server started."),
                },
                handle: recorder.handle(),
                recorder: recorder.clone(),
            }
        })
    }
}

impl Metrics {
    pub fn observe(&self, route: &str, method: &str, status: u16, seconds: f64) {
        metrics::with_local_recorder(self.recorder.as_ref(), || {
            metrics::counter!(
                REQUESTS,
                "route" => route.to_string(),
                "method" => method_label(method),
                "status" => status.to_string()
            )
            .increment(1);
            metrics::histogram!(DURATION, "route" => route.to_string()).record(seconds);
        });
    }

    /// Folds the latency samples recorded since the last call into their histograms. The exporter keeps
    /// every sample until then (a render does it too): without a scraper a busy server would grow by a few
    /// bytes per request for ever, so the server calls this every few seconds.
    pub fn fold_samples(&self) {
        self.handle.run_upkeep();
    }

    /// The exposition text, with the values read at scrape time.
    pub fn render(&self, now: &AtScrape) -> String {
        let g = &self.scrape;
        g.index_rows.set(now.index_rows as f64);
        g.index_generation.set(now.index_generation as f64);
        g.cache_entries.set(now.cache_entries as f64);
        g.uptime.set(now.uptime_s);
        self.handle.render()
    }
}
