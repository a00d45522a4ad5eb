//! What every importer hands the engine, whatever its source (Okta, Entra ID): users mapped to
//! SCIM with the facts the rules decide on. The engine stages, plans and applies only these.

use serde_json::{json, Map, Value};

use crate::scim::resource::Stored;
use crate::scim::schema::ENTERPRISE_USER_SCHEMA;

/// A source's account state, as rule 5 of `sync-rules.md` reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum SourceStatus {
    /// The account can sign in, or will again on its own (Okta ACTIVE, LOCKED_OUT, …; Entra
    /// `accountEnabled`).
    Active,
    /// Suspended, deprovisioned, disabled or deleted in the source.
    Inactive,
    /// Okta STAGED: created, never activated. Inactive, or not imported with `staged: "skip"`.
    Staged,
}

impl SourceStatus {
    /// `Some(active)` as rule 5 maps the status, `None` for a user not to be imported at all
    /// (a STAGED user under `staged: "skip"`).
    pub fn active(self, skip_staged: bool) -> Option<bool> {
        match self {
            SourceStatus::Active => Some(true),
            SourceStatus::Staged if skip_staged => None,
            SourceStatus::Inactive | SourceStatus::Staged => Some(false),
        }
    }
}

/// A source user as the engine needs it: the SCIM resource it maps to and the facts the rules
/// decide on.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct MappedUser {
    /// The user's id in the source (Okta `00u…`, Entra object id).
    pub source_id: String,
    pub status: SourceStatus,
    /// When the source created the user, for the oldest-wins rule of userName collisions;
    /// RFC 3339 as the source gives it (both sources use UTC, so text order is time order).
    pub created: String,
    pub user_name: Option<String>,
    /// The address rule 3 checks (Okta `profile.email`, else `login`; Entra `mail`, else
    /// `userPrincipalName`).
    pub primary_email: String,
    /// The source id of the user's manager, resolved to a scimd id by the engine.
    pub manager_source_id: Option<String>,
    /// The SCIM resource, without `active` and the manager's `value` (the engine sets both).
    pub resource: Stored,
}

impl MappedUser {
    /// The source id of a manager known by id alone: an Entra delta round names a manager by id
    /// (`manager@delta`), where a listing also gives its name.
    pub fn unnamed_manager(&self) -> Option<&str> {
        let named = self
            .resource
            .get(ENTERPRISE_USER_SCHEMA)
            .and_then(|enterprise| enterprise.get("manager"))
            .and_then(|manager| manager.get("displayName"))
            .is_some();
        self.manager_source_id.as_deref().filter(|_| !named)
    }

    /// Gives the manager its displayName, as a listing would have.
    pub fn name_manager(&mut self, name: &str) {
        let enterprise = self
            .resource
            .entry(ENTERPRISE_USER_SCHEMA.to_string())
            .or_insert_with(|| Value::Object(Map::new()));
        if let Some(enterprise) = enterprise.as_object_mut() {
            enterprise.insert("manager".into(), json!({ "displayName": name }));
        }
    }
}

/// A source's phone numbers as SCIM `phoneNumbers` (work, then mobile), if it has any.
pub fn phone_numbers(work: Option<&str>, mobile: Option<&str>) -> Option<Value> {
    let phones: Vec<Value> = [(work, "work"), (mobile, "mobile")]
        .into_iter()
        .filter_map(|(number, kind)| Some(json!({"value": number?, "type": kind})))
        .collect();
    (!phones.is_empty()).then_some(Value::Array(phones))
}

/// A source's address as SCIM `addresses` (one, of type work), from (SCIM sub-attribute, value)
/// pairs; none when no part has a value.
pub fn work_address<'a>(parts: impl IntoIterator<Item = (&'a str, Option<Value>)>) -> Option<Value> {
    let mut address: Map<String, Value> =
        parts.into_iter().filter_map(|(scim, value)| Some((scim.to_string(), value?))).collect();
    if address.is_empty() {
        return None;
    }
    address.insert("type".into(), json!("work"));
    Some(json!([Value::Object(address)]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staged_users_are_inactive_or_left_out() {
        assert_eq!(SourceStatus::Active.active(true), Some(true));
        assert_eq!(SourceStatus::Inactive.active(true), Some(false));
        assert_eq!(SourceStatus::Staged.active(false), Some(false));
        assert_eq!(SourceStatus::Staged.active(true), None);
    }

    #[test]
    fn a_manager_named_by_id_alone_gets_its_name() {
        let mut user = MappedUser {
            source_id: "u1".into(),
            status: SourceStatus::Active,
            created: String::new(),
            user_name: Some("u1@x".into()),
            primary_email: "u1@x".into(),
            manager_source_id: Some("m1".into()),
            resource: Map::new(),
        };
        assert_eq!(user.unnamed_manager(), Some("m1"));
        user.name_manager("Mia");
        assert_eq!(user.resource[ENTERPRISE_USER_SCHEMA], json!({"manager": {"displayName": "Mia"}}));
        assert_eq!(user.unnamed_manager(), None);
        user.manager_source_id = None;
        assert_eq!(user.unnamed_manager(), None);
    }

    #[test]
    fn phones_and_address_appear_only_with_a_value() {
        assert_eq!(phone_numbers(None, None), None);
        assert_eq!(phone_numbers(None, Some("+47 1")), Some(json!([{"value": "+47 1", "type": "mobile"}])));
        assert_eq!(work_address([("locality", None)]), None);
        assert_eq!(
            work_address([("locality", Some(json!("Oslo"))), ("region", None)]),
            Some(json!([{"locality": "Oslo", "type": "work"}]))
        );
    }
}
