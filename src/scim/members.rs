//! Group membership in requests: the member ids of a POST/PUT body, and the member operations of
//! a PATCH, separated from the attribute operations so the store can apply them relationally
//! (a 10-member add touches 10 rows, whatever the size of the group).
//!
//! Dialects handled: Okta's `remove` with `members[value eq "…"]` and pathless `replace` carrying
//! the group `id`; Entra's capitalised ops, `"$ref": null`, and `remove` on path `members` with a
//! `value` list, which removes exactly those members (a strictly-RFC reading would empty the
//! group on every single removal). Only `remove` on `members` without a value clears the group.

use std::collections::BTreeSet;

use serde_json::{Map, Value};

use super::filter::{CompareOp, Operand, ValueFilter};
use super::patch::{Op, Operation};
use super::path::{self, PatchTarget};
use super::resource::Stored;
use super::schema::ResourceSchema;
use crate::error::{Error, Result};

/// A change to a membership, built from a request's operations in their order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemberChanges {
    /// Remove every member first (a `replace` of `members`, or a `remove` without a value).
    pub clear: bool,
    pub add: BTreeSet<String>,
    pub remove: BTreeSet<String>,
}

impl MemberChanges {
    pub fn add(&mut self, ids: impl IntoIterator<Item = String>) {
        for id in ids {
            self.remove.remove(&id);
            self.add.insert(id);
        }
    }

    pub fn remove(&mut self, ids: impl IntoIterator<Item = String>) {
        for id in ids {
            self.add.remove(&id);
            self.remove.insert(id);
        }
    }

    pub fn replace_all(&mut self, ids: impl IntoIterator<Item = String>) {
        self.clear = true;
        self.add.clear();
        self.remove.clear();
        self.add(ids);
    }
}

/// Takes `members` out of a normalised Group body and returns their ids.
pub fn take_members(resource: &mut Stored) -> Result<BTreeSet<String>> {
    match resource.shift_remove("members") {
        None | Some(Value::Null) => Ok(BTreeSet::new()),
        Some(value) => member_ids(&value),
    }
}

/// The member ids of a `members` value: an array of `{"value": "<id>", ...}` (one object alone
/// is accepted as a list of one). `display`, `$ref` and `type: "User"` are informational.
pub fn member_ids(value: &Value) -> Result<BTreeSet<String>> {
    let items = match value {
        Value::Array(items) => items.as_slice(),
        Value::Object(_) => std::slice::from_ref(value),
        Value::Null => &[],
        _ => {
            return Err(Error::InvalidValue(
                "members must be an array of objects like {\"value\": \"<user id>\"}".into(),
            ))
        }
    };
    let mut ids = BTreeSet::new();
    for item in items {
        let Value::Object(member) = item else {
            return Err(Error::InvalidValue(
                "each member must be an object like {\"value\": \"<user id>\"}".into(),
            ));
        };
        let field = |name: &str| member.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v);
        if let Some(Value::String(kind)) = field("type") {
            if !kind.eq_ignore_ascii_case("User") {
                return Err(Error::InvalidValue(format!(
                    "member type '{kind}' is not supported: members of a Group are Users"
                )));
            }
        }
        match field("value") {
            Some(Value::String(id)) if !id.trim().is_empty() => {
                ids.insert(id.trim().to_string());
            }
            _ => return Err(Error::InvalidValue("each member needs a \"value\": the user's id".into())),
        }
    }
    Ok(ids)
}

/// Splits PATCH operations on a Group into the attribute operations (for
/// [`super::patch::apply`]) and the membership change they make.
pub fn split_patch(
    schema: &ResourceSchema,
    operations: &[Operation],
) -> Result<(Vec<Operation>, MemberChanges)> {
    let mut attribute_ops = Vec::new();
    let mut changes = MemberChanges::default();
    for operation in operations {
        match &operation.path {
            Some(text) => match path::parse_patch_path(text, schema)? {
                PatchTarget::Attribute(attr) if attr.name() == "members" => {
                    if let Some(sub) = attr.sub_name() {
                        return Err(Error::InvalidPath(format!(
                            "path '{text}': members.{sub} cannot be changed; add or remove the member instead"
                        )));
                    }
                    let ids = match &operation.value {
                        Some(value) => member_ids(value)?,
                        None => BTreeSet::new(),
                    };
                    match operation.op {
                        Op::Add => changes.add(ids),
                        Op::Replace => changes.replace_all(ids),
                        // Entra (without its 2020 flag) removes members this way, one value list.
                        Op::Remove if !ids.is_empty() => changes.remove(ids),
                        Op::Remove => changes.replace_all([]),
                    }
                }
                PatchTarget::Values { attr, filter, sub } if attr.name() == "members" => {
                    if operation.op != Op::Remove || sub.is_some() {
                        return Err(Error::InvalidPath(format!(
                            "path '{text}': a filtered members path can only be removed; use \
                             {{\"op\": \"add\", \"path\": \"members\", \"value\": [...]}} to add"
                        )));
                    }
                    changes.remove(filtered_ids(&filter).ok_or_else(|| {
                        Error::InvalidFilter(format!(
                            "path '{text}': members can be selected by value only, as in \
                             members[value eq \"<id>\"] (several joined with or)"
                        ))
                    })?);
                }
                _ => attribute_ops.push(operation.clone()),
            },
            None => {
                let Some(Value::Object(values)) = &operation.value else {
                    // patch::apply explains what a pathless operation needs.
                    attribute_ops.push(operation.clone());
                    continue;
                };
                let mut rest = Map::new();
                for (key, value) in values {
                    if key.eq_ignore_ascii_case("members") {
                        let ids = member_ids(value)?;
                        match operation.op {
                            Op::Add => changes.add(ids),
                            Op::Replace => changes.replace_all(ids),
                            Op::Remove => changes.remove(ids),
                        }
                    } else {
                        rest.insert(key.clone(), value.clone());
                    }
                }
                if !rest.is_empty() {
                    attribute_ops.push(Operation { value: Some(Value::Object(rest)), ..operation.clone() });
                }
            }
        }
    }
    Ok((attribute_ops, changes))
}

/// The ids a `members[...]` filter selects, when it is `value eq "<id>"` or an `or` of those.
fn filtered_ids(filter: &ValueFilter) -> Option<BTreeSet<String>> {
    match filter {
        ValueFilter::Compare { attr, op: CompareOp::Eq, value: Operand::Text(id) }
            if attr.sub_name() == Some("value") =>
        {
            Some([id.clone()].into_iter().collect())
        }
        ValueFilter::Or(items) => {
            let mut ids = BTreeSet::new();
            for item in items {
                ids.extend(filtered_ids(item)?);
            }
            Some(ids)
        }
        _ => None,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]
mod tests {
    use super::*;
    use crate::scim::patch;
    use crate::scim::schema::Registry;
    use serde_json::json;

    fn split(operations: Value) -> Result<(Vec<Operation>, MemberChanges)> {
        let group = Registry::load().unwrap().group;
        let body =
            json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": operations});
        split_patch(&group, &patch::parse(&body).unwrap())
    }

    fn ids(list: &[&str]) -> BTreeSet<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn okta_remove_by_filter_then_add() {
        let (ops, changes) = split(json!([
            {"op": "remove", "path": "members[value eq \"u1\"]"},
            {"op": "add", "path": "members", "value": [{"value": "u2", "display": "b@x"}]}
        ]))
        .unwrap();
        assert!(ops.is_empty());
        assert_eq!(changes, MemberChanges { clear: false, add: ids(&["u2"]), remove: ids(&["u1"]) });
    }

    #[test]
    fn entra_remove_with_a_value_list_removes_only_those() {
        let (_, changes) = split(json!([
            {"op": "Remove", "path": "members", "value": [{"value": "u1"}, {"value": "u3"}]}
        ]))
        .unwrap();
        assert_eq!(changes, MemberChanges { clear: false, add: ids(&[]), remove: ids(&["u1", "u3"]) });
        // Without a value it clears the group.
        let (_, changes) = split(json!([{"op": "remove", "path": "members"}])).unwrap();
        assert!(changes.clear && changes.add.is_empty());
    }

    #[test]
    fn entra_add_with_null_refs_and_or_filters() {
        let (_, changes) = split(json!([
            {"op": "Add", "path": "members", "value": [{"$ref": null, "value": "u1"}, {"$ref": null, "value": "u2"}]},
            {"op": "remove", "path": "members[value eq \"u2\" or value eq \"u9\"]"}
        ]))
        .unwrap();
        assert_eq!(changes, MemberChanges { clear: false, add: ids(&["u1"]), remove: ids(&["u2", "u9"]) });
    }

    #[test]
    fn pathless_replace_splits_members_from_attributes_and_keeps_order() {
        let (ops, changes) = split(json!([
            {"op": "add", "path": "members", "value": [{"value": "u1"}]},
            {"op": "replace", "value": {"id": "g1", "displayName": "Ops", "members": [{"value": "u2"}]}}
        ]))
        .unwrap();
        assert_eq!(changes, MemberChanges { clear: true, add: ids(&["u2"]), remove: ids(&[]) });
        assert_eq!(ops.len(), 1);
        assert_eq!(ops[0].value, Some(json!({"id": "g1", "displayName": "Ops"})));
    }

    #[test]
    fn unsupported_member_paths_are_refused_with_a_reason() {
        let error =
            split(json!([{"op": "replace", "path": "members[value eq \"u1\"].display", "value": "x"}]))
                .unwrap_err();
        assert!(matches!(error, Error::InvalidPath(_)), "{error:?}");
        let error = split(json!([{"op": "remove", "path": "members[display eq \"Ann\"]"}])).unwrap_err();
        assert!(matches!(error, Error::InvalidFilter(_)), "{error:?}");
        let error =
            split(json!([{"op": "add", "path": "members", "value": [{"display": "no id"}]}])).unwrap_err();
        assert!(error.to_string().contains("value"), "{error}");
        let error =
            split(json!([{"op": "add", "path": "members", "value": [{"value": "g2", "type": "Group"}]}]))
                .unwrap_err();
        assert!(error.to_string().contains("Users"), "{error}");
    }

    #[test]
    fn later_operations_win_over_earlier_ones() {
        let mut changes = MemberChanges::default();
        changes.add(ids(&["a", "b"]));
        changes.remove(ids(&["a"]));
        changes.add(ids(&["c"]));
        assert_eq!(changes, MemberChanges { clear: false, add: ids(&["b", "c"]), remove: ids(&["a"]) });
        changes.replace_all(ids(&["d"]));
        assert_eq!(changes, MemberChanges { clear: true, add: ids(&["d"]), remove: ids(&[]) });
    }
}
