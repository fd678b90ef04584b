//! YAML text to a small tree whose every node knows its position.
//!
//! Built from `saphyr_parser` events rather than a ready-made YAML value type because the checks
//! need what those types drop: the position of every key and value, duplicate keys (an error
//! here, "last one wins" elsewhere), and anchors, aliases and tags, which are rejected (a gateway
//! file is read by people; a value defined once and reused by reference is hard to review, and
//! `<<` merge keys are not YAML 1.2).
//!
//! Plain scalars are resolved with the YAML 1.2 core schema: `null`/`~`/empty, `true`/`false`,
//! integers (decimal, `0o`, `0x`), floats (incl. `.inf`, `.nan`); everything else — `on`, `yes`,
//! `no` included — is a string. Quoted and block scalars are always strings.

use std::sync::LazyLock;

use regex::Regex;
use saphyr_parser::{Event, Parser, ScalarStyle, Span, Tag};

use super::diagnostic::{FileId, Pos, Sink};

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Node {
    pub pos: Pos,
    pub kind: Kind,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Kind {
    Scalar(Scalar),
    Seq(Vec<Node>),
    /// Keys are scalars, unique by text, in file order.
    Map(Vec<(Node, Node)>),
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Scalar {
    /// The value as text (unquoted, unescaped, `${VAR}` expanded).
    pub text: String,
    pub value: Value,
    /// Written without quotes (and not as a block scalar): the text was resolved by the schema.
    pub plain: bool,
    /// Where the first character of `text` is, when `text` appears verbatim on one line of the
    /// file; lets checks point at a column inside the value.
    pub text_pos: Option<Pos>,
    /// A problem with this value has already been reported (e.g. an unset `${VAR}`); decoding
    /// skips it silently instead of reporting follow-up errors.
    pub reported: bool,
}

/// The resolved type of a scalar; strings keep their text in [`Scalar::text`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str,
}

impl Node {
    /// The text of a scalar node, for use as a key.
    pub fn key_text(&self) -> &str {
        match &self.kind {
            Kind::Scalar(s) => &s.text,
            Kind::Seq(_) | Kind::Map(_) => "",
        }
    }

    /// The node as JSON (mapping keys as strings); for the merged document shown by the admin API.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match &self.kind {
            Kind::Scalar(s) => match s.value {
                Value::Null => J::Null,
                Value::Bool(b) => J::Bool(b),
                Value::Int(i) => J::from(i),
                Value::Float(f) => serde_json::Number::from_f64(f)
                    .map(J::Number)
                    .unwrap_or_else(|| J::String(s.text.clone())),
                Value::Str => J::String(s.text.clone()),
            },
            Kind::Seq(items) => J::Array(items.iter().map(Node::to_json).collect()),
            Kind::Map(entries) => J::Object(
                entries
                    .iter()
                    .map(|(k, v)| (k.key_text().to_owned(), v.to_json()))
                    .collect(),
            ),
        }
    }
}

/// Resolves a plain scalar with the YAML 1.2 core schema.
pub(crate) fn resolve(text: &str) -> Value {
    static FLOAT: LazyLock<Option<Regex>> =
        LazyLock::new(|| Regex::new(r"^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$").ok());
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return Value::Null,
        "true" | "True" | "TRUE" => return Value::Bool(true),
        "false" | "False" | "FALSE" => return Value::Bool(false),
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => {
            return Value::Float(f64::INFINITY);
        }
        "-.inf" | "-.Inf" | "-.INF" => return Value::Float(f64::NEG_INFINITY),
        ".nan" | ".NaN" | ".NAN" => return Value::Float(f64::NAN),
        _ => {}
    }
    let unsigned = text.strip_prefix(['-', '+']).unwrap_or(text);
    if !unsigned.is_empty() && unsigned.bytes().all(|b| b.is_ascii_digit()) {
        return match text.parse::<i64>() {
            Ok(i) => Value::Int(i),
            // Too large for i64: still a number; range checks report it.
            Err(_) => text.parse::<f64>().map_or(Value::Str, Value::Float),
        };
    }
    let radix = |digits: &str, radix: u32| {
        if !digits.is_empty() && digits.chars().all(|c| c.is_digit(radix)) {
            i64::from_str_radix(digits, radix).ok().map(Value::Int)
        } else {
            None
        }
    };
    if let Some(v) = text.strip_prefix("0o").and_then(|d| radix(d, 8)) {
        return v;
    }
    if let Some(v) = text.strip_prefix("0x").and_then(|d| radix(d, 16)) {
        return v;
    }
    // Every float starts with a sign, a dot or a digit: most strings skip the regex.
    let numeric_start = text
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_digit() || matches!(b, b'-' | b'+' | b'.'));
    if numeric_start
        && FLOAT.as_ref().is_some_and(|re| re.is_match(text))
        && let Ok(f) = text.parse::<f64>()
    {
        return Value::Float(f);
    }
    Value::Str
}

/// What a file turned out to hold.
pub(crate) enum Parsed {
    /// The document's root; `None` for a file without content (empty, comments only, `null`).
    Document(Option<Node>),
    /// A syntax error, already reported; nothing of the file can be used.
    SyntaxError,
}

/// Parses one YAML file. Problems are reported to `sink`; a syntax error stops the file, other
/// problems (duplicate keys, anchors, several documents) drop the offending part and go on.
pub(crate) fn parse(src: &str, file: FileId, sink: &Sink) -> Parsed {
    let mut builder = Builder {
        file,
        sink,
        chars: src.chars().collect(),
        stack: Vec::new(),
        root: None,
        documents: 0,
    };
    let mut parser = Parser::new_from_str(src);
    while let Some(event) = parser.next_event() {
        match event {
            Ok((event, span)) => builder.event(event, span),
            Err(e) => {
                let m = e.marker();
                let pos = Pos {
                    file,
                    line: u32::try_from(m.line()).unwrap_or(u32::MAX).max(1),
                    col: u32::try_from(m.col() + 1).unwrap_or(u32::MAX),
                };
                sink.error(pos, format!("YAML syntax error: {}", e.info()));
                return Parsed::SyntaxError;
            }
        }
    }
    let root = builder.root.filter(|n| {
        !matches!(
            &n.kind,
            Kind::Scalar(Scalar {
                value: Value::Null,
                ..
            })
        )
    });
    Parsed::Document(root)
}

enum Frame {
    Seq(Pos, Vec<Node>),
    Map(Pos, Vec<(Node, Node)>, KeyState),
}

enum KeyState {
    /// The next node is a key.
    Key,
    /// The next node is the value of this key.
    Value(Node),
    /// The next node is the value of a dropped key: drop it too.
    Skip,
}

struct Builder<'a> {
    file: FileId,
    sink: &'a Sink,
    chars: Vec<char>,
    stack: Vec<Frame>,
    root: Option<Node>,
    documents: usize,
}

impl Builder<'_> {
    fn pos(&self, span: Span) -> Pos {
        Pos {
            file: self.file,
            line: u32::try_from(span.start.line()).unwrap_or(u32::MAX),
            col: u32::try_from(span.start.col() + 1).unwrap_or(u32::MAX),
        }
    }

    fn event(&mut self, event: Event<'_>, span: Span) {
        let pos = self.pos(span);
        match event {
            Event::Nothing | Event::StreamStart | Event::StreamEnd | Event::DocumentEnd => {}
            Event::DocumentStart(_) => {
                self.documents += 1;
                if self.documents == 2 {
                    self.sink.error(
                        pos,
                        "a file holds one YAML document: put further documents in files of \
                         their own (a directory of files is merged)",
                    );
                }
            }
            Event::Alias(_) => {
                self.sink.error(
                    pos,
                    "YAML aliases (`*name`) are not supported: write the value out",
                );
                self.push(None);
            }
            Event::Scalar(text, style, anchor, tag) => {
                self.check_anchor_and_tag(pos, anchor, tag.as_deref());
                let plain = style == ScalarStyle::Plain;
                let value = if plain { resolve(&text) } else { Value::Str };
                let text_pos = self.text_pos(&text, style, span);
                let node = Node {
                    pos,
                    kind: Kind::Scalar(Scalar {
                        text: text.into_owned(),
                        value,
                        plain,
                        text_pos,
                        reported: false,
                    }),
                };
                self.push(Some(node));
            }
            Event::SequenceStart(anchor, tag) => {
                self.check_anchor_and_tag(pos, anchor, tag.as_deref());
                self.stack.push(Frame::Seq(pos, Vec::new()));
            }
            Event::MappingStart(anchor, tag) => {
                self.check_anchor_and_tag(pos, anchor, tag.as_deref());
                self.stack.push(Frame::Map(pos, Vec::new(), KeyState::Key));
            }
            Event::SequenceEnd | Event::MappingEnd => {
                let node = match self.stack.pop() {
                    Some(Frame::Seq(pos, items)) => Node {
                        pos,
                        kind: Kind::Seq(items),
                    },
                    Some(Frame::Map(pos, entries, _)) => Node {
                        pos,
                        kind: Kind::Map(entries),
                    },
                    // The parser balances start and end events; nothing to close otherwise.
                    None => return,
                };
                self.push(Some(node));
            }
        }
    }

    fn check_anchor_and_tag(&self, pos: Pos, anchor: usize, tag: Option<&Tag>) {
        if anchor != 0 {
            self.sink.error(
                pos,
                "YAML anchors (`&name`) are not supported: write the value out",
            );
        }
        if let Some(tag) = tag {
            let shown = if tag.handle == "tag:yaml.org,2002:" {
                format!("!!{}", tag.suffix)
            } else {
                format!("{}{}", tag.handle, tag.suffix)
            };
            self.sink.error(
                pos,
                format!(
                    "YAML tags (`{shown}`) are not supported: quote a value to make it a string"
                ),
            );
        }
    }

    /// Where the scalar's text starts, if the source shows it verbatim on one line.
    fn text_pos(&self, text: &str, style: ScalarStyle, span: Span) -> Option<Pos> {
        if text.contains('\n') {
            return None;
        }
        let (start, end) = (span.start.index(), span.end.index());
        let quote = match style {
            ScalarStyle::Plain => 0,
            ScalarStyle::SingleQuoted | ScalarStyle::DoubleQuoted => 1,
            ScalarStyle::Literal | ScalarStyle::Folded => return None,
        };
        let inner = self.chars.get(start + quote..end.checked_sub(quote)?)?;
        (inner.iter().copied().eq(text.chars())).then(|| self.pos(span).right(quote))
    }

    fn push(&mut self, node: Option<Node>) {
        let Some(frame) = self.stack.last_mut() else {
            if self.documents <= 1 && self.root.is_none() {
                self.root = node;
            }
            return;
        };
        match frame {
            Frame::Seq(_, items) => items.extend(node),
            Frame::Map(_, entries, state) => {
                *state = match (std::mem::replace(state, KeyState::Key), node) {
                    (KeyState::Key, None) => KeyState::Skip,
                    (KeyState::Key, Some(key)) => match &key.kind {
                        Kind::Scalar(s) => {
                            if let Some((first, _)) =
                                entries.iter().find(|(k, _)| k.key_text() == s.text)
                            {
                                self.sink.error(
                                    key.pos,
                                    format!(
                                        "duplicate key `{}` (first given at line {}, column {})",
                                        s.text, first.pos.line, first.pos.col
                                    ),
                                );
                                KeyState::Skip
                            } else {
                                KeyState::Value(key)
                            }
                        }
                        Kind::Seq(_) | Kind::Map(_) => {
                            self.sink
                                .error(key.pos, "a mapping key must be a plain string");
                            KeyState::Skip
                        }
                    },
                    (KeyState::Value(key), Some(value)) => {
                        entries.push((key, value));
                        KeyState::Key
                    }
                    (KeyState::Value(_) | KeyState::Skip, None) | (KeyState::Skip, Some(_)) => {
                        KeyState::Key
                    }
                };
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Parses `src` as file 0 and returns the root and the reported problems as `L:C: message`.
    pub(crate) fn parse_str(src: &str) -> (Option<Node>, Vec<String>) {
        let mut sink = Sink::default();
        let file = sink.add_file("t.yaml".into());
        let root = match parse(src, file, &sink) {
            Parsed::Document(root) => root,
            Parsed::SyntaxError => None,
        };
        let errors = sink
            .into_diagnostics()
            .into_iter()
            .map(|d| format!("{}:{}: {}", d.line, d.col, d.message))
            .collect();
        (root, errors)
    }

    fn scalar(node: &Node) -> &Scalar {
        match &node.kind {
            Kind::Scalar(s) => s,
            other => panic!("not a scalar: {other:?}"),
        }
    }

    #[test]
    fn core_schema_resolution() {
        assert_eq!(resolve(""), Value::Null);
        assert_eq!(resolve("~"), Value::Null);
        assert_eq!(resolve("null"), Value::Null);
        assert_eq!(resolve("true"), Value::Bool(true));
        assert_eq!(resolve("FALSE"), Value::Bool(false));
        assert_eq!(resolve("on"), Value::Str);
        assert_eq!(resolve("yes"), Value::Str);
        assert_eq!(resolve("no"), Value::Str);
        assert_eq!(resolve("42"), Value::Int(42));
        assert_eq!(resolve("-7"), Value::Int(-7));
        assert_eq!(resolve("0x1F"), Value::Int(31));
        assert_eq!(resolve("0o17"), Value::Int(15));
        assert_eq!(resolve("1.5"), Value::Float(1.5));
        assert_eq!(resolve("1e3"), Value::Float(1000.0));
        assert_eq!(resolve("30s"), Value::Str);
        assert_eq!(resolve("inf"), Value::Str);
        assert_eq!(resolve("0.0.0.0:80"), Value::Str);
        assert_eq!(resolve(".inf"), Value::Float(f64::INFINITY));
    }

    #[test]
    fn positions_of_keys_and_values() {
        let src = "a:\n  - name: x\n    port: 80\nb: {c: 'q', d: \"r\"}\n";
        let (root, errors) = parse_str(src);
        assert!(errors.is_empty(), "{errors:?}");
        let root = root.expect("root");
        let Kind::Map(top) = &root.kind else {
            panic!("map")
        };
        assert_eq!((top[0].0.pos.line, top[0].0.pos.col), (1, 1));
        let Kind::Seq(items) = &top[0].1.kind else {
            panic!("seq")
        };
        let Kind::Map(item) = &items[0].kind else {
            panic!("map")
        };
        assert_eq!((items[0].pos.line, items[0].pos.col), (2, 5));
        assert_eq!((item[1].1.pos.line, item[1].1.pos.col), (3, 11));
        assert_eq!(scalar(&item[1].1).value, Value::Int(80));
        let Kind::Map(flow) = &top[1].1.kind else {
            panic!("map")
        };
        let c = scalar(&flow[0].1);
        assert_eq!((flow[0].1.pos.line, flow[0].1.pos.col), (4, 8));
        assert_eq!(c.text_pos.map(|p| p.col), Some(9));
        assert_eq!(c.value, Value::Str);
    }

    #[test]
    fn text_pos_only_when_verbatim() {
        let (root, _) = parse_str("a: \"x\\ty\"\nb: plain text\nc: |\n  block\n");
        let Some(Node {
            kind: Kind::Map(m), ..
        }) = root
        else {
            panic!("map")
        };
        assert_eq!(scalar(&m[0].1).text_pos, None);
        assert_eq!(scalar(&m[1].1).text_pos.map(|p| p.col), Some(4));
        assert_eq!(scalar(&m[2].1).text_pos, None);
    }

    #[test]
    fn duplicate_keys_are_errors_and_the_first_is_kept() {
        let (root, errors) = parse_str("a: 1\nb: 2\na: 3\n");
        assert_eq!(
            errors,
            ["3:1: duplicate key `a` (first given at line 1, column 1)"]
        );
        let Some(Node {
            kind: Kind::Map(m), ..
        }) = root
        else {
            panic!("map")
        };
        assert_eq!(m.len(), 2);
        assert_eq!(scalar(&m[0].1).value, Value::Int(1));
    }

    #[test]
    fn anchors_aliases_tags_are_rejected() {
        let (root, errors) = parse_str("a: &x 1\nb: *x\nc: !!str 5\nd: 4\n");
        assert_eq!(
            errors,
            [
                "1:4: YAML anchors (`&name`) are not supported: write the value out",
                "2:4: YAML aliases (`*name`) are not supported: write the value out",
                "3:4: YAML tags (`!!str`) are not supported: quote a value to make it a string",
            ]
        );
        let Some(Node {
            kind: Kind::Map(m), ..
        }) = root
        else {
            panic!("map")
        };
        // The alias and its key are dropped; the rest is kept.
        let keys: Vec<&str> = m.iter().map(|(k, _)| k.key_text()).collect();
        assert_eq!(keys, ["a", "c", "d"]);
    }

    #[test]
    fn syntax_errors_have_positions() {
        let (root, errors) = parse_str("a: 1\nb: [1, 2\n");
        assert!(root.is_none());
        assert_eq!(errors.len(), 1);
        assert!(
            errors[0].starts_with("3:1: YAML syntax error: "),
            "{errors:?}"
        );
    }

    #[test]
    fn empty_files_and_several_documents() {
        assert_eq!(parse_str(""), (None, vec![]));
        assert_eq!(parse_str("# only a comment\n"), (None, vec![]));
        assert_eq!(parse_str("---\n"), (None, vec![]));
        let (root, errors) = parse_str("a: 1\n---\nb: 2\n");
        assert!(root.is_some());
        assert_eq!(
            errors,
            [
                "2:1: a file holds one YAML document: put further documents in files of their own (a directory of files is merged)"
            ]
        );
    }

    #[test]
    fn to_json() {
        let (root, _) = parse_str("a: [1, 1.5, true, ~, x]\n'b': {c: \"d\"}\n");
        assert_eq!(
            root.expect("root").to_json(),
            serde_json::json!({"a": [1, 1.5, true, null, "x"], "b": {"c": "d"}})
        );
    }
}
