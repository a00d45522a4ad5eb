//! The rules of `sync-rules.md` §4 that decide, record by record, what is imported and how:
//! pure functions over source values, the same for every source.

use crate::scim::index::fold;

/// Whether a primary e-mail address passes `email_domains` (rule 3). An empty list allows all.
/// `acme.example` matches that domain (and its subdomains with `include_subdomains`);
/// `*.acme.example` matches subdomains only. Case-insensitive.
pub fn email_domain_allowed(email: &str, domains: &[String], include_subdomains: bool) -> bool {
    if domains.is_empty() {
        return true;
    }
    let Some((_, domain)) = email.rsplit_once('@') else { return false };
    let domain = domain.to_ascii_lowercase();
    domains.iter().any(|rule| {
        let rule = rule.to_ascii_lowercase();
        match rule.strip_prefix("*.") {
            Some(parent) => is_subdomain(&domain, parent),
            None => domain == rule || (include_subdomains && is_subdomain(&domain, &rule)),
        }
    })
}

fn is_subdomain(domain: &str, parent: &str) -> bool {
    domain.len() > parent.len() + 1
        && domain.ends_with(parent)
        && domain.as_bytes().get(domain.len() - parent.len() - 1) == Some(&b'.')
}

/// A group named in `allowed_users_groups` / `denied_users_groups`: by id, or by name
/// case-insensitively.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupRef<'a> {
    pub id: &'a str,
    pub name: &'a str,
}

/// Whether a group named in the rules (by id, or by name case-insensitively) is `group`.
pub fn names_group(named: &str, group: &GroupRef<'_>) -> bool {
    named == group.id || fold(named) == fold(group.name)
}

/// `active` of rule 5: the source says active, and, when an allow-list is set, the user is in
/// one of its groups, and is in none of the deny-list (deny wins).
pub fn user_active(
    source_active: bool,
    groups: &[GroupRef<'_>],
    allowed: &[String],
    denied: &[String],
) -> bool {
    let in_any =
        |list: &[String]| groups.iter().any(|group| list.iter().any(|named| names_group(named, group)));
    source_active && (allowed.is_empty() || in_any(allowed)) && !in_any(denied)
}

/// Names in the allow and deny lists that match no source group, for a run warning.
pub fn unknown_group_names<'a>(named: &'a [String], groups: &[GroupRef<'_>]) -> Vec<&'a str> {
    named.iter().filter(|n| !groups.iter().any(|g| names_group(n, g))).map(String::as_str).collect()
}

/// Whether an Okta group is imported (rule 6): its type is listed, and with prefixes its name
/// starts with one of them (case-insensitive).
pub fn okta_group_selected(group_type: &str, name: &str, types: &[String], prefixes: &[String]) -> bool {
    let name = fold(name);
    types.iter().any(|t| t == group_type)
        && (prefixes.is_empty() || prefixes.iter().any(|p| name.starts_with(&fold(p))))
}

/// The userName an Okta user gets (rule 4), from its profile; `None` when the source has no value.
pub fn okta_user_name(source: &str, profile: &serde_json::Map<String, serde_json::Value>) -> Option<String> {
    let text = |key: &str| profile.get(key).and_then(|v| v.as_str()).map(str::trim).filter(|v| !v.is_empty());
    let name = match source {
        "login" => text("login")?.to_string(),
        "email" => text("email")?.to_string(),
        "login-local-part" => {
            let login = text("login")?;
            login.split_once('@').map_or(login, |(local, _)| local).to_string()
        }
        other => {
            let attribute = other.strip_prefix("attribute:")?;
            match profile.get(attribute)? {
                serde_json::Value::String(s) if !s.trim().is_empty() => s.trim().to_string(),
                serde_json::Value::Number(n) => n.to_string(),
                _ => return None,
            }
        }
    };
    (!name.is_empty()).then_some(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn domains(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn email_domains_follow_rule_3() {
        let exact = domains(&["acme.example"]);
        let wildcard = domains(&["*.acme.example"]);
        let table = [
            ("a@acme.example", &exact, false, true),
            ("a@ACME.Example", &exact, false, true),
            ("a@eu.acme.example", &exact, false, false),
            ("a@eu.acme.example", &exact, true, true),
            ("a@dev.eu.acme.example", &exact, true, true),
            ("a@notacme.example", &exact, true, false),
            ("a@acme.example.evil", &exact, true, false),
            ("a@acme.example", &wildcard, false, false),
            ("a@eu.acme.example", &wildcard, false, true),
            ("a@dev.eu.acme.example", &wildcard, false, true),
            ("a@xacme.example", &wildcard, false, false),
            ("no-at-sign", &exact, false, false),
        ];
        for (email, rules, subdomains, expected) in table {
            assert_eq!(
                email_domain_allowed(email, rules, subdomains),
                expected,
                "{email} {rules:?} {subdomains}"
            );
        }
        assert!(email_domain_allowed("anyone@anywhere", &[], false), "no rule allows all");
    }

    #[test]
    fn allow_and_deny_groups_decide_active_and_deny_wins() {
        let eng = GroupRef { id: "00g1", name: "Eng-All" };
        let off = GroupRef { id: "00g2", name: "offboarding" };
        let allowed = domains(&["eng-all"]);
        let denied = domains(&["00g2"]);
        assert!(user_active(true, std::slice::from_ref(&eng), &allowed, &denied));
        assert!(!user_active(true, &[], &allowed, &denied), "not in the allow-list");
        assert!(!user_active(true, &[eng.clone(), off.clone()], &allowed, &denied), "deny wins");
        assert!(
            !user_active(false, std::slice::from_ref(&eng), &allowed, &denied),
            "the source says inactive"
        );
        assert!(user_active(true, &[], &[], &[]), "no lists: the source decides");
        assert_eq!(unknown_group_names(&domains(&["eng-all", "ghosts"]), &[eng, off]), ["ghosts"]);
    }

    #[test]
    fn okta_groups_are_selected_by_type_and_prefix() {
        let types = domains(&["OKTA_GROUP", "APP_GROUP"]);
        assert!(okta_group_selected("OKTA_GROUP", "anything", &types, &[]));
        assert!(
            !okta_group_selected("BUILT_IN", "Everyone", &types, &[]),
            "Everyone is skipped unless listed"
        );
        assert!(okta_group_selected("BUILT_IN", "Everyone", &domains(&["BUILT_IN"]), &[]));
        let prefixes = domains(&["eng-", "VPN-"]);
        assert!(okta_group_selected("OKTA_GROUP", "ENG-platform", &types, &prefixes));
        assert!(okta_group_selected("APP_GROUP", "vpn-eu", &types, &prefixes));
        assert!(!okta_group_selected("OKTA_GROUP", "sales-eu", &types, &prefixes));
    }

    #[test]
    fn okta_user_names_come_from_the_configured_source() {
        let profile = json!({"login": "ines.moreau@fjord.example", "email": "ines@fjord.example", "employeeNumber": "E-1", "badge": 42, "blank": " "});
        let profile = profile.as_object().unwrap();
        assert_eq!(okta_user_name("login", profile).as_deref(), Some("ines.moreau@fjord.example"));
        assert_eq!(okta_user_name("email", profile).as_deref(), Some("ines@fjord.example"));
        assert_eq!(okta_user_name("login-local-part", profile).as_deref(), Some("ines.moreau"));
        assert_eq!(okta_user_name("attribute:employeeNumber", profile).as_deref(), Some("E-1"));
        assert_eq!(okta_user_name("attribute:badge", profile).as_deref(), Some("42"));
        assert_eq!(okta_user_name("attribute:blank", profile), None);
        assert_eq!(okta_user_name("attribute:missing", profile), None);
        let no_at = json!({"login": "ines"});
        assert_eq!(okta_user_name("login-local-part", no_at.as_object().unwrap()).as_deref(), Some("ines"));
    }
}
