//! Config placeholders filled from the environment (`-config-placeholders`).
//!
//! On Kubernetes the config file is a ConfigMap shared by every pod, yet
//! some values are per pod: the node's Consul agent is at `HOST_IP:8500`.
//! vault-helm runs a shell script that `sed`s the words `HOST_IP`,
//! `POD_IP`, `HOSTNAME`, … into the file before starting Vault; here the
//! server does it itself, so it can run as PID 1 without a shell and a
//! config error still names the right line. Only the words the operator
//! lists are replaced, only as whole words, and only when the variable is
//! set and not empty (vault-helm's rule), so a config without the flag is
//! read exactly as written.

/// Replaces each listed word with the value of the same-named environment
/// variable (as read through `env`).
///
/// # Errors
///
/// A message when a name is not a valid placeholder word, or a value holds
/// a character that would break out of an HCL string (`"`, `\`, a newline).
pub(crate) fn expand(
    text: &str,
    names: &[String],
    env: impl Fn(&str) -> Option<String>,
) -> Result<String, String> {
    let mut out = text.to_owned();
    for name in names.iter().map(|n| n.trim()).filter(|n| !n.is_empty()) {
        if !name
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
        {
            return Err(format!(
                "-config-placeholders: {name:?} is not a placeholder word (A-Z, 0-9, _)"
            ));
        }
        let Some(value) = env(name).filter(|v| !v.is_empty()) else {
            continue;
        };
        if value.contains(['"', '\\', '\n', '\r']) {
            return Err(format!(
                "-config-placeholders: the environment variable {name} holds a quote, backslash or line break, which cannot go into the config"
            ));
        }
        out = replace_word(&out, name, &value);
    }
    Ok(out)
}

fn is_word_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// Replaces `word` where it is not part of a longer word.
fn replace_word(text: &str, word: &str, value: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut rest = 0;
    let mut from = 0;
    while let Some(found) = text.get(from..).and_then(|t| t.find(word)) {
        let start = from + found;
        let end = start + word.len();
        let before = start.checked_sub(1).and_then(|i| bytes.get(i).copied());
        let after = bytes.get(end).copied();
        if !before.is_some_and(is_word_byte) && !after.is_some_and(is_word_byte) {
            out.push_str(&text[rest..start]);
            out.push_str(value);
            rest = end;
        }
        from = end;
    }
    out.push_str(&text[rest..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "HOST_IP" => Some("10.0.0.7".into()),
            "POD_IP" => Some("10.1.2.3".into()),
            "EMPTY" => Some(String::new()),
            "BAD" => Some("x\"y".into()),
            _ => None,
        }
    }

    fn names(list: &str) -> Vec<String> {
        list.split(',').map(str::to_owned).collect()
    }

    #[test]
    fn listed_words_are_replaced_as_whole_words() {
        let text = "address = \"HOST_IP:8500\"\napi = \"http://POD_IP:8200\"\nx = \"MY_HOST_IP HOST_IPS\"\n";
        let out = expand(text, &names("HOST_IP,POD_IP"), env).unwrap();
        assert_eq!(
            out,
            "address = \"10.0.0.7:8500\"\napi = \"http://10.1.2.3:8200\"\nx = \"MY_HOST_IP HOST_IPS\"\n"
        );
    }

    #[test]
    fn unlisted_unset_and_empty_variables_leave_the_text_alone() {
        let text = "a = \"HOST_IP\" b = \"HOSTNAME\" c = \"EMPTY\"";
        assert_eq!(expand(text, &[], env).unwrap(), text);
        assert_eq!(expand(text, &names("HOSTNAME,EMPTY"), env).unwrap(), text);
    }

    #[test]
    fn bad_names_and_values_are_refused() {
        assert!(
            expand("x", &names("host_ip"), env)
                .unwrap_err()
                .contains("host_ip")
        );
        assert!(
            expand("BAD", &names("BAD"), env)
                .unwrap_err()
                .contains("BAD")
        );
    }

    proptest::proptest! {
        #[test]
        fn never_panics(text in ".{0,64}", word in "[A-Z_]{1,6}", value in "[a-z0-9.]{0,8}") {
            let _ = replace_word(&text, &word, &value);
        }
    }
}
