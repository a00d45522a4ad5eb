//! Prometheus metrics of this process: HTTP requests by route and status with latency
//! histograms, sync runs with their durations, and the database pool, rendered in Prometheus'
//! text format (0.0.4) at `/metrics`.
//!
//! One registry per process ([`global`]): the HTTP layer and the sync engine record into it
//! wherever they run (a server, a CLI sync). Labels are route patterns (`/scim/v2/Users/{id}`),
//! never paths, so a label set is bounded and names no person or directory.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{LazyLock, Mutex, PoisonError};

/// Upper bounds (seconds) of the HTTP latency buckets.
const REQUEST_BUCKETS: [f64; 12] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0];
/// Upper bounds (seconds) of the sync run duration buckets.
const SYNC_BUCKETS: [f64; 10] = [1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0];

/// Counts of observations at or below each bound, their sum and count.
#[derive(Debug, Clone, Default, PartialEq)]
struct Histogram {
    buckets: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn observe(&mut self, bounds: &[f64], value: f64) {
        if self.buckets.len() != bounds.len() {
            self.buckets = vec![0; bounds.len()];
        }
        for (count, bound) in self.buckets.iter_mut().zip(bounds) {
            if value <= *bound {
                *count += 1;
            }
        }
        self.sum += value;
        self.count += 1;
    }

    /// Writes `name_bucket`, `name_sum` and `name_count` lines with `labels` (already rendered,
    /// without braces) before `le`.
    fn render(&self, out: &mut String, name: &str, labels: &str, bounds: &[f64]) {
        let sep = if labels.is_empty() { "" } else { "," };
        for (bound, count) in bounds.iter().zip(self.buckets.iter().chain(std::iter::repeat(&0))) {
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {count}");
        }
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}", self.count);
        let _ = writeln!(out, "{name}_sum{{{labels}}} {}", self.sum);
        let _ = writeln!(out, "{name}_count{{{labels}}} {}", self.count);
    }
}

/// The database pool as r2d2 reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolState {
    pub connections: u32,
    pub idle: u32,
    pub max_size: u32,
}

#[derive(Debug, Default)]
struct Counts {
    /// (route, method, status) → requests.
    requests: BTreeMap<(String, String, u16), u64>,
    /// (route, method) → latency.
    latency: BTreeMap<(String, String), Histogram>,
    /// (kind, mode, status) → runs.
    sync_runs: BTreeMap<(String, String, String), u64>,
    /// (kind, mode) → duration.
    sync_durations: BTreeMap<(String, String), Histogram>,
}

/// A registry of scimd's metrics.
#[derive(Debug, Default)]
pub struct Metrics {
    counts: Mutex<Counts>,
}

/// The process's registry.
pub fn global() -> &'static Metrics {
    static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::default);
    &METRICS
}

impl Metrics {
    fn counts(&self) -> std::sync::MutexGuard<'_, Counts> {
        // A panic elsewhere while holding the lock leaves plain numbers behind: keep counting.
        self.counts.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// One HTTP request answered: `route` is the matched route pattern.
    pub fn observe_request(&self, route: &str, method: &str, status: u16, seconds: f64) {
        let mut counts = self.counts();
        *counts.requests.entry((route.to_string(), method.to_string(), status)).or_default() += 1;
        counts
            .latency
            .entry((route.to_string(), method.to_string()))
            .or_default()
            .observe(&REQUEST_BUCKETS, seconds);
    }

    /// One sync run ended: `kind` is `okta` or `entra`, `mode` `full` or `delta`, `status` the
    /// run's (`succeeded`, `failed`, `braked`, `dry_run`).
    pub fn observe_sync_run(&self, kind: &str, mode: &str, status: &str, seconds: f64) {
        let mut counts = self.counts();
        *counts.sync_runs.entry((kind.to_string(), mode.to_string(), status.to_string())).or_default() += 1;
        counts
            .sync_durations
            .entry((kind.to_string(), mode.to_string()))
            .or_default()
            .observe(&SYNC_BUCKETS, seconds);
    }

    /// Everything, in Prometheus' text format.
    pub fn render(&self, pool: Option<PoolState>) -> String {
        let counts = self.counts();
        let mut out = String::new();
        out.push_str(
            "# HELP scimd_http_requests_total HTTP requests answered, by route pattern, method and status.\n",
        );
        out.push_str("# TYPE scimd_http_requests_total counter\n");
        for ((route, method, status), count) in &counts.requests {
            let _ = writeln!(
                out,
                "scimd_http_requests_total{{route=\"{}\",method=\"{}\",status=\"{status}\"}} {count}",
                escape(route),
                escape(method)
            );
        }
        out.push_str("# HELP scimd_http_request_duration_seconds Time to answer an HTTP request, by route pattern and method.\n");
        out.push_str("# TYPE scimd_http_request_duration_seconds histogram\n");
        for ((route, method), histogram) in &counts.latency {
            let labels = format!("route=\"{}\",method=\"{}\"", escape(route), escape(method));
            histogram.render(&mut out, "scimd_http_request_duration_seconds", &labels, &REQUEST_BUCKETS);
        }
        out.push_str("# HELP scimd_sync_runs_total Sync runs ended, by source kind, mode and status.\n");
        out.push_str("# TYPE scimd_sync_runs_total counter\n");
        for ((kind, mode, status), count) in &counts.sync_runs {
            let _ = writeln!(
                out,
                "scimd_sync_runs_total{{kind=\"{}\",mode=\"{}\",status=\"{}\"}} {count}",
                escape(kind),
                escape(mode),
                escape(status)
            );
        }
        out.push_str(
            "# HELP scimd_sync_run_duration_seconds Duration of sync runs, by source kind and mode.\n",
        );
        out.push_str("# TYPE scimd_sync_run_duration_seconds histogram\n");
        for ((kind, mode), histogram) in &counts.sync_durations {
            let labels = format!("kind=\"{}\",mode=\"{}\"", escape(kind), escape(mode));
            histogram.render(&mut out, "scimd_sync_run_duration_seconds", &labels, &SYNC_BUCKETS);
        }
        if let Some(pool) = pool {
            out.push_str("# HELP scimd_db_pool_connections Database connections open, by state.\n");
            out.push_str("# TYPE scimd_db_pool_connections gauge\n");
            let busy = pool.connections.saturating_sub(pool.idle);
            let _ = writeln!(out, "scimd_db_pool_connections{{state=\"idle\"}} {}", pool.idle);
            let _ = writeln!(out, "scimd_db_pool_connections{{state=\"in_use\"}} {busy}");
            out.push_str("# HELP scimd_db_pool_max_connections Connections the pool may open.\n");
            out.push_str("# TYPE scimd_db_pool_max_connections gauge\n");
            let _ = writeln!(out, "scimd_db_pool_max_connections {}", pool.max_size);
        }
        out
    }
}

/// A label value as the text format wants it: `\`, `"` and newlines escaped.
fn escape(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_counted_by_route_and_status_with_cumulative_latency_buckets() {
        let metrics = Metrics::default();
        metrics.observe_request("/scim/v2/Users/{id}", "GET", 200, 0.003);
        metrics.observe_request("/scim/v2/Users/{id}", "GET", 200, 0.2);
        metrics.observe_request("/scim/v2/Users/{id}", "GET", 404, 20.0);
        let text = metrics.render(None);
        assert!(text.contains(
            "scimd_http_requests_total{route=\"/scim/v2/Users/{id}\",method=\"GET\",status=\"200\"} 2\n"
        ));
        assert!(text.contains("status=\"404\"} 1\n"));
        let bucket = |le: &str| {
            format!("scimd_http_request_duration_seconds_bucket{{route=\"/scim/v2/Users/{{id}}\",method=\"GET\",le=\"{le}\"}}")
        };
        assert!(text.contains(&format!("{} 0\n", bucket("0.001"))), "{text}");
        assert!(text.contains(&format!("{} 1\n", bucket("0.005"))), "{text}");
        assert!(text.contains(&format!("{} 2\n", bucket("0.25"))), "{text}");
        assert!(text.contains(&format!("{} 2\n", bucket("10"))), "over the last bound: only +Inf: {text}");
        assert!(text.contains(&format!("{} 3\n", bucket("+Inf"))), "{text}");
        assert!(text.contains(
            "scimd_http_request_duration_seconds_count{route=\"/scim/v2/Users/{id}\",method=\"GET\"} 3\n"
        ));
        assert!(!text.contains("scimd_db_pool"), "no pool, no pool gauges");
    }

    #[test]
    fn sync_runs_and_the_pool_are_rendered_and_labels_escaped() {
        let metrics = Metrics::default();
        metrics.observe_sync_run("okta", "delta", "succeeded", 4.2);
        metrics.observe_request("/a\"b\\c", "GET", 200, 0.01);
        let text = metrics.render(Some(PoolState { connections: 3, idle: 1, max_size: 8 }));
        assert!(text.contains("scimd_sync_runs_total{kind=\"okta\",mode=\"delta\",status=\"succeeded\"} 1\n"));
        assert!(text
            .contains("scimd_sync_run_duration_seconds_bucket{kind=\"okta\",mode=\"delta\",le=\"5\"} 1\n"));
        assert!(text
            .contains("scimd_sync_run_duration_seconds_bucket{kind=\"okta\",mode=\"delta\",le=\"1\"} 0\n"));
        assert!(text.contains("scimd_db_pool_connections{state=\"in_use\"} 2\n"));
        assert!(text.contains("scimd_db_pool_max_connections 8\n"));
        assert!(text.contains("route=\"/a\\\"b\\\\c\""), "{text}");
        // Every sample line is `name{labels} number` or `name number`.
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let value = line.rsplit(' ').next().unwrap();
            assert!(value.parse::<f64>().is_ok(), "{line}");
        }
    }
}
