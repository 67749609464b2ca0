//! Vault's CLI output shapes: `Key    Value` tables and `== Title ==`
//! section headers.
//!
//! Scripts and people grep these (`Sealed  true`, `Unseal Progress    1/3`),
//! so the spacing follows Vault's: columns separated by at least four spaces,
//! a `---` underline under each header.

use serde_json::Value;

/// Renders rows under a `Key / Value` header.
pub(crate) fn kv_table(rows: &[(String, String)]) -> String {
    let mut all = vec![
        ("Key".to_owned(), "Value".to_owned()),
        ("---".to_owned(), "-----".to_owned()),
    ];
    all.extend(rows.iter().cloned());
    columns(&all)
}

/// Renders two columns, the first padded to its widest cell plus four spaces.
pub(crate) fn columns(rows: &[(String, String)]) -> String {
    let width = rows
        .iter()
        .map(|(k, _)| k.chars().count())
        .max()
        .unwrap_or(0);
    let mut out = String::new();
    for (key, value) in rows {
        if value.is_empty() {
            out.push_str(key);
        } else {
            out.push_str(key);
            out.push_str(&" ".repeat(width - key.chars().count() + 4));
            out.push_str(value);
        }
        out.push('\n');
    }
    out
}

/// A section header like Vault's (`======= Metadata =======`): the title
/// padded with `=` to `total_len` columns, at least two on each side, an
/// even count.
pub(crate) fn section(title: &str, total_len: usize) -> String {
    let mut signs = total_len.saturating_sub(title.chars().count() + 2);
    if signs == 0 {
        signs = 4;
    }
    if !signs.is_multiple_of(2) {
        signs += 1;
    }
    let bar = "=".repeat(signs / 2);
    format!("{bar} {title} {bar}")
}

/// The header width Vault uses over a Key/Value table: the longest key,
/// four spaces, and `Value`.
pub(crate) fn table_width(rows: &[(String, String)]) -> usize {
    rows.iter()
        .map(|(k, _)| k.chars().count())
        .max()
        .unwrap_or(0)
        + 4
        + 5
}

/// A JSON value the way Vault's table output shows it: strings bare,
/// null as `<nil>`, everything else as compact JSON.
pub(crate) fn show(value: &Value) -> String {
    match value {
        Value::String(s) if s.is_empty() => "n/a".to_owned(),
        Value::String(s) => s.clone(),
        Value::Null => "<nil>".to_owned(),
        other => other.to_string(),
    }
}

/// The rows of a JSON object, sorted by key.
pub(crate) fn object_rows(value: Option<&Value>) -> Vec<(String, String)> {
    let mut rows: Vec<(String, String)> = value
        .and_then(Value::as_object)
        .map(|map| map.iter().map(|(k, v)| (k.clone(), show(v))).collect())
        .unwrap_or_default();
    rows.sort();
    rows
}

/// Pretty JSON followed by a newline.
pub(crate) fn json(value: &Value) -> String {
    let mut text = serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string());
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_pad_to_the_widest_key_plus_four() {
        let table = kv_table(&[
            ("Sealed".into(), "true".into()),
            ("Unseal Progress".into(), "1/3".into()),
        ]);
        assert_eq!(
            table,
            "Key                Value\n---                -----\nSealed             true\nUnseal Progress    1/3\n"
        );
    }

    #[test]
    fn section_headers_match_vaults() {
        let meta = [("custom_metadata".to_owned(), "<nil>".to_owned())];
        assert_eq!(
            section("Metadata", table_width(&meta)),
            "======= Metadata ======="
        );
        assert_eq!(
            section("Secret Path", "secret/data/creds".len()),
            "== Secret Path =="
        );
        assert_eq!(section("Secret Path", "kv/a".len()), "== Secret Path ==");
        let data = [("passcode".to_owned(), "x".to_owned())];
        assert_eq!(section("Data", table_width(&data)), "====== Data ======");
    }

    #[test]
    fn values_render_like_vault() {
        assert_eq!(show(&Value::Null), "<nil>");
        assert_eq!(show(&Value::from("x")), "x");
        assert_eq!(show(&Value::from("")), "n/a");
        assert_eq!(show(&Value::from(3)), "3");
        assert_eq!(show(&Value::from(false)), "false");
    }
}
