//! `response.json`: reshaping a JSON answer. Pure; applied in the order target, allow, deny,
//! rename. Paths are dot-separated object keys; where a path meets an array, it applies to
//! each element (`orders.items.price` reaches every item's price).

use serde_json::{Map, Value};

/// A compiled `response.json`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Shape {
    pub target: Option<Vec<String>>,
    pub allow: Vec<Vec<String>>,
    pub deny: Vec<Vec<String>>,
    pub rename: Vec<(Vec<String>, String)>,
}

/// A dot path's keys.
pub fn keys(path: &str) -> Vec<String> {
    path.split('.').map(str::to_owned).collect()
}

impl Shape {
    pub fn is_empty(&self) -> bool {
        self.target.is_none()
            && self.allow.is_empty()
            && self.deny.is_empty()
            && self.rename.is_empty()
    }

    pub fn apply(&self, value: Value) -> Value {
        let mut v = match &self.target {
            // A target that is not there leaves an empty object: the answer stays an object.
            Some(path) => take(value, path).unwrap_or_else(|| Value::Object(Map::new())),
            None => value,
        };
        if !self.allow.is_empty() {
            let paths: Vec<&[String]> = self.allow.iter().map(Vec::as_slice).collect();
            v = pick(&v, &paths).unwrap_or_else(|| Value::Object(Map::new()));
        }
        for path in &self.deny {
            remove(&mut v, path);
        }
        for (path, to) in &self.rename {
            rename(&mut v, path, to);
        }
        v
    }
}

fn take(value: Value, path: &[String]) -> Option<Value> {
    let mut v = value;
    for key in path {
        v = match v {
            Value::Object(mut fields) => fields.remove(key)?,
            _ => return None,
        };
    }
    Some(v)
}

/// The parts of `v` the paths name (`None`: none of them is there).
fn pick(v: &Value, paths: &[&[String]]) -> Option<Value> {
    match v {
        Value::Array(items) => Some(Value::Array(
            items.iter().filter_map(|item| pick(item, paths)).collect(),
        )),
        Value::Object(fields) => {
            let mut out = Map::new();
            for (key, child) in fields {
                let tails: Vec<&[String]> = paths
                    .iter()
                    .filter(|p| p.first() == Some(key))
                    .map(|p| &p[1..])
                    .collect();
                if tails.is_empty() {
                    continue;
                }
                if tails.iter().any(|t| t.is_empty()) {
                    out.insert(key.clone(), child.clone());
                } else if let Some(part) = pick(child, &tails) {
                    out.insert(key.clone(), part);
                }
            }
            (!out.is_empty()).then_some(Value::Object(out))
        }
        // A path going below a scalar finds nothing.
        _ => None,
    }
}

fn remove(v: &mut Value, path: &[String]) {
    let Some((key, rest)) = path.split_first() else {
        return;
    };
    match v {
        Value::Array(items) => items.iter_mut().for_each(|item| remove(item, path)),
        Value::Object(fields) => {
            if rest.is_empty() {
                fields.remove(key);
            } else if let Some(child) = fields.get_mut(key) {
                remove(child, rest);
            }
        }
        _ => {}
    }
}

fn rename(v: &mut Value, path: &[String], to: &str) {
    let Some((key, rest)) = path.split_first() else {
        return;
    };
    match v {
        Value::Array(items) => items.iter_mut().for_each(|item| rename(item, path, to)),
        Value::Object(fields) => {
            if rest.is_empty() {
                if let Some(value) = fields.remove(key) {
                    fields.insert(to.to_owned(), value);
                }
            } else if let Some(child) = fields.get_mut(key) {
                rename(child, rest, to);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn shape(
        target: Option<&str>,
        allow: &[&str],
        deny: &[&str],
        rename: &[(&str, &str)],
    ) -> Shape {
        Shape {
            target: target.map(keys),
            allow: allow.iter().map(|p| keys(p)).collect(),
            deny: deny.iter().map(|p| keys(p)).collect(),
            rename: rename
                .iter()
                .map(|(f, t)| (keys(f), (*t).to_owned()))
                .collect(),
        }
    }

    fn doc() -> Value {
        json!({
            "user": {"id": 7, "name": "Ann", "internal_notes": "x", "createdAt": "2024",
                     "address": {"city": "Oslo", "zip": "0150"}},
            "orders": [{"id": 1, "price": 3, "secret": true}, {"id": 2, "price": 5, "secret": false}],
            "internal_notes": "top"
        })
    }

    #[test]
    fn allow_keeps_only_the_named_paths_nested_and_through_arrays() {
        let s = shape(
            None,
            &["user.name", "user.address.city", "orders.id", "missing.x"],
            &[],
            &[],
        );
        assert_eq!(
            s.apply(doc()),
            json!({"user": {"name": "Ann", "address": {"city": "Oslo"}}, "orders": [{"id": 1}, {"id": 2}]})
        );
    }

    #[test]
    fn deny_removes_nested_paths_and_in_arrays() {
        let s = shape(
            None,
            &[],
            &[
                "internal_notes",
                "user.internal_notes",
                "orders.secret",
                "no.such",
            ],
            &[],
        );
        let out = s.apply(doc());
        assert!(out.get("internal_notes").is_none());
        assert!(out["user"].get("internal_notes").is_none());
        assert_eq!(
            out["orders"],
            json!([{"id": 1, "price": 3}, {"id": 2, "price": 5}])
        );
        assert_eq!(out["user"]["name"], json!("Ann"));
    }

    #[test]
    fn rename_in_place_and_target_first() {
        let s = shape(
            Some("user"),
            &[],
            &["internal_notes"],
            &[("createdAt", "created_at"), ("address.zip", "postcode")],
        );
        assert_eq!(
            s.apply(doc()),
            json!({"id": 7, "name": "Ann", "created_at": "2024", "address": {"city": "Oslo", "postcode": "0150"}})
        );
        // A missing target gives an empty object.
        assert_eq!(shape(Some("nope"), &[], &[], &[]).apply(doc()), json!({}));
        // Allow after target.
        assert_eq!(
            shape(Some("user.address"), &["city"], &[], &[]).apply(doc()),
            json!({"city": "Oslo"})
        );
    }
}
