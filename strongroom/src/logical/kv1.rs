//! KV version 1: one unversioned JSON object per secret path, stored at
//! `logical/<mount uuid>/<path>`.
//!
//! Vault's behaviour: GET returns the object as `data` with the mount's
//! lease duration; PUT/POST replaces it (204); DELETE removes it (204, also
//! when missing); LIST returns `{"keys": [...]}` with folders ending in `/`,
//! or 404 when nothing is there.

use serde_json::{Map, Value, json};

use super::error::LogicalError;
use super::mounts::MountEntry;
use super::util::{validate_list_prefix, validate_secret_path};
use super::{Ctx, LogicalResponse, Operation};

/// Vault's existence check for a write: whether the secret exists (a write
/// to an absent path is a `create`, otherwise an `update`). `None` for
/// paths that are not a secret.
pub(crate) async fn exists(
    storage: &dyn seal_core::Storage,
    mount: &MountEntry,
    rest: &str,
) -> Result<Option<bool>, LogicalError> {
    if validate_secret_path(rest).is_err() {
        return Ok(None);
    }
    let key = format!("{}{rest}", mount.data_prefix());
    Ok(Some(storage.get(&key).await?.is_some()))
}

pub(crate) async fn handle(
    ctx: &mut Ctx<'_>,
    mount: &MountEntry,
    rest: &str,
) -> Result<LogicalResponse, LogicalError> {
    let base = mount.data_prefix();
    match ctx.req.operation {
        Operation::List => {
            validate_list_prefix(rest)?;
            let prefix = if rest.is_empty() || rest.ends_with('/') {
                rest.to_owned()
            } else {
                format!("{rest}/")
            };
            let keys = ctx.storage.list(&format!("{base}{prefix}")).await?;
            if keys.is_empty() {
                return Err(LogicalError::NotFound(ctx.req.path.clone()));
            }
            Ok(LogicalResponse::ok(json!({ "keys": keys })))
        }
        Operation::Read => {
            if rest.is_empty() || rest.ends_with('/') {
                return Err(LogicalError::NotFound(ctx.req.path.clone()));
            }
            validate_secret_path(rest)?;
            let key = format!("{base}{rest}");
            let Some(bytes) = ctx.storage.get(&key).await? else {
                return Err(LogicalError::NotFound(ctx.req.path.clone()));
            };
            let data: Map<String, Value> =
                serde_json::from_slice(&bytes).map_err(|e| LogicalError::corrupt(&key, e))?;
            // Vault reports a "ttl"/"lease" field of the secret as the
            // lease duration, else the mount's default.
            let lease = data
                .get("ttl")
                .or_else(|| data.get("lease"))
                .and_then(|v| match v {
                    Value::Number(n) => n.as_u64(),
                    Value::String(s) => super::util::parse_duration_secs(s).ok(),
                    _ => None,
                })
                .unwrap_or_else(|| mount.lease_ttl());
            Ok(LogicalResponse {
                lease_duration: lease,
                ..LogicalResponse::ok(Value::Object(data))
            })
        }
        Operation::Create | Operation::Update => {
            validate_secret_path(rest)?;
            let data = ctx
                .req
                .data
                .as_ref()
                .filter(|d| !d.is_empty())
                .ok_or_else(|| LogicalError::invalid("missing data fields"))?;
            let key = format!("{base}{rest}");
            let bytes = serde_json::to_vec(data).map_err(|e| LogicalError::corrupt(&key, e))?;
            ctx.storage.put(&key, &bytes).await?;
            Ok(LogicalResponse::no_content())
        }
        Operation::Delete => {
            validate_secret_path(rest)?;
            ctx.storage.delete(&format!("{base}{rest}")).await?;
            Ok(LogicalResponse::no_content())
        }
        Operation::Patch => Err(ctx.unsupported()),
    }
}
