//! What of a resource is indexed for filtering, and how values are encoded for comparison.
//!
//! A handful of attributes live in dedicated columns (see [`Column`]); every other leaf value
//! becomes one `(attr, pos, value)` row, so that every filter compiles to indexed SQL:
//! - `attr` is the lower-case attribute path: `title`, `name.givenname`, `emails.value`; an
//!   extension attribute is prefixed with its alias: `enterprise:manager.displayname`.
//! - `pos` is the element index within a multi-valued attribute (0 for single values). Each
//!   element of a multi-valued complex attribute also gets a marker row (`attr = "emails"`,
//!   `value = ""`), so a value filter (`emails[...]`) can quantify over elements.
//! - `value` is the comparison key: strings folded by [`fold`] unless `caseExact`; booleans
//!   `true`/`false`; dateTimes in one canonical UTC form, so text order is time order.

use serde_json::{Map, Value};

use super::schema::{AttrType, Attribute, ResourceSchema, ENTERPRISE_USER_SCHEMA};

/// Attributes stored in their own indexed column rather than as value rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Column {
    Id,
    ExternalId,
    UserName,
    DisplayName,
    Active,
    Created,
    LastModified,
}

impl Column {
    /// The column for a core/common attribute path, if it has one (names already lower-case).
    pub fn for_path(attr: &str, sub: Option<&str>) -> Option<Column> {
        match (attr, sub) {
            ("id", None) => Some(Column::Id),
            ("externalid", None) => Some(Column::ExternalId),
            ("username", None) => Some(Column::UserName),
            ("displayname", None) => Some(Column::DisplayName),
            ("active", None) => Some(Column::Active),
            ("meta", Some("created")) => Some(Column::Created),
            ("meta", Some("lastmodified")) => Some(Column::LastModified),
            _ => None,
        }
    }
}

/// Short alias of an extension schema in index keys (keeps rows small).
pub fn schema_alias(urn: &str) -> Option<&'static str> {
    if urn.eq_ignore_ascii_case(ENTERPRISE_USER_SCHEMA) {
        Some("enterprise:")
    } else {
        None
    }
}

/// The index key of an attribute path. `alias` is "" for core attributes.
pub fn key(alias: &str, attr: &str, sub: Option<&str>) -> String {
    let mut key = String::with_capacity(alias.len() + attr.len() + sub.map_or(0, |s| s.len() + 1));
    key.push_str(alias);
    key.push_str(&attr.to_ascii_lowercase());
    if let Some(sub) = sub {
        key.push('.');
        key.push_str(&sub.to_ascii_lowercase());
    }
    key
}

/// Locale-independent case folding, applied identically to stored values and filter operands.
/// Per character (so the result never depends on context, unlike `str::to_lowercase` with
/// Greek final sigma), with final sigma folded to sigma as Unicode case folding does.
pub fn fold(text: &str) -> String {
    text.chars().flat_map(char::to_lowercase).map(|c| if c == 'ς' { 'σ' } else { c }).collect()
}

/// The comparison key of a JSON value for an attribute, or None when the value is unassigned
/// or not of the attribute's type (stored resources are normalised, so that does not happen).
pub fn encode(attribute: &Attribute, value: &Value) -> Option<String> {
    match (attribute.kind, value) {
        (AttrType::Boolean, Value::Bool(b)) => Some(b.to_string()),
        (AttrType::DateTime, Value::String(s)) => canonical_datetime(s),
        (AttrType::Integer | AttrType::Decimal, Value::Number(n)) => Some(n.to_string()),
        (AttrType::String | AttrType::Reference | AttrType::Binary, Value::String(s)) => {
            Some(if attribute.case_exact { s.clone() } else { fold(s) })
        }
        _ => None,
    }
}

/// xsd:dateTime to the one UTC form scimd stores and compares: `2026-03-02T09:14:07.221Z`.
pub fn canonical_datetime(text: &str) -> Option<String> {
    chrono::DateTime::parse_from_rfc3339(text).ok().map(|t| format_millis(t.timestamp_millis()))
}

/// Epoch milliseconds to the canonical UTC dateTime text.
pub fn format_millis(millis: i64) -> String {
    chrono::DateTime::from_timestamp_millis(millis)
        .unwrap_or_default()
        .format("%Y-%m-%dT%H:%M:%S%.3fZ")
        .to_string()
}

/// One value row.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Entry {
    pub attr: String,
    pub pos: i32,
    pub value: String,
}

/// The value rows of a stored (normalised) resource. Column attributes are skipped.
pub fn entries(schema: &ResourceSchema, resource: &Map<String, Value>) -> Vec<Entry> {
    let mut out = Vec::new();
    for attribute in &schema.core.attributes {
        if let Some(value) = resource.get(&attribute.name) {
            if Column::for_path(&attribute.name.to_ascii_lowercase(), None).is_none() {
                push_attribute(&mut out, "", attribute, value);
            }
        }
    }
    for extension in &schema.extensions {
        let Some(alias) = schema_alias(&extension.id) else { continue };
        let Some(Value::Object(body)) = resource.get(&extension.id) else { continue };
        for attribute in &extension.attributes {
            if let Some(value) = body.get(&attribute.name) {
                push_attribute(&mut out, alias, attribute, value);
            }
        }
    }
    out
}

fn push_attribute(out: &mut Vec<Entry>, alias: &str, attribute: &Attribute, value: &Value) {
    match (attribute.multi_valued, value) {
        (true, Value::Array(items)) => {
            for (pos, item) in items.iter().enumerate() {
                let pos = i32::try_from(pos).unwrap_or(i32::MAX);
                if attribute.is_complex() {
                    out.push(Entry { attr: key(alias, &attribute.name, None), pos, value: String::new() });
                }
                push_value(out, alias, attribute, item, pos);
            }
        }
        (_, value) => push_value(out, alias, attribute, value, 0),
    }
}

fn push_value(out: &mut Vec<Entry>, alias: &str, attribute: &Attribute, value: &Value, pos: i32) {
    if attribute.is_complex() {
        let Value::Object(fields) = value else { return };
        for sub in &attribute.sub_attributes {
            if let Some(encoded) = fields.get(&sub.name).and_then(|v| encode(sub, v)) {
                out.push(Entry { attr: key(alias, &attribute.name, Some(&sub.name)), pos, value: encoded });
            }
        }
    } else if let Some(encoded) = encode(attribute, value) {
        out.push(Entry { attr: key(alias, &attribute.name, None), pos, value: encoded });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scim::schema::Registry;
    use serde_json::json;

    #[test]
    fn fold_is_context_free_and_locale_independent() {
        assert_eq!(fold("Alice@Example.COM"), "alice@example.com");
        assert_eq!(fold("ΟΔΟΣ"), "οδοσ");
        assert_eq!(fold("Σ"), fold("ς"));
        assert_eq!(fold("İ").chars().next(), Some('i'));
    }

    #[test]
    fn entries_cover_every_leaf_except_column_attributes() {
        let registry = Registry::load().unwrap();
        let user = json!({
            "userName": "Alice", "displayName": "Alice A", "active": true, "title": "Boss",
            "name": {"givenName": "Alice"},
            "emails": [{"value": "A@X.com", "type": "work", "primary": true}, {"value": "a@home"}],
            ENTERPRISE_USER_SCHEMA: {"department": "Ops", "manager": {"value": "M-1"}}
        });
        let got = entries(&registry.user, user.as_object().unwrap());
        let rows: Vec<(&str, i32, &str)> =
            got.iter().map(|e| (e.attr.as_str(), e.pos, e.value.as_str())).collect();
        assert_eq!(
            rows,
            vec![
                ("name.givenname", 0, "alice"),
                ("title", 0, "boss"),
                ("emails", 0, ""),
                ("emails.value", 0, "a@x.com"),
                ("emails.type", 0, "work"),
                ("emails.primary", 0, "true"),
                ("emails", 1, ""),
                ("emails.value", 1, "a@home"),
                ("enterprise:department", 0, "ops"),
                ("enterprise:manager.value", 0, "M-1"),
            ]
        );
    }

    #[test]
    fn datetimes_compare_as_text_in_time_order() {
        let early = canonical_datetime("2026-01-01T10:00:00+02:00").unwrap();
        let late = canonical_datetime("2026-01-01T09:00:00Z").unwrap();
        assert_eq!(early, "2026-01-01T08:00:00.000Z");
        assert!(early < late);
        assert_eq!(canonical_datetime("yesterday"), None);
    }
}
