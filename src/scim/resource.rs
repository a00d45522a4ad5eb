//! Resources as clients send them and as scimd stores and returns them.
//!
//! [`normalize`] turns a request body into the stored form: canonical attribute names,
//! values checked against the schema, read-only and unknown attributes dropped, write-only
//! ones (password) discarded, client dialects (Entra's `"False"`) folded into proper JSON.
//! [`render`] adds what the server owns (`schemas`, `id`, `meta`) back for responses.

use serde_json::{Map, Value};

use super::index;
use super::schema::{AttrType, Attribute, Mutability, ResourceKind, ResourceSchema, Schema};
use crate::error::{Error, Result};

/// A resource in stored form: canonical names, no `id`, `meta`, `schemas` or read-only values.
pub type Stored = Map<String, Value>;

/// Server-owned metadata of a stored resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Meta {
    pub id: String,
    pub created_at: i64,
    pub modified_at: i64,
    pub version: i64,
}

impl Meta {
    /// The weak entity tag of this version, as `meta.version` and the `ETag` header carry it.
    pub fn etag(&self) -> String {
        format!("W/\"{}\"", self.version)
    }
}

/// Whether an `If-Match` header value admits the current version (`*` admits any).
pub fn if_match_admits(header: &str, meta: &Meta) -> bool {
    // Weak comparison (RFC 9110 §8.8.3.2): W/"4" and "4" name the same version.
    let opaque = format!("\"{}\"", meta.version);
    header.split(',').map(str::trim).any(|tag| tag == "*" || tag.strip_prefix("W/").unwrap_or(tag) == opaque)
}

/// Validates a POST/PUT body against the resource's schemas and returns its stored form.
pub fn normalize(schema: &ResourceSchema, body: &Value) -> Result<Stored> {
    let Value::Object(fields) = body else {
        return Err(Error::InvalidSyntax(format!(
            "the body must be a JSON object representing a {}",
            schema.kind.as_str()
        )));
    };
    check_schemas_member(schema, fields)?;
    let mut stored = Map::new();
    for (key, value) in fields {
        if key.eq_ignore_ascii_case("schemas")
            || key.eq_ignore_ascii_case("id")
            || key.eq_ignore_ascii_case("meta")
        {
            // `schemas` is recomputed on output; `id` and `meta` are the server's (clients echo them).
            continue;
        }
        if key.eq_ignore_ascii_case("externalId") {
            match value {
                Value::Null => {}
                Value::String(s) => {
                    stored.insert("externalId".into(), Value::String(s.clone()));
                }
                _ => return Err(Error::InvalidValue("attribute 'externalId' must be a string".into())),
            }
            continue;
        }
        if let Some(extension) = schema.extensions.iter().find(|s| s.id.eq_ignore_ascii_case(key)) {
            let normalized = normalize_extension(extension, value)?;
            if !normalized.is_empty() {
                stored.insert(extension.id.clone(), Value::Object(normalized));
            }
            continue;
        }
        match schema.core.attribute(key) {
            Some(attribute) => {
                if let Some(normalized) = normalize_attribute(attribute, value, &attribute.name)? {
                    stored.insert(attribute.name.clone(), normalized);
                }
            }
            None => tracing::debug!(attribute = %key, "ignoring an unknown attribute"),
        }
    }
    check_required(&schema.core, &stored)?;
    Ok(stored)
}

fn check_schemas_member(schema: &ResourceSchema, fields: &Map<String, Value>) -> Result<()> {
    let core = &schema.core.id;
    let Some(schemas) = fields.iter().find(|(k, _)| k.eq_ignore_ascii_case("schemas")).map(|(_, v)| v) else {
        return Err(Error::InvalidValue(format!("the body must have \"schemas\": [\"{core}\"]")));
    };
    let Value::Array(items) = schemas else {
        return Err(Error::InvalidSyntax("\"schemas\" must be an array of schema URNs".into()));
    };
    let mut has_core = false;
    for item in items {
        let Value::String(urn) = item else {
            return Err(Error::InvalidSyntax("\"schemas\" must be an array of schema URNs".into()));
        };
        has_core |= urn.eq_ignore_ascii_case(core);
    }
    if has_core {
        Ok(())
    } else {
        Err(Error::InvalidValue(format!(
            "\"schemas\" must include \"{core}\" for a {}",
            schema.kind.as_str()
        )))
    }
}

fn normalize_extension(extension: &Schema, value: &Value) -> Result<Stored> {
    let Value::Object(fields) = value else {
        if value.is_null() {
            return Ok(Map::new());
        }
        return Err(Error::InvalidValue(format!("'{}' must be an object of its attributes", extension.id)));
    };
    let mut stored = Map::new();
    for (key, value) in fields {
        match extension.attribute(key) {
            Some(attribute) => {
                let label = format!("{}:{}", extension.id, attribute.name);
                if let Some(normalized) = normalize_attribute(attribute, value, &label)? {
                    stored.insert(attribute.name.clone(), normalized);
                }
            }
            None => tracing::debug!(attribute = %key, "ignoring an unknown extension attribute"),
        }
    }
    check_required(extension, &stored)?;
    Ok(stored)
}

fn check_required(schema: &Schema, stored: &Stored) -> Result<()> {
    for attribute in schema.attributes.iter().filter(|a| a.required) {
        let present = match stored.get(&attribute.name) {
            Some(Value::String(s)) => !s.trim().is_empty(),
            Some(_) => true,
            None => false,
        };
        if !present {
            return Err(Error::InvalidValue(format!("attribute '{}' is required", attribute.name)));
        }
    }
    Ok(())
}

/// One attribute value in stored form, or None when it is unassigned (null, empty) or not the
/// client's to set (read-only, write-only).
pub fn normalize_attribute(attribute: &Attribute, value: &Value, label: &str) -> Result<Option<Value>> {
    match attribute.mutability {
        Mutability::ReadOnly => return Ok(None),
        Mutability::WriteOnly => {
            // Accepted and discarded: scimd never stores secrets it does not need.
            return match value {
                Value::String(_) | Value::Null => Ok(None),
                _ => Err(Error::InvalidValue(format!("attribute '{label}' must be a string"))),
            };
        }
        Mutability::ReadWrite | Mutability::Immutable => {}
    }
    if value.is_null() {
        return Ok(None);
    }
    if !attribute.multi_valued {
        return normalize_single(attribute, value, label);
    }
    let Value::Array(items) = value else {
        return Err(Error::InvalidValue(format!("attribute '{label}' is multi-valued and must be an array")));
    };
    // An element of an attribute with a `value` (emails, phoneNumbers, ...) means nothing
    // without one: removing `phoneNumbers[type eq "work"].value` removes the work number.
    let needs_value = attribute.is_complex() && attribute.sub_attribute("value").is_some();
    let mut normalized = Vec::with_capacity(items.len());
    for item in items {
        if let Some(value) = normalize_single(attribute, item, label)? {
            if needs_value && value.get("value").is_none() {
                continue;
            }
            normalized.push(value);
        }
    }
    keep_one_primary(&mut normalized);
    Ok((!normalized.is_empty()).then_some(Value::Array(normalized)))
}

fn normalize_single(attribute: &Attribute, value: &Value, label: &str) -> Result<Option<Value>> {
    if value.is_null() {
        return Ok(None);
    }
    if attribute.is_complex() {
        let fields = match value {
            Value::Object(fields) => fields,
            // Entra sends a reference (`manager`) as a bare id, or as a one-element array.
            Value::String(id) if !attribute.multi_valued && attribute.sub_attribute("value").is_some() => {
                return Ok((!id.trim().is_empty()).then(|| serde_json::json!({ "value": id })));
            }
            Value::Array(items) if !attribute.multi_valued && items.len() <= 1 => {
                return match items.first() {
                    Some(only) => normalize_single(attribute, only, label),
                    None => Ok(None),
                };
            }
            _ => return Err(Error::InvalidValue(format!("attribute '{label}' must be an object"))),
        };
        let mut stored = Map::new();
        for (key, value) in fields {
            let Some(sub) = attribute.sub_attribute(key) else { continue };
            let sub_label = format!("{label}.{}", sub.name);
            if let Some(normalized) = normalize_attribute(sub, value, &sub_label)? {
                stored.insert(sub.name.clone(), normalized);
            }
        }
        return Ok((!stored.is_empty()).then_some(Value::Object(stored)));
    }
    scalar(attribute, value, label).map(Some)
}

/// A scalar checked against its type. Booleans also accept the strings "true"/"false" in any
/// case, because Entra ID sends `"False"`.
pub fn scalar(attribute: &Attribute, value: &Value, label: &str) -> Result<Value> {
    let wrong = |expected: &str| {
        Err(Error::InvalidValue(format!("attribute '{label}' must be {expected}, not {}", describe(value))))
    };
    match attribute.kind {
        AttrType::String | AttrType::Reference | AttrType::Binary => match value {
            Value::String(_) => Ok(value.clone()),
            _ => wrong("a string"),
        },
        AttrType::Boolean => match value {
            Value::Bool(_) => Ok(value.clone()),
            Value::String(s) if s.eq_ignore_ascii_case("true") => Ok(Value::Bool(true)),
            Value::String(s) if s.eq_ignore_ascii_case("false") => Ok(Value::Bool(false)),
            _ => wrong("a boolean (true or false)"),
        },
        AttrType::DateTime => match value {
            Value::String(s) => match index::canonical_datetime(s) {
                Some(canonical) => Ok(Value::String(canonical)),
                None => wrong("an xsd:dateTime such as \"2026-03-02T09:14:07Z\""),
            },
            _ => wrong("an xsd:dateTime string"),
        },
        AttrType::Integer => match value {
            Value::Number(n) if n.is_i64() || n.is_u64() => Ok(value.clone()),
            _ => wrong("an integer"),
        },
        AttrType::Decimal => match value {
            Value::Number(_) => Ok(value.clone()),
            _ => wrong("a number"),
        },
        AttrType::Complex => wrong("an object"),
    }
}

fn describe(value: &Value) -> String {
    match value {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => format!("the number {n}"),
        Value::String(s) => format!("the string {}", Value::String(s.chars().take(40).collect())),
        Value::Array(_) => "an array".into(),
        Value::Object(_) => "an object".into(),
    }
}

/// At most one value may be primary (RFC 7643 §2.4): the last one marked wins.
pub fn keep_one_primary(values: &mut [Value]) {
    if let Some(winner) = values.iter().rposition(|v| v.get("primary") == Some(&Value::Bool(true))) {
        demote_all_but(values, winner);
    }
}

/// Sets `primary` to false on every value but `winner` that claims it.
pub fn demote_all_but(values: &mut [Value], winner: usize) {
    for (pos, value) in values.iter_mut().enumerate() {
        if let (true, Value::Object(fields)) = (pos != winner, value) {
            if fields.get("primary") == Some(&Value::Bool(true)) {
                fields.insert("primary".into(), Value::Bool(false));
            }
        }
    }
}

/// The full response representation of a stored resource (consumed: lists render many).
pub fn render(
    schema: &ResourceSchema,
    mut stored: Stored,
    meta: &Meta,
    base_url: &str,
) -> Map<String, Value> {
    let mut out = Map::with_capacity(stored.len() + 4);
    let mut schemas = vec![Value::String(schema.core.id.clone())];
    schemas.extend(
        schema.extensions.iter().filter(|e| stored.contains_key(&e.id)).map(|e| Value::String(e.id.clone())),
    );
    out.insert("schemas".into(), Value::Array(schemas));
    out.insert("id".into(), Value::String(meta.id.clone()));
    if let Some(external_id) = stored.shift_remove("externalId") {
        out.insert("externalId".into(), external_id);
    }
    out.extend(stored);
    out.insert("meta".into(), render_meta(schema.kind, meta, base_url));
    out
}

fn render_meta(kind: ResourceKind, meta: &Meta, base_url: &str) -> Value {
    let mut out = Map::new();
    out.insert("resourceType".into(), Value::String(kind.as_str().into()));
    out.insert("created".into(), Value::String(index::format_millis(meta.created_at)));
    out.insert("lastModified".into(), Value::String(index::format_millis(meta.modified_at)));
    out.insert("location".into(), Value::String(location(kind, &meta.id, base_url)));
    out.insert("version".into(), Value::String(meta.etag()));
    Value::Object(out)
}

/// The attributes that differ between two stored resources, by name, for the audit log.
/// Extension schemas are compared one level down (`<urn>:department`). Names only: the values
/// (a password among them) never leave the resource.
pub fn changed_attributes(before: &Stored, after: &Stored) -> Vec<String> {
    let mut changed = Vec::new();
    let names: std::collections::BTreeSet<&String> = before.keys().chain(after.keys()).collect();
    for name in names {
        let (old, new) = (before.get(name.as_str()), after.get(name.as_str()));
        if old == new {
            continue;
        }
        match (old, new) {
            (Some(Value::Object(old)), Some(Value::Object(new))) if name.starts_with("urn:") => {
                changed
                    .extend(changed_attributes(old, new).into_iter().map(|inner| format!("{name}:{inner}")));
            }
            _ => changed.push(name.clone()),
        }
    }
    changed
}

pub fn location(kind: ResourceKind, id: &str, base_url: &str) -> String {
    format!("{base_url}/scim/v2/{}/{id}", kind.endpoint())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scim::schema::{Registry, ENTERPRISE_USER_SCHEMA, USER_SCHEMA};
    use serde_json::json;

    fn user(body: Value) -> Result<Stored> {
        normalize(&Registry::load().unwrap().user, &body)
    }

    #[test]
    fn names_are_canonicalised_and_server_owned_values_dropped() {
        let stored = user(json!({
            "schemas": [USER_SCHEMA, ENTERPRISE_USER_SCHEMA, "urn:example:unknown"],
            "id": "client-id", "meta": {"version": "W/\"9\""}, "groups": [], "password": "hunter2",
            "USERNAME": "Ann", "Active": "False", "emails": [{"VALUE": "a@x", "Primary": "True"}],
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:user": {"Department": "Ops", "manager": {"displayName": "Bo"}},
            "nonsense": 1
        }))
        .unwrap();
        assert_eq!(
            Value::Object(stored),
            json!({
                "userName": "Ann", "active": false, "emails": [{"value": "a@x", "primary": true}],
                ENTERPRISE_USER_SCHEMA: {"department": "Ops", "manager": {"displayName": "Bo"}}
            })
        );
    }

    #[test]
    fn entra_reference_shapes_and_valueless_elements() {
        let stored = user(json!({
            "schemas": [USER_SCHEMA], "userName": "ann",
            "phoneNumbers": [{"type": "work"}, {"type": "mobile", "value": "+1 555"}],
            "addresses": [{"type": "work", "locality": "Gdańsk"}],
            ENTERPRISE_USER_SCHEMA: {"manager": "u-42"}
        }))
        .unwrap();
        assert_eq!(stored["phoneNumbers"], json!([{"type": "mobile", "value": "+1 555"}]));
        assert_eq!(
            stored["addresses"],
            json!([{"type": "work", "locality": "Gdańsk"}]),
            "no value sub-attribute"
        );
        assert_eq!(stored[ENTERPRISE_USER_SCHEMA]["manager"], json!({"value": "u-42"}));
        let as_array = json!({"schemas": [USER_SCHEMA], "userName": "ann",
            ENTERPRISE_USER_SCHEMA: {"manager": [{"value": "u-42", "$ref": "https://x/Users/u-42"}]}});
        assert_eq!(user(as_array).unwrap()[ENTERPRISE_USER_SCHEMA]["manager"]["value"], "u-42");
        let two = json!({"schemas": [USER_SCHEMA], "userName": "ann",
            ENTERPRISE_USER_SCHEMA: {"manager": [{"value": "a"}, {"value": "b"}]}});
        assert!(user(two).is_err(), "a single-valued attribute takes one element");
    }

    #[test]
    fn bad_bodies_are_refused_with_a_reason() {
        let cases = [
            (json!([]), "JSON object"),
            (json!({"userName": "a"}), "\"schemas\""),
            (json!({"schemas": "x", "userName": "a"}), "array"),
            (
                json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"], "userName": "a"}),
                "must include",
            ),
            (json!({"schemas": [USER_SCHEMA]}), "'userName' is required"),
            (json!({"schemas": [USER_SCHEMA], "userName": "  "}), "'userName' is required"),
            (json!({"schemas": [USER_SCHEMA], "userName": 7}), "'userName' must be a string"),
            (
                json!({"schemas": [USER_SCHEMA], "userName": "a", "active": "maybe"}),
                "'active' must be a boolean",
            ),
            (
                json!({"schemas": [USER_SCHEMA], "userName": "a", "emails": {"value": "x"}}),
                "must be an array",
            ),
            (json!({"schemas": [USER_SCHEMA], "userName": "a", "name": "Ann"}), "'name' must be an object"),
            (
                json!({"schemas": [USER_SCHEMA], "userName": "a", "password": 5}),
                "'password' must be a string",
            ),
        ];
        for (body, expected) in cases {
            let error = user(body.clone()).unwrap_err().to_string();
            assert!(error.contains(expected), "{body}: {error}");
        }
    }

    #[test]
    fn only_the_last_primary_value_stays_primary() {
        let stored = user(json!({"schemas": [USER_SCHEMA], "userName": "a",
            "emails": [{"value": "1", "primary": true}, {"value": "2", "primary": true}, {"value": "3"}]}))
        .unwrap();
        assert_eq!(
            stored["emails"],
            json!([{"value": "1", "primary": false}, {"value": "2", "primary": true}, {"value": "3"}])
        );
    }

    #[test]
    fn rendering_adds_schemas_id_and_meta() {
        let registry = Registry::load().unwrap();
        let stored = user(json!({"schemas": [USER_SCHEMA], "userName": "a", "externalId": "x",
            ENTERPRISE_USER_SCHEMA: {"department": "Ops"}}))
        .unwrap();
        let meta = Meta { id: "u1".into(), created_at: 0, modified_at: 1000, version: 3 };
        let out = render(&registry.user, stored, &meta, "http://h");
        assert_eq!(out["schemas"], json!([USER_SCHEMA, ENTERPRISE_USER_SCHEMA]));
        assert_eq!(out["meta"]["location"], "http://h/scim/v2/Users/u1");
        assert_eq!(out["meta"]["version"], "W/\"3\"");
        assert_eq!(out["meta"]["lastModified"], "1970-01-01T00:00:01.000Z");
        assert_eq!(out.keys().next().map(String::as_str), Some("schemas"));
    }

    #[test]
    fn if_match_compares_weak_tags() {
        let meta = Meta { id: "u".into(), created_at: 0, modified_at: 0, version: 4 };
        assert!(if_match_admits("W/\"4\"", &meta));
        assert!(if_match_admits("\"4\"", &meta));
        assert!(if_match_admits("*", &meta));
        assert!(if_match_admits("W/\"1\", W/\"4\"", &meta));
        assert!(!if_match_admits("W/\"3\"", &meta));
    }

    #[test]
    fn changed_attributes_name_what_differs_and_never_a_value() {
        let before: Stored = serde_json::from_value(serde_json::json!({
            "userName": "a", "active": true, "password": "old-secret",
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {"department": "Ops", "costCenter": "1"}
        }))
        .unwrap();
        let after: Stored = serde_json::from_value(serde_json::json!({
            "userName": "a", "active": false, "password": "new-secret", "title": "Boss",
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {"department": "Sales", "costCenter": "1"}
        }))
        .unwrap();
        assert_eq!(
            changed_attributes(&before, &after),
            vec![
                "active",
                "password",
                "title",
                "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department"
            ]
        );
        assert!(changed_attributes(&before, &before).is_empty());
    }
}
