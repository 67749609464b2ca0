//! The `strongroom` binary: a Vault-compatible secret server and its CLI.
//!
//! * `strongroom server -config FILE` runs a server from a Vault-style HCL
//!   file ([`config`]); `strongroom server -dev` runs an in-memory,
//!   already-unsealed development server with KV v2 at `secret/`.
//! * `strongroom status`, `operator init|unseal|seal|rotate|rekey|key-status`
//!   and `kv put|get|delete|list` are HTTP clients of a running server with
//!   Vault's flags, environment variables and output ([`cli`]).
//!
//! Vault-style single-dash long flags (`-key-shares=5`) are accepted
//! ([`args`]).

mod args;
mod cli;
mod config;
mod error;
mod http;
mod metrics;
mod placeholders;
mod registration;
mod server;
mod ui;

use std::process::ExitCode;

use clap::Parser as _;

use crate::cli::{Cli, Command};
use crate::error::Error;

fn main() -> ExitCode {
    let argv = args::normalize(std::env::args_os());
    let cli = match Cli::try_parse_from(argv) {
        Ok(cli) => cli,
        Err(err) => {
            let code = if err.use_stderr() { 1 } else { 0 };
            let _ = err.print();
            return ExitCode::from(code);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("strongroom: starting the async runtime failed: {err}");
            return ExitCode::from(1);
        }
    };
    let result = runtime.block_on(async {
        match &cli.command {
            Command::Server(args) => server::run(args).await,
            Command::Status(args) => cli::status::run(args).await,
            Command::Operator(command) => cli::operator::run(command).await,
            Command::Kv(command) => cli::kv::run(command).await,
        }
    });
    match result {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            eprintln!("{err}");
            ExitCode::from(match err {
                Error::Usage(_) => 2,
                _ => 1,
            })
        }
    }
}
