//! PATCH (RFC 7644 §3.5.2): parse the operations, then apply them all-or-nothing to a copy
//! of the stored resource. The result is normalised like a PUT body, so a PATCH can never
//! store what a PUT could not.
//!
//! Client dialects handled here: op names in any case (Entra's `Replace`), the `Operations`
//! key in any case, pathless values whose keys are attribute paths (`name.givenName`, URN-
//! qualified), `add` on a single-valued attribute replacing it, and an unmatched
//! `attr[type eq "x"].sub` creating that element (Entra's `emails[type eq "work"].value`).

use serde_json::{Map, Value};

use super::filter::{self, ValueFilter};
use super::path::{self, PatchTarget, ResolvedAttr};
use super::resource::{self, demote_all_but, keep_one_primary, Stored};
use super::schema::{Attribute, Mutability, ResourceSchema, PATCH_OP_SCHEMA};
use crate::error::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Add,
    Remove,
    Replace,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Operation {
    pub op: Op,
    pub path: Option<String>,
    pub value: Option<Value>,
}

/// Reads a `PatchOp` message.
pub fn parse(body: &Value) -> Result<Vec<Operation>> {
    let Value::Object(fields) = body else {
        return Err(Error::InvalidSyntax("a PATCH body must be a JSON object (a PatchOp message)".into()));
    };
    let member = |name: &str| fields.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v);
    let schemas_ok = match member("schemas") {
        Some(Value::Array(items)) => {
            items.iter().any(|s| s.as_str().is_some_and(|s| s.eq_ignore_ascii_case(PATCH_OP_SCHEMA)))
        }
        _ => false,
    };
    if !schemas_ok {
        return Err(Error::InvalidSyntax(format!("a PATCH body needs \"schemas\": [\"{PATCH_OP_SCHEMA}\"]")));
    }
    let Some(Value::Array(operations)) = member("Operations") else {
        return Err(Error::InvalidSyntax("a PATCH body needs an \"Operations\" array".into()));
    };
    if operations.is_empty() {
        return Err(Error::InvalidSyntax("\"Operations\" is empty: nothing to do".into()));
    }
    operations.iter().enumerate().map(|(n, operation)| parse_operation(n + 1, operation)).collect()
}

fn parse_operation(number: usize, operation: &Value) -> Result<Operation> {
    let Value::Object(fields) = operation else {
        return Err(Error::InvalidSyntax(format!("operation {number} must be an object with \"op\"")));
    };
    let member = |name: &str| fields.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v);
    let op = match member("op").and_then(Value::as_str).map(str::to_ascii_lowercase).as_deref() {
        Some("add") => Op::Add,
        Some("remove") => Op::Remove,
        Some("replace") => Op::Replace,
        _ => {
            return Err(Error::InvalidSyntax(format!(
                "operation {number}: \"op\" must be \"add\", \"remove\" or \"replace\""
            )))
        }
    };
    let path = match member("path") {
        None | Some(Value::Null) => None,
        Some(Value::String(p)) if p.trim().is_empty() => None,
        Some(Value::String(p)) => Some(p.trim().to_string()),
        Some(_) => return Err(Error::InvalidPath(format!("operation {number}: \"path\" must be a string"))),
    };
    let value = member("value").cloned();
    if op != Op::Remove && value.is_none() {
        return Err(Error::InvalidValue(format!(
            "operation {number}: \"{}\" needs a \"value\"",
            op_name(op)
        )));
    }
    Ok(Operation { op, path, value })
}

fn op_name(op: Op) -> &'static str {
    match op {
        Op::Add => "add",
        Op::Remove => "remove",
        Op::Replace => "replace",
    }
}

/// Applies every operation to a copy of `current`; the first failure aborts with nothing changed.
pub fn apply(schema: &ResourceSchema, current: &Stored, operations: &[Operation]) -> Result<Stored> {
    let mut working = current.clone();
    for operation in operations {
        apply_one(schema, &mut working, operation)?;
    }
    // Re-validate the result exactly as a PUT body: types, required attributes, canonical form.
    let mut body = working;
    body.insert("schemas".into(), Value::Array(vec![Value::String(schema.core.id.clone())]));
    resource::normalize(schema, &Value::Object(body))
}

fn apply_one(schema: &ResourceSchema, resource: &mut Stored, operation: &Operation) -> Result<()> {
    match &operation.path {
        Some(text) => {
            let target = path::parse_patch_path(text, schema)?;
            apply_target(schema, resource, operation.op, &target, operation.value.as_ref(), text)
        }
        None => {
            if operation.op == Op::Remove {
                return Err(Error::NoTarget("\"remove\" needs a \"path\" naming what to remove".into()));
            }
            let Some(Value::Object(values)) = &operation.value else {
                return Err(Error::InvalidValue(format!(
                    "\"{}\" without a path needs an object of attributes as its value",
                    op_name(operation.op)
                )));
            };
            for (key, value) in values {
                if ["schemas", "meta", "id"].iter().any(|k| key.eq_ignore_ascii_case(k)) {
                    // Clients echo these (Okta sends the group id in a rename); they are not the client's to change.
                    continue;
                }
                if let Some(extension) = schema.extensions.iter().find(|e| e.id.eq_ignore_ascii_case(key)) {
                    let Value::Object(members) = value else {
                        return Err(Error::InvalidValue(format!(
                            "'{}' must be an object of its attributes",
                            extension.id
                        )));
                    };
                    for (name, value) in
                        members.iter().filter(|(name, _)| !name.eq_ignore_ascii_case("schemas"))
                    {
                        let path_text = format!("{}:{name}", extension.id);
                        let target = path::parse_patch_path(&path_text, schema)?;
                        apply_target(schema, resource, operation.op, &target, Some(value), &path_text)?;
                    }
                    continue;
                }
                // Entra sends dotted and URN-qualified attribute paths as keys.
                let target = path::parse_patch_path(key, schema)?;
                apply_target(schema, resource, operation.op, &target, Some(value), key)?;
            }
            Ok(())
        }
    }
}

fn apply_target(
    schema: &ResourceSchema,
    resource: &mut Stored,
    op: Op,
    target: &PatchTarget,
    value: Option<&Value>,
    text: &str,
) -> Result<()> {
    match target {
        PatchTarget::Extension(urn) => match (op, value) {
            (Op::Remove, _) => {
                resource.remove(urn);
                Ok(())
            }
            // Like a complex attribute: the listed attributes are set, the others kept.
            (Op::Add | Op::Replace, Some(Value::Object(members))) => {
                // Clients echo `schemas` inside the extension object; it names no attribute.
                for (name, value) in members.iter().filter(|(name, _)| !name.eq_ignore_ascii_case("schemas"))
                {
                    let path_text = format!("{urn}:{name}");
                    let target = path::parse_patch_path(&path_text, schema)?;
                    apply_target(schema, resource, op, &target, Some(value), &path_text)?;
                }
                Ok(())
            }
            (Op::Add | Op::Replace, _) => Err(Error::InvalidValue(format!(
                "'{text}' names an extension: its value must be an object of its attributes"
            ))),
        },
        PatchTarget::Attribute(attr) => {
            check_writable(attr, op, text)?;
            let container = container_of(resource, attr)?;
            apply_attribute(container, op, attr, value, text)
        }
        PatchTarget::Values { attr, filter, sub } => {
            check_writable(attr, op, text)?;
            let container = container_of(resource, attr)?;
            apply_values(container, op, attr, filter, sub.as_ref(), value, text)
        }
    }
}

fn check_writable(attr: &ResolvedAttr, op: Op, text: &str) -> Result<()> {
    let read_only = attr.attribute_def().mutability == Mutability::ReadOnly
        || attr.def().mutability == Mutability::ReadOnly;
    if read_only {
        return Err(Error::Mutability(format!("'{text}' is read-only and cannot be changed")));
    }
    if op == Op::Remove && attr.sub_name().is_none() && attr.attribute_def().required {
        return Err(Error::Mutability(format!("'{text}' is required and cannot be removed")));
    }
    Ok(())
}

/// The object an attribute lives in: the resource for core attributes, or its extension object.
fn container_of<'a>(resource: &'a mut Stored, attr: &ResolvedAttr) -> Result<&'a mut Map<String, Value>> {
    match attr.schema() {
        Some(urn) => {
            let slot = resource.entry(urn.to_string()).or_insert_with(|| Value::Object(Map::new()));
            if !slot.is_object() {
                *slot = Value::Object(Map::new());
            }
            slot.as_object_mut().ok_or_else(|| Error::Internal(format!("extension {urn} is not an object")))
        }
        None => Ok(resource),
    }
}

fn normalized(attr: &ResolvedAttr, value: &Value, text: &str) -> Result<Option<Value>> {
    resource::normalize_attribute(attr.def(), value, text)
}

/// The sub-attribute a path names, if it names one.
fn sub_def(attr: &ResolvedAttr) -> Option<&Attribute> {
    attr.sub_name().map(|_| attr.def())
}

fn apply_attribute(
    container: &mut Map<String, Value>,
    op: Op,
    attr: &ResolvedAttr,
    value: Option<&Value>,
    text: &str,
) -> Result<()> {
    let parent = attr.attribute_def();
    let name = parent.name.clone();
    match (sub_def(attr), op) {
        (None, Op::Remove) => {
            container.remove(&name);
        }
        (Some(sub), Op::Remove) => {
            for element in elements_mut(container.get_mut(&name)) {
                element.remove(&sub.name);
            }
        }
        (None, Op::Add | Op::Replace) => {
            let new = normalized(attr, value.unwrap_or(&Value::Null), text)?;
            match (new, parent.multi_valued, parent.is_complex(), op) {
                (None, _, _, _) => {
                    if op == Op::Replace {
                        container.remove(&name);
                    }
                }
                (Some(Value::Array(mut items)), true, _, Op::Add) => {
                    let mut existing = match container.remove(&name) {
                        Some(Value::Array(existing)) => existing,
                        _ => Vec::new(),
                    };
                    items.retain(|item| !existing.contains(item));
                    existing.extend(items);
                    // A new primary value (appended last) demotes the old one (RFC 7644 §3.5.2).
                    keep_one_primary(&mut existing);
                    container.insert(name, Value::Array(existing));
                }
                (Some(Value::Object(fields)), false, true, _) => {
                    // Complex single-valued: listed sub-attributes replaced, others kept.
                    let slot = container.entry(name).or_insert_with(|| Value::Object(Map::new()));
                    match slot {
                        Value::Object(existing) => existing.extend(fields),
                        other => *other = Value::Object(fields),
                    }
                }
                (Some(new), _, _, _) => {
                    container.insert(name, new);
                }
            }
        }
        (Some(sub), Op::Add | Op::Replace) => {
            let new = normalized(attr, value.unwrap_or(&Value::Null), text)?;
            if parent.multi_valued {
                let elements = elements_mut(container.get_mut(&name));
                if elements.is_empty() {
                    return Err(Error::NoTarget(format!(
                        "'{text}': '{}' has no values to change",
                        parent.name
                    )));
                }
                for element in elements {
                    set_or_remove(element, &sub.name, new.clone());
                }
            } else {
                let slot = container.entry(name).or_insert_with(|| Value::Object(Map::new()));
                if let Value::Object(fields) = slot {
                    set_or_remove(fields, &sub.name, new);
                }
            }
        }
    }
    Ok(())
}

fn set_or_remove(fields: &mut Map<String, Value>, key: &str, value: Option<Value>) {
    match value {
        Some(value) => {
            fields.insert(key.to_string(), value);
        }
        None => {
            fields.remove(key);
        }
    }
}

/// The objects of a multi-valued attribute (or the one object of a single complex value).
fn elements_mut(slot: Option<&mut Value>) -> Vec<&mut Map<String, Value>> {
    match slot {
        Some(Value::Array(items)) => items.iter_mut().filter_map(Value::as_object_mut).collect(),
        Some(Value::Object(fields)) => vec![fields],
        _ => Vec::new(),
    }
}

fn apply_values(
    container: &mut Map<String, Value>,
    op: Op,
    attr: &ResolvedAttr,
    value_filter: &ValueFilter,
    sub: Option<&ResolvedAttr>,
    value: Option<&Value>,
    text: &str,
) -> Result<()> {
    let name = attr.attribute_def().name.clone();
    let sub_attribute = sub.map(ResolvedAttr::def);
    if let Some(sub) = sub_attribute {
        if sub.mutability == Mutability::ReadOnly {
            return Err(Error::Mutability(format!("'{text}' is read-only and cannot be changed")));
        }
    }
    let mut items = match container.remove(&name) {
        Some(Value::Array(items)) => items,
        Some(other) => vec![other],
        None => Vec::new(),
    };
    let matched: Vec<usize> = items
        .iter()
        .enumerate()
        .filter(|(_, item)| filter::value_matches(value_filter, item))
        .map(|(n, _)| n)
        .collect();
    let outcome = (|| -> Result<()> {
        match (op, sub_attribute) {
            (Op::Remove, None) => {
                let mut position = 0;
                items.retain(|_| {
                    let keep = !matched.contains(&position);
                    position += 1;
                    keep
                });
            }
            (Op::Remove, Some(sub)) => {
                for &n in &matched {
                    if let Some(Value::Object(fields)) = items.get_mut(n) {
                        fields.remove(&sub.name);
                    }
                }
            }
            (Op::Add | Op::Replace, sub) => {
                let label = text;
                let new = match sub {
                    Some(sub) => resource::normalize_attribute(sub, value.unwrap_or(&Value::Null), label)?,
                    None => match value {
                        Some(Value::Array(list)) if list.len() == 1 => {
                            list.first().map(|v| resource_element(attr, v, label)).transpose()?.flatten()
                        }
                        Some(v) => resource_element(attr, v, label)?,
                        None => None,
                    },
                };
                if matched.is_empty() {
                    let created =
                        element_for_unmatched_filter(value_filter, sub.map(|s| s.name.as_str()), new.clone())
                            .ok_or_else(|| {
                                Error::NoTarget(format!("'{text}' matched no value of '{name}'"))
                            })?;
                    items.push(created);
                } else {
                    for &n in &matched {
                        let Some(Value::Object(fields)) = items.get_mut(n) else { continue };
                        match (sub, &new) {
                            (Some(sub), new) => set_or_remove(fields, &sub.name, new.clone()),
                            (None, Some(Value::Object(update))) => fields.extend(update.clone()),
                            (None, _) => {}
                        }
                    }
                }
                let promoted = new
                    .as_ref()
                    .is_some_and(|v| v == &Value::Bool(true) && sub.is_some_and(|s| s.name == "primary"))
                    || new.as_ref().and_then(|v| v.get("primary")) == Some(&Value::Bool(true));
                if promoted {
                    // The matched value becomes the one primary value.
                    let winner = matched.first().copied().unwrap_or(items.len().saturating_sub(1));
                    demote_all_but(&mut items, winner);
                }
            }
        }
        Ok(())
    })();
    if !items.is_empty() {
        container.insert(name, Value::Array(items));
    }
    outcome
}

fn resource_element(attr: &ResolvedAttr, value: &Value, label: &str) -> Result<Option<Value>> {
    let element = Value::Array(vec![value.clone()]);
    match resource::normalize_attribute(attr.attribute_def(), &element, label)? {
        Some(Value::Array(mut items)) => Ok(items.pop()),
        _ => Ok(None),
    }
}

/// Entra sends `emails[type eq "work"].value` to set a work e-mail that may not exist yet:
/// with a single `type eq` filter, the element is created. Any other unmatched filter fails.
fn element_for_unmatched_filter(
    value_filter: &ValueFilter,
    sub: Option<&str>,
    value: Option<Value>,
) -> Option<Value> {
    let type_value = filter::single_type_equality(value_filter)?;
    let mut element = Map::new();
    element.insert("type".into(), Value::String(type_value));
    match (sub, value) {
        (Some(sub), Some(value)) => {
            element.insert(sub.to_string(), value);
        }
        (None, Some(Value::Object(fields))) => element.extend(fields),
        _ => return None,
    }
    Some(Value::Object(element))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scim::schema::{Registry, ENTERPRISE_USER_SCHEMA, USER_SCHEMA};
    use serde_json::json;

    fn user() -> Stored {
        json!({
            "userName": "ann", "active": true, "title": "Clerk", "displayName": "Ann",
            "name": {"givenName": "Ann", "familyName": "Lee"},
            "emails": [{"value": "ann@work", "type": "work", "primary": true}, {"value": "ann@home", "type": "home"}],
            ENTERPRISE_USER_SCHEMA: {"department": "Ops"}
        })
        .as_object()
        .cloned()
        .unwrap()
    }

    fn patch(operations: Value) -> Result<Stored> {
        let registry = Registry::load().unwrap();
        let ops = parse(&json!({"schemas": [PATCH_OP_SCHEMA], "Operations": operations}))?;
        apply(&registry.user, &user(), &ops)
    }

    #[test]
    fn replace_add_and_remove_with_paths() {
        let out = patch(json!([
            {"op": "replace", "path": "title", "value": "Boss"},
            {"op": "add", "path": "name.middleName", "value": "Q"},
            {"op": "remove", "path": "displayName"},
            {"op": "add", "path": "phoneNumbers", "value": [{"value": "+1", "type": "mobile"}]}
        ]))
        .unwrap();
        assert_eq!(out["title"], "Boss");
        assert_eq!(out["name"], json!({"givenName": "Ann", "familyName": "Lee", "middleName": "Q"}));
        assert!(out.get("displayName").is_none());
        assert_eq!(out["phoneNumbers"], json!([{"value": "+1", "type": "mobile"}]));
    }

    #[test]
    fn entra_dialect_capitalised_ops_string_booleans_and_dotted_keys() {
        let out = patch(json!([
            {"op": "Replace", "path": "active", "value": "False"},
            {"op": "Add", "value": {"name.givenName": "Anna",
                "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber": "7"}},
            {"op": "Replace", "path": "emails[type eq \"work\"].value", "value": "anna@work"},
            {"op": "Add", "path": "addresses[type eq \"work\"].formatted", "value": "1 Main St"}
        ]))
        .unwrap();
        assert_eq!(out["active"], false);
        assert_eq!(out["name"]["givenName"], "Anna");
        assert_eq!(out[ENTERPRISE_USER_SCHEMA], json!({"department": "Ops", "employeeNumber": "7"}));
        assert_eq!(out["emails"][0], json!({"value": "anna@work", "type": "work", "primary": true}));
        assert_eq!(out["addresses"], json!([{"type": "work", "formatted": "1 Main St"}]));
    }

    #[test]
    fn pathless_replace_with_an_object_and_extension_members() {
        let out = patch(json!([{"op": "replace", "value": {
            "id": "ignored", "active": false, "displayName": "A. Lee",
            ENTERPRISE_USER_SCHEMA: {"manager": {"displayName": "Bo"}}
        }}]))
        .unwrap();
        assert_eq!(out["active"], false);
        assert_eq!(out["displayName"], "A. Lee");
        assert_eq!(out[ENTERPRISE_USER_SCHEMA]["manager"], json!({"displayName": "Bo"}));
        assert_eq!(out[ENTERPRISE_USER_SCHEMA]["department"], "Ops");
    }

    #[test]
    fn a_whole_extension_path_takes_an_object_of_its_attributes() {
        let out = patch(json!([
            {"op": "add", "path": ENTERPRISE_USER_SCHEMA,
             "value": {"schemas": [ENTERPRISE_USER_SCHEMA], "costCenter": "7", "manager": {"displayName": "Bo"}}}
        ]))
        .unwrap();
        assert_eq!(
            out[ENTERPRISE_USER_SCHEMA],
            json!({"department": "Ops", "costCenter": "7", "manager": {"displayName": "Bo"}})
        );
        let removed = patch(json!([{"op": "remove", "path": ENTERPRISE_USER_SCHEMA}])).unwrap();
        assert!(removed.get(ENTERPRISE_USER_SCHEMA).is_none());
        assert!(patch(json!([{"op": "replace", "path": ENTERPRISE_USER_SCHEMA, "value": "x"}])).is_err());
    }

    #[test]
    fn value_filters_select_elements_and_primary_stays_unique() {
        let out = patch(json!([
            {"op": "remove", "path": "emails[type eq \"home\"]"},
            {"op": "add", "path": "emails", "value": [{"value": "new@x", "type": "other", "primary": true}]}
        ]))
        .unwrap();
        assert_eq!(
            out["emails"],
            json!([{"value": "ann@work", "type": "work", "primary": false}, {"value": "new@x", "type": "other", "primary": true}])
        );
        // Removing a value that is not there is a no-op, not an error.
        assert_eq!(patch(json!([{"op": "remove", "path": "emails[type eq \"pager\"]"}])).unwrap(), user());
        // Adding an existing value does not duplicate it.
        let same =
            patch(json!([{"op": "add", "path": "emails", "value": [{"value": "ann@home", "type": "home"}]}]))
                .unwrap();
        assert_eq!(same["emails"].as_array().unwrap().len(), 2);
        let primary = json!([{"op": "add", "path": "emails",
            "value": [{"value": "ann@work", "type": "work", "primary": true}]}]);
        assert_eq!(patch(primary).unwrap(), user(), "re-adding the primary value changes nothing");
    }

    #[test]
    fn a_failing_operation_changes_nothing_and_says_why() {
        let cases = [
            (
                json!([{"op": "replace", "path": "title", "value": "X"}, {"op": "replace", "path": "id", "value": "y"}]),
                "mutability",
            ),
            (json!([{"op": "remove", "path": "userName"}]), "mutability"),
            (json!([{"op": "remove", "path": "groups"}]), "mutability"),
            (
                json!([{"op": "replace", "path": "meta.created", "value": "2020-01-01T00:00:00Z"}]),
                "mutability",
            ),
            (json!([{"op": "replace", "path": "nosuch", "value": 1}]), "invalidPath"),
            (json!([{"op": "replace", "path": "emails[type eq ]", "value": 1}]), "invalidPath"),
            (json!([{"op": "remove"}]), "noTarget"),
            (json!([{"op": "replace", "path": "emails[value eq \"zz\"].type", "value": "home"}]), "noTarget"),
            (json!([{"op": "replace", "path": "active", "value": "perhaps"}]), "invalidValue"),
            (json!([{"op": "replace", "path": "userName", "value": null}]), "invalidValue"),
            (json!([{"op": "launch", "path": "title"}]), "invalidSyntax"),
            (json!([]), "invalidSyntax"),
        ];
        for (operations, expected) in cases {
            let error = patch(operations.clone()).unwrap_err();
            let kind = match &error {
                Error::Mutability(_) => "mutability",
                Error::InvalidPath(_) => "invalidPath",
                Error::NoTarget(_) => "noTarget",
                Error::InvalidValue(_) => "invalidValue",
                Error::InvalidSyntax(_) => "invalidSyntax",
                other => panic!("{operations}: unexpected {other:?}"),
            };
            assert_eq!(kind, expected, "{operations}: {error}");
            assert!(!error.to_string().is_empty());
        }
    }

    #[test]
    fn the_operations_key_and_schemas_are_checked() {
        let registry = Registry::load().unwrap();
        let lower =
            parse(&json!({"schemas": [PATCH_OP_SCHEMA], "operations": [{"op": "remove", "path": "title"}]}))
                .unwrap();
        assert!(apply(&registry.user, &user(), &lower).unwrap().get("title").is_none());
        assert!(parse(&json!({"Operations": [{"op": "remove", "path": "title"}]})).is_err());
        assert!(parse(&json!({"schemas": [USER_SCHEMA], "Operations": []})).is_err());
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use crate::scim::schema::{Registry, ENTERPRISE_USER_SCHEMA};
    use proptest::prelude::*;
    use serde_json::json;

    fn valid_operation() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(json!({"op": "replace", "path": "title", "value": "Lead"})),
            Just(json!({"op": "Replace", "path": "active", "value": "False"})),
            Just(
                json!({"op": "add", "path": "emails", "value": [{"value": "x@y", "type": "home", "primary": true}]})
            ),
            Just(json!({"op": "remove", "path": "emails[type eq \"work\"]"})),
            Just(json!({"op": "replace", "path": "emails[type eq \"work\"].value", "value": "w@y"})),
            Just(json!({"op": "add", "value": {"name.givenName": "Q", "nickName": "q"}})),
            Just(json!({"op": "remove", "path": "name.familyName"})),
            Just(json!({"op": "replace", "value": {ENTERPRISE_USER_SCHEMA: {"department": "D"}}})),
        ]
    }

    fn failing_operation() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(json!({"op": "replace", "path": "id", "value": "x"})),
            Just(json!({"op": "remove", "path": "userName"})),
            Just(json!({"op": "replace", "path": "unknownAttr", "value": 1})),
            Just(json!({"op": "replace", "path": "active", "value": 3})),
            Just(json!({"op": "remove"})),
            Just(json!({"op": "replace", "path": "emails[value eq \"none\"].type", "value": "home"})),
        ]
    }

    fn user() -> Stored {
        json!({"userName": "ann", "active": true, "name": {"givenName": "Ann", "familyName": "Lee"},
               "emails": [{"value": "a@w", "type": "work", "primary": true}]})
        .as_object()
        .cloned()
        .unwrap()
    }

    fn run(operations: Vec<Value>) -> Result<Stored> {
        let registry = Registry::load().unwrap();
        let parsed = parse(&json!({"schemas": [PATCH_OP_SCHEMA], "Operations": operations}))?;
        apply(&registry.user, &user(), &parsed)
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

        /// A PATCH with any failing operation, anywhere in the list, yields no resource at all:
        /// there is no partial result for the store to write.
        #[test]
        fn any_failing_operation_fails_the_whole_patch(
            before in prop::collection::vec(valid_operation(), 0..4),
            bad in failing_operation(),
            after in prop::collection::vec(valid_operation(), 0..4),
        ) {
            let mut operations = before;
            operations.push(bad);
            operations.extend(after);
            prop_assert!(run(operations).is_err());
        }

        /// A successful PATCH stores exactly what a PUT of the result would: normalising it again
        /// changes nothing, and at most one e-mail is primary.
        #[test]
        fn successful_patches_are_normal_resources(operations in prop::collection::vec(valid_operation(), 1..6)) {
            let out = run(operations).unwrap();
            let registry = Registry::load().unwrap();
            let mut body = out.clone();
            body.insert("schemas".into(), json!([crate::scim::schema::USER_SCHEMA]));
            prop_assert_eq!(&resource::normalize(&registry.user, &Value::Object(body)).unwrap(), &out);
            let primaries = out.get("emails").and_then(Value::as_array).map_or(0, |emails| {
                emails.iter().filter(|e| e.get("primary") == Some(&Value::Bool(true))).count()
            });
            prop_assert!(primaries <= 1);
        }
    }
}
