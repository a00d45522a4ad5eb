//! What a run does to one user, decided from what the source says and what the directory holds.
//! Pure: the engine gathers the facts, this decides, the engine applies.

use serde_json::{json, Map, Value};

use super::rules::{self, GroupRef};
use super::source::SourceStatus;
use crate::scim::resource::Stored;
use crate::scim::schema::{ENTERPRISE_USER_SCHEMA, USER_SCHEMA};

/// The rules of a connection that decide about users.
#[derive(Debug, Clone, Default)]
pub struct UserRules {
    pub email_domains: Vec<String>,
    pub include_subdomains: bool,
    pub allowed_groups: Vec<String>,
    pub denied_groups: Vec<String>,
    pub skip_staged: bool,
}

/// What the directory holds of a staged user.
#[derive(Debug, Clone, PartialEq)]
pub enum Current {
    /// Nothing: the user would be new.
    New,
    /// The connection's user, as stored.
    Owned(Stored),
}

/// One staged user's facts.
#[derive(Debug, Clone)]
pub struct Facts<'a> {
    pub status: SourceStatus,
    pub user_name: Option<&'a str>,
    pub primary_email: &'a str,
    /// The user's source groups (imported or not), for allow/deny.
    pub groups: &'a [GroupRef<'a>],
    /// The mapped SCIM attributes (no userName, active or manager value yet).
    pub mapped: &'a Stored,
    /// The scimd id of the user's manager, when the manager is imported too.
    pub manager_id: Option<&'a str>,
    /// Who else holds the userName, if anyone: another source's user, or an older user of this run.
    pub name_held_by: Option<&'a str>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Create the user with this body (a SCIM request body: normalize it, then insert).
    Create(Value),
    /// Replace the owned user's attributes with this body.
    Update(Value),
    /// Leave the user as it is.
    Unchanged,
    /// Not imported (rule 2, 3, 4 or `staged: skip`); the reason, for warnings when it is one.
    Skip { warning: Option<String> },
    /// The userName is held by another record: not imported, reported.
    Conflict { user_name: String, held_by: String },
}

/// The SCIM body a staged user should have: its mapped attributes, the userName, `active`, and
/// the manager linked by id when the manager is imported.
pub fn desired_body(facts: &Facts<'_>, active: bool) -> Value {
    let mut body: Map<String, Value> = facts.mapped.clone();
    body.insert("schemas".into(), json!([USER_SCHEMA, ENTERPRISE_USER_SCHEMA]));
    if let Some(name) = facts.user_name {
        body.insert("userName".into(), json!(name));
    }
    body.insert("active".into(), json!(active));
    if let Some(manager_id) = facts.manager_id {
        if let Some(Value::Object(enterprise)) = body.get_mut(ENTERPRISE_USER_SCHEMA) {
            match enterprise.get_mut("manager") {
                Some(Value::Object(manager)) => {
                    manager.insert("value".into(), json!(manager_id));
                }
                _ => {
                    enterprise.insert("manager".into(), json!({ "value": manager_id }));
                }
            }
        } else {
            body.insert(ENTERPRISE_USER_SCHEMA.into(), json!({ "manager": { "value": manager_id } }));
        }
    }
    Value::Object(body)
}

/// Whether [`decide`] creates a user the directory does not hold yet: a known status, inside the
/// e-mail domains, with a userName nobody else holds. The engine links a manager by id only when
/// the manager exists or this holds for it.
pub fn creates(
    status: SourceStatus,
    user_name: Option<&str>,
    primary_email: &str,
    name_held: bool,
    rules: &UserRules,
) -> bool {
    status.active(rules.skip_staged).is_some()
        && rules::email_domain_allowed(primary_email, &rules.email_domains, rules.include_subdomains)
        && user_name.is_some()
        && !name_held
}

/// Decides about one staged user. `normalized` turns a body into its stored form (the engine
/// passes the schema's normalisation), so that "unchanged" compares like with like.
pub fn decide(
    facts: &Facts<'_>,
    current: &Current,
    rules: &UserRules,
    normalized: &dyn Fn(&Value) -> Option<Stored>,
) -> Decision {
    let Some(source_active) = facts.status.active(rules.skip_staged) else {
        return Decision::Skip { warning: None };
    };
    let in_domain =
        rules::email_domain_allowed(facts.primary_email, &rules.email_domains, rules.include_subdomains);
    let active = in_domain
        && rules::user_active(source_active, facts.groups, &rules.allowed_groups, &rules.denied_groups);
    match current {
        Current::New => {
            if !in_domain {
                return Decision::Skip { warning: None };
            }
            let Some(user_name) = facts.user_name else {
                return Decision::Skip {
                    warning: Some("has no value for the userName source; not imported".into()),
                };
            };
            if let Some(holder) = facts.name_held_by {
                return Decision::Conflict { user_name: user_name.to_string(), held_by: holder.to_string() };
            }
            Decision::Create(desired_body(facts, active))
        }
        Current::Owned(stored) => {
            if facts.user_name.is_none() {
                return Decision::Skip {
                    warning: Some("has no value for the userName source; left as it was".into()),
                };
            }
            if let (Some(user_name), Some(holder)) = (facts.user_name, facts.name_held_by) {
                return Decision::Conflict { user_name: user_name.to_string(), held_by: holder.to_string() };
            }
            let body = desired_body(facts, active);
            match normalized(&body) {
                Some(desired) if &desired == stored => Decision::Unchanged,
                _ => Decision::Update(body),
            }
        }
    }
}

/// Whether a plan deactivates more than `max_percent` of the `active` users a connection owns.
/// The first run (nothing owned) never brakes.
pub fn brakes(deactivations: u64, active: u64, max_percent: u32) -> bool {
    active > 0 && deactivations * 100 > active * u64::from(max_percent)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mapped() -> Stored {
        serde_json::from_value(json!({"externalId": "00u1", "name": {"givenName": "Ann"},
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {"manager": {"displayName": "Bo"}}}))
        .unwrap()
    }

    fn facts<'a>(mapped: &'a Stored, groups: &'a [GroupRef<'a>]) -> Facts<'a> {
        Facts {
            status: SourceStatus::Active,
            user_name: Some("ann@acme.example"),
            primary_email: "ann@acme.example",
            groups,
            mapped,
            manager_id: Some("u-bo"),
            name_held_by: None,
        }
    }

    /// Stands in for the schema's normalisation: drops `schemas`, as storing does.
    fn stored_form(body: &Value) -> Option<Stored> {
        let mut map = body.as_object()?.clone();
        map.remove("schemas");
        Some(map)
    }

    #[test]
    fn a_new_user_is_created_with_username_active_and_linked_manager() {
        let mapped = mapped();
        let decision = decide(&facts(&mapped, &[]), &Current::New, &UserRules::default(), &stored_form);
        let Decision::Create(body) = decision else { panic!("{decision:?}") };
        assert_eq!(body["userName"], "ann@acme.example");
        assert_eq!(body["active"], true);
        assert_eq!(body[ENTERPRISE_USER_SCHEMA]["manager"], json!({"displayName": "Bo", "value": "u-bo"}));
    }

    #[test]
    fn an_owned_user_is_unchanged_when_the_source_is_and_updated_otherwise() {
        let mapped = mapped();
        let f = facts(&mapped, &[]);
        let stored = stored_form(&desired_body(&f, true)).unwrap();
        assert_eq!(
            decide(&f, &Current::Owned(stored.clone()), &UserRules::default(), &stored_form),
            Decision::Unchanged
        );
        let rules = UserRules { denied_groups: vec!["offboarding".into()], ..UserRules::default() };
        let off = [GroupRef { id: "00g9", name: "Offboarding" }];
        let decision = decide(&facts(&mapped, &off), &Current::Owned(stored), &rules, &stored_form);
        let Decision::Update(body) = decision else { panic!("{decision:?}") };
        assert_eq!(body["active"], false, "a denied member becomes inactive, never deleted");
    }

    #[test]
    fn rules_skip_or_report_instead_of_importing() {
        let mapped = mapped();
        let outside = UserRules { email_domains: vec!["other.example".into()], ..UserRules::default() };
        assert_eq!(
            decide(&facts(&mapped, &[]), &Current::New, &outside, &stored_form),
            Decision::Skip { warning: None }
        );
        // Imported earlier and now outside the domains: inactive, kept.
        let stored = stored_form(&desired_body(&facts(&mapped, &[]), true)).unwrap();
        let Decision::Update(body) =
            decide(&facts(&mapped, &[]), &Current::Owned(stored), &outside, &stored_form)
        else {
            panic!()
        };
        assert_eq!(body["active"], false);

        let mut staged = facts(&mapped, &[]);
        staged.status = SourceStatus::Staged;
        let skip = UserRules { skip_staged: true, ..UserRules::default() };
        assert_eq!(decide(&staged, &Current::New, &skip, &stored_form), Decision::Skip { warning: None });
        let Decision::Create(body) = decide(&staged, &Current::New, &UserRules::default(), &stored_form)
        else {
            panic!()
        };
        assert_eq!(body["active"], false, "STAGED is imported inactive by default");

        let mut nameless = facts(&mapped, &[]);
        nameless.user_name = None;
        assert!(matches!(
            decide(&nameless, &Current::New, &UserRules::default(), &stored_form),
            Decision::Skip { warning: Some(_) }
        ));

        let mut taken = facts(&mapped, &[]);
        taken.name_held_by = Some("scim push");
        assert_eq!(
            decide(&taken, &Current::New, &UserRules::default(), &stored_form),
            Decision::Conflict { user_name: "ann@acme.example".into(), held_by: "scim push".into() }
        );
    }

    #[test]
    fn the_brake_trips_above_the_share_and_never_on_a_first_run() {
        assert!(!brakes(10, 100, 10));
        assert!(brakes(11, 100, 10));
        assert!(!brakes(5, 0, 10), "nothing owned yet");
        assert!(brakes(1, 100, 0), "0 % brakes on any deactivation");
        assert!(!brakes(100, 100, 100));
    }
}
