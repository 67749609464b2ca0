//! A reader for the part of HCL version 1 that Vault policies use, and for
//! the JSON form of the same documents.
//!
//! Vault parses policies with HCL1 (not HCL2): `path "x" { a = 1  b = 2 }`
//! on one line, commas between object items, heredocs, `#`, `//` and
//! `/* */` comments, and JSON input are all valid there, so a general HCL2
//! parser would refuse policy files that Vault accepts. The reader turns
//! text into a small tree ([`Node`]) that keeps repeated keys in order (two
//! `path "a"` blocks stay two items) and the line of each item for error
//! messages.
//!
//! Input is untrusted (anyone with `update` on `sys/policies/acl/*`): every
//! failure is an [`HclError`], nesting is bounded, and nothing panics.

use serde_json::Value;

/// How deep objects and lists may nest before the input is refused; policies
/// need four levels, this keeps hostile input from exhausting the stack.
const MAX_DEPTH: usize = 32;

/// Why a document did not parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HclError {
    pub(crate) line: usize,
    pub(crate) message: String,
}

impl std::fmt::Display for HclError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

/// A parsed value.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Node {
    /// A string (quoted or heredoc).
    Str(String),
    /// A number (kept as JSON so `5` and `5.0` compare like JSON values).
    Number(serde_json::Number),
    /// `true` / `false`.
    Bool(bool),
    /// `[a, b]`.
    List(Vec<Node>),
    /// `{ key = value ... }` or a block body.
    Object(Vec<Item>),
}

/// One object item: `keys... = value` or `keys... { body }`. A block
/// `path "a" { }` has the keys `["path", "a"]`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Item {
    pub(crate) keys: Vec<String>,
    pub(crate) value: Node,
    pub(crate) line: usize,
}

impl Node {
    /// The value as JSON, for parameter constraints compared with request
    /// bodies. Objects become maps (a repeated key keeps its last value).
    pub(crate) fn to_json(&self) -> Value {
        match self {
            Self::Str(s) => Value::String(s.clone()),
            Self::Number(n) => Value::Number(n.clone()),
            Self::Bool(b) => Value::Bool(*b),
            Self::List(items) => Value::Array(items.iter().map(Node::to_json).collect()),
            Self::Object(items) => Value::Object(
                items
                    .iter()
                    .map(|i| (i.keys.join("."), i.value.to_json()))
                    .collect(),
            ),
        }
    }

    /// A short name of the value's type for error messages.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Self::Str(_) => "string",
            Self::Number(_) => "number",
            Self::Bool(_) => "bool",
            Self::List(_) => "list",
            Self::Object(_) => "object",
        }
    }
}

/// Parses a policy document: JSON when it starts with `{`, HCL otherwise.
/// Returns the top-level items.
pub(crate) fn parse(text: &str) -> Result<Vec<Item>, HclError> {
    if text.trim_start().starts_with('{') {
        let value: Value = serde_json::from_str(text).map_err(|e| HclError {
            line: e.line(),
            message: format!("invalid JSON: {e}"),
        })?;
        return match from_json(&value, 0)? {
            Node::Object(items) => Ok(items),
            _ => Err(HclError {
                line: 1,
                message: "a JSON policy must be an object".into(),
            }),
        };
    }
    let mut parser = Parser {
        src: text.as_bytes(),
        pos: 0,
        line: 1,
    };
    let items = parser.body(0, false)?;
    Ok(items)
}

fn from_json(value: &Value, depth: usize) -> Result<Node, HclError> {
    if depth > MAX_DEPTH {
        return Err(HclError {
            line: 1,
            message: "nesting is too deep".into(),
        });
    }
    Ok(match value {
        // JSON null has no HCL counterpart; Vault's decoder treats it as
        // an absent value, an empty string is the closest harmless form.
        Value::Null => Node::Str(String::new()),
        Value::Bool(b) => Node::Bool(*b),
        Value::Number(n) => Node::Number(n.clone()),
        Value::String(s) => Node::Str(s.clone()),
        Value::Array(items) => Node::List(
            items
                .iter()
                .map(|v| from_json(v, depth + 1))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(map) => Node::Object(
            map.iter()
                .map(|(k, v)| {
                    Ok(Item {
                        keys: vec![k.clone()],
                        value: from_json(v, depth + 1)?,
                        line: 1,
                    })
                })
                .collect::<Result<_, HclError>>()?,
        ),
    })
}

struct Parser<'a> {
    src: &'a [u8],
    pos: usize,
    line: usize,
}

impl Parser<'_> {
    fn error<T>(&self, message: impl Into<String>) -> Result<T, HclError> {
        Err(HclError {
            line: self.line,
            message: message.into(),
        })
    }

    fn peek(&self) -> Option<u8> {
        self.src.get(self.pos).copied()
    }

    fn bump(&mut self) -> Option<u8> {
        let b = self.peek()?;
        self.pos += 1;
        if b == b'\n' {
            self.line += 1;
        }
        Some(b)
    }

    fn starts_with(&self, s: &[u8]) -> bool {
        self.src
            .get(self.pos..)
            .is_some_and(|rest| rest.starts_with(s))
    }

    /// Skips spaces, newlines and comments.
    fn skip_trivia(&mut self) -> Result<(), HclError> {
        loop {
            match self.peek() {
                Some(b' ' | b'\t' | b'\r' | b'\n') => {
                    self.bump();
                }
                Some(b'#') => self.skip_line(),
                Some(b'/') if self.starts_with(b"//") => self.skip_line(),
                Some(b'/') if self.starts_with(b"/*") => {
                    self.pos += 2;
                    loop {
                        if self.starts_with(b"*/") {
                            self.pos += 2;
                            break;
                        }
                        if self.bump().is_none() {
                            return self.error("unterminated comment");
                        }
                    }
                }
                _ => return Ok(()),
            }
        }
    }

    fn skip_line(&mut self) {
        while let Some(b) = self.peek() {
            if b == b'\n' {
                break;
            }
            self.pos += 1;
        }
    }

    /// Object items until `}` (when `nested`) or the end of input.
    fn body(&mut self, depth: usize, nested: bool) -> Result<Vec<Item>, HclError> {
        if depth > MAX_DEPTH {
            return self.error("nesting is too deep");
        }
        let mut items = Vec::new();
        loop {
            self.skip_trivia()?;
            match self.peek() {
                None if nested => return self.error("expected '}' before the end of input"),
                None => return Ok(items),
                Some(b'}') if nested => {
                    self.bump();
                    return Ok(items);
                }
                Some(b',') if !items.is_empty() => {
                    // HCL1 allows commas between object items.
                    self.bump();
                }
                _ => items.push(self.item(depth)?),
            }
        }
    }

    fn item(&mut self, depth: usize) -> Result<Item, HclError> {
        let line = self.line;
        let mut keys = Vec::new();
        loop {
            self.skip_trivia()?;
            match self.peek() {
                Some(b'"') => keys.push(self.string()?),
                Some(b) if is_ident_start(b) => keys.push(self.ident()),
                Some(b'=') if !keys.is_empty() => {
                    self.bump();
                    let value = self.value(depth + 1)?;
                    return Ok(Item { keys, value, line });
                }
                Some(b'{') if !keys.is_empty() => {
                    self.bump();
                    let value = Node::Object(self.body(depth + 1, true)?);
                    return Ok(Item { keys, value, line });
                }
                Some(b) => {
                    return self.error(format!(
                        "unexpected {:?}, expected a key, '=' or '{{'",
                        char::from(b)
                    ));
                }
                None => return self.error("unexpected end of input after a key"),
            }
        }
    }

    fn value(&mut self, depth: usize) -> Result<Node, HclError> {
        if depth > MAX_DEPTH {
            return self.error("nesting is too deep");
        }
        self.skip_trivia()?;
        match self.peek() {
            Some(b'"') => Ok(Node::Str(self.string()?)),
            Some(b'<') if self.starts_with(b"<<") => Ok(Node::Str(self.heredoc()?)),
            Some(b'[') => {
                self.bump();
                let mut items = Vec::new();
                loop {
                    self.skip_trivia()?;
                    match self.peek() {
                        Some(b']') => {
                            self.bump();
                            return Ok(Node::List(items));
                        }
                        None => return self.error("expected ']' before the end of input"),
                        _ => {}
                    }
                    items.push(self.value(depth + 1)?);
                    self.skip_trivia()?;
                    match self.peek() {
                        Some(b',') => {
                            self.bump();
                        }
                        Some(b']') => {}
                        _ => return self.error("expected ',' or ']' in a list"),
                    }
                }
            }
            Some(b'{') => {
                self.bump();
                Ok(Node::Object(self.body(depth + 1, true)?))
            }
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(b) if is_ident_start(b) => match self.ident().as_str() {
                "true" => Ok(Node::Bool(true)),
                "false" => Ok(Node::Bool(false)),
                other => self.error(format!("unknown value {other:?}; strings need quotes")),
            },
            Some(b) => self.error(format!("unexpected {:?}, expected a value", char::from(b))),
            None => self.error("expected a value before the end of input"),
        }
    }

    fn ident(&mut self) -> String {
        let start = self.pos;
        while self
            .peek()
            .is_some_and(|b| is_ident_start(b) || b.is_ascii_digit() || b == b'-' || b == b'.')
        {
            self.pos += 1;
        }
        String::from_utf8_lossy(self.src.get(start..self.pos).unwrap_or_default()).into_owned()
    }

    fn number(&mut self) -> Result<Node, HclError> {
        let start = self.pos;
        if self.peek() == Some(b'-') {
            self.pos += 1;
        }
        while self
            .peek()
            .is_some_and(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'+' | b'-'))
        {
            self.pos += 1;
        }
        let text = std::str::from_utf8(self.src.get(start..self.pos).unwrap_or_default())
            .unwrap_or_default();
        if let Ok(i) = text.parse::<i64>() {
            return Ok(Node::Number(i.into()));
        }
        match text
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
        {
            Some(n) => Ok(Node::Number(n)),
            None => self.error(format!("invalid number {text:?}")),
        }
    }

    /// A double-quoted string with HCL's escapes.
    fn string(&mut self) -> Result<String, HclError> {
        self.bump(); // the opening quote
        let mut out: Vec<u8> = Vec::new();
        loop {
            match self.bump() {
                None => return self.error("unterminated string"),
                Some(b'\n') => return self.error("newline in a quoted string"),
                Some(b'"') => break,
                Some(b'\\') => match self.bump() {
                    Some(b'n') => out.push(b'\n'),
                    Some(b't') => out.push(b'\t'),
                    Some(b'r') => out.push(b'\r'),
                    Some(b'"') => out.push(b'"'),
                    Some(b'\\') => out.push(b'\\'),
                    Some(b'u') => {
                        let hex = self.src.get(self.pos..self.pos + 4).unwrap_or_default();
                        let code = std::str::from_utf8(hex)
                            .ok()
                            .and_then(|h| u32::from_str_radix(h, 16).ok())
                            .and_then(char::from_u32);
                        let Some(c) = code else {
                            return self.error("invalid \\u escape in a string");
                        };
                        self.pos += 4;
                        let mut buf = [0u8; 4];
                        out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                    }
                    _ => return self.error("invalid escape in a string"),
                },
                Some(b) => out.push(b),
            }
        }
        String::from_utf8(out).or_else(|_| self.error("a string is not valid UTF-8"))
    }

    /// `<<EOF ... EOF` (or `<<-EOF`, whose lines may be indented).
    fn heredoc(&mut self) -> Result<String, HclError> {
        self.pos += 2;
        let indented = self.peek() == Some(b'-');
        if indented {
            self.pos += 1;
        }
        let marker = self.ident();
        if marker.is_empty() || self.bump() != Some(b'\n') {
            return self.error("a heredoc needs a marker and a newline after <<");
        }
        let mut lines = Vec::new();
        loop {
            let start = self.pos;
            if start >= self.src.len() {
                return self.error(format!("heredoc not closed by {marker:?}"));
            }
            self.skip_line();
            let line = self.src.get(start..self.pos).unwrap_or_default();
            self.bump();
            let text = String::from_utf8_lossy(line);
            let text = text.trim_end_matches('\r');
            if text.trim() == marker && (indented || text == marker) {
                break;
            }
            lines.push(text.to_owned());
        }
        if indented {
            let indent = lines
                .iter()
                .filter(|l| !l.trim().is_empty())
                .map(|l| l.len() - l.trim_start().len())
                .min()
                .unwrap_or(0);
            for line in &mut lines {
                *line = line.get(indent..).unwrap_or_default().to_owned();
            }
        }
        let mut out = lines.join("\n");
        out.push('\n');
        Ok(out)
    }
}

fn is_ident_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_'
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn keys(items: &[Item]) -> Vec<Vec<String>> {
        items.iter().map(|i| i.keys.clone()).collect()
    }

    #[test]
    fn blocks_attributes_and_one_liners() {
        let items = parse(
            "# comment\npath \"secret/*\" { capabilities = [\"read\", \"list\",] policy = \"read\" }\n\
             // another\npath \"a\" {\n  allowed_parameters = { \"x\" = [1, true, \"y\"] }\n}\n/* block\ncomment */",
        )
        .unwrap();
        assert_eq!(keys(&items), [vec!["path", "secret/*"], vec!["path", "a"]]);
        assert_eq!(items[1].line, 4);
        let Node::Object(body) = &items[0].value else {
            panic!("block body")
        };
        assert_eq!(body.len(), 2);
        assert_eq!(
            body[0].value,
            Node::List(vec![Node::Str("read".into()), Node::Str("list".into())])
        );
        let Node::Object(body) = &items[1].value else {
            panic!("block body")
        };
        assert_eq!(
            body[0].value.to_json(),
            serde_json::json!({"x": [1, true, "y"]})
        );
    }

    #[test]
    fn commas_between_items_and_heredocs() {
        let items =
            parse("a = 1, b = \"x\\\"y\"\nc = <<EOT\nline1\n  line2\nEOT\nd = -2.5").unwrap();
        assert_eq!(items.len(), 4);
        assert_eq!(items[1].value, Node::Str("x\"y".into()));
        assert_eq!(items[2].value, Node::Str("line1\n  line2\n".into()));
        assert_eq!(items[3].value.to_json(), serde_json::json!(-2.5));
        let items = parse("c = <<-EOT\n    a\n      b\n    EOT\n").unwrap();
        assert_eq!(items[0].value, Node::Str("a\n  b\n".into()));
    }

    #[test]
    fn json_documents() {
        let items =
            parse(r#" {"path": {"a/*": {"capabilities": ["read"]}}, "name": "x"}"#).unwrap();
        let mut found = keys(&items);
        found.sort();
        assert_eq!(found, [vec!["name"], vec!["path"]]);
    }

    #[test]
    fn errors_name_the_line() {
        for bad in [
            "path \"a\" {",
            "path \"a\" { capabilities = [\"read\" }",
            "path \"a\" { x = bare }",
            "path \"a",
            "= 1",
            "a = <<EOT\nno end",
            "/* open",
            "a = \"\\q\"",
            "{\"path\": ",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} parsed");
        }
        let err = parse("a = 1\n\nb = ?").unwrap_err();
        assert_eq!(err.line, 3);
    }

    #[test]
    fn deep_nesting_is_refused_not_overflowed() {
        let deep = format!("a = {}{}", "[".repeat(10_000), "]".repeat(10_000));
        assert!(parse(&deep).is_err());
        let deep = format!("a {}{}", "{ b ".repeat(10_000), "}".repeat(10_000));
        assert!(parse(&deep).is_err());
        let deep = format!("{}{}", "{\"a\":".repeat(100), "}".repeat(100));
        assert!(parse(&deep).is_err());
    }

    proptest! {
        #[test]
        fn arbitrary_text_never_panics(text in "\\PC{0,200}") {
            let _ = parse(&text);
        }

        #[test]
        fn policy_shaped_text_never_panics(
            parts in proptest::collection::vec(
                prop_oneof![
                    Just("path"), Just("\"a/*\""), Just("{"), Just("}"), Just("["), Just("]"),
                    Just("="), Just(","), Just("capabilities"), Just("\"read\""), Just("<<EOF\n"),
                    Just("EOF\n"), Just("#"), Just("\n"), Just("1"), Just("true"), Just("/*"),
                ],
                0..40,
            )
        ) {
            let _ = parse(&parts.join(" "));
        }
    }
}
