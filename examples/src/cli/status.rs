//! `strongroom status`: the seal-status table (exit 0 unsealed, 2 sealed,
//! 1 on error, like `vault status`).

use serde_json::Value;

use super::client::Client;
use super::output::{json, kv_table};
use super::{Format, StatusArgs};
use crate::error::Error;

/// Runs `strongroom status`.
///
/// # Errors
///
/// When the server cannot be reached or answers with an error.
pub(crate) async fn run(args: &StatusArgs) -> Result<u8, Error> {
    let client = Client::new(&args.client)?;
    let seal = client
        .call("GET", "sys/seal-status", None)
        .await?
        .unwrap_or(Value::Null);
    let sealed = seal.get("sealed").and_then(Value::as_bool).unwrap_or(true);
    let leader = leader(&client).await;
    match args.format {
        Format::Json => {
            let mut out = seal.clone();
            if let (Some(map), Some(l)) = (
                out.as_object_mut(),
                leader.as_ref().and_then(Value::as_object),
            ) {
                for (k, v) in l {
                    map.entry(k.clone()).or_insert_with(|| v.clone());
                }
            }
            print!("{}", json(&out));
        }
        Format::Table => print!("{}", seal_status_table(&seal, leader.as_ref())),
    }
    Ok(if sealed { 2 } else { 0 })
}

/// `sys/leader` for the HA rows of the seal-status table (`status` and
/// `operator unseal` print them, as Vault's CLI does); `None` when the
/// node does not answer it.
pub(crate) async fn leader(client: &Client) -> Option<Value> {
    // As `vault status`: a sealed HA node answers sys/leader with "Vault is
    // sealed", which reads as HA enabled with the details unknown.
    match client.send("GET", "sys/leader", None).await {
        Ok(r) if r.status == 200 => r.body,
        Ok(r) if r.status == 503 && r.body.as_ref().is_some_and(is_sealed_error) => {
            Some(serde_json::json!({ "ha_enabled": true }))
        }
        _ => None,
    }
}

fn is_sealed_error(body: &Value) -> bool {
    body["errors"]
        .as_array()
        .is_some_and(|e| e.iter().any(|m| m.as_str() == Some("Vault is sealed")))
}

fn text(value: &Value, key: &str) -> String {
    match value.get(key) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    }
}

fn number(value: &Value, key: &str) -> u64 {
    value.get(key).and_then(Value::as_u64).unwrap_or(0)
}

fn flag(value: &Value, key: &str) -> bool {
    value.get(key).and_then(Value::as_bool).unwrap_or(false)
}

/// Vault's seal-status table (`vault status`, `vault operator unseal`).
pub(crate) fn seal_status_table(seal: &Value, leader: Option<&Value>) -> String {
    let mut rows: Vec<(String, String)> = Vec::new();
    let mut push = |k: &str, v: String| rows.push((k.to_owned(), v));
    let recovery = flag(seal, "recovery_seal");
    push("Seal Type", text(seal, "type"));
    if recovery {
        push("Recovery Seal Type", "shamir".to_owned());
    }
    push("Initialized", flag(seal, "initialized").to_string());
    let sealed = flag(seal, "sealed");
    push("Sealed", sealed.to_string());
    push(
        if recovery {
            "Total Recovery Shares"
        } else {
            "Total Shares"
        },
        number(seal, "n").to_string(),
    );
    push("Threshold", number(seal, "t").to_string());
    if sealed {
        push(
            "Unseal Progress",
            format!("{}/{}", number(seal, "progress"), number(seal, "t")),
        );
        let nonce = text(seal, "nonce");
        push(
            "Unseal Nonce",
            if nonce.is_empty() {
                "n/a".to_owned()
            } else {
                nonce
            },
        );
    }
    if flag(seal, "migration") {
        push("Seal Migration in Progress", "true".to_owned());
    }
    push("Version", text(seal, "version"));
    let build_date = text(seal, "build_date");
    if !build_date.is_empty() {
        push("Build Date", build_date);
    }
    push("Storage Type", text(seal, "storage_type"));
    let cluster_name = text(seal, "cluster_name");
    let cluster_id = text(seal, "cluster_id");
    if !cluster_name.is_empty() && !cluster_id.is_empty() {
        push("Cluster Name", cluster_name);
        push("Cluster ID", cluster_id);
    }
    if let Some(leader) = leader {
        let ha = flag(leader, "ha_enabled");
        push("HA Enabled", ha.to_string());
        if ha && !sealed {
            let is_self = flag(leader, "is_self");
            push("HA Cluster", {
                let c = text(leader, "leader_cluster_address");
                if c.is_empty() { "n/a".to_owned() } else { c }
            });
            push(
                "HA Mode",
                if is_self { "active" } else { "standby" }.to_owned(),
            );
            let address = text(leader, "leader_address");
            if is_self {
                let since = text(leader, "active_time");
                if !since.is_empty() && !since.starts_with("0001-01-01") {
                    push("Active Since", since);
                }
            } else {
                push(
                    "Active Node Address",
                    if address.is_empty() {
                        "<none>".to_owned()
                    } else {
                        address
                    },
                );
            }
        }
    } else if !sealed {
        push("HA Enabled", "false".to_owned());
    }
    kv_table(&rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn sealed_status_shows_progress_and_nonce() {
        let table = seal_status_table(
            &json!({"type":"shamir","initialized":true,"sealed":true,"t":3,"n":5,"progress":1,
                    "nonce":"abc","version":"0.1.0","storage_type":"redb","recovery_seal":false}),
            None,
        );
        assert!(table.contains("\nUnseal Progress    1/3\n"), "{table}");
        assert!(table.contains("\nUnseal Nonce       abc\n"), "{table}");
        assert!(table.contains("\nTotal Shares       5\n"), "{table}");
        assert!(table.contains("\nSealed             true\n"), "{table}");
        assert!(table.contains("\nStorage Type       redb\n"), "{table}");
    }

    /// The value of row `key` in a Key/Value table.
    fn row(table: &str, key: &str) -> Option<String> {
        table.lines().find_map(|line| {
            line.strip_prefix(key)
                .filter(|rest| rest.starts_with("  "))
                .map(|rest| rest.trim().to_owned())
        })
    }

    #[test]
    fn ha_rows_follow_vaults_status_output() {
        let seal = json!({"type":"shamir","initialized":true,"sealed":false,"t":1,"n":1,
                          "progress":0,"nonce":"","version":"0.1.0","storage_type":"consul",
                          "recovery_seal":false});
        let active = seal_status_table(
            &seal,
            Some(
                &json!({"ha_enabled":true,"is_self":true,"active_time":"2024-05-01T10:00:00Z",
                         "leader_address":"http://a:8200","leader_cluster_address":""}),
            ),
        );
        assert_eq!(
            row(&active, "HA Enabled").as_deref(),
            Some("true"),
            "{active}"
        );
        assert_eq!(
            row(&active, "HA Cluster").as_deref(),
            Some("n/a"),
            "{active}"
        );
        assert_eq!(
            row(&active, "HA Mode").as_deref(),
            Some("active"),
            "{active}"
        );
        assert_eq!(
            row(&active, "Active Since").as_deref(),
            Some("2024-05-01T10:00:00Z")
        );
        assert!(row(&active, "Active Node Address").is_none(), "{active}");
        let standby = seal_status_table(
            &seal,
            Some(
                &json!({"ha_enabled":true,"is_self":false,"leader_address":"http://a:8200",
                         "leader_cluster_address":"https://a:8201"}),
            ),
        );
        assert_eq!(
            row(&standby, "HA Cluster").as_deref(),
            Some("https://a:8201")
        );
        assert_eq!(row(&standby, "HA Mode").as_deref(), Some("standby"));
        assert_eq!(
            row(&standby, "Active Node Address").as_deref(),
            Some("http://a:8200")
        );
        let mut sealed = seal.clone();
        sealed["sealed"] = json!(true);
        let table = seal_status_table(&sealed, Some(&json!({"ha_enabled": true})));
        assert_eq!(
            row(&table, "HA Enabled").as_deref(),
            Some("true"),
            "{table}"
        );
        assert!(row(&table, "HA Mode").is_none(), "{table}");
        assert!(is_sealed_error(&json!({"errors": ["Vault is sealed"]})));
    }

    #[test]
    fn unsealed_auto_seal_status_shows_recovery_and_ha() {
        let table = seal_status_table(
            &json!({"type":"awskms","initialized":true,"sealed":false,"t":3,"n":5,"progress":0,
                    "nonce":"","version":"0.1.0","storage_type":"consul","recovery_seal":true,
                    "cluster_name":"c","cluster_id":"id"}),
            Some(&json!({"ha_enabled":true,"is_self":false,"leader_address":"https://a:8200"})),
        );
        assert!(table.contains("Recovery Seal Type"), "{table}");
        assert!(table.contains("Total Recovery Shares"), "{table}");
        assert!(!table.contains("Unseal Progress"), "{table}");
        assert!(
            table.contains("HA Mode                  standby"),
            "{table}"
        );
        assert!(
            table.contains("Active Node Address      https://a:8200"),
            "{table}"
        );
    }
}
