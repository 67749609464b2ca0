//! IAM through moto's query API: SigV4-signed form posts with reqwest, the
//! few calls the harness needs (no IAM SDK crate to compile).

use std::time::SystemTime;

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;

use super::{MotoServer, TEST_REGION};
use seal_awskms::SecretString;

const ADMIN_USER: &str = "strongroom-harness-admin";
const ALLOW_ALL: &str =
    r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"*","Resource":"*"}]}"#;
const ALLOW_KMS: &str =
    r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"kms:*","Resource":"*"}]}"#;

/// An IAM user made by [`MotoServer::create_kms_user`].
#[derive(Debug, Clone)]
pub struct IamUser {
    /// The user name.
    pub user_name: String,
    /// ARN of the attached policy that allows `kms:*`.
    pub policy_arn: String,
    /// The user's access key id.
    pub access_key_id: String,
    /// The user's secret access key.
    pub secret_access_key: SecretString,
}

/// Calls IAM action `action` with `params`, signed as `access`/`secret`,
/// and returns the XML response body.
async fn call(
    server: &MotoServer,
    access: &str,
    secret: &str,
    action: &str,
    params: &[(&str, &str)],
) -> String {
    let url = format!("{}/", server.moto_endpoint());
    let body = [("Action", action), ("Version", "2010-05-08")]
        .iter()
        .chain(params)
        .map(|(k, v)| format!("{}={}", form_encode(k), form_encode(v)))
        .collect::<Vec<_>>()
        .join("&");
    let content_type = "application/x-www-form-urlencoded; charset=utf-8";

    let identity: Identity =
        Credentials::new(access, secret, None, None, "strongroom-moto-iam").into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(TEST_REGION)
        .name("iam")
        .time(SystemTime::now())
        .settings(SigningSettings::default())
        .build()
        .expect("SigV4 signing parameters")
        .into();
    let signable = SignableRequest::new(
        "POST",
        &url,
        [("content-type", content_type)].into_iter(),
        SignableBody::Bytes(body.as_bytes()),
    )
    .expect("signable IAM request");
    let (instructions, _) = sign(signable, &params).expect("SigV4 signing").into_parts();

    let mut request = reqwest::Client::new()
        .post(&url)
        .header("content-type", content_type)
        .body(body.clone());
    for (name, value) in instructions.headers() {
        request = request.header(name, value);
    }
    let response = request
        .send()
        .await
        .unwrap_or_else(|e| panic!("IAM {action}: request to moto failed: {e}"));
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    assert!(
        status.is_success(),
        "IAM {action} failed with {status}: {text}"
    );
    text
}

/// Form-encodes like Python's `urlencode` (moto re-encodes the parsed form
/// to check the signature, so the bytes must match): unreserved characters
/// stay, space becomes `+`, everything else is `%XX`.
fn form_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len() * 3);
    for byte in value.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'_' | b'.' | b'-' | b'~' => {
                out.push(char::from(byte))
            }
            b' ' => out.push('+'),
            other => out.push_str(&format!("%{other:02X}")),
        }
    }
    out
}

/// The text of the first `<tag>…</tag>` in an XML document.
fn xml_field(xml: &str, tag: &str) -> String {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    xml.split_once(&open)
        .and_then(|(_, rest)| rest.split_once(&close))
        .map(|(value, _)| value.trim().to_owned())
        .unwrap_or_else(|| panic!("no <{tag}> in IAM response: {xml}"))
}

/// Spends moto's unauthenticated requests on an admin user allowed
/// everything, and returns its access key.
pub(super) async fn bootstrap_admin(server: &MotoServer) -> (String, String) {
    // Signed with placeholder credentials: moto routes by the signature's
    // service scope and checks nothing during the unauthenticated budget.
    let (a, s) = ("bootstrap", "bootstrap");
    call(server, a, s, "CreateUser", &[("UserName", ADMIN_USER)]).await;
    call(
        server,
        a,
        s,
        "PutUserPolicy",
        &[
            ("UserName", ADMIN_USER),
            ("PolicyName", "allow-all"),
            ("PolicyDocument", ALLOW_ALL),
        ],
    )
    .await;
    let xml = call(server, a, s, "CreateAccessKey", &[("UserName", ADMIN_USER)]).await;
    (
        xml_field(&xml, "AccessKeyId"),
        xml_field(&xml, "SecretAccessKey"),
    )
}

fn admin(server: &MotoServer) -> (&str, &str) {
    (&server.access_key, &server.secret_key)
}

/// A policy document allowing exactly `actions` (`kms:Encrypt`, …) on
/// every resource.
fn allow_only(actions: &[&str]) -> String {
    serde_json::json!({
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": actions, "Resource": "*"}],
    })
    .to_string()
}

pub(super) async fn create_kms_user(server: &MotoServer, name: &str) -> IamUser {
    create_user_with_policy(server, name, ALLOW_KMS).await
}

pub(super) async fn create_user_allowing(
    server: &MotoServer,
    name: &str,
    actions: &[&str],
) -> IamUser {
    create_user_with_policy(server, name, &allow_only(actions)).await
}

async fn create_user_with_policy(server: &MotoServer, name: &str, policy: &str) -> IamUser {
    let (a, s) = admin(server);
    call(server, a, s, "CreateUser", &[("UserName", name)]).await;
    let policy_name = format!("{name}-kms");
    let xml = call(
        server,
        a,
        s,
        "CreatePolicy",
        &[("PolicyName", &policy_name), ("PolicyDocument", policy)],
    )
    .await;
    let policy_arn = xml_field(&xml, "Arn");
    call(
        server,
        a,
        s,
        "AttachUserPolicy",
        &[("UserName", name), ("PolicyArn", &policy_arn)],
    )
    .await;
    let xml = call(server, a, s, "CreateAccessKey", &[("UserName", name)]).await;
    IamUser {
        user_name: name.to_owned(),
        policy_arn,
        access_key_id: xml_field(&xml, "AccessKeyId"),
        secret_access_key: SecretString::new(xml_field(&xml, "SecretAccessKey")),
    }
}

pub(super) async fn detach(server: &MotoServer, user: &IamUser) {
    let (a, s) = admin(server);
    call(
        server,
        a,
        s,
        "DetachUserPolicy",
        &[
            ("UserName", &user.user_name),
            ("PolicyArn", &user.policy_arn),
        ],
    )
    .await;
}

pub(super) async fn attach(server: &MotoServer, user: &IamUser) {
    let (a, s) = admin(server);
    call(
        server,
        a,
        s,
        "AttachUserPolicy",
        &[
            ("UserName", &user.user_name),
            ("PolicyArn", &user.policy_arn),
        ],
    )
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_encoding_matches_python_urlencode() {
        // urllib.parse.urlencode({"P": '{"A":"kms:*", "R": "x/y~z"}'})
        assert_eq!(
            form_encode(r#"{"A":"kms:*", "R": "x/y~z"}"#),
            "%7B%22A%22%3A%22kms%3A%2A%22%2C+%22R%22%3A+%22x%2Fy~z%22%7D"
        );
    }

    #[test]
    fn a_policy_allows_exactly_the_named_actions() {
        let doc: serde_json::Value =
            serde_json::from_str(&allow_only(&["kms:Encrypt", "kms:Decrypt"])).unwrap();
        assert_eq!(
            doc["Statement"][0]["Action"],
            serde_json::json!(["kms:Encrypt", "kms:Decrypt"])
        );
        assert_eq!(doc["Statement"][0]["Effect"], "Allow");
    }

    #[test]
    fn xml_field_reads_the_first_match() {
        let xml = "<R><AccessKey><AccessKeyId>AKIA1</AccessKeyId><SecretAccessKey> s/k+1 </SecretAccessKey></AccessKey></R>";
        assert_eq!(xml_field(xml, "AccessKeyId"), "AKIA1");
        assert_eq!(xml_field(xml, "SecretAccessKey"), "s/k+1");
    }
}
