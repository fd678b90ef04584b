//! `routes[].aggregate` and `routes[].response.json`.
//!
//! Checks, each reported where it is written: backend names (valid, unique in the route),
//! upstreams (known), paths (start with `/`, every `{placeholder}` is a variable of the route's
//! `path_template` or `{backend.field}` of another backend of the route), no cycle between
//! backends, groups unique, JSON paths well formed.

use std::collections::BTreeMap;

use super::Cx;
use super::route::Upstreams;
use crate::config::diagnostic::{Pos, suggestion};
use crate::config::dto::{AggregateDto, BackendDto, JsonShapeDto};
use crate::config::spanned::{Spanned, or};
use crate::model::{Aggregate, Backend, JsonPath, JsonShape, Name, PathMatch, defaults};

/// `matched`: the route's path match, for its template variables (`None`: the match was
/// invalid and has been reported; placeholders naming variables are then not checked).
pub(crate) fn aggregate(
    cx: &Cx<'_>,
    dto: &AggregateDto,
    at: Pos,
    matched: Option<&PathMatch>,
    upstreams: &Upstreams<'_>,
) -> Option<Aggregate> {
    let timeout = or(
        &dto.timeout,
        crate::config::dto::DurationDto(defaults::AGGREGATE_TIMEOUT),
    )
    .0;
    let items = dto.backends.get()?;
    if items.is_empty() {
        cx.error(
            dto.backends.pos(),
            "`backends` is empty: an aggregate calls at least one backend",
        );
        return None;
    }
    let variables: Option<Vec<String>> = match matched {
        Some(PathMatch::Template(t)) => {
            if let Err(message) = segment_variables_only(&t.source) {
                cx.error(at, message);
                return None;
            }
            Some(t.variables.clone())
        }
        Some(_) => Some(Vec::new()),
        None => None,
    };
    let names: Vec<&str> = items
        .iter()
        .filter_map(|b| b.get().and_then(|b| b.name.get()).map(String::as_str))
        .collect();

    let mut ok = true;
    let mut seen: BTreeMap<String, ()> = BTreeMap::new();
    let mut groups: BTreeMap<String, ()> = BTreeMap::new();
    let mut backends = Vec::new();
    // Where each backend's path is, for cycle reports.
    let mut path_fields: Vec<&Spanned<String>> = Vec::new();
    for item in items {
        let Some(b) = item.get() else {
            ok = false;
            continue;
        };
        match backend(cx, b, variables.as_deref(), &names, upstreams) {
            Some(backend) => {
                if seen.insert(backend.name.as_str().to_owned(), ()).is_some() {
                    cx.error(
                        b.name.pos(),
                        format!(
                            "backend `{}` is defined twice in this aggregate",
                            backend.name
                        ),
                    );
                    ok = false;
                    continue;
                }
                if let Some(g) = &backend.group
                    && groups.insert(g.clone(), ()).is_some()
                {
                    if let Some(field) = &b.group {
                        cx.error(
                            field.pos(),
                            format!("group `{g}` is used by two backends of this aggregate"),
                        );
                    }
                    ok = false;
                    continue;
                }
                path_fields.push(&b.path);
                backends.push(backend);
            }
            None => ok = false,
        }
    }
    if !ok {
        return None;
    }
    if let Some((at, cycle)) = find_cycle(&backends) {
        cx.error(
            path_fields[at].pos(),
            format!(
                "backends {} wait for each other's answers: a cycle",
                cycle
                    .iter()
                    .map(|n| format!("`{n}`"))
                    .collect::<Vec<_>>()
                    .join(" -> ")
            ),
        );
        return None;
    }
    Some(Aggregate {
        timeout,
        backends,
        forward_authorization: or(&dto.forward_authorization, false),
    })
}

fn backend(
    cx: &Cx<'_>,
    b: &BackendDto,
    variables: Option<&[String]>,
    names: &[&str],
    upstreams: &Upstreams<'_>,
) -> Option<Backend> {
    let name = cx.name(&b.name);
    let upstream = upstream(cx, &b.upstream, upstreams);
    let own = b.name.get().map(String::as_str);
    let path = b.path.get().and_then(|p| match placeholders(p) {
        Ok(list) => {
            let mut ok = true;
            let mut depends_on: Vec<Name> = Vec::new();
            for (offset, inner) in list {
                match inner.split_once('.') {
                    None => {
                        if let Some(vars) = variables
                            && !vars.iter().any(|v| v == inner)
                        {
                            let known = if vars.is_empty() {
                                " (the route's match has no `path_template` variables)".to_owned()
                            } else {
                                let v: Vec<&str> = vars.iter().map(String::as_str).collect();
                                suggestion(inner, &v)
                            };
                            cx.error(
                                b.path.pos_at(offset),
                                format!(
                                    "`{{{inner}}}` is not a variable of the route's path \
                                         template{known}; `{{backend.field}}` names another \
                                         backend's answer"
                                ),
                            );
                            ok = false;
                        }
                    }
                    Some((other, _field)) => {
                        if Some(other) == own {
                            cx.error(
                                b.path.pos_at(offset),
                                format!("backend `{other}` cannot use its own answer"),
                            );
                            ok = false;
                        } else if !names.contains(&other) {
                            cx.error(
                                b.path.pos_at(offset),
                                format!(
                                    "unknown backend `{other}` in `{{{inner}}}`{}",
                                    suggestion(other, names)
                                ),
                            );
                            ok = false;
                        } else if let Ok(n) = Name::new(other)
                            && !depends_on.contains(&n)
                        {
                            depends_on.push(n);
                        }
                    }
                }
            }
            ok.then(|| (p.clone(), depends_on))
        }
        Err((offset, message)) => {
            cx.error(b.path.pos_at(offset), message);
            None
        }
    });
    let group = cx.check_opt(&b.group, |g| {
        if g.is_empty() {
            Err("`group` is empty: leave it out to merge the answer's keys".to_owned())
        } else {
            Ok(g.clone())
        }
    });
    let (path, depends_on) = path?;
    Some(Backend {
        name: name?,
        upstream: upstream?,
        path,
        depends_on,
        group: group.ok()?,
        optional: or(&b.optional, false),
        timeout: b.timeout.as_ref().and_then(Spanned::get).map(|d| d.0),
    })
}

fn upstream(cx: &Cx<'_>, field: &Spanned<String>, upstreams: &Upstreams<'_>) -> Option<Name> {
    let name = field.get()?;
    if upstreams.names.contains(&name.as_str()) {
        return Name::new(name.as_str()).ok();
    }
    if upstreams.complete {
        let hint = if upstreams.names.is_empty() {
            " (no upstreams are defined)".to_owned()
        } else {
            suggestion(name, &upstreams.names)
        };
        cx.error(field.pos(), format!("unknown upstream `{name}`{hint}"));
    }
    None
}

/// The `{...}` placeholders of a backend path with their character offsets, after checking
/// the path's shape.
fn placeholders(path: &str) -> Result<Vec<(usize, &str)>, (usize, String)> {
    if !path.starts_with('/') {
        return Err((0, format!("a backend path starts with `/`, found `{path}`")));
    }
    let mut out = Vec::new();
    let mut rest = path.char_indices().peekable();
    while let Some((i, c)) = rest.next() {
        let at = path[..i].chars().count();
        match c {
            '{' => {
                let Some(len) = path[i..].find('}') else {
                    return Err((at, "`{` is not closed by `}`".to_owned()));
                };
                let inner = &path[i + 1..i + len];
                let valid = !inner.is_empty()
                    && inner.split('.').all(|s| {
                        !s.is_empty()
                            && s.bytes()
                                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'))
                    });
                if !valid {
                    return Err((
                        at,
                        format!(
                            "invalid placeholder `{{{inner}}}`: use `{{variable}}` or \
                             `{{backend.field}}`"
                        ),
                    ));
                }
                out.push((at, inner));
                while rest.peek().is_some_and(|(j, _)| *j <= i + len) {
                    rest.next();
                }
            }
            '}' => return Err((at, "`}` without `{`".to_owned())),
            c if c.is_ascii_whitespace() || !c.is_ascii() || c.is_ascii_control() => {
                return Err((
                    at,
                    format!("{c:?} is not allowed in a backend path (percent-encode it)"),
                ));
            }
            _ => {}
        }
    }
    Ok(out)
}

/// The aggregator extracts variables segment by segment: `{name}`, `{name=*}` and a final
/// `{name=**}`; richer Envoy templates (`{name=videos/*}`) are refused on aggregate routes.
fn segment_variables_only(template: &str) -> Result<(), String> {
    for part in template.split('{').skip(1) {
        let inner = part.split('}').next().unwrap_or_default();
        if let Some((_, matcher)) = inner.split_once('=')
            && matcher != "*"
            && matcher != "**"
        {
            return Err(format!(
                "aggregate routes support path template variables `{{name}}`, `{{name=*}}` and \
                 `{{name=**}}`, not `{{{inner}}}` (in `{template}`)"
            ));
        }
    }
    Ok(())
}

/// The first cycle in the dependency graph, as the index of a backend on it and the names
/// along it (first name repeated at the end).
fn find_cycle(backends: &[Backend]) -> Option<(usize, Vec<String>)> {
    let index = |n: &Name| backends.iter().position(|b| &b.name == n);
    // 0 unvisited, 1 on the stack, 2 done.
    let mut state = vec![0u8; backends.len()];
    fn visit(
        i: usize,
        backends: &[Backend],
        index: &dyn Fn(&Name) -> Option<usize>,
        state: &mut [u8],
        stack: &mut Vec<usize>,
    ) -> Option<Vec<usize>> {
        state[i] = 1;
        stack.push(i);
        for dep in &backends[i].depends_on {
            let Some(j) = index(dep) else { continue };
            if state[j] == 1 {
                let from = stack.iter().position(|&s| s == j).unwrap_or(0);
                let mut cycle = stack[from..].to_vec();
                cycle.push(j);
                return Some(cycle);
            }
            if state[j] == 0
                && let Some(c) = visit(j, backends, index, state, stack)
            {
                return Some(c);
            }
        }
        stack.pop();
        state[i] = 2;
        None
    }
    for i in 0..backends.len() {
        if state[i] == 0 {
            let mut stack = Vec::new();
            if let Some(cycle) = visit(i, backends, &index, &mut state, &mut stack) {
                let names = cycle
                    .iter()
                    .map(|&k| backends[k].name.as_str().to_owned())
                    .collect();
                return Some((cycle[0], names));
            }
        }
    }
    None
}

/// `response.json`.
pub(crate) fn json_shape(cx: &Cx<'_>, dto: &JsonShapeDto) -> Option<JsonShape> {
    let path = |field: &Spanned<String>| cx.check(field, |p| JsonPath::new(p));
    let list = |field: &Option<Spanned<Vec<Spanned<String>>>>| -> Option<Vec<JsonPath>> {
        let Some(f) = field else {
            return Some(Vec::new());
        };
        let items = f.get()?;
        let mut ok = true;
        let mut out = Vec::new();
        for item in items {
            match path(item) {
                Some(p) => out.push(p),
                None => ok = false,
            }
        }
        ok.then_some(out)
    };
    let allow = list(&dto.allow);
    let deny = list(&dto.deny);
    let target = match &dto.target {
        None => Some(None),
        Some(t) => path(t).map(Some),
    };
    let rename = match &dto.rename {
        None => Some(Vec::new()),
        Some(map) => map.get().and_then(|map| {
            let mut ok = true;
            let mut out = Vec::new();
            for (from, to) in &map.0 {
                let from = path(from);
                let to = cx.check(to, |k| {
                    if k.is_empty() || k.contains('.') {
                        Err(format!(
                            "`{k}` is not a key: a rename gives the field a new name in the same \
                             object (no dots)"
                        ))
                    } else {
                        Ok(k.clone())
                    }
                });
                match (from, to) {
                    (Some(f), Some(t)) => out.push((f, t)),
                    _ => ok = false,
                }
            }
            ok.then_some(out)
        }),
    };
    Some(JsonShape {
        target: target?,
        allow: allow?,
        deny: deny?,
        rename: rename?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_and_offsets() {
        assert_eq!(
            placeholders("/reco/{user.segment}?x={id}"),
            Ok(vec![(6, "user.segment"), (23, "id")])
        );
        assert!(placeholders("reco").is_err());
        assert_eq!(placeholders("/a/{b").map_err(|e| e.0), Err(3));
        assert_eq!(placeholders("/a/{}").map_err(|e| e.0), Err(3));
        assert_eq!(placeholders("/a b").map_err(|e| e.0), Err(2));
    }
}
