//! `mesh bench relay`: the floor under `mesh bench gateway`. A bare HTTP relay built
//! from the same parts as the gateway (axum in, reqwest out, TCP_NODELAY both ways)
//! that does nothing else: no parsing, policy, routing or recording. What it adds to a
//! call is what any relay of these parts adds on this machine, so what the gateway adds
//! beyond it is the gateway's own work.

use anyhow::{Context, Result};
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

/// Serves `POST /v1/chat/completions` on `listen`, passing each body to `upstream` and
/// the reply back as it arrives (streams included).
pub async fn serve(listen: SocketAddr, upstream: String) -> Result<ExitCode> {
    let app = router(&upstream)?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    mesh_service::server::serve(listener, app, std::future::pending()).await?;
    Ok(ExitCode::SUCCESS)
}

fn router(upstream: &str) -> Result<axum::Router> {
    let base = reqwest::Url::parse(upstream)
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https"))
        .with_context(|| format!("--upstream `{upstream}` is not an http(s) URL"))?;
    let client = reqwest::Client::builder().tcp_nodelay(true).build()?;
    let url: Arc<str> = format!(
        "{}/v1/chat/completions",
        base.as_str().trim_end_matches('/')
    )
    .into();
    Ok(axum::Router::new().route(
        "/v1/chat/completions",
        axum::routing::post(move |headers: HeaderMap, body: Bytes| {
            let (client, url) = (client.clone(), url.clone());
            async move { relay(&client, &url, &headers, body).await }
        }),
    ))
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

#[cfg(test)]
mod tests {
    use super::*;

    async fn listen(app: axum::Router) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let _ = mesh_service::server::serve(listener, app, std::future::pending()).await;
        });
        format!("http://{addr}")
    }

    #[tokio::test]
    async fn the_relay_passes_body_status_and_content_type_both_ways() {
        // The upstream echoes what it was sent, with a status and type of its own.
        let upstream = listen(axum::Router::new().route(
            "/v1/chat/completions",
            axum::routing::post(|headers: HeaderMap, body: Bytes| async move {
                let kind = headers
                    .get(header::CONTENT_TYPE)
                    .map(|v| v.to_str().unwrap_or("").to_string())
                    .unwrap_or_default();
                (
                    StatusCode::CREATED,
                    [(header::CONTENT_TYPE, "text/event-stream")],
                    format!("{kind}|{}", String::from_utf8_lossy(&body)),
                )
            }),
        ))
        .await;
        let relay = listen(router(&upstream).unwrap()).await;
        let reply = reqwest::Client::new()
            .post(format!("{relay}/v1/chat/completions"))
            .header(header::CONTENT_TYPE, "application/json")
            .body(r#"{"model":"m"}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(reply.status().as_u16(), 201);
        assert_eq!(reply.headers()[header::CONTENT_TYPE], "text/event-stream");
        assert_eq!(
            reply.text().await.unwrap(),
            r#"application/json|{"model":"m"}"#
        );
    }

    #[tokio::test]
    async fn an_upstream_that_is_no_url_is_refused_at_start() {
        let err = router("127.0.0.1:9").unwrap_err();
        assert!(err.to_string().contains("not an http(s) URL"), "{err}");
    }

    #[tokio::test]
    async fn an_unreachable_upstream_is_a_502() {
        // A port nothing listens on: bound, then released.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let relay = listen(router(&format!("http://127.0.0.1:{port}")).unwrap()).await;
        let reply = reqwest::Client::new()
            .post(format!("{relay}/v1/chat/completions"))
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(reply.status().as_u16(), 502);
    }
}
