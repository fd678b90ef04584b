//! Path templates, checked against the syntax of Envoy's `uri_template` extension so that a
//! template vrata accepts is one Envoy accepts.
//!
//! Match template: `/` then segments separated by `/`. A segment is a literal, `*` (one
//! segment), `**` (any number of segments; nothing with `*` may follow it), or a variable
//! `{name}` / `{name=*}` / `{name=**}` / `{name=lit/*}`. The last segment may be followed by a
//! literal suffix (`/{file}.m4s`), and the template may end with `/`. At most 5 variables, names
//! `[a-zA-Z][a-zA-Z0-9_]*` of at most 16 characters, each used once (Envoy's limits).
//!
//! Rewrite template: `/` then literals and `{name}` references to the match's variables.

/// A problem at a character offset of the template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TemplateError {
    pub offset: usize,
    pub message: String,
}

const MAX_VARIABLES: usize = 5;
const MAX_NAME: usize = 16;

fn error(template: &str, byte: usize, message: impl Into<String>) -> TemplateError {
    TemplateError {
        offset: template.get(..byte).map_or(byte, |s| s.chars().count()),
        message: message.into(),
    }
}

/// RFC 3986 `pchar` without `*` and `=`, which the template syntax uses.
fn literal_char(c: u8) -> bool {
    c.is_ascii_alphanumeric()
        || matches!(
            c,
            b'-' | b'.'
                | b'_'
                | b'~'
                | b'%'
                | b'!'
                | b'$'
                | b'&'
                | b'\''
                | b'('
                | b')'
                | b'+'
                | b','
                | b';'
                | b':'
                | b'@'
        )
}

fn bad_char(template: &str, at: usize) -> TemplateError {
    let c = template[at..].chars().next().unwrap_or(' ');
    let message = match c {
        '{' | '}' => {
            format!("`{c}` is not allowed here: a variable is a whole segment, like `/{{id}}/`")
        }
        '*' => "`*` is not allowed here: `*` and `**` are whole segments".to_owned(),
        c if c.is_ascii_graphic() => format!("`{c}` is not allowed in a path template"),
        c => format!("{c:?} is not allowed in a path template (no spaces or non-ASCII characters)"),
    };
    error(template, at, message)
}

fn valid_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes.next().is_some_and(|b| b.is_ascii_alphabetic())
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Checks a match template; returns its variable names in order.
pub(crate) fn parse_match(template: &str) -> Result<Vec<String>, TemplateError> {
    let t = template.as_bytes();
    if t.first() != Some(&b'/') {
        return Err(error(template, 0, "a path template starts with `/`"));
    }
    let mut variables: Vec<String> = Vec::new();
    let mut after_text_glob = false;
    let mut glob = |at: usize, text_glob: bool| -> Result<(), TemplateError> {
        if after_text_glob {
            return Err(error(
                template,
                at,
                "nothing that matches with `*` may follow `**`",
            ));
        }
        after_text_glob = text_glob;
        Ok(())
    };
    let mut i = 1;
    while i < t.len() {
        let start = i;
        match t[i] {
            b'*' => {
                let text_glob = t.get(i + 1) == Some(&b'*');
                glob(i, text_glob)?;
                i += if text_glob { 2 } else { 1 };
            }
            b'{' => {
                let Some(len) = template[i..].find('}') else {
                    return Err(error(template, i, "`{` is not closed by `}`"));
                };
                let inner = &template[i + 1..i + len];
                let (name, matcher) = match inner.split_once('=') {
                    Some((n, m)) => (n, Some(m)),
                    None => (inner, None),
                };
                if !valid_name(name) {
                    return Err(error(
                        template,
                        i + 1,
                        format!(
                            "invalid variable name `{name}`: use a letter, then letters, digits or `_`"
                        ),
                    ));
                }
                if name.len() > MAX_NAME {
                    return Err(error(
                        template,
                        i + 1,
                        format!(
                            "variable name `{name}` is longer than {MAX_NAME} characters (Envoy's limit)"
                        ),
                    ));
                }
                if variables.iter().any(|v| v == name) {
                    return Err(error(
                        template,
                        i + 1,
                        format!("variable `{name}` is used twice"),
                    ));
                }
                if variables.len() == MAX_VARIABLES {
                    return Err(error(
                        template,
                        i,
                        format!(
                            "a path template has at most {MAX_VARIABLES} variables (Envoy's limit)"
                        ),
                    ));
                }
                variables.push(name.to_owned());
                match matcher {
                    None => glob(i, false)?,
                    Some("") => {
                        return Err(error(
                            template,
                            i + 1 + name.len(),
                            "`=` must be followed by what the variable matches, e.g. `*` or `**`",
                        ));
                    }
                    Some(m) => {
                        let mut at = i + 2 + name.len();
                        for part in m.split('/') {
                            match part {
                                "*" => glob(at, false)?,
                                "**" => glob(at, true)?,
                                "" => {
                                    return Err(error(
                                        template,
                                        at,
                                        "empty segment in variable match",
                                    ));
                                }
                                lit => {
                                    if let Some(p) = lit.bytes().position(|b| !literal_char(b)) {
                                        return Err(bad_char(template, at + p));
                                    }
                                }
                            }
                            at += part.len() + 1;
                        }
                    }
                }
                i += len + 1;
            }
            b'/' => return Err(error(template, i, "empty segment (`//`)")),
            _ => {
                while i < t.len() && t[i] != b'/' {
                    if !literal_char(t[i]) {
                        return Err(bad_char(template, i));
                    }
                    i += 1;
                }
            }
        }
        debug_assert!(i > start);
        match t.get(i) {
            None => break,
            Some(b'/') => i += 1,
            Some(_) => {
                // A literal suffix ends the template: `/{file}.m4s`.
                while i < t.len() {
                    if t[i] == b'/' {
                        return Err(error(
                            template,
                            i,
                            "text after a variable or `*` must end the template (`/{file}.json`)",
                        ));
                    }
                    if !literal_char(t[i]) {
                        return Err(bad_char(template, i));
                    }
                    i += 1;
                }
            }
        }
    }
    Ok(variables)
}

/// Checks a rewrite template against the match template's variables.
pub(crate) fn check_rewrite(template: &str, variables: &[String]) -> Result<(), TemplateError> {
    let t = template.as_bytes();
    if t.first() != Some(&b'/') {
        return Err(error(template, 0, "a rewrite template starts with `/`"));
    }
    if let Some(at) = template.find("//") {
        return Err(error(template, at, "empty segment (`//`)"));
    }
    let mut i = 0;
    while i < t.len() {
        match t[i] {
            b'{' => {
                let Some(len) = template[i..].find('}') else {
                    return Err(error(template, i, "`{` is not closed by `}`"));
                };
                let name = &template[i + 1..i + len];
                if !variables.iter().any(|v| v == name) {
                    let known = if variables.is_empty() {
                        "it has none".to_owned()
                    } else {
                        let list: Vec<&str> = variables.iter().map(String::as_str).collect();
                        format!("it has {}", super::diagnostic::one_of(&list))
                    };
                    return Err(error(
                        template,
                        i + 1,
                        format!(
                            "`{{{name}}}` is not a variable of the route's `path_template`: {known}"
                        ),
                    ));
                }
                i += len + 1;
            }
            b'/' => i += 1,
            c if literal_char(c) => i += 1,
            _ => return Err(bad_char(template, i)),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(offset: usize, message: &str) -> TemplateError {
        TemplateError {
            offset,
            message: message.to_owned(),
        }
    }

    #[test]
    fn valid_match_templates() {
        let ok = |t: &str| parse_match(t).expect(t);
        assert_eq!(ok("/api/orders/{id}"), ["id"]);
        assert_eq!(ok("/"), Vec::<String>::new());
        assert_eq!(ok("/a/{x=*}/{rest=**}"), ["x", "rest"]);
        assert_eq!(ok("/videos/*/{file}.m4s"), ["file"]);
        assert_eq!(ok("/{v=videos/*}/x/"), ["v"]);
        assert_eq!(ok("/**.mpd"), Vec::<String>::new());
        assert_eq!(ok("/a/{b}/"), ["b"]);
    }

    #[test]
    fn invalid_match_templates_with_columns() {
        assert_eq!(
            parse_match("api/{id}"),
            Err(err(0, "a path template starts with `/`"))
        );
        assert_eq!(
            parse_match("/api/{1d}"),
            Err(err(
                6,
                "invalid variable name `1d`: use a letter, then letters, digits or `_`"
            ))
        );
        assert_eq!(
            parse_match("/a/{id}/{id}"),
            Err(err(9, "variable `id` is used twice"))
        );
        assert_eq!(
            parse_match("/a/{rest=**}/{id}"),
            Err(err(13, "nothing that matches with `*` may follow `**`"))
        );
        assert_eq!(
            parse_match("/a/{id"),
            Err(err(3, "`{` is not closed by `}`"))
        );
        assert_eq!(parse_match("/a//b"), Err(err(3, "empty segment (`//`)")));
        assert_eq!(
            parse_match("/a/v{id}"),
            Err(err(
                4,
                "`{` is not allowed here: a variable is a whole segment, like `/{id}/`"
            ))
        );
        assert_eq!(
            parse_match("/a b"),
            Err(err(
                2,
                "' ' is not allowed in a path template (no spaces or non-ASCII characters)"
            ))
        );
        assert_eq!(
            parse_match("/{a}/{b}/{c}/{d}/{e}/{f}"),
            Err(err(
                21,
                "a path template has at most 5 variables (Envoy's limit)"
            ))
        );
        assert_eq!(
            parse_match("/{abcdefghijklmnopq}"),
            Err(err(
                2,
                "variable name `abcdefghijklmnopq` is longer than 16 characters (Envoy's limit)"
            ))
        );
        assert_eq!(
            parse_match("/{a=}"),
            Err(err(
                3,
                "`=` must be followed by what the variable matches, e.g. `*` or `**`"
            ))
        );
        assert_eq!(
            parse_match("/{f}.x/y"),
            Err(err(
                6,
                "text after a variable or `*` must end the template (`/{file}.json`)"
            ))
        );
        assert_eq!(
            parse_match("/**/*"),
            Err(err(4, "nothing that matches with `*` may follow `**`"))
        );
    }

    #[test]
    fn rewrite_templates() {
        let vars = vec!["id".to_owned(), "rest".to_owned()];
        assert_eq!(check_rewrite("/v2/orders/{id}", &vars), Ok(()));
        assert_eq!(check_rewrite("/{rest}/{id}.json", &vars), Ok(()));
        assert_eq!(
            check_rewrite("/v2/{ID}", &vars),
            Err(err(
                5,
                "`{ID}` is not a variable of the route's `path_template`: it has `id` or `rest`"
            ))
        );
        assert_eq!(
            check_rewrite("v2/{id}", &vars),
            Err(err(0, "a rewrite template starts with `/`"))
        );
        assert_eq!(
            check_rewrite("/v2//{id}", &vars),
            Err(err(3, "empty segment (`//`)"))
        );
        assert_eq!(
            check_rewrite("/v2/{id", &vars),
            Err(err(4, "`{` is not closed by `}`"))
        );
    }
}
