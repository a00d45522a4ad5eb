//! The schema registry: `schemas/*.json` parsed once at start-up.
//!
//! The same documents are served at `/Schemas` and drive validation, filters, PATCH and
//! projection, so what scimd publishes is exactly what it enforces.

use serde::Deserialize;
use serde_json::Value;

use crate::error::{Error, Result};

pub const USER_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
pub const GROUP_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";
pub const ENTERPRISE_USER_SCHEMA: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
pub const LIST_RESPONSE_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:ListResponse";
pub const PATCH_OP_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";
pub const SEARCH_REQUEST_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:SearchRequest";
pub const ERROR_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:Error";

const USER_JSON: &str = include_str!("../../schemas/User.json");
const ENTERPRISE_USER_JSON: &str = include_str!("../../schemas/EnterpriseUser.json");
const GROUP_JSON: &str = include_str!("../../schemas/Group.json");
const RESOURCE_TYPES_JSON: &str = include_str!("../../schemas/ResourceTypes.json");
const SERVICE_PROVIDER_CONFIG_JSON: &str = include_str!("../../schemas/ServiceProviderConfig.json");

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum AttrType {
    String,
    Boolean,
    Decimal,
    Integer,
    DateTime,
    Binary,
    Reference,
    Complex,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Mutability {
    ReadOnly,
    ReadWrite,
    Immutable,
    WriteOnly,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Returned {
    Always,
    Never,
    Default,
    Request,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Uniqueness {
    None,
    Server,
    Global,
}

/// One attribute definition (RFC 7643 §7), as published.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Attribute {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: AttrType,
    #[serde(default)]
    pub multi_valued: bool,
    #[serde(default)]
    pub required: bool,
    #[serde(default)]
    pub case_exact: bool,
    pub mutability: Mutability,
    pub returned: Returned,
    #[serde(default = "no_uniqueness")]
    pub uniqueness: Uniqueness,
    #[serde(default)]
    pub sub_attributes: Vec<Attribute>,
}

fn no_uniqueness() -> Uniqueness {
    Uniqueness::None
}

impl Attribute {
    /// Sub-attribute by name, case-insensitively (RFC 7643 §2.1).
    pub fn sub_attribute(&self, name: &str) -> Option<&Attribute> {
        self.sub_attributes.iter().find(|a| a.name.eq_ignore_ascii_case(name))
    }

    pub fn is_complex(&self) -> bool {
        self.kind == AttrType::Complex
    }
}

/// One schema document (core or extension).
#[derive(Debug, Clone, Deserialize)]
pub struct Schema {
    pub id: String,
    pub name: String,
    pub attributes: Vec<Attribute>,
}

impl Schema {
    pub fn attribute(&self, name: &str) -> Option<&Attribute> {
        self.attributes.iter().find(|a| a.name.eq_ignore_ascii_case(name))
    }
}

/// The resource types scimd serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ResourceKind {
    User,
    Group,
}

impl ResourceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ResourceKind::User => "User",
            ResourceKind::Group => "Group",
        }
    }

    pub fn endpoint(self) -> &'static str {
        match self {
            ResourceKind::User => "Users",
            ResourceKind::Group => "Groups",
        }
    }
}

/// A resource type: its core schema plus the extensions it may carry.
#[derive(Debug, Clone)]
pub struct ResourceSchema {
    pub kind: ResourceKind,
    pub core: Schema,
    pub extensions: Vec<Schema>,
}

impl ResourceSchema {
    /// The schema with this URN (case-insensitive), core or extension.
    pub fn schema(&self, urn: &str) -> Option<&Schema> {
        std::iter::once(&self.core).chain(self.extensions.iter()).find(|s| s.id.eq_ignore_ascii_case(urn))
    }

    pub fn all_schemas(&self) -> impl Iterator<Item = &Schema> {
        std::iter::once(&self.core).chain(self.extensions.iter())
    }

    pub fn is_extension(&self, urn: &str) -> bool {
        self.extensions.iter().any(|s| s.id.eq_ignore_ascii_case(urn))
    }
}

/// Every schema document scimd serves, parsed and kept for the process lifetime.
#[derive(Debug, Clone)]
pub struct Registry {
    pub user: ResourceSchema,
    pub group: ResourceSchema,
    /// The raw documents, served verbatim (with absolute locations) by discovery.
    pub documents: Documents,
}

#[derive(Debug, Clone)]
pub struct Documents {
    pub schemas: Vec<Value>,
    pub resource_types: Vec<Value>,
    pub service_provider_config: Value,
}

impl Registry {
    /// Parses the embedded `schemas/*.json`. Fails only if a shipped document is malformed,
    /// which the unit tests rule out.
    pub fn load() -> Result<Self> {
        let user_core: Schema = parse(USER_JSON, "User.json")?;
        let enterprise: Schema = parse(ENTERPRISE_USER_JSON, "EnterpriseUser.json")?;
        let group_core: Schema = parse(GROUP_JSON, "Group.json")?;
        let documents = Documents {
            schemas: vec![
                parse(USER_JSON, "User.json")?,
                parse(ENTERPRISE_USER_JSON, "EnterpriseUser.json")?,
                parse(GROUP_JSON, "Group.json")?,
            ],
            resource_types: parse(RESOURCE_TYPES_JSON, "ResourceTypes.json")?,
            service_provider_config: parse(SERVICE_PROVIDER_CONFIG_JSON, "ServiceProviderConfig.json")?,
        };
        Ok(Registry {
            user: ResourceSchema { kind: ResourceKind::User, core: user_core, extensions: vec![enterprise] },
            group: ResourceSchema { kind: ResourceKind::Group, core: group_core, extensions: vec![] },
            documents,
        })
    }

    pub fn resource(&self, kind: ResourceKind) -> &ResourceSchema {
        match kind {
            ResourceKind::User => &self.user,
            ResourceKind::Group => &self.group,
        }
    }
}

fn parse<T: for<'de> Deserialize<'de>>(text: &str, file: &str) -> Result<T> {
    serde_json::from_str(text).map_err(|e| Error::Internal(format!("schemas/{file} is malformed: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_schemas_parse_and_carry_the_rules_scimd_enforces() {
        let registry = Registry::load().unwrap();
        let user_name = registry.user.core.attribute("USERNAME").unwrap();
        assert!(user_name.required);
        assert!(!user_name.case_exact);
        assert_eq!(user_name.uniqueness, Uniqueness::Server);
        let password = registry.user.core.attribute("password").unwrap();
        assert_eq!(password.returned, Returned::Never);
        assert_eq!(password.mutability, Mutability::WriteOnly);
        let groups = registry.user.core.attribute("groups").unwrap();
        assert_eq!(groups.mutability, Mutability::ReadOnly);
        let manager = registry.user.schema(ENTERPRISE_USER_SCHEMA).unwrap().attribute("manager").unwrap();
        assert_eq!(manager.sub_attribute("displayname").unwrap().mutability, Mutability::ReadWrite);
        assert!(registry.group.core.attribute("members").unwrap().multi_valued);
    }

    #[test]
    fn published_documents_have_no_null_properties() {
        // Entra's schema discovery rejects null-valued properties.
        fn walk(v: &Value) {
            match v {
                Value::Null => panic!("null in a published schema document"),
                Value::Array(items) => items.iter().for_each(walk),
                Value::Object(map) => map.values().for_each(walk),
                _ => {}
            }
        }
        let registry = Registry::load().unwrap();
        registry.documents.schemas.iter().for_each(walk);
        registry.documents.resource_types.iter().for_each(walk);
        walk(&registry.documents.service_provider_config);
    }
}
