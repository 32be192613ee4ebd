//! The `liminal` command line.

mod publish;
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
    /// Print the server's live supervision tree with restart counts.
    Tree(tree::TreeArgs),
}

/// Runs the CLI; errors are printed by the binary.
pub async fn run(args: Args) -> anyhow::Result<()> {
    match &args.command {
        Command::Pub(command) => publish::run(&connect(&args).await?, command).await,
        Command::Sub(command) => subscribe::run(&connect(&args).await?, command).await,
        Command::Tree(command) => tree::run(command).await,
    }
}

async fn connect(args: &Args) -> anyhow::Result<Client> {
    let options = ClientOptions {
        name: "liminal-cli".to_owned(),
        token: args.token.clone(),
        ..ClientOptions::default()
    };
    Ok(Client::connect(&args.server, options).await?)
}
