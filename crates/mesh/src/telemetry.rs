//! `[telemetry]`: where OpenTelemetry spans go. The endpoint comes from the config file
//! or, as OpenTelemetry SDKs read it, from the environment; with neither, no exporter
//! is installed and spans cost nothing.
//!
//! Precedence: `OTEL_SDK_DISABLED=true` turns export off; otherwise `[telemetry]
//! otlp_endpoint` (base URL: `/v1/traces` is appended), then
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` (the full URL, used as is), then
//! `OTEL_EXPORTER_OTLP_ENDPOINT` (base URL). The file wins because it is the mesh's own,
//! explicit setting; the environment fills in when the file says nothing.

use anyhow::{Result, bail};
use mesh_telemetry::ExportConfig;
use serde::Deserialize;
use std::time::Duration;

/// The environment variables read (the OpenTelemetry SDK names).
pub const ENV_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";
pub const ENV_TRACES_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT";
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
}

/// Resolved: `None` when nothing is to be exported.
pub type TelemetrySettings = Option<ExportConfig>;

/// The settings from the file and the OTEL_* variables in `env`.
pub fn resolve(file: TelemetryFileConfig, env: &[(String, String)]) -> Result<TelemetrySettings> {
    let var = |name: &str| {
        env.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.trim().to_string())
            .filter(|v| !v.is_empty())
    };
    if var(ENV_DISABLED).is_some_and(|v| v.eq_ignore_ascii_case("true")) {
        return Ok(None);
    }
    let (setting, url) = if let Some(base) = file.otlp_endpoint {
        ("[telemetry] otlp_endpoint", traces_url(&base))
    } else if let Some(full) = var(ENV_TRACES_ENDPOINT) {
        (ENV_TRACES_ENDPOINT, full)
    } else if let Some(base) = var(ENV_ENDPOINT) {
        (ENV_ENDPOINT, traces_url(&base))
    } else {
        return Ok(None);
    };
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        bail!("{setting}: `{url}` must be an http:// or https:// URL (OTLP/HTTP)");
    }
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
    Ok(Some(config))
}

/// `{base}/v1/traces`, as the OTLP exporter specification builds it from a base URL.
fn traces_url(base: &str) -> String {
    format!("{}/v1/traces", base.trim().trim_end_matches('/'))
}

/// The OTEL_* variables of this process, for [`resolve`].
pub fn process_env() -> Vec<(String, String)> {
    std::env::vars()
        .filter(|(k, _)| k.starts_with("OTEL_"))
        .collect()
}

/// Installs the exporter for this process when the settings name an endpoint.
pub fn install(settings: &TelemetrySettings) {
    if let Some(config) = settings {
        mesh_telemetry::install(config.clone(), &uuid::Uuid::new_v4().to_string());
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
        settings.map(|c| c.traces_url)
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
        let t = c.telemetry.unwrap();
        assert_eq!(t.traces_url, "http://c:4318/v1/traces");
        assert_eq!((t.max_queue, t.delay), (10, Duration::from_millis(50)));
        let flags = Overrides {
            otel_env: env(&[(ENV_ENDPOINT, "http://e:4318")]),
            ..Overrides::default()
        };
        let c = Config::resolve(None, &flags).unwrap();
        assert_eq!(c.telemetry.unwrap().traces_url, "http://e:4318/v1/traces");
        assert!(
            Config::resolve(None, &Overrides::default())
                .unwrap()
                .telemetry
                .is_none()
        );
        let err = Config::resolve(
            Some(("m.toml", "[telemetry]\nendpoint = \"x\"")),
            &Overrides::default(),
        )
        .unwrap_err();
        assert!(format!("{err:#}").contains("endpoint"), "{err:#}");
    }

    #[test]
    fn a_bad_endpoint_is_named() {
        let err = resolve(file(Some("collector:4317")), &[]).unwrap_err();
        assert!(err.to_string().contains("otlp_endpoint"), "{err}");
        let err = resolve(file(None), &env(&[(ENV_ENDPOINT, "grpc://x")])).unwrap_err();
        assert!(err.to_string().contains(ENV_ENDPOINT), "{err}");
    }
}
