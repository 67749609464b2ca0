//! The command line: `strongroom server …` and the client subcommands.
//!
//! The client subcommands talk to a running server over HTTP, exactly like
//! `vault`/`bao` do, with the same flags (single-dash long flags are accepted,
//! see [`crate::args`]), the same environment (`STRONGROOM_ADDR` /
//! `STRONGROOM_TOKEN`, and `VAULT_ADDR` / `VAULT_TOKEN` so existing shells
//! keep working) and the same output shapes and exit codes.

pub(crate) mod client;
pub(crate) mod kv;
pub(crate) mod operator;
pub(crate) mod output;
pub(crate) mod status;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Strongroom: Vault-compatible secret storage (server and client).
#[derive(Debug, Parser)]
#[command(name = "strongroom", version, about, long_about = None)]
pub(crate) struct Cli {
    /// The command to run.
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// Top-level commands.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run the server (`-config FILE` or `-dev`).
    Server(ServerArgs),
    /// Print the seal status of a server (exit code 2 when sealed).
    Status(StatusArgs),
    /// Operator commands: init, unseal, seal, rotate, rekey, key-status, adopt.
    #[command(subcommand)]
    Operator(OperatorCommand),
    /// Read and write secrets in a KV (version 1 or 2) engine.
    #[command(subcommand)]
    Kv(KvCommand),
}

/// `strongroom server`.
#[derive(Debug, Args)]
pub(crate) struct ServerArgs {
    /// HCL config file; repeat to merge several files.
    #[arg(long = "config", value_name = "FILE")]
    pub(crate) config: Vec<PathBuf>,
    /// Development mode: in-memory, initialised with one key, unsealed, KV v2 at secret/.
    #[arg(long)]
    pub(crate) dev: bool,
    /// Listen address for -dev.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8200")]
    pub(crate) dev_listen_address: String,
    /// Root token id for -dev (default: random).
    #[arg(long, value_name = "ID", env = "STRONGROOM_DEV_ROOT_TOKEN_ID")]
    pub(crate) dev_root_token_id: Option<String>,
    /// Log level (trace, debug, info, warn, error); overrides the config file.
    #[arg(long, value_name = "LEVEL")]
    pub(crate) log_level: Option<String>,
    /// Log format (standard or json); overrides the config file.
    #[arg(long, value_name = "FORMAT")]
    pub(crate) log_format: Option<String>,
    /// Words in the config to replace with the same-named environment
    /// variable, comma-separated (the Helm chart: HOST_IP,POD_IP,HOSTNAME,...).
    #[arg(long, value_name = "NAMES", value_delimiter = ',')]
    pub(crate) config_placeholders: Vec<String>,
}

/// How a client reaches the server.
#[derive(Debug, Clone, Args)]
pub(crate) struct ClientArgs {
    /// Server address (env STRONGROOM_ADDR or VAULT_ADDR; default http://127.0.0.1:8200).
    #[arg(long, value_name = "URL")]
    pub(crate) address: Option<String>,
    /// PEM CA certificate to trust (env STRONGROOM_CACERT or VAULT_CACERT).
    #[arg(long, value_name = "FILE")]
    pub(crate) ca_cert: Option<PathBuf>,
    /// Do not verify the server's TLS certificate (env STRONGROOM_SKIP_VERIFY or VAULT_SKIP_VERIFY).
    #[arg(long)]
    pub(crate) tls_skip_verify: bool,
}

/// Output format of client commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub(crate) enum Format {
    /// Vault's Key/Value tables.
    #[default]
    Table,
    /// The JSON the server returned (or Vault's JSON shape for init).
    Json,
}

/// `strongroom status`.
#[derive(Debug, Args)]
pub(crate) struct StatusArgs {
    #[command(flatten)]
    pub(crate) client: ClientArgs,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub(crate) format: Format,
}

/// `strongroom operator …`.
#[derive(Debug, Subcommand)]
pub(crate) enum OperatorCommand {
    /// Initialise a server: create the unseal (or recovery) keys and the root token.
    Init(InitArgs),
    /// Submit one unseal key share (prompted for, hidden, when not given).
    Unseal(UnsealArgs),
    /// Seal the server (needs a token).
    Seal(SimpleArgs),
    /// Add a new encryption key term to the barrier keyring (needs a token).
    Rotate(SimpleArgs),
    /// Show the active keyring term (needs a token).
    KeyStatus(SimpleArgs),
    /// Generate new unseal (or recovery) keys from a quorum of the current ones.
    Rekey(RekeyArgs),
    /// Upgrade a Vault data set this server serves read-only to
    /// Strongroom's layout, in place (one-way; needs a root token and
    /// -confirm). With -status: whether it serves one read-only.
    Adopt(AdoptArgs),
}

/// `strongroom operator init`.
#[derive(Debug, Args)]
pub(crate) struct InitArgs {
    #[command(flatten)]
    pub(crate) client: ClientArgs,
    /// Number of unseal key shares (Shamir; default 5).
    #[arg(long, value_name = "N")]
    pub(crate) key_shares: Option<u32>,
    /// Shares needed to unseal (Shamir; default 3).
    #[arg(long, value_name = "N")]
    pub(crate) key_threshold: Option<u32>,
    /// Number of recovery key shares (auto seal; default 5).
    #[arg(long, value_name = "N")]
    pub(crate) recovery_shares: Option<u32>,
    /// Recovery shares needed to authorise recovery operations (auto seal; default 3).
    #[arg(long, value_name = "N")]
    pub(crate) recovery_threshold: Option<u32>,
    /// Only report whether the server is initialised (exit 0 yes, 2 no).
    #[arg(long)]
    pub(crate) status: bool,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub(crate) format: Format,
}

/// `strongroom operator unseal`.
#[derive(Debug, Args)]
pub(crate) struct UnsealArgs {
    #[command(flatten)]
    pub(crate) client: ClientArgs,
    /// Discard the shares submitted so far.
    #[arg(long)]
    pub(crate) reset: bool,
    /// Enter the key for a pending seal migration (the config changed the
    /// seal): unseal keys from Shamir, recovery keys from an auto seal.
    #[arg(long)]
    pub(crate) migrate: bool,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub(crate) format: Format,
    /// The key share (hex or base64); prompted for when left out.
    pub(crate) key: Option<String>,
}

/// Commands that take only connection flags and a format.
#[derive(Debug, Args)]
pub(crate) struct SimpleArgs {
    #[command(flatten)]
    pub(crate) client: ClientArgs,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub(crate) format: Format,
}

/// `strongroom operator adopt`.
#[derive(Debug, Args)]
pub(crate) struct AdoptArgs {
    #[command(flatten)]
    pub(crate) client: ClientArgs,
    /// Confirm the one-way upgrade (Vault cannot read the data set
    /// afterwards: back up the prefix first with `consul kv export`).
    #[arg(long)]
    pub(crate) confirm: bool,
    /// Only report whether the server serves a Vault data set read-only
    /// (exit 0 yes, 2 no: already Strongroom's layout).
    #[arg(long)]
    pub(crate) status: bool,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub(crate) format: Format,
}

/// Which key set `operator rekey` works on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub(crate) enum RekeyTarget {
    /// The unseal keys (Shamir).
    #[default]
    Barrier,
    /// The recovery keys (auto seal).
    Recovery,
}

/// `strongroom operator rekey`.
#[derive(Debug, Args)]
pub(crate) struct RekeyArgs {
    #[command(flatten)]
    pub(crate) client: ClientArgs,
    /// Start a rekey.
    #[arg(long)]
    pub(crate) init: bool,
    /// Cancel the rekey in progress.
    #[arg(long)]
    pub(crate) cancel: bool,
    /// Print the progress of the rekey in progress.
    #[arg(long)]
    pub(crate) status: bool,
    /// With -init: require the new shares to be entered once more before they take effect.
    /// Without -init: submit a share for that verification step.
    #[arg(long)]
    pub(crate) verify: bool,
    /// New number of shares (with -init; default 5).
    #[arg(long, value_name = "N")]
    pub(crate) key_shares: Option<u32>,
    /// New threshold (with -init; default 3).
    #[arg(long, value_name = "N")]
    pub(crate) key_threshold: Option<u32>,
    /// The rekey (or verification) nonce; read from the status when left out.
    #[arg(long, value_name = "NONCE")]
    pub(crate) nonce: Option<String>,
    /// Unseal keys (barrier) or recovery keys (recovery).
    #[arg(long, value_enum, default_value_t)]
    pub(crate) target: RekeyTarget,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub(crate) format: Format,
    /// A current key share (hex or base64); prompted for when left out.
    pub(crate) key: Option<String>,
}

/// `strongroom kv …`.
#[derive(Debug, Subcommand)]
pub(crate) enum KvCommand {
    /// Write a secret: `kv put secret/foo a=b c=@file` (or `-` for JSON on stdin).
    Put(KvPutArgs),
    /// Read a secret.
    Get(KvGetArgs),
    /// Delete a secret (KV v2: the latest version, or -versions).
    Delete(KvDeleteArgs),
    /// List the keys under a path.
    List(KvPathArgs),
}

/// Arguments shared by the kv commands.
#[derive(Debug, Args)]
pub(crate) struct KvPathArgs {
    #[command(flatten)]
    pub(crate) client: ClientArgs,
    /// The mount path; the path argument is then relative to it.
    #[arg(long, value_name = "MOUNT")]
    pub(crate) mount: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub(crate) format: Format,
    /// The secret path, e.g. secret/foo.
    pub(crate) path: String,
}

/// `strongroom kv put`.
#[derive(Debug, Args)]
pub(crate) struct KvPutArgs {
    #[command(flatten)]
    pub(crate) common: KvPathArgs,
    /// KV v2 check-and-set version.
    #[arg(long, value_name = "VERSION")]
    pub(crate) cas: Option<i64>,
    /// key=value pairs (value @file reads a file; a single `-` reads JSON from stdin).
    #[arg(required = true)]
    pub(crate) data: Vec<String>,
}

/// `strongroom kv get`.
#[derive(Debug, Args)]
pub(crate) struct KvGetArgs {
    #[command(flatten)]
    pub(crate) common: KvPathArgs,
    /// KV v2 version to read (default latest).
    #[arg(long, value_name = "N")]
    pub(crate) version: Option<u64>,
    /// Print only this field's value.
    #[arg(long, value_name = "NAME")]
    pub(crate) field: Option<String>,
}

/// `strongroom kv delete`.
#[derive(Debug, Args)]
pub(crate) struct KvDeleteArgs {
    #[command(flatten)]
    pub(crate) common: KvPathArgs,
    /// KV v2 versions to delete, comma separated (default latest).
    #[arg(long, value_name = "LIST")]
    pub(crate) versions: Option<String>,
}
