//! Prometheus metrics. One [`Metrics`] per node, in its own registry (no
//! global state); the node and the HTTP fairing record, `GET /metrics`
//! renders. Route labels are route templates, never raw keys.

use std::sync::atomic::{AtomicI64, Ordering};

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

use crate::error::Error;

pub struct Metrics {
    registry: Registry,
    pub uploads: IntCounterVec,
    pub upload_bytes: IntCounter,
    pub upload_duration: Histogram,
    pub uploads_in_flight: IntGauge,
    pub spool_memory: IntGauge,
    pub disk_free: IntGaugeVec,
    pub datasets: IntGauge,
    pub dataset_bytes: IntGauge,
    pub http_requests: IntCounterVec,
    pub http_duration: HistogramVec,
    /// Resumable uploads: created, finished, terminated, expired.
    pub tus_uploads: IntCounterVec,
    pub tus_bytes: IntCounter,
    /// Resumable uploads whose state (lock, running hash) is held in memory.
    pub tus_in_memory: IntGauge,
    /// Logical bytes: the sizes of every kept version.
    pub version_bytes: IntGauge,
    /// Physical bytes: the sizes of every stored blob (identical bytes once).
    pub stored_bytes: IntGauge,
    /// Blobs a scrub found damaged.
    pub scrub_corrupt: IntCounter,
    /// Bytes re-read and hashed by scrubs.
    pub scrub_bytes: IntCounter,
    /// The catalog's totals, kept in step by commits and deletes.
    count: AtomicI64,
    bytes: AtomicI64,
}

/// How an upload ended, for `spillway_uploads_total{outcome}`.
#[derive(Debug, Clone, Copy)]
pub enum Outcome {
    /// Stored and acknowledged.
    Committed,
    /// Refused for what it was (size, key, digest, precondition, space).
    Rejected,
    /// The client went away or stalled.
    Aborted,
    /// The node failed.
    Failed,
}

impl Outcome {
    pub fn of(error: &Error) -> Outcome {
        match error {
            Error::Disconnected(_) | Error::Truncated { .. } | Error::Stalled(_) | Error::TakenOver => Outcome::Aborted,
            Error::Internal(_) => Outcome::Failed,
            _ => Outcome::Rejected,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Outcome::Committed => "committed",
            Outcome::Rejected => "rejected",
            Outcome::Aborted => "aborted",
            Outcome::Failed => "failed",
        }
    }
}

const DURATION_BUCKETS: &[f64] = &[0.005, 0.025, 0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 1800.0, 7200.0];

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let m = Metrics {
            uploads: IntCounterVec::new(Opts::new("spillway_uploads_total", "Uploads by how they ended"), &["outcome"])
                .unwrap(),
            upload_bytes: IntCounter::new("spillway_upload_bytes_total", "Body bytes received by uploads").unwrap(),
            upload_duration: Histogram::with_opts(
                HistogramOpts::new("spillway_upload_duration_seconds", "Time from first byte to answer")
                    .buckets(DURATION_BUCKETS.to_vec()),
            )
            .unwrap(),
            uploads_in_flight: IntGauge::new("spillway_uploads_in_flight", "Uploads being received").unwrap(),
            spool_memory: IntGauge::new("spillway_spool_memory_bytes", "Bytes held by in-memory spools").unwrap(),
            disk_free: IntGaugeVec::new(
                Opts::new("spillway_disk_free_bytes", "Free bytes on each volume"),
                &["volume"],
            )
            .unwrap(),
            datasets: IntGauge::new("spillway_datasets", "Datasets in the catalog").unwrap(),
            dataset_bytes: IntGauge::new("spillway_dataset_bytes", "Bytes of all datasets").unwrap(),
            http_requests: IntCounterVec::new(
                Opts::new("spillway_http_requests_total", "HTTP requests by route template, method and status"),
                &["route", "method", "status"],
            )
            .unwrap(),
            http_duration: HistogramVec::new(
                HistogramOpts::new("spillway_http_request_duration_seconds", "HTTP request duration")
                    .buckets(DURATION_BUCKETS.to_vec()),
                &["route", "method"],
            )
            .unwrap(),
            tus_uploads: IntCounterVec::new(
                Opts::new("spillway_resumable_uploads_total", "Resumable uploads by event"),
                &["event"],
            )
            .unwrap(),
            tus_bytes: IntCounter::new(
                "spillway_resumable_upload_bytes_total",
                "Bytes received by resumable-upload PATCHes",
            )
            .unwrap(),
            tus_in_memory: IntGauge::new(
                "spillway_resumable_uploads_in_memory",
                "Resumable uploads whose state is held in memory",
            )
            .unwrap(),
            version_bytes: IntGauge::new("spillway_version_bytes", "Bytes of every kept version (logical)").unwrap(),
            stored_bytes: IntGauge::new(
                "spillway_stored_bytes",
                "Bytes of every stored blob, identical bytes counted once (physical)",
            )
            .unwrap(),
            scrub_corrupt: IntCounter::new("spillway_scrub_corrupt_total", "Stored blobs a scrub found damaged")
                .unwrap(),
            scrub_bytes: IntCounter::new("spillway_scrub_bytes_total", "Bytes re-read and hashed by scrubs").unwrap(),
            count: AtomicI64::new(0),
            bytes: AtomicI64::new(0),
            registry,
        };
        for c in [
            Box::new(m.uploads.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(m.upload_bytes.clone()),
            Box::new(m.upload_duration.clone()),
            Box::new(m.uploads_in_flight.clone()),
            Box::new(m.spool_memory.clone()),
            Box::new(m.disk_free.clone()),
            Box::new(m.datasets.clone()),
            Box::new(m.dataset_bytes.clone()),
            Box::new(m.http_requests.clone()),
            Box::new(m.http_duration.clone()),
            Box::new(m.tus_uploads.clone()),
            Box::new(m.tus_bytes.clone()),
            Box::new(m.tus_in_memory.clone()),
            Box::new(m.version_bytes.clone()),
            Box::new(m.stored_bytes.clone()),
            Box::new(m.scrub_corrupt.clone()),
            Box::new(m.scrub_bytes.clone()),
        ] {
            m.registry.register(c).expect("metric names are unique");
        }
        for outcome in [Outcome::Committed, Outcome::Rejected, Outcome::Aborted, Outcome::Failed] {
            m.uploads.with_label_values(&[outcome.label()]);
        }
        for event in ["created", "finished", "terminated", "expired"] {
            m.tus_uploads.with_label_values(&[event]);
        }
        m
    }

    pub fn upload_ended(&self, outcome: Outcome, seconds: f64) {
        self.uploads.with_label_values(&[outcome.label()]).inc();
        self.upload_duration.observe(seconds);
    }

    pub fn tus_event(&self, event: &str) {
        self.tus_uploads.with_label_values(&[event]).inc();
    }

    /// Sets the catalog totals (at start).
    pub fn set_catalog(&self, count: u64, bytes: u64) {
        self.count.store(count as i64, Ordering::Relaxed);
        self.bytes.store(bytes as i64, Ordering::Relaxed);
    }

    /// A dataset appeared, was replaced (`old` is its previous size) or went.
    pub fn catalog_changed(&self, count_delta: i64, bytes_delta: i64) {
        self.count.fetch_add(count_delta, Ordering::Relaxed);
        self.bytes.fetch_add(bytes_delta, Ordering::Relaxed);
    }

    /// The text exposition, with the gauges read now.
    pub fn render(&self, spool_memory: usize, volumes: &[(&str, Option<u64>)]) -> String {
        self.spool_memory.set(spool_memory as i64);
        for (volume, free) in volumes {
            if let Some(free) = free {
                self.disk_free.with_label_values(&[volume]).set(*free as i64);
            }
        }
        self.datasets.set(self.count.load(Ordering::Relaxed));
        self.dataset_bytes.set(self.bytes.load(Ordering::Relaxed));
        let mut out = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut out).expect("text encoding");
        String::from_utf8(out).expect("metrics are UTF-8")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}
