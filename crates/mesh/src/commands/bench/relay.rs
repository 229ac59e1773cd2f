//! `mesh bench relay`: the floor under `mesh bench gateway`. A bare HTTP relay built
//! from the same parts as the gateway (axum in, reqwest out, TCP_NODELAY both ways)
//! that does nothing else: no parsing, policy, routing or recording. What it adds to a
//! call is what any relay of these parts adds on this machine, so what the gateway adds
//! beyond it is the gateway's own work.

use anyhow::{Context, Result, bail};
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Serves `POST /v1/chat/completions` on `listen`, passing each body to `upstream` and
/// the reply back as it arrives (streams included).
pub async fn serve(listen: SocketAddr, upstream: String) -> Result<ExitCode> {
    let client = reqwest::Client::builder().tcp_nodelay(true).build()?;
    let url: Arc<str> = format!("{}/v1/chat/completions", upstream.trim_end_matches('/')).into();
    let app = axum::Router::new().route(
        "/v1/chat/completions",
        axum::routing::post(move |headers: HeaderMap, body: Bytes| {
            let (client, url) = (client.clone(), url.clone());
            async move { relay(&client, &url, &headers, body).await }
        }),
    );
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    mesh_service::server::serve(listener, app, std::future::pending()).await?;
    Ok(ExitCode::SUCCESS)
}

async fn relay(client: &reqwest::Client, url: &str, headers: &HeaderMap, body: Bytes) -> Response {
    let mut request = client.post(url).body(body);
    if let Some(kind) = headers.get(header::CONTENT_TYPE) {
        request = request.header(header::CONTENT_TYPE, kind);
    }
    match request.send().await {
        Ok(reply) => {
            let status =
                StatusCode::from_u16(reply.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
            let kind = reply.headers().get(header::CONTENT_TYPE).cloned();
            let mut response = Response::new(Body::from_stream(reply.bytes_stream()));
            *response.status_mut() = status;
            if let Some(kind) = kind {
                response.headers_mut().insert(header::CONTENT_TYPE, kind);
            }
            response
        }
        Err(e) => (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
    }
}

/// Starts `mesh` with `args` plus `--listen 127.0.0.1:PORT` on a free port, and waits
/// until it accepts connections. Returns the process and its base URL.
pub fn spawn_listening(args: &[&std::ffi::OsStr], what: &str) -> Result<(Child, String)> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let child = Command::new(std::env::current_exe()?)
        .args(args)
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .env("MESH_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("cannot start {what}"))?;
    let url = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok((child, url));
        }
        if Instant::now() > deadline {
            bail!("{what} did not start listening on {url}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
