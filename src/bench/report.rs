//! Bench results: the human table, the `--json` line, and the `--plot` SVG.

use std::path::{Path, PathBuf};

use hdrhistogram::Histogram;
use serde::Serialize;

/// Latency percentiles in microseconds.
#[derive(Serialize, Debug, Default, Clone)]
pub struct Latency {
    pub samples: u64,
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
}

impl Latency {
    /// From a histogram of nanoseconds.
    pub fn from_histogram(h: &Histogram<u64>) -> Latency {
        let us = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        Latency {
            samples: h.len(),
            p50_us: us(0.5),
            p90_us: us(0.9),
            p99_us: us(0.99),
            p999_us: us(0.999),
            max_us: h.max() as f64 / 1000.0,
        }
    }
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// One run's results.
#[derive(Serialize, Debug, Default)]
pub struct Report {
    pub scenario: String,
    pub label: String,
    pub url: String,
    pub transport: String,
    pub serializer: String,
    pub size: usize,
    pub publishers: usize,
    pub subscribers: usize,
    pub callers: usize,
    pub callees: usize,
    pub inflight: usize,
    /// The open-loop publish rate, if one was set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate: Option<u64>,
    /// Stalled (never reading) subscribers added to the run.
    #[serde(skip_serializing_if = "is_zero")]
    pub stalled: usize,
    pub duration_s: f64,
    /// Messages published or calls made.
    pub sent: u64,
    pub sent_per_s: f64,
    /// Deliveries expected (published × subscribers) or calls expected to complete.
    pub expected: u64,
    /// Deliveries received by subscribers, or results received by callers.
    pub received: u64,
    pub received_per_s: f64,
    /// expected − received after the grace period.
    pub lost: u64,
    /// Deliveries out of per-publisher order (or duplicated), calls that errored.
    pub errors: u64,
    pub latency: Latency,
    /// Peak resident memory of the router during the run (with --router-pid), MiB.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub router_rss_peak_mib: Option<f64>,
    /// Resident memory of the router at the end of the run, MiB.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub router_rss_end_mib: Option<f64>,
    /// Stalled subscribers (never read) that the router still had connected at the end.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stalled_still_connected: Option<usize>,
    /// Deliveries per 100 ms, from the start of sending (for --plot).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub timeline: Vec<u64>,
    #[serde(skip)]
    pub plot: Option<PathBuf>,
    #[serde(skip)]
    pub json: bool,
}

impl Report {
    /// Prints the report (table or JSON line) and draws the plot if asked.
    pub fn emit(self) {
        if let Some(p) = &self.plot {
            if let Err(e) = draw(&self, p) {
                eprintln!("switchyard bench: cannot draw {}: {e}", p.display());
            }
        }
        if self.json {
            println!(
                "{}",
                serde_json::to_string(&self).expect("report serializes")
            );
            return;
        }
        let who = if self.label.is_empty() {
            self.url.clone()
        } else {
            format!("{} ({})", self.label, self.url)
        };
        println!("{} against {who}", self.scenario);
        println!(
            "  {} {}, {} B payload, {:.1} s",
            self.transport, self.serializer, self.size, self.duration_s
        );
        if self.scenario == "pubsub" {
            println!(
                "  {} publisher(s) -> {} subscriber(s)",
                self.publishers, self.subscribers
            );
            println!("  published   {:>12} ({:.0}/s)", self.sent, self.sent_per_s);
            println!(
                "  delivered   {:>12} ({:.0}/s)",
                self.received, self.received_per_s
            );
            println!(
                "  lost        {:>12} of {} expected",
                self.lost, self.expected
            );
            println!("  out of order{:>12}", self.errors);
        } else {
            println!(
                "  {} caller(s) x {} in flight -> {} callee(s)",
                self.callers, self.inflight, self.callees
            );
            println!(
                "  calls       {:>12} ({:.0}/s)",
                self.received, self.received_per_s
            );
            println!("  errors      {:>12}", self.errors);
        }
        if let Some(peak) = self.router_rss_peak_mib {
            println!(
                "  router RSS  peak {peak:.1} MiB, end {:.1} MiB",
                self.router_rss_end_mib.unwrap_or(0.0)
            );
        }
        if let Some(n) = self.stalled_still_connected {
            println!("  stalled subscribers still connected at the end: {n}");
        }
        let l = &self.latency;
        println!(
            "  latency us  p50 {:.0}  p90 {:.0}  p99 {:.0}  p99.9 {:.0}  max {:.0}  ({} samples)",
            l.p50_us, l.p90_us, l.p99_us, l.p999_us, l.max_us, l.samples
        );
    }
}

fn draw(r: &Report, path: &Path) -> Result<(), Box<dyn std::error::Error>> {
    use plotters::prelude::*;
    let root = SVGBackend::new(path, (800, 400)).into_drawing_area();
    root.fill(&WHITE)?;
    let per_s: Vec<f64> = r.timeline.iter().map(|n| *n as f64 * 10.0).collect();
    let max = per_s.iter().cloned().fold(1.0, f64::max);
    let secs = per_s.len() as f64 / 10.0;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("{} {} {} B: deliveries/s", r.scenario, r.serializer, r.size),
            ("sans-serif", 18),
        )
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..secs.max(0.1), 0f64..max * 1.1)?;
    chart
        .configure_mesh()
        .x_desc("seconds")
        .y_desc("per second")
        .draw()?;
    chart.draw_series(LineSeries::new(
        per_s.iter().enumerate().map(|(i, v)| (i as f64 / 10.0, *v)),
        &BLUE,
    ))?;
    root.present()?;
    Ok(())
}
