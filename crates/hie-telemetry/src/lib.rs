//! Telemetry set-up shared by every hie-edge process: structured logs with `tracing`, optional
//! OpenTelemetry trace export over OTLP/HTTP, and a small Prometheus text writer for `/metrics`.
//!
//! PHI rule: nothing here logs message content; callers log identifiers of *our* objects
//! (store ids, control ids of ACKs), error codes and locations, never names, MRNs or payloads at
//! info level.
//!
//! Modules:
//! - [`metrics`]: Prometheus text exposition (format 0.0.4).

pub mod metrics;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// `[telemetry]` as the binary hands it over.
#[derive(Debug, Clone)]
pub struct TelemetryConfig {
    pub log_format: LogFormat,
    /// An `EnvFilter` directive such as `info` or `info,hie_store=debug`.
    pub log_level: String,
    /// OTLP/HTTP traces endpoint (e.g. `http://127.0.0.1:4318/v1/traces`); `None` turns export off.
    pub otlp_endpoint: Option<String>,
    pub service_name: String,
}

/// Keeps exporters alive; flushes pending spans when dropped.
#[derive(Debug)]
pub struct TelemetryGuard {
    tracer_provider: Option<SdkTracerProvider>,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TelemetryError {
    #[error("log_level {0:?} is not a valid filter: {1}")]
    BadFilter(String, String),
    #[error("OTLP exporter: {0}")]
    Otlp(String),
    #[error("a global subscriber is already installed")]
    AlreadyInstalled,
}

/// Checks a `log_level` directive without installing anything (for `check-config`).
pub fn check_filter(directive: &str) -> Result<(), String> {
    EnvFilter::try_new(directive).map(|_| ()).map_err(|error| error.to_string())
}

/// Installs the global subscriber. Must run inside a tokio runtime when OTLP export is on.
pub fn init(config: &TelemetryConfig) -> Result<TelemetryGuard, TelemetryError> {
    let filter = EnvFilter::try_new(&config.log_level)
        .map_err(|error| TelemetryError::BadFilter(config.log_level.clone(), error.to_string()))?;
    let fmt_layer = match config.log_format {
        // Colour codes only for a terminal: in files and journald they are noise.
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_writer(std::io::stderr)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer().json().with_writer(std::io::stderr).boxed(),
    };
    let (otel_layer, tracer_provider) = match &config.otlp_endpoint {
        Some(endpoint) => {
            let provider = otlp_provider(endpoint, &config.service_name)?;
            let tracer = provider.tracer("hie-edge");
            (Some(tracing_opentelemetry::layer().with_tracer(tracer)), Some(provider))
        }
        None => (None, None),
    };
    tracing_subscriber::registry()
        .with(filter)
        .with(fmt_layer)
        .with(otel_layer)
        .try_init()
        .map_err(|_| TelemetryError::AlreadyInstalled)?;
    Ok(TelemetryGuard { tracer_provider })
}

fn otlp_provider(endpoint: &str, service_name: &str) -> Result<SdkTracerProvider, TelemetryError> {
    use opentelemetry_otlp::WithExportConfig;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_endpoint(endpoint)
        .build()
        .map_err(|error| TelemetryError::Otlp(error.to_string()))?;
    let resource = opentelemetry_sdk::Resource::builder().with_service_name(service_name.to_owned()).build();
    // The exporter's HTTP client is hyper on tokio, so the batch processor must run its exports
    // on the tokio runtime; the SDK's default processor uses a plain thread with no reactor and
    // panics on the first export.
    let processor = opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor::builder(
        exporter,
        opentelemetry_sdk::runtime::Tokio,
    )
    .build();
    Ok(SdkTracerProvider::builder().with_span_processor(processor).with_resource(resource).build())
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(provider) = self.tracer_provider.take() {
            // Best effort: a collector that is down must not block shutdown.
            let _ = provider.shutdown();
        }
    }
}
