//! Microsoft Graph as the Entra importer reads it (`graph-api.md`): how an Entra user becomes a
//! SCIM resource and which groups are imported (pure), and a client that gets tokens from the
//! Microsoft identity platform (app-only by client secret or certificate assertion, or delegated:
//! the refresh token an admin's consent left, rotated on every use; with a backup credential
//! when the first is refused), follows `@odata.nextLink` and delta links verbatim,
//! keeps within a resource-unit budget of its own, waits out `Retry-After`, retries transient
//! 5xx, and turns every refusal into what the admin must do.
//!
//! The engine builds one [`GraphClient`] per run from the connection's [`EntraSource`] and the
//! opened secrets ([`GraphCredentials`]), lists with [`GraphClient::for_each_page`] or
//! [`GraphClient::pager`], runs delta rounds with [`GraphClient::read_delta`], recognises an
//! expired delta link with [`is_delta_expired`], and records [`GraphClient::fallback_used`] as a
//! run warning. Delegated consent builds its link with [`authorize_url`] and redeems the code
//! with [`redeem_code`]; the engine's [`TokenKeeper`] stores each new refresh token.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use futures_util::future::BoxFuture;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use reqwest::header::{HeaderMap, ACCEPT, AUTHORIZATION, RETRY_AFTER};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use super::connection::{EntraAuth, EntraSource};
pub use super::okta::Check;
pub use super::source::MappedUser;
use super::source::{self, SourceStatus};
use crate::error::{Error, Result};
use crate::scim::index::fold;
use crate::scim::schema::ENTERPRISE_USER_SCHEMA;

// ---------------------------------------------------------------------------------------------
// Mapping (pure)
// ---------------------------------------------------------------------------------------------

/// The user properties [`map_user`] reads, in `$select` order. Without `$select` Graph leaves
/// out `accountEnabled`, `department`, `employeeId` and more (§3).
const USER_PROPERTIES: [&str; 21] = [
    "id",
    "userPrincipalName",
    "mail",
    "displayName",
    "givenName",
    "surname",
    "jobTitle",
    "userType",
    "preferredLanguage",
    "businessPhones",
    "mobilePhone",
    "streetAddress",
    "city",
    "state",
    "postalCode",
    "country",
    "employeeId",
    "department",
    "companyName",
    "accountEnabled",
    "createdDateTime",
];

/// The group properties [`group_selected`] and the engine read.
pub const GROUP_SELECT: &str =
    "id,displayName,description,mail,mailEnabled,securityEnabled,groupTypes,createdDateTime";

/// Graph's largest page for users, groups and member lists (§2).
pub const PAGE_SIZE: u32 = 999;

/// A path segment (a group id, a tenant) as it goes into a URL.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_');

/// The `$select` list [`map_user`] needs, plus the property `username_source` reads (a
/// directory extension `extension_{appId}_{name}` included). A source that names no valid
/// property name adds nothing; such users then have no userName (rule 4).
pub fn user_select(username_source: &str) -> String {
    let mut names: Vec<&str> = USER_PROPERTIES.to_vec();
    if let Some(extra) = username_property(username_source) {
        if !names.iter().any(|n| n.eq_ignore_ascii_case(extra)) {
            names.push(extra);
        }
    }
    names.join(",")
}

/// The property path a username source reads: `userPrincipalName`, `mail`, `mailNickname`, or
/// the `<property>` of `attribute:<property>` (a dotted path reads into a complex property,
/// e.g. `onPremisesExtensionAttributes.extensionAttribute1`).
fn username_path(source: &str) -> Option<&str> {
    match source {
        "userPrincipalName" | "mail" | "mailNickname" => Some(source),
        other => other.strip_prefix("attribute:").map(str::trim).filter(|p| !p.is_empty()),
    }
}

/// The top-level property to `$select` for a username source, when it is a valid name.
fn username_property(source: &str) -> Option<&str> {
    let top = username_path(source)?.split('.').next()?;
    (!top.is_empty() && top.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')).then_some(top)
}

/// `/users` with what the mapping needs and the manager's id and name, 999 a page (Graph caps
/// pages with `$expand` at 100; the nextLinks go on).
pub fn users_path(username_source: &str) -> String {
    format!(
        "/users?$select={}&$expand=manager($select=id,displayName)&$top={PAGE_SIZE}",
        user_select(username_source)
    )
}

/// The first request of a users delta round; `manager` in `$select` brings `manager@delta`.
pub fn users_delta_path(username_source: &str) -> String {
    format!("/users/delta?$select={},manager", user_select(username_source))
}

/// `/groups` with what group selection and the engine need.
pub fn groups_path() -> String {
    format!("/groups?$select={GROUP_SELECT}&$top={PAGE_SIZE}")
}

/// The first request of a groups delta round; `members` in `$select` brings `members@delta`.
pub fn groups_delta_path() -> String {
    format!("/groups/delta?$select={GROUP_SELECT},members")
}

/// Every user reachable from a group through nested groups (rule 6 flattens them), ids only.
pub fn group_users_path(group_id: &str) -> String {
    format!(
        "/groups/{}/transitiveMembers/microsoft.graph.user?$select=id&$top={PAGE_SIZE}",
        utf8_percent_encode(group_id, SEGMENT)
    )
}

/// Everything reachable from a group through nested groups, users and the nested groups
/// themselves (each with its `@odata.type`), ids only: the users are its members (rule 6), the
/// groups tell a delta run which groups a nested change reaches.
pub fn group_nested_path(group_id: &str) -> String {
    format!(
        "/groups/{}/transitiveMembers?$select=id&$top={PAGE_SIZE}",
        utf8_percent_encode(group_id, SEGMENT)
    )
}

/// How many ids one `id in (…)` filter names: Graph bounds the values of an `in` clause (15 is
/// the documented bound for directory objects).
pub const IDS_PER_FILTER: usize = 15;

/// [`users_path`] for the users with the given ids (at most [`IDS_PER_FILTER`]): a delta run
/// reads again the users a membership change alone affects.
pub fn users_by_id_path(username_source: &str, ids: &[String]) -> String {
    format!("{}&$filter={}", users_path(username_source), utf8_percent_encode(&id_filter(ids), SEGMENT))
}

/// The id and displayName of the users with the given ids (at most [`IDS_PER_FILTER`]).
pub fn names_by_id_path(ids: &[String]) -> String {
    format!(
        "/users?$select=id,displayName&$top={PAGE_SIZE}&$filter={}",
        utf8_percent_encode(&id_filter(ids), SEGMENT)
    )
}

/// `id in ('…','…')`.
fn id_filter(ids: &[String]) -> String {
    let quoted: Vec<String> = ids.iter().map(|id| format!("'{}'", id.replace('\'', "''"))).collect();
    format!("id in ({})", quoted.join(","))
}

/// Whether a directory object from a member listing is a user, a group, or something else
/// (a device, a contact, a service principal).
pub fn member_kind(object: &Value) -> Option<MemberKind> {
    match object.get("@odata.type").and_then(Value::as_str)? {
        "#microsoft.graph.user" => Some(MemberKind::User),
        "#microsoft.graph.group" => Some(MemberKind::Group),
        _ => None,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberKind {
    User,
    Group,
}

/// Where a connection's next Entra delta run starts: the deltaLink of each round, stored as
/// JSON in the connection's delta state.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DeltaLinks {
    pub users: String,
    pub groups: String,
}

/// A non-empty, trimmed string property.
fn text<'a>(object: &'a Value, key: &str) -> Option<&'a str> {
    object.get(key).and_then(Value::as_str).map(str::trim).filter(|v| !v.is_empty())
}

/// A property by name, exactly or else case-insensitively (Graph's names are case-insensitive
/// in `$select`, and it answers with the canonical spelling).
fn property<'a>(object: &'a Value, name: &str) -> Option<&'a Value> {
    let map = object.as_object()?;
    map.get(name).or_else(|| map.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v))
}

/// The userName an Entra user gets (rule 4); `None` when the source property has no value.
pub fn user_name(username_source: &str, user: &Value) -> Option<String> {
    let mut value = user;
    for part in username_path(username_source)?.split('.') {
        value = property(value, part)?;
    }
    match value {
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_string()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// The manager's id and name: from `$expand=manager` (an object) or from a delta round's
/// `manager@delta` (ids only; an entry with `@removed` is no manager).
fn manager(user: &Value) -> (Option<String>, Option<String>) {
    if let Some(manager) = user.get("manager").filter(|m| m.is_object()) {
        return (text(manager, "id").map(str::to_string), text(manager, "displayName").map(str::to_string));
    }
    let id = user
        .get("manager@delta")
        .and_then(Value::as_array)
        .and_then(|entries| entries.iter().find(|e| e.get("@removed").is_none()))
        .and_then(|entry| text(entry, "id"))
        .map(str::to_string);
    (id, None)
}

/// Maps a Graph user object (§3) as `sync-rules.md` §3 says; `None` when it has no id.
pub fn map_user(user: &Value, username_source: &str) -> Option<MappedUser> {
    let source_id = text(user, "id")?.to_string();
    let field = |key: &str| text(user, key).map(|v| Value::String(v.to_string()));
    let mut resource = Map::new();
    resource.insert("externalId".into(), Value::String(source_id.clone()));
    if let Some(display) = field("displayName") {
        resource.insert("displayName".into(), display);
    }
    let mut name = Map::new();
    for (scim, graph) in [("givenName", "givenName"), ("familyName", "surname")] {
        if let Some(value) = field(graph) {
            name.insert(scim.into(), value);
        }
    }
    if !name.is_empty() {
        resource.insert("name".into(), Value::Object(name));
    }
    let mail = text(user, "mail");
    if let Some(mail) = mail {
        resource.insert("emails".into(), json!([{"value": mail, "type": "work", "primary": true}]));
    }
    for (scim, graph) in
        [("title", "jobTitle"), ("userType", "userType"), ("preferredLanguage", "preferredLanguage")]
    {
        if let Some(value) = field(graph) {
            resource.insert(scim.into(), value);
        }
    }
    let business = user
        .get("businessPhones")
        .and_then(Value::as_array)
        .and_then(|phones| phones.first())
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|p| !p.is_empty());
    if let Some(phones) = source::phone_numbers(business, text(user, "mobilePhone")) {
        resource.insert("phoneNumbers".into(), phones);
    }
    let address = [
        ("streetAddress", "streetAddress"),
        ("locality", "city"),
        ("region", "state"),
        ("postalCode", "postalCode"),
        ("country", "country"),
    ];
    if let Some(addresses) = source::work_address(address.map(|(scim, graph)| (scim, field(graph)))) {
        resource.insert("addresses".into(), addresses);
    }
    let mut enterprise = Map::new();
    for (scim, graph) in
        [("employeeNumber", "employeeId"), ("department", "department"), ("organization", "companyName")]
    {
        if let Some(value) = field(graph) {
            enterprise.insert(scim.into(), value);
        }
    }
    let (manager_source_id, manager_name) = manager(user);
    if let Some(manager_name) = manager_name {
        enterprise.insert("manager".into(), json!({ "displayName": manager_name }));
    }
    if !enterprise.is_empty() {
        resource.insert(ENTERPRISE_USER_SCHEMA.into(), Value::Object(enterprise));
    }
    let enabled = user.get("accountEnabled").and_then(Value::as_bool) == Some(true);
    Some(MappedUser {
        status: if enabled { SourceStatus::Active } else { SourceStatus::Inactive },
        created: text(user, "createdDateTime").unwrap_or_default().to_string(),
        user_name: user_name(username_source, user),
        primary_email: mail.or(text(user, "userPrincipalName")).unwrap_or_default().to_string(),
        manager_source_id,
        source_id,
        resource,
    })
}

/// Whether an Entra group is imported (rule 6): with `prefixes`, only names starting with one
/// of them (case-insensitive); then a group with an e-mail address, one without only when
/// `import_groups_without_email`, or when it is security-enabled and `import_security_groups`.
pub fn group_selected(
    group: &Value,
    prefixes: &[String],
    import_security_groups: bool,
    import_groups_without_email: bool,
) -> bool {
    let name = fold(text(group, "displayName").unwrap_or_default());
    let prefixed = prefixes.is_empty() || prefixes.iter().any(|p| name.starts_with(&fold(p)));
    let has_mail = text(group, "mail").is_some();
    let security = group.get("securityEnabled").and_then(Value::as_bool) == Some(true);
    prefixed && (has_mail || import_groups_without_email || (security && import_security_groups))
}

// ---------------------------------------------------------------------------------------------
// Errors and remedies (pure)
// ---------------------------------------------------------------------------------------------

/// How every expired-delta error begins; see [`is_delta_expired`].
const DELTA_EXPIRED: &str = "the Entra delta link has expired";

/// Whether `error` says a stored delta link (or a round's skip token) is no longer valid (400
/// `syncStateNotFound` / `resyncRequired`, or 410 Gone): drop the link and run a full round.
pub fn is_delta_expired(error: &Error) -> bool {
    matches!(error, Error::Upstream(detail) if detail.starts_with(DELTA_EXPIRED))
}

/// A credential as remedies name it.
#[derive(Debug, Clone, Copy)]
struct Names<'a> {
    /// `auth` or `backup_auth`, as the connection JSON names the credential.
    place: &'a str,
    client_id: &'a str,
    /// "client secret" or "certificate".
    kind: &'a str,
    tenant: &'a str,
    login_url: &'a str,
    /// For delegated sign-in: how an admin connects again (": open …"), appended to remedies.
    reconnect: &'a str,
}

/// The kind of a delegated credential, as remedies name it.
const DELEGATED: &str = "delegated sign-in";

/// A token-endpoint error body (§1.5): `error`, the first AADSTS code, and the first line of
/// `error_description` (the rest is trace and correlation ids and a timestamp).
fn aad_error(body: &str) -> (String, Option<u64>, String) {
    let parsed: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    let error = parsed.get("error").and_then(Value::as_str).unwrap_or_default().to_string();
    let description = parsed.get("error_description").and_then(Value::as_str).unwrap_or_default();
    let line = description.lines().next().unwrap_or_default().trim().to_string();
    let code = parsed
        .get("error_codes")
        .and_then(Value::as_array)
        .and_then(|codes| codes.first())
        .and_then(Value::as_u64)
        .or_else(|| {
            let digits: String =
                line.strip_prefix("AADSTS")?.chars().take_while(char::is_ascii_digit).collect();
            digits.parse().ok()
        });
    (error, code, line)
}

/// Whether the token endpoint refused the credential itself (so that a backup may do better),
/// rather than the tenant, the request or the service.
fn refuses_credential(error: &str, code: Option<u64>) -> bool {
    matches!(error, "invalid_client" | "unauthorized_client")
        || matches!(code, Some(7000215 | 7000222 | 700016 | 700027 | 700024 | 700023 | 700021 | 7000218))
}

/// Whether the token endpoint refused a delegated credential's refresh token for good (§1.4,
/// §1.5): sessions revoked, unused for 90 days, a sign-in frequency policy, MFA, consent
/// withdrawn. Only an admin signing in again mends it.
fn consent_lost(error: &str, code: Option<u64>) -> bool {
    matches!(error, "invalid_grant" | "interaction_required")
        || matches!(code, Some(50173 | 70043 | 700082 | 70008 | 65001 | 50076 | 50079))
}

/// Why the token endpoint refused, in words that tell the admin what to do (§1.5's table).
fn token_refusal(status: u16, error: &str, code: Option<u64>, said: &str, names: &Names<'_>) -> Error {
    let Names { place, client_id, kind, tenant, login_url, reconnect } = *names;
    let said = match (error, said) {
        ("", "") => format!("HTTP {status}"),
        (error, "") => error.to_string(),
        (_, said) => said.to_string(),
    };
    let credentials = "App registrations → the app → Certificates & secrets";
    let detail = match code {
        Some(7000215) => format!(
            "Entra refused the client secret of app {client_id} (entra.{place}) as wrong ({said}); \
             the secret's Value is needed, not its Secret ID: create a new client secret in {credentials} \
             and paste its Value into the connection"
        ),
        Some(7000222) => format!(
            "the client secret of app {client_id} (entra.{place}) has expired ({said}); create a new \
             client secret in {credentials} and update the connection"
        ),
        Some(700027) => format!(
            "Entra refused the certificate assertion of app {client_id} (entra.{place}) ({said}); \
             upload the connection's certificate_pem in {credentials} → Certificates, and check \
             that private_key_pem is that certificate's key"
        ),
        Some(700024) => format!(
            "Entra found the client assertion's validity times wrong ({said}); check that this \
             server's clock is right (NTP)"
        ),
        Some(700016) => format!(
            "tenant {tenant} has no application with client id {client_id} (entra.{place}) ({said}); \
             copy the Application (client) ID from the app's Overview page, and check that the app \
             is registered in (or consented to by) this tenant"
        ),
        Some(90002) => format!(
            "Entra knows no tenant '{tenant}' ({said}); set entra.tenant to the Directory (tenant) \
             ID or a verified domain, and entra.login_url to the login host of the tenant's cloud \
             ({login_url} now)"
        ),
        Some(65001) if kind == DELEGATED => format!(
            "the delegated permissions of app {client_id} (entra.{place}) are not consented in tenant \
             {tenant} ({said}); in the Entra admin center open App registrations → the app → API \
             permissions, add Microsoft Graph → Delegated permissions → User.Read.All and \
             GroupMember.Read.All, click \"Grant admin consent\", then an admin must connect \
             again{reconnect}"
        ),
        Some(65001) => format!(
            "app {client_id} has no admin consent in tenant {tenant} ({said}); in the Entra admin \
             center open App registrations → the app → API permissions and click \"Grant admin \
             consent\""
        ),
        Some(7000218) => format!(
            "the token request of app {client_id} (entra.{place}) carried no credential ({said}); \
             set the connection's client_secret or private key"
        ),
        Some(700023 | 700021) => format!(
            "Entra refused the client assertion's audience or issuer ({said}); this is a scimd \
             bug, please report it"
        ),
        Some(70011) => {
            format!("Entra refused the token scope scimd asked for ({said}); check entra.graph_url")
        }
        Some(50076 | 50079 | 70008 | 700082 | 70043 | 50173 | 54005) => format!(
            "the delegated sign-in of app {client_id} (entra.{place}) is no longer valid ({said}); \
             an admin must connect again{reconnect}"
        ),
        _ if kind == DELEGATED && error == "invalid_grant" => format!(
            "Entra refused the refresh token of the delegated sign-in of app {client_id} \
             (entra.{place}) ({said}); an admin must connect again{reconnect}"
        ),
        _ => match error {
            "invalid_client" | "unauthorized_client" => format!(
                "Entra refused the {kind} of app {client_id} (entra.{place}) ({said}); check the \
                 client id and the {kind} in {credentials}"
            ),
            _ if status == 404 => format!(
                "there is no Microsoft identity platform token endpoint under {login_url} \
                 ({said}); check entra.login_url"
            ),
            _ => format!("Entra's token endpoint answered {status} ({said})"),
        },
    };
    Error::Upstream(detail)
}

/// A Graph error body (§7): `error.code`, `error.message`.
fn graph_error(body: &str) -> (String, String) {
    let parsed: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    let field = |k: &str| parsed.pointer(k).and_then(Value::as_str).unwrap_or_default().to_string();
    (field("/error/code"), field("/error/message"))
}

/// The application permission a Graph path needs (§1.3).
fn permission_for(path: &str) -> &'static str {
    if path.contains("/members") || path.contains("/transitiveMembers") {
        "GroupMember.Read.All"
    } else if path.starts_with("/groups") {
        "GroupMember.Read.All (or Group.Read.All)"
    } else {
        "User.Read.All"
    }
}

/// The app a Graph call was made as, for remedies.
#[derive(Debug, Clone, Copy)]
struct App<'a> {
    client_id: &'a str,
    tenant: &'a str,
    /// With a delegated token: the permissions are delegated ones, and the admin's own.
    delegated: bool,
}

/// Why a Graph call failed (after its retries), in words that tell the admin what to do.
/// `path` is the request's path below `/v1.0`.
fn graph_refusal(status: u16, code: &str, message: &str, path: &str, app: &App<'_>, retries: u32) -> Error {
    let App { client_id, tenant, delegated } = *app;
    let said = match (code, message) {
        ("", "") => format!("HTTP {status}"),
        (code, "") => code.to_string(),
        (code, message) => format!("{code}: {message}"),
    };
    let detail = match (status, code) {
        (400 | 410, "syncStateNotFound" | "resyncRequired") | (410, _) => {
            format!("{DELTA_EXPIRED} ({status} {said}); a full run reads everything again")
        }
        (401, _) => format!(
            "Microsoft Graph refused a newly issued access token ({said}); check that entra.login_url \
             and entra.graph_url belong to the same cloud"
        ),
        (403, _) if delegated => {
            let permission = permission_for(path);
            format!(
                "app {client_id} may not read {path} ({said}): it lacks the Microsoft Graph \
                 delegated permission {permission}, or the admin who connected it may not read \
                 this; in the Entra admin center open App registrations → the app → API \
                 permissions, add Microsoft Graph → Delegated permissions → {permission}, click \
                 \"Grant admin consent\" for tenant {tenant}, and connect again as an admin who \
                 may read the directory"
            )
        }
        (403, _) => {
            let permission = permission_for(path);
            format!(
                "app {client_id} may not read {path} ({said}): it lacks the Microsoft Graph \
                 application permission {permission}; in the Entra admin center open App \
                 registrations → the app → API permissions, add Microsoft Graph → Application \
                 permissions → {permission}, and click \"Grant admin consent\" for tenant {tenant}"
            )
        }
        (404, _) => return Error::NotFound(format!("Microsoft Graph has no {path} ({said})")),
        (400, _) if message.contains("Could not find a property named") => format!(
            "Microsoft Graph knows no property that rules.username_source names ({said}); check its \
             spelling (directory extensions are named extension_<app id without dashes>_<name>)"
        ),
        (400 | 501, _) => format!(
            "Microsoft Graph refused scimd's query {path} ({said}); this is a scimd bug, please \
             report it"
        ),
        (429, _) => format!(
            "Microsoft Graph kept throttling app {client_id} after {retries} retries ({said}); other \
             tools may share the app's limits in this tenant: try again later or sync less often"
        ),
        (500..=599, _) => format!(
            "Microsoft Graph is unavailable ({status} {said}, after {retries} retries); try again later"
        ),
        _ => format!("Microsoft Graph answered {status} to {path} ({said})"),
    };
    Error::Upstream(detail)
}

/// `x5t#S256` of a PEM certificate: base64url SHA-256 of its DER.
fn x5t_s256(certificate_pem: &str) -> Option<String> {
    let body: String = certificate_pem
        .lines()
        .map(str::trim)
        .skip_while(|l| !l.starts_with("-----BEGIN CERTIFICATE-----"))
        .skip(1)
        .take_while(|l| !l.starts_with("-----END"))
        .collect();
    let der = STANDARD.decode(body).ok().filter(|der| !der.is_empty())?;
    Some(URL_SAFE_NO_PAD.encode(Sha256::digest(&der)))
}

// ---------------------------------------------------------------------------------------------
// Delegated sign-in (pure): the authorize link and PKCE (§1.4)
// ---------------------------------------------------------------------------------------------

/// Microsoft Graph in Microsoft's public cloud, whose permissions need no host in a scope.
const PUBLIC_GRAPH: &str = "https://graph.microsoft.com";

/// A query value as it goes into the authorize link: everything but RFC 3986's unreserved
/// characters escaped (so a space is `%20`).
const QUERY_VALUE: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// The scope of delegated sign-in: a refresh token (`offline_access`) and the delegated
/// permissions the importer reads with. Outside the public cloud they are named under the
/// cloud's Graph host.
pub fn delegated_scope(graph_url: &str) -> String {
    let graph = graph_url.trim_end_matches('/');
    let permission = |name: &str| {
        if graph.eq_ignore_ascii_case(PUBLIC_GRAPH) {
            name.to_string()
        } else {
            format!("{graph}/{name}")
        }
    };
    format!("offline_access {} {}", permission("User.Read.All"), permission("GroupMember.Read.All"))
}

/// The PKCE `S256` challenge of a code verifier: base64url SHA-256, unpadded (RFC 7636 §4.2).
pub fn pkce_challenge(code_verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(code_verifier.as_bytes()))
}

/// The token endpoint of a tenant.
fn token_url(login_url: &str, tenant: &str) -> String {
    format!(
        "{}/{}/oauth2/v2.0/token",
        login_url.trim_end_matches('/'),
        utf8_percent_encode(tenant.trim(), SEGMENT)
    )
}

/// Where an admin of `source`'s tenant signs in and consents for app `client_id` (§1.4): the
/// code comes back to `redirect_uri` with `state`, and is redeemed with the verifier of
/// `code_challenge`.
pub fn authorize_url(
    source: &EntraSource,
    client_id: &str,
    redirect_uri: &str,
    state: &str,
    code_challenge: &str,
) -> String {
    let scope = delegated_scope(&source.graph_url);
    let query: Vec<String> = [
        ("client_id", client_id),
        ("response_type", "code"),
        ("redirect_uri", redirect_uri),
        ("response_mode", "query"),
        ("scope", scope.as_str()),
        ("state", state),
        ("code_challenge", code_challenge),
        ("code_challenge_method", "S256"),
    ]
    .iter()
    .map(|(name, value)| format!("{name}={}", utf8_percent_encode(value, QUERY_VALUE)))
    .collect();
    format!(
        "{}/{}/oauth2/v2.0/authorize?{}",
        source.login_url.trim_end_matches('/'),
        utf8_percent_encode(source.tenant.trim(), SEGMENT),
        query.join("&")
    )
}

/// A client assertion is valid this long (§1.2: a few minutes).
const ASSERTION_LIFETIME_SECS: i64 = 300;

/// The client assertion's claims (§1.2): issued by and about the app, for the token URL.
fn assertion_claims(client_id: &str, token_url: &str, now: i64, jti: &str) -> Value {
    json!({
        "aud": token_url,
        "iss": client_id,
        "sub": client_id,
        "jti": jti,
        "nbf": now,
        "iat": now,
        "exp": now + ASSERTION_LIFETIME_SECS,
    })
}

/// Resource units a request costs (§6): `GET users` 2, members 3, transitive members 5, other
/// GETs 1; `$select` −1, `$expand` +1, `$top` under 20 −1; never below 1.
fn resource_units(path_and_query: &str) -> u32 {
    let (path, query) = path_and_query.split_once('?').unwrap_or((path_and_query, ""));
    let path = path.trim_end_matches('/');
    let mut cost: i64 = if path.contains("/transitiveMembers") {
        5
    } else if path.contains("/members") {
        3
    } else if path.ends_with("/users") {
        2
    } else {
        1
    };
    let option = |name: &str| {
        url::form_urlencoded::parse(query.as_bytes())
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.into_owned())
    };
    if option("$select").is_some() {
        cost -= 1;
    }
    if option("$expand").is_some() {
        cost += 1;
    }
    if option("$top").and_then(|t| t.trim().parse::<u32>().ok()).is_some_and(|t| t < 20) {
        cost -= 1;
    }
    cost.max(1) as u32
}

/// Whether a listing is an advanced query, which needs `ConsistencyLevel: eventual` on every
/// page (§2): `$count`, `$search`, `$orderby` with `$filter`, or `ne`/`not`/`endsWith` in
/// `$filter`. The importer's own listings are not.
fn needs_eventual(url: &str) -> bool {
    let query = url.split_once('?').map_or("", |(_, q)| q);
    let options: Vec<(String, String)> = url::form_urlencoded::parse(query.as_bytes())
        .map(|(n, v)| (n.to_ascii_lowercase(), v.into_owned()))
        .collect();
    let option = |name: &str| options.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str());
    let filter = option("$filter").map(str::to_ascii_lowercase);
    let advanced_filter = filter.as_deref().is_some_and(|f| {
        f.split(|c: char| !c.is_ascii_alphanumeric()).any(|word| matches!(word, "ne" | "not" | "endswith"))
    });
    option("$count").is_some_and(|c| c.eq_ignore_ascii_case("true"))
        || option("$search").is_some()
        || (option("$orderby").is_some() && filter.is_some())
        || advanced_filter
}

/// A fixed-window resource-unit budget, the client's own share of the app's limit (§6): how
/// long to wait before spending `cost`. Windows run back to back from the first request, so
/// concurrent callers queue into later windows.
#[derive(Debug, Clone, Copy)]
struct Budget {
    limit: u32,
    window: Duration,
    started: Option<Instant>,
    used: u32,
}

impl Budget {
    fn new(limit: u32, window: Duration) -> Budget {
        Budget { limit: limit.max(1), window: window.max(Duration::from_millis(1)), started: None, used: 0 }
    }

    fn reserve(&mut self, cost: u32, now: Instant) -> Duration {
        let cost = cost.min(self.limit);
        let mut started = match self.started {
            Some(started) if now < started + self.window => started,
            _ => {
                self.used = 0;
                now
            }
        };
        if self.used + cost > self.limit {
            started += self.window;
            self.used = 0;
        }
        self.used += cost;
        self.started = Some(started);
        started.saturating_duration_since(now)
    }
}

/// Graph's limit for one app in one tenant, in resource units per 10 s, by the tenant's users
/// (§6): 3,500 under 50 users, 5,000 up to 500, 8,000 above.
fn tenant_limit(users: u64) -> u32 {
    match users {
        0..50 => 3_500,
        50..=500 => 5_000,
        _ => 8_000,
    }
}

/// The client's budget when the configuration sets none: half the app's limit in a tenant of
/// `users` users.
fn half_of_tenant_limit(users: u64) -> u32 {
    tenant_limit(users) / 2
}

/// How long to hold back once Graph says the app is above 80 % of its limit
/// (`x-ms-throttle-limit-percentage`, 0.8–1.8): nothing at 0.8, a second at 1.0, five at 1.8.
fn pressure_pause(percentage: f64) -> Duration {
    if !percentage.is_finite() || percentage <= 0.8 {
        return Duration::ZERO;
    }
    Duration::from_secs_f64(((percentage - 0.8) * 5.0).min(5.0))
}

/// `Retry-After` in seconds, or as an HTTP date.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    let secs = at.timestamp().saturating_sub(chrono::Utc::now().timestamp()).max(0);
    Some(Duration::from_secs(secs as u64))
}

/// Exponential backoff with full jitter: up to 0.5 s, 1 s, 2 s, ... capped at 30 s.
fn backoff(attempt: u32) -> Duration {
    let ceiling =
        Duration::from_millis(500u64.saturating_mul(1 << attempt.min(6))).min(Duration::from_secs(30));
    jitter(ceiling)
}

fn jitter(up_to: Duration) -> Duration {
    use rand::RngExt;
    let millis = u64::try_from(up_to.as_millis()).unwrap_or(u64::MAX).max(1);
    Duration::from_millis(rand::rng().random_range(0..millis))
}

/// Before retrying: `Retry-After` when the answer has one (at most `max_wait`, plus a little
/// jitter so that clients do not return together), else a jittered backoff by `attempt`.
fn retry_wait(headers: &HeaderMap, attempt: u32, max_wait: Duration) -> Duration {
    match retry_after(headers) {
        Some(wait) => wait.min(max_wait) + jitter(Duration::from_millis(250)),
        None => backoff(attempt),
    }
}

/// A transport error with its causes, which reqwest's own message leaves out.
fn cause(error: &reqwest::Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(inner) = source {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        source = inner.source();
    }
    text
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

// ---------------------------------------------------------------------------------------------
// The client
// ---------------------------------------------------------------------------------------------

/// The opened secrets of a connection's credentials: for `client_secret` and `delegated` the
/// secret's value, for `certificate` the private key PEM; `backup` for `backup_auth`, when it is
/// set. Secrets left inside the `EntraSource` itself are not read. A delegated credential's
/// refresh token comes with [`Delegation`].
#[derive(Clone)]
pub struct GraphCredentials {
    pub primary: String,
    pub backup: Option<String>,
}

impl std::fmt::Debug for GraphCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "GraphCredentials(primary .., backup {})",
            if self.backup.is_some() { ".." } else { "none" }
        )
    }
}

/// Limits that keep one tenant's run polite and stop one that has gone wrong.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Pages of one listing or delta round.
    pub max_pages: usize,
    /// Objects of one listing or delta round.
    pub max_records: usize,
    /// Requests in flight at once (§6: 2–4 per tenant).
    pub max_in_flight: usize,
    /// Resource units the client spends per `window`. `None`: half of the app's limit in the
    /// tenant ([`tenant_limit`]), as far as the tenant's size is known
    /// ([`GraphClient::know_tenant_size`]); the other half is left to the app's other callers.
    pub resource_units: Option<u32>,
    pub window: Duration,
    /// Retries of a 429, 5xx or timeout before the call fails.
    pub max_retries: u32,
    /// The longest `Retry-After` honoured as given.
    pub max_wait: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_pages: 100_000,
            max_records: 5_000_000,
            max_in_flight: 4,
            resource_units: None,
            window: Duration::from_secs(10),
            max_retries: 5,
            max_wait: Duration::from_secs(300),
        }
    }
}

/// Where a delegated credential's newest refresh token goes, and word that it stopped working.
/// The engine stores both; the client stays free of the database.
pub trait TokenKeeper: Send + Sync {
    /// Keeps the refresh token Entra just returned for the credential at `place` (`auth`,
    /// `backup_auth`): each refresh returns a new one, and the newest must be used next (§1.4).
    fn keep(&self, place: &'static str, refresh_token: String) -> BoxFuture<'static, Result<()>>;
    /// Entra refused the credential's refresh token for good; `remedy` says what the admin must do.
    fn lost(&self, place: &'static str, remedy: String) -> BoxFuture<'static, Result<()>>;
}

/// The refresh tokens of a connection's delegated credentials (§1.4), as the last consent or
/// refresh left them, and where new ones go.
#[derive(Clone, Default)]
pub struct Delegation {
    /// `auth`'s refresh token; `None` while no admin has connected it.
    pub primary: Option<String>,
    /// `backup_auth`'s.
    pub backup: Option<String>,
    pub keeper: Option<Arc<dyn TokenKeeper>>,
    /// How an admin connects again, appended to remedies: `": open … and sign in"`.
    pub reconnect: String,
}

impl std::fmt::Debug for Delegation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shown = |token: &Option<String>| if token.is_some() { ".." } else { "none" };
        write!(f, "Delegation(primary {}, backup {})", shown(&self.primary), shown(&self.backup))
    }
}

/// How a credential proves the app's identity.
enum Proof {
    Secret(String),
    Certificate {
        key: EncodingKey,
        thumbprint: String,
    },
    /// Delegated sign-in: the app's secret; the refresh token lives in [`TokenState`].
    Delegated(String),
}

struct Credential {
    /// `auth` or `backup_auth`.
    place: &'static str,
    client_id: String,
    proof: Proof,
}

impl Credential {
    fn open(place: &'static str, auth: &EntraAuth, secret: &str) -> Result<Credential> {
        let proof = match auth {
            EntraAuth::ClientSecret { .. } => {
                if secret.trim().is_empty() {
                    return Err(Error::Upstream(format!(
                        "entra.{place} has no client secret; set client_secret to the secret's Value"
                    )));
                }
                Proof::Secret(secret.to_string())
            }
            EntraAuth::Certificate { certificate_pem, .. } => {
                let unusable = |cause: String| {
                    Error::Upstream(format!(
                        "the private key of entra.{place} cannot sign ({cause}); it must be the RSA \
                         private key in PEM form (BEGIN PRIVATE KEY or BEGIN RSA PRIVATE KEY) of the \
                         certificate registered on the app"
                    ))
                };
                let key =
                    EncodingKey::from_rsa_pem(secret.as_bytes()).map_err(|e| unusable(e.to_string()))?;
                // A public key in PEM parses as well, and fails only when it signs.
                jsonwebtoken::crypto::sign(b"probe", &key, Algorithm::RS256)
                    .map_err(|e| unusable(e.to_string()))?;
                let thumbprint = x5t_s256(certificate_pem).ok_or_else(|| {
                    Error::Upstream(format!(
                        "the certificate_pem of entra.{place} is not a PEM certificate (BEGIN CERTIFICATE)"
                    ))
                })?;
                Proof::Certificate { key, thumbprint }
            }
            EntraAuth::Delegated { .. } => {
                if secret.trim().is_empty() {
                    return Err(Error::Upstream(format!(
                        "entra.{place} has no client secret; delegated sign-in needs the app's client \
                         secret too: set client_secret to the secret's Value"
                    )));
                }
                Proof::Delegated(secret.to_string())
            }
        };
        Ok(Credential { place, client_id: auth.client_id().to_string(), proof })
    }

    fn kind(&self) -> &'static str {
        match self.proof {
            Proof::Secret(_) => "client secret",
            Proof::Certificate { .. } => "certificate",
            Proof::Delegated(_) => DELEGATED,
        }
    }

    fn is_delegated(&self) -> bool {
        matches!(self.proof, Proof::Delegated(_))
    }
}

#[derive(Clone)]
struct AccessToken {
    value: String,
    renew_at: Instant,
}

/// What a token endpoint granted: an access token and, for delegated sign-in, the new refresh
/// token.
struct Granted {
    access: AccessToken,
    refresh_token: Option<String>,
}

#[derive(Default)]
struct TokenState {
    token: Option<AccessToken>,
    /// The primary credential was refused in this client's life: the backup is used.
    on_backup: bool,
    /// The newest refresh tokens of delegated credentials, by place.
    primary_refresh: Option<String>,
    backup_refresh: Option<String>,
}

impl TokenState {
    fn refresh_token(&mut self, place: &str) -> &mut Option<String> {
        match place {
            "auth" => &mut self.primary_refresh,
            _ => &mut self.backup_refresh,
        }
    }
}

/// Shared waits of all requests of the client.
struct Pacing {
    budget: Budget,
    /// After a `Retry-After` or a pressure signal, no request starts before this.
    pause_until: Option<Instant>,
}

/// A cached token is replaced this long before it expires (or at half its life).
const EXPIRY_MARGIN: Duration = Duration::from_secs(60);
/// Retries of a 429 or 5xx from the token endpoint.
const TOKEN_RETRIES: u32 = 3;

/// A Microsoft Graph client for one tenant: app-only (client credentials), or as the admin who
/// connected a delegated credential.
pub struct GraphClient {
    http: reqwest::Client,
    tenant: String,
    login_url: String,
    token_url: String,
    /// `{graph_url}`, without a trailing slash: nextLinks must stay under it.
    graph_url: String,
    scope: String,
    primary: Credential,
    backup: Option<Credential>,
    limits: Limits,
    tokens: tokio::sync::Mutex<TokenState>,
    keeper: Option<Arc<dyn TokenKeeper>>,
    reconnect: String,
    fallback: OnceLock<String>,
    in_flight: tokio::sync::Semaphore,
    pacing: Mutex<Pacing>,
}

impl std::fmt::Debug for GraphClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "GraphClient(tenant {}, app {} by {}, backup {})",
            self.tenant,
            self.primary.client_id,
            self.primary.kind(),
            self.backup.as_ref().map_or("none", Credential::kind)
        )
    }
}

/// A token request that failed: the remedy, whether the credential itself was refused, and
/// whether a delegated credential needs an admin to consent again.
struct TokenFailure {
    error: Error,
    credential_refused: bool,
    consent_lost: bool,
}

impl GraphClient {
    /// A client for `source` with its opened secrets. Keys and certificates are checked here,
    /// so a bad one is named before any request. A delegated credential gets its refresh token
    /// from [`GraphClient::with_delegation`]; without one it fails as not connected yet.
    pub fn new(source: &EntraSource, credentials: GraphCredentials, limits: Limits) -> Result<GraphClient> {
        let primary = Credential::open("auth", &source.auth, &credentials.primary)?;
        let backup = match (&source.backup_auth, &credentials.backup) {
            (Some(auth), Some(secret)) => Some(Credential::open("backup_auth", auth, secret)?),
            (Some(_), None) => {
                return Err(Error::Upstream(
                    "entra.backup_auth is set but its secret is missing; set it again".into(),
                ))
            }
            (None, _) => None,
        };
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| Error::internal("building the Graph client", e))?;
        let login_url = source.login_url.trim_end_matches('/').to_string();
        let graph_url = source.graph_url.trim_end_matches('/').to_string();
        let tenant = source.tenant.trim().to_string();
        Ok(GraphClient {
            http,
            token_url: token_url(&login_url, &tenant),
            scope: format!("{graph_url}/.default"),
            tenant,
            login_url,
            graph_url,
            primary,
            backup,
            tokens: tokio::sync::Mutex::default(),
            keeper: None,
            reconnect: String::new(),
            fallback: OnceLock::new(),
            in_flight: tokio::sync::Semaphore::new(limits.max_in_flight.max(1)),
            pacing: Mutex::new(Pacing {
                // Until its size is known, the tenant is taken for the smallest.
                budget: Budget::new(limits.resource_units.unwrap_or(half_of_tenant_limit(0)), limits.window),
                pause_until: None,
            }),
            limits,
        })
    }

    /// The refresh tokens of the delegated credentials, and where new ones go.
    pub fn with_delegation(mut self, delegation: Delegation) -> GraphClient {
        let state = self.tokens.get_mut();
        state.primary_refresh = delegation.primary;
        state.backup_refresh = delegation.backup;
        self.keeper = delegation.keeper;
        self.reconnect = delegation.reconnect;
        self
    }

    /// When the primary credential was refused and `backup_auth` used instead: the run warning,
    /// naming why.
    pub fn fallback_used(&self) -> Option<String> {
        self.fallback.get().cloned()
    }

    fn names<'a>(&'a self, credential: &'a Credential) -> Names<'a> {
        Names {
            place: credential.place,
            client_id: &credential.client_id,
            kind: credential.kind(),
            tenant: &self.tenant,
            login_url: &self.login_url,
            reconnect: &self.reconnect,
        }
    }

    /// The credential in use, for remedies.
    async fn in_use(&self) -> &Credential {
        let on_backup = self.tokens.lock().await.on_backup;
        match (&self.backup, on_backup) {
            (Some(backup), true) => backup,
            _ => &self.primary,
        }
    }

    /// A valid access token: the cached one, or a new one from the primary credential, or from
    /// the backup once the primary is refused.
    async fn token(&self) -> Result<String> {
        let mut state = self.tokens.lock().await;
        if let Some(token) = state.token.as_ref().filter(|t| Instant::now() < t.renew_at) {
            return Ok(token.value.clone());
        }
        let token = match (&self.backup, state.on_backup) {
            (Some(backup), true) => self.obtain(backup, &mut state).await.map_err(|f| f.error)?,
            (backup, _) => match (self.obtain(&self.primary, &mut state).await, backup) {
                (Ok(token), _) => token,
                (Err(failure), Some(backup)) if failure.credential_refused => {
                    let token = self.obtain(backup, &mut state).await.map_err(|second| {
                        Error::Upstream(format!(
                            "both credentials were refused: entra.auth: {}; entra.backup_auth: {}",
                            failure.error, second.error
                        ))
                    })?;
                    let warning = format!(
                        "the primary credential (entra.auth, {} of app {}) was refused, so this run \
                         used entra.backup_auth ({} of app {}): {}",
                        self.primary.kind(),
                        self.primary.client_id,
                        backup.kind(),
                        backup.client_id,
                        failure.error
                    );
                    tracing::warn!(tenant = %self.tenant, "{warning}");
                    let _ = self.fallback.set(warning);
                    state.on_backup = true;
                    token
                }
                (Err(failure), _) => return Err(failure.error),
            },
        };
        let value = token.value.clone();
        state.token = Some(token);
        Ok(value)
    }

    /// After a 401 to `used`: drops it, unless a newer token replaced it meanwhile.
    async fn discard(&self, used: &str) {
        let mut state = self.tokens.lock().await;
        if state.token.as_ref().is_some_and(|t| t.value == used) {
            state.token = None;
        }
    }

    fn assertion(&self, credential: &Credential, key: &EncodingKey, thumbprint: &str) -> Result<String> {
        let mut header = Header::new(Algorithm::RS256);
        header.x5t_s256 = Some(thumbprint.to_string());
        let claims = assertion_claims(
            &credential.client_id,
            &self.token_url,
            now(),
            &uuid::Uuid::new_v4().to_string(),
        );
        jsonwebtoken::encode(&header, &claims, key).map_err(|e| {
            Error::Upstream(format!("the private key of entra.{} cannot sign ({e})", credential.place))
        })
    }

    /// An access token from `credential`. A delegated one redeems its newest refresh token and
    /// hands the new one to the keeper; one Entra refuses for good is reported lost.
    async fn obtain(
        &self,
        credential: &Credential,
        state: &mut TokenState,
    ) -> Result<AccessToken, TokenFailure> {
        let refresh = if credential.is_delegated() {
            let Some(token) = state.refresh_token(credential.place).clone() else {
                return Err(TokenFailure {
                    error: Error::Upstream(format!(
                        "entra.{} uses delegated sign-in of app {}, and no admin has connected it yet; an \
                         admin must connect it{}",
                        credential.place, credential.client_id, self.reconnect
                    )),
                    credential_refused: true,
                    consent_lost: false,
                });
            };
            Some(token)
        } else {
            None
        };
        match self.request_token(credential, refresh.as_deref()).await {
            Ok(granted) => {
                if let (Some(new), true) = (granted.refresh_token, credential.is_delegated()) {
                    *state.refresh_token(credential.place) = Some(new.clone());
                    if let Some(keeper) = &self.keeper {
                        if let Err(error) = keeper.keep(credential.place, new).await {
                            // The token before it is not revoked (§1.4): the next run can use it.
                            tracing::warn!(%error, place = credential.place, "could not store Entra's new refresh token");
                        }
                    }
                }
                Ok(granted.access)
            }
            Err(failure) => {
                if failure.consent_lost {
                    tracing::error!(
                        tenant = %self.tenant, place = credential.place,
                        "Entra refused the delegated sign-in's refresh token; an admin must connect again"
                    );
                    if let Some(keeper) = &self.keeper {
                        if let Err(error) = keeper.lost(credential.place, failure.error.to_string()).await {
                            tracing::warn!(%error, place = credential.place, "could not mark the connection as needing consent");
                        }
                    }
                }
                Err(failure)
            }
        }
    }

    /// One token exchange with `credential` (§1.1, §1.2, §1.4: client credentials, or the
    /// refresh token of delegated sign-in), retrying 429 and 5xx.
    async fn request_token(
        &self,
        credential: &Credential,
        refresh: Option<&str>,
    ) -> Result<Granted, TokenFailure> {
        let fail = |error: Error| TokenFailure { error, credential_refused: false, consent_lost: false };
        let mut retries = 0;
        loop {
            let mut form: Vec<(&str, String)> = match refresh {
                Some(refresh_token) => vec![
                    ("grant_type", "refresh_token".into()),
                    ("client_id", credential.client_id.clone()),
                    ("refresh_token", refresh_token.to_string()),
                    ("scope", delegated_scope(&self.graph_url)),
                ],
                None => vec![
                    ("grant_type", "client_credentials".into()),
                    ("client_id", credential.client_id.clone()),
                    ("scope", self.scope.clone()),
                ],
            };
            match &credential.proof {
                Proof::Secret(secret) | Proof::Delegated(secret) => {
                    form.push(("client_secret", secret.clone()))
                }
                Proof::Certificate { key, thumbprint } => {
                    form.push(("client_assertion_type", super::okta_auth::JWT_BEARER.into()));
                    form.push((
                        "client_assertion",
                        self.assertion(credential, key, thumbprint).map_err(fail)?,
                    ));
                }
            }
            let response =
                self.http.post(&self.token_url).header(ACCEPT, "application/json").form(&form).send().await;
            let response = response.map_err(|e| {
                fail(Error::Upstream(format!(
                    "cannot reach the Microsoft identity platform at {} ({}); check entra.login_url and \
                     that this server can reach it (proxy, firewall)",
                    self.login_url,
                    cause(&e)
                )))
            })?;
            let status = response.status().as_u16();
            let headers = response.headers().clone();
            let body = response
                .text()
                .await
                .map_err(|e| fail(Error::Upstream(format!("reading Entra's token answer: {}", cause(&e)))))?;
            if status == 200 {
                return granted(&body).map_err(fail);
            }
            if matches!(status, 429 | 500 | 502 | 503 | 504) && retries < TOKEN_RETRIES {
                retries += 1;
                let wait = retry_wait(&headers, retries, self.limits.max_wait);
                tracing::warn!(
                    status,
                    retries,
                    wait_ms = wait.as_millis() as u64,
                    "Entra's token endpoint asked to wait; retrying"
                );
                tokio::time::sleep(wait).await;
                continue;
            }
            let (error, code, said) = aad_error(&body);
            tracing::debug!(status, error, code, place = credential.place, "Entra refused a token");
            let lost = credential.is_delegated() && consent_lost(&error, code);
            return Err(TokenFailure {
                credential_refused: refuses_credential(&error, code) || lost,
                consent_lost: lost,
                error: token_refusal(status, &error, code, &said, &self.names(credential)),
            });
        }
    }

    /// The tenant has at least `users` users: without a configured budget, the client spends
    /// half the app's limit for the largest tenant it knows of (a smaller count learnt later,
    /// such as a listing's first page, lowers nothing). A 100k-user tenant allows 8,000 RU per
    /// 10 s; a full read's 1,000 pages of users (2 RU each) and, when it listed each group's
    /// members, ~1,000 member listings (4 each) waited for later windows at the smallest
    /// tenant's share.
    pub fn know_tenant_size(&self, users: u64) {
        if self.limits.resource_units.is_none() {
            let mut pacing = lock(&self.pacing);
            pacing.budget.limit = pacing.budget.limit.max(half_of_tenant_limit(users));
        }
    }

    /// Waits as the budget and any pause ask, before a request costing `cost`.
    async fn pace(&self, cost: u32) {
        let wait = {
            let mut pacing = lock(&self.pacing);
            let now = Instant::now();
            let paused =
                pacing.pause_until.map_or(Duration::ZERO, |until| until.saturating_duration_since(now));
            paused.max(pacing.budget.reserve(cost, now))
        };
        if !wait.is_zero() {
            tracing::debug!(wait_ms = wait.as_millis() as u64, "pacing Microsoft Graph requests");
            tokio::time::sleep(wait).await;
        }
    }

    /// No request of this client starts within `wait` from now.
    fn pause(&self, wait: Duration) {
        let mut pacing = lock(&self.pacing);
        let until = Instant::now() + wait;
        if pacing.pause_until.is_none_or(|current| current < until) {
            pacing.pause_until = Some(until);
        }
    }

    /// `url` as a full URL under `graph_url`: a path is put under `{graph_url}/v1.0`; a full
    /// URL (a nextLink, a stored deltaLink) must be on Graph, or the token would leak.
    fn resolve(&self, url_or_path: &str) -> Result<String> {
        if url_or_path.starts_with('/') {
            return Ok(format!("{}/v1.0{url_or_path}", self.graph_url));
        }
        let under = url_or_path.strip_prefix(&self.graph_url).is_some_and(|rest| rest.starts_with('/'));
        if under {
            Ok(url_or_path.to_string())
        } else {
            Err(Error::Upstream(format!(
                "refusing to follow a link outside entra.graph_url ({}): {url_or_path}",
                self.graph_url
            )))
        }
    }

    /// GETs one JSON object, with pacing, `Retry-After` waits, 5xx retries and one new token
    /// after a 401.
    async fn get(&self, url: &str, eventual: bool) -> Result<Value> {
        let path = url
            .strip_prefix(&self.graph_url)
            .map(|rest| rest.strip_prefix("/v1.0").unwrap_or(rest))
            .unwrap_or(url);
        let path = path.split('?').next().unwrap_or(path).to_string();
        let cost = resource_units(url.split_once("/v1.0").map_or(url, |(_, rest)| rest));
        let mut attempt = 0;
        let mut reauthorized = false;
        loop {
            let token = self.token().await?;
            self.pace(cost).await;
            let permit =
                self.in_flight.acquire().await.map_err(|e| Error::internal("Graph request slots", e))?;
            let client_request_id = uuid::Uuid::new_v4().to_string();
            let mut request = self
                .http
                .get(url)
                .header(AUTHORIZATION, format!("Bearer {token}"))
                .header(ACCEPT, "application/json")
                .header("client-request-id", &client_request_id);
            if eventual {
                request = request.header("ConsistencyLevel", "eventual");
            }
            let sent = request.send().await;
            let response = match sent {
                Ok(response) => response,
                Err(e) if e.is_timeout() && attempt < self.limits.max_retries => {
                    drop(permit);
                    attempt += 1;
                    tracing::warn!(attempt, "Microsoft Graph did not answer in time; retrying");
                    tokio::time::sleep(backoff(attempt)).await;
                    continue;
                }
                Err(e) => {
                    return Err(Error::Upstream(format!(
                        "cannot reach Microsoft Graph at {} ({}); check entra.graph_url and that this \
                         server can reach it (proxy, firewall)",
                        self.graph_url,
                        cause(&e)
                    )))
                }
            };
            let status = response.status().as_u16();
            let headers = response.headers().clone();
            let body = response
                .text()
                .await
                .map_err(|e| Error::Upstream(format!("reading Microsoft Graph's answer: {}", cause(&e))))?;
            drop(permit);
            let request_id = headers.get("request-id").and_then(|v| v.to_str().ok()).unwrap_or_default();
            tracing::debug!(status, request_id, client_request_id, path = %path, "Microsoft Graph answered");
            if let Some(percentage) = headers
                .get("x-ms-throttle-limit-percentage")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<f64>().ok())
            {
                let wait = pressure_pause(percentage);
                if !wait.is_zero() {
                    tracing::warn!(
                        percentage,
                        wait_ms = wait.as_millis() as u64,
                        "the app nears its Microsoft Graph limit; slowing down"
                    );
                    self.pause(wait);
                }
            }
            let (code, message) = if status == 200 { Default::default() } else { graph_error(&body) };
            match status {
                200 => {
                    return serde_json::from_str::<Value>(&body).ok().filter(Value::is_object).ok_or_else(
                        || {
                            Error::Upstream(format!(
                                "Microsoft Graph sent {path} an answer that is not a JSON object"
                            ))
                        },
                    );
                }
                401 if !reauthorized && (code == "InvalidAuthenticationToken" || code.is_empty()) => {
                    reauthorized = true;
                    tracing::debug!("Microsoft Graph refused the access token; getting a new one");
                    self.discard(&token).await;
                }
                429 | 500 | 502 | 503 | 504 if attempt < self.limits.max_retries => {
                    attempt += 1;
                    let wait = retry_wait(&headers, attempt, self.limits.max_wait);
                    tracing::warn!(
                        status,
                        attempt,
                        wait_ms = wait.as_millis() as u64,
                        "Microsoft Graph asked to wait or failed; retrying"
                    );
                    if retry_after(&headers).is_some() {
                        // Throttled requests count too: nobody of this client retries before then.
                        self.pause(wait);
                    }
                    tokio::time::sleep(wait).await;
                }
                _ => {
                    let credential = self.in_use().await;
                    return Err(graph_refusal(
                        status,
                        &code,
                        &message,
                        &path,
                        &App {
                            client_id: &credential.client_id,
                            tenant: &self.tenant,
                            delegated: credential.is_delegated(),
                        },
                        attempt,
                    ));
                }
            }
        }
    }

    /// Reads every page of a listing (a path under `/v1.0` such as [`users_path`], or a full
    /// Graph URL), handing each page's `value` to `each`. Returns the number of objects. Stops
    /// with an error on a repeated nextLink or past the limits.
    pub async fn for_each_page(
        &self,
        url_or_path: &str,
        mut each: impl FnMut(&[Value]) -> Result<()>,
    ) -> Result<usize> {
        let mut pager = self.pager(url_or_path);
        while let Some(items) = pager.next_page().await? {
            each(&items)?;
        }
        Ok(pager.records)
    }

    /// One delta round (§5) from its first request ([`users_delta_path`], [`groups_delta_path`])
    /// or a stored deltaLink, through every nextLink; hands each page's objects to `each`
    /// (`@removed` objects and `members@delta` included: merge them, in order) and returns the
    /// new deltaLink to store. An expired link fails so that [`is_delta_expired`] holds.
    pub async fn read_delta(
        &self,
        url_or_path: &str,
        mut each: impl FnMut(&[Value]) -> Result<()>,
    ) -> Result<String> {
        let mut pager = self.pager(url_or_path);
        while let Some(items) = pager.next_page().await? {
            each(&items)?;
        }
        pager
            .delta_link
            .ok_or_else(|| Error::Upstream("Microsoft Graph ended a delta round without a deltaLink".into()))
    }

    /// A deltaLink "from now" for a delta round's first request ([`users_delta_path`],
    /// [`groups_delta_path`]): `$deltatoken=latest` reads no objects.
    pub async fn latest_delta_link(&self, first_request: &str) -> Result<String> {
        self.read_delta(&format!("{first_request}&$deltatoken=latest"), |_| Ok(())).await
    }

    /// Pages of a listing or delta round one at a time, for callers that must await between
    /// pages.
    pub fn pager(&self, url_or_path: &str) -> Pager<'_> {
        Pager {
            client: self,
            next: Some(url_or_path.to_string()),
            eventual: needs_eventual(url_or_path),
            seen: HashSet::new(),
            pages: 0,
            records: 0,
            delta_link: None,
        }
    }

    /// Tries, with one small request each, what the rules need: an access token, reading users
    /// and, with `needs_groups`, groups and group members. Every failure carries its remedy;
    /// without a token nothing else can be tried.
    pub async fn verify(&self, needs_groups: bool) -> Vec<Check> {
        let mut checks = Vec::new();
        let what = format!(
            "get an access token for app {} in tenant {} ({}, entra.auth)",
            self.primary.client_id,
            self.tenant,
            self.primary.kind()
        );
        if let Err(error) = self.token().await {
            checks.push(Check { what, remedy: Some(error.to_string()) });
            return checks;
        }
        match (self.fallback_used(), &self.backup) {
            (Some(warning), Some(backup)) => {
                checks.push(Check { what, remedy: Some(warning) });
                checks.push(Check {
                    what: format!(
                        "get an access token for app {} ({}, entra.backup_auth)",
                        backup.client_id,
                        backup.kind()
                    ),
                    remedy: None,
                });
            }
            _ => checks.push(Check { what, remedy: None }),
        }
        let mut probe = |what: &str, outcome: Result<()>| {
            checks.push(Check { what: what.to_string(), remedy: outcome.err().map(|e| e.to_string()) });
        };
        let users = self.probe("/users?$top=1&$select=id").await.map(|_| ());
        probe("read users (User.Read.All)", users);
        if needs_groups {
            let groups = self.probe("/groups?$top=1&$select=id").await;
            let first = groups.as_ref().ok().and_then(|page| page.first()).and_then(|g| text(g, "id"));
            let members = match (&groups, first) {
                (Ok(_), Some(id)) => Some(
                    self.probe(&format!(
                        "/groups/{}/transitiveMembers/microsoft.graph.user?$top=1&$select=id",
                        utf8_percent_encode(id, SEGMENT)
                    ))
                    .await
                    .map(|_| ()),
                ),
                _ => None,
            };
            probe("read groups (GroupMember.Read.All)", groups.map(|_| ()));
            if let Some(members) = members {
                probe("read group members (GroupMember.Read.All)", members);
            }
        }
        checks
    }

    async fn probe(&self, path: &str) -> Result<Vec<Value>> {
        let page = self.get(&self.resolve(path)?, false).await?;
        Ok(page.get("value").and_then(Value::as_array).cloned().unwrap_or_default())
    }
}

/// A token endpoint's 200 (§1.3, §1.4).
fn granted(body: &str) -> Result<Granted> {
    let answer: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    let Some(value) = answer.get("access_token").and_then(Value::as_str).filter(|t| !t.is_empty()) else {
        return Err(Error::Upstream("Entra's token endpoint answered 200 without an access_token".into()));
    };
    let expires_in = match answer.get("expires_in") {
        Some(Value::Number(n)) => n.as_u64(),
        Some(Value::String(s)) => s.trim().parse().ok(),
        _ => None,
    };
    let lifetime = Duration::from_secs(expires_in.unwrap_or(3599).min(24 * 3600));
    let renew_at = Instant::now() + lifetime.saturating_sub(EXPIRY_MARGIN.min(lifetime / 2));
    tracing::debug!(expires_in = lifetime.as_secs(), "got a Microsoft Graph access token");
    let refresh_token =
        answer.get("refresh_token").and_then(Value::as_str).filter(|t| !t.is_empty()).map(str::to_string);
    Ok(Granted { access: AccessToken { value: value.to_string(), renew_at }, refresh_token })
}

/// What the consent callback brings to redeem (§1.4).
#[derive(Clone, Copy)]
pub struct CodeGrant<'a> {
    pub code: &'a str,
    /// The redirect URI of the authorize link, sent again.
    pub redirect_uri: &'a str,
    /// The PKCE verifier of the link's `code_challenge`.
    pub code_verifier: &'a str,
}

impl std::fmt::Debug for CodeGrant<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CodeGrant(redirect_uri {})", self.redirect_uri)
    }
}

/// Redeems the authorization code of a consent for the delegated credential at `place`
/// (`auth`, `backup_auth`) of `source`, whose opened client secret is `client_secret`; returns
/// the refresh token to keep. Not retried: a code is good once.
pub async fn redeem_code(
    source: &EntraSource,
    place: &'static str,
    client_secret: &str,
    grant: CodeGrant<'_>,
) -> Result<String> {
    let auth = match place {
        "auth" => Some(&source.auth),
        _ => source.backup_auth.as_ref(),
    };
    let credential = match auth {
        Some(auth @ EntraAuth::Delegated { .. }) => Credential::open(place, auth, client_secret)?,
        _ => return Err(Error::InvalidValue(format!("entra.{place} does not use delegated sign-in"))),
    };
    let login_url = source.login_url.trim_end_matches('/');
    let token_url = token_url(login_url, &source.tenant);
    let form = [
        ("grant_type", "authorization_code".to_string()),
        ("client_id", credential.client_id.clone()),
        ("client_secret", client_secret.to_string()),
        ("code", grant.code.to_string()),
        ("redirect_uri", grant.redirect_uri.to_string()),
        ("code_verifier", grant.code_verifier.to_string()),
        ("scope", delegated_scope(&source.graph_url)),
    ];
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .map_err(|e| Error::internal("building the Graph client", e))?;
    let response = http.post(&token_url).header(ACCEPT, "application/json").form(&form).send().await.map_err(|e| {
        Error::Upstream(format!(
            "cannot reach the Microsoft identity platform at {login_url} ({}); check entra.login_url and that \
             this server can reach it (proxy, firewall)",
            cause(&e)
        ))
    })?;
    let status = response.status().as_u16();
    let body = response
        .text()
        .await
        .map_err(|e| Error::Upstream(format!("reading Entra's token answer: {}", cause(&e))))?;
    if status == 200 {
        return granted(&body)?.refresh_token.ok_or_else(|| {
            Error::Upstream(format!(
                "Entra granted app {} no refresh token; the sign-in must include offline_access: check \
                 that the app may use it (App registrations → the app → API permissions) and connect again",
                credential.client_id
            ))
        });
    }
    let (error, code, said) = aad_error(&body);
    tracing::debug!(status, error, code, place, "Entra refused an authorization code");
    if error == "invalid_grant" && code != Some(65001) {
        // A code that is wrong, used, expired, or whose verifier or redirect URI does not match.
        return Err(Error::Upstream(format!(
            "Entra refused the authorization code of the sign-in for app {} (entra.{place}) ({said}); ask \
             scimd for a new authorize link and sign in again",
            credential.client_id
        )));
    }
    let names = Names {
        place,
        client_id: &credential.client_id,
        kind: credential.kind(),
        tenant: source.tenant.trim(),
        login_url,
        reconnect: ": ask scimd for a new authorize link and sign in again",
    };
    Err(token_refusal(status, &error, code, &said, &names))
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A listing or delta round being read; see [`GraphClient::pager`].
pub struct Pager<'a> {
    client: &'a GraphClient,
    next: Option<String>,
    /// `ConsistencyLevel: eventual` on every page: the header is not carried by nextLinks.
    eventual: bool,
    seen: HashSet<String>,
    pages: usize,
    pub records: usize,
    delta_link: Option<String>,
}

impl std::fmt::Debug for Pager<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Pager(pages {}, records {})", self.pages, self.records)
    }
}

impl Pager<'_> {
    /// The next page's objects, or `None` after the last. Stops with an error on a repeated
    /// nextLink or past the limits.
    pub async fn next_page(&mut self) -> Result<Option<Vec<Value>>> {
        let Some(next) = self.next.take() else { return Ok(None) };
        let url = self.client.resolve(&next)?;
        if !self.seen.insert(url.clone()) {
            return Err(Error::Upstream(format!(
                "Microsoft Graph returned the same next link twice ({url}); stopping to avoid a loop"
            )));
        }
        let mut page = self.client.get(&url, self.eventual).await?;
        let items = match page.get_mut("value").map(Value::take) {
            Some(Value::Array(items)) => items,
            _ => return Err(Error::Upstream("Microsoft Graph sent a page without a value array".into())),
        };
        self.pages += 1;
        self.records += items.len();
        let limits = self.client.limits;
        if self.pages > limits.max_pages || self.records > limits.max_records {
            return Err(Error::Upstream(format!(
                "the listing passed the configured caps ({} pages, {} records); nothing of this run is applied",
                limits.max_pages, limits.max_records
            )));
        }
        let link = |name: &str| page.get(name).and_then(Value::as_str).map(str::to_string);
        self.next = link("@odata.nextLink");
        if self.next.is_none() {
            self.delta_link = link("@odata.deltaLink");
        }
        Ok(Some(items))
    }

    /// The round's deltaLink, once its last page is read (delta rounds only).
    pub fn delta_link(&self) -> Option<&str> {
        self.delta_link.as_deref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    fn lena() -> Value {
        json!({
            "id": "3b9e5c1a-7d24-4f0e-a8b6-51c2d0e4f7a9",
            "userPrincipalName": "lena.hoffmann@fjord.example", "mail": "lena.hoffmann@fjord.example",
            "mailNickname": "lena.hoffmann", "displayName": "Lena Hoffmann",
            "givenName": "Lena", "surname": "Hoffmann", "jobTitle": "Controller",
            "department": "Finance", "employeeId": "100482", "employeeType": "Employee",
            "companyName": "Fjord GmbH", "officeLocation": "Hamburg 3.14",
            "businessPhones": ["+49 40 5550 1100"], "mobilePhone": null,
            "streetAddress": "Speicherstadt 7", "city": "Hamburg", "state": "HH",
            "postalCode": "20457", "country": "Germany", "preferredLanguage": "de-DE",
            "accountEnabled": true, "userType": "Member", "createdDateTime": "2024-05-01T08:00:00Z",
            "extension_6c1e2f3a4b5d4e6f8a7b9c0d1e2f3a4b_costCenter": "CC-4711",
            "onPremisesExtensionAttributes": {"extensionAttribute1": "E1"},
            "manager": {"@odata.type": "#microsoft.graph.user", "id": "c0ffee00-0000-4000-8000-000000000001",
                        "displayName": "Ole Berg"}
        })
    }

    #[test]
    fn an_entra_user_maps_to_scim_as_the_contract_table_says() {
        let mapped = map_user(&lena(), "userPrincipalName").unwrap();
        assert_eq!(mapped.source_id, "3b9e5c1a-7d24-4f0e-a8b6-51c2d0e4f7a9");
        assert_eq!(mapped.status, SourceStatus::Active);
        assert_eq!(mapped.created, "2024-05-01T08:00:00Z");
        assert_eq!(mapped.user_name.as_deref(), Some("lena.hoffmann@fjord.example"));
        assert_eq!(mapped.primary_email, "lena.hoffmann@fjord.example");
        assert_eq!(mapped.manager_source_id.as_deref(), Some("c0ffee00-0000-4000-8000-000000000001"));
        assert_eq!(
            Value::Object(mapped.resource),
            json!({
                "externalId": "3b9e5c1a-7d24-4f0e-a8b6-51c2d0e4f7a9",
                "displayName": "Lena Hoffmann",
                "name": {"givenName": "Lena", "familyName": "Hoffmann"},
                "emails": [{"value": "lena.hoffmann@fjord.example", "type": "work", "primary": true}],
                "title": "Controller", "userType": "Member", "preferredLanguage": "de-DE",
                "phoneNumbers": [{"value": "+49 40 5550 1100", "type": "work"}],
                "addresses": [{"streetAddress": "Speicherstadt 7", "locality": "Hamburg", "region": "HH",
                               "postalCode": "20457", "country": "Germany", "type": "work"}],
                "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {
                    "employeeNumber": "100482", "department": "Finance", "organization": "Fjord GmbH",
                    "manager": {"displayName": "Ole Berg"}
                }
            })
        );
    }

    #[test]
    fn a_disabled_guest_without_mail_maps_sparsely_with_the_upn_as_primary_email() {
        let guest = json!({
            "id": "c07d2a9e-1f3b-4c5d-9e8f-0a1b2c3d4e5f",
            "userPrincipalName": "partner_ext.example#EXT#@fjordgmbh.onmicrosoft.com", "mail": null,
            "mailNickname": "partner_ext.example#EXT#", "displayName": "Partner Guest",
            "givenName": null, "surname": null, "businessPhones": [], "mobilePhone": "+47 400 12 345",
            "accountEnabled": false, "userType": "Guest"
        });
        let mapped = map_user(&guest, "mail").unwrap();
        assert_eq!(mapped.status, SourceStatus::Inactive);
        assert_eq!(mapped.user_name, None, "no mail: no userName from that source");
        assert_eq!(mapped.primary_email, "partner_ext.example#EXT#@fjordgmbh.onmicrosoft.com");
        assert_eq!(mapped.manager_source_id, None);
        assert_eq!(mapped.created, "");
        assert_eq!(
            Value::Object(mapped.resource),
            json!({
                "externalId": "c07d2a9e-1f3b-4c5d-9e8f-0a1b2c3d4e5f", "displayName": "Partner Guest",
                "userType": "Guest", "phoneNumbers": [{"value": "+47 400 12 345", "type": "mobile"}]
            })
        );
        assert_eq!(map_user(&json!({"id": "x"}), "mail").unwrap().status, SourceStatus::Inactive);
        assert!(map_user(&json!({"displayName": "no id"}), "mail").is_none());
    }

    #[test]
    fn user_names_follow_the_username_source() {
        let user = lena();
        let table = [
            ("userPrincipalName", Some("lena.hoffmann@fjord.example")),
            ("mail", Some("lena.hoffmann@fjord.example")),
            ("mailNickname", Some("lena.hoffmann")),
            ("attribute:employeeId", Some("100482")),
            ("attribute:EmployeeID", Some("100482")),
            ("attribute:extension_6c1e2f3a4b5d4e6f8a7b9c0d1e2f3a4b_costCenter", Some("CC-4711")),
            ("attribute:onPremisesExtensionAttributes.extensionAttribute1", Some("E1")),
            ("attribute:mobilePhone", None),
            ("attribute:accountEnabled", None),
            ("login", None),
        ];
        for (source, expected) in table {
            assert_eq!(user_name(source, &user).as_deref(), expected, "{source}");
        }
        let mut without = user.clone();
        without["mailNickname"] = Value::Null;
        assert_eq!(map_user(&without, "mailNickname").unwrap().user_name, None);
        assert_eq!(user_name("attribute:n", &json!({"n": 42})).as_deref(), Some("42"));
    }

    #[test]
    fn a_delta_user_takes_its_manager_from_manager_delta() {
        let mut user = json!({"id": "u1", "accountEnabled": true,
            "manager@delta": [{"@odata.type": "#microsoft.graph.user", "id": "m1"}]});
        let mapped = map_user(&user, "userPrincipalName").unwrap();
        assert_eq!(mapped.manager_source_id.as_deref(), Some("m1"));
        assert!(mapped.resource.get(ENTERPRISE_USER_SCHEMA).is_none(), "no name in delta");
        user["manager@delta"] = json!([{"id": "m1", "@removed": {"reason": "deleted"}}]);
        assert_eq!(map_user(&user, "userPrincipalName").unwrap().manager_source_id, None);
    }

    #[test]
    fn the_select_list_is_what_the_mapping_reads_plus_the_username_property() {
        let base = user_select("userPrincipalName");
        assert_eq!(
            base,
            "id,userPrincipalName,mail,displayName,givenName,surname,jobTitle,userType,preferredLanguage,\
             businessPhones,mobilePhone,streetAddress,city,state,postalCode,country,employeeId,department,\
             companyName,accountEnabled,createdDateTime"
        );
        assert_eq!(user_select("mail"), base, "already selected");
        assert_eq!(user_select("mailNickname"), format!("{base},mailNickname"));
        assert_eq!(user_select("attribute:employeeId"), base);
        assert_eq!(
            user_select("attribute:extension_6c1e2f3a4b5d4e6f8a7b9c0d1e2f3a4b_badgeNumber"),
            format!("{base},extension_6c1e2f3a4b5d4e6f8a7b9c0d1e2f3a4b_badgeNumber")
        );
        assert_eq!(
            user_select("attribute:onPremisesExtensionAttributes.extensionAttribute3"),
            format!("{base},onPremisesExtensionAttributes")
        );
        assert_eq!(user_select("attribute:a,b&$top=1"), base, "never anything but a property name");
        // Every key map_user reads is selected.
        for key in ["givenName", "surname", "jobTitle", "businessPhones", "companyName", "createdDateTime"] {
            assert!(base.split(',').any(|n| n == key), "{key}");
        }
        assert!(users_path("mail").contains("$expand=manager($select=id,displayName)&$top=999"));
        assert!(users_delta_path("mail").ends_with(",createdDateTime,manager"));
        assert!(groups_delta_path().ends_with(",members"));
        assert_eq!(
            group_users_path("8a9b0c1d-2e3f"),
            "/groups/8a9b0c1d-2e3f/transitiveMembers/microsoft.graph.user?$select=id&$top=999"
        );
    }

    #[test]
    fn groups_are_selected_by_rule_6() {
        let group = |name: &str, mail: Option<&str>, security: bool| {
            let mut group = json!({"id": "g", "displayName": name, "securityEnabled": security});
            group["mail"] = json!(mail);
            group
        };
        let none: Vec<String> = Vec::new();
        let prefixes = vec!["Eng-".to_string(), "vpn-".to_string()];
        let table = [
            // group, prefixes, import_security_groups, import_groups_without_email, expected
            (group("All staff", Some("all@fjord.example"), false), &none, false, false, true),
            (group("Mail security", Some("ms@fjord.example"), true), &none, false, false, true),
            (group("Security", None, true), &none, false, false, false),
            (group("Security", None, true), &none, true, false, true),
            (group("Security", None, true), &none, false, true, true),
            (group("Plain", None, false), &none, true, false, false),
            (group("Plain", None, false), &none, false, true, true),
            (group("eng-backend", Some("be@fjord.example"), false), &prefixes, false, false, true),
            (group("ENG-Frontend", Some("fe@fjord.example"), false), &prefixes, false, false, true),
            (group("Sales", Some("s@fjord.example"), false), &prefixes, false, false, false),
            (group("VPN-users", None, true), &prefixes, true, false, true),
            (group("vpn-users", None, true), &prefixes, false, false, false),
            (group("Empty mail", Some(" "), false), &none, false, false, false),
        ];
        for (group, prefixes, security, without_email, expected) in table {
            assert_eq!(
                group_selected(&group, prefixes, security, without_email),
                expected,
                "{group} {prefixes:?} security={security} without_email={without_email}"
            );
        }
    }

    fn names() -> Names<'static> {
        Names {
            place: "auth",
            client_id: "6c1e2f3a",
            kind: "client secret",
            tenant: "contoso.onmicrosoft.com",
            login_url: "https://login.microsoftonline.com",
            reconnect: ": open the authorize link",
        }
    }

    #[test]
    fn token_refusals_name_the_remedy() {
        let cases = [
            (401, "invalid_client", 7000215, "Value", true),
            (401, "invalid_client", 7000222, "has expired", true),
            (401, "invalid_client", 700027, "Certificates & secrets → Certificates", true),
            (401, "invalid_client", 700024, "clock", true),
            (400, "unauthorized_client", 700016, "Application (client) ID", true),
            (400, "invalid_request", 90002, "Directory (tenant) ID", false),
            (400, "invalid_grant", 65001, "Grant admin consent", false),
            (400, "invalid_scope", 70011, "entra.graph_url", false),
            (400, "invalid_grant", 700082, "connect again", false),
            (401, "invalid_client", 7000218, "client_secret", true),
        ];
        for (status, error, code, expected, credential) in cases {
            let description = format!("AADSTS{code}: Something Entra said.");
            let full = format!("{description}\r\nTrace ID: t\r\nCorrelation ID: c\r\nTimestamp: x");
            let body = json!({"error": error, "error_description": full, "error_codes": [code]}).to_string();
            let (parsed_error, parsed_code, said) = aad_error(&body);
            assert_eq!(
                (parsed_error.as_str(), parsed_code, said.as_str()),
                (error, Some(code), description.as_str())
            );
            let detail = token_refusal(status, error, Some(code), &said, &names()).to_string();
            assert!(detail.contains(expected), "{code}: {detail}");
            assert!(detail.contains(&description), "Entra's words are kept: {detail}");
            assert!(!detail.contains("Trace ID"), "{detail}");
            assert_eq!(refuses_credential(error, Some(code)), credential, "{code}");
        }
        let unknown = token_refusal(500, "", None, "", &names()).to_string();
        assert!(unknown.contains("answered 500"), "{unknown}");
        let gone = token_refusal(404, "", None, "", &names()).to_string();
        assert!(gone.contains("entra.login_url"), "{gone}");
        assert_eq!(
            aad_error(r#"{"error":"invalid_client","error_description":"AADSTS7000215: x"}"#).1,
            Some(7000215)
        );
    }

    const APP: App<'static> = App { client_id: "a", tenant: "t", delegated: false };

    #[test]
    fn graph_refusals_name_the_permission_or_the_remedy() {
        let denied = |path: &str| {
            graph_refusal(
                403,
                "Authorization_RequestDenied",
                "Insufficient privileges to complete the operation.",
                path,
                &App { client_id: "app-1", tenant: "contoso", delegated: false },
                0,
            )
            .to_string()
        };
        let users = denied("/users");
        assert!(
            users.contains("User.Read.All")
                && users.contains("Grant admin consent")
                && users.contains("app-1"),
            "{users}"
        );
        assert!(denied("/groups").contains("GroupMember.Read.All (or Group.Read.All)"));
        let members = denied("/groups/g1/transitiveMembers/microsoft.graph.user");
        assert!(members.contains("permission GroupMember.Read.All;"), "{members}");
        for (status, code) in
            [(400, "syncStateNotFound"), (400, "resyncRequired"), (410, "resyncRequired"), (410, "")]
        {
            let error = graph_refusal(status, code, "The delta token is expired.", "/users/delta", &APP, 0);
            assert!(is_delta_expired(&error), "{status} {code}: {error}");
        }
        let bug = graph_refusal(
            400,
            "Request_UnsupportedQuery",
            "Invalid page size specified: '1000'.",
            "/users",
            &APP,
            0,
        );
        assert!(!is_delta_expired(&bug));
        assert!(bug.to_string().contains("scimd bug"), "{bug}");
        let property = graph_refusal(
            400,
            "Request_BadRequest",
            "Could not find a property named 'badge' on type 'microsoft.graph.user'.",
            "/users",
            &APP,
            0,
        );
        assert!(property.to_string().contains("rules.username_source"), "{property}");
        assert!(matches!(
            graph_refusal(404, "Request_ResourceNotFound", "gone", "/groups/g1/members", &APP, 0),
            Error::NotFound(_)
        ));
        assert!(graph_refusal(429, "TooManyRequests", "", "/users", &APP, 5)
            .to_string()
            .contains("after 5 retries"));
        assert!(graph_refusal(503, "serviceNotAvailable", "", "/users", &APP, 5)
            .to_string()
            .contains("unavailable"));
        assert!(graph_refusal(401, "InvalidAuthenticationToken", "", "/users", &APP, 0)
            .to_string()
            .contains("same cloud"));
        assert!(!is_delta_expired(&Error::Internal(DELTA_EXPIRED.into())));
    }

    #[test]
    fn resource_units_follow_the_cost_table() {
        assert_eq!(resource_units("/users"), 2);
        assert_eq!(resource_units("/users?$select=id,mail&$top=999"), 1);
        assert_eq!(resource_units("/users?$select=id&$expand=manager($select=id)&$top=999"), 2);
        assert_eq!(resource_units("/users?$top=1&$select=id"), 1);
        assert_eq!(resource_units("/groups/g/members?$top=999"), 3);
        assert_eq!(resource_units("/groups/g/transitiveMembers/microsoft.graph.user?$select=id&$top=999"), 4);
        assert_eq!(resource_units("/groups?$top=1&$select=id"), 1, "never below 1");
        assert_eq!(resource_units("/users/delta?$skiptoken=abc"), 1);
    }

    #[test]
    fn only_advanced_queries_ask_for_eventual_consistency() {
        for plain in [
            users_path("mail"),
            users_delta_path("mail"),
            groups_path(),
            group_users_path("g"),
            "/users?$filter=accountEnabled eq false".into(),
            "/groups?$filter=startsWith(displayName,'eng')".into(),
            "https://graph.microsoft.com/v1.0/users?$skiptoken=RFNwdAIAAQ".into(),
        ] {
            assert!(!needs_eventual(&plain), "{plain}");
        }
        for advanced in [
            "/users?$count=true",
            "/users?$search=\"displayName:lena\"",
            "/users?$filter=mail ne null&$count=true",
            "/users?$filter=endsWith(mail,'@fjord.example')",
            "/users?$filter=not(accountEnabled eq true)",
            "/users?$filter=accountEnabled eq true&$orderby=displayName",
        ] {
            assert!(needs_eventual(advanced), "{advanced}");
        }
    }

    #[test]
    fn the_budget_queues_requests_into_later_windows() {
        let t0 = Instant::now();
        let window = Duration::from_secs(10);
        let mut budget = Budget::new(5, window);
        assert_eq!(budget.reserve(2, t0), Duration::ZERO);
        assert_eq!(budget.reserve(3, t0 + Duration::from_secs(1)), Duration::ZERO);
        assert_eq!(
            budget.reserve(1, t0 + Duration::from_secs(2)),
            Duration::from_secs(8),
            "full: next window"
        );
        assert_eq!(
            budget.reserve(4, t0 + Duration::from_secs(2)),
            Duration::from_secs(8),
            "fits the next window"
        );
        assert_eq!(budget.reserve(1, t0 + Duration::from_secs(3)), Duration::from_secs(17), "the one after");
        assert_eq!(budget.reserve(5, t0 + Duration::from_secs(60)), Duration::ZERO, "idle: a fresh window");
        assert_eq!(Budget::new(1, window).reserve(9, t0), Duration::ZERO, "a costly request still goes");
    }

    #[test]
    fn waits_follow_retry_after_and_pressure() {
        let mut headers = HeaderMap::new();
        headers.insert(RETRY_AFTER, HeaderValue::from_static("7"));
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(7)));
        let wait = retry_wait(&headers, 1, Duration::from_secs(300));
        assert!(wait >= Duration::from_secs(7) && wait < Duration::from_millis(7250), "{wait:?}");
        let capped = retry_wait(&headers, 1, Duration::from_secs(2));
        assert!(capped < Duration::from_millis(2250), "{capped:?}");
        let date = (chrono::Utc::now() + chrono::Duration::seconds(30)).to_rfc2822();
        headers.insert(RETRY_AFTER, HeaderValue::from_str(&date).unwrap());
        let from_date = retry_after(&headers).unwrap();
        assert!(
            from_date >= Duration::from_secs(28) && from_date <= Duration::from_secs(30),
            "{from_date:?}"
        );
        assert!(retry_wait(&HeaderMap::new(), 1, Duration::from_secs(300)) < Duration::from_secs(1));
        assert_eq!(pressure_pause(0.5), Duration::ZERO);
        assert_eq!(pressure_pause(0.8), Duration::ZERO);
        assert_eq!(pressure_pause(1.0), Duration::from_secs_f64(1.0));
        assert_eq!(pressure_pause(1.8), Duration::from_secs(5));
        assert_eq!(pressure_pause(f64::NAN), Duration::ZERO);
    }

    #[test]
    fn the_assertion_names_the_app_and_the_token_url_with_the_certificate_thumbprint() {
        let url = "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token";
        assert_eq!(
            assertion_claims("6c1e", url, 1_772_000_000, "j-1"),
            json!({"aud": url, "iss": "6c1e", "sub": "6c1e", "jti": "j-1", "nbf": 1_772_000_000,
                   "iat": 1_772_000_000, "exp": 1_772_000_300})
        );
        // openssl x509 -outform der | openssl dgst -sha256 -binary | base64url
        let certificate = include_str!("../../tests/fixtures/graph/app-certificate.pem");
        assert_eq!(x5t_s256(certificate).as_deref(), Some("p4fMVXEQ7D2VWw0rKZ1V6pDMQkNLoVZWS6xS0-eQuxw"));
        assert_eq!(x5t_s256("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----"), None);
    }

    fn source(auth: Value, backup: Option<Value>) -> EntraSource {
        serde_json::from_value(
            json!({"tenant": "contoso.onmicrosoft.com", "auth": auth, "backup_auth": backup}),
        )
        .unwrap()
    }

    #[test]
    fn the_budget_is_half_the_limit_of_the_tenant_size_unless_configured() {
        assert_eq!(
            [0, 49, 50, 500, 501, 100_000].map(half_of_tenant_limit),
            [1_750, 1_750, 2_500, 2_500, 4_000, 4_000]
        );
        let open = |resource_units: Option<u32>| {
            GraphClient::new(
                &source(json!({"method": "client_secret", "client_id": "a"}), None),
                GraphCredentials { primary: "s3cr3t".into(), backup: None },
                Limits { resource_units, ..Limits::default() },
            )
            .unwrap()
        };
        let budget = |client: &GraphClient| lock(&client.pacing).budget.limit;
        let sized = open(None);
        assert_eq!(budget(&sized), 1_750, "an unknown tenant is taken for the smallest");
        sized.know_tenant_size(100_000);
        assert_eq!(budget(&sized), 4_000);
        sized.know_tenant_size(100);
        assert_eq!(budget(&sized), 4_000, "a smaller count learnt later lowers nothing");
        let configured = open(Some(300));
        configured.know_tenant_size(100_000);
        assert_eq!(budget(&configured), 300, "a configured budget stays");
    }

    #[test]
    fn unusable_credentials_are_refused_before_any_request() {
        let secret = json!({"method": "client_secret", "client_id": "a"});
        let certificate = json!({"method": "certificate", "client_id": "a",
            "certificate_pem": include_str!("../../tests/fixtures/graph/app-certificate.pem")});
        let key = include_str!("../../tests/fixtures/graph/app-private-key.pem");
        let open = |auth: &Value, backup: Option<Value>, primary: &str, second: Option<&str>| {
            GraphClient::new(
                &source(auth.clone(), backup),
                GraphCredentials { primary: primary.into(), backup: second.map(str::to_string) },
                Limits::default(),
            )
            .map(|_| ())
            .map_err(|e| e.to_string())
        };
        assert_eq!(open(&secret, None, "s3cr3t", None), Ok(()));
        assert_eq!(open(&certificate, Some(secret.clone()), key, Some("s")), Ok(()));
        assert!(open(&secret, None, " ", None).unwrap_err().contains("no client secret"));
        assert!(open(&certificate, None, "not a key", None).unwrap_err().contains("cannot sign"));
        let delegated = json!({"method": "delegated", "client_id": "a"});
        assert_eq!(open(&delegated, None, "s", None), Ok(()), "its refresh token comes later");
        assert!(open(&delegated, None, " ", None).unwrap_err().contains("no client secret"));
        assert_eq!(open(&secret, Some(delegated), "s", Some("s")), Ok(()));
        assert!(open(&secret, Some(secret.clone()), "s", None).unwrap_err().contains("backup_auth"));
        let debug = format!("{:?}", GraphCredentials { primary: "s3cr3t".into(), backup: None });
        assert!(!debug.contains("s3cr3t"), "{debug}");
    }

    #[test]
    fn the_authorize_link_asks_for_a_code_with_pkce_and_offline_access() {
        let mut entra = source(json!({"method": "delegated", "client_id": "6c1e"}), None);
        let link =
            authorize_url(&entra, "6c1e", "https://scimd.example/admin/v1/entra/callback", "st-1", "ch_-1");
        assert_eq!(
            link,
            "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/authorize?client_id=6c1e\
             &response_type=code&redirect_uri=https%3A%2F%2Fscimd.example%2Fadmin%2Fv1%2Fentra%2Fcallback\
             &response_mode=query&scope=offline_access%20User.Read.All%20GroupMember.Read.All&state=st-1\
             &code_challenge=ch_-1&code_challenge_method=S256"
        );
        entra.login_url = "https://login.microsoftonline.us/".into();
        entra.graph_url = "https://graph.microsoft.us".into();
        let national = url::Url::parse(&authorize_url(&entra, "6c1e", "https://s/cb", "s", "c")).unwrap();
        assert_eq!(national.path(), "/contoso.onmicrosoft.com/oauth2/v2.0/authorize");
        let scope = national.query_pairs().find(|(n, _)| n == "scope").map(|(_, v)| v.into_owned());
        assert_eq!(
            scope.as_deref(),
            Some("offline_access https://graph.microsoft.us/User.Read.All https://graph.microsoft.us/GroupMember.Read.All"),
            "outside the public cloud the permissions name their Graph host"
        );
    }

    #[test]
    fn the_pkce_challenge_is_rfc_7636s_s256() {
        // RFC 7636 appendix B.
        assert_eq!(
            pkce_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }

    #[test]
    fn a_refused_refresh_token_needs_consent_and_its_remedy_says_how() {
        for (error, code) in [
            ("invalid_grant", Some(50173)),
            ("invalid_grant", Some(70043)),
            ("invalid_grant", Some(700082)),
            ("invalid_grant", Some(65001)),
            ("interaction_required", Some(50079)),
            ("invalid_grant", Some(9002313)),
        ] {
            assert!(consent_lost(error, code), "{error} {code:?}");
        }
        assert!(!consent_lost("invalid_client", Some(7000215)), "a wrong secret is not a lost consent");
        assert!(!consent_lost("temporarily_unavailable", None));
        let delegated = Names { kind: DELEGATED, ..names() };
        let revoked = token_refusal(400, "invalid_grant", Some(50173), "AADSTS50173: revoked.", &delegated);
        let revoked = revoked.to_string();
        assert!(revoked.contains("connect again: open the authorize link"), "{revoked}");
        assert!(revoked.contains("entra.auth") && revoked.contains("AADSTS50173"), "{revoked}");
        let withdrawn =
            token_refusal(400, "invalid_grant", Some(65001), "AADSTS65001: no.", &delegated).to_string();
        assert!(
            withdrawn.contains("Delegated permissions") && withdrawn.contains("Grant admin consent"),
            "{withdrawn}"
        );
        assert!(withdrawn.contains("connect again"), "{withdrawn}");
        let unknown = token_refusal(400, "invalid_grant", Some(9002313), "AADSTS9002313: x", &delegated);
        assert!(unknown.to_string().contains("connect again"), "{unknown}");
        let denied = graph_refusal(
            403,
            "Authorization_RequestDenied",
            "Insufficient privileges to complete the operation.",
            "/groups",
            &App { client_id: "app-1", tenant: "contoso", delegated: true },
            0,
        )
        .to_string();
        assert!(denied.contains("Delegated permissions") && denied.contains("connect again"), "{denied}");
    }

    #[test]
    fn links_outside_graph_are_refused() {
        let client = GraphClient::new(
            &source(json!({"method": "client_secret", "client_id": "a"}), None),
            GraphCredentials { primary: "s".into(), backup: None },
            Limits::default(),
        )
        .unwrap();
        assert_eq!(client.resolve("/users?$top=1").unwrap(), "https://graph.microsoft.com/v1.0/users?$top=1");
        let next = "https://graph.microsoft.com/v1.0/users?$skiptoken=x";
        assert_eq!(client.resolve(next).unwrap(), next);
        for foreign in [
            "https://graph.microsoft.com.evil.example/v1.0/users",
            "https://evil.example/v1.0/users",
            "users",
        ] {
            assert!(client.resolve(foreign).is_err(), "{foreign}");
        }
        assert_eq!(
            client.token_url,
            "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token"
        );
        assert_eq!(client.scope, "https://graph.microsoft.com/.default");
    }
}
