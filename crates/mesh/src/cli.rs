//! Command-line interface.

use clap::{Args, Parser, Subcommand};
use mesh_service::ServiceName;
use mesh_types::{
    AgentRole, AgentStatus, DataClassification, RiskTier, Role, TaskStatus, ToolStatus,
};
use std::net::IpAddr;
use std::path::PathBuf;
use uuid::Uuid;

#[derive(Debug, Parser)]
#[command(
    name = "mesh",
    version,
    about = "Agentic Mesh: a provenance-first control plane for multi-agent LLM systems"
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args, Clone)]
pub struct GlobalArgs {
    /// Directory for the embedded store and local state [default: ./.mesh]
    #[arg(long, global = true, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Store URL: sqlite://PATH or postgres://USER@HOST:PORT/DB [default: SQLite in the data directory]
    #[arg(long, global = true, value_name = "URL")]
    pub store: Option<String>,
    /// TOML configuration file
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Events bus: memory://, redis://HOST:PORT or nats://HOST:PORT [default: embedded in the store]
    #[arg(long, global = true, value_name = "URL")]
    pub bus: Option<String>,
    /// Rego policies: a directory of .rego files and data.json, or an OPA bundle
    /// .tar.gz [default: the bundle embedded in the binary]
    #[arg(long, global = true, value_name = "DIR")]
    pub policy_dir: Option<PathBuf>,
    /// Print JSON instead of tables
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run all eight services in this process, each on its own port
    Up(UpArgs),
    /// Run one service alone (split mode); it reaches the others over HTTP
    Serve(ServeArgs),
    /// Apply pending schema migrations to the store and exit
    Migrate,
    /// Manage API keys (works whether or not the mesh is running)
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Submit, inspect and cancel tasks
    #[command(subcommand)]
    Task(TaskCommand),
    /// Inspect registered agents
    #[command(subcommand)]
    Agents(AgentsCommand),
    /// Inspect registered tools
    #[command(subcommand)]
    Tools(ToolsCommand),
    /// Read and verify the provenance log
    #[command(subcommand)]
    Provenance(ProvenanceCommand),
    /// Test and evaluate Rego policies
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Tasks a policy escalated to a human: list, approve, reject
    #[command(subcommand)]
    Approvals(ApprovalsCommand),
    /// Measure the mesh on this machine
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Run a code_refactor task through planner, coders and critic on a mesh started
    /// in this process, showing progress, the timeline and the provenance graph
    Demo(DemoArgs),
    /// Run one built-in agent (planner, coder or critic) against a running mesh over
    /// HTTP; the API key comes from MESH_API_KEY
    Worker(WorkerArgs),
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Give up if the task has not finished after this many seconds
    #[arg(long, default_value_t = 120)]
    pub timeout_secs: u64,
}

#[derive(Debug, Args)]
pub struct WorkerArgs {
    /// planner, coder or critic
    #[arg(long)]
    pub kind: String,
    /// Name to register under [default: <kind>-<pid>]
    #[arg(long)]
    pub name: Option<String>,
    /// Model to ask through the routing gateway
    #[arg(long, default_value = "sim-small")]
    pub model: String,
    #[arg(long, default_value = "high", value_parser = parse_enum::<RiskTier>)]
    pub risk_tier: RiskTier,
    /// Task types to claim, comma-separated [default: the kind's flow stage]
    #[arg(long, value_delimiter = ',')]
    pub capabilities: Vec<String>,
    #[arg(long, default_value_t = 2)]
    pub concurrency: usize,
    /// Lease asked for each claimed task; renewed while the task runs
    #[arg(long, default_value_t = 30_000)]
    pub lease_ms: i64,
    /// Task queue base URL
    #[arg(long, default_value = "http://127.0.0.1:5007")]
    pub queue: String,
    /// Agent registry base URL
    #[arg(long, default_value = "http://127.0.0.1:5004")]
    pub registry: String,
    /// Routing gateway base URL
    #[arg(long, default_value = "http://127.0.0.1:5001")]
    pub gateway: String,
    /// Tool registry base URL
    #[arg(long, default_value = "http://127.0.0.1:5005")]
    pub tools: String,
    /// Directory overriding the built-in prompts
    #[arg(long, value_name = "DIR")]
    pub prompts_dir: Option<PathBuf>,
    /// Drain and stop when the process that started this one goes away (set by the
    /// mesh for the agents it supervises, so none outlives a killed mesh)
    #[arg(long)]
    pub exit_with_parent: bool,
}

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Run the `test_*` rules of a policy directory or bundle, like `opa test`; exits 1
    /// if any fails
    Test {
        /// Directory or .tar.gz bundle [default: --policy-dir, else the embedded bundle]
        dir: Option<PathBuf>,
    },
    /// Evaluate one query, e.g. `data.mesh.decision`, and print the result
    Eval {
        /// JSON file holding the input document (- for stdin)
        #[arg(long, value_name = "FILE")]
        input: Option<PathBuf>,
        /// A `data.…` reference
        query: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum ApprovalsCommand {
    /// Tasks waiting for approval
    List {
        #[arg(long)]
        limit: Option<u32>,
    },
    /// Queue an escalated task
    Approve {
        id: Uuid,
        #[arg(long)]
        note: Option<String>,
    },
    /// Cancel an escalated task
    Reject {
        id: Uuid,
        #[arg(long)]
        note: Option<String>,
    },
}

#[derive(Debug, Args)]
pub struct UpArgs {
    /// Address every service binds to (ports stay the seed's)
    #[arg(long, value_name = "IP")]
    pub bind: Option<IpAddr>,
    /// Listen address for one service, e.g. --listen task-queue=127.0.0.1:0 (repeatable)
    #[arg(long, value_name = "SERVICE=ADDR", value_parser = parse_listen)]
    pub listen: Vec<(ServiceName, std::net::SocketAddr)>,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// mesh-orchestrator, routing-gateway, policy-enforcer, provenance-service,
    /// agent-registry, tool-registry, events-bus or task-queue
    #[arg(value_parser = parse_service)]
    pub service: ServiceName,
    /// Listen address [default: 127.0.0.1 and the service's seed port]
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<std::net::SocketAddr>,
    /// Where to reach another service, e.g. --peer task-queue=http://10.0.0.7:5007 (repeatable)
    #[arg(long, value_name = "SERVICE=URL", value_parser = crate::config::service_pair)]
    pub peer: Vec<(ServiceName, String)>,
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create a key and print it alone on stdout
    Create {
        /// Role granted to the key (repeatable): admin, operator, agent, auditor
        #[arg(long = "role", required = true, value_parser = parse_role)]
        roles: Vec<Role>,
        /// Name recorded as the actor of the key's actions
        #[arg(long)]
        name: Option<String>,
        #[arg(long, default_value = "default")]
        tenant: String,
    },
    /// List keys (never the keys themselves)
    List,
    /// Revoke a key by id
    Revoke { id: Uuid },
}

#[derive(Debug, Subcommand)]
pub enum TaskCommand {
    /// Submit a task
    Submit {
        /// Task type, e.g. code_refactor
        #[arg(long = "type")]
        task_type: String,
        /// Input as JSON, or @FILE to read it from a file
        #[arg(long)]
        input: String,
        #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
        priority: i32,
        /// Metadata as a JSON object
        #[arg(long)]
        metadata: Option<String>,
        #[arg(long, value_parser = parse_enum::<RiskTier>)]
        risk_tier: Option<RiskTier>,
        #[arg(long, value_parser = parse_enum::<DataClassification>)]
        data_classification: Option<DataClassification>,
        /// Parent task id, making this a subtask
        #[arg(long)]
        parent: Option<Uuid>,
        /// Submitting again with the same key returns the first task
        #[arg(long)]
        idempotency_key: Option<String>,
    },
    /// Show one task
    Get { id: Uuid },
    /// List tasks, newest first
    List {
        #[arg(long, value_parser = parse_enum::<TaskStatus>)]
        status: Option<TaskStatus>,
        #[arg(long = "type")]
        task_type: Option<String>,
        #[arg(long)]
        limit: Option<u32>,
        #[arg(long)]
        cursor: Option<String>,
    },
    /// Cancel a task and its unfinished subtasks
    Cancel { id: Uuid },
}

#[derive(Debug, Subcommand)]
pub enum AgentsCommand {
    /// List agents
    List {
        #[arg(long, value_parser = parse_enum::<AgentStatus>)]
        status: Option<AgentStatus>,
        #[arg(long, value_parser = parse_enum::<AgentRole>)]
        role: Option<AgentRole>,
        #[arg(long)]
        capability: Option<String>,
        #[arg(long)]
        limit: Option<u32>,
    },
}

#[derive(Debug, Subcommand)]
pub enum ToolsCommand {
    /// List tools
    List {
        #[arg(long, value_parser = parse_enum::<ToolStatus>)]
        status: Option<ToolStatus>,
        #[arg(long)]
        limit: Option<u32>,
    },
}

#[derive(Debug, Subcommand)]
pub enum ProvenanceCommand {
    /// A task's timeline and graph
    Show { task_id: Uuid },
    /// Verify the hash chain; exits 1 and names the first bad event if it is broken
    Verify,
    /// Print a task tree's provenance as W3C PROV-JSON, openCypher MERGE statements
    /// or JSON lines (the data.export policy decides, as for the HTTP export)
    Export {
        #[arg(long = "task")]
        task_id: Uuid,
        #[arg(long, value_parser = parse_enum::<mesh_provenance::export::ExportFormat>)]
        format: mesh_provenance::export::ExportFormat,
    },
    /// Print an archived payload (prompt, response, tool arguments or output) by the
    /// SHA-256 its event carries, decrypted (the data.export policy decides, as for
    /// GET /provenance/archive/{sha256})
    Archived { sha256: String },
    #[command(flatten)]
    Proofs(ProofCommand),
}

/// The verifiable log: its key, proofs, and offline verification.
#[derive(Debug, Subcommand)]
pub enum ProofCommand {
    /// Print the log's checkpoint verifier key (C2SP), as GET /provenance/public-key serves it
    PublicKey,
    /// Print an inclusion proof of one event (with the event and a signed checkpoint) as JSON
    Proof { event_id: Uuid },
    /// Print a consistency proof between two checkpoint sizes as JSON
    Consistency { from: u64, to: u64 },
    /// Verify a proof file offline with the log's public key; exits 1 naming why it fails
    VerifyProof {
        /// A file written by `mesh provenance proof` or `consistency` (or the API's proof)
        file: std::path::PathBuf,
        /// A file holding what `mesh provenance public-key` prints
        #[arg(long)]
        public_key: std::path::PathBuf,
    },
}

fn parse_service(s: &str) -> Result<ServiceName, String> {
    s.parse()
}

fn parse_role(s: &str) -> Result<Role, String> {
    s.parse()
}

fn parse_enum<T>(s: &str) -> Result<T, String>
where
    T: std::str::FromStr,
    T::Err: std::fmt::Display,
{
    s.parse().map_err(|e: T::Err| e.to_string())
}

fn parse_listen(s: &str) -> Result<(ServiceName, std::net::SocketAddr), String> {
    let (service, addr) = crate::config::service_pair(s)?;
    let addr = addr
        .parse()
        .map_err(|e| format!("`{addr}` is not an IP:PORT address: {e}"))?;
    Ok((service, addr))
}

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Task submissions over HTTP through the whole write path, against a mesh started
    /// in this process (a fresh SQLite file unless --store or --data-dir is given)
    Tasks {
        #[arg(long, default_value_t = 5_000)]
        tasks: usize,
        #[arg(long, default_value_t = 16)]
        concurrency: usize,
    },
    /// Policy decisions: the default bundle in-process over distinct tool-call inputs,
    /// then OPA's Data API over HTTP
    Policy {
        /// Distinct inputs to evaluate in-process
        #[arg(long, default_value_t = 20_000)]
        inputs: usize,
        /// HTTP requests to POST /v1/data
        #[arg(long, default_value_t = 20_000)]
        requests: usize,
        /// Target HTTP request rate (requests/second, spread evenly)
        #[arg(long, default_value_t = 5_000)]
        rate: u64,
    },
    /// What the routing gateway adds: a separate `mesh serve routing-gateway` in front of
    /// an instant local upstream, compared with calling the upstream direct
    Gateway {
        /// Requests at concurrency 1 (a quarter as many streamed)
        #[arg(long, default_value_t = 2_000)]
        requests: usize,
        /// Open-loop request rate (requests/second)
        #[arg(long, default_value_t = 5_000)]
        rate: u64,
        /// How long each open-loop run lasts
        #[arg(long, default_value_t = 20)]
        seconds: u64,
    },
    /// A bare relay to an upstream's chat completions, nothing else: the floor that
    /// `mesh bench gateway` measures the gateway against (it starts one itself)
    #[command(hide = true)]
    Relay {
        #[arg(long)]
        listen: std::net::SocketAddr,
        /// The upstream's base URL (without /v1)
        #[arg(long)]
        upstream: String,
    },
    /// Provenance appends with checkpoint signing, proof verification, a 10k-node task graph
    Provenance {
        #[arg(long, value_enum, default_value = "sqlite")]
        backend: BenchBackend,
        #[arg(long, default_value_t = 100_000)]
        events: usize,
        /// Events per append call (one durable commit each)
        #[arg(long, default_value_t = 50)]
        batch: usize,
        /// Concurrent appenders
        #[arg(long, default_value_t = 4)]
        producers: usize,
    },
    /// Enqueue → claim → complete through the task queue's core with no-op handlers
    Queue {
        #[arg(long, value_enum, default_value = "sqlite")]
        backend: BenchBackend,
        #[arg(long, default_value_t = 5_000)]
        tasks: usize,
        #[arg(long, default_value_t = 4)]
        workers: usize,
        /// Tasks per enqueue call and most completions per complete call (1: one
        /// task per call, as a client without batching would)
        #[arg(long, default_value_t = 50)]
        batch: usize,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BenchBackend {
    /// A fresh SQLite file in a temporary directory
    Sqlite,
    /// The PostgreSQL database named by --store
    Postgres,
}
