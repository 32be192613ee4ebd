//! The `liminal` command line.

pub mod bench;
mod publish;
mod request;
mod respond;
mod subscribe;
pub mod tree;

use clap::{Parser, Subcommand};

use crate::{Client, ClientOptions};

/// Command-line client for the Liminal broker.
#[derive(Debug, Parser)]
#[command(name = "liminal", version, about)]
pub struct Args {
    /// Broker address, HOST:PORT.
    #[arg(long, global = true, env = "LIMINAL_SERVER", default_value = "127.0.0.1:7400")]
    pub server: String,
    /// Token for a server that requires authentication.
    #[arg(long, global = true, env = "LIMINAL_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Publish PAYLOAD to CHANNEL, or each line of stdin when PAYLOAD is absent.
    Pub(publish::PubArgs),
    /// Print messages from CHANNEL, one per line.
    Sub(subscribe::SubArgs),
    /// Open a conversation on SUBJECT, send PAYLOAD, print the first reply and close.
    Request(request::RequestArgs),
    /// Serve SUBJECT as a remote worker: echo each message or answer with a command's output.
    Respond(respond::RespondArgs),
    /// Print the server's live supervision tree with restart counts.
    ///
    /// Reads the HTTP endpoint given by --health, so --server and --token do not apply.
    Tree(tree::TreeArgs),
    /// Run a bounded load scenario against the broker and print a RESULT line.
    Bench(bench::BenchArgs),
}

/// Runs the CLI; errors are printed by the binary.
pub async fn run(args: Args) -> anyhow::Result<()> {
    match &args.command {
        Command::Pub(command) => publish::run(&connect(&args).await?, command).await,
        Command::Sub(command) => subscribe::run(&connect(&args).await?, command).await,
        Command::Request(command) => request::run(&connect(&args).await?, command).await,
        Command::Respond(command) => respond::run(&connect(&args).await?, command).await,
        Command::Tree(command) => tree::run(command).await,
        Command::Bench(command) => bench::run(&args.server, args.token.clone(), command).await,
    }
}

async fn connect(args: &Args) -> anyhow::Result<Client> {
    if !args.server.contains(':') {
        anyhow::bail!(
            "invalid --server {:?}: expected HOST:PORT, for example 127.0.0.1:7400",
            args.server
        );
    }
    let options = ClientOptions {
        name: "liminal-cli".to_owned(),
        token: args.token.clone(),
        ..ClientOptions::default()
    };
    match Client::connect(&args.server, options).await {
        Ok(client) => Ok(client),
        Err(error) if error.code() == Some("unauthorized") => {
            let hint = if args.token.is_some() {
                "check the value of --token or LIMINAL_TOKEN against the server's auth.token"
            } else {
                "pass the server's token with --token or set LIMINAL_TOKEN"
            };
            Err(anyhow::anyhow!("{error}; {hint}"))
        }
        Err(error) => Err(error.into()),
    }
}
