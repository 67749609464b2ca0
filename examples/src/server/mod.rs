//! `strongroom server`: assemble the backends named in the config into a
//! core, serve the HTTP API on every listener, and shut down cleanly.
//!
//! Start order: parse config → logging → open storage and build the seal
//! → build the core → bind listeners (a busy port fails the start before
//! anything else happens) → `-dev` initialisation → auto-unseal loop →
//! serve. On SIGTERM or SIGINT the listeners stop accepting, in-flight
//! requests drain (up to 30 s), the core seals (keys zeroized, HA lock
//! released), the listening sockets close and the process exits. SIGHUP
//! reopens the audit devices' files (logrotate).

mod backend;
mod crash_hook;
mod dev;
mod ha_echo;
mod listener;

pub(crate) use ha_echo::ECHO_INTERVAL;

use std::sync::Arc;

use strongroom::{Core, CoreOptions};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

use crate::cli::ServerArgs;
use crate::config::{LogFormat, ServerConfig, StorageConfig};
use crate::error::Error;
use crate::http::{AppState, Forwarder, router};
use crate::metrics::{MeteredStorage, Metrics};
use crate::registration::{
    ConsulRegistration, KubernetesRegistration, NodeStatus, ServiceRegistration, publish_status,
};

/// Crates whose logs follow the configured level; everything else (hyper,
/// the AWS SDK) logs warnings only.
const OWN_CRATES: &[&str] = &[
    "strongroom",
    "barrier",
    "seal_core",
    "seal_shamir",
    "seal_awskms",
    "storage_redb",
    "storage_consul",
    "ha_lock",
];

fn init_logging(level: &str, format: LogFormat) {
    let mut directives = String::from("warn");
    for krate in OWN_CRATES {
        directives.push_str(&format!(",{krate}={level}"));
    }
    let filter = EnvFilter::try_new(&directives).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(true);
    // A second init (tests) is harmless: keep the first subscriber.
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Standard => builder.try_init(),
    };
}

fn log_level(args: &ServerArgs, config: &ServerConfig) -> Result<String, Error> {
    let level = args
        .log_level
        .clone()
        .or_else(|| config.log_level.clone())
        .or_else(|| std::env::var("STRONGROOM_LOG_LEVEL").ok())
        .or_else(|| std::env::var("VAULT_LOG_LEVEL").ok())
        .unwrap_or_else(|| "info".to_owned())
        .to_ascii_lowercase();
    match level.as_str() {
        "trace" | "debug" | "info" | "warn" | "error" | "off" => Ok(level),
        "warning" => Ok("warn".to_owned()),
        "err" => Ok("error".to_owned()),
        other => Err(Error::Usage(format!(
            "log level {other:?} is not one of trace, debug, info, warn, error"
        ))),
    }
}

fn log_format(args: &ServerArgs, config: &ServerConfig) -> Result<LogFormat, Error> {
    let text = args
        .log_format
        .clone()
        .or_else(|| std::env::var("STRONGROOM_LOG_FORMAT").ok())
        .or_else(|| std::env::var("VAULT_LOG_FORMAT").ok());
    match text.as_deref().map(str::to_ascii_lowercase).as_deref() {
        None => Ok(config.log_format),
        Some("json") => Ok(LogFormat::Json),
        Some("standard" | "text") => Ok(LogFormat::Standard),
        Some(other) => Err(Error::Usage(format!(
            "log format {other:?} is not \"standard\" or \"json\""
        ))),
    }
}

/// Reopens the audit devices' files on every SIGHUP, so `logrotate` can
/// move them away (Vault's behaviour). Runs until the process exits.
fn spawn_sighup_reopen(core: Core) {
    #[cfg(unix)]
    tokio::spawn(async move {
        let Ok(mut hangup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        else {
            tracing::warn!("cannot listen for SIGHUP: audit files will not be reopened on it");
            return;
        };
        while hangup.recv().await.is_some() {
            tracing::info!("SIGHUP: reopening audit device files");
            core.reopen_audit_files();
        }
    });
    #[cfg(not(unix))]
    let _ = core;
}

async fn shutdown_signal() -> &'static str {
    let interrupt = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => "SIGINT",
        () = terminate => "SIGTERM",
    }
}

/// An address from the environment (Vault's `VAULT_API_ADDR`,
/// `VAULT_CLUSTER_ADDR`), which overrides the file.
fn env_addr(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|a| !a.trim().is_empty())
}

fn storage_description(storage: &StorageConfig) -> String {
    match storage {
        StorageConfig::Inmem => "inmem".to_owned(),
        StorageConfig::Redb { path } => format!("redb (path: {})", path.display()),
        StorageConfig::Consul { settings, .. } => format!(
            "consul (address: {}, path: {})",
            settings
                .get("address")
                .map_or("127.0.0.1:8500", String::as_str),
            settings.get("path").map_or("vault/", String::as_str)
        ),
    }
}

/// Runs the server until a shutdown signal; returns the exit code.
///
/// # Errors
///
/// Config, backend, TLS and bind failures at start, each with the file and
/// line or address concerned.
pub(crate) async fn run(args: &ServerArgs) -> Result<u8, Error> {
    let config = if args.dev {
        dev::config(args)?
    } else if args.config.is_empty() {
        return Err(Error::Usage(
            "strongroom server needs -config FILE (a Vault-style HCL file) or -dev".into(),
        ));
    } else {
        crate::config::load(&args.config, &args.config_placeholders)?
    };
    let level = log_level(args, &config)?;
    init_logging(&level, log_format(args, &config)?);
    for warning in &config.warnings {
        tracing::warn!("{warning}");
    }

    let metrics = Arc::new(Metrics::new(
        config.telemetry.clone(),
        config.storage.kind(),
    ));
    let opened = backend::open_storage(&config.storage)?;
    let storage: Arc<dyn seal_core::Storage> = Arc::new(MeteredStorage::new(
        opened.storage.clone(),
        metrics.storage.clone(),
    ));
    let ha = backend::open_ha(&config, &opened)?;
    let seals = backend::build_seals(&config.seals).await?;
    let auto = !seals.enabled.is_empty();
    let seal_name = if auto { "awskms" } else { "shamir" };

    let bound = listener::bind_all(&config.listeners).await?;
    // Vault: VAULT_API_ADDR overrides the file (the Helm chart sets it to
    // the pod's address).
    let stanza = opened.consul.as_ref().map(|(_, c)| c);
    let api_addr = env_addr("VAULT_API_ADDR")
        .or_else(|| config.api_addr.clone())
        .or_else(|| stanza.and_then(|c| c.redirect_addr.clone()))
        .or_else(|| bound.first().map(listener::Bound::url))
        .unwrap_or_default();
    let cluster_addr = env_addr("VAULT_CLUSTER_ADDR")
        .or_else(|| config.cluster_addr.clone())
        .or_else(|| stanza.and_then(|c| c.cluster_addr.clone()));
    let mut options = CoreOptions::new(config.storage.kind())
        .with_api_addr(api_addr.clone())
        .with_cache(config.cache());
    if let Some(addr) = &cluster_addr {
        options = options.with_cluster_addr(addr.clone());
    }
    if let Some(name) = &config.cluster_name {
        options = options.with_cluster_name(name.clone());
    }
    if let Some(max) = config.auto_unseal_max_backoff {
        let initial = options.auto_unseal_initial_backoff.min(max);
        options = options.with_auto_unseal_backoff(initial, max);
    }
    options.vault_takeover = config.vault_takeover;
    // Test hook for the crash tests of the Vault upgrade (see CoreOptions).
    options.adopt_pause_after = match std::env::var("STRONGROOM_TEST_ADOPT_PAUSE_AFTER").as_deref()
    {
        Ok("planned") => Some(strongroom::AdoptStep::Planned),
        Ok("copied") => Some(strongroom::AdoptStep::Copied),
        Ok("switched") => Some(strongroom::AdoptStep::Switched),
        Ok("done") => Some(strongroom::AdoptStep::Done),
        _ => None,
    };
    if let Some(every) = config.seal_health_check_interval {
        options = options.with_seal_health_check_interval(every);
    }
    let mut builder = Core::builder()
        .storage(storage)
        .options(options)
        .migrate_from(seals.disabled)
        .recovery_unseal(seals.recovery_unseal);
    builder = if auto {
        builder.auto_seals(seals.enabled)
    } else {
        builder.shamir()
    };
    let ha_enabled = ha.is_some();
    if let Some(ha) = ha {
        builder = builder.ha(ha);
    }
    if let Some(hook) = crash_hook::from_env()? {
        builder = builder.migration_hook(hook);
    }
    let core = builder.build().await.map_err(|e| Error::Core {
        what: "starting the core".into(),
        message: e.to_string(),
    })?;
    core.barrier()
        .set_observer(Arc::new(metrics.barrier.clone()));

    let mut summary = String::from("==> Strongroom server configuration:\n\n");
    summary.push_str(&format!("             Api Address: {api_addr}\n"));
    if let Some(addr) = &cluster_addr {
        summary.push_str(&format!("         Cluster Address: {addr}\n"));
    }
    if let Some(name) = &config.cluster_name {
        summary.push_str(&format!("            Cluster Name: {name}\n"));
    }
    for (i, b) in bound.iter().enumerate() {
        summary.push_str(&format!(
            "              Listener {}: tcp (addr: \"{}\", tls: \"{}\", max_request_size: \"{}\")\n",
            i + 1,
            b.local_addr,
            if b.tls.is_some() { "enabled" } else { "disabled" },
            b.config.max_request_size
        ));
    }
    summary.push_str(&format!("               Log Level: {level}\n"));
    summary.push_str(&format!("                    Seal: {seal_name}\n"));
    summary.push_str(&format!(
        "                 Storage: {}\n",
        storage_description(&config.storage)
    ));
    if ha_enabled {
        summary.push_str(&format!(
            "              HA Storage: consul{}\n",
            if config.ha_storage.is_some() {
                " (ha_storage)"
            } else {
                ""
            }
        ));
    }
    summary.push_str(&format!(
        "                 Version: Strongroom v{}\n",
        strongroom::VERSION
    ));
    println!("{summary}");

    if args.dev {
        let keys = dev::initialize(&core, args.dev_root_token_id.as_deref()).await?;
        println!("{}", dev::banner(&api_addr, &keys));
    }
    let auto_unseal = auto.then(|| core.spawn_auto_unseal());
    spawn_sighup_reopen(core.clone());

    println!("==> Strongroom server started! Log data will stream in below:\n");
    tracing::info!(api_addr = %api_addr, seal = seal_name, storage = config.storage.kind(), "server started");

    let shutdown = CancellationToken::new();
    tokio::spawn(crate::metrics::follow_leadership(
        metrics.clone(),
        core.watch_node_state(),
        shutdown.clone(),
    ));
    let forwarder = Forwarder::new()?;
    ha_echo::spawn(core.clone(), &forwarder, metrics.clone(), shutdown.clone());
    let mut registrations: Vec<Arc<dyn ServiceRegistration>> = Vec::new();
    if let Some(kubernetes) = &config.kubernetes {
        let status = NodeStatus::of(&core).await;
        registrations.push(Arc::new(KubernetesRegistration::start(kubernetes, status)?));
    }
    if let Some(consul) = backend::consul_registration(&config, &opened)? {
        let status = NodeStatus::of(&core).await;
        registrations.push(Arc::new(ConsulRegistration::start(
            &consul, &api_addr, status,
        )?));
    }
    if !registrations.is_empty() {
        tokio::spawn(publish_status(
            core.clone(),
            registrations.clone(),
            shutdown.clone(),
        ));
    }
    let mut tasks = Vec::new();
    for b in bound {
        let state = AppState {
            core: core.clone(),
            metrics: metrics.clone(),
            max_request_size: b.config.max_request_size,
            unauthenticated_metrics: b.config.unauthenticated_metrics_access,
            forwarder: forwarder.clone(),
        };
        tasks.push(tokio::spawn(listener::serve(
            b,
            crate::ui::with_console(router(state), config.ui),
            shutdown.clone(),
        )));
    }
    let signal = shutdown_signal().await;
    tracing::info!(
        signal,
        "shutdown requested: no new connections; draining in-flight requests"
    );
    shutdown.cancel();
    let mut sockets = Vec::new();
    for task in tasks {
        sockets.extend(task.await);
    }
    if let Some(task) = auto_unseal {
        task.abort();
    }
    core.shutdown().await;
    // Closed only now that the lock is released (see `listener::serve`).
    drop(sockets);
    for registration in &registrations {
        registration.shutdown().await;
    }
    tracing::info!("sealed and stopped");
    Ok(0)
}
