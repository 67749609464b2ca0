//! `strongroom kv put|get|delete|list`.
//!
//! Like `vault kv`, the command first asks the server which mount a path is
//! in and which KV version that mount runs (`sys/internal/ui/mounts/<path>`),
//! then rewrites the path for KV v2 (`secret/foo` → `secret/data/foo`, lists
//! under `secret/metadata/`).

use serde_json::{Map, Value, json};

use super::client::Client;
use super::output::{self, kv_table, object_rows, section, table_width};
use super::{Format, KvCommand, KvDeleteArgs, KvGetArgs, KvPathArgs, KvPutArgs};
use crate::error::Error;

/// Where a kv path lives: its mount and the engine version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    /// The mount path with a trailing slash (`secret/`), or empty when unknown.
    pub(crate) mount: String,
    /// 1 or 2.
    pub(crate) version: u8,
    /// The path below the mount.
    pub(crate) relative: String,
}

impl Target {
    /// The API path for data operations.
    pub(crate) fn data_path(&self) -> String {
        if self.version == 2 {
            format!("{}data/{}", self.mount, self.relative)
        } else {
            format!("{}{}", self.mount, self.relative)
        }
    }

    /// The API path for listing.
    pub(crate) fn list_path(&self) -> String {
        if self.version == 2 {
            format!("{}metadata/{}", self.mount, self.relative)
        } else {
            format!("{}{}", self.mount, self.relative)
        }
    }

    /// The API path for KV v2's soft delete of chosen versions.
    fn delete_versions_path(&self) -> String {
        format!("{}delete/{}", self.mount, self.relative)
    }
}

/// Runs one kv subcommand and returns the exit code.
///
/// # Errors
///
/// When the server cannot be reached or refuses the request, or the data
/// arguments are malformed.
pub(crate) async fn run(command: &KvCommand) -> Result<u8, Error> {
    match command {
        KvCommand::Put(args) => put(args).await,
        KvCommand::Get(args) => get(args).await,
        KvCommand::Delete(args) => delete(args).await,
        KvCommand::List(args) => list(args).await,
    }
}

async fn resolve(client: &Client, args: &KvPathArgs) -> Result<Target, Error> {
    let (probe, mount_hint, relative_hint) = match &args.mount {
        Some(mount) => {
            let mount = format!("{}/", mount.trim_matches('/'));
            (
                mount.clone(),
                Some(mount),
                args.path.trim_start_matches('/').to_owned(),
            )
        }
        None => (
            args.path.trim_start_matches('/').to_owned(),
            None,
            String::new(),
        ),
    };
    let response = client
        .send("GET", &format!("sys/internal/ui/mounts/{probe}"), None)
        .await?;
    if response.status == 404 || response.status == 403 {
        // Like Vault's CLI: no preflight endpoint (or no permission) means KV v1.
        return Ok(Target {
            mount: mount_hint.unwrap_or_default(),
            version: 1,
            relative: if args.mount.is_some() {
                relative_hint
            } else {
                probe
            },
        });
    }
    if response.status >= 400 {
        return Err(client
            .api_error("GET", &format!("sys/internal/ui/mounts/{probe}"), &response)
            .into());
    }
    let data = response
        .body
        .as_ref()
        .and_then(|b| b.get("data"))
        .cloned()
        .unwrap_or(Value::Null);
    let mount = data
        .get("path")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .or(mount_hint)
        .unwrap_or_default();
    let version = match data.get("options").and_then(|o| o.get("version")) {
        Some(Value::String(v)) if v == "2" => 2,
        Some(Value::Number(n)) if n.as_u64() == Some(2) => 2,
        _ => 1,
    };
    let relative = if args.mount.is_some() {
        relative_hint
    } else {
        probe
            .strip_prefix(mount.as_str())
            .unwrap_or(&probe)
            .to_owned()
    };
    Ok(Target {
        mount,
        version,
        relative,
    })
}

/// Parses `key=value` arguments (`key=@file` reads a file, a lone `-`
/// reads a JSON object from stdin).
///
/// # Errors
///
/// [`Error::Usage`] for an argument without `=`, an unreadable file or bad JSON.
pub(crate) fn parse_data(
    args: &[String],
    stdin: &mut dyn std::io::Read,
) -> Result<Map<String, Value>, Error> {
    let mut data = Map::new();
    for arg in args {
        if arg == "-" {
            let mut text = String::new();
            stdin
                .read_to_string(&mut text)
                .map_err(|e| Error::Usage(format!("reading JSON from stdin: {e}")))?;
            let value: Value = serde_json::from_str(&text)
                .map_err(|e| Error::Usage(format!("stdin is not a JSON object: {e}")))?;
            let Value::Object(map) = value else {
                return Err(Error::Usage("stdin must hold a JSON object".into()));
            };
            data.extend(map);
            continue;
        }
        let Some((key, value)) = arg.split_once('=') else {
            return Err(Error::Usage(format!(
                "invalid key/value pair {arg:?}: expected key=value (or key=@file, or - for JSON on stdin)"
            )));
        };
        if key.is_empty() {
            return Err(Error::Usage(format!(
                "invalid key/value pair {arg:?}: empty key"
            )));
        }
        let value = if let Some(file) = value.strip_prefix('@') {
            std::fs::read_to_string(file)
                .map_err(|e| Error::Usage(format!("reading {file} for key {key}: {e}")))?
        } else {
            value.to_owned()
        };
        data.insert(key.to_owned(), Value::String(value));
    }
    Ok(data)
}

fn v2_metadata_output(path: &str, metadata: Option<&Value>) -> String {
    let rows = object_rows(metadata);
    format!(
        "{}\n{path}\n\n{}\n{}",
        section("Secret Path", path.chars().count()),
        section("Metadata", table_width(&rows)),
        kv_table(&rows)
    )
}

async fn put(args: &KvPutArgs) -> Result<u8, Error> {
    let client = Client::new(&args.common.client)?;
    let target = resolve(&client, &args.common).await?;
    let data = parse_data(&args.data, &mut std::io::stdin())?;
    let path = target.data_path();
    let body = if target.version == 2 {
        let mut body = json!({"data": data});
        if let Some(cas) = args.cas {
            body["options"] = json!({"cas": cas});
        }
        body
    } else {
        Value::Object(data)
    };
    let answer = client.call("PUT", &path, Some(&body)).await?;
    match (args.common.format, answer) {
        (Format::Json, Some(answer)) => print!("{}", output::json(&answer)),
        (Format::Json, None) => {}
        (Format::Table, Some(answer)) if target.version == 2 => {
            print!("{}", v2_metadata_output(&path, answer.get("data")));
        }
        (Format::Table, _) => println!("Success! Data written to: {path}"),
    }
    Ok(0)
}

async fn get(args: &KvGetArgs) -> Result<u8, Error> {
    let client = Client::new(&args.common.client)?;
    let target = resolve(&client, &args.common).await?;
    let mut path = target.data_path();
    if let (Some(version), 2) = (args.version, target.version) {
        path.push_str(&format!("?version={version}"));
    }
    let response = client.send("GET", &path, None).await?;
    let found = response.status == 200
        && response
            .body
            .as_ref()
            .and_then(|b| b.get("data"))
            .map(|d| {
                if target.version == 2 {
                    d.get("data").is_some_and(|x| !x.is_null())
                } else {
                    !d.is_null()
                }
            })
            .unwrap_or(false);
    if response.status == 404 || (response.status == 200 && !found) {
        eprintln!("No value found at {path}");
        return Ok(2);
    }
    if response.status >= 400 {
        return Err(client.api_error("GET", &path, &response).into());
    }
    let answer = response.body.unwrap_or(Value::Null);
    let data = if target.version == 2 {
        answer.get("data").and_then(|d| d.get("data"))
    } else {
        answer.get("data")
    };
    if let Some(field) = &args.field {
        return match data.and_then(|d| d.get(field)) {
            Some(value) => {
                println!("{}", output::show(value));
                Ok(0)
            }
            None => Err(Error::Usage(format!(
                "Field {field:?} not present in secret"
            ))),
        };
    }
    if args.common.format == Format::Json {
        print!("{}", output::json(&answer));
        return Ok(0);
    }
    if target.version == 2 {
        let rows = object_rows(data);
        print!(
            "{}\n{}\n{}",
            v2_metadata_output(&path, answer.get("data").and_then(|d| d.get("metadata"))),
            section("Data", table_width(&rows)),
            kv_table(&rows)
        );
    } else {
        let mut rows = Vec::new();
        if let Some(lease) = answer
            .get("lease_duration")
            .and_then(Value::as_u64)
            .filter(|l| *l > 0)
        {
            rows.push(("refresh_interval".to_owned(), humanize_seconds(lease)));
        }
        rows.extend(object_rows(data));
        print!("{}", kv_table(&rows));
    }
    Ok(0)
}

/// Vault prints refresh intervals Go-style (`768h0m0s` shortened to `768h`).
fn humanize_seconds(seconds: u64) -> String {
    let (h, m, s) = (seconds / 3600, (seconds % 3600) / 60, seconds % 60);
    match (h, m, s) {
        (h, 0, 0) if h > 0 => format!("{h}h"),
        (0, m, 0) if m > 0 => format!("{m}m"),
        (0, 0, s) => format!("{s}s"),
        _ => format!("{h}h{m}m{s}s"),
    }
}

async fn delete(args: &KvDeleteArgs) -> Result<u8, Error> {
    let client = Client::new(&args.common.client)?;
    let target = resolve(&client, &args.common).await?;
    match (&args.versions, target.version) {
        (Some(list), 2) => {
            let versions = list
                .split(',')
                .map(|v| v.trim().parse::<u64>())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|_| {
                    Error::Usage(format!(
                        "-versions must be a comma-separated list of numbers, got {list:?}"
                    ))
                })?;
            let path = target.delete_versions_path();
            client
                .call("PUT", &path, Some(&json!({"versions": versions})))
                .await?;
            println!("Success! Data deleted (if it existed) at: {path}");
        }
        (Some(_), _) => {
            return Err(Error::Usage(
                "-versions only applies to KV version 2 mounts".into(),
            ));
        }
        (None, _) => {
            let path = target.data_path();
            client.call("DELETE", &path, None).await?;
            println!("Success! Data deleted (if it existed) at: {path}");
        }
    }
    Ok(0)
}

async fn list(args: &KvPathArgs) -> Result<u8, Error> {
    let client = Client::new(&args.client)?;
    let target = resolve(&client, args).await?;
    let mut path = target.list_path();
    if !path.ends_with('/') {
        path.push('/');
    }
    let response = client.send("LIST", &path, None).await?;
    if response.status == 404 {
        eprintln!("No value found at {path}");
        return Ok(2);
    }
    if response.status >= 400 {
        return Err(client.api_error("LIST", &path, &response).into());
    }
    let answer = response.body.unwrap_or(Value::Null);
    if args.format == Format::Json {
        print!(
            "{}",
            output::json(
                answer
                    .get("data")
                    .and_then(|d| d.get("keys"))
                    .unwrap_or(&Value::Null)
            )
        );
        return Ok(0);
    }
    let keys: Vec<String> = answer
        .get("data")
        .and_then(|d| d.get("keys"))
        .and_then(Value::as_array)
        .map(|a| a.iter().map(output::show).collect())
        .unwrap_or_default();
    let mut text = String::from("Keys\n----\n");
    for key in keys {
        text.push_str(&key);
        text.push('\n');
    }
    print!("{text}");
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_value_pairs_parse() {
        let data = parse_data(
            &["a=b".into(), "c=d=e".into(), "empty=".into()],
            &mut std::io::empty(),
        )
        .unwrap();
        assert_eq!(Value::Object(data), json!({"a":"b","c":"d=e","empty":""}));
    }

    #[test]
    fn json_on_stdin_and_files() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("v.txt");
        std::fs::write(&file, "from-file").unwrap();
        let mut stdin = &br#"{"x":"y","n":1}"#[..];
        let data = parse_data(&["-".into(), format!("f=@{}", file.display())], &mut stdin).unwrap();
        assert_eq!(Value::Object(data), json!({"x":"y","n":1,"f":"from-file"}));
    }

    #[test]
    fn malformed_pairs_are_refused() {
        assert!(parse_data(&["novalue".into()], &mut std::io::empty()).is_err());
        assert!(parse_data(&["=v".into()], &mut std::io::empty()).is_err());
        assert!(parse_data(&["-".into()], &mut &b"[1]"[..]).is_err());
    }

    #[test]
    fn v2_paths_gain_data_and_metadata() {
        let t = Target {
            mount: "secret/".into(),
            version: 2,
            relative: "a/b".into(),
        };
        assert_eq!(t.data_path(), "secret/data/a/b");
        assert_eq!(t.list_path(), "secret/metadata/a/b");
        let t = Target {
            mount: "kv/".into(),
            version: 1,
            relative: "a".into(),
        };
        assert_eq!(t.data_path(), "kv/a");
    }

    #[test]
    fn refresh_interval_prints_like_go() {
        assert_eq!(humanize_seconds(2_764_800), "768h");
        assert_eq!(humanize_seconds(90), "0h1m30s");
        assert_eq!(humanize_seconds(30), "30s");
    }
}
