//! `[provenance] graph`: where the live projection writes, parsed once at start-up so a
//! bad setting stops the mesh with a message naming it.

use std::fmt;

/// Graph name used when a `falkordb://` URL names none.
pub const DEFAULT_GRAPH: &str = "mesh";

#[derive(Clone, PartialEq, Eq)]
pub enum GraphUrl {
    /// FalkorDB over the Redis protocol: `falkordb://[USER:PASS@]HOST:PORT[/GRAPH]`.
    FalkorDb {
        /// The same server as a `redis://` URL, for the `redis` crate.
        redis_url: String,
        graph: String,
        display: String,
    },
    /// Neo4j or Memgraph over Bolt: `bolt://USER:PASS@HOST:PORT` (also `neo4j://`).
    Bolt {
        /// `HOST:PORT`, as the driver takes it.
        address: String,
        user: String,
        password: String,
        display: String,
    },
}

impl GraphUrl {
    pub fn parse(url: &str) -> Result<Self, String> {
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| format!("`{url}` is not a URL: expected falkordb://HOST:PORT/GRAPH or bolt://USER:PASS@HOST:PORT"))?;
        let (credentials, location) = match rest.rsplit_once('@') {
            Some((c, l)) => (Some(c), l),
            None => (None, rest),
        };
        let (address, path) = location.split_once('/').unwrap_or((location, ""));
        if address.is_empty() {
            return Err(format!("`{}` names no host", redact(url)));
        }
        let address = if address.contains(':') {
            address.to_string()
        } else {
            let port = match scheme {
                "falkordb" => 6379,
                _ => 7687,
            };
            format!("{address}:{port}")
        };
        let (user, password) = match credentials {
            Some(c) => c
                .split_once(':')
                .map(|(u, p)| (u.to_string(), p.to_string()))
                .unwrap_or((c.to_string(), String::new())),
            None => (String::new(), String::new()),
        };
        match scheme {
            "falkordb" => {
                let graph = if path.is_empty() { DEFAULT_GRAPH } else { path };
                if !graph
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
                {
                    return Err(format!(
                        "graph name `{graph}` in `{}`: use letters, digits, `_` and `-`",
                        redact(url)
                    ));
                }
                let auth = match credentials {
                    Some(c) => format!("{c}@"),
                    None => String::new(),
                };
                Ok(GraphUrl::FalkorDb {
                    redis_url: format!("redis://{auth}{address}"),
                    graph: graph.to_string(),
                    display: format!("falkordb://{address}/{graph}"),
                })
            }
            "bolt" | "neo4j" => {
                if !path.is_empty() {
                    return Err(format!(
                        "`{}`: a Bolt URL takes no path (the server's default database is used)",
                        redact(url)
                    ));
                }
                Ok(GraphUrl::Bolt {
                    display: format!("{scheme}://{address}"),
                    address,
                    user,
                    password,
                })
            }
            other => Err(format!(
                "unsupported graph URL scheme `{other}`: expected falkordb:// or bolt://"
            )),
        }
    }

    /// `falkordb` or `bolt`.
    pub fn backend(&self) -> &'static str {
        match self {
            GraphUrl::FalkorDb { .. } => "falkordb",
            GraphUrl::Bolt { .. } => "bolt",
        }
    }

    /// The URL without credentials, for logs, `/readyz` and errors.
    pub fn display(&self) -> &str {
        match self {
            GraphUrl::FalkorDb { display, .. } | GraphUrl::Bolt { display, .. } => display,
        }
    }
}

/// Never print credentials, even in a `Debug` dump of the configuration.
impl fmt::Debug for GraphUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "GraphUrl({})", self.display())
    }
}

fn redact(url: &str) -> String {
    match (url.split_once("://"), url.rsplit_once('@')) {
        (Some((scheme, _)), Some((_, location))) => format!("{scheme}://…@{location}"),
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn falkordb_urls_name_a_redis_server_and_a_graph() {
        let u = GraphUrl::parse("falkordb://127.0.0.1:6380/prov").unwrap();
        assert_eq!(
            u,
            GraphUrl::FalkorDb {
                redis_url: "redis://127.0.0.1:6380".into(),
                graph: "prov".into(),
                display: "falkordb://127.0.0.1:6380/prov".into(),
            }
        );
        let u = GraphUrl::parse("falkordb://:secret@db").unwrap();
        let GraphUrl::FalkorDb {
            redis_url, graph, ..
        } = &u
        else {
            panic!("{u:?}")
        };
        assert_eq!(redis_url, "redis://:secret@db:6379");
        assert_eq!(graph, DEFAULT_GRAPH);
        assert!(!format!("{u:?}").contains("secret"));
        assert!(GraphUrl::parse("falkordb://db/bad name").is_err());
    }

    #[test]
    fn bolt_urls_carry_credentials_apart() {
        let u = GraphUrl::parse("bolt://neo4j:p@ss:w0rd@graph.internal:7687").unwrap();
        assert_eq!(
            u,
            GraphUrl::Bolt {
                address: "graph.internal:7687".into(),
                user: "neo4j".into(),
                password: "p@ss:w0rd".into(),
                display: "bolt://graph.internal:7687".into(),
            }
        );
        assert_eq!(u.backend(), "bolt");
        assert_eq!(
            GraphUrl::parse("neo4j://h").unwrap().display(),
            "neo4j://h:7687"
        );
        let err = GraphUrl::parse("bolt://u:secret@h/db").unwrap_err();
        assert!(err.contains("no path") && !err.contains("secret"), "{err}");
        assert!(GraphUrl::parse("http://h").unwrap_err().contains("scheme"));
        assert!(GraphUrl::parse("h:7687").is_err());
    }
}
