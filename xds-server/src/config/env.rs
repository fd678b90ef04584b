//! `${VAR}` and `${VAR:-default}` in string values, expanded on the tree before decoding.
//!
//! Expanding the tree rather than the file text keeps YAML structure out of the variables' reach
//! (a value with a `:` or a newline cannot inject keys) and keeps every position exact.
//! Only values are expanded, never keys. `${VAR:-default}` uses the default when `VAR` is unset
//! or empty (as in POSIX shells and docker compose); `${VAR}` with `VAR` unset is an error;
//! `$${` writes a literal `${`. A plain (unquoted) value that contained a variable is resolved
//! again after expansion, so `weight: ${WEIGHT:-2}` is the integer 2 and `"${X}"` stays a string.

use super::diagnostic::Sink;
use super::yaml::{Kind, Node, Value, resolve};

/// A lookup of environment variables (`std::env::var` in production, a map in tests).
pub(crate) type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

/// Expands every string value under `node`, reporting problems at the value.
pub(crate) fn expand(node: &mut Node, env: Env<'_>, sink: &Sink) {
    match &mut node.kind {
        Kind::Seq(items) => items.iter_mut().for_each(|n| expand(n, env, sink)),
        Kind::Map(entries) => entries.iter_mut().for_each(|(_, v)| expand(v, env, sink)),
        Kind::Scalar(s) => {
            if s.value != Value::Str || !s.text.contains("${") {
                return;
            }
            match expand_text(&s.text, env) {
                Ok(text) => {
                    if s.plain {
                        s.value = resolve(&text);
                    }
                    s.text = text;
                    s.text_pos = None;
                }
                Err(problems) => {
                    for (offset, message) in problems {
                        let pos = s.text_pos.map_or(node.pos, |p| p.right(offset));
                        sink.error(pos, message);
                    }
                    s.reported = true;
                }
            }
        }
    }
}

/// Expands one string; on failure, every problem with its character offset in `text`.
fn expand_text(text: &str, env: Env<'_>) -> Result<String, Vec<(usize, String)>> {
    let mut out = String::with_capacity(text.len());
    let mut problems = Vec::new();
    let mut rest = text;
    let offset_of = |rest: &str| text[..text.len() - rest.len()].chars().count();
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let at = &rest[i..];
        if let Some(after) = at.strip_prefix("$${") {
            out.push_str("${");
            rest = after;
        } else if let Some(after) = at.strip_prefix("${") {
            let Some(end) = after.find('}') else {
                problems.push((
                    offset_of(at),
                    "unterminated `${`: write `${NAME}`, or `$${` for a literal `${`".to_owned(),
                ));
                rest = "";
                break;
            };
            let inner = &after[..end];
            let (name, default) = match inner.split_once(":-") {
                Some((name, default)) => (name, Some(default)),
                None => (inner, None),
            };
            if !valid_name(name) {
                problems.push((
                    offset_of(at),
                    format!(
                        "invalid environment variable reference `${{{inner}}}`: write \
                         `${{NAME}}` or `${{NAME:-default}}` (NAME: letters, digits, `_`)"
                    ),
                ));
            } else {
                match (env(name), default) {
                    (Some(v), Some(d)) if v.is_empty() => out.push_str(d),
                    (Some(v), _) => out.push_str(&v),
                    (None, Some(d)) => out.push_str(d),
                    (None, None) => problems.push((
                        offset_of(at),
                        format!(
                            "environment variable `{name}` is not set (write `${{{name}:-default}}` \
                             to give a default)"
                        ),
                    )),
                }
            }
            rest = &after[end + 1..];
        } else {
            out.push('$');
            rest = &at[1..];
        }
    }
    out.push_str(rest);
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(problems)
    }
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "HOST" => Some("10.0.0.1".into()),
            "EMPTY" => Some(String::new()),
            "N" => Some("7".into()),
            _ => None,
        }
    }

    fn ok(text: &str) -> String {
        expand_text(text, &env).expect("expands")
    }

    #[test]
    fn variables_defaults_and_escapes() {
        assert_eq!(ok("${HOST}:8080"), "10.0.0.1:8080");
        assert_eq!(ok("${MISSING:-127.0.0.1}:1"), "127.0.0.1:1");
        assert_eq!(ok("${EMPTY:-x}"), "x");
        assert_eq!(ok("[${EMPTY}]"), "[]");
        assert_eq!(ok("${HOST:-x}"), "10.0.0.1");
        assert_eq!(ok("$${HOST}"), "${HOST}");
        assert_eq!(ok("cost: $5, $HOST"), "cost: $5, $HOST");
        assert_eq!(ok("${MISSING:-}"), "");
        assert_eq!(ok("${N}${N}"), "77");
    }

    #[test]
    fn problems_with_offsets() {
        assert_eq!(
            expand_text("a ${NOPE} b ${ALSO_NOPE}", &env),
            Err(vec![
                (
                    2,
                    "environment variable `NOPE` is not set (write `${NOPE:-default}` to give a default)"
                        .to_owned()
                ),
                (
                    12,
                    "environment variable `ALSO_NOPE` is not set (write `${ALSO_NOPE:-default}` to give a default)"
                        .to_owned()
                ),
            ])
        );
        assert_eq!(
            expand_text("x${HOST", &env),
            Err(vec![(
                1,
                "unterminated `${`: write `${NAME}`, or `$${` for a literal `${`".to_owned()
            )])
        );
        assert_eq!(
            expand_text("${1X}", &env),
            Err(vec![(
                0,
                "invalid environment variable reference `${1X}`: write `${NAME}` or `${NAME:-default}` (NAME: letters, digits, `_`)"
                    .to_owned()
            )])
        );
    }
}
