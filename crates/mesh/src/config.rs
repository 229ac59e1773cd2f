//! Configuration: defaults, then the TOML file, then command-line flags.
//!
//! Parsing binds nothing and reads no environment: the file's text is passed in, so
//! tests can resolve configurations from strings.

use crate::agents::AgentDecl;
use anyhow::{Context, Result, bail};
use mesh_agents::Prompts;
use mesh_gateway::sim::Script;
use mesh_gateway::{AgentBreakerConfig, BudgetsConfig, LimitsConfig, ProviderConfig, RouteRule};
use mesh_orchestrator::flows::{FlowDef, Flows};
use mesh_policy::PolicyLocation;
use mesh_queue::QueueConfig;
use mesh_registry::ToolsConfig;
use mesh_service::ServiceName;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// The file format (`--config FILE`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub data_dir: Option<PathBuf>,
    pub store: Option<String>,
    /// Events bus: unset for the embedded bus, `memory://` or `redis://HOST:PORT`.
    pub bus: Option<String>,
    /// Address every service listens on unless `services.<name>.listen` says otherwise.
    pub bind: Option<IpAddr>,
    pub drain_grace_secs: Option<u64>,
    pub heartbeat_ttl_secs: Option<u64>,
    #[serde(default)]
    pub services: BTreeMap<String, ServiceConfig>,
    #[serde(default)]
    pub queue: QueueFileConfig,
    #[serde(default)]
    pub policy: PolicyFileConfig,
    #[serde(default)]
    pub secrets: SecretsFileConfig,
    #[serde(default)]
    pub tools: ToolsFileConfig,
    #[serde(default)]
    pub gateway: GatewayFileConfig,
    #[serde(default)]
    pub provenance: ProvenanceFileConfig,
    /// Task flows in matching order; absent means the built-in set.
    pub flows: Option<Vec<FlowDef>>,
    /// Agents the mesh spawns; absent means a planner, two coders and a critic.
    pub agents: Option<Vec<AgentDecl>>,
    /// Directory overriding the built-in agents' prompts (`planner.md`, `coder.md`,
    /// `critic.md`).
    pub prompts_dir: Option<PathBuf>,
    /// `[telemetry]`: OpenTelemetry export.
    #[serde(default)]
    pub telemetry: crate::telemetry::TelemetryFileConfig,
    /// `[checkpoints]`: signed checkpoints of the provenance log.
    #[serde(default)]
    pub checkpoints: crate::checkpoints::CheckpointsFileConfig,
    /// `[archive]`: where prompts, responses and tool payloads are archived.
    #[serde(default)]
    pub archive: mesh_archive::ArchiveConfig,
}

/// `[gateway]`: model providers besides the built-in `sim`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayFileConfig {
    #[serde(default)]
    pub providers: Vec<ProviderConfig>,
    #[serde(default)]
    pub limits: LimitsConfig,
    #[serde(default)]
    pub budgets: BudgetsConfig,
    #[serde(default)]
    pub routes: Vec<RouteRule>,
    /// Scripted replies for the `sim` provider (TOML); the embedded fixture otherwise.
    pub sim_script: Option<PathBuf>,
    #[serde(default)]
    pub agent_breaker: AgentBreakerConfig,
}

/// `[provenance]`: projections of the provenance log.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProvenanceFileConfig {
    /// Live graph: `falkordb://HOST:PORT/GRAPH` or `bolt://USER:PASS@HOST:PORT`.
    pub graph: Option<String>,
}

/// `[secrets]`: the mounted-secrets directory agents read from (one file per secret).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretsFileConfig {
    pub dir: Option<PathBuf>,
}

/// `[tools]`: what the built-in tools may touch.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolsFileConfig {
    /// Directories `file_read` and `file_write` may use; default `<data_dir>/workspace`.
    pub allowed_paths: Option<Vec<PathBuf>>,
    /// `redis://HOST:PORT[/DB][?prefix=NAME]` to share tools' `rateLimit` buckets
    /// between tool-registry processes; default in-process.
    pub limits_store: Option<String>,
}

/// `[policy]`: where the Rego policies come from.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyFileConfig {
    /// A directory of `.rego` files and `data.json`, or an OPA bundle `.tar.gz`.
    pub dir: Option<PathBuf>,
    /// How often the directory is checked for changes.
    pub reload_ms: Option<u64>,
}

/// The policy set to enforce and how often to look for changes to it.
#[derive(Debug, Clone)]
pub struct PolicySettings {
    pub location: PolicyLocation,
    pub reload_interval: Duration,
}

/// `[queue]`: leases and retries.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueFileConfig {
    pub lease_ms: Option<i64>,
    pub max_attempts: Option<i32>,
    pub backoff_base_ms: Option<i64>,
    pub backoff_max_ms: Option<i64>,
    pub ageing_secs: Option<i64>,
    pub sweep_interval_ms: Option<u64>,
    /// Tasks at or above this priority preempt lower-priority running work.
    pub critical_priority: Option<i32>,
    /// How long a critical task waits before a running task is asked to yield.
    pub preempt_after_ms: Option<i64>,
    /// Attempts for particular task types, e.g. `{ code_refactor = 5 }`.
    #[serde(default)]
    pub max_attempts_by_type: BTreeMap<String, i32>,
    /// How long one attempt may run, per task type, e.g. `{ implement = 120000 }`.
    #[serde(default)]
    pub timeout_ms_by_type: BTreeMap<String, i64>,
}

impl QueueFileConfig {
    fn resolve(self) -> Result<QueueConfig> {
        let mut q = QueueConfig::default();
        let positive = |name: &str, v: i64| {
            if v < 1 {
                bail!("[queue] {name} must be at least 1");
            }
            Ok(v)
        };
        if let Some(v) = self.lease_ms {
            q.lease_ms = positive("lease_ms", v)?;
        }
        if let Some(v) = self.max_attempts {
            q.default_max_attempts = positive("max_attempts", i64::from(v))? as i32;
        }
        if let Some(v) = self.backoff_base_ms {
            q.retry.base_ms = positive("backoff_base_ms", v)?;
        }
        if let Some(v) = self.backoff_max_ms {
            q.retry.max_ms = positive("backoff_max_ms", v)?;
        }
        if let Some(v) = self.ageing_secs {
            q.ageing_secs = positive("ageing_secs", v)?;
        }
        if let Some(v) = self.sweep_interval_ms {
            q.sweep_interval_ms = positive("sweep_interval_ms", v as i64)? as u64;
        }
        if let Some(v) = self.critical_priority {
            q.critical_priority = v;
        }
        if let Some(v) = self.preempt_after_ms {
            if v < 0 {
                bail!("[queue] preempt_after_ms must not be negative");
            }
            q.preempt_after_ms = v;
        }
        for (task_type, ms) in self.timeout_ms_by_type {
            positive(&format!("timeout_ms_by_type.{task_type}"), ms)?;
            q.timeout_ms_by_type.insert(task_type, ms);
        }
        for (task_type, n) in self.max_attempts_by_type {
            positive(&format!("max_attempts_by_type.{task_type}"), i64::from(n))?;
            q.max_attempts_by_type.insert(task_type, n);
        }
        Ok(q)
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceConfig {
    /// Where this service listens.
    pub listen: Option<SocketAddr>,
    /// Where other processes reach this service in split mode.
    pub url: Option<String>,
}

/// Flags that override the file.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub data_dir: Option<PathBuf>,
    pub store: Option<String>,
    pub bus: Option<String>,
    pub bind: Option<IpAddr>,
    pub listen: Vec<(ServiceName, SocketAddr)>,
    pub peers: Vec<(ServiceName, String)>,
    pub policy_dir: Option<PathBuf>,
    /// The process's `OTEL_*` environment variables (passed in, not read here).
    pub otel_env: Vec<(String, String)>,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub data_dir: PathBuf,
    /// `None`: SQLite under the data directory.
    pub store: Option<String>,
    /// `None`: the embedded bus in the store.
    pub bus: Option<String>,
    pub listen: BTreeMap<ServiceName, SocketAddr>,
    pub peers: BTreeMap<ServiceName, String>,
    pub drain_grace: Duration,
    pub heartbeat_ttl: Duration,
    pub queue: QueueConfig,
    pub policy: PolicySettings,
    /// `None`: no secret store; secret reads answer 404.
    pub secrets_dir: Option<PathBuf>,
    /// `[tools]`.
    pub tools: ToolsConfig,
    /// `[[gateway.providers]]`, checked at start-up (credentials resolved then).
    pub providers: Vec<ProviderConfig>,
    /// `[gateway.limits]`.
    pub limits: LimitsConfig,
    /// `[gateway.budgets]`.
    pub budgets: BudgetsConfig,
    /// `[[gateway.routes]]`, in order.
    pub routes: Vec<RouteRule>,
    /// The `sim` provider's scripted replies.
    pub sim_script: Arc<Script>,
    /// `[gateway.agent_breaker]`.
    pub agent_breaker: AgentBreakerConfig,
    pub flows: Arc<Flows>,
    /// `[[agents]]`, checked.
    pub agents: Vec<AgentDecl>,
    pub prompts: Arc<Prompts>,
    /// Where `prompts` came from, for agents started as processes.
    pub prompts_dir: Option<PathBuf>,
    /// `[provenance] graph`: the live graph projection's target, if any.
    pub graph: Option<mesh_provenance::live::GraphUrl>,
    /// Where spans are exported; `None`: nowhere (see `telemetry.rs`).
    pub telemetry: crate::telemetry::TelemetrySettings,
    /// `[checkpoints]`.
    pub checkpoints: crate::checkpoints::CheckpointSettings,
    /// `[archive]`.
    pub archive: mesh_archive::ArchiveConfig,
}

pub const DEFAULT_DATA_DIR: &str = ".mesh";
const DEFAULT_DRAIN_GRACE: Duration = Duration::from_secs(10);
const DEFAULT_HEARTBEAT_TTL: Duration = Duration::from_secs(30);

impl Config {
    /// Resolves defaults, the file's text (if any) and the flags, in that order.
    pub fn resolve(file_text: Option<(&str, &str)>, flags: &Overrides) -> Result<Self> {
        let file: FileConfig = match file_text {
            Some((name, text)) => toml::from_str(text)
                .with_context(|| format!("invalid configuration file {name}"))?,
            None => FileConfig::default(),
        };
        let mut services = BTreeMap::new();
        for (name, svc) in file.services {
            let service: ServiceName = name
                .parse()
                .map_err(|e: String| anyhow::anyhow!("configuration [services.{name}]: {e}"))?;
            services.insert(service, svc);
        }
        let bind = flags
            .bind
            .or(file.bind)
            .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
        let mut listen = BTreeMap::new();
        let mut peers = BTreeMap::new();
        for service in ServiceName::ALL {
            let configured = services.get(&service);
            let addr = configured
                .and_then(|s| s.listen)
                .unwrap_or_else(|| SocketAddr::new(bind, service.default_port()));
            listen.insert(service, addr);
            let url = configured
                .and_then(|s| s.url.clone())
                .unwrap_or_else(|| format!("http://127.0.0.1:{}", service.default_port()));
            peers.insert(service, url);
        }
        for (service, addr) in &flags.listen {
            listen.insert(*service, *addr);
        }
        for (service, url) in &flags.peers {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                bail!("--peer {service}={url}: the URL must start with http:// or https://");
            }
            peers.insert(*service, url.clone());
        }
        let data_dir = flags
            .data_dir
            .clone()
            .or(file.data_dir)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
        let heartbeat_ttl = file
            .heartbeat_ttl_secs
            .map(Duration::from_secs)
            .unwrap_or(DEFAULT_HEARTBEAT_TTL);
        if heartbeat_ttl.is_zero() {
            bail!("heartbeat_ttl_secs must be at least 1");
        }
        let queue = file.queue.resolve()?;
        let policy = PolicySettings {
            location: flags
                .policy_dir
                .clone()
                .or(file.policy.dir)
                .map(|p| PolicyLocation::from_path(&p))
                .unwrap_or(PolicyLocation::Embedded),
            reload_interval: Duration::from_millis(file.policy.reload_ms.unwrap_or(1000).max(50)),
        };
        let sim_script = match &file.gateway.sim_script {
            Some(path) => {
                let text = std::fs::read_to_string(path).with_context(|| {
                    format!("cannot read [gateway] sim_script {}", path.display())
                })?;
                Script::parse(&path.display().to_string(), &text).map_err(anyhow::Error::msg)?
            }
            None => Script::embedded(),
        };
        let flows = match file.flows {
            Some(list) => Flows::new(list).map_err(anyhow::Error::msg)?,
            None => Flows::default(),
        };
        let agents = file.agents.unwrap_or_else(AgentDecl::defaults);
        AgentDecl::check(&agents)?;
        let prompts = Prompts::load(file.prompts_dir.as_deref())
            .map_err(|e| anyhow::anyhow!("prompts_dir: {e}"))?;
        let telemetry = crate::telemetry::resolve(file.telemetry, &flags.otel_env)?;
        let graph = file
            .provenance
            .graph
            .as_deref()
            .map(mesh_provenance::live::GraphUrl::parse)
            .transpose()
            .map_err(|e| anyhow::anyhow!("[provenance] graph: {e}"))?;
        Ok(Config {
            graph,
            checkpoints: crate::checkpoints::resolve(file.checkpoints),
            archive: file.archive,
            telemetry,
            sim_script: Arc::new(sim_script),
            agent_breaker: file.gateway.agent_breaker,
            flows: Arc::new(flows),
            agents,
            prompts: Arc::new(prompts),
            prompts_dir: file.prompts_dir,
            queue,
            policy,
            secrets_dir: file.secrets.dir.clone(),
            tools: ToolsConfig {
                allowed_paths: file
                    .tools
                    .allowed_paths
                    .unwrap_or_else(|| vec![data_dir.join("workspace")]),
                limits_store: file.tools.limits_store,
                secrets_dir: file.secrets.dir,
            },
            providers: file.gateway.providers,
            limits: file.gateway.limits,
            budgets: file.gateway.budgets,
            routes: file.gateway.routes,
            data_dir,
            store: flags.store.clone().or(file.store),
            bus: flags.bus.clone().or(file.bus),
            listen,
            peers,
            drain_grace: file
                .drain_grace_secs
                .map(Duration::from_secs)
                .unwrap_or(DEFAULT_DRAIN_GRACE),
            heartbeat_ttl,
        })
    }
}

/// Parses `SERVICE=VALUE` flag arguments.
pub fn service_pair(arg: &str) -> Result<(ServiceName, String), String> {
    let (name, value) = arg
        .split_once('=')
        .ok_or_else(|| format!("`{arg}`: expected SERVICE=VALUE"))?;
    Ok((name.parse()?, value.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The README's configuration example is a file the mesh accepts: every key in it
    /// exists (unknown keys are refused) and every value resolves.
    #[test]
    fn the_readme_configuration_example_is_valid() {
        let readme = include_str!("../../../README.md");
        let section = &readme[readme.find("## Configuration").unwrap()..];
        let start = section.find("```toml\n").unwrap() + "```toml\n".len();
        let example = &section[start..start + section[start..].find("```").unwrap()];
        assert!(example.contains("[archive]") && example.contains("[[flows]]"));
        // Its paths are the repository's, from its root.
        let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../../");
        let example = example
            .replace("\"fixtures/", &format!("\"{root}fixtures/"))
            .replace("\"/etc/mesh/prompts\"", &format!("\"{root}prompts\""));
        let config = Config::resolve(Some(("README.md", &example)), &Overrides::default())
            .unwrap_or_else(|e| panic!("{e:#}"));
        assert_eq!(config.archive.previous_keys, vec!["archive-key-2025"]);
    }

    #[test]
    fn file_tools_default_to_the_data_dirs_workspace() {
        let defaults = Config::resolve(None, &Overrides::default()).unwrap();
        assert_eq!(
            defaults.tools.allowed_paths,
            vec![PathBuf::from(".mesh/workspace")]
        );
        let file = "[tools]\nallowed_paths = [\"/srv/a\", \"b\"]";
        let c = Config::resolve(Some(("m.toml", file)), &Overrides::default()).unwrap();
        assert_eq!(
            c.tools.allowed_paths,
            vec![PathBuf::from("/srv/a"), PathBuf::from("b")]
        );
        assert_eq!(c.tools.limits_store, None);
        let file = "[tools]\nlimits_store = \"redis://r:6379?prefix=p\"";
        let c = Config::resolve(Some(("m.toml", file)), &Overrides::default()).unwrap();
        assert_eq!(
            c.tools.limits_store.as_deref(),
            Some("redis://r:6379?prefix=p")
        );
        let typo = "[tools]\nlimit_store = \"redis://r:6379\"";
        assert!(Config::resolve(Some(("m.toml", typo)), &Overrides::default()).is_err());
    }

    #[test]
    fn flags_override_the_file_which_overrides_defaults() {
        let defaults = Config::resolve(None, &Overrides::default()).unwrap();
        assert_eq!(defaults.data_dir, PathBuf::from(".mesh"));
        assert_eq!(defaults.listen[&ServiceName::TaskQueue].port(), 5007);
        assert_eq!(
            defaults.listen[&ServiceName::Orchestrator].to_string(),
            "127.0.0.1:5000"
        );
        assert_eq!(
            defaults.peers[&ServiceName::AgentRegistry],
            "http://127.0.0.1:5004"
        );

        let file = r#"
            data_dir = "/var/lib/mesh"
            store = "postgres://mesh@db/mesh"
            bind = "0.0.0.0"
            heartbeat_ttl_secs = 5
            [queue]
            lease_ms = 5000
            max_attempts_by_type = { code_refactor = 5 }
            [services.task-queue]
            listen = "127.0.0.1:7007"
            url = "http://queue.internal:7007"
        "#;
        let flags = Overrides {
            store: Some("sqlite://x.db".into()),
            listen: vec![(ServiceName::Orchestrator, "127.0.0.1:0".parse().unwrap())],
            ..Default::default()
        };
        let c = Config::resolve(Some(("mesh.toml", file)), &flags).unwrap();
        assert_eq!(c.data_dir, PathBuf::from("/var/lib/mesh"));
        assert_eq!(c.store.as_deref(), Some("sqlite://x.db"));
        assert_eq!(
            c.listen[&ServiceName::TaskQueue].to_string(),
            "127.0.0.1:7007"
        );
        assert_eq!(
            c.listen[&ServiceName::Provenance].to_string(),
            "0.0.0.0:5003"
        );
        assert_eq!(c.listen[&ServiceName::Orchestrator].port(), 0);
        assert_eq!(
            c.peers[&ServiceName::TaskQueue],
            "http://queue.internal:7007"
        );
        assert_eq!(c.heartbeat_ttl, Duration::from_secs(5));
        assert_eq!(c.queue.lease_ms, 5000);
        assert_eq!(c.queue.max_attempts_by_type["code_refactor"], 5);
        assert_eq!(c.queue.default_max_attempts, 3);
        assert_eq!(defaults.policy.location, PolicyLocation::Embedded);
        let c = Config::resolve(
            Some((
                "m.toml",
                "[policy]\ndir = \"/etc/mesh/policy.tar.gz\"\nreload_ms = 200",
            )),
            &Overrides::default(),
        )
        .unwrap();
        assert_eq!(
            c.policy.location,
            PolicyLocation::Bundle(PathBuf::from("/etc/mesh/policy.tar.gz"))
        );
        assert_eq!(c.policy.reload_interval, Duration::from_millis(200));
        let err = Config::resolve(
            Some(("m.toml", "[queue]\nmax_attempts = 0")),
            &Overrides::default(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("max_attempts"));
    }

    #[test]
    fn the_graph_projection_url_is_checked_when_read() {
        assert!(
            Config::resolve(None, &Overrides::default())
                .unwrap()
                .graph
                .is_none()
        );
        let file = "[provenance]\ngraph = \"falkordb://127.0.0.1:6380/prov\"";
        let c = Config::resolve(Some(("m.toml", file)), &Overrides::default()).unwrap();
        assert_eq!(c.graph.unwrap().display(), "falkordb://127.0.0.1:6380/prov");
        let file = "[provenance]\ngraph = \"mysql://u:secret@h\"";
        let err = Config::resolve(Some(("m.toml", file)), &Overrides::default()).unwrap_err();
        assert!(err.to_string().contains("[provenance] graph"), "{err}");
        assert!(!err.to_string().contains("secret"), "{err}");
    }

    #[test]
    fn bad_files_are_named() {
        let err = Config::resolve(Some(("m.toml", "stor = 1")), &Overrides::default()).unwrap_err();
        assert!(format!("{err:#}").contains("m.toml"));
        assert!(format!("{err:#}").contains("stor"));
        let err = Config::resolve(Some(("m.toml", "[services.nope]\n")), &Overrides::default())
            .unwrap_err();
        assert!(err.to_string().contains("nope"));
        assert!(service_pair("task-queue").is_err());
        assert!(service_pair("queue=http://x").is_err());
    }
}
