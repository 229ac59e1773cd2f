//! `[telemetry]`: where OpenTelemetry spans and metrics go. The endpoint comes from the
//! config file or, as OpenTelemetry SDKs read it, from the environment; with neither, no
//! exporter is installed and spans and metrics cost nothing.
//!
//! Precedence, per signal: `OTEL_SDK_DISABLED=true` turns export off; otherwise
//! `[telemetry] otlp_endpoint` (base URL: `/v1/traces` or `/v1/metrics` is appended),
//! then `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` / `OTEL_EXPORTER_OTLP_METRICS_ENDPOINT` (the
//! full URL, used as is), then `OTEL_EXPORTER_OTLP_ENDPOINT` (base URL). The file wins
//! because it is the mesh's own, explicit setting; the environment fills in when the
//! file says nothing. Metrics are exported every `metrics_interval_ms`, else
//! `OTEL_METRIC_EXPORT_INTERVAL`, else 60 s.

use anyhow::{Result, bail};
use mesh_telemetry::ExportConfig;
use mesh_telemetry::metrics::MetricsConfig;
use serde::Deserialize;
use std::time::Duration;

/// The environment variables read (the OpenTelemetry SDK names).
pub const ENV_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";
pub const ENV_TRACES_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT";
pub const ENV_METRICS_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT";
pub const ENV_METRIC_INTERVAL: &str = "OTEL_METRIC_EXPORT_INTERVAL";
/// OTel's default export interval for metrics.
const DEFAULT_METRIC_INTERVAL: Duration = Duration::from_secs(60);
pub const ENV_DISABLED: &str = "OTEL_SDK_DISABLED";

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetryFileConfig {
    /// OTLP/HTTP base URL, e.g. `http://collector:4318`.
    pub otlp_endpoint: Option<String>,
    /// Spans held while the collector is slow; beyond this they are dropped.
    pub max_queue: Option<usize>,
    /// How long a span waits for its batch.
    pub batch_delay_ms: Option<u64>,
    /// Between metric exports.
    pub metrics_interval_ms: Option<u64>,
}

/// Resolved: each signal `None` when it is not exported.
#[derive(Debug, Clone, Default)]
pub struct TelemetrySettings {
    pub traces: Option<ExportConfig>,
    pub metrics: Option<MetricsConfig>,
}

/// The settings from the file and the OTEL_* variables in `env`.
pub fn resolve(file: TelemetryFileConfig, env: &[(String, String)]) -> Result<TelemetrySettings> {
    let var = |name: &str| {
        env.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.trim().to_string())
            .filter(|v| !v.is_empty())
    };
    if var(ENV_DISABLED).is_some_and(|v| v.eq_ignore_ascii_case("true")) {
        return Ok(TelemetrySettings::default());
    }
    // (setting, URL) for a signal: the file's base, the signal's variable, the base one.
    let endpoint = |signal_var: &'static str, path: &str| {
        if let Some(base) = &file.otlp_endpoint {
            Some(("[telemetry] otlp_endpoint", signal_url(base, path)))
        } else if let Some(full) = var(signal_var) {
            Some((signal_var, full))
        } else {
            var(ENV_ENDPOINT).map(|base| (ENV_ENDPOINT, signal_url(&base, path)))
        }
    };
    let checked = |found: Option<(&str, String)>| -> Result<Option<String>> {
        match found {
            Some((setting, url))
                if !(url.starts_with("http://") || url.starts_with("https://")) =>
            {
                bail!("{setting}: `{url}` must be an http:// or https:// URL (OTLP/HTTP)")
            }
            found => Ok(found.map(|(_, url)| url)),
        }
    };
    let traces = match checked(endpoint(ENV_TRACES_ENDPOINT, "traces"))? {
        None => None,
        Some(url) => {
            let mut config = ExportConfig::new(url);
            if let Some(n) = file.max_queue {
                if n == 0 {
                    bail!("[telemetry] max_queue must be at least 1");
                }
                config.max_queue = n;
            }
            if let Some(ms) = file.batch_delay_ms {
                config.delay = Duration::from_millis(ms.max(1));
            }
            Some(config)
        }
    };
    let metrics = match checked(endpoint(ENV_METRICS_ENDPOINT, "metrics"))? {
        None => None,
        Some(metrics_url) => {
            let interval = match (file.metrics_interval_ms, var(ENV_METRIC_INTERVAL)) {
                (Some(ms), _) => ms,
                (None, Some(ms)) => ms.parse().map_err(|_| {
                    anyhow::anyhow!("{ENV_METRIC_INTERVAL}: `{ms}` is not a number of milliseconds")
                })?,
                (None, None) => DEFAULT_METRIC_INTERVAL.as_millis() as u64,
            };
            if interval == 0 {
                bail!("the metrics export interval must be at least 1 ms");
            }
            Some(MetricsConfig {
                metrics_url,
                interval: Duration::from_millis(interval),
            })
        }
    };
    Ok(TelemetrySettings { traces, metrics })
}

/// `{base}/v1/{signal}`, as the OTLP exporter specification builds it from a base URL.
fn signal_url(base: &str, signal: &str) -> String {
    format!("{}/v1/{signal}", base.trim().trim_end_matches('/'))
}

/// The OTEL_* variables of this process, for [`resolve`].
pub fn process_env() -> Vec<(String, String)> {
    std::env::vars()
        .filter(|(k, _)| k.starts_with("OTEL_"))
        .collect()
}

/// Installs the exporter for this process when the settings name an endpoint.
pub fn install(settings: &TelemetrySettings) {
    let instance = uuid::Uuid::new_v4().to_string();
    if let Some(config) = &settings.traces {
        mesh_telemetry::install(config.clone(), &instance);
    }
    if let Some(config) = &settings.metrics {
        mesh_telemetry::metrics::install_metrics(config.clone(), &instance);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn file(endpoint: Option<&str>) -> TelemetryFileConfig {
        TelemetryFileConfig {
            otlp_endpoint: endpoint.map(str::to_string),
            ..Default::default()
        }
    }

    fn url(settings: TelemetrySettings) -> Option<String> {
        settings.traces.map(|c| c.traces_url)
    }

    #[test]
    fn nothing_is_exported_without_an_endpoint() {
        assert_eq!(url(resolve(file(None), &[]).unwrap()), None);
        let unrelated = env(&[("OTEL_SERVICE_NAME", "x"), (ENV_ENDPOINT, " ")]);
        assert_eq!(url(resolve(file(None), &unrelated).unwrap()), None);
    }

    #[test]
    fn the_file_wins_then_the_traces_variable_then_the_base_variable() {
        let both = env(&[
            (ENV_ENDPOINT, "http://base:4318/"),
            (ENV_TRACES_ENDPOINT, "http://traces:4318/custom"),
        ]);
        assert_eq!(
            url(resolve(file(Some("http://file:4318")), &both).unwrap()).as_deref(),
            Some("http://file:4318/v1/traces")
        );
        assert_eq!(
            url(resolve(file(None), &both).unwrap()).as_deref(),
            Some("http://traces:4318/custom")
        );
        let base = env(&[(ENV_ENDPOINT, "http://base:4318/")]);
        assert_eq!(
            url(resolve(file(None), &base).unwrap()).as_deref(),
            Some("http://base:4318/v1/traces")
        );
        let off = env(&[(ENV_DISABLED, "TRUE"), (ENV_ENDPOINT, "http://base:4318")]);
        assert_eq!(
            url(resolve(file(Some("http://f:4318")), &off).unwrap()),
            None
        );
    }

    #[test]
    fn the_config_file_section_resolves_with_the_injected_environment() {
        use crate::config::{Config, Overrides};
        let text =
            "[telemetry]\notlp_endpoint = \"http://c:4318/\"\nmax_queue = 10\nbatch_delay_ms = 50";
        let c = Config::resolve(Some(("m.toml", text)), &Overrides::default()).unwrap();
        let t = c.telemetry.traces.unwrap();
        assert_eq!(t.traces_url, "http://c:4318/v1/traces");
        assert_eq!((t.max_queue, t.delay), (10, Duration::from_millis(50)));
        let flags = Overrides {
            otel_env: env(&[(ENV_ENDPOINT, "http://e:4318")]),
            ..Overrides::default()
        };
        let c = Config::resolve(None, &flags).unwrap();
        assert_eq!(
            c.telemetry.traces.unwrap().traces_url,
            "http://e:4318/v1/traces"
        );
        let none = Config::resolve(None, &Overrides::default()).unwrap();
        assert!(none.telemetry.traces.is_none() && none.telemetry.metrics.is_none());
        let err = Config::resolve(
            Some(("m.toml", "[telemetry]\nendpoint = \"x\"")),
            &Overrides::default(),
        )
        .unwrap_err();
        assert!(format!("{err:#}").contains("endpoint"), "{err:#}");
    }

    #[test]
    fn metrics_follow_the_same_endpoints_with_their_own_interval() {
        let metrics =
            |f: TelemetryFileConfig, e: &[(&str, &str)]| resolve(f, &env(e)).unwrap().metrics;
        let from_file = metrics(file(Some("http://file:4318/")), &[]).unwrap();
        assert_eq!(from_file.metrics_url, "http://file:4318/v1/metrics");
        assert_eq!(from_file.interval, DEFAULT_METRIC_INTERVAL);
        let own = metrics(
            file(None),
            &[
                (ENV_ENDPOINT, "http://base:4318"),
                (ENV_METRICS_ENDPOINT, "http://m:4318/custom"),
                (ENV_METRIC_INTERVAL, "5000"),
            ],
        )
        .unwrap();
        assert_eq!(own.metrics_url, "http://m:4318/custom");
        assert_eq!(own.interval, Duration::from_secs(5));
        let only_metrics = resolve(
            file(None),
            &env(&[(ENV_METRICS_ENDPOINT, "http://m:4318/x")]),
        )
        .unwrap();
        assert!(only_metrics.traces.is_none() && only_metrics.metrics.is_some());
        let interval = TelemetryFileConfig {
            metrics_interval_ms: Some(250),
            ..file(Some("http://f:4318"))
        };
        assert_eq!(
            metrics(interval, &[(ENV_METRIC_INTERVAL, "9")])
                .unwrap()
                .interval,
            Duration::from_millis(250)
        );
        let bad = resolve(
            file(None),
            &env(&[
                (ENV_ENDPOINT, "http://b:4318"),
                (ENV_METRIC_INTERVAL, "soon"),
            ]),
        );
        assert!(bad.unwrap_err().to_string().contains(ENV_METRIC_INTERVAL));
    }

    #[test]
    fn a_bad_endpoint_is_named() {
        let err = resolve(file(Some("collector:4317")), &[]).unwrap_err();
        assert!(err.to_string().contains("otlp_endpoint"), "{err}");
        let err = resolve(file(None), &env(&[(ENV_ENDPOINT, "grpc://x")])).unwrap_err();
        assert!(err.to_string().contains(ENV_ENDPOINT), "{err}");
    }
}
