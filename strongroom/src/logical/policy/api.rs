//! The policy endpoints: `sys/policy[/<name>]` (the legacy API, whose
//! answers also carry their data at the top level and name the text
//! `rules`), `sys/policies/acl[/<name>]` (the current one, `policy`), and
//! `sys/capabilities`, `sys/capabilities-self`, `sys/capabilities-accessor`.
//!
//! Writes have no existence check, so they always need `update` (never
//! `create`), and none of these paths needs `sudo`, as in Vault.

use base64::Engine as _;
use serde_json::{Map, Value, json};

use super::sanitize_name;
use super::store::PolicyStore;
use crate::logical::{Ctx, LogicalError, LogicalResponse, Operation};

/// Serves `sys/policy*` and `sys/policies/acl*`; `None` for other paths.
pub(crate) async fn handle(
    store: &PolicyStore,
    ctx: &mut Ctx<'_>,
    path: &str,
) -> Option<Result<LogicalResponse, LogicalError>> {
    let (legacy, rest) = if let Some(rest) = path.strip_prefix("sys/policy") {
        (true, rest)
    } else if let Some(rest) = path.strip_prefix("sys/policies/acl") {
        (false, rest)
    } else {
        return None;
    };
    let name = match rest {
        "" | "/" => None,
        _ => match rest.strip_prefix('/') {
            Some(name) => Some(name),
            // `sys/policyfoo`: not ours.
            None => return None,
        },
    };
    let op = ctx.req.operation;
    Some(match (name, op) {
        (None, Operation::List) => list(store, ctx, legacy).await,
        (None, Operation::Read) if legacy => list(store, ctx, legacy).await,
        (None, Operation::Create | Operation::Update) => Err(LogicalError::invalid(
            "policy name must be provided in the URL",
        )),
        (None, _) => Err(ctx.unsupported()),
        (Some(name), Operation::Read) => read(store, ctx, name, legacy).await,
        (Some(name), Operation::Create | Operation::Update) => {
            write(store, ctx, name, legacy).await
        }
        (Some(name), Operation::Delete) => {
            match store.delete(ctx.storage, &sanitize_name(name)).await {
                Ok(()) => Ok(LogicalResponse::no_content()),
                Err(e) => Err(e),
            }
        }
        (Some(_), _) => Err(ctx.unsupported()),
    })
}

async fn list(
    store: &PolicyStore,
    ctx: &Ctx<'_>,
    legacy: bool,
) -> Result<LogicalResponse, LogicalError> {
    let names = store.list(ctx.storage).await?;
    let data = if legacy {
        json!({"keys": names, "policies": names})
    } else {
        json!({"keys": names})
    };
    Ok(LogicalResponse {
        data_at_top_level: legacy,
        ..LogicalResponse::ok(data)
    })
}

async fn read(
    store: &PolicyStore,
    ctx: &Ctx<'_>,
    name: &str,
    legacy: bool,
) -> Result<LogicalResponse, LogicalError> {
    let Some(policy) = store.get(ctx.storage, name).await? else {
        return Err(LogicalError::NotFound(ctx.req.path.clone()));
    };
    let text_key = if legacy { "rules" } else { "policy" };
    Ok(LogicalResponse {
        data_at_top_level: legacy,
        ..LogicalResponse::ok(json!({"name": policy.name(), text_key: policy.raw()}))
    })
}

async fn write(
    store: &PolicyStore,
    ctx: &mut Ctx<'_>,
    raw_name: &str,
    legacy: bool,
) -> Result<LogicalResponse, LogicalError> {
    let name = sanitize_name(raw_name);
    if name.is_empty() {
        return Err(LogicalError::invalid(
            "policy name must be provided in the URL",
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(LogicalError::invalid(
            "policy name must not contain control characters",
        ));
    }
    let fields = ctx.fields();
    let mut text = fields.string("policy")?.unwrap_or_default();
    if text.is_empty() && legacy {
        text = fields.string("rules")?.unwrap_or_default();
        if !text.is_empty() {
            ctx.warnings
                .push("'rules' is deprecated, please use 'policy' instead".to_owned());
        }
    }
    if text.is_empty() {
        return Err(LogicalError::invalid(
            "'policy' parameter not supplied or empty",
        ));
    }
    // Vault accepts the policy base64-encoded, whenever it decodes cleanly.
    if let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(text.trim())
        && let Ok(decoded) = String::from_utf8(bytes)
    {
        text = decoded;
    }
    store.set(ctx.storage, &name, &text).await?;
    if name != raw_name {
        ctx.warnings
            .push(format!("policy name was converted to {name}"));
    }
    Ok(LogicalResponse::no_content())
}

/// The capabilities endpoints; `None` for other paths. `caller_token` is
/// the requester's own token (for `-self`).
pub(crate) async fn capabilities(
    logical: &crate::logical::Logical,
    ctx: &Ctx<'_>,
    path: &str,
    caller_token: &str,
) -> Option<Result<LogicalResponse, LogicalError>> {
    let kind = match path.trim_end_matches('/') {
        "sys/capabilities" => Kind::Token,
        "sys/capabilities-self" => Kind::SelfToken,
        "sys/capabilities-accessor" => Kind::Accessor,
        _ => return None,
    };
    if !ctx.req.operation.is_write() {
        return Some(Err(ctx.unsupported()));
    }
    Some(capabilities_for(logical, ctx, kind, caller_token).await)
}

#[derive(Clone, Copy)]
enum Kind {
    Token,
    SelfToken,
    Accessor,
}

/// Vault wraps these two refusals in a multierror; the CLI prints them as is.
fn multierror(message: &str) -> LogicalError {
    LogicalError::invalid(format!("1 error occurred:\n\t* {message}\n\n"))
}

async fn capabilities_for(
    logical: &crate::logical::Logical,
    ctx: &Ctx<'_>,
    kind: Kind,
    caller_token: &str,
) -> Result<LogicalResponse, LogicalError> {
    let fields = ctx.fields();
    let mut paths = fields.string_list("paths")?.unwrap_or_default();
    if paths.is_empty() {
        // The deprecated field; the Go CLI still sends it.
        paths = fields.string_list("path")?.unwrap_or_default();
    }
    if paths.is_empty() {
        return Err(LogicalError::invalid("paths must be supplied"));
    }
    let tokens = &logical.inner.tokens;
    let entry = match kind {
        Kind::SelfToken => tokens.lookup(ctx.storage, caller_token).await?,
        Kind::Token => {
            let token = fields.string("token")?.unwrap_or_default();
            if token.is_empty() {
                return Err(multierror("invalid token"));
            }
            tokens.lookup(ctx.storage, &token).await?
        }
        Kind::Accessor => {
            let accessor = fields.string("accessor")?.unwrap_or_default();
            if accessor.is_empty() {
                return Err(multierror("invalid accessor"));
            }
            let found = tokens.lookup_accessor(ctx.storage, &accessor).await?;
            if found.is_none() {
                return Err(multierror("invalid accessor"));
            }
            found
        }
    };
    let entry = entry.ok_or_else(|| match kind {
        Kind::SelfToken => LogicalError::PermissionDenied,
        _ => multierror("invalid token"),
    })?;
    let acl = logical.acl_for(&entry).await?;
    let mut data = Map::new();
    for path in &paths {
        let caps = if entry.policies().is_empty() {
            vec!["deny"]
        } else {
            acl.capabilities(path)
        };
        data.insert(path.clone(), json!(caps));
    }
    if let [only] = paths.as_slice()
        && let Some(caps) = data.get(only).cloned()
    {
        data.insert("capabilities".to_owned(), caps);
    }
    Ok(LogicalResponse {
        data_at_top_level: true,
        ..LogicalResponse::ok(Value::Object(data))
    })
}
