//! Paths: the route's path template, matched against the request path to read its variables,
//! and backend path templates, rendered from those variables and other backends' answers.
//! Both are compiled once per config version.

use serde_json::Value;

/// A route path template (`/api/users/{id}/dashboard`): literal segments, `*`, `**`,
/// `{name}`, `{name=*}` and a last `{name=**}` (what xds-server lets through for aggregates).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteTemplate {
    segments: Vec<Segment>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    /// One segment, captured under the name when there is one.
    One(Option<String>),
    /// The rest of the path (one or more segments), captured under the name when there is one.
    Rest(Option<String>),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("path template {0:?} does not start with `/`")]
    NoSlash(String),
    #[error("path template {0:?}: `**` must be last")]
    RestNotLast(String),
    #[error("path template {template:?}: unsupported segment {segment:?}")]
    Segment { template: String, segment: String },
    #[error("backend path {0:?}: `{{` not closed")]
    Unclosed(String),
    #[error("backend path {path:?}: {message}")]
    Placeholder { path: String, message: String },
}

/// The variables of one request, in template order.
pub type Vars = Vec<(String, String)>;

impl RouteTemplate {
    pub fn parse(template: &str) -> Result<Self, TemplateError> {
        let Some(rest) = template.strip_prefix('/') else {
            return Err(TemplateError::NoSlash(template.to_owned()));
        };
        let parts: Vec<&str> = rest.split('/').collect();
        let mut segments = Vec::with_capacity(parts.len());
        for (i, part) in parts.iter().enumerate() {
            let seg = match *part {
                "*" => Segment::One(None),
                "**" => Segment::Rest(None),
                p if p.starts_with('{') && p.ends_with('}') => {
                    let inner = &p[1..p.len() - 1];
                    match inner.split_once('=') {
                        None | Some((_, "*")) => {
                            Segment::One(Some(inner.split('=').next().unwrap_or(inner).to_owned()))
                        }
                        Some((name, "**")) => Segment::Rest(Some(name.to_owned())),
                        Some(_) => {
                            return Err(TemplateError::Segment {
                                template: template.to_owned(),
                                segment: (*part).to_owned(),
                            });
                        }
                    }
                }
                p if p.contains(['{', '}', '*']) => {
                    return Err(TemplateError::Segment {
                        template: template.to_owned(),
                        segment: p.to_owned(),
                    });
                }
                p => Segment::Literal(p.to_owned()),
            };
            if matches!(seg, Segment::Rest(_)) && i + 1 != parts.len() {
                return Err(TemplateError::RestNotLast(template.to_owned()));
            }
            segments.push(seg);
        }
        Ok(Self { segments })
    }

    /// The variables of `path` (without query), or `None` when it does not match. Values are
    /// kept as received (still percent-encoded): they go back into a path.
    pub fn captures(&self, path: &str) -> Option<Vars> {
        let rest = path.strip_prefix('/')?;
        let parts: Vec<&str> = rest.split('/').collect();
        let mut vars = Vec::new();
        let mut i = 0;
        for seg in &self.segments {
            match seg {
                Segment::Literal(l) => {
                    if parts.get(i) != Some(&l.as_str()) {
                        return None;
                    }
                    i += 1;
                }
                Segment::One(name) => {
                    let v = parts.get(i).filter(|v| !v.is_empty())?;
                    if let Some(n) = name {
                        vars.push((n.clone(), (*v).to_owned()));
                    }
                    i += 1;
                }
                Segment::Rest(name) => {
                    if i >= parts.len() {
                        return None;
                    }
                    if let Some(n) = name {
                        vars.push((n.clone(), parts[i..].join("/")));
                    }
                    i = parts.len();
                }
            }
        }
        (i == parts.len()).then_some(vars)
    }
}

/// A backend path (`/reco/{user.segment}?tier={tier}`) split into its pieces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathTemplate {
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    /// A route variable.
    Var(String),
    /// A field of another backend's answer: its index in the aggregate, the keys below it.
    Field {
        backend: usize,
        path: Vec<String>,
    },
}

/// Why a backend path could not be built for one request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    #[error("route variable `{0}` is missing")]
    MissingVar(String),
    #[error(
        "field `{field}` is missing in `{backend}`'s answer or is not a string, number or boolean"
    )]
    MissingField { backend: String, field: String },
}

impl PathTemplate {
    /// `backend_index` resolves a backend name to its index (`None`: unknown, an error).
    pub fn parse(
        path: &str,
        backend_index: impl Fn(&str) -> Option<usize>,
    ) -> Result<Self, TemplateError> {
        let mut parts = Vec::new();
        let mut rest = path;
        while let Some(open) = rest.find('{') {
            if open > 0 {
                parts.push(Part::Literal(rest[..open].to_owned()));
            }
            let Some(len) = rest[open..].find('}') else {
                return Err(TemplateError::Unclosed(path.to_owned()));
            };
            let inner = &rest[open + 1..open + len];
            match inner.split_once('.') {
                None => parts.push(Part::Var(inner.to_owned())),
                Some((backend, field)) => {
                    let Some(index) = backend_index(backend) else {
                        return Err(TemplateError::Placeholder {
                            path: path.to_owned(),
                            message: format!("unknown backend `{backend}`"),
                        });
                    };
                    parts.push(Part::Field {
                        backend: index,
                        path: field.split('.').map(str::to_owned).collect(),
                    });
                }
            }
            rest = &rest[open + len + 1..];
        }
        if !rest.is_empty() {
            parts.push(Part::Literal(rest.to_owned()));
        }
        Ok(Self { parts })
    }

    /// The backends whose answers this path needs, in order, without repeats.
    pub fn dependencies(&self) -> Vec<usize> {
        let mut out = Vec::new();
        for p in &self.parts {
            if let Part::Field { backend, .. } = p
                && !out.contains(backend)
            {
                out.push(*backend);
            }
        }
        out
    }

    /// The path for one request. `answer(i)` is backend `i`'s answer (only asked for
    /// dependencies, which have answered by then); `names` for messages.
    pub fn render<'a>(
        &self,
        vars: &[(String, String)],
        answer: impl Fn(usize) -> Option<&'a Value>,
        names: &[String],
    ) -> Result<String, RenderError> {
        let mut out = String::new();
        for p in &self.parts {
            match p {
                Part::Literal(l) => out.push_str(l),
                Part::Var(name) => {
                    let (_, v) = vars
                        .iter()
                        .find(|(n, _)| n == name)
                        .ok_or_else(|| RenderError::MissingVar(name.clone()))?;
                    out.push_str(v);
                }
                Part::Field { backend, path } => {
                    let missing = || RenderError::MissingField {
                        backend: names.get(*backend).cloned().unwrap_or_default(),
                        field: path.join("."),
                    };
                    let mut v = answer(*backend).ok_or_else(missing)?;
                    for key in path {
                        v = v.get(key.as_str()).ok_or_else(missing)?;
                    }
                    let text = match v {
                        Value::String(s) => s.clone(),
                        Value::Number(n) => n.to_string(),
                        Value::Bool(b) => b.to_string(),
                        _ => return Err(missing()),
                    };
                    percent_encode(&text, &mut out);
                }
            }
        }
        Ok(out)
    }
}

/// RFC 3986 percent-encoding of everything but unreserved characters: a value from an answer
/// always stays one path segment (or one query value).
fn percent_encode(text: &str, out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0xf)]));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn route_templates_capture_variables() {
        let t = RouteTemplate::parse("/api/users/{id}/dashboard").expect("parses");
        assert_eq!(
            t.captures("/api/users/42/dashboard"),
            Some(vec![("id".into(), "42".into())])
        );
        assert_eq!(t.captures("/api/users/42"), None);
        assert_eq!(t.captures("/api/users//dashboard"), None);
        assert_eq!(t.captures("/api/users/42/dashboard/x"), None);
        let rest = RouteTemplate::parse("/files/{kind=*}/{path=**}").expect("parses");
        assert_eq!(
            rest.captures("/files/img/a/b.png"),
            Some(vec![
                ("kind".into(), "img".into()),
                ("path".into(), "a/b.png".into())
            ])
        );
        assert!(RouteTemplate::parse("/a/{x=b/*}").is_err());
        assert!(RouteTemplate::parse("/a/**/b").is_err());
    }

    #[test]
    fn backend_paths_use_variables_and_fields() {
        let names = vec!["user".to_owned(), "reco".to_owned()];
        let index = |n: &str| names.iter().position(|x| x == n);
        let t = PathTemplate::parse("/reco/{user.profile.segment}?id={id}", index).expect("ok");
        assert_eq!(t.dependencies(), vec![0]);
        let answer = json!({"profile": {"segment": "gold/vip"}});
        let vars = vec![("id".to_owned(), "42".to_owned())];
        assert_eq!(
            t.render(&vars, |_| Some(&answer), &names),
            Ok("/reco/gold%2Fvip?id=42".to_owned())
        );
        let empty = json!({});
        assert_eq!(
            t.render(&vars, |_| Some(&empty), &names),
            Err(RenderError::MissingField {
                backend: "user".into(),
                field: "profile.segment".into()
            })
        );
        assert!(PathTemplate::parse("/x/{nobody.f}", index).is_err());
        assert_eq!(
            PathTemplate::parse("/x/{id}", index)
                .expect("ok")
                .render(&[], |_| None, &names),
            Err(RenderError::MissingVar("id".into()))
        );
    }
}
