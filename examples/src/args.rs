//! Vault-style flag spelling.
//!
//! Vault's and OpenBao's CLIs take long flags with ONE dash (`-key-shares=5`,
//! `-dev`, `-format=json`), and operators paste those commands from runbooks.
//! clap wants two dashes for long flags, so before parsing we rewrite every
//! argument that starts with a single dash and has at least two characters
//! after it (`-dev` → `--dev`, `-config=x.hcl` → `--config=x.hcl`). One-letter
//! short flags (`-h`) and the bare `-` stay as they are, and nothing after a
//! literal `--` is touched, so a value that really starts with a dash can still
//! be passed.

use std::ffi::OsString;

/// Rewrites Vault-style single-dash long flags to clap's double-dash form.
///
/// The first element (the program name) is kept as is.
pub(crate) fn normalize<I>(args: I) -> Vec<OsString>
where
    I: IntoIterator<Item = OsString>,
{
    let mut out = Vec::new();
    let mut passthrough = false;
    for (index, arg) in args.into_iter().enumerate() {
        if index == 0 || passthrough {
            out.push(arg);
            continue;
        }
        if arg == "--" {
            passthrough = true;
            out.push(arg);
            continue;
        }
        out.push(normalize_one(arg));
    }
    out
}

fn normalize_one(arg: OsString) -> OsString {
    let Some(text) = arg.to_str() else {
        return arg;
    };
    let Some(rest) = text.strip_prefix('-') else {
        return arg;
    };
    if rest.starts_with('-') {
        return arg;
    }
    // The flag name is what comes before an `=`; it needs 2+ characters to be
    // a long flag (so `-h` and `-x=1` stay short flags).
    let name = rest.split('=').next().unwrap_or_default();
    if name.chars().count() < 2 {
        return arg;
    }
    OsString::from(format!("-{text}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn norm(args: &[&str]) -> Vec<String> {
        normalize(args.iter().map(OsString::from))
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect()
    }

    #[test]
    fn single_dash_long_flags_gain_a_dash() {
        assert_eq!(
            norm(&[
                "strongroom",
                "operator",
                "init",
                "-key-shares=5",
                "-key-threshold",
                "3"
            ]),
            [
                "strongroom",
                "operator",
                "init",
                "--key-shares=5",
                "--key-threshold",
                "3"
            ]
        );
        assert_eq!(norm(&["x", "-dev"]), ["x", "--dev"]);
        assert_eq!(norm(&["x", "-config=/a/b.hcl"]), ["x", "--config=/a/b.hcl"]);
    }

    #[test]
    fn short_flags_double_dash_and_values_are_untouched() {
        assert_eq!(norm(&["x", "-h"]), ["x", "-h"]);
        assert_eq!(norm(&["x", "-"]), ["x", "-"]);
        assert_eq!(norm(&["x", "--dev"]), ["x", "--dev"]);
        assert_eq!(
            norm(&["x", "kv", "put", "secret/a", "k=-value"]),
            ["x", "kv", "put", "secret/a", "k=-value"]
        );
        assert_eq!(norm(&["x", "-x=1"]), ["x", "-x=1"]);
    }

    #[test]
    fn nothing_after_a_double_dash_is_rewritten() {
        assert_eq!(
            norm(&["x", "operator", "unseal", "--", "-abc"]),
            ["x", "operator", "unseal", "--", "-abc"]
        );
    }

    #[test]
    fn the_program_name_is_kept() {
        assert_eq!(norm(&["-weird-name", "-dev"]), ["-weird-name", "--dev"]);
    }

    proptest! {
        #[test]
        fn never_panics_and_keeps_the_count(args in proptest::collection::vec(".{0,12}", 0..8)) {
            let out = normalize(args.iter().map(OsString::from));
            prop_assert_eq!(out.len(), args.len());
        }
    }
}
