//! `mesh bench gateway`: what the routing gateway adds to a model call.
//!
//! An instant upstream in this process answers a 1 KB chat completion; a separate
//! `mesh serve routing-gateway` process fronts it with everything on (the `model.call`
//! policy decision, the breaker, metrics, the provenance record of every call). The same
//! requests go direct and through the gateway: one at a time, then open-loop at a fixed
//! rate over at most 64 connections with latency timed from each request's scheduled
//! send time (so a stall counts against every request it delays), then streamed,
//! timing the first byte. A bare relay (`mesh bench relay`, axum in and reqwest out,
//! nothing else) takes the same requests: the floor any relay of these parts adds here.

use super::quantile_ms;
use crate::cli::GlobalArgs;
use crate::output;
use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use std::process::{Child, ExitCode};
use std::sync::Arc;
use std::time::{Duration, Instant};

const MODEL: &str = "bench-model";

pub struct Options {
    pub requests: usize,
    pub rate: u64,
    pub seconds: u64,
}

pub async fn run(g: &GlobalArgs, opts: Options) -> Result<ExitCode> {
    if opts.requests == 0 || opts.rate == 0 || opts.seconds == 0 {
        bail!("--requests, --rate and --seconds must be at least 1");
    }
    let upstream = start_upstream().await?;
    let scratch = super::tempdir()?;
    let key = admin_key(&scratch).await?;
    let mut children = Vec::new();
    let result = async {
        let (gateway, gateway_url) = start_gateway(&scratch, &upstream)?;
        let gateway_pid = gateway.id();
        children.push(gateway);
        let (relay, relay_url) = super::spawn_listening(
            &[
                "bench".as_ref(),
                "relay".as_ref(),
                "--upstream".as_ref(),
                upstream.as_ref(),
            ],
            "the bare relay (`mesh bench relay`)",
        )?;
        let relay_pid = relay.id();
        children.push(relay);
        let client = reqwest::Client::builder()
            .tcp_nodelay(true)
            .pool_max_idle_per_host(CONNECTIONS)
            .build()?;
        let idle_rss = rss_mib(gateway_pid)?;
        let path = "/v1/chat/completions";
        let direct = Target::new(&client, &format!("{upstream}{path}"), None, None);
        let through = Target::new(
            &client,
            &format!("{gateway_url}{path}"),
            Some(&key),
            Some(gateway_pid),
        );
        let relayed = Target::new(
            &client,
            &format!("{relay_url}{path}"),
            None,
            Some(relay_pid),
        );
        let direct = figures(&opts, &direct).await?;
        let gateway = figures(&opts, &through).await?;
        let relay = figures(&opts, &relayed).await?;
        Ok::<_, anyhow::Error>(report(&opts, &idle_rss, &direct, &gateway, &relay))
    }
    .await;
    for mut child in children {
        let _ = child.kill();
        let _ = child.wait();
    }
    let _ = std::fs::remove_dir_all(&scratch);
    let report = result?;
    if g.json {
        output::json(&report)?;
    } else {
        print_table(&opts, &report);
    }
    Ok(ExitCode::SUCCESS)
}

fn print_table(opts: &Options, report: &Value) {
    let f = |k: &str| report[k].as_f64().unwrap_or(0.0);
    println!(
        "concurrency 1 ({} requests): direct p50 {:.0} µs p99 {:.0} µs; through the gateway p50 {:.0} µs p99 {:.0} µs; added p50 {:.0} µs, p99 {:.0} µs (a bare relay adds p50 {:.0} µs, p99 {:.0} µs)",
        opts.requests,
        f("c1DirectP50Us"),
        f("c1DirectP99Us"),
        f("c1GatewayP50Us"),
        f("c1GatewayP99Us"),
        f("c1AddedP50Us"),
        f("c1AddedP99Us"),
        f("relayC1AddedP50Us"),
        f("relayC1AddedP99Us"),
    );
    println!(
        "open loop at {} req/s for {} s: direct p99 {:.0} µs; gateway served {:.0} req/s, p50 {:.0} µs, p99 {:.0} µs, errors {}; added p99 {:.0} µs (a bare relay adds {:.0} µs)",
        opts.rate,
        opts.seconds,
        f("rateDirectP99Us"),
        f("rateRps"),
        f("rateGatewayP50Us"),
        f("rateGatewayP99Us"),
        report["rateErrors"],
        f("rateAddedP99Us"),
        f("relayRateAddedP99Us"),
    );
    println!(
        "CPU per request in the open loop: gateway {:.0} µs, bare relay {:.0} µs",
        f("rateCpuUsPerRequest"),
        f("relayRateCpuUsPerRequest"),
    );
    println!(
        "streaming first byte: direct p99 {:.0} µs, gateway p99 {:.0} µs, added p99 {:.0} µs (a bare relay adds {:.0} µs); idle gateway RSS {:.1} MiB ({:.1} anonymous, {:.1} mapped from files)",
        f("streamTtftDirectP99Us"),
        f("streamTtftGatewayP99Us"),
        f("streamTtftAddedP99Us"),
        f("relayStreamTtftAddedP99Us"),
        f("idleRssMiB"),
        f("idleRssAnonMiB"),
        f("idleRssFileMiB"),
    );
}

/// One target's latencies (sorted) in each phase, and its process's CPU in the open loop.
struct Figures {
    c1: Vec<Duration>,
    ttft: Vec<Duration>,
    rate: Vec<Duration>,
    errors: u64,
    served: u64,
    /// CPU time (user + system) the target's process spent per request served in the
    /// open loop; `None` for the upstream, which shares the load generator's process.
    cpu_us_per_request: Option<f64>,
}

impl Figures {
    fn c1(&self) -> &[Duration] {
        &self.c1
    }
    fn ttft(&self) -> &[Duration] {
        &self.ttft
    }
    fn rate(&self) -> &[Duration] {
        &self.rate
    }
}

async fn figures(opts: &Options, target: &Target) -> Result<Figures> {
    // Warm connections and code paths.
    for _ in 0..200 {
        target.call(false).await?;
    }
    let c1 = sequential(target, opts.requests, false).await?;
    let ttft = sequential(target, opts.requests / 4 + 1, true).await?;
    let cpu_before = target.pid.map(cpu_seconds).transpose()?;
    let (rate, errors, served) =
        open_loop(target, opts.rate, Duration::from_secs(opts.seconds)).await;
    let cpu_us_per_request = match (target.pid, cpu_before) {
        (Some(pid), Some(before)) if served > 0 => {
            Some((cpu_seconds(pid)? - before) * 1e6 / served as f64)
        }
        _ => None,
    };
    Ok(Figures {
        c1,
        ttft,
        rate,
        errors,
        served,
        cpu_us_per_request,
    })
}

fn report(
    opts: &Options,
    idle_rss: &Rss,
    direct: &Figures,
    gateway: &Figures,
    relay: &Figures,
) -> Value {
    let us = |d: &[Duration], p: f64| quantile_ms(d, p) * 1000.0;
    // What `f` adds over calling the upstream direct, at quantile `p` of a phase.
    let added = |f: &Figures, phase: fn(&Figures) -> &[Duration], p: f64| {
        us(phase(f), p) - us(phase(direct), p)
    };
    let (c1, ttft, rate) = (Figures::c1, Figures::ttft, Figures::rate);
    json!({
        "bench": "gateway",
        "idleRssMiB": idle_rss.total,
        "idleRssAnonMiB": idle_rss.anon,
        "idleRssFileMiB": idle_rss.file,
        "c1DirectP50Us": us(&direct.c1, 0.5),
        "c1DirectP99Us": us(&direct.c1, 0.99),
        "c1GatewayP50Us": us(&gateway.c1, 0.5),
        "c1GatewayP99Us": us(&gateway.c1, 0.99),
        "c1AddedP50Us": added(gateway, c1, 0.5),
        "c1AddedP99Us": added(gateway, c1, 0.99),
        "rateOffered": opts.rate,
        "rateSeconds": opts.seconds,
        "rateRps": gateway.served as f64 / opts.seconds as f64,
        "rateErrors": gateway.errors,
        "rateDirectP99Us": us(&direct.rate, 0.99),
        "rateGatewayP50Us": us(&gateway.rate, 0.5),
        "rateGatewayP99Us": us(&gateway.rate, 0.99),
        "rateAddedP99Us": added(gateway, rate, 0.99),
        "rateCpuUsPerRequest": gateway.cpu_us_per_request,
        "streamTtftDirectP99Us": us(&direct.ttft, 0.99),
        "streamTtftGatewayP99Us": us(&gateway.ttft, 0.99),
        "streamTtftAddedP99Us": added(gateway, ttft, 0.99),
        "relayC1AddedP50Us": added(relay, c1, 0.5),
        "relayC1AddedP99Us": added(relay, c1, 0.99),
        "relayRateErrors": relay.errors,
        "relayRateAddedP99Us": added(relay, rate, 0.99),
        "relayRateCpuUsPerRequest": relay.cpu_us_per_request,
        "relayStreamTtftAddedP99Us": added(relay, ttft, 0.99),
    })
}

/// User plus system CPU time of process `pid`, in seconds.
fn cpu_seconds(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("cannot read /proc/{pid}/stat"))?;
    // Fields after the parenthesised command name; utime and stime are the 14th and
    // 15th of the whole line, in clock ticks.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| -> Result<f64> {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .context("malformed /proc stat")
    };
    Ok((ticks(11)? + ticks(12)?) / CLOCK_TICKS_PER_SECOND)
}

/// The unit of /proc's CPU times: USER_HZ, which Linux fixes at 100 for what it
/// reports to user space whatever the kernel's own tick rate.
const CLOCK_TICKS_PER_SECOND: f64 = 100.0;

#[derive(Clone)]
struct Target {
    client: reqwest::Client,
    url: String,
    key: Option<String>,
    /// The process serving it, when it has one of its own.
    pid: Option<u32>,
}

impl Target {
    fn new(client: &reqwest::Client, url: &str, key: Option<&str>, pid: Option<u32>) -> Self {
        Target {
            client: client.clone(),
            url: url.to_string(),
            key: key.map(str::to_string),
            pid,
        }
    }

    /// One call; for a stream, returns once the first body byte arrived (and then
    /// drains the rest).
    async fn call(&self, stream: bool) -> Result<Duration> {
        use futures_util::StreamExt;
        let body = json!({"model": MODEL, "stream": stream, "max_tokens": 64,
            "messages": [{"role": "user", "content": "Summarise the attached status report in one line."}]});
        let mut req = self.client.post(&self.url).json(&body);
        if let Some(key) = &self.key {
            req = req.bearer_auth(key);
        }
        let started = Instant::now();
        let resp = req.send().await?;
        if !resp.status().is_success() {
            bail!("{}: HTTP {}", self.url, resp.status());
        }
        if stream {
            let mut bytes = resp.bytes_stream();
            bytes.next().await.context("empty stream")??;
            let first = started.elapsed();
            while bytes.next().await.is_some() {}
            return Ok(first);
        }
        resp.bytes().await?;
        Ok(started.elapsed())
    }
}

async fn sequential(target: &Target, n: usize, stream: bool) -> Result<Vec<Duration>> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(target.call(stream).await?);
    }
    out.sort();
    Ok(out)
}

/// Requests in flight at once in the open loop (the load generator's connections).
const CONNECTIONS: usize = 64;

/// Sends at `rate` for `duration` whatever the replies do; each latency runs from the
/// request's scheduled time. Returns sorted latencies, errors and successes.
async fn open_loop(target: &Target, rate: u64, duration: Duration) -> (Vec<Duration>, u64, u64) {
    let total = (rate as f64 * duration.as_secs_f64()) as u64;
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let start = tokio::time::Instant::now() + Duration::from_millis(20);
    // At most CONNECTIONS requests in flight, as a load generator with a fixed pool of
    // connections sends (wrk2's model): a request due while all are busy waits for one,
    // and that wait counts in its latency. Without the bound, a gateway that fell
    // behind was met with ever more new connections, which starved both processes.
    let connections = Arc::new(tokio::sync::Semaphore::new(CONNECTIONS));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..total {
        let scheduled = start + interval.mul_f64(i as f64);
        tokio::time::sleep_until(scheduled).await;
        let (target, connections) = (target.clone(), connections.clone());
        tasks.spawn(async move {
            let Ok(_connection) = connections.acquire_owned().await else {
                return (false, scheduled.elapsed());
            };
            let result = target.call(false).await;
            (result.is_ok(), scheduled.elapsed())
        });
    }
    let mut latencies = Vec::with_capacity(total as usize);
    let mut errors = 0;
    while let Some(done) = tasks.join_next().await {
        match done {
            Ok((true, latency)) => latencies.push(latency),
            _ => errors += 1,
        }
    }
    latencies.sort();
    let served = latencies.len() as u64;
    (latencies, errors, served)
}

/// A ~1 KB chat completion, answered at once; streamed as SSE when asked.
async fn start_upstream() -> Result<String> {
    let content = "The status report says all systems are nominal. ".repeat(16);
    let reply = Arc::new(json!({
        "id": "chatcmpl-bench", "object": "chat.completion", "created": 0, "model": MODEL,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 12, "completion_tokens": 160, "total_tokens": 172},
    }));
    let frames: Arc<String> = Arc::new(
        content
            .split_inclusive(' ')
            .map(|w| {
                let chunk = json!({"id": "c", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": w}}]});
                format!("data: {chunk}\n\n")
            })
            .collect::<String>()
            + "data: [DONE]\n\n",
    );
    let app = axum::Router::new().route(
        "/v1/chat/completions",
        axum::routing::post(move |axum::Json(body): axum::Json<Value>| {
            let (reply, frames) = (reply.clone(), frames.clone());
            async move {
                use axum::response::IntoResponse;
                if body["stream"] == true {
                    (
                        [(axum::http::header::CONTENT_TYPE, "text/event-stream")],
                        frames.as_ref().clone(),
                    )
                        .into_response()
                } else {
                    axum::Json(reply.as_ref().clone()).into_response()
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let _ = mesh_service::server::serve(listener, app, std::future::pending()).await;
    });
    Ok(format!("http://{addr}"))
}

async fn admin_key(dir: &std::path::Path) -> Result<String> {
    let store = mesh_store::open(None, dir).await?;
    let (key, _) = mesh_service::auth::create_key(
        &store,
        "bench",
        mesh_service::auth::NewKey {
            name: "bench".into(),
            roles: vec![mesh_types::Role::Admin],
            tenant: "bench".into(),
        },
    )
    .await?;
    Ok(key)
}

/// `mesh serve routing-gateway` on a free port, fronting the upstream.
fn start_gateway(dir: &std::path::Path, upstream: &str) -> Result<(Child, String)> {
    let config = dir.join("bench.toml");
    std::fs::write(
        &config,
        format!(
            "[[gateway.providers]]\nname = \"bench\"\nkind = \"openai\"\nbase_url = \"{upstream}/v1\"\nmodels = [\"{MODEL}\"]\n"
        ),
    )?;
    super::spawn_listening(
        &[
            "serve".as_ref(),
            "routing-gateway".as_ref(),
            "--config".as_ref(),
            config.as_os_str(),
            "--data-dir".as_ref(),
            dir.as_os_str(),
        ],
        "`mesh serve routing-gateway`",
    )
}

/// A process's resident memory, in MiB: the total, and its anonymous and file-mapped
/// parts. The file-mapped part (the binary's pages the process has mapped) follows the
/// page cache's state as much as the code, so it is reported apart.
struct Rss {
    total: f64,
    anon: f64,
    file: f64,
}

fn rss_mib(pid: u32) -> Result<Rss> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("cannot read /proc/{pid}/status"))?;
    rss_in(&status).with_context(|| format!("in /proc/{pid}/status"))
}

/// The resident memory a `/proc/PID/status` text reports.
fn rss_in(status: &str) -> Result<Rss> {
    let field = |name: &str| -> Result<f64> {
        let kib: f64 = status
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("no {name}"))?;
        Ok(kib / 1024.0)
    };
    Ok(Rss {
        total: field("VmRSS")?,
        anon: field("RssAnon")?,
        file: field("RssFile")?,
    })
}

#[cfg(test)]
mod tests {
    use super::rss_in;

    #[test]
    fn resident_memory_is_read_in_its_parts() {
        let status = "Name:\tmesh\nVmHWM:\t   40000 kB\nVmRSS:\t   26112 kB\nRssAnon:\t    5120 kB\nRssFile:\t   20992 kB\nRssShmem:\t       0 kB\n";
        let rss = rss_in(status).unwrap();
        assert_eq!((rss.total, rss.anon, rss.file), (25.5, 5.0, 20.5));
        let missing = rss_in("VmRSS:\t 1024 kB\n").err().unwrap();
        assert!(format!("{missing:#}").contains("RssAnon"), "{missing:#}");
    }
}
