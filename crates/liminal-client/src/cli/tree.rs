//! `liminal tree`: prints the server's live supervision tree, read from its
//! HTTP endpoint `/supervision`.

use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use clap::Args;
use http_body_util::{BodyExt, Empty};
use hyper::Request;
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use tokio::net::TcpStream;

/// How long connecting and the whole request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Args)]
pub struct TreeArgs {
    /// The server's HTTP address (its `health_listen_address`), HOST:PORT.
    #[arg(long, env = "LIMINAL_HEALTH", default_value = "127.0.0.1:7401")]
    pub health: String,
    /// Print the JSON document from `/supervision` instead of the drawn tree.
    #[arg(long)]
    pub json: bool,
}

/// One actor of the supervision tree, as `/supervision` serves it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct SupervisionNode {
    /// Slash-separated path from the root, for example `broker/channels/orders`.
    pub path: String,
    pub kind: String,
    pub state: String,
    /// Restarts of this actor by its supervisor.
    pub restarts: u64,
    #[serde(default)]
    pub children: Vec<SupervisionNode>,
}

pub async fn run(args: &TreeArgs) -> anyhow::Result<()> {
    let body = get(&args.health, "/supervision").await?;
    if args.json {
        println!("{}", String::from_utf8_lossy(&body));
        return Ok(());
    }
    let tree: SupervisionNode = serde_json::from_slice(&body)
        .context("the server's /supervision response is not a supervision tree")?;
    print!("{}", render(&tree));
    Ok(())
}

/// Sends `GET path` to `address` and returns the body of a 2xx response.
async fn get(address: &str, path: &str) -> anyhow::Result<Bytes> {
    let exchange = async {
        let stream = TcpStream::connect(address).await.with_context(|| {
            format!(
                "failed to connect to {address}; is --health the server's health_listen_address?"
            )
        })?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        // The connection task drives the socket; it ends when `sender` is dropped.
        tokio::spawn(async move {
            let _ = connection.await;
        });
        let request = Request::get(path)
            .header(hyper::header::HOST, address)
            .body(Empty::<Bytes>::new())?;
        // A server that replies with something other than HTTP is most likely
        // the broker's client port, which speaks the binary protocol.
        let response = sender.send_request(request).await.with_context(|| {
            format!("{address} did not answer HTTP; is --health the server's health_listen_address and not its listen_address?")
        })?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        if !status.is_success() {
            anyhow::bail!(
                "GET http://{address}{path} returned {status}: {}",
                String::from_utf8_lossy(&body).trim()
            );
        }
        Ok(body)
    };
    tokio::time::timeout(REQUEST_TIMEOUT, exchange)
        .await
        .with_context(|| {
            format!(
                "GET http://{address}{path} timed out after {} s",
                REQUEST_TIMEOUT.as_secs()
            )
        })?
}

/// Draws the tree with one actor a line: its name, kind, state and
/// restart count, in aligned columns.
pub fn render(root: &SupervisionNode) -> String {
    let mut rows = Vec::new();
    collect_rows(root, String::new(), String::new(), &mut rows);
    let width = rows
        .iter()
        .map(|(label, _)| label.chars().count())
        .max()
        .unwrap_or(0);
    let mut output = String::new();
    for (label, node) in rows {
        let padding = width - label.chars().count();
        output.push_str(&format!(
            "{label}{}  {:<10} {:<10} restarts={}\n",
            " ".repeat(padding),
            node.kind,
            node.state,
            node.restarts
        ));
    }
    output
}

/// Appends `node` and its descendants. `branch` is drawn before this
/// node's name and `indent` before its children's branches.
fn collect_rows<'a>(
    node: &'a SupervisionNode,
    branch: String,
    indent: String,
    rows: &mut Vec<(String, &'a SupervisionNode)>,
) {
    let name = node.path.rsplit('/').next().unwrap_or(&node.path);
    rows.push((format!("{branch}{name}"), node));
    let last = node.children.len().saturating_sub(1);
    for (index, child) in node.children.iter().enumerate() {
        let (child_branch, child_indent) = if index == last {
            ("└── ", "    ")
        } else {
            ("├── ", "│   ")
        };
        collect_rows(
            child,
            format!("{indent}{child_branch}"),
            format!("{indent}{child_indent}"),
            rows,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(
        path: &str,
        kind: &str,
        restarts: u64,
        children: Vec<SupervisionNode>,
    ) -> SupervisionNode {
        SupervisionNode {
            path: path.to_owned(),
            kind: kind.to_owned(),
            state: "running".to_owned(),
            restarts,
            children,
        }
    }

    #[test]
    fn render_draws_branches_and_restarts() {
        let tree = node(
            "broker",
            "supervisor",
            0,
            vec![
                node(
                    "broker/channels",
                    "supervisor",
                    0,
                    vec![
                        node("broker/channels/demo", "channel", 0, vec![]),
                        node("broker/channels/orders", "channel", 2, vec![]),
                    ],
                ),
                node(
                    "broker/connections",
                    "supervisor",
                    0,
                    vec![node("broker/connections/1", "connection", 0, vec![])],
                ),
            ],
        );
        let lines: Vec<String> = render(&tree)
            .lines()
            .map(|line| line.trim_end().to_owned())
            .collect();
        assert_eq!(lines.len(), 6, "{lines:#?}");
        assert!(lines[0].starts_with("broker "), "{lines:#?}");
        assert!(lines[1].starts_with("├── channels "), "{lines:#?}");
        assert!(lines[2].starts_with("│   ├── demo "), "{lines:#?}");
        assert!(lines[3].starts_with("│   └── orders "), "{lines:#?}");
        assert!(lines[3].ends_with("restarts=2"), "{lines:#?}");
        assert!(lines[4].starts_with("└── connections "), "{lines:#?}");
        assert!(lines[5].starts_with("    └── 1 "), "{lines:#?}");
    }

    #[test]
    fn columns_are_aligned() {
        let tree = node(
            "broker",
            "supervisor",
            0,
            vec![node("broker/a-long-channel-name", "channel", 1, vec![])],
        );
        let rendered = render(&tree);
        // Character positions, because the branch glyphs take several bytes.
        let columns: Vec<usize> = rendered
            .lines()
            .map(|line| line[..line.find("restarts=").unwrap()].chars().count())
            .collect();
        assert_eq!(columns[0], columns[1], "{rendered}");
    }
}
