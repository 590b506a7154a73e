//! Prometheus text exposition of the server's own counters: requests by route, method and status, latency
//! histograms by route, the text-embedding cache, index reloads and rows.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Upper bounds (seconds) of the latency buckets: from cache hits (sub-millisecond) to cold model calls.
const BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

#[derive(Default, Clone)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

#[derive(Default)]
struct Requests {
    by_status: BTreeMap<(String, String, u16), u64>,
    latency: BTreeMap<String, Histogram>,
}

#[derive(Default)]
pub struct Metrics {
    requests: Mutex<Requests>,
    pub cache_hits: AtomicU64,
    pub cache_misses: AtomicU64,
    pub reloads: AtomicU64,
    pub reload_failures: AtomicU64,
    pub encoded_batches: AtomicU64,
    pub encoded_texts: AtomicU64,
    /// Texts dropped unencoded because every request waiting for them had gone.
    pub abandoned_texts: AtomicU64,
    /// Requests refused because the text queue was full.
    pub queue_full: AtomicU64,
    pub open_connections: AtomicU64,
    /// Connections answered 503 because the cap was reached.
    pub refused_connections: AtomicU64,
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

impl Metrics {
    pub fn observe(&self, route: &str, method: &str, status: u16, seconds: f64) {
        let mut r = self.requests.lock().unwrap_or_else(|p| p.into_inner());
        *r.by_status
            .entry((route.to_string(), method_label(method).to_string(), status))
            .or_default() += 1;
        let h = r.latency.entry(route.to_string()).or_default();
        for (i, le) in BUCKETS.iter().enumerate() {
            if seconds <= *le {
                h.counts[i] += 1;
            }
        }
        h.count += 1;
        h.sum += seconds;
    }

    /// The exposition text; `gauges` are (name, help, value) read at scrape time.
    pub fn render(&self, gauges: &[(&str, &str, f64)]) -> String {
        let mut out = String::new();
        let r = self.requests.lock().unwrap_or_else(|p| p.into_inner());
        out.push_str("# HELP regionseek_http_requests_total HTTP requests answered.\n");
        out.push_str("# TYPE regionseek_http_requests_total counter\n");
        for ((route, method, status), n) in &r.by_status {
            let _ = writeln!(
                out,
                "regionseek_http_requests_total{{route=\"{}\",method=\"{}\",status=\"{status}\"}} {n}",
                escape(route),
                escape(method)
            );
        }
        out.push_str("# HELP regionseek_http_request_duration_seconds Time to answer a request.\n");
        out.push_str("# TYPE regionseek_http_request_duration_seconds histogram\n");
        for (route, h) in &r.latency {
            let route = escape(route);
            for (le, c) in BUCKETS.iter().zip(h.counts) {
                let _ = writeln!(
                    out,
                    "regionseek_http_request_duration_seconds_bucket{{route=\"{route}\",le=\"{le}\"}} {c}"
                );
            }
            let _ = writeln!(
                out,
                "regionseek_http_request_duration_seconds_bucket{{route=\"{route}\",le=\"+Inf\"}} {}",
                h.count
            );
            let _ = writeln!(
                out,
                "regionseek_http_request_duration_seconds_sum{{route=\"{route}\"}} {}",
                h.sum
            );
            let _ = writeln!(
                out,
                "regionseek_http_request_duration_seconds_count{{route=\"{route}\"}} {}",
                h.count
            );
        }
        drop(r);
        let counters = [
            (
                "regionseek_text_cache_hits_total",
                "Query texts answered from the embedding cache.",
                &self.cache_hits,
            ),
            (
                "regionseek_text_cache_misses_total",
                "Query texts run through the text tower.",
                &self.cache_misses,
            ),
            (
                "regionseek_text_batches_total",
                "Text-tower batches run.",
                &self.encoded_batches,
            ),
            (
                "regionseek_text_encoded_total",
                "Texts run through the text tower.",
                &self.encoded_texts,
            ),
            (
                "regionseek_text_abandoned_total",
                "Texts dropped unencoded because their requests had gone.",
                &self.abandoned_texts,
            ),
            (
                "regionseek_text_queue_full_total",
                "Requests refused because the text queue was full.",
                &self.queue_full,
            ),
            (
                "regionseek_connections_refused_total",
                "Connections answered 503 because the connection cap was reached.",
                &self.refused_connections,
            ),
            (
                "regionseek_index_reloads_total",
                "New index commits picked up.",
                &self.reloads,
            ),
            (
                "regionseek_index_reload_failures_total",
                "Index commits that could not be opened (the previous one kept serving).",
                &self.reload_failures,
            ),
        ];
        for (name, help, v) in counters {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                v.load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(
            out,
            "# HELP regionseek_open_connections Connections open now.\n# TYPE regionseek_open_connections gauge\nregionseek_open_connections {}",
            self.open_connections.load(Ordering::Relaxed)
        );
        for (name, help, v) in gauges {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        }
        out
    }
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
