//! A fake Microsoft Entra tenant for the Entra importer's tests and benchmarks: the Microsoft
//! identity platform v2.0 token and authorize endpoints (client secret, certificate assertion,
//! authorization code + refresh token) and the Microsoft Graph v1.0 reads the importer makes
//! (users, groups, members, transitive members, managers, both delta queries), with `$select`,
//! `$top`, opaque `$skiptoken` paging, advanced-query rules, resource-unit throttling and the
//! AADSTS and Graph error bodies of ../shared/reference/graph-api.md. Tests change the tenant
//! between runs, inject failures and read back every request the fake received.
//!
//! One fake is one tenant; it serves both the login host and the Graph host, so a connection
//! points `login_url` and `graph_url` at the same `base_url()`.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::net::TcpListener;
use std::ops::Bound;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use actix_web::http::StatusCode;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC};
use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

// ---------------------------------------------------------------------------------------------
// Permissions and credentials
// ---------------------------------------------------------------------------------------------

/// `/users`, `/users/delta`, `/users/{id}/manager`.
pub const USER_READ_ALL: &str = "User.Read.All";
/// Least privilege for `/groups`, `/groups/delta`, `members`, `transitiveMembers`.
pub const GROUP_MEMBER_READ_ALL: &str = "GroupMember.Read.All";
/// What `GroupMember.Read.All` gives, plus group content.
pub const GROUP_READ_ALL: &str = "Group.Read.All";
/// A superset of the above.
pub const DIRECTORY_READ_ALL: &str = "Directory.Read.All";
/// What the importer needs.
pub const IMPORTER_PERMISSIONS: [&str; 2] = [USER_READ_ALL, GROUP_MEMBER_READ_ALL];
/// The `scope` of a client-credentials request for Graph.
pub const GRAPH_DEFAULT_SCOPE: &str = "https://graph.microsoft.com/.default";
/// Microsoft Graph's well-known application id, also accepted as the scope's resource.
const GRAPH_APP_ID: &str = "00000003-0000-0000-c000-000000000000";
pub const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

const USER_READERS: &[&str] =
    &[USER_READ_ALL, "User.ReadWrite.All", DIRECTORY_READ_ALL, "Directory.ReadWrite.All"];
const GROUP_READERS: &[&str] = &[
    GROUP_MEMBER_READ_ALL,
    GROUP_READ_ALL,
    "GroupMember.ReadWrite.All",
    "Group.ReadWrite.All",
    DIRECTORY_READ_ALL,
    "Directory.ReadWrite.All",
];
const DEVICE_READERS: &[&str] = &["Device.Read.All", DIRECTORY_READ_ALL, "Directory.ReadWrite.All"];

/// A client secret as the portal shows it: the id (which people paste by mistake) and the value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientSecret {
    pub id: String,
    pub value: String,
    /// Entra refuses an expired secret with AADSTS7000222.
    pub expired: bool,
}

impl ClientSecret {
    /// A fresh secret in Entra's shape: three characters, `8Q~`, then 34 more.
    pub fn generate() -> ClientSecret {
        let mut rng = rand::rng();
        let value = format!(
            "{}8Q~{}",
            random_from(&mut rng, SECRET_ALPHABET, 3),
            random_from(&mut rng, SECRET_ALPHABET, 34)
        );
        ClientSecret { id: uuid::Uuid::new_v4().to_string(), value, expired: false }
    }
}

/// A checked-in self-signed certificate and its key (tests/fixtures/graph, made with openssl,
/// valid for 100 years). Test-only credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TestCertificate {
    pub certificate_pem: &'static str,
    pub private_key_pem: &'static str,
}

/// The certificate tests register on their app.
pub const APP_CERTIFICATE: TestCertificate = TestCertificate {
    certificate_pem: include_str!("../fixtures/graph/app-certificate.pem"),
    private_key_pem: include_str!("../fixtures/graph/app-private-key.pem"),
};

/// A certificate no app registers, for the negative cases.
pub const OTHER_CERTIFICATE: TestCertificate = TestCertificate {
    certificate_pem: include_str!("../fixtures/graph/other-certificate.pem"),
    private_key_pem: include_str!("../fixtures/graph/other-private-key.pem"),
};

impl TestCertificate {
    /// `x5t#S256`: base64url SHA-256 of the DER certificate.
    pub fn x5t_s256(&self) -> String {
        certificate_thumbprints(self.certificate_pem).map(|t| t.sha256).unwrap_or_default()
    }

    /// Legacy `x5t`: base64url SHA-1 of the DER certificate.
    pub fn x5t(&self) -> String {
        certificate_thumbprints(self.certificate_pem).map(|t| t.sha1).unwrap_or_default()
    }
}

struct Thumbprints {
    sha256: String,
    sha1: String,
    /// Upper-case hex SHA-1, as Entra prints thumbprints in its errors.
    sha1_hex: String,
}

fn certificate_thumbprints(pem: &str) -> Option<Thumbprints> {
    let body: String = pem
        .lines()
        .skip_while(|l| !l.starts_with("-----BEGIN CERTIFICATE-----"))
        .skip(1)
        .take_while(|l| !l.starts_with("-----END"))
        .collect();
    let der = STANDARD.decode(body.trim()).ok()?;
    let sha1 = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY, &der);
    Some(Thumbprints {
        sha256: URL_SAFE_NO_PAD.encode(Sha256::digest(&der)),
        sha1: URL_SAFE_NO_PAD.encode(sha1.as_ref()),
        sha1_hex: hex::encode_upper(sha1.as_ref()),
    })
}

/// An app registration with its service principal in the tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppRegistration {
    pub client_id: String,
    pub secrets: Vec<ClientSecret>,
    /// Registered certificates, PEM ("BEGIN CERTIFICATE").
    pub certificates: Vec<String>,
    /// Admin-consented application permissions: the `roles` of client-credentials tokens. A
    /// token keeps the roles it was minted with, as a real JWT does.
    pub roles: Vec<String>,
    /// Admin-consented delegated permissions, for the authorization-code flow.
    pub delegated_scopes: Vec<String>,
    pub redirect_uris: Vec<String>,
}

impl AppRegistration {
    /// An app with a fresh client id, one valid secret and these application permissions.
    pub fn new(roles: &[&str]) -> AppRegistration {
        AppRegistration {
            client_id: uuid::Uuid::new_v4().to_string(),
            secrets: vec![ClientSecret::generate()],
            certificates: Vec::new(),
            roles: roles.iter().map(|r| r.to_string()).collect(),
            delegated_scopes: Vec::new(),
            redirect_uris: Vec::new(),
        }
    }

    /// The value of the first secret that has not expired.
    pub fn secret(&self) -> String {
        self.secrets.iter().find(|s| !s.expired).map(|s| s.value.clone()).unwrap_or_default()
    }

    /// The connection's `auth` block for this app's secret (sync-rules.md, Entra connections).
    pub fn secret_auth(&self) -> Value {
        json!({ "method": "client_secret", "client_id": self.client_id, "client_secret": self.secret() })
    }

    /// The `auth` block for a certificate assertion signed with `certificate`'s key.
    pub fn certificate_auth(&self, certificate: TestCertificate) -> Value {
        json!({
            "method": "certificate",
            "client_id": self.client_id,
            "private_key_pem": certificate.private_key_pem,
            "certificate_pem": certificate.certificate_pem
        })
    }

    /// The `auth` block for delegated sign-in.
    pub fn delegated_auth(&self) -> Value {
        json!({ "method": "delegated", "client_id": self.client_id, "client_secret": self.secret() })
    }

    pub fn with_certificate(mut self, certificate: TestCertificate) -> AppRegistration {
        self.certificates.push(certificate.certificate_pem.to_string());
        self
    }

    /// Delegated sign-in: these admin-consented delegated permissions, this redirect URI.
    pub fn with_delegated(mut self, scopes: &[&str], redirect_uri: &str) -> AppRegistration {
        self.delegated_scopes = scopes.iter().map(|s| s.to_string()).collect();
        self.redirect_uris.push(redirect_uri.to_string());
        self
    }
}

// ---------------------------------------------------------------------------------------------
// The tenant
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EmployeeOrgData {
    pub division: Option<String>,
    pub cost_center: Option<String>,
}

/// An Entra user as the tenant stores it; the wire shape (§3) is derived from it.
#[derive(Debug, Clone, PartialEq)]
pub struct GraphUser {
    pub id: String,
    pub user_principal_name: String,
    pub mail: Option<String>,
    pub mail_nickname: Option<String>,
    pub display_name: Option<String>,
    pub given_name: Option<String>,
    pub surname: Option<String>,
    pub job_title: Option<String>,
    pub department: Option<String>,
    pub employee_id: Option<String>,
    pub employee_type: Option<String>,
    pub company_name: Option<String>,
    pub office_location: Option<String>,
    pub business_phones: Vec<String>,
    pub mobile_phone: Option<String>,
    pub street_address: Option<String>,
    pub city: Option<String>,
    pub state: Option<String>,
    pub postal_code: Option<String>,
    /// Free text, not ISO.
    pub country: Option<String>,
    pub preferred_language: Option<String>,
    pub account_enabled: bool,
    /// "Member" or "Guest".
    pub user_type: String,
    pub on_premises_sam_account_name: Option<String>,
    pub on_premises_immutable_id: Option<String>,
    pub employee_org_data: Option<EmployeeOrgData>,
    pub created_date_time: String,
    pub manager_id: Option<String>,
    /// Directory extension values by full name, `extension_{appId}_{name}`.
    pub extensions: BTreeMap<String, Value>,
}

impl GraphUser {
    /// An enabled member with a fresh id; names from the UPN's local part, `mail` = UPN.
    pub fn new(user_principal_name: &str) -> GraphUser {
        let local = user_principal_name.split('@').next().unwrap_or(user_principal_name);
        let mut parts = local.split(['.', '_', '-']).filter(|p| !p.is_empty());
        let given = parts.next().map(capitalize).unwrap_or_else(|| "Test".to_string());
        let surname = parts.next().map(capitalize).unwrap_or_else(|| "User".to_string());
        GraphUser {
            id: uuid::Uuid::new_v4().to_string(),
            user_principal_name: user_principal_name.into(),
            mail: Some(user_principal_name.into()),
            mail_nickname: Some(local.into()),
            display_name: Some(format!("{given} {surname}")),
            given_name: Some(given),
            surname: Some(surname),
            job_title: None,
            department: None,
            employee_id: None,
            employee_type: None,
            company_name: None,
            office_location: None,
            business_phones: Vec::new(),
            mobile_phone: None,
            street_address: None,
            city: None,
            state: None,
            postal_code: None,
            country: None,
            preferred_language: None,
            account_enabled: true,
            user_type: "Member".into(),
            on_premises_sam_account_name: None,
            on_premises_immutable_id: None,
            employee_org_data: None,
            created_date_time: iso_seconds(now_secs()),
            manager_id: None,
            extensions: BTreeMap::new(),
        }
    }

    /// A B2B guest: `#EXT#` UPN in the tenant's initial domain, mail at home.
    pub fn guest(home_mail: &str, initial_domain: &str) -> GraphUser {
        let mut user = GraphUser::new(home_mail);
        let external = format!("{}#EXT#", home_mail.replace('@', "_"));
        user.user_principal_name = format!("{external}@{initial_domain}");
        user.mail_nickname = Some(external);
        user.user_type = "Guest".into();
        user
    }
}

/// An Entra group; the kind is its `groupTypes`, `mailEnabled` and `securityEnabled` (§4).
#[derive(Debug, Clone, PartialEq)]
pub struct GraphGroup {
    pub id: String,
    pub display_name: String,
    pub description: Option<String>,
    pub mail: Option<String>,
    pub mail_enabled: bool,
    pub mail_nickname: String,
    pub security_enabled: bool,
    pub group_types: Vec<String>,
    pub membership_rule: Option<String>,
    pub on_premises_sync_enabled: Option<bool>,
    pub visibility: Option<String>,
    pub created_date_time: String,
}

impl GraphGroup {
    fn base(display_name: &str) -> GraphGroup {
        let nickname: String = display_name
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() || c == '-' { c.to_ascii_lowercase() } else { '-' })
            .collect();
        GraphGroup {
            id: uuid::Uuid::new_v4().to_string(),
            display_name: display_name.into(),
            description: None,
            mail: None,
            mail_enabled: false,
            mail_nickname: nickname,
            security_enabled: true,
            group_types: Vec::new(),
            membership_rule: None,
            on_premises_sync_enabled: None,
            visibility: None,
            created_date_time: iso_seconds(now_secs()),
        }
    }

    /// A security group: no mail.
    pub fn security(display_name: &str) -> GraphGroup {
        GraphGroup::base(display_name)
    }

    pub fn mail_enabled_security(display_name: &str, mail: &str) -> GraphGroup {
        GraphGroup { mail: Some(mail.into()), mail_enabled: true, ..GraphGroup::base(display_name) }
    }

    pub fn distribution(display_name: &str, mail: &str) -> GraphGroup {
        GraphGroup {
            mail: Some(mail.into()),
            mail_enabled: true,
            security_enabled: false,
            ..GraphGroup::base(display_name)
        }
    }

    /// A Microsoft 365 group: `groupTypes` ["Unified"], mail-enabled.
    pub fn microsoft_365(display_name: &str, mail: &str) -> GraphGroup {
        GraphGroup {
            group_types: vec!["Unified".into()],
            visibility: Some("Private".into()),
            ..GraphGroup::distribution(display_name, mail)
        }
    }
}

/// A device; devices are group members too (§4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GraphDevice {
    pub id: String,
    pub display_name: String,
    pub operating_system: String,
}

impl GraphDevice {
    pub fn new(display_name: &str) -> GraphDevice {
        GraphDevice {
            id: uuid::Uuid::new_v4().to_string(),
            display_name: display_name.into(),
            operating_system: "Windows".into(),
        }
    }
}

/// A soft-deleted user: restorable, with the groups it was in.
#[derive(Debug, Clone, PartialEq)]
pub struct DeletedUser {
    pub user: GraphUser,
    pub groups: Vec<String>,
}

/// Page sizes and delta behaviour Graph chooses itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paging {
    /// Objects per delta page.
    pub delta_page_size: usize,
    /// `members@delta` entries per groups-delta page; a bigger group continues on the next
    /// page, the group object repeated.
    pub delta_members_per_page: usize,
    /// The initial round also reports removed objects (`@removed`), as Graph may.
    pub removed_in_initial_round: bool,
    /// Every delta round starts with an empty page that still has a nextLink.
    pub empty_first_delta_page: bool,
    /// Each delta page repeats the previous page's last object (Graph's replays).
    pub replay_last_delta_object: bool,
}

impl Default for Paging {
    fn default() -> Self {
        Paging {
            delta_page_size: 200,
            delta_members_per_page: 500,
            removed_in_initial_round: false,
            empty_first_delta_page: false,
            replay_last_delta_object: false,
        }
    }
}

/// Resource-unit budget per app (§6).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Throttle {
    /// RU per window; None = by tenant size (3,500 / 5,000 / 8,000 for <50 / 50–500 / >500 users).
    pub resource_units: Option<u32>,
    pub window: Duration,
    /// `Retry-After` of a throttled answer; None = the seconds left in the window (at least 1).
    pub retry_after_secs: Option<u64>,
}

impl Default for Throttle {
    fn default() -> Self {
        Throttle { resource_units: None, window: Duration::from_secs(10), retry_after_secs: None }
    }
}

/// Everything the fake serves; change it between runs with `FakeGraph::change`, through the
/// methods below, so that delta queries see the changes.
#[derive(Debug, Clone, PartialEq)]
pub struct Tenant {
    pub tenant_id: String,
    pub display_name: String,
    /// Verified domains; the first is the initial `*.onmicrosoft.com` one.
    pub domains: Vec<String>,
    pub users: BTreeMap<String, GraphUser>,
    pub groups: BTreeMap<String, GraphGroup>,
    pub devices: BTreeMap<String, GraphDevice>,
    /// group id -> direct member ids (users, groups, devices).
    pub members: BTreeMap<String, BTreeSet<String>>,
    pub deleted_users: BTreeMap<String, DeletedUser>,
    /// Registered directory extension properties, full names.
    pub extension_properties: BTreeSet<String>,
    pub paging: Paging,
    pub throttle: Throttle,
    changes: ChangeLog,
}

/// What delta queries need to know about changes: a sequence number per change.
#[derive(Debug, Clone, PartialEq, Default)]
struct ChangeLog {
    seq: u64,
    /// Latest change per user id (live, soft-deleted or purged).
    users: BTreeMap<String, u64>,
    groups: BTreeMap<String, u64>,
    created: HashMap<String, u64>,
    /// object id -> property -> latest change.
    properties: HashMap<String, HashMap<String, u64>>,
    /// The manager a user had before its manager was cleared, for `manager@delta`.
    previous_manager: HashMap<String, String>,
    purged_users: BTreeSet<String>,
    purged_groups: BTreeSet<String>,
    /// group id -> member id -> its latest membership change.
    member_changes: HashMap<String, BTreeMap<String, MemberChange>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct MemberChange {
    seq: u64,
    present: bool,
    kind: ObjectKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectKind {
    User,
    Group,
    Device,
}

impl ObjectKind {
    pub fn odata_type(self) -> &'static str {
        match self {
            ObjectKind::User => "#microsoft.graph.user",
            ObjectKind::Group => "#microsoft.graph.group",
            ObjectKind::Device => "#microsoft.graph.device",
        }
    }
}

impl Tenant {
    pub fn empty() -> Tenant {
        Tenant {
            tenant_id: uuid::Uuid::new_v4().to_string(),
            display_name: "Fjord GmbH".into(),
            domains: vec!["fjord.onmicrosoft.com".into(), "fjord.example".into()],
            users: BTreeMap::new(),
            groups: BTreeMap::new(),
            devices: BTreeMap::new(),
            members: BTreeMap::new(),
            deleted_users: BTreeMap::new(),
            extension_properties: BTreeSet::new(),
            paging: Paging::default(),
            throttle: Throttle::default(),
            changes: ChangeLog::default(),
        }
    }

    pub fn initial_domain(&self) -> &str {
        self.domains.first().map_or("fjord.onmicrosoft.com", String::as_str)
    }

    fn next_seq(&mut self) -> u64 {
        self.changes.seq += 1;
        self.changes.seq
    }

    /// The id's kind among live objects.
    pub fn kind_of(&self, id: &str) -> Option<ObjectKind> {
        if self.users.contains_key(id) {
            Some(ObjectKind::User)
        } else if self.groups.contains_key(id) {
            Some(ObjectKind::Group)
        } else if self.devices.contains_key(id) {
            Some(ObjectKind::Device)
        } else {
            None
        }
    }

    /// Registers a directory extension property of the app `app_id` and returns its full name.
    pub fn add_extension_property(&mut self, app_id: &str, name: &str) -> String {
        let full = format!("extension_{}_{name}", app_id.replace('-', ""));
        self.extension_properties.insert(full.clone());
        full
    }

    /// Adds a user (or replaces one with the same id, as a change).
    pub fn add_user(&mut self, user: GraphUser) {
        if self.users.contains_key(&user.id) {
            let id = user.id.clone();
            self.update_user(&id, |u| *u = user);
            return;
        }
        let seq = self.next_seq();
        self.changes.users.insert(user.id.clone(), seq);
        self.changes.created.insert(user.id.clone(), seq);
        self.changes.purged_users.remove(&user.id);
        self.users.insert(user.id.clone(), user);
    }

    /// Changes a live user; delta reports the properties that differ afterwards.
    pub fn update_user(&mut self, id: &str, f: impl FnOnce(&mut GraphUser)) {
        let user = self.users.get_mut(id).unwrap_or_else(|| panic!("no user {id} in the tenant"));
        let before = user.clone();
        f(user);
        user.id = before.id.clone();
        let after = user.clone();
        let changed: Vec<String> = USER_PROPERTIES
            .iter()
            .filter(|p| user_value(&before, p.name) != user_value(&after, p.name))
            .map(|p| p.name.to_string())
            .chain(
                before
                    .extensions
                    .keys()
                    .chain(after.extensions.keys())
                    .filter(|k| before.extensions.get(*k) != after.extensions.get(*k))
                    .cloned(),
            )
            .chain((before.manager_id != after.manager_id).then(|| "manager".to_string()))
            .collect();
        if changed.is_empty() {
            return;
        }
        if let (Some(previous), None) = (&before.manager_id, &after.manager_id) {
            self.changes.previous_manager.insert(id.to_string(), previous.clone());
        }
        let seq = self.next_seq();
        self.changes.users.insert(id.to_string(), seq);
        let properties = self.changes.properties.entry(id.to_string()).or_default();
        for name in changed {
            properties.insert(name, seq);
        }
    }

    pub fn disable_user(&mut self, id: &str) {
        self.update_user(id, |u| u.account_enabled = false);
    }

    pub fn enable_user(&mut self, id: &str) {
        self.update_user(id, |u| u.account_enabled = true);
    }

    pub fn set_manager(&mut self, id: &str, manager_id: Option<&str>) {
        self.update_user(id, |u| u.manager_id = manager_id.map(str::to_string));
    }

    /// Soft delete: the user leaves `/users` and its groups for deletedItems (restorable);
    /// delta reports `@removed: {reason: changed}`.
    pub fn soft_delete_user(&mut self, id: &str) {
        let user = self.users.remove(id).unwrap_or_else(|| panic!("no user {id} in the tenant"));
        let groups = self.leave_all_groups(id, ObjectKind::User);
        let seq = self.next_seq();
        self.changes.users.insert(id.to_string(), seq);
        self.deleted_users.insert(id.to_string(), DeletedUser { user, groups });
    }

    /// Restores a soft-deleted user with its group memberships.
    pub fn restore_user(&mut self, id: &str) {
        let deleted = self.deleted_users.remove(id).unwrap_or_else(|| panic!("no deleted user {id}"));
        let seq = self.next_seq();
        self.changes.users.insert(id.to_string(), seq);
        // The client may have dropped it: delta reports a restored user whole.
        self.changes.created.insert(id.to_string(), seq);
        self.users.insert(id.to_string(), deleted.user);
        for group in deleted.groups {
            if self.groups.contains_key(&group) {
                self.add_member(&group, id);
            }
        }
    }

    /// Permanent delete, of a live or a soft-deleted user; delta reports
    /// `@removed: {reason: deleted}`.
    pub fn hard_delete_user(&mut self, id: &str) {
        if self.users.remove(id).is_some() {
            self.leave_all_groups(id, ObjectKind::User);
        } else {
            self.deleted_users.remove(id).unwrap_or_else(|| panic!("no user {id} in the tenant"));
        }
        let seq = self.next_seq();
        self.changes.users.insert(id.to_string(), seq);
        self.changes.purged_users.insert(id.to_string());
    }

    /// Adds a group (or replaces one with the same id, as a change).
    pub fn add_group(&mut self, group: GraphGroup) {
        if self.groups.contains_key(&group.id) {
            let id = group.id.clone();
            self.update_group(&id, |g| *g = group);
            return;
        }
        let seq = self.next_seq();
        self.changes.groups.insert(group.id.clone(), seq);
        self.changes.created.insert(group.id.clone(), seq);
        self.changes.purged_groups.remove(&group.id);
        self.groups.insert(group.id.clone(), group);
    }

    pub fn update_group(&mut self, id: &str, f: impl FnOnce(&mut GraphGroup)) {
        let group = self.groups.get_mut(id).unwrap_or_else(|| panic!("no group {id} in the tenant"));
        let before = group.clone();
        f(group);
        group.id = before.id.clone();
        let after = group.clone();
        let changed: Vec<&str> = GROUP_PROPERTIES
            .iter()
            .filter(|p| group_value(&before, p.name) != group_value(&after, p.name))
            .map(|p| p.name)
            .collect();
        if changed.is_empty() {
            return;
        }
        let seq = self.next_seq();
        self.changes.groups.insert(id.to_string(), seq);
        let properties = self.changes.properties.entry(id.to_string()).or_default();
        for name in changed {
            properties.insert(name.to_string(), seq);
        }
    }

    pub fn rename_group(&mut self, id: &str, display_name: &str) {
        self.update_group(id, |g| g.display_name = display_name.into());
    }

    /// Permanent delete; it also leaves the groups it was nested in.
    pub fn delete_group(&mut self, id: &str) {
        self.groups.remove(id).unwrap_or_else(|| panic!("no group {id} in the tenant"));
        self.members.remove(id);
        self.leave_all_groups(id, ObjectKind::Group);
        let seq = self.next_seq();
        self.changes.groups.insert(id.to_string(), seq);
        self.changes.purged_groups.insert(id.to_string());
        self.changes.member_changes.remove(id);
    }

    pub fn add_device(&mut self, device: GraphDevice) {
        self.devices.insert(device.id.clone(), device);
    }

    /// Adds a direct member (user, group or device) to a group.
    pub fn add_member(&mut self, group_id: &str, member_id: &str) {
        assert!(self.groups.contains_key(group_id), "no group {group_id} in the tenant");
        let kind = self.kind_of(member_id).unwrap_or_else(|| panic!("no object {member_id} in the tenant"));
        if self.members.entry(group_id.to_string()).or_default().insert(member_id.to_string()) {
            self.record_membership(group_id, member_id, kind, true);
        }
    }

    pub fn remove_member(&mut self, group_id: &str, member_id: &str) {
        let kind = self.kind_of(member_id).unwrap_or(ObjectKind::User);
        if self.members.get_mut(group_id).is_some_and(|m| m.remove(member_id)) {
            self.record_membership(group_id, member_id, kind, false);
        }
    }

    fn record_membership(&mut self, group_id: &str, member_id: &str, kind: ObjectKind, present: bool) {
        let seq = self.next_seq();
        self.changes.groups.insert(group_id.to_string(), seq);
        self.changes
            .member_changes
            .entry(group_id.to_string())
            .or_default()
            .insert(member_id.to_string(), MemberChange { seq, present, kind });
    }

    /// Removes `member_id` from every group; returns the groups it was in.
    fn leave_all_groups(&mut self, member_id: &str, kind: ObjectKind) -> Vec<String> {
        let groups: Vec<String> =
            self.members.iter().filter(|(_, m)| m.contains(member_id)).map(|(g, _)| g.clone()).collect();
        for group in &groups {
            if let Some(members) = self.members.get_mut(group) {
                members.remove(member_id);
            }
            self.record_membership(group, member_id, kind, false);
        }
        groups
    }

    /// Users reachable from a group through nested groups (the group's transitive members that
    /// are users), in id order.
    pub fn transitive_user_ids(&self, group_id: &str) -> BTreeSet<String> {
        self.transitive_members(group_id).into_iter().filter(|id| self.users.contains_key(id)).collect()
    }

    /// Every object reachable from a group through nested groups, nested groups included.
    pub fn transitive_members(&self, group_id: &str) -> BTreeSet<String> {
        let mut seen = BTreeSet::new();
        let mut queue = vec![group_id.to_string()];
        let mut visited_groups = HashSet::new();
        while let Some(group) = queue.pop() {
            if !visited_groups.insert(group.clone()) {
                continue;
            }
            for member in self.members.get(&group).into_iter().flatten() {
                if seen.insert(member.clone()) && self.groups.contains_key(member) {
                    queue.push(member.clone());
                }
            }
        }
        seen.remove(group_id);
        seen
    }

    /// A deterministic tenant of `users` users and `groups` groups, shaped like a workforce
    /// tenant: three domains and a subdomain, guests, disabled accounts, employee data,
    /// phones, addresses, directory extensions, a manager tree; security, mail-enabled
    /// security, distribution, Microsoft 365 and dynamic groups, some nested, some with
    /// devices. tests/sync/fake_graph.rs checks what holds.
    pub fn generate(users: usize, groups: usize, seed: u64) -> Tenant {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
        let mut tenant = Tenant::empty();
        tenant.tenant_id = seeded_guid(&mut rng);
        tenant.domains = GENERATED_DOMAINS.iter().map(|d| d.to_string()).collect();
        let extension_app = seeded_guid(&mut rng);
        let cost_center = tenant.add_extension_property(&extension_app, "costCenter");
        let badge = tenant.add_extension_property(&extension_app, "badgeNumber");

        let mut taken = HashSet::with_capacity(users + groups);
        let mut fresh = |rng: &mut Xoshiro256PlusPlus| loop {
            let id = seeded_guid(rng);
            if taken.insert(id.clone()) {
                break id;
            }
        };
        let user_ids: Vec<String> = (0..users).map(|_| fresh(&mut rng)).collect();

        // Every random draw happens here, in order, so the tenant depends on the seed alone;
        // the costly part (strings) then runs on several threads.
        let mut plans = Vec::with_capacity(users);
        let mut name_counts = vec![0u32; FIRST_NAMES.len() * LAST_NAMES.len()];
        // At least one guest and one disabled account in a tenant of 10 users or more.
        let forced = if users >= 10 { users / 10 } else { usize::MAX };
        for i in 0..users {
            let first = rng.random_range(0..FIRST_NAMES.len());
            let last = rng.random_range(0..LAST_NAMES.len());
            let count = &mut name_counts[first * LAST_NAMES.len() + last];
            *count += 1;
            let guest = i == forced || (i != 0 && rng.random_bool(0.03));
            let place = rng.random_range(0..PLACES.len());
            plans.push(UserPlan {
                first,
                last,
                number: *count,
                domain: match rng.random_range(0..10) {
                    0..=5 => 1,
                    6..=7 => 2,
                    8 => 3,
                    _ => 4,
                },
                guest,
                enabled: forced.checked_mul(2) != Some(i) && !rng.random_bool(0.06),
                no_mailbox: !guest && rng.random_bool(0.04),
                place,
                department: rng.random_range(0..DEPARTMENTS.len()),
                level: rng.random_range(0..TITLE_LEVELS.len()),
                contractor: rng.random_bool(0.08),
                manager: (i > 0 && !guest && rng.random_bool(0.85))
                    .then(|| ((rng.random::<f64>().powi(2) * i as f64) as usize).min(i - 1)),
                business_phone: rng.random_bool(0.7).then(|| rng.random_range(1000..9999)),
                mobile: rng
                    .random_bool(0.6)
                    .then(|| (rng.random_range(100..999), rng.random_range(1000..9999))),
                street_number: rng.random_range(1..200),
                synced: rng.random_bool(0.5),
                immutable: rng.random::<u128>(),
                cost_center: rng.random_bool(0.6),
                badge: rng.random_bool(0.05).then(|| rng.random_range(10_000..99_999)),
                created: GENERATED_BEFORE - rng.random_range(2 * DAY..1500 * DAY),
            });
        }
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).clamp(1, 4);
        let chunk = users.div_ceil(threads).max(1);
        let made: Vec<GraphUser> = std::thread::scope(|scope| {
            let workers: Vec<_> = plans
                .chunks(chunk)
                .enumerate()
                .map(|(c, part)| {
                    let (plans, user_ids, cost_center, badge) = (&plans, &user_ids, &cost_center, &badge);
                    scope.spawn(move || {
                        part.iter()
                            .enumerate()
                            .map(|(j, plan)| {
                                generated_user(c * chunk + j, plan, plans, user_ids, cost_center, badge)
                            })
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            workers.into_iter().flat_map(|worker| worker.join().unwrap()).collect()
        });
        tenant.users = made.into_iter().map(|u| (u.id.clone(), u)).collect();

        let mut group_ids = Vec::with_capacity(groups);
        let mut kinds = Vec::with_capacity(groups);
        let mut names = HashSet::with_capacity(groups);
        for j in 0..groups {
            let id = fresh(&mut rng);
            let kind = GROUP_KIND_CYCLE[j % GROUP_KIND_CYCLE.len()];
            let word = GROUP_WORDS[rng.random_range(0..GROUP_WORDS.len())];
            let base = match kind {
                GroupKind::Microsoft365 => format!("Team {}", capitalize(word)),
                GroupKind::Security => format!("sg-{word}"),
                GroupKind::MailSecurity => format!("msg-{word}"),
                GroupKind::Distribution => format!("dl-{word}"),
                GroupKind::Dynamic => format!("dyn-{word}"),
            };
            let name = if names.contains(&base) { format!("{base}-{j}") } else { base };
            names.insert(name.clone());
            let nickname = name.to_lowercase().replace(' ', "-");
            let domain = GENERATED_DOMAINS[1 + j % 3];
            let mail = format!("{nickname}@{domain}");
            let mut group = match kind {
                GroupKind::Microsoft365 => GraphGroup::microsoft_365(&name, &mail),
                GroupKind::Security | GroupKind::Dynamic => GraphGroup::security(&name),
                GroupKind::MailSecurity => GraphGroup::mail_enabled_security(&name, &mail),
                GroupKind::Distribution => GraphGroup::distribution(&name, &mail),
            };
            group.id = id.clone();
            group.mail_nickname = nickname;
            group.description = rng.random_bool(0.7).then(|| format!("Members of {name}"));
            group.created_date_time = iso_seconds(GENERATED_BEFORE - rng.random_range(30 * DAY..1500 * DAY));
            group.on_premises_sync_enabled =
                (kind == GroupKind::Security && rng.random_bool(0.3)).then_some(true);
            if kind == GroupKind::Dynamic {
                group.group_types = vec!["DynamicMembership".into()];
                let department = DEPARTMENTS[rng.random_range(0..DEPARTMENTS.len())].name;
                group.membership_rule = Some(format!("(user.department -eq \"{department}\")"));
            }
            tenant.groups.insert(id.clone(), group);
            group_ids.push(id);
            kinds.push(kind);
        }
        let mut lists: Vec<Vec<String>> = vec![Vec::new(); groups];
        if groups > 0 {
            for user in &user_ids {
                let wanted = match rng.random_range(0..20) {
                    0..=6 => 1,
                    7..=13 => 2,
                    14..=17 => 3,
                    _ => 4,
                }
                .min(groups);
                let mut chosen = Vec::with_capacity(wanted);
                while chosen.len() < wanted {
                    // Squaring skews toward the first groups: a few big groups, a long tail.
                    let g = ((rng.random::<f64>().powi(2) * groups as f64) as usize).min(groups - 1);
                    if !chosen.contains(&g) {
                        chosen.push(g);
                    }
                }
                for g in chosen {
                    lists[g].push(user.clone());
                }
            }
            // Nesting: a group may sit in an earlier group that can hold groups (not a
            // Microsoft 365 or dynamic one), so the nesting has no cycles.
            for k in 1..groups {
                if kinds[k] == GroupKind::Microsoft365 || !rng.random_bool(0.12) {
                    continue;
                }
                for _ in 0..4 {
                    let parent = rng.random_range(0..k);
                    if matches!(
                        kinds[parent],
                        GroupKind::Security | GroupKind::MailSecurity | GroupKind::Distribution
                    ) {
                        lists[parent].push(group_ids[k].clone());
                        break;
                    }
                }
            }
            for d in 0..groups.div_ceil(20) {
                let device = GraphDevice {
                    id: fresh(&mut rng),
                    display_name: format!("KIOSK-{:02}", d + 1),
                    operating_system: if d % 2 == 0 { "Windows" } else { "iOS" }.into(),
                };
                if let Some(parent) = kinds.iter().position(|k| *k == GroupKind::Security) {
                    let parent = (parent + 10 * rng.random_range(0..groups.div_ceil(10))).min(groups - 1);
                    if kinds[parent] == GroupKind::Security {
                        lists[parent].push(device.id.clone());
                    }
                }
                tenant.devices.insert(device.id.clone(), device);
            }
        }
        for (id, list) in group_ids.iter().zip(lists) {
            if !list.is_empty() {
                tenant.members.insert(id.clone(), list.into_iter().collect());
            }
        }
        tenant
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum GroupKind {
    Microsoft365,
    Security,
    MailSecurity,
    Distribution,
    Dynamic,
}

/// A small tenant already shows every kind; bigger ones keep the proportions.
const GROUP_KIND_CYCLE: [GroupKind; 10] = [
    GroupKind::Microsoft365,
    GroupKind::Security,
    GroupKind::Distribution,
    GroupKind::MailSecurity,
    GroupKind::Security,
    GroupKind::Microsoft365,
    GroupKind::Dynamic,
    GroupKind::Security,
    GroupKind::Microsoft365,
    GroupKind::Security,
];

/// The initial domain, the main one, its subdomain, a second brand and a sub-subdomain.
const GENERATED_DOMAINS: [&str; 5] = [
    "fjord.onmicrosoft.com",
    "fjord.example",
    "eu.fjord.example",
    "fabrikam.example",
    "dev.eu.fjord.example",
];

/// What `Tenant::generate` draws for one user; `generated_user` turns it into the user.
struct UserPlan {
    first: usize,
    last: usize,
    /// 1 for the first "lena.hoffmann", 2 for "lena.hoffmann2", ...
    number: u32,
    domain: usize,
    guest: bool,
    enabled: bool,
    no_mailbox: bool,
    place: usize,
    department: usize,
    level: usize,
    contractor: bool,
    manager: Option<usize>,
    business_phone: Option<u32>,
    mobile: Option<(u32, u32)>,
    street_number: u32,
    synced: bool,
    immutable: u128,
    cost_center: bool,
    badge: Option<u32>,
    created: i64,
}

fn generated_user(
    i: usize,
    plan: &UserPlan,
    plans: &[UserPlan],
    ids: &[String],
    cost_center_property: &str,
    badge_property: &str,
) -> GraphUser {
    let (first, first_ascii) = FIRST_NAMES[plan.first];
    let (last, last_ascii) = LAST_NAMES[plan.last];
    let local = match plan.number {
        1 => format!("{first_ascii}.{last_ascii}"),
        n => format!("{first_ascii}.{last_ascii}{n}"),
    };
    let id = ids[i].clone();
    let created_date_time = iso_seconds(plan.created);
    let display_name = Some(format!("{first} {last}"));
    if plan.guest {
        let home = format!("{local}@partner.example");
        let external = format!("{local}_partner.example#EXT#");
        return GraphUser {
            id,
            user_principal_name: format!("{external}@{}", GENERATED_DOMAINS[0]),
            mail: Some(home),
            mail_nickname: Some(external),
            display_name,
            given_name: None,
            surname: None,
            job_title: None,
            department: None,
            employee_id: None,
            employee_type: None,
            company_name: None,
            office_location: None,
            business_phones: Vec::new(),
            mobile_phone: None,
            street_address: None,
            city: None,
            state: None,
            postal_code: None,
            country: None,
            preferred_language: None,
            account_enabled: plan.enabled,
            user_type: "Guest".into(),
            on_premises_sam_account_name: None,
            on_premises_immutable_id: None,
            employee_org_data: None,
            created_date_time,
            manager_id: None,
            extensions: BTreeMap::new(),
        };
    }
    let place = &PLACES[plan.place];
    let department = &DEPARTMENTS[plan.department];
    let upn = format!("{local}@{}", GENERATED_DOMAINS[plan.domain]);
    let title = match TITLE_LEVELS[plan.level] {
        "" => department.role.to_string(),
        level => format!("{level} {}", department.role),
    };
    let mut extensions = BTreeMap::new();
    if plan.cost_center {
        extensions.insert(
            cost_center_property.to_string(),
            Value::from(format!("CC-{}", 4400 + plan.department * 10)),
        );
    }
    if let Some(badge) = plan.badge {
        extensions.insert(badge_property.to_string(), Value::from(badge));
    }
    GraphUser {
        id,
        mail: (!plan.no_mailbox).then(|| upn.clone()),
        user_principal_name: upn,
        mail_nickname: Some(local.clone()),
        display_name,
        given_name: Some(first.into()),
        surname: Some(last.into()),
        job_title: Some(title),
        department: Some(department.name.into()),
        employee_id: Some(format!("{}", 100_000 + i)),
        employee_type: Some(if plan.contractor { "Contractor" } else { "Employee" }.into()),
        company_name: Some(if plan.domain == 3 { "Fabrikam Ltd" } else { "Fjord GmbH" }.into()),
        office_location: Some(format!(
            "{} {}.{:02}",
            place.city,
            plan.street_number % 7,
            plan.street_number % 40
        )),
        business_phones: plan
            .business_phone
            .map(|n| format!("{} 5550 {n}", place.phone))
            .into_iter()
            .collect(),
        mobile_phone: plan.mobile.map(|(a, b)| format!("{} {a} {b}", place.phone)),
        street_address: Some(format!("{} {}", place.street, plan.street_number)),
        city: Some(place.city.into()),
        state: place.state.map(str::to_string),
        postal_code: Some(place.zip.into()),
        country: Some(place.country.into()),
        preferred_language: Some(place.language.into()),
        account_enabled: plan.enabled,
        user_type: "Member".into(),
        on_premises_sam_account_name: plan.synced.then(|| format!("{}{}", &first_ascii[..1], last_ascii)),
        on_premises_immutable_id: plan.synced.then(|| STANDARD.encode(plan.immutable.to_le_bytes())),
        employee_org_data: Some(EmployeeOrgData {
            division: Some(department.division.into()),
            cost_center: Some(format!("{}", 4400 + plan.department * 10)),
        }),
        created_date_time,
        manager_id: plan.manager.filter(|&m| !plans[m].guest).map(|m| ids[m].clone()),
        extensions,
    }
}

fn seeded_guid(rng: &mut Xoshiro256PlusPlus) -> String {
    uuid::Builder::from_random_bytes(rng.random::<u128>().to_le_bytes()).into_uuid().to_string()
}

const SECRET_ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-.";
const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

fn random_from(rng: &mut impl RngExt, alphabet: &[u8], len: usize) -> String {
    (0..len).map(|_| alphabet[rng.random_range(0..alphabet.len())] as char).collect()
}

fn random_alnum(len: usize) -> String {
    random_from(&mut rand::rng(), ALNUM, len)
}

fn capitalize(word: &str) -> String {
    let mut chars = word.chars();
    chars.next().map(|c| c.to_uppercase().chain(chars).collect()).unwrap_or_default()
}

/// (display form, ASCII form for UPNs); the ASCII forms are unique.
const FIRST_NAMES: &[(&str, &str)] = &[
    ("Lena", "lena"),
    ("Jonas", "jonas"),
    ("Inès", "ines"),
    ("Søren", "soren"),
    ("Zoë", "zoe"),
    ("José", "jose"),
    ("Łukasz", "lukasz"),
    ("Mei", "mei"),
    ("Aarav", "aarav"),
    ("Fatima", "fatima"),
    ("Liam", "liam"),
    ("Olivia", "olivia"),
    ("Noah", "noah"),
    ("Emma", "emma"),
    ("Hiroshi", "hiroshi"),
    ("Chloé", "chloe"),
    ("Mateo", "mateo"),
    ("Priya", "priya"),
    ("Kwame", "kwame"),
    ("Ingrid", "ingrid"),
    ("Dmitri", "dmitri"),
    ("Aisha", "aisha"),
    ("Siobhán", "siobhan"),
    ("Björn", "bjorn"),
    ("Camila", "camila"),
    ("Wei", "wei"),
    ("Oskar", "oskar"),
    ("Elena", "elena"),
    ("Tariq", "tariq"),
    ("Hana", "hana"),
];

const LAST_NAMES: &[(&str, &str)] = &[
    ("Hoffmann", "hoffmann"),
    ("Berg", "berg"),
    ("Okafor", "okafor"),
    ("Nielsen", "nielsen"),
    ("García", "garcia"),
    ("Kowalski", "kowalski"),
    ("Chen", "chen"),
    ("Patel", "patel"),
    ("Khan", "khan"),
    ("Smith", "smith"),
    ("Tanaka", "tanaka"),
    ("Dubois", "dubois"),
    ("Rossi", "rossi"),
    ("Müller", "muller"),
    ("O'Brien", "obrien"),
    ("Novák", "novak"),
    ("Silva", "silva"),
    ("Mensah", "mensah"),
    ("Larsen", "larsen"),
    ("Nguyen", "nguyen"),
    ("Fernández", "fernandez"),
    ("Schmidt", "schmidt"),
    ("Andersson", "andersson"),
    ("Cohen", "cohen"),
    ("van der Berg", "vanderberg"),
    ("Yılmaz", "yilmaz"),
];

struct Place {
    city: &'static str,
    state: Option<&'static str>,
    country: &'static str,
    zip: &'static str,
    street: &'static str,
    language: &'static str,
    phone: &'static str,
}

const PLACES: &[Place] = &[
    Place {
        city: "Hamburg",
        state: Some("HH"),
        country: "Germany",
        zip: "20457",
        street: "Speicherstadt",
        language: "de-DE",
        phone: "+49 40",
    },
    Place {
        city: "Oslo",
        state: None,
        country: "Norway",
        zip: "0153",
        street: "Kirkegata",
        language: "nb-NO",
        phone: "+47 22",
    },
    Place {
        city: "Paris",
        state: None,
        country: "France",
        zip: "75002",
        street: "Rue de Richelieu",
        language: "fr-FR",
        phone: "+33 1",
    },
    Place {
        city: "London",
        state: None,
        country: "United Kingdom",
        zip: "EC1A 1BB",
        street: "Aldersgate Street",
        language: "en-GB",
        phone: "+44 20",
    },
    Place {
        city: "Seattle",
        state: Some("WA"),
        country: "United States",
        zip: "98101",
        street: "Pike Street",
        language: "en-US",
        phone: "+1 206",
    },
    Place {
        city: "Tokyo",
        state: None,
        country: "Japan",
        zip: "100-0005",
        street: "Marunouchi",
        language: "ja-JP",
        phone: "+81 3",
    },
];

struct Department {
    name: &'static str,
    division: &'static str,
    role: &'static str,
}

const DEPARTMENTS: &[Department] = &[
    Department { name: "Engineering", division: "R&D", role: "Software Engineer" },
    Department { name: "Platform", division: "R&D", role: "Site Reliability Engineer" },
    Department { name: "Sales", division: "Go-to-Market", role: "Account Executive" },
    Department { name: "Marketing", division: "Go-to-Market", role: "Marketing Manager" },
    Department { name: "Finance", division: "Corporate", role: "Controller" },
    Department { name: "People", division: "Corporate", role: "People Partner" },
    Department { name: "Legal", division: "Corporate", role: "Counsel" },
    Department { name: "Support", division: "Customer", role: "Support Specialist" },
];

const TITLE_LEVELS: &[&str] = &["", "", "Senior", "Staff", "Principal", "Lead", "Associate"];

const GROUP_WORDS: &[&str] = &[
    "finance",
    "hamburg",
    "oslo",
    "paris",
    "london",
    "seattle",
    "tokyo",
    "engineering",
    "platform",
    "oncall",
    "sales",
    "marketing",
    "people",
    "legal",
    "support",
    "admins",
    "readers",
    "contractors",
    "leads",
    "all",
    "interns",
    "managers",
    "backend",
    "frontend",
    "mobile",
    "data",
    "security",
    "payroll",
    "audit",
    "partners",
    "beta",
    "release",
    "infra",
    "vpn",
    "github",
    "aws-prod",
    "aws-dev",
];

// ---------------------------------------------------------------------------------------------
// Time
// ---------------------------------------------------------------------------------------------

const DAY: i64 = 86_400;
/// Every generated timestamp lies before 2026-03-01T00:00:00Z, so the tenant does not depend
/// on the clock.
const GENERATED_BEFORE: i64 = 1_772_323_200;

fn now_secs() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

/// "2026-03-02T10:00:00Z", as Graph prints `createdDateTime`.
fn iso_seconds(secs: i64) -> String {
    chrono::DateTime::from_timestamp(secs, 0).unwrap_or_default().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

// ---------------------------------------------------------------------------------------------
// Properties and wire shapes (§3, §4)
// ---------------------------------------------------------------------------------------------

struct Property {
    name: &'static str,
    /// Filterable without `ConsistencyLevel: eventual` (eq, in, startsWith).
    basic_filter: bool,
}

const fn prop(name: &'static str, basic_filter: bool) -> Property {
    Property { name, basic_filter }
}

const USER_PROPERTIES: &[Property] = &[
    prop("id", true),
    prop("userPrincipalName", true),
    prop("mail", true),
    prop("mailNickname", true),
    prop("displayName", true),
    prop("givenName", true),
    prop("surname", true),
    prop("jobTitle", true),
    prop("department", true),
    prop("employeeId", true),
    prop("employeeType", false),
    prop("companyName", false),
    prop("officeLocation", false),
    prop("businessPhones", false),
    prop("mobilePhone", false),
    prop("streetAddress", false),
    prop("city", true),
    prop("state", true),
    prop("postalCode", false),
    prop("country", true),
    prop("preferredLanguage", true),
    prop("accountEnabled", true),
    prop("userType", true),
    prop("onPremisesSamAccountName", true),
    prop("onPremisesImmutableId", true),
    prop("onPremisesSyncEnabled", true),
    prop("employeeOrgData", false),
    prop("createdDateTime", false),
    prop("otherMails", true),
    prop("proxyAddresses", true),
    prop("usageLocation", true),
    prop("employeeHireDate", false),
];

/// Without `$select`, `/users` returns only these (§3).
const DEFAULT_USER_SELECT: &[&str] = &[
    "businessPhones",
    "displayName",
    "givenName",
    "jobTitle",
    "mail",
    "mobilePhone",
    "officeLocation",
    "preferredLanguage",
    "surname",
    "userPrincipalName",
    "id",
];

/// Properties Graph returns only on a single-user GET; in a list `$select` they are a 501.
const SINGLE_USER_ONLY: &[&str] = &[
    "aboutMe",
    "birthday",
    "hireDate",
    "interests",
    "mailboxSettings",
    "mySite",
    "pastProjects",
    "preferredName",
    "responsibilities",
    "schools",
    "skills",
];

const GROUP_PROPERTIES: &[Property] = &[
    prop("id", true),
    prop("displayName", true),
    prop("description", false),
    prop("mail", true),
    prop("mailEnabled", true),
    prop("mailNickname", true),
    prop("securityEnabled", true),
    prop("groupTypes", true),
    prop("membershipRule", false),
    prop("membershipRuleProcessingState", false),
    prop("onPremisesSyncEnabled", true),
    prop("visibility", false),
    prop("proxyAddresses", true),
    prop("createdDateTime", false),
];

const DEVICE_PROPERTIES: &[&str] = &["id", "displayName", "operatingSystem", "accountEnabled"];

fn text(value: &Option<String>) -> Value {
    value.as_ref().map_or(Value::Null, |v| Value::String(v.clone()))
}

/// A user property by canonical name; None for a name that is not a user property.
fn user_value(u: &GraphUser, name: &str) -> Option<Value> {
    Some(match name {
        "id" => u.id.clone().into(),
        "userPrincipalName" => u.user_principal_name.clone().into(),
        "mail" => text(&u.mail),
        "mailNickname" => text(&u.mail_nickname),
        "displayName" => text(&u.display_name),
        "givenName" => text(&u.given_name),
        "surname" => text(&u.surname),
        "jobTitle" => text(&u.job_title),
        "department" => text(&u.department),
        "employeeId" => text(&u.employee_id),
        "employeeType" => text(&u.employee_type),
        "companyName" => text(&u.company_name),
        "officeLocation" => text(&u.office_location),
        "businessPhones" => json!(u.business_phones),
        "mobilePhone" => text(&u.mobile_phone),
        "streetAddress" => text(&u.street_address),
        "city" => text(&u.city),
        "state" => text(&u.state),
        "postalCode" => text(&u.postal_code),
        "country" => text(&u.country),
        "preferredLanguage" => text(&u.preferred_language),
        "accountEnabled" => u.account_enabled.into(),
        "userType" => u.user_type.clone().into(),
        "onPremisesSamAccountName" => text(&u.on_premises_sam_account_name),
        "onPremisesImmutableId" => text(&u.on_premises_immutable_id),
        "onPremisesSyncEnabled" => {
            if u.on_premises_immutable_id.is_some() {
                true.into()
            } else {
                Value::Null
            }
        }
        "employeeOrgData" => match &u.employee_org_data {
            Some(data) => json!({ "division": data.division, "costCenter": data.cost_center }),
            None => Value::Null,
        },
        "createdDateTime" => u.created_date_time.clone().into(),
        "otherMails" => json!([]),
        "proxyAddresses" => match &u.mail {
            Some(mail) => json!([format!("SMTP:{mail}")]),
            None => json!([]),
        },
        "usageLocation" => Value::Null,
        "employeeHireDate" => Value::Null,
        _ => return None,
    })
}

fn group_value(g: &GraphGroup, name: &str) -> Option<Value> {
    Some(match name {
        "id" => g.id.clone().into(),
        "displayName" => g.display_name.clone().into(),
        "description" => text(&g.description),
        "mail" => text(&g.mail),
        "mailEnabled" => g.mail_enabled.into(),
        "mailNickname" => g.mail_nickname.clone().into(),
        "securityEnabled" => g.security_enabled.into(),
        "groupTypes" => json!(g.group_types),
        "membershipRule" => text(&g.membership_rule),
        "membershipRuleProcessingState" => {
            if g.membership_rule.is_some() {
                "On".into()
            } else {
                Value::Null
            }
        }
        "onPremisesSyncEnabled" => g.on_premises_sync_enabled.map_or(Value::Null, Value::from),
        "visibility" => text(&g.visibility),
        "proxyAddresses" => match &g.mail {
            Some(mail) => json!([format!("SMTP:{mail}")]),
            None => json!([]),
        },
        "createdDateTime" => g.created_date_time.clone().into(),
        _ => return None,
    })
}

fn device_value(d: &GraphDevice, name: &str) -> Option<Value> {
    Some(match name {
        "id" => d.id.clone().into(),
        "displayName" => d.display_name.clone().into(),
        "operatingSystem" => d.operating_system.clone().into(),
        "accountEnabled" => true.into(),
        _ => return None,
    })
}

fn is_unset(value: &Value) -> bool {
    value.is_null() || value.as_array().is_some_and(Vec::is_empty)
}

/// Which resource a `$select` or `$filter` names properties of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
enum Resource {
    User,
    Group,
}

impl Resource {
    fn type_name(self) -> &'static str {
        match self {
            Resource::User => "microsoft.graph.user",
            Resource::Group => "microsoft.graph.group",
        }
    }

    fn title(self) -> &'static str {
        match self {
            Resource::User => "User",
            Resource::Group => "Group",
        }
    }

    fn properties(self) -> &'static [Property] {
        match self {
            Resource::User => USER_PROPERTIES,
            Resource::Group => GROUP_PROPERTIES,
        }
    }
}

/// Canonical name of a property (`$select` and `$filter` are case-insensitive).
fn canonical(resource: Resource, tenant: &Tenant, name: &str) -> Option<String> {
    if let Some(p) = resource.properties().iter().find(|p| p.name.eq_ignore_ascii_case(name)) {
        return Some(p.name.to_string());
    }
    if resource == Resource::User {
        return tenant.extension_properties.iter().find(|e| e.eq_ignore_ascii_case(name)).cloned();
    }
    None
}

/// The user as `/users` returns it for `select` (None = the default properties).
fn user_json(tenant: &Tenant, u: &GraphUser, select: Option<&[String]>) -> Map<String, Value> {
    let mut out = Map::new();
    match select {
        None => {
            for name in DEFAULT_USER_SELECT {
                out.insert(name.to_string(), user_value(u, name).unwrap_or(Value::Null));
            }
        }
        Some(select) => {
            out.insert("id".into(), u.id.clone().into());
            for name in select {
                if let Some(value) = user_value(u, name) {
                    out.insert(name.clone(), value);
                } else if tenant.extension_properties.contains(name) {
                    // An unset extension is absent, not null.
                    if let Some(value) = u.extensions.get(name) {
                        out.insert(name.clone(), value.clone());
                    }
                } else if SINGLE_USER_ONLY.contains(&name.as_str()) {
                    out.insert(name.clone(), Value::Null);
                }
            }
        }
    }
    out
}

fn group_json(g: &GraphGroup, select: Option<&[String]>) -> Map<String, Value> {
    let mut out = Map::new();
    out.insert("id".into(), g.id.clone().into());
    match select {
        None => {
            for p in GROUP_PROPERTIES {
                out.insert(p.name.into(), group_value(g, p.name).unwrap_or(Value::Null));
            }
        }
        Some(select) => {
            for name in select {
                if let Some(value) = group_value(g, name) {
                    out.insert(name.clone(), value);
                }
            }
        }
    }
    out
}

/// A directory object in a member list: `@odata.type`, `id`, then the selected properties
/// (a group or device answers user-only ones as null). A member the caller may not read
/// comes back with only `@odata.type` and `id`, the rest null (§1.3).
fn member_json(
    tenant: &Tenant,
    id: &str,
    select: Option<&[String]>,
    readable: impl Fn(ObjectKind) -> bool,
) -> Option<Value> {
    let kind = tenant.kind_of(id)?;
    let value_of = |name: &str| -> Option<Value> {
        match kind {
            ObjectKind::User => tenant.users.get(id).map(|u| user_field(u, name)),
            ObjectKind::Group => tenant.groups.get(id).map(|g| group_value(g, name).unwrap_or(Value::Null)),
            ObjectKind::Device => tenant.devices.get(id).and_then(|d| device_value(d, name)),
        }
    };
    let names: Vec<String> = match (select, kind) {
        (Some(select), _) => select.to_vec(),
        (None, ObjectKind::User) => DEFAULT_USER_SELECT.iter().map(|s| s.to_string()).collect(),
        (None, ObjectKind::Group) => GROUP_PROPERTIES.iter().map(|p| p.name.to_string()).collect(),
        (None, ObjectKind::Device) => DEVICE_PROPERTIES.iter().map(|s| s.to_string()).collect(),
    };
    let limited = !readable(kind);
    let mut out = Map::new();
    out.insert("@odata.type".into(), kind.odata_type().into());
    out.insert("id".into(), id.into());
    for name in names.into_iter().filter(|n| n != "id") {
        match value_of(&name) {
            Some(_) if limited => {
                out.insert(name, Value::Null);
            }
            Some(value) => {
                out.insert(name, value);
            }
            // A device simply lacks properties it does not have.
            None => {}
        }
    }
    Some(Value::Object(out))
}

// ---------------------------------------------------------------------------------------------
// The server
// ---------------------------------------------------------------------------------------------

/// One request as the fake received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    pub method: String,
    pub path_and_query: String,
    pub authorization: Option<String>,
    pub consistency_level: Option<String>,
    pub prefer: Option<String>,
    pub client_request_id: Option<String>,
    /// The form fields of a token request (secrets included: this is a test fake).
    pub form: Vec<(String, String)>,
    /// The status answered; 0 while the request is in flight.
    pub status: u16,
    pub received: Instant,
}

impl Recorded {
    pub fn path(&self) -> &str {
        self.path_and_query.split('?').next().unwrap_or("")
    }

    /// A decoded query parameter, e.g. `query("$select")`.
    pub fn query(&self, name: &str) -> Option<String> {
        let raw = self.path_and_query.split_once('?').map_or("", |(_, q)| q);
        url::form_urlencoded::parse(raw.as_bytes()).find(|(n, _)| n == name).map(|(_, v)| v.into_owned())
    }

    pub fn form_field(&self, name: &str) -> Option<&str> {
        self.form.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

/// A failure to inject with `FakeGraph::fail_next`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// 429 `TooManyRequests` with throttle headers, `Retry-After` when given.
    Throttled { retry_after_secs: Option<u64> },
    /// 503 `serviceNotAvailable`, `Retry-After` when given.
    Unavailable { retry_after_secs: Option<u64> },
    /// 504 `UnknownError`, `Retry-After` when given.
    GatewayTimeout { retry_after_secs: Option<u64> },
    /// 401 `InvalidAuthenticationToken`, token expired.
    TokenExpired,
    /// 403 `Authorization_RequestDenied`.
    Forbidden,
    /// 400 `syncStateNotFound` (expired delta token).
    SyncStateNotFound,
    /// 400 `resyncRequired`.
    ResyncRequired,
    /// 410 Gone with `Location` = the initial delta URL (empty `$deltatoken`).
    DeltaGone,
}

/// How a delta or skip token from before `FakeGraph::expire_delta_tokens` is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpiredDelta {
    /// 400 `syncStateNotFound`, as after 7 days.
    SyncStateNotFound,
    /// 400 `resyncRequired`.
    ResyncRequired,
    /// 410 Gone + `Location` of the initial round (tenant maintenance or migration).
    Gone,
}

/// Why the next refresh-token redemptions fail, for `FakeGraph::fail_refresh`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefreshFailure {
    /// AADSTS700082: unused for 90 days (every refresh token issued so far).
    Inactive,
    /// AADSTS70043: Conditional Access sign-in frequency (every refresh token issued so far).
    SignInFrequency,
    /// AADSTS50076: MFA required, until `clear_refresh_failure`.
    MfaRequired,
}

pub struct FakeGraph {
    shared: Arc<Shared>,
    system: actix_web::rt::System,
}

impl FakeGraph {
    /// Starts serving `tenant` on 127.0.0.1 and a free port.
    pub fn start(tenant: Tenant) -> FakeGraph {
        Self::start_on_port(tenant, 0)
    }

    /// Starts serving `tenant` on 127.0.0.1:`port` (0 picks a free one).
    pub fn start_on_port(tenant: Tenant, port: u16) -> FakeGraph {
        let listener =
            TcpListener::bind(("127.0.0.1", port)).unwrap_or_else(|e| panic!("bind 127.0.0.1:{port}: {e}"));
        let addr = listener.local_addr().unwrap();
        let state = State {
            tenant,
            apps: Vec::new(),
            access_tokens: HashMap::new(),
            codes: HashMap::new(),
            refresh_tokens: HashMap::new(),
            session_generation: 0,
            refresh_failure: None,
            used_assertion_ids: HashSet::new(),
            failures: VecDeque::new(),
            budgets: HashMap::new(),
            delta_epoch: 0,
            expired_delta: ExpiredDelta::SyncStateNotFound,
            access_token_lifetime: Duration::from_secs(3599),
            requests: Vec::new(),
        };
        let shared = Arc::new(Shared {
            base_url: format!("http://{addr}"),
            key: random_alnum(32),
            state: Mutex::new(state),
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
            latency_ms: AtomicU64::new(0),
        });
        let (started_tx, started_rx) = std::sync::mpsc::channel();
        let server_shared = shared.clone();
        std::thread::spawn(move || {
            let system = actix_web::rt::System::new();
            system.block_on(async move {
                let data = web::Data::from(server_shared);
                let server = HttpServer::new(move || {
                    App::new().app_data(data.clone()).default_service(web::to(handle))
                })
                .workers(2)
                // Ctrl-C should end the example process, not just this server.
                .disable_signals()
                .listen(listener)
                .unwrap()
                .run();
                started_tx.send(actix_web::rt::System::current()).unwrap();
                server.await.unwrap();
            });
        });
        let system = started_rx.recv().unwrap();
        FakeGraph { shared, system }
    }

    /// "http://127.0.0.1:<port>": the connection's `login_url` and `graph_url` both.
    pub fn base_url(&self) -> String {
        self.shared.base_url.clone()
    }

    pub fn tenant_id(&self) -> String {
        self.shared.lock().tenant.tenant_id.clone()
    }

    /// `{login_url}/{tenant id}/oauth2/v2.0/token`.
    pub fn token_url(&self) -> String {
        format!("{}/{}/oauth2/v2.0/token", self.base_url(), self.tenant_id())
    }

    /// `{login_url}/{tenant id}/oauth2/v2.0/authorize`.
    pub fn authorize_url(&self) -> String {
        format!("{}/{}/oauth2/v2.0/authorize", self.base_url(), self.tenant_id())
    }

    /// `{graph_url}/v1.0`.
    pub fn graph_base(&self) -> String {
        format!("{}/v1.0", self.base_url())
    }

    /// A connection's `entra` block pointing at this fake (login and Graph on the same
    /// loopback URL, hence `allow_insecure_http`), with `auth` from the `AppRegistration`
    /// helpers.
    pub fn entra_source(&self, auth: Value) -> Value {
        json!({
            "tenant": self.tenant_id(),
            "auth": auth,
            "login_url": self.base_url(),
            "graph_url": self.base_url(),
            "allow_insecure_http": true
        })
    }

    /// Registers (or replaces) an app; returns it for its client id and secret.
    pub fn register_app(&self, app: AppRegistration) -> AppRegistration {
        let mut state = self.shared.lock();
        state.apps.retain(|a| a.client_id != app.client_id);
        state.apps.push(app.clone());
        app
    }

    /// Changes a registered app: consent, secrets, certificates. Tokens already minted keep
    /// their roles.
    pub fn change_app(&self, client_id: &str, f: impl FnOnce(&mut AppRegistration)) {
        let mut state = self.shared.lock();
        let app = state
            .apps
            .iter_mut()
            .find(|a| a.client_id == client_id)
            .unwrap_or_else(|| panic!("no app {client_id} registered"));
        f(app);
    }

    /// Changes the tenant; use the `Tenant` methods so that delta queries see the changes.
    pub fn change<R>(&self, f: impl FnOnce(&mut Tenant) -> R) -> R {
        f(&mut self.shared.lock().tenant)
    }

    /// Reads the tenant (e.g. for what a test expects the importer to see).
    pub fn read<R>(&self, f: impl FnOnce(&Tenant) -> R) -> R {
        f(&self.shared.lock().tenant)
    }

    /// Every request received so far, in order.
    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.lock().requests.clone()
    }

    pub fn clear_requests(&self) {
        self.shared.lock().requests.clear();
    }

    /// The next `count` requests whose path starts with `path_prefix` fail with `failure`.
    pub fn fail_next(&self, path_prefix: &str, count: usize, failure: Failure) {
        self.shared.lock().failures.push_back((path_prefix.to_string(), count, failure));
    }

    /// Makes every access token minted so far expire now.
    pub fn expire_access_tokens(&self) {
        let now = Instant::now();
        for token in self.shared.lock().access_tokens.values_mut() {
            token.expires = now;
        }
    }

    /// Lifetime (`expires_in`) of access tokens minted from now on.
    pub fn set_access_token_lifetime(&self, lifetime: Duration) {
        self.shared.lock().access_token_lifetime = lifetime;
    }

    /// Every delta and skip token issued so far stops working, answered as `answer` says.
    pub fn expire_delta_tokens(&self, answer: ExpiredDelta) {
        let mut state = self.shared.lock();
        state.delta_epoch += 1;
        state.expired_delta = answer;
    }

    /// An admin's "revoke sessions": every refresh token issued so far fails with AADSTS50173.
    pub fn revoke_sign_in_sessions(&self) {
        self.shared.lock().session_generation += 1;
    }

    /// Makes refresh-token redemptions fail as `failure` says.
    pub fn fail_refresh(&self, failure: RefreshFailure) {
        let mut state = self.shared.lock();
        match failure {
            RefreshFailure::Inactive | RefreshFailure::SignInFrequency => {
                for token in state.refresh_tokens.values_mut() {
                    token.failure.get_or_insert(failure);
                }
            }
            RefreshFailure::MfaRequired => state.refresh_failure = Some(failure),
        }
    }

    pub fn clear_refresh_failure(&self) {
        self.shared.lock().refresh_failure = None;
    }

    /// Starts fresh throttling windows, as waiting for `Retry-After` would.
    pub fn reset_throttling(&self) {
        self.shared.lock().budgets.clear();
    }

    /// Holds every request this long before answering.
    pub fn set_latency(&self, latency: Duration) {
        self.shared.latency_ms.store(latency.as_millis() as u64, Ordering::SeqCst);
    }

    /// The most requests that were in flight at once.
    pub fn max_in_flight(&self) -> usize {
        self.shared.max_in_flight.load(Ordering::SeqCst)
    }
}

impl Drop for FakeGraph {
    fn drop(&mut self) {
        self.system.stop();
    }
}

struct Shared {
    base_url: String,
    /// Keys access tokens and the check digits of page tokens, so a forged one is refused.
    key: String,
    state: Mutex<State>,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    latency_ms: AtomicU64,
}

struct State {
    tenant: Tenant,
    apps: Vec<AppRegistration>,
    access_tokens: HashMap<String, AccessToken>,
    codes: HashMap<String, AuthorizationCode>,
    refresh_tokens: HashMap<String, RefreshToken>,
    /// Bumped by "revoke sessions"; refresh tokens of an older generation are revoked.
    session_generation: u64,
    refresh_failure: Option<RefreshFailure>,
    used_assertion_ids: HashSet<String>,
    failures: VecDeque<(String, usize, Failure)>,
    budgets: HashMap<String, Budget>,
    /// Bumped by `expire_delta_tokens`; tokens of an older epoch are expired.
    delta_epoch: u64,
    expired_delta: ExpiredDelta,
    access_token_lifetime: Duration,
    requests: Vec<Recorded>,
}

struct AccessToken {
    client_id: String,
    /// Application permissions (client credentials) or delegated scopes (`scp`).
    permissions: Vec<String>,
    expires: Instant,
}

struct AuthorizationCode {
    client_id: String,
    redirect_uri: String,
    scopes: Vec<String>,
    challenge: Option<(String, String)>,
    issued: Instant,
    redeemed: bool,
}

struct RefreshToken {
    client_id: String,
    scopes: Vec<String>,
    generation: u64,
    issued: i64,
    failure: Option<RefreshFailure>,
}

#[derive(Default, Clone, Copy)]
struct Budget {
    started: Option<Instant>,
    used: u32,
}

impl State {
    fn take_failure(&mut self, path: &str) -> Option<Failure> {
        let index =
            self.failures.iter().position(|(prefix, count, _)| *count > 0 && path.starts_with(prefix))?;
        let entry = self.failures.get_mut(index)?;
        entry.1 -= 1;
        let failure = entry.2;
        if entry.1 == 0 {
            self.failures.remove(index);
        }
        Some(failure)
    }

    fn resource_unit_limit(&self) -> u32 {
        self.tenant.throttle.resource_units.unwrap_or(match self.tenant.users.len() {
            0..50 => 3_500,
            50..=500 => 5_000,
            _ => 8_000,
        })
    }

    /// Charges `cost` RU to the app's budget. Ok(used, limit); Err(retry-after seconds).
    /// Throttled requests count too.
    fn charge(&mut self, client_id: &str, cost: u32) -> Result<(u32, u32), u64> {
        let limit = self.resource_unit_limit();
        let window = self.tenant.throttle.window;
        let fixed = self.tenant.throttle.retry_after_secs;
        let budget = self.budgets.entry(client_id.to_string()).or_default();
        let started = match budget.started {
            Some(started) if started.elapsed() < window => started,
            _ => {
                *budget = Budget { started: Some(Instant::now()), used: 0 };
                Instant::now()
            }
        };
        budget.used = budget.used.saturating_add(cost);
        if budget.used > limit {
            let left = window.saturating_sub(started.elapsed());
            return Err(fixed.unwrap_or_else(|| left.as_secs_f64().ceil().max(1.0) as u64));
        }
        Ok((budget.used, limit))
    }

    fn find_app(&self, client_id: &str) -> Option<&AppRegistration> {
        self.apps.iter().find(|a| a.client_id.eq_ignore_ascii_case(client_id))
    }
}

/// A response before the per-request headers are added.
struct Answer {
    status: StatusCode,
    headers: Vec<(&'static str, String)>,
    body: Body,
}

enum Body {
    Json(Value),
    Html(String),
    Empty,
}

impl Answer {
    fn json(status: u16, body: Value) -> Answer {
        Answer { status: status_code(status), headers: Vec::new(), body: Body::Json(body) }
    }

    fn with(mut self, name: &'static str, value: String) -> Answer {
        self.headers.push((name, value));
        self
    }
}

fn status_code(status: u16) -> StatusCode {
    StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

/// A Graph error body (§7); `innerError` gets the request ids when rendered.
fn graph_error(status: u16, code: &str, message: &str) -> Answer {
    Answer::json(status, json!({ "error": { "code": code, "message": message, "innerError": {} } }))
}

fn bad_request(message: &str) -> Answer {
    graph_error(400, "Request_BadRequest", message)
}

fn unsupported_query(message: &str) -> Answer {
    graph_error(400, "Request_UnsupportedQuery", message)
}

fn not_found(id: &str) -> Answer {
    graph_error(
        404,
        "Request_ResourceNotFound",
        &format!("Resource '{id}' does not exist or one of its queried reference-property objects are not present."),
    )
}

fn access_denied() -> Answer {
    graph_error(403, "Authorization_RequestDenied", "Insufficient privileges to complete the operation.")
}

fn invalid_token(message: &str) -> Answer {
    graph_error(401, "InvalidAuthenticationToken", message).with(
        "WWW-Authenticate",
        "Bearer realm=\"\", authorization_uri=\"https://login.microsoftonline.com/common/oauth2/authorize\", client_id=\"00000003-0000-0000-c000-000000000000\"".into(),
    )
}

/// A token-endpoint error (§1.5): AADSTS code first in `error_codes` and in the description.
fn aad_error(status: u16, error: &str, code: u32, message: &str) -> Answer {
    let (trace, correlation) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
    let timestamp = chrono::Utc::now().format("%Y-%m-%d %H:%M:%SZ").to_string();
    Answer::json(
        status,
        json!({
            "error": error,
            "error_description": format!(
                "AADSTS{code}: {message}\r\nTrace ID: {trace}\r\nCorrelation ID: {correlation}\r\nTimestamp: {timestamp}"
            ),
            "error_codes": [code],
            "timestamp": timestamp,
            "trace_id": trace,
            "correlation_id": correlation,
            "error_uri": format!("https://login.microsoftonline.com/error?code={code}")
        }),
    )
}

/// Graph's OData JSON content type.
const ODATA_JSON: &str =
    "application/json;odata.metadata=minimal;odata.streaming=true;IEEE754Compatible=false;charset=utf-8";

fn render(answer: Answer, request_id: &str, client_request_id: Option<&str>, graph: bool) -> HttpResponse {
    let mut response = HttpResponse::build(answer.status);
    response.insert_header(("request-id", request_id.to_string()));
    if let Some(id) = client_request_id {
        response.insert_header(("client-request-id", id.to_string()));
    }
    for (name, value) in answer.headers {
        response.append_header((name, value));
    }
    match answer.body {
        Body::Json(mut body) => {
            if let Some(inner) = body.pointer_mut("/error/innerError").and_then(Value::as_object_mut) {
                inner
                    .insert("date".into(), chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S").to_string().into());
                inner.insert("request-id".into(), request_id.into());
                inner.insert("client-request-id".into(), client_request_id.unwrap_or(request_id).into());
            }
            let content_type = if graph { ODATA_JSON } else { "application/json; charset=utf-8" };
            response.content_type(content_type).body(serde_json::to_vec(&body).unwrap_or_default())
        }
        Body::Html(text) => response.content_type("text/html; charset=utf-8").body(text),
        Body::Empty => response.finish(),
    }
}

struct InFlight<'a>(&'a AtomicUsize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn handle(req: HttpRequest, body: web::Bytes, shared: web::Data<Shared>) -> HttpResponse {
    let in_flight = shared.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    let _slot = InFlight(&shared.in_flight);
    shared.max_in_flight.fetch_max(in_flight, Ordering::SeqCst);
    let index = shared.record(&req, &body);
    let latency = shared.latency_ms.load(Ordering::SeqCst);
    if latency > 0 {
        actix_web::rt::time::sleep(Duration::from_millis(latency)).await;
    }
    let request_id = uuid::Uuid::new_v4().to_string();
    let client_request_id = header(&req, "client-request-id").map(str::to_string);
    let graph = req.path().starts_with("/v1.0/");
    let answer = shared.respond(&req, &body);
    let status = answer.status.as_u16();
    if let Some(recorded) = shared.lock().requests.get_mut(index) {
        recorded.status = status;
    }
    render(answer, &request_id, client_request_id.as_deref(), graph)
}

/// The token of an `Authorization: Bearer …` header.
fn bearer(req: &HttpRequest) -> Option<&str> {
    let authorization = header(req, "authorization")?;
    authorization.get(..7).filter(|s| s.eq_ignore_ascii_case("bearer ")).map(|_| authorization[7..].trim())
}

fn header<'a>(req: &'a HttpRequest, name: &str) -> Option<&'a str> {
    req.headers().get(name).and_then(|v| v.to_str().ok())
}

impl Shared {
    /// The state, even after a test's `change` closure panicked while holding it.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn record(&self, req: &HttpRequest, body: &[u8]) -> usize {
        let text =
            |name: &str| req.headers().get(name).map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
        let form = if req.method() == actix_web::http::Method::POST {
            url::form_urlencoded::parse(body).into_owned().collect()
        } else {
            Vec::new()
        };
        let recorded = Recorded {
            method: req.method().to_string(),
            path_and_query: req
                .uri()
                .path_and_query()
                .map_or_else(|| req.path().to_string(), |p| p.to_string()),
            authorization: text("authorization"),
            consistency_level: text("consistencylevel"),
            prefer: text("prefer"),
            client_request_id: text("client-request-id"),
            form,
            status: 0,
            received: Instant::now(),
        };
        let mut state = self.lock();
        state.requests.push(recorded);
        state.requests.len() - 1
    }

    fn respond(&self, req: &HttpRequest, body: &[u8]) -> Answer {
        let path = req.path().to_string();
        let mut state = self.lock();
        if let Some(failure) = state.take_failure(&path) {
            return self.injected(&state, req, failure);
        }
        let segments: Vec<String> = path
            .split('/')
            .map(|s| percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned())
            .collect();
        let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
        match segments.as_slice() {
            ["", tenant, "oauth2", "v2.0", "token"] => {
                if req.method() != actix_web::http::Method::POST {
                    return aad_error(
                        400,
                        "invalid_request",
                        900561,
                        "The endpoint only accepts POST requests. Received a GET request.",
                    );
                }
                self.token(&mut state, req, tenant, body)
            }
            ["", tenant, "oauth2", "v2.0", "authorize"] => self.authorize(&mut state, req, tenant),
            ["", "v1.0", rest @ ..] => {
                if req.method() != actix_web::http::Method::GET {
                    return graph_error(
                        405,
                        "Request_BadRequest",
                        "Specified HTTP method is not allowed for the request target.",
                    );
                }
                self.graph(&mut state, req, rest)
            }
            _ => Answer { status: StatusCode::NOT_FOUND, headers: Vec::new(), body: Body::Empty },
        }
    }

    fn injected(&self, state: &State, req: &HttpRequest, failure: Failure) -> Answer {
        let retry = |answer: Answer, secs: Option<u64>| match secs {
            Some(secs) => answer.with("Retry-After", secs.to_string()),
            None => answer,
        };
        match failure {
            Failure::Throttled { retry_after_secs } => {
                // The throttle scope names the caller's app when its token is known.
                let client_id = bearer(req)
                    .and_then(|token| state.access_tokens.get(token))
                    .map_or("00000000-0000-0000-0000-000000000000", |t| t.client_id.as_str());
                retry(throttled(state, client_id), retry_after_secs)
            }
            Failure::Unavailable { retry_after_secs } => retry(
                graph_error(503, "serviceNotAvailable", "Service unavailable, please try again later."),
                retry_after_secs,
            ),
            Failure::GatewayTimeout { retry_after_secs } => {
                retry(graph_error(504, "UnknownError", ""), retry_after_secs)
            }
            Failure::TokenExpired => invalid_token("Lifetime validation failed, the token is expired."),
            Failure::Forbidden => access_denied(),
            Failure::SyncStateNotFound => sync_state_not_found(),
            Failure::ResyncRequired => resync_required(),
            Failure::DeltaGone => {
                let kind = if req.path().starts_with("/v1.0/groups") { "groups" } else { "users" };
                self.gone(kind, None)
            }
        }
    }

    /// 410 Gone with the initial delta URL (empty `$deltatoken`) in `Location`.
    fn gone(&self, kind: &str, select: Option<&[String]>) -> Answer {
        let mut location = format!("{}/v1.0/{kind}/delta?", self.base_url);
        if let Some(select) = select {
            location.push_str(&format!("$select={}&", select.join(",")));
        }
        location.push_str("$deltatoken=");
        graph_error(
            410,
            "resyncRequired",
            "The delta token is no longer valid, and the app must reset the sync state.",
        )
        .with("Location", location)
    }
}

fn sync_state_not_found() -> Answer {
    graph_error(
        400,
        "syncStateNotFound",
        "The sync state generation is not found. The delta token is expired and data must be synchronized again.",
    )
}

fn resync_required() -> Answer {
    graph_error(
        400,
        "resyncRequired",
        "The delta token is no longer valid, and the app must reset the sync state.",
    )
}

fn throttled(state: &State, client_id: &str) -> Answer {
    graph_error(
        429,
        "TooManyRequests",
        &format!(
            "Too many requests from Identifier:{client_id} under category:throttle.aad.ags.appId.large. Please try again later."
        ),
    )
    .with("x-ms-throttle-scope", format!("Tenant_Application/Read/{client_id}/{}", state.tenant.tenant_id))
    .with("x-ms-throttle-information", "ResourceUnitLimitExceeded".into())
}

// ---------------------------------------------------------------------------------------------
// Microsoft identity platform: token and authorize (§1)
// ---------------------------------------------------------------------------------------------

/// Scopes the identity platform grants without consent.
const IDENTITY_SCOPES: [&str; 4] = ["openid", "profile", "email", "offline_access"];

fn tenant_not_found(tenant: &str) -> String {
    format!(
        "Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud. Check with your subscription administrator, this may happen if there are no active subscriptions for the tenant."
    )
}

fn app_not_found(client_id: &str, tenant: &Tenant) -> String {
    format!(
        "Application with identifier '{client_id}' was not found in the directory '{}'. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You may have sent your authentication request to the wrong tenant.",
        tenant.display_name
    )
}

fn consent_required(app: &AppRegistration) -> Answer {
    let mut answer = aad_error(
        400,
        "invalid_grant",
        65001,
        &format!(
            "The user or administrator has not consented to use the application with ID '{}'. Send an interactive authorization request for this user and resource.",
            app.client_id
        ),
    );
    if let Body::Json(body) = &mut answer.body {
        body["suberror"] = "consent_required".into();
    }
    answer
}

fn missing_parameter(name: &str) -> Answer {
    aad_error(
        400,
        "invalid_request",
        900144,
        &format!("The request body must contain the following parameter: '{name}'."),
    )
}

/// "2026-03-02T10:00:00.0000000Z", as AADSTS descriptions print instants.
fn aad_instant(secs: i64) -> String {
    chrono::DateTime::from_timestamp(secs, 0)
        .unwrap_or_default()
        .format("%Y-%m-%dT%H:%M:%S.0000000Z")
        .to_string()
}

impl Shared {
    fn is_own_tenant(state: &State, tenant: &str) -> bool {
        tenant.eq_ignore_ascii_case(&state.tenant.tenant_id)
            || state.tenant.domains.iter().any(|d| d.eq_ignore_ascii_case(tenant))
    }

    /// Delegated Graph permissions among `scope`: identity scopes dropped, resource prefix cut.
    fn graph_scopes(&self, scope: &str) -> Vec<String> {
        scope
            .split_whitespace()
            .filter(|s| !IDENTITY_SCOPES.iter().any(|i| i.eq_ignore_ascii_case(s)))
            .map(|s| {
                let base = format!("{}/", self.base_url);
                s.strip_prefix("https://graph.microsoft.com/")
                    .or_else(|| s.strip_prefix(&base))
                    .unwrap_or(s)
                    .to_string()
            })
            .collect()
    }

    fn is_graph_default_scope(&self, scope: &str) -> bool {
        let Some(resource) = scope.strip_suffix("/.default") else { return false };
        let resource = resource.trim_end_matches('/');
        resource.eq_ignore_ascii_case("https://graph.microsoft.com")
            || resource.eq_ignore_ascii_case(GRAPH_APP_ID)
            || resource == self.base_url
    }

    /// `POST /{tenant}/oauth2/v2.0/token`.
    fn token(&self, state: &mut State, req: &HttpRequest, tenant: &str, body: &[u8]) -> Answer {
        let own = Self::is_own_tenant(state, tenant);
        let multi = tenant == "common" || tenant == "organizations";
        if !own && !multi {
            return aad_error(400, "invalid_request", 90002, &tenant_not_found(tenant));
        }
        let form: Vec<(String, String)> = url::form_urlencoded::parse(body).into_owned().collect();
        let field = |name: &str| form.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str());
        let Some(grant) = field("grant_type") else { return missing_parameter("grant_type") };
        if !matches!(grant, "client_credentials" | "authorization_code" | "refresh_token") {
            return aad_error(
                400,
                "unsupported_grant_type",
                70003,
                &format!("The app requested an unsupported grant type '{grant}'."),
            );
        }
        if multi && grant == "client_credentials" {
            return aad_error(
                400,
                "invalid_request",
                50059,
                "No tenant-identifying information found in either the request or implied by any provided credentials.",
            );
        }
        // HTTP Basic carries the URL-encoded client id and secret.
        let basic = header(req, "authorization")
            .and_then(|v| v.get(..6).filter(|s| s.eq_ignore_ascii_case("basic ")).map(|_| &v[6..]))
            .and_then(|b| STANDARD.decode(b.trim()).ok())
            .and_then(|b| String::from_utf8(b).ok())
            .and_then(|pair| {
                let (id, secret) = pair.split_once(':')?;
                let decode =
                    |s: &str| percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned();
                Some((decode(id), decode(secret)))
            });
        let Some(client_id) =
            field("client_id").map(str::to_string).or_else(|| basic.as_ref().map(|b| b.0.clone()))
        else {
            return missing_parameter("client_id");
        };
        let Some(app) = state.find_app(&client_id).cloned() else {
            return aad_error(400, "unauthorized_client", 700016, &app_not_found(&client_id, &state.tenant));
        };
        let secret = field("client_secret").map(str::to_string).or_else(|| basic.map(|b| b.1));
        let audiences: Vec<String> = [tenant.to_string(), state.tenant.tenant_id.clone()]
            .into_iter()
            .chain(state.tenant.domains.iter().cloned())
            .map(|t| format!("{}/{t}/oauth2/v2.0/token", self.base_url))
            .collect();
        if let Err(answer) = self.authenticate_client(
            state,
            &app,
            secret.as_deref(),
            field("client_assertion_type"),
            field("client_assertion"),
            &audiences,
        ) {
            return answer;
        }
        match grant {
            "client_credentials" => {
                let scope = field("scope").unwrap_or("");
                let scopes: Vec<&str> = scope.split_whitespace().collect();
                if scopes.is_empty() {
                    return aad_error(
                        400,
                        "invalid_scope",
                        70011,
                        "The provided request must include a 'scope' input parameter.",
                    );
                }
                if scopes.len() != 1 || !self.is_graph_default_scope(scopes[0]) {
                    return aad_error(
                        400,
                        "invalid_scope",
                        70011,
                        &format!(
                            "The provided value for the input parameter 'scope' is not valid. The scope {scope} is not valid. The scope must be the resource identifier with the suffix '/.default'."
                        ),
                    );
                }
                let (access_token, expires_in) = self.mint(state, &app.client_id, app.roles.clone(), false);
                token_answer(json!({
                    "token_type": "Bearer",
                    "expires_in": expires_in,
                    "ext_expires_in": expires_in,
                    "access_token": access_token
                }))
            }
            "authorization_code" => {
                self.redeem_code(state, &app, field("code"), field("redirect_uri"), field("code_verifier"))
            }
            _ => self.redeem_refresh_token(state, &app, field("refresh_token"), field("scope")),
        }
    }

    /// Client authentication: a secret, or a certificate-signed client assertion (§1.2).
    fn authenticate_client(
        &self,
        state: &mut State,
        app: &AppRegistration,
        secret: Option<&str>,
        assertion_type: Option<&str>,
        assertion: Option<&str>,
        audiences: &[String],
    ) -> Result<(), Answer> {
        match (secret, assertion) {
            (Some(_), Some(_)) => Err(aad_error(
                400,
                "invalid_request",
                90023,
                "Only one client authentication method may be used: 'client_secret' or 'client_assertion'.",
            )),
            (None, None) => Err(aad_error(
                401,
                "invalid_client",
                7000218,
                "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
            )),
            (Some(secret), None) => match app.secrets.iter().find(|s| s.value == secret) {
                Some(s) if s.expired => Err(aad_error(
                    401,
                    "invalid_client",
                    7000222,
                    &format!(
                        "The provided client secret keys for app '{}' are expired. Visit the Azure portal to create new keys for your app: https://aka.ms/NewClientSecret, or consider using certificate credentials for added security: https://aka.ms/certCreds.",
                        app.client_id
                    ),
                )),
                Some(_) => Ok(()),
                None => Err(aad_error(
                    401,
                    "invalid_client",
                    7000215,
                    &format!(
                        "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '{}'.",
                        app.client_id
                    ),
                )),
            },
            (None, Some(assertion)) => {
                if assertion_type != Some(JWT_BEARER) {
                    return Err(aad_error(
                        400,
                        "invalid_request",
                        90023,
                        &format!(
                            "The client_assertion_type must be '{JWT_BEARER}', not '{}'.",
                            assertion_type.unwrap_or("")
                        ),
                    ));
                }
                self.verify_assertion(state, app, assertion, audiences)
            }
        }
    }

    /// Checks a client assertion: registered certificate by thumbprint, signature, `aud`,
    /// `iss` = `sub` = client id, time range, single-use `jti`.
    fn verify_assertion(
        &self,
        state: &mut State,
        app: &AppRegistration,
        assertion: &str,
        audiences: &[String],
    ) -> Result<(), Answer> {
        let invalid = |code: u32, message: &str| aad_error(401, "invalid_client", code, message);
        let Ok(header) = jsonwebtoken::decode_header(assertion) else {
            return Err(aad_error(400, "invalid_request", 50027, "JWT token is invalid or malformed."));
        };
        let presented = header.x5t_s256.clone().or_else(|| header.x5t.clone()).unwrap_or_default();
        let certificate = app.certificates.iter().find(|pem| {
            certificate_thumbprints(pem).is_some_and(|t| {
                header.x5t_s256.as_deref() == Some(t.sha256.as_str())
                    || header.x5t.as_deref() == Some(t.sha1.as_str())
            })
        });
        let Some(certificate) = certificate else {
            return Err(invalid(
                700027,
                &format!(
                    "The certificate with identifier used to sign the client assertion is not registered on application. [Reason - The key was not found., Thumbprint of key used by client: '{presented}', Please visit the Azure Portal, Graph Explorer or directly use MS Graph to see configured keys for app Id '{}'.]",
                    app.client_id
                ),
            ));
        };
        if !matches!(header.alg, Algorithm::RS256 | Algorithm::PS256) {
            return Err(invalid(
                700027,
                "Client assertion failed signature validation. [Reason - The signing algorithm is not supported.]",
            ));
        }
        let signature_failed = || {
            let thumbprint = certificate_thumbprints(certificate).map(|t| t.sha1_hex).unwrap_or_default();
            invalid(
                700027,
                &format!(
                    "Client assertion failed signature validation. [Reason - The key was found but the signature does not match., Thumbprint of key used by client: '{thumbprint}']"
                ),
            )
        };
        let key = DecodingKey::from_rsa_pem(certificate.as_bytes()).map_err(|_| signature_failed())?;
        let mut validation = Validation::new(header.alg);
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.required_spec_claims.clear();
        let claims = jsonwebtoken::decode::<Value>(assertion, &key, &validation)
            .map_err(|_| signature_failed())?
            .claims;

        let audience_ok = match claims.get("aud") {
            Some(Value::String(aud)) => audiences.iter().any(|a| a.eq_ignore_ascii_case(aud)),
            Some(Value::Array(auds)) => auds
                .iter()
                .filter_map(Value::as_str)
                .any(|aud| audiences.iter().any(|a| a.eq_ignore_ascii_case(aud))),
            _ => false,
        };
        if !audience_ok {
            return Err(invalid(
                700023,
                "Client assertion audience claim does not match Realm issuer. Review the documentation at https://aka.ms/certCredentials .",
            ));
        }
        let is_client = |claim: &str| {
            claims.get(claim).and_then(Value::as_str).is_some_and(|v| v.eq_ignore_ascii_case(&app.client_id))
        };
        if !is_client("iss") || !is_client("sub") {
            return Err(invalid(
                700021,
                "Client assertion application identifier doesn't match 'client_id' parameter. Review the documentation at https://aka.ms/certCredentials .",
            ));
        }
        let now = now_secs();
        let exp = claims.get("exp").and_then(Value::as_i64);
        let nbf = claims.get("nbf").and_then(Value::as_i64);
        // Five minutes of clock skew either way, as Entra allows.
        let in_range = exp.is_some_and(|exp| exp > now - 300) && nbf.is_none_or(|nbf| nbf <= now + 300);
        if !in_range {
            return Err(invalid(
                700024,
                &format!(
                    "Client assertion is not within its valid time range. Current time: {}, assertion valid from {}, expiry time of assertion {}. Review the documentation at https://aka.ms/certCredentials .",
                    aad_instant(now),
                    nbf.map_or_else(|| "(none)".to_string(), aad_instant),
                    exp.map_or_else(|| "(none)".to_string(), aad_instant)
                ),
            ));
        }
        match claims.get("jti").and_then(Value::as_str) {
            Some(jti) if !jti.is_empty() => {
                if !state.used_assertion_ids.insert(format!("{}/{jti}", app.client_id)) {
                    return Err(invalid(700027, "Client assertion contains a 'jti' that was already used. [Reason - Replay of a client assertion.]"));
                }
                Ok(())
            }
            _ => Err(invalid(
                700027,
                "Client assertion is missing the 'jti' claim. [Reason - The token is malformed.]",
            )),
        }
    }

    /// An access token (an HS256 JWT here; clients must not read it) with `roles`
    /// (application) or `scp` (delegated). Returns it and its `expires_in`.
    fn mint(
        &self,
        state: &mut State,
        client_id: &str,
        permissions: Vec<String>,
        delegated: bool,
    ) -> (String, u64) {
        let lifetime = state.access_token_lifetime;
        let now = now_secs();
        let mut claims = json!({
            "aud": "https://graph.microsoft.com",
            "iss": format!("https://sts.windows.net/{}/", state.tenant.tenant_id),
            "iat": now,
            "nbf": now,
            "exp": now + lifetime.as_secs() as i64,
            "appid": client_id,
            "tid": state.tenant.tenant_id,
            "uti": random_alnum(22),
            "ver": "1.0"
        });
        if delegated {
            claims["scp"] = permissions.join(" ").into();
        } else {
            claims["roles"] = json!(permissions);
        }
        let token = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(self.key.as_bytes()),
        )
        .unwrap_or_else(|_| random_alnum(64));
        state.access_tokens.insert(
            token.clone(),
            AccessToken { client_id: client_id.to_string(), permissions, expires: Instant::now() + lifetime },
        );
        (token, lifetime.as_secs())
    }

    /// Access token plus a new refresh token when `offline_access` was granted.
    fn delegated_tokens(
        &self,
        state: &mut State,
        app: &AppRegistration,
        scopes: Vec<String>,
        offline: bool,
    ) -> Answer {
        let (access_token, expires_in) = self.mint(state, &app.client_id, scopes.clone(), true);
        let mut body = json!({
            "token_type": "Bearer",
            "scope": scopes.iter().map(|s| format!("https://graph.microsoft.com/{s}")).collect::<Vec<_>>().join(" "),
            "expires_in": expires_in,
            "ext_expires_in": expires_in,
            "access_token": access_token
        });
        if offline {
            let refresh_token = format!("1.AXkA{}", random_alnum(120));
            state.refresh_tokens.insert(
                refresh_token.clone(),
                RefreshToken {
                    client_id: app.client_id.clone(),
                    scopes,
                    generation: state.session_generation,
                    issued: now_secs(),
                    failure: None,
                },
            );
            body["refresh_token"] = refresh_token.into();
        }
        token_answer(body)
    }

    fn redeem_code(
        &self,
        state: &mut State,
        app: &AppRegistration,
        code: Option<&str>,
        redirect_uri: Option<&str>,
        verifier: Option<&str>,
    ) -> Answer {
        let Some(code) = code else { return missing_parameter("code") };
        let invalid_code = || {
            aad_error(
                400,
                "invalid_grant",
                70000,
                "The provided value for the 'code' parameter is not valid.",
            )
        };
        let Some(issued) = state.codes.get_mut(code) else { return invalid_code() };
        if issued.client_id != app.client_id {
            return invalid_code();
        }
        if issued.redeemed {
            return aad_error(
                400,
                "invalid_grant",
                54005,
                "OAuth2 Authorization code was already redeemed, please retry with a new valid code or use an existing refresh token.",
            );
        }
        if issued.issued.elapsed() > Duration::from_secs(600) {
            return aad_error(
                400,
                "invalid_grant",
                70008,
                "The provided authorization code or refresh token has expired due to inactivity. Send a new interactive authorization request for this user and resource.",
            );
        }
        if redirect_uri != Some(issued.redirect_uri.as_str()) {
            return aad_error(
                400,
                "invalid_grant",
                50011,
                &format!(
                    "The redirect URI '{}' specified in the request does not match the redirect URI used to request the authorization code.",
                    redirect_uri.unwrap_or("")
                ),
            );
        }
        if let Some((method, challenge)) = &issued.challenge {
            let computed = match (method.as_str(), verifier) {
                ("S256", Some(v)) => Some(URL_SAFE_NO_PAD.encode(Sha256::digest(v.as_bytes()))),
                ("plain", Some(v)) => Some(v.to_string()),
                _ => None,
            };
            if computed.as_deref() != Some(challenge.as_str()) {
                return aad_error(
                    400,
                    "invalid_grant",
                    501481,
                    "The Code_Verifier does not match the code_challenge supplied in the authorization request.",
                );
            }
        }
        issued.redeemed = true;
        let scopes = issued.scopes.clone();
        let offline = scopes.iter().any(|s| s == "offline_access");
        let graph: Vec<String> =
            scopes.into_iter().filter(|s| !IDENTITY_SCOPES.contains(&s.as_str())).collect();
        self.delegated_tokens(state, app, graph, offline)
    }

    fn redeem_refresh_token(
        &self,
        state: &mut State,
        app: &AppRegistration,
        refresh_token: Option<&str>,
        scope: Option<&str>,
    ) -> Answer {
        let Some(refresh_token) = refresh_token else { return missing_parameter("refresh_token") };
        let Some(token) = state.refresh_tokens.get(refresh_token).filter(|t| t.client_id == app.client_id)
        else {
            return aad_error(
                400,
                "invalid_grant",
                9002313,
                "Invalid request. Request is malformed or invalid.",
            );
        };
        let issued = aad_instant(token.issued);
        if token.generation < state.session_generation {
            return aad_error(
                400,
                "invalid_grant",
                50173,
                &format!(
                    "The provided grant has expired due to it being revoked, a fresh auth token is needed. The user might have changed or reset their password. The grant was issued on '{issued}' and the TokensValidFrom date (before which tokens are not valid) for this user is '{}'.",
                    aad_instant(now_secs())
                ),
            );
        }
        match token.failure.or(state.refresh_failure) {
            Some(RefreshFailure::Inactive) => {
                return aad_error(
                    400,
                    "invalid_grant",
                    700082,
                    &format!("The refresh token has expired due to inactivity. The token was issued on {issued} and was inactive for 90.00:00:00."),
                )
            }
            Some(RefreshFailure::SignInFrequency) => {
                return aad_error(
                    400,
                    "invalid_grant",
                    70043,
                    &format!("The refresh token has expired or is invalid due to sign-in frequency checks by conditional access. The token was issued on {issued} and the maximum allowed lifetime for this request is 3600."),
                )
            }
            Some(RefreshFailure::MfaRequired) => {
                return aad_error(
                    400,
                    "invalid_grant",
                    50076,
                    &format!("Due to a configuration change made by your administrator, or because you moved to a new location, you must use multi-factor authentication to access '{GRAPH_APP_ID}'."),
                )
            }
            None => {}
        }
        let requested = match scope {
            Some(scope) => self.graph_scopes(scope),
            None => token.scopes.clone(),
        };
        let offline = scope.is_none_or(|s| s.split_whitespace().any(|s| s == "offline_access"));
        if requested.iter().any(|s| !app.delegated_scopes.iter().any(|c| c.eq_ignore_ascii_case(s))) {
            return consent_required(app);
        }
        // The old refresh token stays valid; the client should keep the newest one (§1.4).
        self.delegated_tokens(state, app, requested, offline)
    }

    /// `GET /{tenant}/oauth2/v2.0/authorize`: the admin is taken as signed in already, so a
    /// good request redirects at once with a code.
    fn authorize(&self, state: &mut State, req: &HttpRequest, tenant: &str) -> Answer {
        let page = |code: u32, message: &str| Answer {
            status: StatusCode::BAD_REQUEST,
            headers: Vec::new(),
            body: Body::Html(format!(
                "<html><body><h1>Sign in</h1><p>AADSTS{code}: {}</p></body></html>",
                message.replace('<', "&lt;")
            )),
        };
        if !Self::is_own_tenant(state, tenant) && tenant != "common" && tenant != "organizations" {
            return page(90002, &tenant_not_found(tenant));
        }
        let query: Vec<(String, String)> =
            url::form_urlencoded::parse(req.query_string().as_bytes()).into_owned().collect();
        let field = |name: &str| query.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str());
        let Some(client_id) = field("client_id") else {
            return page(900144, "The request body must contain the following parameter: 'client_id'.");
        };
        let Some(app) = state.find_app(client_id).cloned() else {
            return page(700016, &app_not_found(client_id, &state.tenant));
        };
        let redirect_uri = field("redirect_uri").unwrap_or("");
        if !app.redirect_uris.iter().any(|r| r == redirect_uri) {
            return page(
                50011,
                &format!(
                    "The redirect URI '{redirect_uri}' specified in the request does not match the redirect URIs configured for the application '{client_id}'. Make sure the redirect URI sent in the request matches one added to your application in the Azure portal."
                ),
            );
        }
        let client_state = field("state");
        let redirect = |pairs: Vec<(&str, String)>| {
            let mut serializer = url::form_urlencoded::Serializer::new(String::new());
            for (name, value) in pairs {
                serializer.append_pair(name, &value);
            }
            if let Some(s) = client_state {
                serializer.append_pair("state", s);
            }
            let separator = if redirect_uri.contains('?') { '&' } else { '?' };
            Answer {
                status: StatusCode::FOUND,
                headers: vec![("Location", format!("{redirect_uri}{separator}{}", serializer.finish()))],
                body: Body::Empty,
            }
        };
        let error = |error: &str, code: u32, message: &str| {
            redirect(vec![
                ("error", error.to_string()),
                ("error_description", format!("AADSTS{code}: {message}")),
            ])
        };
        if field("response_type") != Some("code") {
            return error(
                "unsupported_response_type",
                700054,
                &format!(
                    "response_type '{}' is not enabled for the application.",
                    field("response_type").unwrap_or("")
                ),
            );
        }
        let scope = field("scope").unwrap_or("");
        let graph = self.graph_scopes(scope);
        if graph.is_empty() && !scope.split_whitespace().any(|s| s == "openid") {
            return error(
                "invalid_request",
                900144,
                "The request body must contain the following parameter: 'scope'.",
            );
        }
        if graph.iter().any(|s| !app.delegated_scopes.iter().any(|c| c.eq_ignore_ascii_case(s))) {
            return error(
                "consent_required",
                65001,
                &format!("The user or administrator has not consented to use the application with ID '{client_id}'. Send an interactive authorization request for this user and resource."),
            );
        }
        let challenge = match (field("code_challenge"), field("code_challenge_method")) {
            (Some(challenge), method @ (None | Some("S256") | Some("plain"))) => {
                Some((method.unwrap_or("plain").to_string(), challenge.to_string()))
            }
            (Some(_), Some(method)) => {
                return error(
                    "invalid_request",
                    501491,
                    &format!("Invalid code_challenge_method '{method}'."),
                )
            }
            (None, _) => None,
        };
        let mut scopes = graph;
        if scope.split_whitespace().any(|s| s == "offline_access") {
            scopes.push("offline_access".into());
        }
        let code = format!("1.AXkA{}", random_alnum(100));
        state.codes.insert(
            code.clone(),
            AuthorizationCode {
                client_id: app.client_id.clone(),
                redirect_uri: redirect_uri.to_string(),
                scopes,
                challenge,
                issued: Instant::now(),
                redeemed: false,
            },
        );
        redirect(vec![("code", code), ("session_state", uuid::Uuid::new_v4().to_string())])
    }
}

fn token_answer(body: Value) -> Answer {
    Answer::json(200, body)
        .with("Cache-Control", "no-store, no-cache".into())
        .with("Pragma", "no-cache".into())
}

// ---------------------------------------------------------------------------------------------
// Microsoft Graph v1.0 (§2-§7)
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq)]
enum Route {
    Users,
    UsersDelta,
    User(String),
    UserManager(String),
    Groups,
    GroupsDelta,
    Group(String),
    Members { group: String, transitive: bool, cast: Option<Cast> },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cast {
    Kind(ObjectKind),
    /// A member type the fake never holds (`orgContact`, `servicePrincipal`): valid, empty.
    Absent,
}

impl Route {
    fn parse(rest: &[&str]) -> Result<Route, Answer> {
        let segment_error = |s: &str| bad_request(&format!("Resource not found for the segment '{s}'."));
        let delta = |s: &str| s == "delta" || s == "delta()";
        Ok(match rest {
            ["users"] => Route::Users,
            ["users", d] if delta(d) => Route::UsersDelta,
            ["users", id] => Route::User(id.to_string()),
            ["users", id, "manager"] => Route::UserManager(id.to_string()),
            ["users", _, other, ..] => return Err(segment_error(other)),
            ["groups"] => Route::Groups,
            ["groups", d] if delta(d) => Route::GroupsDelta,
            ["groups", id] => Route::Group(id.to_string()),
            ["groups", id, list, tail @ ..] if *list == "members" || *list == "transitiveMembers" => {
                let cast = match tail {
                    [] => None,
                    [cast] => Some(match *cast {
                        "microsoft.graph.user" => Cast::Kind(ObjectKind::User),
                        "microsoft.graph.group" => Cast::Kind(ObjectKind::Group),
                        "microsoft.graph.device" => Cast::Kind(ObjectKind::Device),
                        "microsoft.graph.orgContact" | "microsoft.graph.servicePrincipal" => Cast::Absent,
                        other if other.starts_with("microsoft.graph.") => {
                            return Err(unsupported_query(&format!(
                                "The type '{other}' is not a valid member type for this navigation property."
                            )))
                        }
                        other => return Err(segment_error(other)),
                    }),
                    [_, other, ..] => return Err(segment_error(other)),
                };
                Route::Members { group: id.to_string(), transitive: *list == "transitiveMembers", cast }
            }
            ["groups", _, other, ..] => return Err(segment_error(other)),
            [] => return Err(segment_error("")),
            [other, ..] => return Err(segment_error(other)),
        })
    }

    /// Any one of these permissions lets the caller in.
    fn permissions(&self) -> &'static [&'static str] {
        match self {
            Route::Users | Route::UsersDelta | Route::User(_) | Route::UserManager(_) => USER_READERS,
            _ => GROUP_READERS,
        }
    }

    /// Resource units (§6) before the query adjustments.
    fn base_cost(&self) -> i64 {
        match self {
            Route::Users => 2,
            Route::Members { transitive: false, .. } => 3,
            Route::Members { transitive: true, .. } => 5,
            _ => 1,
        }
    }
}

/// The query string as pairs, in order, checked for options Graph refuses.
struct Query {
    pairs: Vec<(String, String)>,
}

const QUERY_OPTIONS: [&str; 10] = [
    "$select",
    "$top",
    "$filter",
    "$count",
    "$expand",
    "$orderby",
    "$search",
    "$skiptoken",
    "$deltatoken",
    "$format",
];

impl Query {
    fn parse(raw: &str) -> Result<Query, Answer> {
        let pairs: Vec<(String, String)> = url::form_urlencoded::parse(raw.as_bytes()).into_owned().collect();
        for (name, _) in &pairs {
            let lower = name.to_ascii_lowercase();
            if lower == "deltatoken" || lower == "skiptoken" {
                return Err(bad_request(&format!("Unrecognized query argument specified: '{name}'.")));
            }
            if lower == "$skip" {
                return Err(bad_request("'$skip' is not supported by the service."));
            }
            if lower.starts_with('$') && !QUERY_OPTIONS.contains(&lower.as_str()) {
                return Err(bad_request(&format!("Query option '{name}' is not allowed.")));
            }
        }
        Ok(Query { pairs })
    }

    /// A system query option, with or without its `$` (tokens only with it).
    fn get(&self, option: &str) -> Option<&str> {
        let token = option.ends_with("token");
        self.pairs
            .iter()
            .find(|(n, _)| match n.strip_prefix('$') {
                Some(bare) => bare.eq_ignore_ascii_case(option),
                None => !token && n.eq_ignore_ascii_case(option),
            })
            .map(|(_, v)| v.as_str())
    }

    fn count(&self) -> bool {
        self.get("count").is_some_and(|v| v.eq_ignore_ascii_case("true"))
    }

    /// `$top`, default 100, 1..=999 (§2).
    fn top(&self) -> Result<usize, Answer> {
        match self.get("top") {
            None => Ok(100),
            Some(raw) => match raw.trim().parse::<i64>() {
                Ok(n) if (1..=999).contains(&n) => Ok(n as usize),
                _ => Err(unsupported_query(&format!(
                    "Invalid page size specified: '{raw}'. Must be between 1 and 999 inclusive."
                ))),
            },
        }
    }

    /// The query for a nextLink: every option but `$skiptoken`, then the new one.
    fn with_skiptoken(&self, token: &str) -> String {
        let escape = |v: &str| percent_encoding::utf8_percent_encode(v, QUERY_VALUE).to_string();
        let mut parts: Vec<String> = self
            .pairs
            .iter()
            .filter(|(n, _)| !n.eq_ignore_ascii_case("$skiptoken"))
            .map(|(n, v)| format!("{}={}", escape(n), escape(v)))
            .collect();
        parts.push(format!("$skiptoken={token}"));
        parts.join("&")
    }
}

/// Query values in links: everything but unreserved characters and OData's `$ , ( ) ' : =` is
/// escaped.
const QUERY_VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b'$')
    .remove(b',')
    .remove(b'(')
    .remove(b')')
    .remove(b'\'')
    .remove(b':')
    .remove(b'=');

/// Where a listing's next page starts; sealed into `$skiptoken`.
#[derive(Debug, Serialize, Deserialize)]
struct ListCursor {
    /// The listing it was issued for, e.g. "users" or "members:{id}".
    l: String,
    /// Last id of the previous page (id-ordered listings).
    a: Option<String>,
    /// Items already returned (ordered or searched listings).
    o: usize,
}

/// Where a delta round stands; sealed into `$skiptoken` (mid-round) or `$deltatoken`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct DeltaCursor {
    r: Resource,
    /// `$select` of the first request.
    s: Option<Vec<String>>,
    /// `$filter=id eq …` ids of the first request.
    f: Option<Vec<String>>,
    /// Changes after this sequence number; None in the initial round.
    since: Option<u64>,
    /// The sequence number when the round started: the next round's `since`.
    until: u64,
    /// Last object fully returned.
    a: Option<String>,
    /// A group whose members continue on the next page: (group id, last member returned).
    p: Option<(String, String)>,
    /// `expire_delta_tokens` generation.
    e: u64,
    /// Past the round's empty first page.
    w: bool,
}

fn has_any(granted: &[String], wanted: &[&str]) -> bool {
    granted.iter().any(|g| wanted.iter().any(|w| g.eq_ignore_ascii_case(w)))
}

impl Shared {
    fn seal(&self, payload: &impl Serialize) -> String {
        let text = URL_SAFE_NO_PAD.encode(serde_json::to_vec(payload).unwrap_or_default());
        let check = hex::encode(&Sha256::digest(format!("{}{text}", self.key).as_bytes())[..8]);
        format!("{text}{check}")
    }

    fn open<T: for<'de> Deserialize<'de>>(&self, token: &str) -> Option<T> {
        let split = token.len().checked_sub(16).filter(|&at| at > 0 && token.is_char_boundary(at))?;
        let (text, check) = token.split_at(split);
        let expected = hex::encode(&Sha256::digest(format!("{}{text}", self.key).as_bytes())[..8]);
        if check != expected {
            return None;
        }
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(text).ok()?).ok()
    }

    fn graph(&self, state: &mut State, req: &HttpRequest, rest: &[&str]) -> Answer {
        let token = bearer(req).unwrap_or("");
        if token.is_empty() {
            return invalid_token("Access token is empty.");
        }
        let (client_id, permissions) = match state.access_tokens.get(token) {
            None if !token.contains('.') => {
                return invalid_token("IDX14100: JWT is not well formed, there are no dots (.).")
            }
            None => return invalid_token("Access token validation failure. Invalid signature."),
            Some(t) if t.expires <= Instant::now() => {
                return invalid_token("Lifetime validation failed, the token is expired.")
            }
            Some(t) => (t.client_id.clone(), t.permissions.clone()),
        };
        let route = match Route::parse(rest) {
            Ok(route) => route,
            Err(answer) => return answer,
        };
        let query = match Query::parse(req.query_string()) {
            Ok(query) => query,
            Err(answer) => return answer,
        };
        let mut cost = route.base_cost();
        if query.get("select").is_some() {
            cost -= 1;
        }
        if query.get("expand").is_some() {
            cost += 1;
        }
        if query.top().is_ok_and(|top| top < 20) {
            cost -= 1;
        }
        let cost = cost.max(1) as u32;
        let (used, limit) = match state.charge(&client_id, cost) {
            Ok(charged) => charged,
            Err(retry_after) => {
                return throttled(state, &client_id)
                    .with("Retry-After", retry_after.to_string())
                    .with("x-ms-resource-unit", cost.to_string())
            }
        };
        let answer = if has_any(&permissions, route.permissions()) {
            let caller = Caller { permissions, advanced: is_eventual(req), minimal: prefers_minimal(req) };
            let path = req.path();
            self.serve(state, &caller, &route, &query, path)
        } else {
            access_denied()
        };
        let mut answer = answer.with("x-ms-resource-unit", cost.to_string());
        if u64::from(used) * 10 > u64::from(limit) * 8 {
            let percentage = (f64::from(used) / f64::from(limit)).min(1.8);
            answer = answer.with("x-ms-throttle-limit-percentage", format!("{percentage:.1}"));
        }
        answer
    }

    fn serve(&self, state: &State, caller: &Caller, route: &Route, query: &Query, path: &str) -> Answer {
        let result = match route {
            Route::Users => self.list_users(state, caller, query, path),
            Route::Groups => self.list_groups(state, caller, query, path),
            Route::User(id) => self.get_user(state, query, id),
            Route::UserManager(id) => self.get_manager(state, query, id),
            Route::Group(id) => self.get_group(state, query, id),
            Route::Members { group, transitive, cast } => {
                self.list_members(state, caller, query, path, group, *transitive, *cast)
            }
            Route::UsersDelta => self.delta(state, caller, query, Resource::User),
            Route::GroupsDelta => self.delta(state, caller, query, Resource::Group),
        };
        result.unwrap_or_else(|answer| answer)
    }

    fn context(&self, what: &str, select: Option<&[String]>) -> String {
        match select {
            Some(select) => format!("{}/v1.0/$metadata#{what}({})", self.base_url, select.join(",")),
            None => format!("{}/v1.0/$metadata#{what}", self.base_url),
        }
    }

    /// `$select` for `resource`: canonical names, or None for the default properties.
    fn select(
        &self,
        tenant: &Tenant,
        query: &Query,
        resource: Resource,
        use_: SelectUse,
    ) -> Result<Option<Vec<String>>, Answer> {
        let Some(raw) = query.get("select") else { return Ok(None) };
        let mut names: Vec<String> = Vec::new();
        for name in raw.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            let canonical_name = if use_ == SelectUse::Delta
                && resource == Resource::User
                && name.eq_ignore_ascii_case("manager")
            {
                Some("manager".to_string())
            } else if use_ == SelectUse::Delta
                && resource == Resource::Group
                && name.eq_ignore_ascii_case("members")
            {
                Some("members".to_string())
            } else if resource == Resource::User
                && SINGLE_USER_ONLY.iter().any(|s| s.eq_ignore_ascii_case(name))
            {
                if use_ != SelectUse::Single {
                    return Err(graph_error(
                        501,
                        "NotImplemented",
                        "This operation target is not yet supported.",
                    ));
                }
                SINGLE_USER_ONLY.iter().find(|s| s.eq_ignore_ascii_case(name)).map(|s| s.to_string())
            } else if use_ == SelectUse::Members {
                canonical(Resource::User, tenant, name)
                    .or_else(|| canonical(Resource::Group, tenant, name))
                    .or_else(|| {
                        DEVICE_PROPERTIES.iter().find(|p| p.eq_ignore_ascii_case(name)).map(|p| p.to_string())
                    })
            } else {
                canonical(resource, tenant, name)
            };
            match canonical_name {
                Some(n) if !names.contains(&n) => names.push(n),
                Some(_) => {}
                None => {
                    return Err(bad_request(&format!(
                        "Could not find a property named '{name}' on type '{}'.",
                        resource.type_name()
                    )))
                }
            }
        }
        Ok(Some(names))
    }

    fn list_cursor(&self, query: &Query, listing: &str) -> Result<ListCursor, Answer> {
        match query.get("skiptoken") {
            None => Ok(ListCursor { l: listing.to_string(), a: None, o: 0 }),
            Some(token) => self
                .open::<ListCursor>(token)
                .filter(|c| c.l == listing)
                .ok_or_else(|| bad_request("The skip token is invalid or was issued for another query.")),
        }
    }

    /// A collection page: context, count on the first page, nextLink, value.
    fn collection(
        &self,
        context: String,
        count: Option<usize>,
        next: Option<(String, &Query, ListCursor)>,
        value: Vec<Value>,
    ) -> Answer {
        let mut body = Map::new();
        body.insert("@odata.context".into(), context.into());
        if let Some(count) = count {
            body.insert("@odata.count".into(), count.into());
        }
        if let Some((path, query, cursor)) = next {
            let token = self.seal(&cursor);
            body.insert(
                "@odata.nextLink".into(),
                format!("{}{path}?{}", self.base_url, query.with_skiptoken(&token)).into(),
            );
        }
        body.insert("value".into(), Value::Array(value));
        Answer::json(200, Value::Object(body))
    }

    fn list_users(
        &self,
        state: &State,
        caller: &Caller,
        query: &Query,
        path: &str,
    ) -> Result<Answer, Answer> {
        let tenant = &state.tenant;
        let select = self.select(tenant, query, Resource::User, SelectUse::List)?;
        let expand = parse_expand(tenant, query)?;
        let mut top = query.top()?;
        if expand.is_some() {
            // $expand on directory objects returns at most 100 objects per page (§3).
            top = top.min(100);
        }
        let listing = ListingOptions::parse(tenant, query, caller, Resource::User)?;
        let cursor = self.list_cursor(query, "users")?;
        let first_page = query.get("skiptoken").is_none();
        let matches = |u: &GraphUser| listing.matches(&|name| user_field(u, name));
        let (page, next): (Vec<&GraphUser>, Option<ListCursor>) = if listing.ordered() {
            let mut all: Vec<&GraphUser> = tenant.users.values().filter(|u| matches(u)).collect();
            listing.sort(&mut all, user_field);
            let page: Vec<&GraphUser> = all.iter().skip(cursor.o).take(top).copied().collect();
            let more = cursor.o + page.len() < all.len();
            let next = more.then(|| ListCursor { l: "users".into(), a: None, o: cursor.o + page.len() });
            (page, next)
        } else {
            let range = tenant.users.range::<String, _>((
                cursor.a.as_ref().map_or(Bound::Unbounded, Bound::Excluded),
                Bound::Unbounded,
            ));
            let (page, more) = take_page(range.map(|(_, u)| u).filter(|u| matches(u)), top);
            let next = page.last().filter(|_| more).map(|u| ListCursor {
                l: "users".into(),
                a: Some(u.id.clone()),
                o: 0,
            });
            (page, next)
        };
        let count =
            (first_page && query.count()).then(|| tenant.users.values().filter(|u| matches(u)).count());
        let value = page
            .iter()
            .map(|u| {
                let mut item = user_json(tenant, u, select.as_deref());
                if let Some(manager_select) = &expand {
                    if let Some(manager) = u.manager_id.as_ref().and_then(|m| tenant.users.get(m)) {
                        let mut m = Map::new();
                        m.insert("@odata.type".into(), ObjectKind::User.odata_type().into());
                        m.extend(user_json(tenant, manager, manager_select.as_deref()));
                        item.insert("manager".into(), Value::Object(m));
                    }
                }
                Value::Object(item)
            })
            .collect();
        let context = self.context("users", select.as_deref());
        Ok(self.collection(context, count, next.map(|c| (path.to_string(), query, c)), value))
    }

    fn list_groups(
        &self,
        state: &State,
        caller: &Caller,
        query: &Query,
        path: &str,
    ) -> Result<Answer, Answer> {
        let tenant = &state.tenant;
        let select = self.select(tenant, query, Resource::Group, SelectUse::List)?;
        if let Some(expand) = query.get("expand") {
            return Err(bad_request(&format!(
                "Could not find a navigation property named '{expand}' on type 'microsoft.graph.group' that this fake can expand."
            )));
        }
        let top = query.top()?;
        let listing = ListingOptions::parse(tenant, query, caller, Resource::Group)?;
        let cursor = self.list_cursor(query, "groups")?;
        let first_page = query.get("skiptoken").is_none();
        let matches = |g: &GraphGroup| listing.matches(&|name| group_value(g, name).unwrap_or(Value::Null));
        let (page, next): (Vec<&GraphGroup>, Option<ListCursor>) = if listing.ordered() {
            let mut all: Vec<&GraphGroup> = tenant.groups.values().filter(|g| matches(g)).collect();
            listing.sort(&mut all, |g, name| group_value(g, name).unwrap_or(Value::Null));
            let page: Vec<&GraphGroup> = all.iter().skip(cursor.o).take(top).copied().collect();
            let more = cursor.o + page.len() < all.len();
            (page.clone(), more.then(|| ListCursor { l: "groups".into(), a: None, o: cursor.o + page.len() }))
        } else {
            let range = tenant.groups.range::<String, _>((
                cursor.a.as_ref().map_or(Bound::Unbounded, Bound::Excluded),
                Bound::Unbounded,
            ));
            let (page, more) = take_page(range.map(|(_, g)| g).filter(|g| matches(g)), top);
            let next = page.last().filter(|_| more).map(|g| ListCursor {
                l: "groups".into(),
                a: Some(g.id.clone()),
                o: 0,
            });
            (page, next)
        };
        let count =
            (first_page && query.count()).then(|| tenant.groups.values().filter(|g| matches(g)).count());
        let value = page.iter().map(|g| Value::Object(group_json(g, select.as_deref()))).collect();
        let context = self.context("groups", select.as_deref());
        Ok(self.collection(context, count, next.map(|c| (path.to_string(), query, c)), value))
    }

    fn find_user<'t>(tenant: &'t Tenant, id: &str) -> Option<&'t GraphUser> {
        tenant
            .users
            .get(id)
            .or_else(|| tenant.users.values().find(|u| u.user_principal_name.eq_ignore_ascii_case(id)))
    }

    fn get_user(&self, state: &State, query: &Query, id: &str) -> Result<Answer, Answer> {
        let tenant = &state.tenant;
        let select = self.select(tenant, query, Resource::User, SelectUse::Single)?;
        let user = Self::find_user(tenant, id).ok_or_else(|| not_found(id))?;
        let mut body = Map::new();
        body.insert(
            "@odata.context".into(),
            format!("{}/$entity", self.context("users", select.as_deref())).into(),
        );
        body.extend(user_json(tenant, user, select.as_deref()));
        Ok(Answer::json(200, Value::Object(body)))
    }

    fn get_manager(&self, state: &State, query: &Query, id: &str) -> Result<Answer, Answer> {
        let tenant = &state.tenant;
        let select = self.select(tenant, query, Resource::User, SelectUse::Single)?;
        let user = Self::find_user(tenant, id).ok_or_else(|| not_found(id))?;
        let manager =
            user.manager_id.as_ref().and_then(|m| tenant.users.get(m)).ok_or_else(|| not_found("manager"))?;
        let mut body = Map::new();
        body.insert(
            "@odata.context".into(),
            format!("{}/v1.0/$metadata#directoryObjects/$entity", self.base_url).into(),
        );
        body.insert("@odata.type".into(), ObjectKind::User.odata_type().into());
        body.extend(user_json(tenant, manager, select.as_deref()));
        Ok(Answer::json(200, Value::Object(body)))
    }

    fn get_group(&self, state: &State, query: &Query, id: &str) -> Result<Answer, Answer> {
        let tenant = &state.tenant;
        let select = self.select(tenant, query, Resource::Group, SelectUse::Single)?;
        let group = tenant.groups.get(id).ok_or_else(|| not_found(id))?;
        let mut body = Map::new();
        body.insert(
            "@odata.context".into(),
            format!("{}/$entity", self.context("groups", select.as_deref())).into(),
        );
        body.extend(group_json(group, select.as_deref()));
        Ok(Answer::json(200, Value::Object(body)))
    }

    #[allow(clippy::too_many_arguments)]
    fn list_members(
        &self,
        state: &State,
        caller: &Caller,
        query: &Query,
        path: &str,
        group: &str,
        transitive: bool,
        cast: Option<Cast>,
    ) -> Result<Answer, Answer> {
        let tenant = &state.tenant;
        if !tenant.groups.contains_key(group) {
            return Err(not_found(group));
        }
        let select = self.select(tenant, query, Resource::User, SelectUse::Members)?;
        let top = query.top()?;
        if query.get("filter").is_some() || query.get("search").is_some() || query.get("orderby").is_some() {
            return Err(unsupported_query(
                "This fake supports only $select, $top and $count on member lists.",
            ));
        }
        if query.count() && !caller.advanced {
            return Err(count_needs_eventual());
        }
        let listing =
            format!("{}:{group}:{cast:?}", if transitive { "transitiveMembers" } else { "members" });
        let cursor = self.list_cursor(query, &listing)?;
        // Direct members are borrowed: a big group is read page after page.
        let empty = BTreeSet::new();
        let all: std::borrow::Cow<'_, BTreeSet<String>> = if transitive {
            std::borrow::Cow::Owned(tenant.transitive_members(group))
        } else {
            std::borrow::Cow::Borrowed(tenant.members.get(group).unwrap_or(&empty))
        };
        let wanted = |id: &String| match cast {
            None => tenant.kind_of(id).is_some(),
            Some(Cast::Kind(kind)) => tenant.kind_of(id) == Some(kind),
            Some(Cast::Absent) => false,
        };
        let range = all.range::<String, _>((
            cursor.a.as_ref().map_or(Bound::Unbounded, Bound::Excluded),
            Bound::Unbounded,
        ));
        let (page, more) = take_page(range.filter(|id| wanted(id)), top);
        let next = page.last().filter(|_| more).map(|id| ListCursor {
            l: listing.clone(),
            a: Some((*id).clone()),
            o: 0,
        });
        let readable = |kind: ObjectKind| match kind {
            ObjectKind::User => {
                has_any(&caller.permissions, USER_READERS)
                    || has_any(&caller.permissions, &["User.ReadBasic.All"])
            }
            ObjectKind::Group => has_any(&caller.permissions, GROUP_READERS),
            ObjectKind::Device => has_any(&caller.permissions, DEVICE_READERS),
        };
        let value =
            page.iter().filter_map(|id| member_json(tenant, id, select.as_deref(), readable)).collect();
        let count = (query.get("skiptoken").is_none() && query.count())
            .then(|| all.iter().filter(|id| wanted(id)).count());
        let what = match cast {
            Some(Cast::Kind(ObjectKind::User)) => "users",
            Some(Cast::Kind(ObjectKind::Group)) => "groups",
            Some(Cast::Kind(ObjectKind::Device)) => "devices",
            _ => "directoryObjects",
        };
        let context = self.context(what, select.as_deref());
        Ok(self.collection(context, count, next.map(|c| (path.to_string(), query, c)), value))
    }

    /// `/users/delta` and `/groups/delta` (§5).
    fn delta(
        &self,
        state: &State,
        caller: &Caller,
        query: &Query,
        resource: Resource,
    ) -> Result<Answer, Answer> {
        let tenant = &state.tenant;
        let kind = match resource {
            Resource::User => "users",
            Resource::Group => "groups",
        };
        for option in ["top", "orderby", "expand", "search", "count"] {
            if query.get(option).is_some() {
                return Err(unsupported_query(&format!(
                    "The query option '${option}' is not supported with delta queries."
                )));
            }
        }
        let expired = |cursor: &DeltaCursor| match state.expired_delta {
            ExpiredDelta::SyncStateNotFound => sync_state_not_found(),
            ExpiredDelta::ResyncRequired => resync_required(),
            ExpiredDelta::Gone => self.gone(kind, cursor.s.as_deref()),
        };
        let fresh = |select: Option<Vec<String>>, ids: Option<Vec<String>>| DeltaCursor {
            r: resource,
            s: select,
            f: ids,
            since: None,
            until: tenant.changes.seq,
            a: None,
            p: None,
            e: state.delta_epoch,
            w: false,
        };
        let mut cursor = if let Some(token) = query.get("deltatoken") {
            if token.eq_ignore_ascii_case("latest") {
                let select = self.select(tenant, query, resource, SelectUse::Delta)?;
                let mut latest = fresh(select, None);
                latest.since = Some(tenant.changes.seq);
                return Ok(self.delta_page(kind, Vec::new(), None, &latest));
            }
            if token.is_empty() {
                // The initial round again, as a 410's Location asks.
                fresh(self.select(tenant, query, resource, SelectUse::Delta)?, None)
            } else {
                let old = self
                    .open::<DeltaCursor>(token)
                    .filter(|c| c.r == resource && c.since.is_some())
                    .ok_or_else(|| {
                        bad_request("The delta token is invalid or was issued for another query.")
                    })?;
                if old.e != state.delta_epoch {
                    return Err(expired(&old));
                }
                DeltaCursor { until: tenant.changes.seq, a: None, p: None, w: false, ..old }
            }
        } else if let Some(token) = query.get("skiptoken") {
            let cursor = self
                .open::<DeltaCursor>(token)
                .filter(|c| c.r == resource)
                .ok_or_else(|| bad_request("The skip token is invalid or was issued for another query."))?;
            if cursor.e != state.delta_epoch {
                return Err(expired(&cursor));
            }
            cursor
        } else {
            let select = self.select(tenant, query, resource, SelectUse::Delta)?;
            let ids = match query.get("filter") {
                None => None,
                Some(text) => Some(delta_filter_ids(tenant, text, resource)?),
            };
            fresh(select, ids)
        };
        if tenant.paging.empty_first_delta_page && !cursor.w {
            cursor.w = true;
            return Ok(self.delta_page(kind, Vec::new(), Some(cursor.clone()), &cursor));
        }
        let (items, next) = match resource {
            Resource::User => users_delta_page(tenant, &cursor, caller.minimal),
            Resource::Group => groups_delta_page(tenant, &cursor, caller.minimal),
        };
        Ok(self.delta_page(kind, items, next, &cursor))
    }

    /// A delta page: nextLink when the round goes on, else deltaLink for the next round.
    fn delta_page(
        &self,
        kind: &str,
        items: Vec<Value>,
        next: Option<DeltaCursor>,
        cursor: &DeltaCursor,
    ) -> Answer {
        let mut body = Map::new();
        body.insert("@odata.context".into(), format!("{}/v1.0/$metadata#{kind}", self.base_url).into());
        match next {
            Some(next) => {
                let link = format!("{}/v1.0/{kind}/delta?$skiptoken={}", self.base_url, self.seal(&next));
                body.insert("@odata.nextLink".into(), link.into());
            }
            None => {
                let done = DeltaCursor {
                    since: Some(cursor.until.max(cursor.since.unwrap_or(0))),
                    until: 0,
                    a: None,
                    p: None,
                    w: false,
                    ..cursor.clone()
                };
                let link = format!("{}/v1.0/{kind}/delta?$deltatoken={}", self.base_url, self.seal(&done));
                body.insert("@odata.deltaLink".into(), link.into());
            }
        }
        body.insert("value".into(), Value::Array(items));
        Answer::json(200, Value::Object(body))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SelectUse {
    List,
    Single,
    Delta,
    Members,
}

/// What the caller brought besides the query: its permissions and headers.
struct Caller {
    permissions: Vec<String>,
    /// `ConsistencyLevel: eventual`.
    advanced: bool,
    /// `Prefer: return=minimal`.
    minimal: bool,
}

fn is_eventual(req: &HttpRequest) -> bool {
    header(req, "consistencylevel").is_some_and(|v| v.trim().eq_ignore_ascii_case("eventual"))
}

fn prefers_minimal(req: &HttpRequest) -> bool {
    req.headers()
        .get_all("prefer")
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.split(',').any(|p| p.trim().eq_ignore_ascii_case("return=minimal")))
}

fn count_needs_eventual() -> Answer {
    unsupported_query("$count is not supported without the header 'ConsistencyLevel: eventual'.")
}

/// A user property or extension for `$filter` and `$orderby`.
fn user_field(u: &GraphUser, name: &str) -> Value {
    user_value(u, name).or_else(|| u.extensions.get(name).cloned()).unwrap_or(Value::Null)
}

/// `$expand=manager` or `manager($select=…)`: Some(select of the manager).
fn parse_expand(tenant: &Tenant, query: &Query) -> Result<Option<Option<Vec<String>>>, Answer> {
    let Some(raw) = query.get("expand") else { return Ok(None) };
    let raw = raw.trim();
    let (name, options) = match raw.split_once('(') {
        Some((name, rest)) => (name.trim(), Some(rest.strip_suffix(')').unwrap_or(rest))),
        None => (raw, None),
    };
    if !name.eq_ignore_ascii_case("manager") {
        return Err(bad_request(&format!(
            "Could not find a navigation property named '{name}' on type 'microsoft.graph.user'."
        )));
    }
    let Some(options) = options else { return Ok(Some(None)) };
    let Some(list) =
        options.trim().strip_prefix("$select=").or_else(|| options.trim().strip_prefix("select="))
    else {
        return Err(bad_request(&format!("Invalid $expand options: '{options}'.")));
    };
    let mut select = Vec::new();
    for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        match canonical(Resource::User, tenant, name) {
            Some(n) => select.push(n),
            None => {
                return Err(bad_request(&format!(
                    "Could not find a property named '{name}' on type 'microsoft.graph.user'."
                )))
            }
        }
    }
    Ok(Some(Some(select)))
}

/// `$filter`, `$search`, `$orderby` of a listing, checked against the advanced-query rules.
struct ListingOptions {
    filter: Option<Filter>,
    search: Option<Vec<(String, String)>>,
    order: Option<(String, bool)>,
}

impl ListingOptions {
    fn parse(
        tenant: &Tenant,
        query: &Query,
        caller: &Caller,
        resource: Resource,
    ) -> Result<ListingOptions, Answer> {
        if query.count() && !caller.advanced {
            return Err(count_needs_eventual());
        }
        let filter = match query.get("filter") {
            None => None,
            Some(text) => {
                let parsed = parse_filter(tenant, text, resource)?;
                if let Some(property) = &parsed.advanced {
                    if !(caller.advanced && query.count()) {
                        return Err(unsupported_query(&format!(
                            "Unsupported or invalid query filter clause specified for property '{property}' of resource '{}'.",
                            resource.title()
                        )));
                    }
                }
                Some(parsed.filter)
            }
        };
        let search = match query.get("search") {
            None => None,
            Some(text) => {
                if !caller.advanced {
                    return Err(unsupported_query(
                        "Request with $search query parameter only works through MSGraph with a special request header: 'ConsistencyLevel: eventual'",
                    ));
                }
                Some(parse_search(tenant, text, resource)?)
            }
        };
        let order = match query.get("orderby") {
            None => None,
            Some(text) => {
                let mut words = text.split_whitespace();
                let name = words.next().unwrap_or("");
                let descending = match words.next() {
                    None => false,
                    Some(d) if d.eq_ignore_ascii_case("asc") => false,
                    Some(d) if d.eq_ignore_ascii_case("desc") => true,
                    Some(_) => return Err(bad_request(&format!("Invalid $orderby clause: '{text}'."))),
                };
                let property = canonical(resource, tenant, name).ok_or_else(|| {
                    bad_request(&format!(
                        "Could not find a property named '{name}' on type '{}'.",
                        resource.type_name()
                    ))
                })?;
                if !matches!(property.as_str(), "displayName" | "userPrincipalName") && !caller.advanced {
                    return Err(unsupported_query(&format!(
                        "Sorting not supported for property '{property}'."
                    )));
                }
                if (filter.is_some() || search.is_some()) && !caller.advanced {
                    return Err(unsupported_query("Sorting not supported for current query."));
                }
                Some((property, descending))
            }
        };
        Ok(ListingOptions { filter, search, order })
    }

    fn ordered(&self) -> bool {
        self.order.is_some() || self.search.is_some()
    }

    fn matches(&self, field: &dyn Fn(&str) -> Value) -> bool {
        self.filter.as_ref().is_none_or(|f| f.matches(field))
            && self.search.as_ref().is_none_or(|clauses| {
                clauses.iter().all(|(property, term)| {
                    field(property).as_str().is_some_and(|v| v.to_lowercase().contains(&term.to_lowercase()))
                })
            })
    }

    fn sort<T>(&self, items: &mut [&T], field: impl Fn(&T, &str) -> Value) {
        let (property, descending) = match &self.order {
            Some((p, d)) => (p.as_str(), *d),
            None => ("displayName", false),
        };
        let key = |item: &T| field(item, property).as_str().map(str::to_lowercase).unwrap_or_default();
        items.sort_by_cached_key(|item| key(item));
        if descending {
            items.reverse();
        }
    }
}

/// `$search="displayName:lena" AND "mail:fjord"`: (property, term) clauses, all must hold.
fn parse_search(tenant: &Tenant, text: &str, resource: Resource) -> Result<Vec<(String, String)>, Answer> {
    let mut clauses = Vec::new();
    for part in text.split(" AND ") {
        let part = part.trim();
        let inner = part
            .strip_prefix('"')
            .and_then(|p| p.strip_suffix('"'))
            .ok_or_else(|| bad_request(&format!("Syntax error: invalid $search clause '{part}'.")))?;
        let (property, term) = inner
            .split_once(':')
            .ok_or_else(|| bad_request(&format!("Syntax error: invalid $search clause '{part}'.")))?;
        let property = canonical(resource, tenant, property.trim())
            .ok_or_else(|| bad_request(&format!("Invalid search property '{property}'.")))?;
        clauses.push((property, term.to_string()));
    }
    Ok(clauses)
}

/// `$filter` on delta: only `id eq '…'`, or-ed, at most 50 ids.
fn delta_filter_ids(tenant: &Tenant, text: &str, resource: Resource) -> Result<Vec<String>, Answer> {
    let unsupported = || unsupported_query("Delta queries support $filter only on 'id eq', up to 50 ids.");
    let parsed = parse_filter(tenant, text, resource)?;
    let mut ids = Vec::new();
    let mut stack = vec![&parsed.filter];
    while let Some(filter) = stack.pop() {
        match filter {
            Filter::Or(a, b) => {
                stack.push(b);
                stack.push(a);
            }
            Filter::Compare { property, op: CompareOp::Eq, literal: Literal::Text(id) }
                if property == "id" =>
            {
                ids.push(id.clone())
            }
            _ => return Err(unsupported()),
        }
    }
    if ids.len() > 50 {
        return Err(unsupported());
    }
    Ok(ids)
}

/// Collects up to `limit` items and tells whether another one follows.
fn take_page<T>(items: impl Iterator<Item = T>, limit: usize) -> (Vec<T>, bool) {
    let mut page = Vec::with_capacity(limit.min(1000));
    for item in items {
        if page.len() == limit {
            return (page, true);
        }
        page.push(item);
    }
    (page, false)
}

// ---------------------------------------------------------------------------------------------
// Delta pages (§5)
// ---------------------------------------------------------------------------------------------

fn removed(id: &str, reason: &str) -> Value {
    json!({ "id": id, "@removed": { "reason": reason } })
}

/// Whether a property goes into a delta item: in the initial round and for objects created in
/// this round every set property; otherwise set or cleared ones, or with `return=minimal`
/// only the changed ones (§5: merge; missing = unchanged, null = cleared).
fn delta_includes(value: &Value, changed: bool, fresh: bool, minimal: bool) -> bool {
    if fresh {
        !is_unset(value)
    } else if minimal {
        changed
    } else {
        !is_unset(value) || changed
    }
}

struct DeltaView<'t> {
    tenant: &'t Tenant,
    since: Option<u64>,
    minimal: bool,
}

impl DeltaView<'_> {
    fn changed(&self, id: &str, property: &str) -> bool {
        let Some(since) = self.since else { return false };
        self.tenant.changes.properties.get(id).and_then(|p| p.get(property)).is_some_and(|&seq| seq > since)
    }

    fn fresh(&self, id: &str) -> bool {
        match self.since {
            None => true,
            Some(since) => self.tenant.changes.created.get(id).is_some_and(|&seq| seq > since),
        }
    }

    fn user(&self, u: &GraphUser, select: Option<&[String]>) -> Value {
        let fresh = self.fresh(&u.id);
        let mut out = Map::new();
        out.insert("id".into(), u.id.clone().into());
        let names: Vec<String> = match select {
            Some(s) => s.to_vec(),
            None => DEFAULT_USER_SELECT.iter().map(|s| s.to_string()).collect(),
        };
        for name in names.iter().filter(|n| *n != "id") {
            if name == "manager" {
                let manager = u.manager_id.as_ref().filter(|m| self.tenant.users.contains_key(*m));
                let changed = self.changed(&u.id, "manager");
                let entry = |id: &str| json!({ "@odata.type": ObjectKind::User.odata_type(), "id": id });
                match manager {
                    Some(m) if fresh || !self.minimal || changed => {
                        out.insert("manager@delta".into(), json!([entry(m)]));
                    }
                    None if changed && !fresh => {
                        if let Some(previous) = self.tenant.changes.previous_manager.get(&u.id) {
                            let mut gone = entry(previous);
                            gone["@removed"] = json!({ "reason": "deleted" });
                            out.insert("manager@delta".into(), json!([gone]));
                        }
                    }
                    _ => {}
                }
                continue;
            }
            let value = user_field(u, name);
            if delta_includes(&value, self.changed(&u.id, name), fresh, self.minimal) {
                out.insert(name.clone(), value);
            }
        }
        Value::Object(out)
    }

    fn group(&self, g: &GraphGroup, select: Option<&[String]>) -> Map<String, Value> {
        let fresh = self.fresh(&g.id);
        let mut out = Map::new();
        out.insert("id".into(), g.id.clone().into());
        let names: Vec<&str> = match select {
            Some(s) => s.iter().map(String::as_str).collect(),
            None => GROUP_PROPERTIES.iter().map(|p| p.name).collect(),
        };
        for name in names.into_iter().filter(|n| *n != "id" && *n != "members") {
            let value = group_value(g, name).unwrap_or(Value::Null);
            if delta_includes(&value, self.changed(&g.id, name), fresh, self.minimal) {
                out.insert(name.into(), value);
            }
        }
        out
    }

    /// A group's `members@delta` entries after `after`, in id order: the whole membership in
    /// the initial round, else the membership changes of this round.
    fn member_entries<'a>(
        &'a self,
        group: &'a str,
        after: Option<&'a String>,
    ) -> Box<dyn Iterator<Item = (String, Value)> + 'a> {
        let lower = after.map_or(Bound::Unbounded, Bound::Excluded);
        match self.since {
            None => {
                let Some(members) = self.tenant.members.get(group) else {
                    return Box::new(std::iter::empty());
                };
                Box::new(members.range::<String, _>((lower, Bound::Unbounded)).filter_map(move |id| {
                    let kind = self.tenant.kind_of(id)?;
                    Some((id.clone(), json!({ "@odata.type": kind.odata_type(), "id": id })))
                }))
            }
            Some(since) => {
                let Some(changes) = self.tenant.changes.member_changes.get(group) else {
                    return Box::new(std::iter::empty());
                };
                Box::new(
                    changes
                        .range::<String, _>((lower, Bound::Unbounded))
                        .filter(move |(_, c)| c.seq > since)
                        .map(|(id, change)| {
                            let mut entry = json!({ "@odata.type": change.kind.odata_type(), "id": id });
                            if !change.present {
                                entry["@removed"] = json!({ "reason": "deleted" });
                            }
                            (id.clone(), entry)
                        }),
                )
            }
        }
    }
}

/// The ids a round visits after `after`, in id order: every live object in the initial round
/// (and removed ones when the tenant says so), else every object changed since the round's
/// `since`.
fn delta_candidates<'t>(
    tenant: &'t Tenant,
    cursor: &'t DeltaCursor,
    live: &'t BTreeMap<String, impl Sized>,
    changed: &'t BTreeMap<String, u64>,
    removed_ids: BTreeSet<&'t String>,
) -> Box<dyn Iterator<Item = &'t String> + 't> {
    let lower = cursor.a.as_ref().map_or(Bound::Unbounded, Bound::Excluded);
    let ids: Box<dyn Iterator<Item = &'t String> + 't> = match cursor.since {
        None => {
            let live_ids = live.range::<String, _>((lower, Bound::Unbounded)).map(|(id, _)| id);
            if tenant.paging.removed_in_initial_round {
                let removed_after: Vec<&String> =
                    removed_ids.into_iter().filter(|id| cursor.a.as_ref().is_none_or(|a| *id > a)).collect();
                Box::new(MergeSorted { a: live_ids.peekable(), b: removed_after.into_iter().peekable() })
            } else {
                Box::new(live_ids)
            }
        }
        Some(since) => Box::new(
            changed
                .range::<String, _>((lower, Bound::Unbounded))
                .filter(move |(_, &seq)| seq > since)
                .map(|(id, _)| id),
        ),
    };
    match &cursor.f {
        Some(filter) => Box::new(ids.filter(move |id| filter.contains(id))),
        None => ids,
    }
}

/// Two id-ordered iterators as one.
struct MergeSorted<'t, A: Iterator<Item = &'t String>, B: Iterator<Item = &'t String>> {
    a: std::iter::Peekable<A>,
    b: std::iter::Peekable<B>,
}

impl<'t, A: Iterator<Item = &'t String>, B: Iterator<Item = &'t String>> Iterator for MergeSorted<'t, A, B> {
    type Item = &'t String;

    fn next(&mut self) -> Option<&'t String> {
        match (self.a.peek(), self.b.peek()) {
            (Some(x), Some(y)) if y < x => self.b.next(),
            (Some(_), _) => self.a.next(),
            (None, _) => self.b.next(),
        }
    }
}

fn users_delta_page(
    tenant: &Tenant,
    cursor: &DeltaCursor,
    minimal: bool,
) -> (Vec<Value>, Option<DeltaCursor>) {
    let view = DeltaView { tenant, since: cursor.since, minimal };
    let removed_ids: BTreeSet<&String> =
        tenant.deleted_users.keys().chain(tenant.changes.purged_users.iter()).collect();
    let candidates = delta_candidates(tenant, cursor, &tenant.users, &tenant.changes.users, removed_ids);
    let page_size = tenant.paging.delta_page_size.max(1);
    let mut items = Vec::with_capacity(page_size);
    let mut ids: Vec<&String> = Vec::with_capacity(page_size);
    let mut more = false;
    for id in candidates {
        let item = if let Some(user) = tenant.users.get(id) {
            view.user(user, cursor.s.as_deref())
        } else if tenant.deleted_users.contains_key(id) {
            removed(id, "changed")
        } else if tenant.changes.purged_users.contains(id) {
            removed(id, "deleted")
        } else {
            continue;
        };
        if items.len() == page_size {
            more = true;
            break;
        }
        items.push(item);
        ids.push(id);
    }
    let next = more.then(|| {
        let replay = tenant.paging.replay_last_delta_object && ids.len() >= 2;
        let after = if replay { ids[ids.len() - 2] } else { ids[ids.len() - 1] };
        DeltaCursor { a: Some(after.clone()), p: None, ..cursor.clone() }
    });
    (items, next)
}

fn groups_delta_page(
    tenant: &Tenant,
    cursor: &DeltaCursor,
    minimal: bool,
) -> (Vec<Value>, Option<DeltaCursor>) {
    let view = DeltaView { tenant, since: cursor.since, minimal };
    let with_members = cursor.s.as_ref().is_none_or(|s| s.iter().any(|n| n == "members"));
    let removed_ids: BTreeSet<&String> = tenant.changes.purged_groups.iter().collect();
    let mut candidates =
        delta_candidates(tenant, cursor, &tenant.groups, &tenant.changes.groups, removed_ids);
    let page_size = tenant.paging.delta_page_size.max(1);
    let members_per_page = tenant.paging.delta_members_per_page.max(1);
    let mut items: Vec<Value> = Vec::new();
    let mut ids: Vec<String> = Vec::new();
    let mut member_count = 0;
    let mut partial = cursor.p.clone();
    let mut next = None;
    loop {
        let (id, member_after) = match partial.take() {
            Some((group, member)) => (group, Some(member)),
            None => match candidates.next() {
                Some(id) => (id.clone(), None),
                None => break,
            },
        };
        let stop_here = |ids: &[String]| DeltaCursor {
            a: ids.last().cloned().or(cursor.a.clone()),
            p: None,
            ..cursor.clone()
        };
        if items.len() == page_size {
            next = Some(match member_after {
                Some(member) => DeltaCursor { a: Some(id.clone()), p: Some((id, member)), ..cursor.clone() },
                None => stop_here(&ids),
            });
            break;
        }
        let Some(group) = tenant.groups.get(&id) else {
            if tenant.changes.purged_groups.contains(&id) {
                items.push(removed(&id, "deleted"));
                ids.push(id);
            }
            continue;
        };
        let mut item = view.group(group, cursor.s.as_deref());
        if with_members {
            let room = members_per_page - member_count;
            let (chunk, overflow) = {
                let mut entries = view.member_entries(&id, member_after.as_ref()).take(room + 1);
                let chunk: Vec<(String, Value)> = entries.by_ref().take(room).collect();
                (chunk, entries.next().is_some())
            };
            if room == 0 && overflow {
                // No room left on this page for this group's members: it starts the next one.
                next = Some(match member_after {
                    Some(member) => {
                        DeltaCursor { a: Some(id.clone()), p: Some((id, member)), ..cursor.clone() }
                    }
                    None => stop_here(&ids),
                });
                break;
            }
            member_count += chunk.len();
            let last_member = chunk.last().map(|(m, _)| m.clone());
            if !chunk.is_empty() {
                item.insert(
                    "members@delta".into(),
                    Value::Array(chunk.into_iter().map(|(_, e)| e).collect()),
                );
            }
            items.push(Value::Object(item));
            if overflow {
                let last_member = last_member.unwrap_or_default();
                next =
                    Some(DeltaCursor { a: Some(id.clone()), p: Some((id, last_member)), ..cursor.clone() });
                break;
            }
        } else {
            items.push(Value::Object(item));
        }
        ids.push(id);
    }
    if let Some(next) = next.as_mut() {
        if tenant.paging.replay_last_delta_object && next.p.is_none() && ids.len() >= 2 {
            next.a = Some(ids[ids.len() - 2].clone());
        }
    }
    (items, next)
}

// ---------------------------------------------------------------------------------------------
// $filter (§2 advanced queries)
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq)]
enum Literal {
    Text(String),
    Bool(bool),
    Null,
    Number(f64),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CompareOp {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
}

#[derive(Debug)]
enum Filter {
    And(Box<Filter>, Box<Filter>),
    Or(Box<Filter>, Box<Filter>),
    Not(Box<Filter>),
    Compare {
        property: String,
        op: CompareOp,
        literal: Literal,
    },
    In {
        property: String,
        literals: Vec<Literal>,
    },
    StartsWith {
        property: String,
        prefix: String,
    },
    EndsWith {
        property: String,
        suffix: String,
    },
    /// `groupTypes/any(c:c eq 'Unified')`.
    Any {
        property: String,
        op: CompareOp,
        literal: Literal,
    },
}

struct ParsedFilter {
    filter: Filter,
    /// The first property used in a way that needs an advanced query, if any.
    advanced: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Open,
    Close,
    Comma,
    Quoted(String),
    Word(String),
}

/// Parsing stops here; real filters are small and evaluation recurses over the tree.
const MAX_FILTER_DEPTH: usize = 16;
const MAX_FILTER_TERMS: usize = 100;

fn parse_filter(tenant: &Tenant, text: &str, resource: Resource) -> Result<ParsedFilter, Answer> {
    let syntax = |at: usize| {
        graph_error(
            400,
            "BadRequest",
            &format!("Invalid filter clause: Syntax error at position {at} in '{text}'."),
        )
    };
    let tokens = tokenize_filter(text).map_err(syntax)?;
    let mut parser =
        FilterParser { tokens, at: 0, terms: 0, advanced: None, tenant, resource, unknown: None };
    let filter = parser.or(0);
    if let Some(name) = parser.unknown {
        return Err(graph_error(
            400,
            "BadRequest",
            &format!(
                "Invalid filter clause: Could not find a property named '{name}' on type '{}'.",
                resource.type_name()
            ),
        ));
    }
    match filter {
        Ok(filter) if parser.at == parser.tokens.len() => {
            Ok(ParsedFilter { filter, advanced: parser.advanced })
        }
        _ => Err(syntax(parser.at)),
    }
}

fn tokenize_filter(text: &str) -> Result<Vec<Token>, usize> {
    let mut tokens = Vec::new();
    let mut chars = text.char_indices().peekable();
    while let Some(&(at, c)) = chars.peek() {
        match c {
            c if c.is_whitespace() => {
                chars.next();
            }
            '(' | ')' | ',' => {
                chars.next();
                tokens.push(match c {
                    '(' => Token::Open,
                    ')' => Token::Close,
                    _ => Token::Comma,
                });
            }
            '\'' => {
                chars.next();
                let mut value = String::new();
                loop {
                    match chars.next() {
                        None => return Err(at),
                        // '' is an escaped quote.
                        Some((_, '\'')) if chars.peek().is_some_and(|(_, c)| *c == '\'') => {
                            chars.next();
                            value.push('\'');
                        }
                        Some((_, '\'')) => break,
                        Some((_, other)) => value.push(other),
                    }
                }
                tokens.push(Token::Quoted(value));
            }
            _ => {
                let mut word = String::new();
                while let Some(&(_, c)) = chars.peek() {
                    if c.is_whitespace() || matches!(c, '(' | ')' | ',' | '\'') {
                        break;
                    }
                    word.push(c);
                    chars.next();
                }
                tokens.push(Token::Word(word));
            }
        }
    }
    Ok(tokens)
}

struct FilterParser<'t> {
    tokens: Vec<Token>,
    at: usize,
    terms: usize,
    advanced: Option<String>,
    tenant: &'t Tenant,
    resource: Resource,
    unknown: Option<String>,
}

impl FilterParser<'_> {
    fn keyword(&mut self, keyword: &str) -> bool {
        match self.tokens.get(self.at) {
            Some(Token::Word(w)) if w.eq_ignore_ascii_case(keyword) => {
                self.at += 1;
                true
            }
            _ => false,
        }
    }

    fn expect(&mut self, token: Token) -> Result<(), ()> {
        if self.tokens.get(self.at) == Some(&token) {
            self.at += 1;
            Ok(())
        } else {
            Err(())
        }
    }

    fn needs_advanced(&mut self, property: &str) {
        self.advanced.get_or_insert_with(|| property.to_string());
    }

    fn or(&mut self, depth: usize) -> Result<Filter, ()> {
        let mut left = self.and(depth)?;
        while self.keyword("or") {
            left = Filter::Or(Box::new(left), Box::new(self.and(depth)?));
        }
        Ok(left)
    }

    fn and(&mut self, depth: usize) -> Result<Filter, ()> {
        let mut left = self.unary(depth)?;
        while self.keyword("and") {
            left = Filter::And(Box::new(left), Box::new(self.unary(depth)?));
        }
        Ok(left)
    }

    fn unary(&mut self, depth: usize) -> Result<Filter, ()> {
        if depth >= MAX_FILTER_DEPTH {
            return Err(());
        }
        if self.keyword("not") {
            let inner = self.unary(depth + 1)?;
            let property = first_property(&inner).to_string();
            self.needs_advanced(&property);
            return Ok(Filter::Not(Box::new(inner)));
        }
        if self.tokens.get(self.at) == Some(&Token::Open) {
            self.at += 1;
            let inner = self.or(depth + 1)?;
            self.expect(Token::Close)?;
            return Ok(inner);
        }
        self.terms += 1;
        if self.terms > MAX_FILTER_TERMS {
            return Err(());
        }
        let Some(Token::Word(word)) = self.tokens.get(self.at).cloned() else { return Err(()) };
        self.at += 1;
        let function = word.to_ascii_lowercase();
        if (function == "startswith" || function == "endswith")
            && self.tokens.get(self.at) == Some(&Token::Open)
        {
            self.at += 1;
            let property = self.property()?;
            self.expect(Token::Comma)?;
            let Some(Token::Quoted(value)) = self.tokens.get(self.at).cloned() else { return Err(()) };
            self.at += 1;
            self.expect(Token::Close)?;
            return Ok(if function == "startswith" {
                self.basic_or_advanced(&property);
                Filter::StartsWith { property, prefix: value }
            } else {
                self.needs_advanced(&property);
                Filter::EndsWith { property, suffix: value }
            });
        }
        if let Some(collection) = word.strip_suffix("/any").or_else(|| word.strip_suffix("/ANY")) {
            let property = self.resolve(collection);
            self.expect(Token::Open)?;
            let Some(Token::Word(lambda)) = self.tokens.get(self.at).cloned() else { return Err(()) };
            self.at += 1;
            let (variable, first) = lambda.split_once(':').ok_or(())?;
            if variable != first {
                return Err(());
            }
            let op = self.operator()?;
            let literal = self.literal()?;
            self.expect(Token::Close)?;
            if op != CompareOp::Eq {
                self.needs_advanced(&property);
            }
            return Ok(Filter::Any { property, op, literal });
        }
        let property = self.resolve(&word);
        if self.keyword("in") {
            self.expect(Token::Open)?;
            let mut literals = vec![self.literal()?];
            while self.tokens.get(self.at) == Some(&Token::Comma) {
                self.at += 1;
                literals.push(self.literal()?);
            }
            self.expect(Token::Close)?;
            self.basic_or_advanced(&property);
            return Ok(Filter::In { property, literals });
        }
        let op = self.operator()?;
        let literal = self.literal()?;
        if op != CompareOp::Eq || literal == Literal::Null {
            self.needs_advanced(&property);
        } else {
            self.basic_or_advanced(&property);
        }
        Ok(Filter::Compare { property, op, literal })
    }

    /// Properties outside the basic set need an advanced query whatever the operator.
    fn basic_or_advanced(&mut self, property: &str) {
        let basic = self.resource.properties().iter().any(|p| p.name == property && p.basic_filter)
            || self.tenant.extension_properties.contains(property);
        if !basic {
            self.needs_advanced(property);
        }
    }

    fn property(&mut self) -> Result<String, ()> {
        let Some(Token::Word(word)) = self.tokens.get(self.at).cloned() else { return Err(()) };
        self.at += 1;
        Ok(self.resolve(&word))
    }

    /// The canonical property name; an unknown one is reported after parsing.
    fn resolve(&mut self, name: &str) -> String {
        canonical(self.resource, self.tenant, name).unwrap_or_else(|| {
            self.unknown.get_or_insert_with(|| name.to_string());
            name.to_string()
        })
    }

    fn operator(&mut self) -> Result<CompareOp, ()> {
        let Some(Token::Word(word)) = self.tokens.get(self.at) else { return Err(()) };
        let op = match word.to_ascii_lowercase().as_str() {
            "eq" => CompareOp::Eq,
            "ne" => CompareOp::Ne,
            "gt" => CompareOp::Gt,
            "ge" => CompareOp::Ge,
            "lt" => CompareOp::Lt,
            "le" => CompareOp::Le,
            _ => return Err(()),
        };
        self.at += 1;
        Ok(op)
    }

    fn literal(&mut self) -> Result<Literal, ()> {
        let token = self.tokens.get(self.at).cloned().ok_or(())?;
        self.at += 1;
        match token {
            Token::Quoted(text) => Ok(Literal::Text(text)),
            Token::Word(word) => match word.to_ascii_lowercase().as_str() {
                "true" => Ok(Literal::Bool(true)),
                "false" => Ok(Literal::Bool(false)),
                "null" => Ok(Literal::Null),
                _ => word.parse::<f64>().map(Literal::Number).map_err(|_| ()),
            },
            _ => Err(()),
        }
    }
}

fn first_property(filter: &Filter) -> &str {
    match filter {
        Filter::And(a, _) | Filter::Or(a, _) => first_property(a),
        Filter::Not(inner) => first_property(inner),
        Filter::Compare { property, .. }
        | Filter::In { property, .. }
        | Filter::StartsWith { property, .. }
        | Filter::EndsWith { property, .. }
        | Filter::Any { property, .. } => property,
    }
}

impl Filter {
    fn matches(&self, field: &dyn Fn(&str) -> Value) -> bool {
        match self {
            Filter::And(a, b) => a.matches(field) && b.matches(field),
            Filter::Or(a, b) => a.matches(field) || b.matches(field),
            Filter::Not(inner) => !inner.matches(field),
            Filter::Compare { property, op, literal } => compare(&field(property), *op, literal),
            Filter::In { property, literals } => {
                let value = field(property);
                literals.iter().any(|l| compare(&value, CompareOp::Eq, l))
            }
            Filter::StartsWith { property, prefix } => {
                field(property).as_str().is_some_and(|v| v.to_lowercase().starts_with(&prefix.to_lowercase()))
            }
            Filter::EndsWith { property, suffix } => {
                field(property).as_str().is_some_and(|v| v.to_lowercase().ends_with(&suffix.to_lowercase()))
            }
            Filter::Any { property, op, literal } => field(property)
                .as_array()
                .is_some_and(|items| items.iter().any(|item| compare(item, *op, literal))),
        }
    }
}

/// Directory string comparisons are case-insensitive.
fn compare(value: &Value, op: CompareOp, literal: &Literal) -> bool {
    use std::cmp::Ordering as O;
    let ordering = match (value, literal) {
        (Value::Null, Literal::Null) => Some(O::Equal),
        (_, Literal::Null) | (Value::Null, _) => None,
        (Value::String(s), Literal::Text(t)) => Some(s.to_lowercase().cmp(&t.to_lowercase())),
        (Value::Bool(b), Literal::Bool(l)) => Some(b.cmp(l)),
        (Value::Number(n), Literal::Number(l)) => n.as_f64().and_then(|n| n.partial_cmp(l)),
        _ => None,
    };
    match (op, ordering) {
        (CompareOp::Eq, o) => o == Some(O::Equal),
        (CompareOp::Ne, o) => o != Some(O::Equal),
        (CompareOp::Gt, o) => o == Some(O::Greater),
        (CompareOp::Ge, o) => matches!(o, Some(O::Greater | O::Equal)),
        (CompareOp::Lt, o) => o == Some(O::Less),
        (CompareOp::Le, o) => matches!(o, Some(O::Less | O::Equal)),
    }
}
