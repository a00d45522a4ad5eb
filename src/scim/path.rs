//! Attribute paths (RFC 7644 §3.10) and PATCH paths (RFC 7644 §3.5.2), resolved against a
//! resource schema.
//!
//! Names match case-insensitively (RFC 7643 §2.1) and resolve to canonical names, the
//! attribute definitions, and the index key or column of [`super::index`]. Besides the schema
//! documents, every resource has the common attributes `id`, `externalId` and `meta`
//! (RFC 7643 §3.1), defined here in code.
//!
//! An unqualified name is looked up among the common attributes, then the core schema, then the
//! extensions (when exactly one extension has it), so `department` finds the enterprise
//! `department` as the URN-qualified form does.

use std::fmt;
use std::str::FromStr;

use scim_v2::filter::{AttrPath, PatchPath};
use serde_json::{Map, Value};

use super::filter::{self, ValueFilter};
use super::index::{self, Column};
use super::schema::{AttrType, Attribute, Mutability, ResourceSchema, Returned, Uniqueness};
use crate::error::Error;

/// An attribute path resolved against a resource schema: `userName`, `name.givenName`,
/// `emails`, `emails.value`, `meta.lastModified`, `urn:…:enterprise:2.0:User:manager.value`.
///
/// Equality is identity of the path (schema, attribute, sub-attribute); everything else is
/// derived from it.
#[derive(Debug, Clone)]
pub struct ResolvedAttr {
    schema: Option<String>,
    attribute: Attribute,
    sub: Option<Attribute>,
    column: Option<Column>,
    key: String,
    common: bool,
}

impl PartialEq for ResolvedAttr {
    fn eq(&self, other: &Self) -> bool {
        self.schema == other.schema && self.name() == other.name() && self.sub_name() == other.sub_name()
    }
}

impl ResolvedAttr {
    fn new(schema: Option<String>, attribute: Attribute, sub: Option<Attribute>) -> Self {
        let name = attribute.name.to_ascii_lowercase();
        let sub_name = sub.as_ref().map(|s| s.name.to_ascii_lowercase());
        let column = match schema {
            None => Column::for_path(&name, sub_name.as_deref()),
            Some(_) => None,
        };
        let prefix = schema.as_deref().map(extension_prefix).unwrap_or_default();
        let key = index::key(&prefix, &name, sub_name.as_deref());
        let common = schema.is_none() && COMMON_ATTRIBUTES.iter().any(|c| c.eq_ignore_ascii_case(&name));
        ResolvedAttr { schema, attribute, sub, column, key, common }
    }

    /// The extension schema URN the attribute belongs to; `None` for core and common attributes.
    pub fn schema(&self) -> Option<&str> {
        self.schema.as_deref()
    }

    /// Canonical name of the (top-level) attribute.
    pub fn name(&self) -> &str {
        &self.attribute.name
    }

    /// Canonical name of the sub-attribute, if the path has one.
    pub fn sub_name(&self) -> Option<&str> {
        self.sub.as_ref().map(|s| s.name.as_str())
    }

    /// Definition of what the path designates: the sub-attribute if any, else the attribute.
    pub fn def(&self) -> &Attribute {
        self.sub.as_ref().unwrap_or(&self.attribute)
    }

    /// Definition of the top-level attribute (the parent of a sub-attribute).
    pub fn attribute_def(&self) -> &Attribute {
        &self.attribute
    }

    /// Definition of the parent when the path has a sub-attribute.
    pub fn parent_def(&self) -> Option<&Attribute> {
        self.sub.as_ref().map(|_| &self.attribute)
    }

    /// The dedicated `users` column, if the path is stored in one.
    pub fn column(&self) -> Option<Column> {
        self.column
    }

    /// The index key of the path in value rows (see [`index::key`]).
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Whether the path can hold several values: a multi-valued attribute, or a sub-attribute of
    /// one (`emails.value`).
    pub fn is_multi_valued(&self) -> bool {
        self.attribute.multi_valued || self.def().multi_valued
    }

    pub fn kind(&self) -> AttrType {
        self.def().kind
    }

    pub fn case_exact(&self) -> bool {
        self.def().case_exact
    }

    /// A complex attribute named without a sub-attribute (`name`, `emails`).
    pub fn is_complex(&self) -> bool {
        self.def().is_complex()
    }

    /// `id`, `externalId` or `meta` (or a sub-attribute of `meta`).
    pub fn is_common(&self) -> bool {
        self.common
    }

    /// A sub-attribute of this complex attribute, by case-insensitive name.
    pub fn sub_attribute(&self, name: &str) -> Result<ResolvedAttr, String> {
        if self.sub.is_some() || !self.attribute.is_complex() {
            return Err(format!("'{self}' has no sub-attributes, so '{name}' cannot be one"));
        }
        let sub = self
            .attribute
            .sub_attribute(name)
            .ok_or_else(|| format!("'{self}' has no sub-attribute '{name}'"))?;
        Ok(ResolvedAttr::new(self.schema.clone(), self.attribute.clone(), Some(sub.clone())))
    }

    /// What a comparison on this path compares: the path itself, or for a complex attribute
    /// without a sub-attribute its `value` sub-attribute (RFC 7644 §3.4.2.2: `emails co "x"`
    /// means `emails.value co "x"`). `None` for a complex attribute that has no `value`.
    pub fn compared(&self) -> Option<ResolvedAttr> {
        if !self.is_complex() {
            return Some(self.clone());
        }
        self.sub_attribute("value").ok()
    }

    /// The object that holds the top-level attribute: the resource itself, or for an extension
    /// attribute the object under the extension URN.
    pub fn container<'r>(&self, resource: &'r Map<String, Value>) -> Option<&'r Map<String, Value>> {
        match &self.schema {
            None => Some(resource),
            Some(urn) => resource.get(urn).and_then(Value::as_object),
        }
    }

    /// Mutable [`ResolvedAttr::container`]; `None` when the extension object is absent.
    pub fn container_mut<'r>(
        &self,
        resource: &'r mut Map<String, Value>,
    ) -> Option<&'r mut Map<String, Value>> {
        match &self.schema {
            None => Some(resource),
            Some(urn) => resource.get_mut(urn).and_then(Value::as_object_mut),
        }
    }

    /// The value of the top-level attribute in a resource (for `emails.value`, of `emails`).
    pub fn attribute_value<'r>(&self, resource: &'r Map<String, Value>) -> Option<&'r Value> {
        self.container(resource).and_then(|c| c.get(&self.attribute.name))
    }
}

/// The path in canonical form, as it re-parses: `name.givenName`,
/// `urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager.value`.
impl fmt::Display for ResolvedAttr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(urn) = &self.schema {
            write!(f, "{urn}:")?;
        }
        f.write_str(&self.attribute.name)?;
        if let Some(sub) = &self.sub {
            write!(f, ".{}", sub.name)?;
        }
        Ok(())
    }
}

/// The prefix of an extension's index keys (`enterprise:`); extensions without a short alias
/// use their lower-case URN, so keys never collide with core attributes.
pub fn extension_prefix(urn: &str) -> String {
    match index::schema_alias(urn) {
        Some(alias) => alias.to_string(),
        None => format!("{}:", urn.to_ascii_lowercase()),
    }
}

const COMMON_ATTRIBUTES: [&str; 3] = ["id", "externalId", "meta"];

/// The attributes every resource has besides its schemas (RFC 7643 §3.1): `id`, `externalId`
/// and `meta`. They are not in the schema documents.
pub fn common_attributes() -> [Attribute; 3] {
    fn attribute(name: &str, kind: AttrType, case_exact: bool, mutability: Mutability) -> Attribute {
        Attribute {
            name: name.to_string(),
            kind,
            multi_valued: false,
            required: false,
            case_exact,
            mutability,
            returned: Returned::Default,
            uniqueness: Uniqueness::None,
            sub_attributes: Vec::new(),
        }
    }
    let read_only = Mutability::ReadOnly;
    let id = Attribute {
        returned: Returned::Always,
        uniqueness: Uniqueness::Server,
        ..attribute("id", AttrType::String, true, read_only)
    };
    let external_id = attribute("externalId", AttrType::String, true, Mutability::ReadWrite);
    let meta = Attribute {
        sub_attributes: vec![
            attribute("resourceType", AttrType::String, false, read_only),
            attribute("created", AttrType::DateTime, false, read_only),
            attribute("lastModified", AttrType::DateTime, false, read_only),
            attribute("location", AttrType::Reference, true, read_only),
            attribute("version", AttrType::String, true, read_only),
        ],
        ..attribute("meta", AttrType::Complex, false, read_only)
    };
    [id, external_id, meta]
}

/// Resolves a parsed attribute path against a resource schema. The error names what is unknown.
pub fn resolve(schema: &ResourceSchema, path: &AttrPath) -> Result<ResolvedAttr, String> {
    let (urn, attribute) = match &path.uri {
        Some(uri) => resolve_qualified(schema, uri, &path.name)?,
        None => resolve_unqualified(schema, &path.name)?,
    };
    let resolved = ResolvedAttr::new(urn, attribute, None);
    match &path.sub_attr {
        None => Ok(resolved),
        Some(sub) => resolved.sub_attribute(sub),
    }
}

/// Resolves an attribute path written as text (`sortBy`, `attributes`): `name.givenName`,
/// `urn:…:enterprise:2.0:User:manager.value`. A value path or a bare schema URN is an error.
pub fn resolve_name(schema: &ResourceSchema, text: &str) -> Result<ResolvedAttr, String> {
    let prepared = filter::Prepared::new(text);
    match PatchPath::from_str(prepared.text()) {
        Ok(PatchPath::Attr(path)) => resolve(schema, &prepared.restore(&path)),
        Ok(PatchPath::Value(_)) => Err(format!("'{}' is not an attribute path", text.trim())),
        Err(e) => Err(format!("'{}': {}", text.trim(), prepared.describe(&e))),
    }
}

fn resolve_qualified(
    schema: &ResourceSchema,
    uri: &str,
    name: &str,
) -> Result<(Option<String>, Attribute), String> {
    let Some(named) = schema.schema(uri) else {
        // scim_v2 splits a bare schema URN into `uri:name` ("…:2.0" and "User").
        let whole = format!("{uri}:{name}");
        return Err(match schema.schema(&whole) {
            Some(s) => format!("'{}' is a schema URN, not an attribute", s.id),
            None => format!("unknown schema '{uri}' in '{whole}'"),
        });
    };
    if schema.is_extension(&named.id) {
        let attribute = named
            .attribute(name)
            .ok_or_else(|| format!("unknown attribute '{name}' in schema '{}'", named.id))?;
        Ok((Some(named.id.clone()), attribute.clone()))
    } else {
        let attribute = common_attribute(name)
            .or_else(|| named.attribute(name).cloned())
            .ok_or_else(|| format!("unknown attribute '{name}' in schema '{}'", named.id))?;
        Ok((None, attribute))
    }
}

fn resolve_unqualified(schema: &ResourceSchema, name: &str) -> Result<(Option<String>, Attribute), String> {
    if let Some(attribute) = common_attribute(name).or_else(|| schema.core.attribute(name).cloned()) {
        return Ok((None, attribute));
    }
    let mut found = schema.extensions.iter().filter_map(|s| s.attribute(name).map(|a| (s, a)));
    match (found.next(), found.next()) {
        (Some((extension, attribute)), None) => Ok((Some(extension.id.clone()), attribute.clone())),
        (Some((first, _)), Some((second, _))) => Err(format!(
            "attribute '{name}' is ambiguous: qualify it with '{}:' or '{}:'",
            first.id, second.id
        )),
        _ => Err(format!("unknown attribute '{name}'")),
    }
}

fn common_attribute(name: &str) -> Option<Attribute> {
    common_attributes().into_iter().find(|a| a.name.eq_ignore_ascii_case(name))
}

/// What a PATCH operation's `path` designates.
#[derive(Debug, Clone, PartialEq)]
#[allow(clippy::large_enum_variant)] // one short-lived value per PATCH operation
pub enum PatchTarget {
    /// A whole extension object, named by its schema URN (the canonical URN).
    Extension(String),
    /// An attribute or a sub-attribute: `title`, `name.givenName`, `emails`,
    /// `urn:…:enterprise:2.0:User:manager.value`.
    Attribute(ResolvedAttr),
    /// The elements of a complex attribute that satisfy `filter` (`emails[type eq "work"]`), or
    /// one sub-attribute of them (`emails[type eq "work"].value`). `attr` is the complex
    /// attribute; it is usually multi-valued, but a single-valued complex attribute is accepted
    /// as a list of one (`name[givenName pr].familyName`). Test elements with
    /// [`filter::value_matches`].
    Values { attr: ResolvedAttr, filter: ValueFilter, sub: Option<ResolvedAttr> },
}

/// Parses and resolves a PATCH `path`. Every failure is [`Error::InvalidPath`] with a detail that
/// says what is wrong.
pub fn parse_patch_path(text: &str, schema: &ResourceSchema) -> Result<PatchTarget, Error> {
    let trimmed = text.trim();
    let invalid = |detail: String| Error::InvalidPath(format!("path '{trimmed}': {detail}"));
    if trimmed.is_empty() {
        return Err(invalid("empty; omit \"path\" to target the whole resource".to_string()));
    }
    // A bare schema URN must be recognised before parsing: scim_v2 would split it into
    // `urn:…:2.0` and an attribute `User`.
    if let Some(named) = schema.schema(trimmed) {
        if schema.is_extension(&named.id) {
            return Ok(PatchTarget::Extension(named.id.clone()));
        }
        return Err(invalid("names the core schema; omit \"path\" to target the whole resource".to_string()));
    }
    let prepared = filter::Prepared::new(trimmed);
    let parsed = PatchPath::from_str(prepared.text()).map_err(|e| invalid(prepared.describe(&e)))?;
    match parsed {
        PatchPath::Attr(path) => {
            resolve(schema, &prepared.restore(&path)).map(PatchTarget::Attribute).map_err(invalid)
        }
        PatchPath::Value(value_path) => {
            let attr = resolve(schema, &prepared.restore(&value_path.attr)).map_err(&invalid)?;
            if !attr.is_complex() {
                return Err(invalid(format!(
                    "'{attr}' is not a complex attribute, so it cannot take a [filter]"
                )));
            }
            let filter =
                filter::check_value_filter(&value_path.filter, &attr, &prepared).map_err(&invalid)?;
            let sub = match &value_path.sub_attr {
                Some(name) => Some(attr.sub_attribute(&prepared.restore_name(name)).map_err(&invalid)?),
                None => None,
            };
            Ok(PatchTarget::Values { attr, filter, sub })
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]
mod tests {
    use super::*;
    use crate::scim::schema::{Registry, ENTERPRISE_USER_SCHEMA};

    fn user() -> ResourceSchema {
        Registry::load().unwrap().user
    }

    fn parsed(text: &str) -> AttrPath {
        match PatchPath::from_str(text).unwrap() {
            PatchPath::Attr(path) => path,
            PatchPath::Value(_) => panic!("not a plain path: {text}"),
        }
    }

    #[test]
    fn names_resolve_case_insensitively_to_canonical_names_keys_and_columns() {
        let schema = user();
        let cases: &[(&str, &str, Option<Column>, bool, bool)] = &[
            // path, key, column, multi-valued, caseExact
            ("USERNAME", "username", Some(Column::UserName), false, false),
            ("name.GIVENNAME", "name.givenname", None, false, false),
            ("emails", "emails", None, true, false),
            ("Emails.Value", "emails.value", None, true, false),
            ("id", "id", Some(Column::Id), false, true),
            ("EXTERNALID", "externalid", Some(Column::ExternalId), false, true),
            ("meta.LASTMODIFIED", "meta.lastmodified", Some(Column::LastModified), false, false),
            ("meta.created", "meta.created", Some(Column::Created), false, false),
            (
                "urn:ietf:params:scim:schemas:core:2.0:User:userName",
                "username",
                Some(Column::UserName),
                false,
                false,
            ),
            (
                "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager.value",
                "enterprise:manager.value",
                None,
                false,
                true,
            ),
            ("department", "enterprise:department", None, false, false),
        ];
        for (text, key, column, multi, case_exact) in cases {
            let resolved = resolve(&schema, &parsed(text)).unwrap();
            assert_eq!(resolved.key(), *key, "{text}");
            assert_eq!(resolved.column(), *column, "{text}");
            assert_eq!(resolved.is_multi_valued(), *multi, "{text}");
            assert_eq!(resolved.case_exact(), *case_exact, "{text}");
        }
    }

    #[test]
    fn urn_qualified_extension_paths_split_into_schema_attribute_and_sub_attribute() {
        let resolved = resolve(
            &user(),
            &parsed("urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager.displayName"),
        )
        .unwrap();
        assert_eq!(resolved.schema(), Some(ENTERPRISE_USER_SCHEMA));
        assert_eq!(resolved.name(), "manager");
        assert_eq!(resolved.sub_name(), Some("displayName"));
        assert_eq!(resolved.parent_def().map(|p| p.name.as_str()), Some("manager"));
        assert_eq!(resolved.kind(), AttrType::String);
        assert_eq!(
            resolved.to_string(),
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager.displayName"
        );
    }

    #[test]
    fn complex_attributes_compare_through_their_value_sub_attribute() {
        let schema = user();
        let emails = resolve(&schema, &parsed("emails")).unwrap();
        assert_eq!(emails.compared().unwrap().to_string(), "emails.value");
        let manager =
            resolve(&schema, &parsed("urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager"))
                .unwrap();
        assert_eq!(manager.compared().unwrap().key(), "enterprise:manager.value");
        assert!(resolve(&schema, &parsed("name")).unwrap().compared().is_none());
        assert!(resolve(&schema, &parsed("addresses")).unwrap().compared().is_none());
        let title = resolve(&schema, &parsed("title")).unwrap();
        assert_eq!(title.compared(), Some(title));
    }

    #[test]
    fn unknown_names_are_reported_by_name() {
        let schema = user();
        let cases = [
            ("nosuch", "unknown attribute 'nosuch'"),
            ("name.nosuch", "'name' has no sub-attribute 'nosuch'"),
            ("title.x", "'title' has no sub-attributes"),
            ("urn:example:Thing:title", "unknown schema 'urn:example:Thing'"),
            (
                "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:title",
                "unknown attribute 'title' in schema",
            ),
            (
                "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User",
                "is a schema URN, not an attribute",
            ),
        ];
        for (text, expected) in cases {
            let error = resolve(&schema, &parsed(text)).unwrap_err();
            assert!(error.contains(expected), "{text}: {error}");
        }
    }

    #[test]
    fn patch_paths_resolve_to_targets() {
        let schema = user();
        let target =
            parse_patch_path("urn:ietf:params:scim:schemas:extension:enterprise:2.0:user", &schema).unwrap();
        assert_eq!(target, PatchTarget::Extension(ENTERPRISE_USER_SCHEMA.to_string()));

        let PatchTarget::Attribute(attr) = parse_patch_path("Name.FamilyName", &schema).unwrap() else {
            panic!("expected an attribute")
        };
        assert_eq!(attr.to_string(), "name.familyName");

        let PatchTarget::Values { attr, filter, sub } =
            parse_patch_path(r#"emails[TYPE eq "Work" and not(primary eq true)].VALUE"#, &schema).unwrap()
        else {
            panic!("expected a value path")
        };
        assert_eq!(attr.to_string(), "emails");
        assert_eq!(filter.to_string(), r#"type eq "work" and not (primary eq true)"#);
        assert_eq!(sub.unwrap().to_string(), "emails.value");

        let group = Registry::load().unwrap().group;
        let PatchTarget::Values { filter, sub, .. } =
            parse_patch_path(r#"members[$ref eq "https://x/Users/1"]"#, &group).unwrap()
        else {
            panic!("expected a value path")
        };
        assert_eq!(filter.to_string(), r#"$ref eq "https://x/Users/1""#);
        assert_eq!(sub, None);

        let PatchTarget::Attribute(attr) = parse_patch_path(
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager.$ref",
            &schema,
        )
        .unwrap() else {
            panic!("expected an attribute")
        };
        assert_eq!(attr.sub_name(), Some("$ref"));
        assert!(matches!(parse_patch_path("password", &schema), Ok(PatchTarget::Attribute(_))));
    }

    #[test]
    fn bad_patch_paths_are_invalid_path_errors_saying_what_is_wrong() {
        let schema = user();
        let cases = [
            ("", "empty"),
            ("   ", "empty"),
            ("urn:ietf:params:scim:schemas:core:2.0:User", "core schema"),
            ("nosuch", "unknown attribute 'nosuch'"),
            ("title[value eq \"x\"]", "not a complex attribute"),
            ("emails[nosuch eq \"x\"]", "'emails' has no sub-attribute 'nosuch'"),
            ("emails[primary eq \"yes\"]", "boolean"),
            ("emails[type eq \"work\"].nosuch", "'emails' has no sub-attribute 'nosuch'"),
            ("emails[type eq \"work\"", "expected"),
            ("emails[type eq \"work\"].value.x", "position"),
            ("a b", "position 3"),
        ];
        for (text, expected) in cases {
            match parse_patch_path(text, &schema) {
                Err(Error::InvalidPath(detail)) => assert!(detail.contains(expected), "{text:?}: {detail}"),
                other => panic!("{text:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn container_finds_core_and_extension_attributes() {
        let schema = user();
        let resource = serde_json::json!({
            "title": "Boss",
            ENTERPRISE_USER_SCHEMA: {"department": "Ops"}
        });
        let resource = resource.as_object().unwrap();
        let title = resolve(&schema, &parsed("title")).unwrap();
        assert_eq!(title.attribute_value(resource), Some(&Value::from("Boss")));
        let department = resolve(&schema, &parsed("department")).unwrap();
        assert_eq!(department.attribute_value(resource), Some(&Value::from("Ops")));
        let manager = resolve(&schema, &parsed("manager.value")).unwrap();
        assert_eq!(manager.attribute_value(resource), None);
        assert!(resolve(&schema, &parsed("id")).unwrap().is_common());
        assert!(!title.is_common());
    }
}
