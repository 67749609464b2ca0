//! Where the real components are. `scripts/setup-tools.sh` installs them
//! into a cache outside the checkout and prints the variables read here;
//! a missing tool is a panic that says so, never a skipped test.

use std::path::PathBuf;

/// Consul versions the setup script may have built, preferred first.
const CONSUL_VERSIONS: &[&str] = &["1.14.11", "1.16.2", "1.15.6"];

const SETUP_HINT: &str = "run scripts/setup-tools.sh and eval what it prints";

/// The tool cache: `STRONGROOM_CACHE`, else `~/.cache/strongroom`.
pub fn cache_dir() -> PathBuf {
    std::env::var_os("STRONGROOM_CACHE")
        .filter(|c| !c.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
            PathBuf::from(home).join(".cache/strongroom")
        })
}

fn from_env(var: &str) -> Option<PathBuf> {
    let path = PathBuf::from(std::env::var_os(var).filter(|v| !v.is_empty())?);
    assert!(
        path.is_file(),
        "{var}={} does not exist; {SETUP_HINT}",
        path.display()
    );
    Some(path)
}

/// The Consul binary: `STRONGROOM_CONSUL_BIN`, else the cache, else
/// `consul` on `PATH`.
///
/// # Panics
/// When none is found.
pub fn consul_bin() -> PathBuf {
    if let Some(bin) = from_env("STRONGROOM_CONSUL_BIN") {
        return bin;
    }
    let cache = cache_dir();
    let cached = CONSUL_VERSIONS
        .iter()
        .map(|v| cache.join(format!("consul-{v}")).join("consul"));
    let on_path = std::env::var_os("PATH")
        .map(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join("consul"))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    cached
        .chain(on_path)
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "no Consul binary (STRONGROOM_CONSUL_BIN unset, nothing in {}/consul-*/, none on PATH); {SETUP_HINT}",
                cache.display()
            )
        })
}

fn venv_tool(var: &str, name: &str) -> PathBuf {
    if let Some(bin) = from_env(var) {
        return bin;
    }
    let path = cache_dir().join("venv/bin").join(name);
    assert!(
        path.is_file(),
        "{name} not found at {} ({var} unset); {SETUP_HINT} (it installs the Python tools into a cached virtualenv)",
        path.display()
    );
    path
}

/// `moto_server`: `STRONGROOM_MOTO_BIN`, else the cached virtualenv.
///
/// # Panics
/// When it is missing.
pub fn moto_bin() -> PathBuf {
    venv_tool("STRONGROOM_MOTO_BIN", "moto_server")
}

/// The OpenBao CLI `bao`: `STRONGROOM_BAO_BIN`, else the cached virtualenv.
///
/// # Panics
/// When it is missing.
pub fn bao_bin() -> PathBuf {
    venv_tool("STRONGROOM_BAO_BIN", "bao")
}

/// HashiCorp Vault v1.1.2, the optional reference: `STRONGROOM_VAULT_BIN`,
/// else `vault-1.1.2/vault` in the cache (where `scripts/setup-tools.sh`
/// builds it); `None` when neither exists. Callers that need it say so in
/// their own words; comparisons that do not skip it.
///
/// # Panics
/// When `STRONGROOM_VAULT_BIN` names a file that does not exist.
pub fn vault_bin() -> Option<PathBuf> {
    from_env("STRONGROOM_VAULT_BIN")
        .or_else(|| Some(cache_dir().join("vault-1.1.2/vault")))
        .filter(|p| p.is_file())
}

/// The `strongroom` server binary: `STRONGROOM_BIN`. Tests in the
/// `examples` crate pass `env!("CARGO_BIN_EXE_strongroom")` to
/// [`crate::NodeConfig::binary`] instead, which is always current.
///
/// # Panics
/// When `STRONGROOM_BIN` is unset or wrong.
pub fn strongroom_bin() -> PathBuf {
    from_env("STRONGROOM_BIN").unwrap_or_else(|| {
        panic!(
            "STRONGROOM_BIN is unset: build the server (cargo build -p examples --bin strongroom) and export its path, or set NodeConfig::binary"
        )
    })
}
