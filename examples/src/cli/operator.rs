//! `strongroom operator …`: init, unseal, seal, rotate, key-status, rekey,
//! adopt.

use serde_json::{Value, json};
use zeroize::Zeroizing;

use super::client::Client;
use super::output::{self, kv_table};
use super::status::seal_status_table;
use super::{
    AdoptArgs, Format, InitArgs, OperatorCommand, RekeyArgs, RekeyTarget, SimpleArgs, UnsealArgs,
};
use crate::error::Error;

/// Runs one operator subcommand and returns the exit code.
///
/// # Errors
///
/// When the server cannot be reached, refuses the operation, or a prompt fails.
pub(crate) async fn run(command: &OperatorCommand) -> Result<u8, Error> {
    match command {
        OperatorCommand::Init(args) => init(args).await,
        OperatorCommand::Unseal(args) => unseal(args).await,
        OperatorCommand::Seal(args) => seal(args).await,
        OperatorCommand::Rotate(args) => rotate(args).await,
        OperatorCommand::KeyStatus(args) => key_status(args).await,
        OperatorCommand::Rekey(args) => rekey(args).await,
        OperatorCommand::Adopt(args) => adopt(args).await,
    }
}

/// `operator adopt`: the status (`-status`), or the upgrade through
/// `sys/strongroom/adopt`. Without `-confirm` the request still goes out
/// unconfirmed, so the server's refusal (with how to back up first) is
/// what the user reads, worded in one place.
async fn adopt(args: &AdoptArgs) -> Result<u8, Error> {
    let client = Client::new(&args.client)?;
    let path = "sys/strongroom/adopt";
    if args.status {
        let answer = client.call("GET", path, None).await?.unwrap_or(Value::Null);
        let data = answer.get("data").cloned().unwrap_or(Value::Null);
        let read_only = data.get("read_only_takeover") == Some(&Value::Bool(true));
        match args.format {
            Format::Json => print!("{}", output::json(&data)),
            Format::Table => println!(
                "{}",
                if read_only {
                    "Serving a Vault data set read-only: back up the prefix \
                     (consul kv export), then run `strongroom operator adopt -confirm` \
                     to upgrade it in place."
                } else {
                    "Not a read-only takeover: the data set uses Strongroom's layout."
                }
            ),
        }
        return Ok(if read_only { 0 } else { 2 });
    }
    let answer = client
        .call("PUT", path, Some(&json!({"confirm": args.confirm})))
        .await?
        .unwrap_or(Value::Null);
    let data = answer.get("data").cloned().unwrap_or(Value::Null);
    if args.format == Format::Json {
        print!("{}", output::json(&data));
        return Ok(0);
    }
    if data.get("upgraded") == Some(&Value::Bool(true)) {
        println!(
            "Success! The Vault data set now uses Strongroom's layout and is served read-write."
        );
    } else {
        println!("Nothing to do: the data set already uses Strongroom's layout.");
    }
    let left = strings(&data, "not_carried_over");
    if !left.is_empty() {
        println!("\nNot carried over (left in storage as Vault wrote it):");
        for line in left {
            println!("  {line}");
        }
    }
    Ok(0)
}

fn strings(value: &Value, key: &str) -> Vec<String> {
    value
        .get(key)
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

async fn init(args: &InitArgs) -> Result<u8, Error> {
    let client = Client::new(&args.client)?;
    if args.status {
        let body = client
            .call("GET", "sys/init", None)
            .await?
            .unwrap_or(Value::Null);
        return Ok(
            if body.get("initialized").and_then(Value::as_bool) == Some(true) {
                println!("Vault is initialized");
                0
            } else {
                println!("Vault is not initialized");
                2
            },
        );
    }
    // Like Vault's CLI: the defaults depend on the seal type, which the
    // server reports in seal-status (recovery_seal = auto seal).
    let seal = client
        .call("GET", "sys/seal-status", None)
        .await?
        .unwrap_or(Value::Null);
    let auto = seal
        .get("recovery_seal")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let (shares, threshold, recovery_shares, recovery_threshold) = if auto {
        (
            args.key_shares.unwrap_or(0),
            args.key_threshold.unwrap_or(0),
            args.recovery_shares.unwrap_or(5),
            args.recovery_threshold.unwrap_or(3),
        )
    } else {
        (
            args.key_shares.unwrap_or(5),
            args.key_threshold.unwrap_or(3),
            args.recovery_shares.unwrap_or(0),
            args.recovery_threshold.unwrap_or(0),
        )
    };
    let request = json!({
        "secret_shares": shares,
        "secret_threshold": threshold,
        "recovery_shares": recovery_shares,
        "recovery_threshold": recovery_threshold,
    });
    let answer = client
        .call("PUT", "sys/init", Some(&request))
        .await?
        .unwrap_or(Value::Null);
    let keys_b64 = strings(&answer, "keys_base64");
    let keys_hex = strings(&answer, "keys");
    let recovery_b64 = strings(&answer, "recovery_keys_base64");
    let recovery_hex = strings(&answer, "recovery_keys");
    let root_token = Zeroizing::new(
        answer
            .get("root_token")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
    );
    match args.format {
        Format::Json => {
            let out = json!({
                "unseal_keys_b64": keys_b64,
                "unseal_keys_hex": keys_hex,
                "unseal_shares": shares,
                "unseal_threshold": threshold,
                "recovery_keys_b64": recovery_b64,
                "recovery_keys_hex": recovery_hex,
                "recovery_keys_shares": recovery_shares,
                "recovery_keys_threshold": recovery_threshold,
                "root_token": root_token.as_str(),
            });
            print!("{}", output::json(&out));
        }
        Format::Table => {
            let mut text = String::new();
            for (i, key) in keys_b64.iter().enumerate() {
                text.push_str(&format!("Unseal Key {}: {key}\n", i + 1));
            }
            for (i, key) in recovery_b64.iter().enumerate() {
                text.push_str(&format!("Recovery Key {}: {key}\n", i + 1));
            }
            text.push_str(&format!(
                "\nInitial Root Token: {}\n\n",
                root_token.as_str()
            ));
            if auto {
                text.push_str(&format!(
                    "Success! Vault is initialized\n\n\
                     Recovery key initialized with {recovery_shares} key shares and a key threshold of {recovery_threshold}.\n\
                     Please securely distribute the key shares printed above. The server has\n\
                     unsealed itself through its seal; the recovery keys authorise rekeying and\n\
                     recovery operations, they cannot decrypt data on their own.\n"
                ));
            } else {
                text.push_str(&format!(
                    "Vault initialized with {shares} key shares and a key threshold of {threshold}. Please securely\n\
                     distribute the key shares printed above. When the Vault is re-sealed,\n\
                     restarted, or stopped, you must supply at least {threshold} of these keys to unseal it\n\
                     before it can start servicing requests.\n\n\
                     Vault does not store the generated root key. Without at least {threshold} keys to\n\
                     reconstruct the root key, Vault will remain permanently sealed!\n\n\
                     It is possible to generate new unseal keys, provided you have a quorum of\n\
                     existing unseal keys shares. See \"strongroom operator rekey\" for more information.\n"
                ));
            }
            print!("{text}");
        }
    }
    Ok(0)
}

fn prompt(label: &str) -> Result<Zeroizing<String>, Error> {
    let key =
        rpassword::prompt_password(format!("{label} (will be hidden): ")).map_err(|source| {
            Error::Io {
                what: "reading the key from the terminal".into(),
                source,
            }
        })?;
    Ok(Zeroizing::new(key.trim().to_owned()))
}

async fn unseal(args: &UnsealArgs) -> Result<u8, Error> {
    let client = Client::new(&args.client)?;
    let request = if args.reset {
        json!({"reset": true})
    } else {
        let key = match &args.key {
            Some(key) => Zeroizing::new(key.trim().to_owned()),
            None => prompt("Unseal Key")?,
        };
        if key.is_empty() {
            return Err(Error::Usage("no unseal key given".into()));
        }
        json!({"key": key.as_str(), "migrate": args.migrate})
    };
    let status = client
        .call("PUT", "sys/unseal", Some(&request))
        .await?
        .unwrap_or(Value::Null);
    match args.format {
        Format::Json => print!("{}", output::json(&status)),
        Format::Table => {
            let leader = super::status::leader(&client).await;
            print!("{}", seal_status_table(&status, leader.as_ref()));
        }
    }
    Ok(0)
}

async fn seal(args: &SimpleArgs) -> Result<u8, Error> {
    let client = Client::new(&args.client)?;
    client.call("PUT", "sys/seal", None).await?;
    println!("Success! Vault is sealed.");
    Ok(0)
}

fn key_status_rows(status: &Value) -> Vec<(String, String)> {
    vec![
        (
            "Key Term".into(),
            output::show(status.get("term").unwrap_or(&Value::Null)),
        ),
        (
            "Install Time".into(),
            output::show(status.get("install_time").unwrap_or(&Value::Null)),
        ),
        (
            "Encryption Count".into(),
            output::show(status.get("encryptions").unwrap_or(&Value::Null)),
        ),
    ]
}

async fn rotate(args: &SimpleArgs) -> Result<u8, Error> {
    let client = Client::new(&args.client)?;
    client.call("PUT", "sys/rotate", None).await?;
    let status = client
        .call("GET", "sys/key-status", None)
        .await?
        .unwrap_or(Value::Null);
    match args.format {
        Format::Json => print!("{}", output::json(&status)),
        Format::Table => print!(
            "Success! Rotated key\n\n{}",
            output::columns(&key_status_rows(&status))
        ),
    }
    Ok(0)
}

async fn key_status(args: &SimpleArgs) -> Result<u8, Error> {
    let client = Client::new(&args.client)?;
    let status = client
        .call("GET", "sys/key-status", None)
        .await?
        .unwrap_or(Value::Null);
    match args.format {
        Format::Json => print!("{}", output::json(&status)),
        Format::Table => print!("{}", output::columns(&key_status_rows(&status))),
    }
    Ok(0)
}

fn rekey_status_table(status: &Value) -> String {
    let get = |k: &str| output::show(status.get(k).unwrap_or(&Value::Null));
    let mut rows = vec![
        ("Nonce".to_owned(), get("nonce")),
        ("Started".to_owned(), get("started")),
        (
            "Rekey Progress".to_owned(),
            format!("{}/{}", get("progress"), get("required")),
        ),
        ("New Shares".to_owned(), get("n")),
        ("New Threshold".to_owned(), get("t")),
        (
            "Verification Required".to_owned(),
            get("verification_required"),
        ),
    ];
    let verification_nonce = status
        .get("verification_nonce")
        .and_then(Value::as_str)
        .unwrap_or("");
    if !verification_nonce.is_empty() {
        rows.push((
            "Verification Nonce".to_owned(),
            verification_nonce.to_owned(),
        ));
    }
    kv_table(&rows)
}

async fn rekey(args: &RekeyArgs) -> Result<u8, Error> {
    let client = Client::new(&args.client)?;
    let base = match args.target {
        RekeyTarget::Barrier => "sys/rekey",
        RekeyTarget::Recovery => "sys/rekey-recovery-key",
    };
    let print_status = |status: &Value| match args.format {
        Format::Json => print!("{}", output::json(status)),
        Format::Table => print!("{}", rekey_status_table(status)),
    };
    if args.cancel {
        client.call("DELETE", &format!("{base}/init"), None).await?;
        println!("Success! Canceled rekeying (if it was started)");
        return Ok(0);
    }
    if args.status {
        let status = client
            .call("GET", &format!("{base}/init"), None)
            .await?
            .unwrap_or(Value::Null);
        print_status(&status);
        return Ok(0);
    }
    if args.init {
        let request = json!({
            "secret_shares": args.key_shares.unwrap_or(5),
            "secret_threshold": args.key_threshold.unwrap_or(3),
            "require_verification": args.verify,
        });
        let status = client
            .call("PUT", &format!("{base}/init"), Some(&request))
            .await?
            .unwrap_or(Value::Null);
        print_status(&status);
        return Ok(0);
    }

    // Submitting a share: to the update step, or with -verify to the verify step.
    let status = client
        .call("GET", &format!("{base}/init"), None)
        .await?
        .unwrap_or(Value::Null);
    let nonce = match &args.nonce {
        Some(n) => n.clone(),
        None if args.verify => status
            .get("verification_nonce")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned(),
        None => status
            .get("nonce")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned(),
    };
    if nonce.is_empty() {
        return Err(Error::Usage(
            "no rekey is in progress; start one with: strongroom operator rekey -init -key-shares=N -key-threshold=M".into(),
        ));
    }
    let key = match &args.key {
        Some(key) => Zeroizing::new(key.trim().to_owned()),
        None => prompt(if args.verify { "New Key" } else { "Key" })?,
    };
    let request = json!({"key": key.as_str(), "nonce": nonce});
    let step = if args.verify { "verify" } else { "update" };
    let answer = client
        .call("PUT", &format!("{base}/{step}"), Some(&request))
        .await?
        .unwrap_or(Value::Null);
    if args.format == Format::Json {
        print!("{}", output::json(&answer));
        return Ok(0);
    }
    let complete = answer
        .get("complete")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    if !complete {
        let status = client
            .call(
                "GET",
                &format!("{base}/{}", if args.verify { "verify" } else { "init" }),
                None,
            )
            .await?
            .unwrap_or(Value::Null);
        print_status(&status);
        return Ok(0);
    }
    if args.verify {
        println!(
            "Success! Rekey verification was successful. The rekey operation is complete and the new keys are now active."
        );
        return Ok(0);
    }
    let keys = strings(&answer, "keys_base64");
    let mut text = String::new();
    for (i, key) in keys.iter().enumerate() {
        text.push_str(&format!("Key {}: {key}\n", i + 1));
    }
    text.push_str(&format!("\nOperation nonce: {nonce}\n\n"));
    let verification = answer
        .get("verification_required")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let shares = keys.len();
    let threshold = status.get("t").map(output::show).unwrap_or_default();
    if verification {
        let vn = answer
            .get("verification_nonce")
            .and_then(Value::as_str)
            .unwrap_or("");
        text.push_str(&format!(
            "The new keys are not active yet: enter {threshold} of them with\n\
             \"strongroom operator rekey -verify -target={}\" (verification nonce {vn}).\n",
            if args.target == RekeyTarget::Recovery {
                "recovery"
            } else {
                "barrier"
            }
        ));
    } else {
        text.push_str(&format!(
            "Vault rekeyed with {shares} key shares and a key threshold of {threshold}. Please\n\
             securely distribute the key shares printed above. When Vault is re-sealed,\n\
             restarted, or stopped, you must supply at least {threshold} of these keys to\n\
             unseal it before it can start servicing requests.\n"
        ));
    }
    print!("{text}");
    Ok(0)
}
