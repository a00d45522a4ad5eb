//! What every importer hands the engine, whatever its source (Okta, Entra ID): users mapped to
//! SCIM with the facts the rules decide on. The engine stages, plans and applies only these.

use crate::scim::resource::Stored;

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
}
