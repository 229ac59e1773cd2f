//! Where the live projection's statements go: FalkorDB (`GRAPH.QUERY` over the Redis
//! protocol) or a Bolt server (Neo4j, Memgraph). A sink connects lazily and drops its
//! connection on any failure, so the next attempt reconnects: the backend may come and
//! go while the mesh runs.

use super::url::GraphUrl;
use std::time::Duration;

/// Longest wait for one connection or statement; past it the backend counts as down.
const TIMEOUT: Duration = Duration::from_secs(5);
/// Statements sent to FalkorDB per round trip.
const PIPELINE: usize = 100;

pub enum Sink {
    FalkorDb {
        client: redis::Client,
        graph: String,
        conn: Option<redis::aio::MultiplexedConnection>,
    },
    Bolt {
        url: GraphUrl,
        graph: Option<neo4rs::Graph>,
    },
}

impl Sink {
    pub fn new(url: &GraphUrl) -> Result<Self, String> {
        Ok(match url {
            GraphUrl::FalkorDb {
                redis_url, graph, ..
            } => Sink::FalkorDb {
                client: redis::Client::open(redis_url.as_str())
                    .map_err(|e| format!("{}: {e}", url.display()))?,
                graph: graph.clone(),
                conn: None,
            },
            GraphUrl::Bolt { .. } => Sink::Bolt {
                url: url.clone(),
                graph: None,
            },
        })
    }

    /// Runs the statements in order; the first failure stops the batch (the caller
    /// retries all of it: every statement is a `MERGE`, so the repeat is harmless).
    pub async fn apply(&mut self, statements: &[String]) -> Result<(), String> {
        let result = match self {
            Sink::FalkorDb {
                client,
                graph,
                conn,
            } => falkordb_apply(client, graph, conn, statements).await,
            Sink::Bolt { url, graph } => bolt_apply(url, graph, statements).await,
        };
        if result.is_err() {
            match self {
                Sink::FalkorDb { conn, .. } => *conn = None,
                Sink::Bolt { graph, .. } => *graph = None,
            }
        }
        result
    }
}

async fn timed<T, E: std::fmt::Display>(
    what: &str,
    f: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, String> {
    match tokio::time::timeout(TIMEOUT, f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(format!("{what}: {e}")),
        Err(_) => Err(format!("{what}: no answer within {}s", TIMEOUT.as_secs())),
    }
}

async fn falkordb_apply(
    client: &redis::Client,
    graph: &str,
    conn: &mut Option<redis::aio::MultiplexedConnection>,
    statements: &[String],
) -> Result<(), String> {
    let mut c = match conn.take() {
        Some(c) => c,
        None => timed("connect", client.get_multiplexed_async_connection()).await?,
    };
    // Pipelined: one round trip per chunk instead of per statement matters when
    // catching up on a long outage. An error reply anywhere fails the chunk (and so
    // the batch, which is retried whole).
    for chunk in statements.chunks(PIPELINE) {
        let mut pipe = redis::pipe();
        for statement in chunk {
            pipe.cmd("GRAPH.QUERY").arg(graph).arg(statement).ignore();
        }
        let reply: Result<(), _> = timed("GRAPH.QUERY", pipe.query_async(&mut c)).await;
        reply?;
    }
    *conn = Some(c);
    Ok(())
}

async fn bolt_apply(
    url: &GraphUrl,
    graph: &mut Option<neo4rs::Graph>,
    statements: &[String],
) -> Result<(), String> {
    let GraphUrl::Bolt {
        address,
        user,
        password,
        ..
    } = url
    else {
        return Err("not a Bolt URL".into());
    };
    let g = match graph.take() {
        Some(g) => g,
        None => {
            // The driver connects lazily and retries a refused connection with its own
            // backoff, which would surface as a timeout; a plain TCP connect first
            // names the real reason (refused, no route, unknown host).
            timed("connect", tokio::net::TcpStream::connect(address.as_str())).await?;
            timed(
                "connect",
                neo4rs::Graph::new(address.as_str(), user.as_str(), password.as_str()),
            )
            .await?
        }
    };
    for statement in statements {
        timed("run", g.run(neo4rs::query(statement))).await?;
    }
    *graph = Some(g);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A loopback port with nothing listening on it.
    fn closed_port() -> u16 {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    }

    #[tokio::test]
    async fn an_unreachable_backend_is_a_clear_error_and_a_retry_reconnects() {
        let port = closed_port();
        for url in [
            format!("bolt://neo4j:secret@127.0.0.1:{port}"),
            format!("falkordb://127.0.0.1:{port}/g"),
        ] {
            let mut sink = Sink::new(&GraphUrl::parse(&url).unwrap()).unwrap();
            let statements = vec!["MERGE (n:Task {id: 't'})".to_string()];
            let err = sink.apply(&statements).await.unwrap_err();
            assert!(err.starts_with("connect: "), "{url}: {err}");
            assert!(!err.contains("secret"), "{err}");
            // Nothing is kept from the failed attempt: the next one connects afresh.
            match &sink {
                Sink::FalkorDb { conn, .. } => assert!(conn.is_none()),
                Sink::Bolt { graph, .. } => assert!(graph.is_none()),
            }
            assert!(sink.apply(&statements).await.is_err());
        }
    }

    /// A server that accepts and hangs up, as something that is not Bolt would: the
    /// driver itself is reached (the address parsed) and its failure reported.
    #[tokio::test]
    async fn a_server_that_is_not_bolt_fails_the_handshake() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                drop(socket);
            }
        });
        let url = GraphUrl::parse(&format!("bolt://neo4j:secret@127.0.0.1:{port}")).unwrap();
        let mut sink = Sink::new(&url).unwrap();
        let err = sink
            .apply(&["MERGE (n:Task {id: 't'})".to_string()])
            .await
            .unwrap_err();
        assert!(
            err.starts_with("connect: ") || err.starts_with("run: "),
            "{err}"
        );
        assert!(!err.contains("secret"), "{err}");
    }
}
