//! `--metrics ADDR`: the job's metrics as Prometheus text, served over
//! HTTP while it runs.

use std::net::SocketAddr;

/// Installs a Prometheus recorder for the `metrics` facade the runtime
/// reports through, and serves what it records at `http://ADDR/metrics`
/// (any path answers) from a thread of its own, until the process ends.
///
/// Every metric the runtime reports is prefixed `checkpoint_` and labelled
/// with the physical operator where it is per operator: tuples in and out,
/// windows, completed and failed checkpoints, their size, encode time and
/// encode-to-durable latency (histograms), save retries, restarts, replay
/// bytes, spilled windows, the alignment wait of operators with several
/// inputs, and the committed window with its lag behind
/// the newest checkpoint (`docs/GUARANTEES.md`, "Metrics").
///
/// # Examples
///
/// ```no_run
/// checkpoint_examples::metrics::serve("127.0.0.1:9184".parse()?)?;
/// // ... run the job; `curl http://127.0.0.1:9184/metrics` meanwhile.
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn serve(addr: SocketAddr) -> Result<(), String> {
    metrics_exporter_prometheus::PrometheusBuilder::new()
        .with_http_listener(addr)
        .install()
        .map_err(|e| format!("cannot serve metrics at {addr}: {e}"))
}
