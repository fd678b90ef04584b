//! The merge of backend answers into one document: a pure function of the declarations and
//! the outcomes, so its result never depends on which backend answered first.
//!
//! Rules, in declaration order:
//! - a backend with a `group` is put under that key (`null` when an optional one failed);
//! - a backend without a group must answer a JSON object; its keys are merged into the top
//!   level, a later backend overwriting an earlier one's key;
//! - a required backend that failed (or answered a non-object without a group) fails the
//!   whole answer, naming the first such backend in declaration order; an optional one only
//!   marks the answer incomplete.

use serde_json::{Map, Value};

use crate::failure::Failure;

/// What the merge needs to know of a backend.
#[derive(Debug, Clone, Copy)]
pub struct Slot<'a> {
    pub name: &'a str,
    pub group: Option<&'a str>,
    pub optional: bool,
    pub outcome: &'a Result<Value, Failure>,
}

/// A successful merge.
#[derive(Debug, Clone, PartialEq)]
pub struct Merged {
    pub body: Value,
    /// False when an optional backend failed (`X-Vrata-Completed: false`).
    pub completed: bool,
}

/// A required backend failed.
#[derive(Debug, Clone, PartialEq)]
pub struct Failed {
    pub backend: String,
    pub failure: Failure,
}

pub fn merge(slots: &[Slot<'_>]) -> Result<Merged, Failed> {
    let mut out = Map::new();
    let mut completed = true;
    for slot in slots {
        let failure = match (slot.outcome, slot.group) {
            (Ok(v), Some(group)) => {
                out.insert(group.to_owned(), v.clone());
                None
            }
            (Ok(Value::Object(fields)), None) => {
                for (k, v) in fields {
                    out.insert(k.clone(), v.clone());
                }
                None
            }
            (Ok(_), None) => Some(Failure::NotAnObject),
            (Err(f), _) => Some(f.clone()),
        };
        if let Some(failure) = failure {
            if !slot.optional {
                return Err(Failed {
                    backend: slot.name.to_owned(),
                    failure,
                });
            }
            completed = false;
            if let Some(group) = slot.group {
                out.insert(group.to_owned(), Value::Null);
            }
        }
    }
    Ok(Merged {
        body: Value::Object(out),
        completed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn slot<'a>(
        name: &'a str,
        group: Option<&'a str>,
        optional: bool,
        outcome: &'a Result<Value, Failure>,
    ) -> Slot<'a> {
        Slot {
            name,
            group,
            optional,
            outcome,
        }
    }

    #[test]
    fn groups_nest_and_later_backends_win_collisions() {
        let a = Ok(json!({"id": 1, "name": "a"}));
        let b = Ok(json!({"name": "b", "extra": true}));
        let c = Ok(json!([1, 2]));
        let merged = merge(&[
            slot("a", None, false, &a),
            slot("b", None, false, &b),
            slot("c", Some("list"), false, &c),
        ])
        .expect("merges");
        assert_eq!(
            merged.body,
            json!({"id": 1, "name": "b", "extra": true, "list": [1, 2]})
        );
        assert!(merged.completed);
        // Declaration order, not argument order of arrival, decides: swap the declarations.
        let swapped =
            merge(&[slot("b", None, false, &b), slot("a", None, false, &a)]).expect("merges");
        assert_eq!(swapped.body["name"], json!("a"));
    }

    #[test]
    fn optional_failures_leave_null_groups_and_mark_incomplete() {
        let ok = Ok(json!({"id": 1}));
        let failed = Err(Failure::Timeout);
        let merged = merge(&[
            slot("user", Some("user"), false, &ok),
            slot("orders", Some("orders"), true, &failed),
            slot("extra", None, true, &failed),
        ])
        .expect("merges");
        assert_eq!(merged.body, json!({"user": {"id": 1}, "orders": null}));
        assert!(!merged.completed);
    }

    #[test]
    fn the_first_required_failure_in_declaration_order_fails_the_answer() {
        let ok = Ok(json!({}));
        let status = Err(Failure::Status(500));
        let timeout = Err(Failure::Timeout);
        let err = merge(&[
            slot("a", None, false, &ok),
            slot("b", None, false, &timeout),
            slot("c", None, false, &status),
        ])
        .expect_err("fails");
        assert_eq!(
            err,
            Failed {
                backend: "b".into(),
                failure: Failure::Timeout
            }
        );
    }

    #[test]
    fn a_non_object_needs_a_group() {
        let list = Ok(json!([1]));
        assert_eq!(
            merge(&[slot("a", None, false, &list)])
                .expect_err("fails")
                .failure,
            Failure::NotAnObject
        );
        let merged = merge(&[slot("a", None, true, &list)]).expect("optional");
        assert_eq!(merged.body, json!({}));
        assert!(!merged.completed);
    }
}
