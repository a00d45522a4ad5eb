//! `attributes` / `excludedAttributes` (RFC 7644 §3.4.2.5) and the `returned` rules
//! (RFC 7643 §7) applied to a rendered resource.
//!
//! `schemas` and `returned: always` attributes (`id`) survive any projection; `returned: never`
//! never appears; `returned: request` only when named. Unknown names are ignored, as the RFC
//! asks. When both lists are given, `attributes` applies first, then `excludedAttributes`.

use serde_json::{Map, Value};

use super::schema::{Attribute, ResourceSchema, Returned};

/// A parsed attribute name: which schema (None = core or common), attribute, sub-attribute.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Name {
    extension: Option<String>,
    attr: Option<String>,
    sub: Option<String>,
}

fn parse_name(schema: &ResourceSchema, raw: &str) -> Option<Name> {
    let lower = raw.trim().to_ascii_lowercase();
    for s in schema.all_schemas() {
        let urn = s.id.to_ascii_lowercase();
        let is_extension = schema.is_extension(&s.id);
        let extension = is_extension.then(|| s.id.clone());
        if lower == urn {
            return Some(Name { extension, attr: None, sub: None });
        }
        if let Some(rest) = lower.strip_prefix(&urn).and_then(|r| r.strip_prefix(':')) {
            let (attr, sub) = split(rest);
            return Some(Name { extension, attr: Some(attr), sub });
        }
    }
    if lower.starts_with("urn:") {
        return None;
    }
    let (attr, sub) = split(&lower);
    Some(Name { extension: None, attr: Some(attr), sub })
}

fn split(path: &str) -> (String, Option<String>) {
    match path.split_once('.') {
        Some((attr, sub)) => (attr.to_string(), Some(sub.to_string())),
        None => (path.to_string(), None),
    }
}

/// Whether a projection keeps (some of) the core attribute `name`, so the store can skip
/// reading what the response would drop (a Group's members).
pub fn keeps(schema: &ResourceSchema, name: &str, attributes: &[String], excluded: &[String]) -> bool {
    let mut probe = Map::new();
    let element: Map<String, Value> =
        [("value".to_string(), Value::String("probe".into()))].into_iter().collect();
    probe.insert(name.to_string(), Value::Array(vec![Value::Object(element)]));
    project(schema, probe, attributes, excluded).contains_key(name)
}

/// Projects a rendered resource. `attributes` and `excluded` are the raw names from the request.
pub fn project(
    schema: &ResourceSchema,
    mut resource: Map<String, Value>,
    attributes: &[String],
    excluded: &[String],
) -> Map<String, Value> {
    let wanted: Vec<Name> = attributes.iter().filter_map(|n| parse_name(schema, n)).collect();
    let unwanted: Vec<Name> = excluded.iter().filter_map(|n| parse_name(schema, n)).collect();

    let keys: Vec<String> = resource.keys().cloned().collect();
    for key in keys {
        if key == "schemas" || key == "id" {
            continue;
        }
        let extension = schema.extensions.iter().find(|e| e.id == key);
        let keep = match extension {
            Some(extension) => {
                let Some(Value::Object(body)) = resource.get_mut(&key) else { continue };
                project_object(body, &extension.attributes, Some(&extension.id), &wanted, &unwanted);
                let excluded_whole =
                    unwanted.iter().any(|n| n.extension.as_deref() == Some(key.as_str()) && n.attr.is_none());
                !excluded_whole
                    && !body.is_empty()
                    && (wanted.is_empty()
                        || wanted.iter().any(|n| n.extension.as_deref() == Some(key.as_str())))
            }
            None => {
                let attribute = schema.core.attribute(&key);
                let lower = key.to_ascii_lowercase();
                match resource.get_mut(&key) {
                    Some(value) => keep_attribute(value, &lower, attribute, None, &wanted, &unwanted),
                    None => true,
                }
            }
        };
        if !keep {
            resource.remove(&key);
        }
    }
    resource
}

fn project_object(
    body: &mut Map<String, Value>,
    attributes: &[Attribute],
    extension: Option<&str>,
    wanted: &[Name],
    unwanted: &[Name],
) {
    let extension_named_whole =
        wanted.iter().any(|n| n.extension.as_deref() == extension && n.attr.is_none());
    let wanted_here: Vec<Name> = if extension_named_whole {
        Vec::new()
    } else {
        wanted.iter().filter(|n| n.extension.as_deref() == extension).cloned().collect()
    };
    let keys: Vec<String> = body.keys().cloned().collect();
    for key in keys {
        let attribute = attributes.iter().find(|a| a.name == key);
        let lower = key.to_ascii_lowercase();
        let keep = match body.get_mut(&key) {
            Some(value) => keep_attribute(value, &lower, attribute, extension, &wanted_here, unwanted),
            None => true,
        };
        if !keep {
            body.remove(&key);
        }
    }
}

/// Whether a top-level attribute stays; trims its sub-attributes in place.
fn keep_attribute(
    value: &mut Value,
    name: &str,
    attribute: Option<&Attribute>,
    extension: Option<&str>,
    wanted: &[Name],
    unwanted: &[Name],
) -> bool {
    let returned = attribute.map_or(Returned::Default, |a| a.returned);
    if returned == Returned::Never {
        return false;
    }
    let matches_name = |n: &&Name| n.extension.as_deref() == extension && n.attr.as_deref() == Some(name);
    let named: Vec<&Name> = wanted.iter().filter(matches_name).collect();
    if returned == Returned::Always {
        return true;
    }
    if !wanted.is_empty() || returned == Returned::Request {
        if named.is_empty() {
            return false;
        }
        if named.iter().all(|n| n.sub.is_some()) {
            let subs: Vec<&str> = named.iter().filter_map(|n| n.sub.as_deref()).collect();
            retain_subs(value, |sub| subs.contains(&sub));
        }
    }
    let excluded: Vec<&Name> = unwanted.iter().filter(matches_name).collect();
    if excluded.iter().any(|n| n.sub.is_none()) {
        return false;
    }
    let excluded_subs: Vec<&str> = excluded.iter().filter_map(|n| n.sub.as_deref()).collect();
    if !excluded_subs.is_empty() {
        retain_subs(value, |sub| !excluded_subs.contains(&sub));
    }
    !is_empty(value)
}

/// Keeps the sub-attributes (lower-case names) that pass, in an object or array of objects.
fn retain_subs(value: &mut Value, keep: impl Fn(&str) -> bool) {
    match value {
        Value::Object(fields) => fields.retain(|k, _| keep(&k.to_ascii_lowercase())),
        Value::Array(items) => {
            for item in items.iter_mut() {
                if let Value::Object(fields) = item {
                    fields.retain(|k, _| keep(&k.to_ascii_lowercase()));
                }
            }
            items.retain(|item| !is_empty(item));
        }
        _ => {}
    }
}

fn is_empty(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::Object(fields) => fields.is_empty(),
        Value::Array(items) => items.is_empty(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scim::schema::{Registry, ENTERPRISE_USER_SCHEMA};
    use serde_json::json;

    fn user() -> Map<String, Value> {
        json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User", ENTERPRISE_USER_SCHEMA],
            "id": "u1", "externalId": "x", "userName": "ann", "name": {"givenName": "Ann", "familyName": "Lee"},
            "emails": [{"value": "a@x", "type": "work"}], "password": "never",
            ENTERPRISE_USER_SCHEMA: {"department": "Ops", "costCenter": "7"},
            "meta": {"resourceType": "User", "version": "W/\"1\""}
        })
        .as_object()
        .cloned()
        .unwrap()
    }

    #[test]
    fn keeps_says_whether_a_projection_returns_an_attribute() {
        let group = Registry::load().unwrap().group;
        let names = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(keeps(&group, "members", &[], &[]));
        assert!(!keeps(&group, "members", &[], &names(&["members"])));
        assert!(!keeps(&group, "members", &[], &names(&["Members"])));
        assert!(!keeps(&group, "members", &names(&["displayName"]), &[]));
        assert!(keeps(&group, "members", &names(&["members.value"]), &[]));
        assert!(keeps(&group, "members", &names(&["displayName", "members"]), &[]));
    }

    fn project_names(attributes: &[&str], excluded: &[&str]) -> Value {
        let registry = Registry::load().unwrap();
        let a: Vec<String> = attributes.iter().map(|s| s.to_string()).collect();
        let e: Vec<String> = excluded.iter().map(|s| s.to_string()).collect();
        Value::Object(project(&registry.user, user(), &a, &e))
    }

    #[test]
    fn no_parameters_return_the_default_set_without_never_attributes() {
        let out = project_names(&[], &[]);
        assert!(out.get("password").is_none());
        assert_eq!(out["userName"], "ann");
        assert_eq!(out["meta"]["version"], "W/\"1\"");
    }

    #[test]
    fn attributes_keep_only_the_named_plus_id_and_schemas() {
        let out = project_names(
            &[
                "USERNAME",
                "name.givenName",
                "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department",
            ],
            &[],
        );
        assert_eq!(
            out,
            json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User", ENTERPRISE_USER_SCHEMA],
                   "id": "u1", "userName": "ann", "name": {"givenName": "Ann"},
                   ENTERPRISE_USER_SCHEMA: {"department": "Ops"}})
        );
    }

    #[test]
    fn excluded_attributes_cannot_remove_id() {
        let out = project_names(
            &[],
            &["id", "emails", "name.familyName", "meta", "nosuch", ENTERPRISE_USER_SCHEMA],
        );
        assert_eq!(out["id"], "u1");
        assert!(out.get("emails").is_none() && out.get("meta").is_none());
        assert_eq!(out["name"], json!({"givenName": "Ann"}));
        assert!(out.get(ENTERPRISE_USER_SCHEMA).is_none());
    }

    #[test]
    fn a_whole_extension_can_be_requested_by_its_urn() {
        let out = project_names(&[ENTERPRISE_USER_SCHEMA], &[]);
        assert_eq!(out[ENTERPRISE_USER_SCHEMA], json!({"department": "Ops", "costCenter": "7"}));
        assert!(out.get("userName").is_none());
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use crate::scim::schema::{Registry, ENTERPRISE_USER_SCHEMA};
    use proptest::prelude::*;
    use serde_json::json;

    fn name() -> impl Strategy<Value = String> {
        prop::sample::select(vec![
            "id",
            "userName",
            "USERNAME",
            "password",
            "name",
            "name.givenName",
            "emails",
            "emails.value",
            "meta",
            "meta.version",
            "schemas",
            "nosuch",
            ENTERPRISE_USER_SCHEMA,
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department",
        ])
        .prop_map(str::to_string)
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

        /// Whatever is asked, `returned: never` stays out and `returned: always` stays in.
        #[test]
        fn never_and_always_hold_under_any_projection(
            attributes in prop::collection::vec(name(), 0..5),
            excluded in prop::collection::vec(name(), 0..5),
        ) {
            let registry = Registry::load().unwrap();
            let resource = json!({
                "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "id": "u1", "userName": "ann",
                "password": "secret", "name": {"givenName": "Ann"}, "emails": [{"value": "a@x"}],
                ENTERPRISE_USER_SCHEMA: {"department": "Ops"}, "meta": {"version": "W/\"1\""}
            });
            let out = project(&registry.user, resource.as_object().unwrap().clone(), &attributes, &excluded);
            prop_assert!(!out.contains_key("password"));
            prop_assert_eq!(out.get("id"), Some(&json!("u1")));
            prop_assert!(out.contains_key("schemas"));
        }
    }
}
