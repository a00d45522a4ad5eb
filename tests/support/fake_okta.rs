//! A fake Okta org for the pull importer's tests and benchmarks: the Management API reads the
//! importer makes (users, groups, members, app assignments), the org authorization server's token
//! endpoint (`private_key_jwt`, DPoP), `link` paging, rate-limit buckets and Okta error bodies, all
//! answered as ../shared/reference/okta-api.md describes. Tests change the org between runs, inject
//! failures and read back every request the fake received.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::net::TcpListener;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use actix_web::http::StatusCode;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use jsonwebtoken::jwk::{AlgorithmParameters, ThumbprintHash};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC};
use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

// ---------------------------------------------------------------------------------------------
// The org
// ---------------------------------------------------------------------------------------------

/// An Okta user as the org stores it; the wire shape (§3.1) is derived from it.
#[derive(Debug, Clone, PartialEq)]
pub struct OktaUser {
    pub id: String,
    pub status: String,
    pub created: String,
    pub last_updated: String,
    pub profile: Map<String, Value>,
}

/// An Okta group as the org stores it; the wire shape (§4) is derived from it.
#[derive(Debug, Clone, PartialEq)]
pub struct OktaGroup {
    pub id: String,
    /// `OKTA_GROUP`, `APP_GROUP` or `BUILT_IN`.
    pub group_type: String,
    pub name: String,
    pub description: Option<String>,
    pub created: String,
    pub last_updated: String,
    pub last_membership_updated: String,
}

/// Requests allowed per bucket per window (§7).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimits {
    /// `GET /api/v1/users`.
    pub users_list: u32,
    /// `/api/v1/groups` and `/api/v1/groups/{id}/users`.
    pub groups: u32,
    /// `/api/v1/apps*`.
    pub apps: u32,
    /// Everything else, the token endpoint included.
    pub other: u32,
    /// Okta's windows are 60 s long, counted from the first request in the window.
    pub window: Duration,
}

impl Default for RateLimits {
    fn default() -> Self {
        RateLimits { users_list: 600, groups: 500, apps: 100, other: 1200, window: Duration::from_secs(60) }
    }
}

/// Everything the fake serves; change it between runs with `FakeOkta::change`.
#[derive(Debug, Clone, PartialEq)]
pub struct Org {
    pub users: Vec<OktaUser>,
    pub groups: Vec<OktaGroup>,
    /// group id -> user ids
    pub members: BTreeMap<String, BTreeSet<String>>,
    /// app id -> (directly assigned user ids, assigned group ids)
    pub apps: BTreeMap<String, (BTreeSet<String>, BTreeSet<String>)>,
    pub limits: RateLimits,
    /// Okta's per-org concurrency cap; excess requests get a 429 with `X-Rate-Limit-Limit: 0`.
    pub max_in_flight: usize,
}

const DEPROVISIONED: &str = "DEPROVISIONED";
/// Every generated timestamp lies before this instant (2026-03-01T00:00:00.000Z), so the
/// generated org does not depend on the clock and later changes always sort after it.
const GENERATED_BEFORE_MS: i64 = 1_772_323_200_000;
const DAY_MS: i64 = 86_400_000;
const USER_TYPE_ID: &str = "oty1abcd2EFGH3ijk697";

impl Org {
    pub fn empty() -> Org {
        Org {
            users: Vec::new(),
            groups: Vec::new(),
            members: BTreeMap::new(),
            apps: BTreeMap::new(),
            limits: RateLimits::default(),
            max_in_flight: 75,
        }
    }

    /// A user with firstName/lastName taken from the login's local part and email = login.
    pub fn user(id: &str, login: &str, status: &str) -> OktaUser {
        let local = login.split('@').next().unwrap_or(login);
        let mut parts = local.split(['.', '_', '-']).filter(|p| !p.is_empty());
        let first = parts.next().map(capitalize).unwrap_or_else(|| "Test".to_string());
        let last = parts.next().map(capitalize).unwrap_or_else(|| "User".to_string());
        let mut profile = Map::new();
        profile.insert("login".into(), login.into());
        profile.insert("email".into(), login.into());
        profile.insert("firstName".into(), first.clone().into());
        profile.insert("lastName".into(), last.clone().into());
        profile.insert("displayName".into(), format!("{first} {last}").into());
        let now = next_stamp();
        OktaUser { id: id.into(), status: status.into(), created: now.clone(), last_updated: now, profile }
    }

    /// An `OKTA_GROUP` without a description.
    pub fn group(id: &str, name: &str) -> OktaGroup {
        let now = next_stamp();
        OktaGroup {
            id: id.into(),
            group_type: "OKTA_GROUP".into(),
            name: name.into(),
            description: None,
            created: now.clone(),
            last_updated: now.clone(),
            last_membership_updated: now,
        }
    }

    /// A fresh id in Okta's shape: `prefix` ("00u", "00g", "0oa") + 14 characters + "697".
    pub fn new_id(prefix: &str) -> String {
        okta_id(&mut rand::rng(), prefix)
    }

    /// Adds (or replaces) a user; like Okta, it also joins the built-in Everyone group.
    pub fn add_user(&mut self, mut user: OktaUser) {
        user.last_updated = next_stamp();
        self.users.retain(|u| u.id != user.id);
        let id = user.id.clone();
        self.users.push(user);
        if let Some(everyone) = self.groups.iter().find(|g| g.group_type == "BUILT_IN").map(|g| g.id.clone())
        {
            self.add_member(&everyone, &id);
        }
    }

    /// Changes a user and bumps its `lastUpdated`. Deactivation removes its direct app
    /// assignments, as Okta does.
    pub fn update_user(&mut self, id: &str, f: impl FnOnce(&mut OktaUser)) {
        let user =
            self.users.iter_mut().find(|u| u.id == id).unwrap_or_else(|| panic!("no user {id} in the org"));
        f(user);
        user.last_updated = next_stamp();
        if user.status == DEPROVISIONED {
            for (users, _) in self.apps.values_mut() {
                users.remove(id);
            }
        }
    }

    /// Okta's delete: the user vanishes from every listing, memberships and assignments included.
    pub fn remove_user(&mut self, id: &str) {
        self.users.retain(|u| u.id != id);
        let emptied: Vec<String> = self
            .members
            .iter_mut()
            .filter_map(|(group, users)| users.remove(id).then(|| group.clone()))
            .collect();
        for group in emptied {
            self.touch_membership(&group);
        }
        for (users, _) in self.apps.values_mut() {
            users.remove(id);
        }
    }

    pub fn add_member(&mut self, group_id: &str, user_id: &str) {
        self.expect_group(group_id);
        if self.members.entry(group_id.to_string()).or_default().insert(user_id.to_string()) {
            self.touch_membership(group_id);
        }
    }

    pub fn remove_member(&mut self, group_id: &str, user_id: &str) {
        self.expect_group(group_id);
        if self.members.get_mut(group_id).is_some_and(|users| users.remove(user_id)) {
            self.touch_membership(group_id);
        }
    }

    /// Adds (or replaces) a group, stamping `lastUpdated` and `lastMembershipUpdated`.
    pub fn add_group(&mut self, mut group: OktaGroup) {
        let now = next_stamp();
        group.last_updated = now.clone();
        group.last_membership_updated = now;
        self.groups.retain(|g| g.id != group.id);
        self.groups.push(group);
    }

    /// Changes a group's profile and bumps its `lastUpdated`.
    pub fn update_group(&mut self, id: &str, f: impl FnOnce(&mut OktaGroup)) {
        let group =
            self.groups.iter_mut().find(|g| g.id == id).unwrap_or_else(|| panic!("no group {id} in the org"));
        f(group);
        group.last_updated = next_stamp();
    }

    pub fn remove_group(&mut self, id: &str) {
        self.groups.retain(|g| g.id != id);
        self.members.remove(id);
        for (_, groups) in self.apps.values_mut() {
            groups.remove(id);
        }
    }

    pub fn assign_user_to_app(&mut self, app_id: &str, user_id: &str) {
        self.apps.entry(app_id.to_string()).or_default().0.insert(user_id.to_string());
    }

    pub fn unassign_user_from_app(&mut self, app_id: &str, user_id: &str) {
        if let Some((users, _)) = self.apps.get_mut(app_id) {
            users.remove(user_id);
        }
    }

    pub fn assign_group_to_app(&mut self, app_id: &str, group_id: &str) {
        self.apps.entry(app_id.to_string()).or_default().1.insert(group_id.to_string());
    }

    pub fn unassign_group_from_app(&mut self, app_id: &str, group_id: &str) {
        if let Some((_, groups)) = self.apps.get_mut(app_id) {
            groups.remove(group_id);
        }
    }

    pub fn find_user(&self, id: &str) -> Option<&OktaUser> {
        self.users.iter().find(|u| u.id == id)
    }

    pub fn find_group(&self, id: &str) -> Option<&OktaGroup> {
        self.groups.iter().find(|g| g.id == id)
    }

    fn expect_group(&self, id: &str) {
        assert!(self.groups.iter().any(|g| g.id == id), "no group {id} in the org");
    }

    fn touch_membership(&mut self, group_id: &str) {
        if let Some(group) = self.groups.iter_mut().find(|g| g.id == group_id) {
            group.last_membership_updated = next_stamp();
        }
    }

    /// A deterministic org of `users` users and `groups` groups (the built-in Everyone among
    /// them, a tenth of the rest `APP_GROUP`s) and two apps, shaped like a workforce org: every
    /// user status, logins under three domains, a manager tree, 1-4 groups per user besides
    /// Everyone. tests/sync/fake_okta.rs checks what holds.
    pub fn generate(users: usize, groups: usize, seed: u64) -> Org {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
        let mut taken = HashSet::with_capacity(users + groups + 2);
        let mut fresh = |rng: &mut Xoshiro256PlusPlus, prefix: &str| loop {
            let id = okta_id(rng, prefix);
            if taken.insert(id.clone()) {
                break id;
            }
        };
        // Made in id order, so managers (picked among earlier users) form a tree and no sort of
        // the finished users is needed.
        let mut user_ids: Vec<String> = (0..users).map(|_| fresh(&mut rng, "00u")).collect();
        user_ids.sort_unstable();

        // Every random draw happens here, in order, so the org depends on the seed alone; the
        // costly part (strings and maps) then runs on several threads.
        let mut plans = Vec::with_capacity(users);
        let mut login_counts = vec![0u32; FIRST_NAMES.len() * LAST_NAMES.len()];
        // Every status shows up at least once in an org of 8 users or more.
        let forced_every = if users >= 8 { users / 8 } else { usize::MAX };
        for i in 0..users {
            let first = rng.random_range(0..FIRST_NAMES.len());
            let last = rng.random_range(0..LAST_NAMES.len());
            let place = rng.random_range(0..PLACES.len());
            let department = rng.random_range(0..DEPARTMENTS.len());
            let domain = if rng.random_bool(0.1) {
                "other.example"
            } else if PLACES[place].eu {
                "eu.acme.example"
            } else {
                "acme.example"
            };
            let count = &mut login_counts[first * LAST_NAMES.len() + last];
            *count += 1;
            let status = match i.checked_div(forced_every) {
                Some(k @ 1..=7) if i % forced_every == 0 => NON_ACTIVE[k - 1],
                Some(0) if i == 0 => "ACTIVE",
                _ => random_status(&mut rng),
            };
            let created_ms = GENERATED_BEFORE_MS - rng.random_range(2 * DAY_MS..900 * DAY_MS);
            let updated_ms = created_ms + rng.random_range(0..GENERATED_BEFORE_MS - created_ms - DAY_MS);
            plans.push(UserPlan {
                first,
                last,
                place,
                department,
                domain,
                login_number: *count,
                status,
                created_ms,
                updated_ms,
                // A few people keep their mail on another domain than their sign-in name.
                mail_elsewhere: rng.random_bool(0.02),
                nickname: rng.random_bool(0.3),
                level: rng.random_range(0..TITLE_LEVELS.len()),
                contractor: rng.random_bool(0.08),
                // Managers come from earlier users, skewed to the first ones: a tree, no cycles.
                manager: (i > 0 && rng.random_bool(0.85))
                    .then(|| ((rng.random::<f64>().powi(2) * i as f64) as usize).min(i - 1)),
                mobile: rng
                    .random_bool(0.8)
                    .then(|| (rng.random_range(100..999), rng.random_range(1000..9999))),
                street_number: rng.random_range(1..200),
                github: rng.random_bool(0.4),
                badge: rng.random_bool(0.05),
            });
        }
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).clamp(1, 4);
        let chunk = users.div_ceil(threads).max(1);
        let org_users: Vec<OktaUser> = std::thread::scope(|scope| {
            let workers: Vec<_> = plans
                .chunks(chunk)
                .enumerate()
                .map(|(c, part)| {
                    let (plans, user_ids) = (&plans, &user_ids);
                    scope.spawn(move || {
                        let offset = c * chunk;
                        part.iter()
                            .enumerate()
                            .map(|(j, plan)| generated_user(offset + j, plan, plans, user_ids))
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            workers.into_iter().flat_map(|worker| worker.join().unwrap()).collect()
        });

        let mut org_groups = Vec::with_capacity(groups);
        let mut members: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        if groups > 0 {
            let id = fresh(&mut rng, "00g");
            let created = stamp(GENERATED_BEFORE_MS - 1500 * DAY_MS);
            org_groups.push(OktaGroup {
                id: id.clone(),
                group_type: "BUILT_IN".into(),
                name: "Everyone".into(),
                description: Some("All users in your organization".into()),
                created: created.clone(),
                last_updated: created,
                last_membership_updated: stamp(GENERATED_BEFORE_MS - DAY_MS),
            });
            members.insert(id, user_ids.iter().cloned().collect());
        }
        let others = groups.saturating_sub(1);
        let app_groups = if others >= 3 { (others / 10).max(1) } else { 0 };
        let mut names = HashSet::with_capacity(others);
        let mut other_ids = Vec::with_capacity(others);
        for j in 0..others {
            let app_group = j >= others - app_groups;
            let word = GROUP_WORDS[rng.random_range(0..GROUP_WORDS.len())];
            let base = if app_group {
                format!("sg-{word}-{}", if rng.random_bool(0.5) { "rw" } else { "ro" })
            } else {
                format!("{}{word}", GROUP_PREFIXES[rng.random_range(0..GROUP_PREFIXES.len())])
            };
            let name = if names.contains(&base) { format!("{base}-{j}") } else { base };
            names.insert(name.clone());
            let created_ms = GENERATED_BEFORE_MS - rng.random_range(30 * DAY_MS..1200 * DAY_MS);
            let updated_ms = created_ms + rng.random_range(0..GENERATED_BEFORE_MS - created_ms - DAY_MS);
            let membership_ms = created_ms + rng.random_range(0..GENERATED_BEFORE_MS - created_ms - DAY_MS);
            let id = fresh(&mut rng, "00g");
            other_ids.push(id.clone());
            org_groups.push(OktaGroup {
                id,
                group_type: if app_group { "APP_GROUP" } else { "OKTA_GROUP" }.into(),
                description: rng.random_bool(0.7).then(|| format!("Members of {name}")),
                name,
                created: stamp(created_ms),
                last_updated: stamp(updated_ms),
                last_membership_updated: stamp(membership_ms),
            });
        }
        let mut lists: Vec<Vec<String>> = vec![Vec::new(); others];
        if others > 0 {
            for user in &user_ids {
                let wanted = match rng.random_range(0..20) {
                    0..=6 => 1,
                    7..=13 => 2,
                    14..=17 => 3,
                    _ => 4,
                }
                .min(others);
                let mut chosen = Vec::with_capacity(wanted);
                while chosen.len() < wanted {
                    // Squaring skews toward the first groups: a few big groups, a long tail.
                    let g = ((rng.random::<f64>().powi(2) * others as f64) as usize).min(others - 1);
                    if !chosen.contains(&g) {
                        chosen.push(g);
                    }
                }
                for g in chosen {
                    lists[g].push(user.clone());
                }
            }
        }
        // Users come in id order, so each list is sorted and the sets are bulk-built.
        for (id, list) in other_ids.iter().zip(lists) {
            if !list.is_empty() {
                members.insert(id.clone(), list.into_iter().collect());
            }
        }

        let mut apps = BTreeMap::new();
        if users > 0 {
            let mut assigned_users = BTreeSet::new();
            for _ in 0..(users / 100).max(1) {
                assigned_users.insert(user_ids[rng.random_range(0..users)].clone());
            }
            let native = others - app_groups;
            let mut assigned_groups = BTreeSet::new();
            for _ in 0..native.min(3) {
                assigned_groups.insert(other_ids[rng.random_range(0..native)].clone());
            }
            apps.insert(fresh(&mut rng, "0oa"), (assigned_users, assigned_groups));
            let mut direct_only = BTreeSet::new();
            for _ in 0..(users / 200).max(1) {
                direct_only.insert(user_ids[rng.random_range(0..users)].clone());
            }
            apps.insert(fresh(&mut rng, "0oa"), (direct_only, BTreeSet::new()));
        }

        org_groups.sort_by(|a, b| a.id.cmp(&b.id));
        Org {
            users: org_users,
            groups: org_groups,
            members,
            apps,
            limits: RateLimits::default(),
            max_in_flight: 75,
        }
    }
}

/// What `Org::generate` draws for one user; `generated_user` turns it into the user.
struct UserPlan {
    first: usize,
    last: usize,
    place: usize,
    department: usize,
    domain: &'static str,
    /// 1 for the first "ines.moreau", 2 for "ines.moreau2", ...
    login_number: u32,
    status: &'static str,
    created_ms: i64,
    updated_ms: i64,
    mail_elsewhere: bool,
    nickname: bool,
    level: usize,
    contractor: bool,
    manager: Option<usize>,
    mobile: Option<(u32, u32)>,
    street_number: u32,
    github: bool,
    badge: bool,
}

fn display_name(plan: &UserPlan) -> String {
    let (first, last) = (FIRST_NAMES[plan.first].0, LAST_NAMES[plan.last].0);
    let mut name = String::with_capacity(first.len() + last.len() + 1);
    name.push_str(first);
    name.push(' ');
    name.push_str(last);
    name
}

fn generated_user(i: usize, plan: &UserPlan, plans: &[UserPlan], ids: &[String]) -> OktaUser {
    let (first, first_ascii) = FIRST_NAMES[plan.first];
    let (last, last_ascii) = LAST_NAMES[plan.last];
    let place = &PLACES[plan.place];
    let department = &DEPARTMENTS[plan.department];
    let local = match plan.login_number {
        1 => format!("{first_ascii}.{last_ascii}"),
        n => format!("{first_ascii}.{last_ascii}{n}"),
    };
    let login = format!("{local}@{}", plan.domain);
    let email = if plan.mail_elsewhere { format!("{local}@mail.other.example") } else { login.clone() };
    let title = match TITLE_LEVELS[plan.level] {
        "" => department.role.to_string(),
        level => format!("{level} {}", department.role),
    };

    let github = plan.github && department.name == "Engineering";
    // Exactly the keys below: a profile map is most of a user's memory.
    let optional = [
        plan.nickname,
        plan.manager.is_some(),
        plan.manager.is_some(),
        plan.mobile.is_some(),
        github,
        plan.badge,
    ];
    let mut p = Map::with_capacity(22 + optional.iter().filter(|&&set| set).count());
    p.insert("login".into(), login.into());
    p.insert("email".into(), email.into());
    p.insert("secondEmail".into(), Value::Null);
    p.insert("firstName".into(), first.into());
    p.insert("lastName".into(), last.into());
    p.insert("displayName".into(), display_name(plan).into());
    if plan.nickname {
        p.insert("nickName".into(), first_ascii.into());
    }
    p.insert("title".into(), title.into());
    p.insert("department".into(), department.name.into());
    p.insert("division".into(), department.division.into());
    p.insert("costCenter".into(), format!("CC-{}", 4400 + plan.department * 10).into());
    p.insert("organization".into(), "Acme Corp".into());
    p.insert("employeeNumber".into(), format!("E-{}", 20_000 + i).into());
    p.insert("userType".into(), if plan.contractor { "Contractor" } else { "Employee" }.into());
    if let Some(m) = plan.manager {
        p.insert("managerId".into(), ids[m].clone().into());
        p.insert("manager".into(), display_name(&plans[m]).into());
    }
    if let Some((exchange, number)) = plan.mobile {
        p.insert("mobilePhone".into(), format!("{} {exchange} {number}", place.phone).into());
    }
    p.insert("primaryPhone".into(), Value::Null);
    p.insert("streetAddress".into(), format!("{} {}", place.street, plan.street_number).into());
    p.insert("city".into(), place.city.into());
    p.insert("state".into(), place.state.map_or(Value::Null, Value::from));
    p.insert("zipCode".into(), place.zip.into());
    p.insert("countryCode".into(), place.country.into());
    p.insert("preferredLanguage".into(), place.language.into());
    p.insert("locale".into(), place.locale.into());
    p.insert("timezone".into(), place.timezone.into());
    if github {
        p.insert("githubUsername".into(), format!("{first_ascii}{last_ascii}{}", i % 97).into());
    }
    if plan.badge {
        p.insert("badgeNumber".into(), (100_000 + i).into());
    }
    OktaUser {
        id: ids[i].clone(),
        status: plan.status.into(),
        created: stamp(plan.created_ms),
        last_updated: stamp(plan.updated_ms),
        profile: p,
    }
}

const NON_ACTIVE: [&str; 7] =
    ["STAGED", "PROVISIONED", "RECOVERY", "PASSWORD_EXPIRED", "LOCKED_OUT", "SUSPENDED", DEPROVISIONED];

fn random_status(rng: &mut Xoshiro256PlusPlus) -> &'static str {
    match rng.random_range(0..100) {
        0..=79 => "ACTIVE",
        80..=82 => "STAGED",
        83..=85 => "PROVISIONED",
        86..=87 => "RECOVERY",
        88..=89 => "PASSWORD_EXPIRED",
        90 => "LOCKED_OUT",
        91..=93 => "SUSPENDED",
        _ => DEPROVISIONED,
    }
}

const ID_ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

fn okta_id(rng: &mut impl RngExt, prefix: &str) -> String {
    let mut id = String::with_capacity(20);
    id.push_str(prefix);
    // Seven base-62 digits per draw: a third of the work of one draw per character.
    let mut bits = 0u64;
    for i in 0..14 {
        if i % 7 == 0 {
            bits = rng.random::<u64>();
        }
        id.push(ID_ALPHABET[(bits % 62) as usize] as char);
        bits /= 62;
    }
    id.push_str("697");
    id
}

fn random_alnum(len: usize) -> String {
    let mut rng = rand::rng();
    (0..len).map(|_| ID_ALPHABET[rng.random_range(0..ID_ALPHABET.len())] as char).collect()
}

fn capitalize(word: &str) -> String {
    let mut chars = word.chars();
    chars.next().map(|c| c.to_uppercase().chain(chars).collect()).unwrap_or_default()
}

/// (display form, ASCII form for logins); the ASCII forms are unique.
const FIRST_NAMES: &[(&str, &str)] = &[
    ("Inès", "ines"),
    ("Tomas", "tomas"),
    ("Amara", "amara"),
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
    ("Yuki", "yuki"),
    ("Chloé", "chloe"),
    ("Mateo", "mateo"),
    ("Priya", "priya"),
    ("Kwame", "kwame"),
    ("Ingrid", "ingrid"),
    ("Dmitri", "dmitri"),
    ("Aisha", "aisha"),
    ("Lars", "lars"),
    ("Siobhán", "siobhan"),
    ("Björn", "bjorn"),
    ("Camila", "camila"),
    ("Wei", "wei"),
    ("Nia", "nia"),
    ("Oskar", "oskar"),
    ("Elena", "elena"),
    ("Rafael", "rafael"),
    ("Sofia", "sofia"),
    ("Jonas", "jonas"),
    ("Ana", "ana"),
    ("Mohammed", "mohammed"),
    ("Grace", "grace"),
    ("Diego", "diego"),
    ("Hana", "hana"),
    ("Tariq", "tariq"),
];

const LAST_NAMES: &[(&str, &str)] = &[
    ("Moreau", "moreau"),
    ("Berg", "berg"),
    ("Okafor", "okafor"),
    ("Nielsen", "nielsen"),
    ("García", "garcia"),
    ("Kowalski", "kowalski"),
    ("Chen", "chen"),
    ("Patel", "patel"),
    ("Khan", "khan"),
    ("Smith", "smith"),
    ("Johnson", "johnson"),
    ("Tanaka", "tanaka"),
    ("Dubois", "dubois"),
    ("Rossi", "rossi"),
    ("Müller", "muller"),
    ("O'Brien", "obrien"),
    ("Novák", "novak"),
    ("Silva", "silva"),
    ("Mensah", "mensah"),
    ("Ivanova", "ivanova"),
    ("Haddad", "haddad"),
    ("Larsen", "larsen"),
    ("Kim", "kim"),
    ("Nguyen", "nguyen"),
    ("Fernández", "fernandez"),
    ("Schmidt", "schmidt"),
    ("Andersson", "andersson"),
    ("Cohen", "cohen"),
    ("Abebe", "abebe"),
    ("Walsh", "walsh"),
    ("van der Berg", "vanderberg"),
    ("de la Cruz", "delacruz"),
    ("Yılmaz", "yilmaz"),
    ("Sato", "sato"),
    ("Brown", "brown"),
    ("López", "lopez"),
];

struct Place {
    city: &'static str,
    state: Option<&'static str>,
    country: &'static str,
    zip: &'static str,
    street: &'static str,
    timezone: &'static str,
    locale: &'static str,
    language: &'static str,
    phone: &'static str,
    eu: bool,
}

const PLACES: &[Place] = &[
    Place {
        city: "Oslo",
        state: None,
        country: "NO",
        zip: "0153",
        street: "Kirkegata",
        timezone: "Europe/Oslo",
        locale: "nb_NO",
        language: "nb",
        phone: "+47 400",
        eu: true,
    },
    Place {
        city: "Berlin",
        state: None,
        country: "DE",
        zip: "10115",
        street: "Invalidenstraße",
        timezone: "Europe/Berlin",
        locale: "de_DE",
        language: "de",
        phone: "+49 30",
        eu: true,
    },
    Place {
        city: "Paris",
        state: None,
        country: "FR",
        zip: "75002",
        street: "Rue de Richelieu",
        timezone: "Europe/Paris",
        locale: "fr_FR",
        language: "fr",
        phone: "+33 1",
        eu: true,
    },
    Place {
        city: "London",
        state: None,
        country: "GB",
        zip: "EC1A 1BB",
        street: "Aldersgate Street",
        timezone: "Europe/London",
        locale: "en_GB",
        language: "en",
        phone: "+44 20",
        eu: true,
    },
    Place {
        city: "San Francisco",
        state: Some("CA"),
        country: "US",
        zip: "94105",
        street: "Market Street",
        timezone: "America/Los_Angeles",
        locale: "en_US",
        language: "en",
        phone: "+1 415",
        eu: false,
    },
    Place {
        city: "New York",
        state: Some("NY"),
        country: "US",
        zip: "10001",
        street: "Broadway",
        timezone: "America/New_York",
        locale: "en_US",
        language: "en",
        phone: "+1 212",
        eu: false,
    },
    Place {
        city: "São Paulo",
        state: Some("SP"),
        country: "BR",
        zip: "01310-100",
        street: "Avenida Paulista",
        timezone: "America/Sao_Paulo",
        locale: "pt_BR",
        language: "pt",
        phone: "+55 11",
        eu: false,
    },
    Place {
        city: "Tokyo",
        state: None,
        country: "JP",
        zip: "100-0005",
        street: "Marunouchi",
        timezone: "Asia/Tokyo",
        locale: "ja_JP",
        language: "ja",
        phone: "+81 3",
        eu: false,
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
    Department { name: "Finance", division: "G&A", role: "Financial Analyst" },
    Department { name: "People", division: "G&A", role: "People Partner" },
    Department { name: "Legal", division: "G&A", role: "Counsel" },
    Department { name: "Support", division: "Customer", role: "Support Specialist" },
    Department { name: "IT", division: "G&A", role: "IT Administrator" },
];

const TITLE_LEVELS: &[&str] = &["", "", "Senior", "Staff", "Principal", "Lead", "Associate"];

const GROUP_PREFIXES: &[&str] =
    &["eng-", "vpn-", "sales-", "ops-", "fin-", "hr-", "it-", "mkt-", "legal-", "support-", "app-"];

const GROUP_WORDS: &[&str] = &[
    "platform",
    "oncall",
    "emea",
    "amer",
    "apac",
    "admins",
    "readers",
    "contractors",
    "leads",
    "all",
    "oslo",
    "berlin",
    "paris",
    "london",
    "sf",
    "nyc",
    "tokyo",
    "saopaulo",
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
    "observability",
    "github",
    "jira",
    "aws-prod",
    "aws-dev",
    "gcp",
    "slack",
];

// ---------------------------------------------------------------------------------------------
// Time
// ---------------------------------------------------------------------------------------------

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

fn now_secs() -> i64 {
    now_ms() / 1000
}

/// "now" for a changed object, strictly later than the previous one and than every generated
/// stamp, so that two changes in the same millisecond still order and `lastUpdated gt` never
/// misses one.
fn next_stamp() -> String {
    static LAST: AtomicI64 = AtomicI64::new(0);
    let mut previous = LAST.load(Ordering::SeqCst);
    loop {
        let next = now_ms().max(GENERATED_BEFORE_MS).max(previous + 1);
        match LAST.compare_exchange(previous, next, Ordering::SeqCst, Ordering::SeqCst) {
            Ok(_) => return stamp(next),
            Err(actual) => previous = actual,
        }
    }
}

/// Epoch milliseconds as Okta prints them: "YYYY-MM-DDTHH:mm:ss.SSSZ". Hand-rolled because
/// generating 100 000 users formats 200 000 of them.
fn stamp(ms: i64) -> String {
    let days = ms.div_euclid(DAY_MS);
    let in_day = ms.rem_euclid(DAY_MS);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let (h, m, s, milli) = (in_day / 3_600_000, in_day / 60_000 % 60, in_day / 1000 % 60, in_day % 1000);
    let mut out = String::with_capacity(24);
    for (value, width, separator) in [
        (year, 4, '-'),
        (month, 2, '-'),
        (day, 2, 'T'),
        (h, 2, ':'),
        (m, 2, ':'),
        (s, 2, '.'),
        (milli, 3, 'Z'),
    ] {
        for power in (0..width).rev() {
            out.push(char::from(b'0' + (value / 10i64.pow(power)).rem_euclid(10) as u8));
        }
        out.push(separator);
    }
    out
}

/// An ISO-8601 instant in Okta's canonical form, or None when it is not one.
fn canonical_stamp(text: &str) -> Option<String> {
    let instant = chrono::DateTime::parse_from_rfc3339(text).ok()?.to_utc();
    (0..=9999).contains(&chrono::Datelike::year(&instant)).then(|| stamp(instant.timestamp_millis()))
}

/// Compares two stamps as instants; canonical ones (the usual case) compare as text.
fn cmp_stamps(stored: &str, canonical: &str) -> Option<std::cmp::Ordering> {
    if stored.len() == 24 && stored.ends_with('Z') {
        Some(stored.cmp(canonical))
    } else {
        canonical_stamp(stored).map(|s| s.as_str().cmp(canonical))
    }
}

/// Unpadded base64url, for DPoP's `ath` (jsonwebtoken keeps its encoder private).
pub fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = |i: usize| u32::from(chunk.get(i).copied().unwrap_or(0));
        let n = (b(0) << 16) | (b(1) << 8) | b(2);
        for i in 0..=chunk.len() {
            out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Filter and search expressions (§3, §4)
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Eq,
    Sw,
    Co,
    Gt,
    Ge,
    Lt,
    Le,
}

#[derive(Debug, Clone)]
enum Literal {
    /// A string; lowercased when the expression is a case-insensitive `search`.
    Text(String),
    /// A timestamp, in canonical form.
    Time(String),
    Number(f64),
    Bool(bool),
}

#[derive(Debug)]
enum Expr {
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Compare { attr: String, op: Op, value: Literal },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Subject {
    Users,
    Groups,
}

#[derive(Debug, PartialEq)]
enum Token {
    Open,
    Close,
    Quoted(String),
    Word(String),
}

/// Parsing stops here; Okta's own limits are unpublished, but real expressions are small, and
/// evaluation recurses over the tree.
const MAX_DEPTH: usize = 16;
const MAX_COMPARISONS: usize = 100;

struct Parser {
    tokens: Vec<Token>,
    at: usize,
    comparisons: usize,
    subject: Subject,
    search: bool,
}

/// Parses `filter` (`search == false`) or `search` for users or groups; Err means E0000031.
fn parse_expression(text: &str, subject: Subject, search: bool) -> Result<Expr, ()> {
    let mut parser = Parser { tokens: tokenize(text)?, at: 0, comparisons: 0, subject, search };
    let expr = parser.or(0)?;
    if parser.at == parser.tokens.len() {
        Ok(expr)
    } else {
        Err(())
    }
}

fn tokenize(text: &str) -> Result<Vec<Token>, ()> {
    let mut tokens = Vec::new();
    let mut chars = text.chars().peekable();
    while let Some(&c) = chars.peek() {
        match c {
            c if c.is_whitespace() => {
                chars.next();
            }
            '(' | ')' => {
                chars.next();
                tokens.push(if c == '(' { Token::Open } else { Token::Close });
            }
            '"' => {
                chars.next();
                let mut value = String::new();
                loop {
                    match chars.next().ok_or(())? {
                        '"' => break,
                        '\\' => value.push(chars.next().ok_or(())?),
                        other => value.push(other),
                    }
                }
                tokens.push(Token::Quoted(value));
            }
            _ => {
                let mut word = String::new();
                while let Some(&c) = chars.peek() {
                    if c.is_whitespace() || c == '(' || c == ')' || c == '"' {
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

impl Parser {
    fn keyword(&mut self, keyword: &str) -> bool {
        match self.tokens.get(self.at) {
            Some(Token::Word(w)) if w.eq_ignore_ascii_case(keyword) => {
                self.at += 1;
                true
            }
            _ => false,
        }
    }

    fn or(&mut self, depth: usize) -> Result<Expr, ()> {
        let mut left = self.and(depth)?;
        while self.keyword("or") {
            left = Expr::Or(Box::new(left), Box::new(self.and(depth)?));
        }
        Ok(left)
    }

    fn and(&mut self, depth: usize) -> Result<Expr, ()> {
        let mut left = self.factor(depth)?;
        while self.keyword("and") {
            left = Expr::And(Box::new(left), Box::new(self.factor(depth)?));
        }
        Ok(left)
    }

    fn factor(&mut self, depth: usize) -> Result<Expr, ()> {
        if depth >= MAX_DEPTH {
            return Err(());
        }
        if self.tokens.get(self.at) == Some(&Token::Open) {
            self.at += 1;
            let inner = self.or(depth + 1)?;
            if self.tokens.get(self.at) != Some(&Token::Close) {
                return Err(());
            }
            self.at += 1;
            return Ok(inner);
        }
        let attr = match self.tokens.get(self.at) {
            Some(Token::Word(w)) => w.clone(),
            _ => return Err(()),
        };
        let op = match self.tokens.get(self.at + 1) {
            Some(Token::Word(w)) => match w.to_ascii_lowercase().as_str() {
                "eq" => Op::Eq,
                "sw" => Op::Sw,
                "co" => Op::Co,
                "gt" => Op::Gt,
                "ge" => Op::Ge,
                "lt" => Op::Lt,
                "le" => Op::Le,
                _ => return Err(()),
            },
            _ => return Err(()),
        };
        let raw = self.tokens.get(self.at + 2).ok_or(())?;
        self.at += 3;
        self.comparisons += 1;
        if self.comparisons > MAX_COMPARISONS {
            return Err(());
        }
        let value = self.check(&attr, op, raw)?;
        Ok(Expr::Compare { attr, op, value })
    }

    /// What Okta accepts: `filter` takes a few attributes with `eq` (timestamps also with
    /// gt/ge/lt/le) and quoted values; `search` takes any profile attribute, `co` only on a few.
    fn check(&self, attr: &str, op: Op, raw: &Token) -> Result<Literal, ()> {
        let ordering = matches!(op, Op::Gt | Op::Ge | Op::Lt | Op::Le);
        let is_time = matches!(
            (self.subject, attr),
            (Subject::Users, "created" | "activated" | "statusChanged" | "lastUpdated")
                | (Subject::Groups, "created" | "lastUpdated" | "lastMembershipUpdated")
        );
        let allowed = if self.search {
            let contains_ok = match self.subject {
                Subject::Users => {
                    matches!(
                        attr,
                        "profile.firstName" | "profile.lastName" | "profile.email" | "profile.login"
                    )
                }
                Subject::Groups => matches!(attr, "profile.name" | "profile.description"),
            };
            let known = match self.subject {
                Subject::Users => {
                    is_time
                        || matches!(attr, "id" | "status" | "type.id")
                        || attr.strip_prefix("profile.").is_some_and(|a| !a.is_empty())
                }
                Subject::Groups => {
                    is_time
                        || matches!(attr, "id" | "type" | "source.id")
                        || attr.strip_prefix("profile.").is_some_and(|a| !a.is_empty())
                }
            };
            known
                && match op {
                    Op::Co => contains_ok,
                    Op::Sw => !is_time,
                    _ => true,
                }
        } else {
            let eq_only = match self.subject {
                Subject::Users => matches!(
                    attr,
                    "id" | "status"
                        | "profile.login"
                        | "profile.email"
                        | "profile.firstName"
                        | "profile.lastName"
                ),
                Subject::Groups => matches!(attr, "id" | "type"),
            };
            let time_ok = match self.subject {
                Subject::Users => attr == "lastUpdated",
                Subject::Groups => matches!(attr, "lastUpdated" | "lastMembershipUpdated"),
            };
            (eq_only && op == Op::Eq) || (time_ok && (op == Op::Eq || ordering))
        };
        if !allowed {
            return Err(());
        }
        match raw {
            Token::Quoted(text) if is_time => canonical_stamp(text).map(Literal::Time).ok_or(()),
            Token::Quoted(text) if self.search => Ok(Literal::Text(text.to_lowercase())),
            Token::Quoted(text) => Ok(Literal::Text(text.clone())),
            Token::Word(word) if self.search && !is_time => match word.to_ascii_lowercase().as_str() {
                "true" => Ok(Literal::Bool(true)),
                "false" => Ok(Literal::Bool(false)),
                _ => word.parse::<f64>().map(Literal::Number).map_err(|_| ()),
            },
            _ => Err(()),
        }
    }
}

impl Expr {
    fn matches(&self, field: &dyn Fn(&str) -> Option<Value>, fold: bool) -> bool {
        match self {
            Expr::And(a, b) => a.matches(field, fold) && b.matches(field, fold),
            Expr::Or(a, b) => a.matches(field, fold) || b.matches(field, fold),
            Expr::Compare { attr, op, value } => field(attr).is_some_and(|v| compare(&v, *op, value, fold)),
        }
    }
}

fn compare(stored: &Value, op: Op, literal: &Literal, fold: bool) -> bool {
    use std::cmp::Ordering as O;
    let ordered = |o: O| match op {
        Op::Eq => o == O::Equal,
        Op::Gt => o == O::Greater,
        Op::Ge => o != O::Less,
        Op::Lt => o == O::Less,
        Op::Le => o != O::Greater,
        Op::Sw | Op::Co => false,
    };
    match (stored, literal) {
        (Value::Array(items), _) => items.iter().any(|item| compare(item, op, literal, fold)),
        (Value::String(s), Literal::Time(t)) => cmp_stamps(s, t).is_some_and(ordered),
        (Value::String(s), Literal::Text(t)) => {
            let folded;
            let s = if fold {
                folded = s.to_lowercase();
                folded.as_str()
            } else {
                s.as_str()
            };
            match op {
                Op::Sw => s.starts_with(t.as_str()),
                Op::Co => s.contains(t.as_str()),
                _ => ordered(s.cmp(t.as_str())),
            }
        }
        (Value::String(s), Literal::Number(n)) => {
            s.parse::<f64>().ok().and_then(|x| x.partial_cmp(n)).is_some_and(ordered)
        }
        (Value::Number(x), Literal::Number(n)) => {
            x.as_f64().and_then(|x| x.partial_cmp(n)).is_some_and(ordered)
        }
        (Value::Number(x), Literal::Text(t)) => {
            t.parse::<f64>().ok().and_then(|n| x.as_f64()?.partial_cmp(&n)).is_some_and(ordered)
        }
        (Value::Bool(b), Literal::Bool(v)) => op == Op::Eq && b == v,
        _ => false,
    }
}

fn user_field(user: &OktaUser, attr: &str) -> Option<Value> {
    match attr {
        "id" => Some(user.id.clone().into()),
        "status" => Some(user.status.clone().into()),
        "created" => Some(user.created.clone().into()),
        "lastUpdated" => Some(user.last_updated.clone().into()),
        "activated" => (user.status != "STAGED").then(|| user.created.clone().into()),
        "statusChanged" => Some(status_changed(user).into()),
        "type.id" => Some(USER_TYPE_ID.into()),
        _ => attr.strip_prefix("profile.").and_then(|name| user.profile.get(name).cloned()),
    }
}

fn group_field(group: &OktaGroup, attr: &str) -> Option<Value> {
    match attr {
        "id" => Some(group.id.clone().into()),
        "type" => Some(group.group_type.clone().into()),
        "created" => Some(group.created.clone().into()),
        "lastUpdated" => Some(group.last_updated.clone().into()),
        "lastMembershipUpdated" => Some(group.last_membership_updated.clone().into()),
        "source.id" => (group.group_type == "APP_GROUP").then(|| source_app(group).into()),
        _ => attr.strip_prefix("profile.").and_then(|name| group_profile(group).remove(name)),
    }
}

// ---------------------------------------------------------------------------------------------
// Wire shapes (§3.1, §4, §5)
// ---------------------------------------------------------------------------------------------

fn status_changed(user: &OktaUser) -> String {
    if user.status == "ACTIVE" {
        user.created.clone()
    } else {
        user.last_updated.clone()
    }
}

fn user_json(base: &str, user: &OktaUser) -> Value {
    let staged = user.status == "STAGED";
    let pending = staged || user.status == "PROVISIONED";
    let when = |present: bool, value: &str| if present { Value::from(value) } else { Value::Null };
    let mut credentials = json!({ "provider": { "type": "OKTA", "name": "OKTA" } });
    if !pending {
        credentials["password"] = json!({});
    }
    json!({
        "id": user.id,
        "status": user.status,
        "created": user.created,
        "activated": when(!staged, &user.created),
        "statusChanged": when(!staged, &status_changed(user)),
        "lastLogin": when(!pending, &user.last_updated),
        "lastUpdated": user.last_updated,
        "passwordChanged": when(!pending, &user.created),
        "type": { "id": USER_TYPE_ID },
        "profile": user.profile,
        "credentials": credentials,
        "_links": { "self": { "href": format!("{base}/api/v1/users/{}", user.id) } }
    })
}

/// The app an `APP_GROUP` was imported from; derived from the group id so it is stable.
fn source_app(group: &OktaGroup) -> String {
    format!("0oa{}", group.id.chars().skip(3).collect::<String>())
}

fn group_profile(group: &OktaGroup) -> Map<String, Value> {
    let mut profile = Map::new();
    profile.insert("name".into(), group.name.clone().into());
    profile.insert("description".into(), group.description.clone().map_or(Value::Null, Value::from));
    if group.group_type == "APP_GROUP" {
        // The extra keys an Active Directory import brings along.
        profile.insert("samAccountName".into(), group.name.clone().into());
        profile.insert("dn".into(), format!("CN={},OU=Groups,DC=acme,DC=example", group.name).into());
        profile.insert("windowsDomainQualifiedName".into(), format!("ACME\\{}", group.name).into());
        profile.insert("groupType".into(), "Security".into());
        profile.insert("groupScope".into(), "Global".into());
        profile.insert("externalId".into(), base64url(&Sha256::digest(group.id.as_bytes())[..16]).into());
    }
    profile
}

fn group_json(base: &str, group: &OktaGroup, users_count: Option<usize>) -> Value {
    let app_group = group.group_type == "APP_GROUP";
    let object_class = if app_group { "okta:windows_security_principal" } else { "okta:user_group" };
    let mut links = json!({
        "logo": [{ "name": "medium", "href": "https://ok12static.oktacdn.com/assets/img/logos/groups/okta-medium.png", "type": "image/png" }],
        "users": { "href": format!("{base}/api/v1/groups/{}/users", group.id) },
        "apps": { "href": format!("{base}/api/v1/groups/{}/apps", group.id) }
    });
    if app_group {
        links["source"] = json!({ "href": format!("{base}/api/v1/apps/{}", source_app(group)) });
    }
    let mut value = json!({
        "id": group.id,
        "created": group.created,
        "lastUpdated": group.last_updated,
        "lastMembershipUpdated": group.last_membership_updated,
        "objectClass": [object_class],
        "type": group.group_type,
        "profile": group_profile(group),
        "_links": links
    });
    if let Some(count) = users_count {
        value["_embedded"] = json!({ "stats": { "usersCount": count } });
    }
    value
}

fn app_user_json(base: &str, app_id: &str, user: &OktaUser, scope: &str, expand: bool) -> Value {
    let text = |key: &str| user.profile.get(key).cloned().unwrap_or(Value::Null);
    let mut value = json!({
        "id": user.id,
        "externalId": null,
        "created": user.created,
        "lastUpdated": user.last_updated,
        "scope": scope,
        "status": if user.status == "STAGED" { "STAGED" } else { "ACTIVE" },
        "statusChanged": user.last_updated,
        "passwordChanged": null,
        "syncState": "DISABLED",
        "credentials": { "userName": text("login") },
        "profile": { "email": text("email"), "displayName": text("displayName") },
        "_links": {
            "app": { "href": format!("{base}/api/v1/apps/{app_id}") },
            "user": { "href": format!("{base}/api/v1/users/{}", user.id) }
        }
    });
    if expand {
        value["_embedded"] = json!({ "user": user_json(base, user) });
    }
    value
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
}

/// A failure to inject with `FakeOkta::fail_next`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// 429 E0000047, `X-Rate-Limit-Remaining: 0`, reset one second from now.
    RateLimited,
    /// 500 E0000009.
    ServerError,
    /// 503 E0000010.
    Unavailable,
    /// 401 E0000011.
    InvalidToken,
    /// 403 E0000006 (role too narrow).
    Forbidden,
    /// 403 without a body, `WWW-Authenticate: Bearer ... error="insufficient_scope"`.
    InsufficientScope,
}

/// An OAuth "API Services" app allowed to mint tokens with `private_key_jwt`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceApp {
    pub client_id: String,
    /// The RSA public key, SPKI PEM ("BEGIN PUBLIC KEY").
    pub public_key_pem: String,
    pub key_id: String,
    pub scopes: Vec<String>,
    pub require_dpop: bool,
}

pub struct FakeOkta {
    shared: Arc<Shared>,
    system: actix_web::rt::System,
}

impl FakeOkta {
    /// Starts serving `org` on 127.0.0.1 and a free port.
    pub fn start(org: Org) -> FakeOkta {
        Self::start_on_port(org, 0)
    }

    /// Starts serving `org` on 127.0.0.1:`port` (0 picks a free one).
    pub fn start_on_port(org: Org, port: u16) -> FakeOkta {
        let listener =
            TcpListener::bind(("127.0.0.1", port)).unwrap_or_else(|e| panic!("bind 127.0.0.1:{port}: {e}"));
        let addr = listener.local_addr().unwrap();
        let mut state = State {
            org,
            users_by_id: HashMap::new(),
            groups_by_id: HashMap::new(),
            buckets: Default::default(),
            most_used: [0; 4],
            failures: VecDeque::new(),
            service_apps: Vec::new(),
            access_tokens: HashMap::new(),
            used_assertion_ids: HashSet::new(),
            used_proof_ids: HashSet::new(),
            dpop_nonce: random_alnum(32),
            requests: Vec::new(),
        };
        state.reindex();
        let shared = Arc::new(Shared {
            base_url: format!("http://{addr}"),
            api_token: format!("00{}", random_alnum(40)),
            cursor_key: random_alnum(32),
            state: Mutex::new(state),
            in_flight: AtomicUsize::new(0),
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
        FakeOkta { shared, system }
    }

    /// "http://127.0.0.1:<port>".
    pub fn base_url(&self) -> String {
        self.shared.base_url.clone()
    }

    /// The SSWS token this org accepts.
    pub fn api_token(&self) -> String {
        self.shared.api_token.clone()
    }

    /// Changes the org; use the `Org` helpers so that timestamps move as Okta's do.
    pub fn change(&self, f: impl FnOnce(&mut Org)) {
        let mut state = self.shared.lock();
        f(&mut state.org);
        state.reindex();
    }

    /// Reads the org (e.g. for what a test expects the importer to see).
    pub fn read<R>(&self, f: impl FnOnce(&Org) -> R) -> R {
        f(&self.shared.lock().org)
    }

    /// Every request received so far, in order.
    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.lock().requests.clone()
    }

    /// The next `count` requests whose path starts with `path_prefix` fail with `failure`.
    pub fn fail_next(&self, path_prefix: &str, count: usize, failure: Failure) {
        self.shared.lock().failures.push_back((path_prefix.to_string(), count, failure));
    }

    pub fn register_service_app(&self, app: ServiceApp) {
        let mut state = self.shared.lock();
        state.service_apps.retain(|a| a.client_id != app.client_id);
        state.service_apps.push(app);
    }

    /// Makes every access token minted so far expire now, as an hour passing would.
    pub fn expire_access_tokens(&self) {
        let now = Instant::now();
        for token in self.shared.lock().access_tokens.values_mut() {
            token.expires = now;
        }
    }

    /// The most requests one window of the bucket serving `path` has counted so far.
    pub fn most_used_in_a_window(&self, path: &str) -> u32 {
        self.shared.lock().most_used[bucket_of(path) as usize]
    }

    /// Starts fresh rate-limit windows, as waiting for `X-Rate-Limit-Reset` would.
    pub fn reset_rate_limits(&self) {
        self.shared.lock().buckets = Default::default();
    }

    /// Holds every request this long before answering (for the concurrency cap).
    pub fn set_latency(&self, latency: Duration) {
        self.shared.latency_ms.store(latency.as_millis() as u64, Ordering::SeqCst);
    }
}

impl Drop for FakeOkta {
    fn drop(&mut self) {
        self.system.stop();
    }
}

struct Shared {
    base_url: String,
    api_token: String,
    /// Keys the cursors' check digits, so that a forged or garbled `after` is refused.
    cursor_key: String,
    state: Mutex<State>,
    in_flight: AtomicUsize,
    latency_ms: AtomicU64,
}

struct State {
    org: Org,
    users_by_id: HashMap<String, usize>,
    groups_by_id: HashMap<String, usize>,
    buckets: [Bucket; 4],
    /// The most requests any one window of each bucket has counted.
    most_used: [u32; 4],
    failures: VecDeque<(String, usize, Failure)>,
    service_apps: Vec<ServiceApp>,
    access_tokens: HashMap<String, AccessToken>,
    used_assertion_ids: HashSet<String>,
    used_proof_ids: HashSet<String>,
    dpop_nonce: String,
    requests: Vec<Recorded>,
}

struct AccessToken {
    scopes: Vec<String>,
    /// The SHA-256 JWK thumbprint of the DPoP key the token is bound to.
    dpop_jkt: Option<String>,
    expires: Instant,
}

#[derive(Default, Clone, Copy)]
struct Bucket {
    /// Start of the current window: monotonic, and in epoch ms for `X-Rate-Limit-Reset`.
    started: Option<(Instant, i64)>,
    used: u32,
}

#[derive(Clone, Copy)]
enum BucketKind {
    UsersList = 0,
    Groups = 1,
    Apps = 2,
    Other = 3,
}

/// The three `X-Rate-Limit-*` values of one response.
#[derive(Clone, Copy)]
struct RateView {
    limit: u32,
    remaining: u32,
    reset: i64,
}

impl State {
    /// Listings page through users and groups in id order; lookups go through the indexes.
    fn reindex(&mut self) {
        self.org.users.sort_by(|a, b| a.id.cmp(&b.id));
        self.org.groups.sort_by(|a, b| a.id.cmp(&b.id));
        self.users_by_id = self.org.users.iter().enumerate().map(|(i, u)| (u.id.clone(), i)).collect();
        self.groups_by_id = self.org.groups.iter().enumerate().map(|(i, g)| (g.id.clone(), i)).collect();
    }

    fn find_user(&self, id: &str) -> Option<&OktaUser> {
        self.users_by_id.get(id).and_then(|&i| self.org.users.get(i))
    }

    fn find_group(&self, id: &str) -> Option<&OktaGroup> {
        self.groups_by_id.get(id).and_then(|&i| self.org.groups.get(i))
    }

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

    fn limit_of(&self, kind: BucketKind) -> u32 {
        let limits = &self.org.limits;
        match kind {
            BucketKind::UsersList => limits.users_list,
            BucketKind::Groups => limits.groups,
            BucketKind::Apps => limits.apps,
            BucketKind::Other => limits.other,
        }
    }

    /// The bucket with its window rolled over if it has ended.
    fn bucket(&mut self, kind: BucketKind) -> &mut Bucket {
        let window = self.org.limits.window;
        let bucket = &mut self.buckets[kind as usize];
        if bucket.started.is_none_or(|(start, _)| start.elapsed() >= window) {
            *bucket = Bucket { started: Some((Instant::now(), now_ms())), used: 0 };
        }
        bucket
    }

    fn view(&mut self, kind: BucketKind) -> RateView {
        let limit = self.limit_of(kind);
        let window_ms = self.org.limits.window.as_millis() as i64;
        let bucket = *self.bucket(kind);
        let start_ms = bucket.started.map_or_else(now_ms, |(_, ms)| ms);
        RateView {
            limit,
            remaining: limit.saturating_sub(bucket.used),
            reset: (start_ms + window_ms + 999) / 1000,
        }
    }

    /// Counts one request against its bucket; Err when the bucket is exhausted.
    fn consume(&mut self, kind: BucketKind) -> Result<RateView, RateView> {
        let limit = self.limit_of(kind);
        let bucket = self.bucket(kind);
        if bucket.used >= limit {
            return Err(self.view(kind));
        }
        bucket.used += 1;
        let used = bucket.used;
        let most = &mut self.most_used[kind as usize];
        *most = (*most).max(used);
        Ok(self.view(kind))
    }
}

fn bucket_of(path: &str) -> BucketKind {
    let segments: Vec<&str> = path.split('/').collect();
    match segments.as_slice() {
        ["", "api", "v1", "users"] => BucketKind::UsersList,
        ["", "api", "v1", "groups"] | ["", "api", "v1", "groups", _, "users"] => BucketKind::Groups,
        ["", "api", "v1", "apps", ..] => BucketKind::Apps,
        _ => BucketKind::Other,
    }
}

/// A response before the rate-limit headers are added.
struct Answer {
    status: StatusCode,
    headers: Vec<(&'static str, String)>,
    body: Option<Value>,
}

impl Answer {
    fn json(status: u16, body: Value) -> Answer {
        Answer { status: status_code(status), headers: Vec::new(), body: Some(body) }
    }

    fn empty(status: u16) -> Answer {
        Answer { status: status_code(status), headers: Vec::new(), body: None }
    }

    fn with(mut self, name: &'static str, value: String) -> Answer {
        self.headers.push((name, value));
        self
    }
}

fn status_code(status: u16) -> StatusCode {
    StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

/// An Okta API error body (§6).
fn okta_error(status: u16, code: &str, summary: &str) -> Answer {
    Answer::json(
        status,
        json!({
            "errorCode": code,
            "errorSummary": summary,
            "errorLink": code,
            "errorId": format!("oae{}", random_alnum(22)),
            "errorCauses": []
        }),
    )
}

fn not_found(id: &str, kind: &str) -> Answer {
    okta_error(404, "E0000007", &format!("Not found: Resource not found: {id} ({kind})"))
}

fn invalid_search() -> Answer {
    okta_error(400, "E0000031", "Invalid search criteria.")
}

fn invalid_paging() -> Answer {
    okta_error(400, "E0000029", "Invalid paging request.")
}

fn invalid_token() -> Answer {
    okta_error(401, "E0000011", "Invalid token provided")
}

fn rate_limited() -> Answer {
    okta_error(429, "E0000047", "API call exceeded rate limit due to too many requests.")
}

/// A token-endpoint error body (§1.2).
fn oauth_error(status: u16, error: &str, description: &str) -> Answer {
    Answer::json(status, json!({ "error": error, "error_description": description }))
}

const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
const PRIVATE_KEY_JWT_ONLY: &str = "Client Credentials requests to the Org Authorization Server must use the private_key_jwt token_endpoint_auth_method.";
const DPOP_ALGS: &str = "RS256 RS384 RS512 ES256 ES384 ES512";
/// Query values in the `next` link: everything but unreserved characters is escaped.
const QUERY_VALUE: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// Who is calling: the SSWS token may do anything, OAuth tokens what their scopes allow.
struct Caller {
    scopes: Option<Vec<String>>,
    scheme: &'static str,
}

enum Route {
    Users,
    User(String),
    Groups,
    Group(String),
    GroupUsers(String),
    AppUsers(String),
    AppGroups(String),
}

impl Route {
    fn scope(&self) -> &'static str {
        match self {
            Route::Users | Route::User(_) => "okta.users.read",
            Route::Groups | Route::Group(_) | Route::GroupUsers(_) => "okta.groups.read",
            Route::AppUsers(_) | Route::AppGroups(_) => "okta.apps.read",
        }
    }
}

fn scope_for_path(path: &str) -> &'static str {
    if path.starts_with("/api/v1/groups") {
        "okta.groups.read"
    } else if path.starts_with("/api/v1/apps") {
        "okta.apps.read"
    } else {
        "okta.users.read"
    }
}

/// The query string as pairs, in order.
struct Query {
    pairs: Vec<(String, String)>,
}

impl Query {
    fn parse(raw: &str) -> Query {
        Query { pairs: url::form_urlencoded::parse(raw.as_bytes()).into_owned().collect() }
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.pairs.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    /// `limit` with Okta's default, floor and cap; larger values are capped, not refused.
    fn limit(&self, default: usize, min: usize, max: usize) -> Result<usize, Answer> {
        match self.get("limit") {
            None => Ok(default),
            Some(raw) => match raw.trim().parse::<i64>() {
                Ok(n) if n >= 1 => Ok(usize::try_from(n).unwrap_or(max).clamp(min, max)),
                _ => Err(Answer::json(
                    400,
                    json!({
                        "errorCode": "E0000001",
                        "errorSummary": "Api validation failed: limit",
                        "errorLink": "E0000001",
                        "errorId": format!("oae{}", random_alnum(22)),
                        "errorCauses": [{ "errorSummary": "limit: The value must be a positive integer." }]
                    }),
                )),
            },
        }
    }

    fn has(&self, name: &str, value: &str) -> bool {
        self.get(name).is_some_and(|v| v.split(',').any(|part| part.trim() == value))
    }
}

/// One page of a listing: the items and, when more remain, the cursor of the next page.
struct Page {
    items: Vec<Value>,
    next: Option<String>,
    limit: usize,
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

struct InFlight<'a>(&'a AtomicUsize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn handle(req: HttpRequest, body: web::Bytes, shared: web::Data<Shared>) -> HttpResponse {
    // Counted in flight before it is recorded, so a test that sees it recorded sees it in flight.
    let in_flight = shared.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    let _slot = InFlight(&shared.in_flight);
    shared.record(&req);
    if in_flight > shared.lock().org.max_in_flight {
        // Okta's concurrency 429: limit and remaining 0, reset only an estimate.
        let view = RateView { limit: 0, remaining: 0, reset: now_secs() + 1 };
        return render(rate_limited(), Some(view));
    }
    let latency = shared.latency_ms.load(Ordering::SeqCst);
    if latency > 0 {
        actix_web::rt::time::sleep(Duration::from_millis(latency)).await;
    }
    shared.respond(&req, &body)
}

fn render(answer: Answer, rate: Option<RateView>) -> HttpResponse {
    let mut response = HttpResponse::build(answer.status);
    if let Some(rate) = rate {
        response.insert_header(("X-Rate-Limit-Limit", rate.limit.to_string()));
        response.insert_header(("X-Rate-Limit-Remaining", rate.remaining.to_string()));
        response.insert_header(("X-Rate-Limit-Reset", rate.reset.to_string()));
    }
    for (name, value) in answer.headers {
        response.append_header((name, value));
    }
    match answer.body {
        Some(body) => {
            response.content_type("application/json").body(serde_json::to_vec(&body).unwrap_or_default())
        }
        None => response.finish(),
    }
}

impl Shared {
    /// The state, even after a test's `change` closure panicked while holding it.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn record(&self, req: &HttpRequest) {
        let recorded = Recorded {
            method: req.method().to_string(),
            path_and_query: req
                .uri()
                .path_and_query()
                .map_or_else(|| req.path().to_string(), |p| p.to_string()),
            authorization: req
                .headers()
                .get("authorization")
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned()),
        };
        self.lock().requests.push(recorded);
    }

    fn respond(&self, req: &HttpRequest, body: &[u8]) -> HttpResponse {
        let path = req.path().to_string();
        let kind = bucket_of(&path);
        let mut state = self.lock();
        if let Some(failure) = state.take_failure(&path) {
            let mut view = state.view(kind);
            let answer = match failure {
                Failure::RateLimited => {
                    view = RateView { remaining: 0, reset: now_secs() + 1, ..view };
                    rate_limited()
                }
                Failure::ServerError => okta_error(500, "E0000009", "Internal Server Error"),
                Failure::Unavailable => okta_error(503, "E0000010", "Service is in read only mode"),
                Failure::InvalidToken => invalid_token(),
                Failure::Forbidden => {
                    okta_error(403, "E0000006", "You do not have permission to perform the requested action")
                }
                Failure::InsufficientScope => self.insufficient_scope("Bearer", scope_for_path(&path), &path),
            };
            return render(answer, Some(view));
        }
        let view = match state.consume(kind) {
            Ok(view) => view,
            Err(view) => return render(rate_limited(), Some(view)),
        };
        let answer = self.route(&mut state, req, body, &path);
        render(answer, Some(view))
    }

    fn route(&self, state: &mut State, req: &HttpRequest, body: &[u8], path: &str) -> Answer {
        let method = req.method().as_str();
        if path == "/oauth2/v1/token" {
            if method != "POST" {
                return method_not_allowed("POST");
            }
            return self.token(state, req, body);
        }
        if !path.starts_with("/api/v1/") {
            return not_found(path, "Resource");
        }
        let caller = match self.authenticate(state, req, path) {
            Ok(caller) => caller,
            Err(answer) => return answer,
        };
        let segments: Vec<String> = path
            .split('/')
            .map(|s| percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned())
            .collect();
        let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
        let route = match segments.as_slice() {
            ["", "api", "v1", "users"] => Route::Users,
            ["", "api", "v1", "users", id] => Route::User(id.to_string()),
            ["", "api", "v1", "groups"] => Route::Groups,
            ["", "api", "v1", "groups", id] => Route::Group(id.to_string()),
            ["", "api", "v1", "groups", id, "users"] => Route::GroupUsers(id.to_string()),
            ["", "api", "v1", "apps", id, "users"] => Route::AppUsers(id.to_string()),
            ["", "api", "v1", "apps", id, "groups"] => Route::AppGroups(id.to_string()),
            _ => return not_found(path, "Resource"),
        };
        if method != "GET" {
            return method_not_allowed("GET");
        }
        if let Some(scopes) = &caller.scopes {
            if !scopes.iter().any(|s| s == route.scope()) {
                return self.insufficient_scope(caller.scheme, route.scope(), path);
            }
        }
        let query = Query::parse(req.query_string());
        let page = match &route {
            Route::User(id) => {
                // By id or by login, like GET /api/v1/users/{idOrLogin}.
                let user = state.find_user(id).or_else(|| {
                    state
                        .org
                        .users
                        .iter()
                        .find(|u| u.profile.get("login").and_then(Value::as_str) == Some(id.as_str()))
                });
                return match user {
                    Some(user) => Answer::json(200, user_json(&self.base_url, user)),
                    None => not_found(id, "User"),
                };
            }
            Route::Group(id) => {
                return match state.find_group(id) {
                    Some(group) => Answer::json(200, group_json(&self.base_url, group, None)),
                    None => not_found(id, "UserGroup"),
                };
            }
            Route::Users => self.list_users(state, &query),
            Route::Groups => self.list_groups(state, &query),
            Route::GroupUsers(id) => self.list_members(state, &query, id),
            Route::AppUsers(id) => self.list_app_users(state, &query, id),
            Route::AppGroups(id) => self.list_app_groups(state, &query, id),
        };
        match page {
            Ok(page) => self.page_answer(path, req.query_string(), &query, page),
            Err(answer) => answer,
        }
    }

    /// The bare-array body and the `link` headers of §2.
    fn page_answer(&self, path: &str, raw_query: &str, query: &Query, page: Page) -> Answer {
        let self_url = if raw_query.is_empty() {
            format!("{}{path}", self.base_url)
        } else {
            format!("{}{path}?{raw_query}", self.base_url)
        };
        let mut answer =
            Answer::json(200, Value::Array(page.items)).with("link", format!("<{self_url}>; rel=\"self\""));
        if let Some(after) = page.next {
            let escape = |v: &str| percent_encoding::utf8_percent_encode(v, QUERY_VALUE).to_string();
            let mut next = format!("{}{path}?after={}&limit={}", self.base_url, escape(&after), page.limit);
            for (name, value) in query.pairs.iter().filter(|(n, _)| n != "after" && n != "limit") {
                next.push_str(&format!("&{}={}", escape(name), escape(value)));
            }
            answer = answer.with("link", format!("<{next}>; rel=\"next\""));
        }
        answer
    }

    fn cursor(&self, listing: &str, last_id: &str) -> String {
        let payload = hex::encode(format!("{listing}\n{last_id}"));
        let check = self.cursor_check(&payload);
        format!("{payload}{check}")
    }

    fn cursor_check(&self, payload: &str) -> String {
        let digest = Sha256::digest(format!("{}{payload}", self.cursor_key).as_bytes());
        hex::encode(&digest[..8])
    }

    /// The last id of the previous page; E0000029 for a cursor this listing did not issue.
    fn after(&self, query: &Query, listing: &str) -> Result<Option<String>, Answer> {
        let Some(after) = query.get("after") else { return Ok(None) };
        self.decode_cursor(after, listing).map(Some).ok_or_else(invalid_paging)
    }

    fn decode_cursor(&self, after: &str, listing: &str) -> Option<String> {
        let split = after.len().checked_sub(16).filter(|&at| at > 0 && after.is_char_boundary(at))?;
        let (payload, check) = after.split_at(split);
        if check != self.cursor_check(payload) {
            return None;
        }
        let text = String::from_utf8(hex::decode(payload).ok()?).ok()?;
        let (issued_for, id) = text.split_once('\n')?;
        (issued_for == listing).then(|| id.to_string())
    }

    fn expression(&self, query: &Query, subject: Subject) -> Result<Option<(Expr, bool)>, Answer> {
        match (query.get("search"), query.get("filter")) {
            (Some(_), Some(_)) => Err(okta_error(
                400,
                "E0000033",
                "Bad request. Can't specify a search query and filter in the same request.",
            )),
            (Some(search), None) => parse_expression(search, subject, true)
                .map(|e| Some((e, true)))
                .map_err(|()| invalid_search()),
            (None, Some(filter)) => parse_expression(filter, subject, false)
                .map(|e| Some((e, false)))
                .map_err(|()| invalid_search()),
            (None, None) => Ok(None),
        }
    }

    fn list_users(&self, state: &State, query: &Query) -> Result<Page, Answer> {
        let expression = self.expression(query, Subject::Users)?;
        if expression.is_none() {
            if let Some(q) = query.get("q") {
                // Prefix search for pickers: no paging, DEPROVISIONED omitted.
                let limit = query.limit(10, 1, 200)?;
                let q = q.to_lowercase();
                let hit = |u: &OktaUser| {
                    u.status != DEPROVISIONED
                        && ["firstName", "lastName", "email"].iter().any(|k| {
                            u.profile
                                .get(*k)
                                .and_then(Value::as_str)
                                .is_some_and(|v| v.to_lowercase().starts_with(&q))
                        })
                };
                let items = state.org.users.iter().filter(|u| hit(u)).take(limit);
                return Ok(Page {
                    items: items.map(|u| user_json(&self.base_url, u)).collect(),
                    next: None,
                    limit,
                });
            }
        }
        let limit = query.limit(200, 1, 200)?;
        let start = match self.after(query, "users")? {
            Some(last) => state.org.users.partition_point(|u| u.id <= last),
            None => 0,
        };
        let keep = |u: &&OktaUser| match &expression {
            None => u.status != DEPROVISIONED,
            Some((expr, fold)) => expr.matches(&|attr| user_field(u, attr), *fold),
        };
        let (users, more) = take_page(state.org.users.iter().skip(start).filter(keep), limit);
        let next = users.last().filter(|_| more).map(|u| self.cursor("users", &u.id));
        Ok(Page { items: users.iter().map(|u| user_json(&self.base_url, u)).collect(), next, limit })
    }

    fn list_groups(&self, state: &State, query: &Query) -> Result<Page, Answer> {
        let expression = self.expression(query, Subject::Groups)?;
        let stats = query.has("expand", "stats");
        let json = |g: &OktaGroup| {
            let count = stats.then(|| state.org.members.get(&g.id).map_or(0, BTreeSet::len));
            group_json(&self.base_url, g, count)
        };
        if expression.is_none() {
            if let Some(q) = query.get("q") {
                let limit = query.limit(300, 1, 10_000)?;
                let q = q.to_lowercase();
                let items =
                    state.org.groups.iter().filter(|g| g.name.to_lowercase().starts_with(&q)).take(limit);
                return Ok(Page { items: items.map(json).collect(), next: None, limit });
            }
        }
        let limit = query.limit(10_000, 1, 10_000)?;
        let start = match self.after(query, "groups")? {
            Some(last) => state.org.groups.partition_point(|g| g.id <= last),
            None => 0,
        };
        let keep = |g: &&OktaGroup| match &expression {
            None => true,
            Some((expr, fold)) => expr.matches(&|attr| group_field(g, attr), *fold),
        };
        let (groups, more) = take_page(state.org.groups.iter().skip(start).filter(keep), limit);
        let next = groups.last().filter(|_| more).map(|g| self.cursor("groups", &g.id));
        Ok(Page { items: groups.into_iter().map(json).collect(), next, limit })
    }

    fn list_members(&self, state: &State, query: &Query, group_id: &str) -> Result<Page, Answer> {
        if state.find_group(group_id).is_none() {
            return Err(not_found(group_id, "UserGroup"));
        }
        let limit = query.limit(1000, 1, 1000)?;
        let listing = format!("members:{group_id}");
        let after = self.after(query, &listing)?;
        let empty = BTreeSet::new();
        let members = state.org.members.get(group_id).unwrap_or(&empty);
        let ids: Box<dyn Iterator<Item = &String>> = match &after {
            Some(last) => Box::new(
                members.range::<String, _>((std::ops::Bound::Excluded(last), std::ops::Bound::Unbounded)),
            ),
            None => Box::new(members.iter()),
        };
        // Deprovisioned members stay members (§4.1); deleted users are gone.
        let (users, more) = take_page(ids.filter_map(|id| state.find_user(id)), limit);
        let next = users.last().filter(|_| more).map(|u| self.cursor(&listing, &u.id));
        Ok(Page { items: users.iter().map(|u| user_json(&self.base_url, u)).collect(), next, limit })
    }

    fn list_app_users(&self, state: &State, query: &Query, app_id: &str) -> Result<Page, Answer> {
        let Some((direct, groups)) = state.org.apps.get(app_id) else {
            return Err(not_found(app_id, "AppInstance"));
        };
        let limit = query.limit(50, 1, 500)?;
        let listing = format!("appusers:{app_id}");
        let after = self.after(query, &listing)?;
        let expand = query.has("expand", "user");
        // Deactivation removes assignments, so DEPROVISIONED users never show (§5).
        let assigned = |id: &String| state.find_user(id).filter(|u| u.status != DEPROVISIONED);
        let from = |set: &BTreeSet<String>| -> Vec<String> {
            let range: Box<dyn Iterator<Item = &String>> = match &after {
                Some(last) => Box::new(
                    set.range::<String, _>((std::ops::Bound::Excluded(last), std::ops::Bound::Unbounded)),
                ),
                None => Box::new(set.iter()),
            };
            // Each source's first limit + 1 assignees past the cursor are enough for the union's.
            range.filter(|id| assigned(id).is_some()).take(limit + 1).cloned().collect()
        };
        let mut candidates: BTreeSet<String> = from(direct).into_iter().collect();
        for group in groups {
            if let Some(members) = state.org.members.get(group) {
                candidates.extend(from(members));
            }
        }
        let (ids, more) = take_page(candidates.into_iter(), limit);
        let next = ids.last().filter(|_| more).map(|id| self.cursor(&listing, id));
        let items = ids
            .iter()
            .filter_map(|id| {
                let scope = if direct.contains(id) { "USER" } else { "GROUP" };
                assigned(id).map(|u| app_user_json(&self.base_url, app_id, u, scope, expand))
            })
            .collect();
        Ok(Page { items, next, limit })
    }

    fn list_app_groups(&self, state: &State, query: &Query, app_id: &str) -> Result<Page, Answer> {
        let Some((_, groups)) = state.org.apps.get(app_id) else {
            return Err(not_found(app_id, "AppInstance"));
        };
        let limit = query.limit(20, 20, 200)?;
        let listing = format!("appgroups:{app_id}");
        let after = self.after(query, &listing)?;
        let expand = query.has("expand", "group");
        let assigned: Vec<(usize, &OktaGroup)> =
            groups.iter().filter_map(|id| state.find_group(id)).enumerate().collect();
        let start = after.map_or(0, |last| assigned.partition_point(|(_, g)| g.id <= last));
        let (page, more) = take_page(assigned.into_iter().skip(start), limit);
        let next = page.last().filter(|_| more).map(|(_, g)| self.cursor(&listing, &g.id));
        let items = page
            .into_iter()
            .map(|(priority, group)| {
                let mut value = json!({
                    "id": group.id,
                    "priority": priority,
                    "lastUpdated": group.last_updated,
                    "profile": {},
                    "_links": {
                        "app": { "href": format!("{}/api/v1/apps/{app_id}", self.base_url) },
                        "group": { "href": format!("{}/api/v1/groups/{}", self.base_url, group.id) }
                    }
                });
                if expand {
                    value["_embedded"] = json!({ "group": group_json(&self.base_url, group, None) });
                }
                value
            })
            .collect();
        Ok(Page { items, next, limit })
    }

    fn insufficient_scope(&self, scheme: &str, scope: &str, path: &str) -> Answer {
        let base = &self.base_url;
        Answer::empty(403).with(
            "WWW-Authenticate",
            format!(
                "{scheme} authorization_uri=\"{base}/oauth2/v1/authorize\", realm=\"{base}\", scope=\"{scope}\", \
                 error=\"insufficient_scope\", error_description=\"The access token provided does not contain the required scopes.\", \
                 resource=\"{path}\""
            ),
        )
    }

    /// A resource-side DPoP failure: 400, explained only in `WWW-Authenticate` (§1.2).
    fn dpop_challenge(&self, error: &str, description: &str, path: &str) -> Answer {
        Answer::empty(400).with(
            "WWW-Authenticate",
            format!(
                "DPoP algs=\"{DPOP_ALGS}\", realm=\"{}\", scope=\"{}\", error=\"{error}\", error_description=\"{description}\", resource=\"{path}\"",
                self.base_url,
                scope_for_path(path)
            ),
        )
    }

    fn authenticate(&self, state: &mut State, req: &HttpRequest, path: &str) -> Result<Caller, Answer> {
        let header = req.headers().get("authorization").and_then(|v| v.to_str().ok()).unwrap_or("");
        let (scheme, credentials) = header.split_once(' ').unwrap_or((header, ""));
        let credentials = credentials.trim();
        match scheme {
            "SSWS" if credentials == self.api_token => Ok(Caller { scopes: None, scheme: "Bearer" }),
            s if s.eq_ignore_ascii_case("basic") => Err(okta_error(403, "E0000005", "Invalid session")),
            s if s.eq_ignore_ascii_case("bearer") => {
                let token = state.access_tokens.get(credentials).filter(|t| t.expires > Instant::now());
                match token {
                    None => Err(invalid_token().with(
                        "WWW-Authenticate",
                        format!(
                            "Bearer authorization_uri=\"{base}/oauth2/v1/authorize\", realm=\"{base}\", error=\"invalid_token\", error_description=\"The token is not valid.\", resource=\"{path}\"",
                            base = self.base_url
                        ),
                    )),
                    Some(t) if t.dpop_jkt.is_some() => Err(self.dpop_challenge(
                        "invalid_request",
                        "The resource request must use the DPoP authentication scheme when using a DPoP bound token.",
                        path,
                    )),
                    Some(t) => Ok(Caller { scopes: Some(t.scopes.clone()), scheme: "Bearer" }),
                }
            }
            s if s.eq_ignore_ascii_case("dpop") => {
                let (scopes, jkt) = match state.access_tokens.get(credentials) {
                    Some(t) if t.expires > Instant::now() => match &t.dpop_jkt {
                        Some(jkt) => (t.scopes.clone(), jkt.clone()),
                        None => return Err(invalid_token()),
                    },
                    _ => return Err(invalid_token()),
                };
                let Some(proof) = req.headers().get("dpop").and_then(|v| v.to_str().ok()) else {
                    return Err(self.dpop_challenge(
                        "invalid_dpop_proof",
                        "The DPoP proof JWT header is missing.",
                        path,
                    ));
                };
                let htu = format!("{}{path}", self.base_url);
                let checked = verify_proof(state, proof, req.method().as_str(), &htu)
                    .map_err(|description| self.dpop_challenge("invalid_dpop_proof", description, path))?;
                let ath = base64url(&Sha256::digest(credentials.as_bytes()));
                if checked.claims.get("ath").and_then(Value::as_str) != Some(ath.as_str()) {
                    return Err(self.dpop_challenge(
                        "invalid_dpop_proof",
                        "'ath' claim in the DPoP proof JWT is invalid.",
                        path,
                    ));
                }
                if checked.jkt != jkt {
                    return Err(self.dpop_challenge(
                        "invalid_dpop_proof",
                        "The DPoP proof JWT key does not match the key the access token is bound to.",
                        path,
                    ));
                }
                Ok(Caller { scopes: Some(scopes), scheme: "DPoP" })
            }
            _ => Err(invalid_token()),
        }
    }

    /// `POST /oauth2/v1/token`: client credentials with `private_key_jwt`, DPoP when required.
    fn token(&self, state: &mut State, req: &HttpRequest, body: &[u8]) -> Answer {
        let form: Vec<(String, String)> = url::form_urlencoded::parse(body).into_owned().collect();
        let field = |name: &str| form.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str());
        match field("grant_type") {
            Some("client_credentials") => {}
            Some(_) => {
                return oauth_error(
                    400,
                    "unsupported_grant_type",
                    "The authorization grant type is not supported by the authorization server. Configured grant types: [client_credentials].",
                )
            }
            None => return oauth_error(400, "invalid_request", "The token request must specify a 'grant_type'."),
        }
        let basic = req
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.get(..6).is_some_and(|s| s.eq_ignore_ascii_case("basic ")));
        let assertion = match (field("client_assertion_type"), field("client_assertion")) {
            (Some(JWT_BEARER), Some(assertion)) if !basic && field("client_secret").is_none() => assertion,
            _ => return oauth_error(401, "invalid_client", PRIVATE_KEY_JWT_ONLY),
        };
        let (app, jti) = match self.verify_assertion(state, assertion, field("client_id")) {
            Ok(verified) => verified,
            Err(description) => return oauth_error(401, "invalid_client", description),
        };

        let mut jkt = None;
        if app.require_dpop {
            let Some(proof) = req.headers().get("dpop").and_then(|v| v.to_str().ok()) else {
                return oauth_error(400, "invalid_dpop_proof", "The DPoP proof JWT header is missing.");
            };
            let token_url = format!("{}/oauth2/v1/token", self.base_url);
            let checked = match verify_proof(state, proof, "POST", &token_url) {
                Ok(checked) => checked,
                Err(description) => return oauth_error(400, "invalid_dpop_proof", description),
            };
            if checked.claims.get("nonce").and_then(Value::as_str) != Some(state.dpop_nonce.as_str()) {
                return oauth_error(
                    400,
                    "use_dpop_nonce",
                    "Authorization server requires nonce in DPoP proof.",
                )
                .with("dpop-nonce", state.dpop_nonce.clone());
            }
            jkt = Some(checked.jkt);
        }

        let requested: Vec<&str> =
            field("scope").unwrap_or("").split(' ').filter(|s| !s.is_empty()).collect();
        if requested.is_empty() {
            return oauth_error(400, "invalid_scope", "No scopes were requested.");
        }
        let denied: Vec<&str> =
            requested.iter().copied().filter(|s| !app.scopes.iter().any(|g| g == s)).collect();
        if denied.len() == requested.len() {
            return oauth_error(400, "consent_required", "You are not allowed any of the requested scopes.");
        }
        if !denied.is_empty() {
            return oauth_error(
                400,
                "invalid_scope",
                &format!("The following scopes are not allowed for this request: [{}]", denied.join(", ")),
            );
        }

        // Only an exchange that issues a token uses up the assertion, so retrying after
        // use_dpop_nonce with the same assertion works.
        if let Some(jti) = jti {
            state.used_assertion_ids.insert(jti);
        }
        let access_token = random_alnum(64);
        let token_type = if jkt.is_some() { "DPoP" } else { "Bearer" };
        state.access_tokens.insert(
            access_token.clone(),
            AccessToken {
                scopes: requested.iter().map(|s| s.to_string()).collect(),
                dpop_jkt: jkt,
                expires: Instant::now() + Duration::from_secs(3600),
            },
        );
        Answer::json(
            200,
            json!({
                "token_type": token_type,
                "expires_in": 3600,
                "access_token": access_token,
                "scope": requested.join(" ")
            }),
        )
        .with("Cache-Control", "no-cache, no-store".into())
        .with("Pragma", "no-cache".into())
    }

    /// Checks a client assertion (§1.2); Err is the `invalid_client` description.
    fn verify_assertion(
        &self,
        state: &State,
        assertion: &str,
        client_id: Option<&str>,
    ) -> Result<(ServiceApp, Option<String>), &'static str> {
        const MALFORMED: &str = "The client_assertion token is invalid.";
        const ISSUER: &str = "The issuer claim for client_assertion is not a valid client_id.";
        let header = jsonwebtoken::decode_header(assertion).map_err(|_| MALFORMED)?;
        let claims: Value =
            jsonwebtoken::dangerous::insecure_decode_claims(assertion).map_err(|_| MALFORMED)?;
        let issuer = claims.get("iss").and_then(Value::as_str).ok_or(ISSUER)?;
        let app = state.service_apps.iter().find(|a| a.client_id == issuer).ok_or(ISSUER)?;
        if client_id.is_some_and(|c| c != app.client_id) {
            return Err(ISSUER);
        }
        if claims.get("sub").and_then(Value::as_str) != Some(issuer) {
            return Err("The subject claim for client_assertion must be the client_id.");
        }
        if header.kid.as_deref() != Some(app.key_id.as_str()) {
            return Err("The client_assertion JWT kid is invalid.");
        }
        const SIGNATURE: &str = "The client_assertion signature is invalid.";
        let key = DecodingKey::from_rsa_pem(app.public_key_pem.as_bytes()).map_err(|_| SIGNATURE)?;
        let mut validation = Validation::new(Algorithm::RS256);
        validation.algorithms = vec![Algorithm::RS256, Algorithm::RS384, Algorithm::RS512];
        validation.validate_exp = false;
        validation.validate_aud = false;
        validation.required_spec_claims.clear();
        jsonwebtoken::decode::<Value>(assertion, &key, &validation).map_err(|_| SIGNATURE)?;

        let token_url = format!("{}/oauth2/v1/token", self.base_url);
        let audience_ok = match claims.get("aud") {
            Some(Value::String(aud)) => *aud == token_url,
            Some(Value::Array(auds)) => auds.iter().any(|a| a.as_str() == Some(token_url.as_str())),
            _ => false,
        };
        if !audience_ok {
            return Err(
                "The audience claim for client_assertion must be the endpoint invoked for the request.",
            );
        }
        let now = now_secs();
        let exp = claims
            .get("exp")
            .and_then(Value::as_i64)
            .ok_or("The client_assertion token must have an expiration.")?;
        if exp <= now {
            return Err("The client_assertion token is expired.");
        }
        if exp > now + 3600 {
            return Err("The client_assertion token has an expiration too far into the future.");
        }
        match claims.get("iat") {
            None => {}
            Some(iat) if iat.as_i64().is_some_and(|iat| iat <= now) => {}
            Some(_) => return Err("The client_assertion token must be issued before the current time."),
        }
        let jti = match claims.get("jti") {
            None => None,
            Some(Value::String(jti)) if !state.used_assertion_ids.contains(jti) => Some(jti.clone()),
            Some(Value::String(_)) => return Err("The client_assertion token has already been used."),
            Some(_) => return Err(MALFORMED),
        };
        Ok((app.clone(), jti))
    }
}

fn method_not_allowed(allow: &str) -> Answer {
    okta_error(405, "E0000022", "The endpoint does not support the provided HTTP method")
        .with("Allow", allow.into())
}

/// A DPoP proof that passed its checks: its claims and the thumbprint of its key.
struct Proof {
    claims: Value,
    jkt: String,
}

/// Checks a DPoP proof's form, signature, `htm`, `htu`, freshness and single use; Err is the
/// `invalid_dpop_proof` description. `nonce` and `ath` are the caller's to check.
fn verify_proof(state: &mut State, proof: &str, htm: &str, htu: &str) -> Result<Proof, &'static str> {
    const INVALID: &str = "The DPoP proof JWT is invalid.";
    let header = jsonwebtoken::decode_header(proof).map_err(|_| INVALID)?;
    if header.typ.as_deref() != Some("dpop+jwt") {
        return Err("The DPoP proof JWT 'typ' header must be 'dpop+jwt'.");
    }
    let jwk =
        header.jwk.as_ref().ok_or("The DPoP proof JWT must carry its public key in the 'jwk' header.")?;
    // Only asymmetric keys prove possession; a symmetric "jwk" would be a shared secret.
    if !matches!(jwk.algorithm, AlgorithmParameters::RSA(_) | AlgorithmParameters::EllipticCurve(_)) {
        return Err(INVALID);
    }
    let key = DecodingKey::from_jwk(jwk).map_err(|_| INVALID)?;
    let mut validation = Validation::new(header.alg);
    validation.validate_exp = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    let claims = jsonwebtoken::decode::<Value>(proof, &key, &validation)
        .map_err(|_| "The DPoP proof JWT signature is invalid.")?
        .claims;
    if claims.get("htm").and_then(Value::as_str) != Some(htm) {
        return Err("'htm' claim in the DPoP proof JWT is invalid.");
    }
    if claims.get("htu").and_then(Value::as_str) != Some(htu) {
        return Err("'htu' claim in the DPoP proof JWT is invalid.");
    }
    let now = now_secs();
    // Fresh: at most five minutes old, and not from the future beyond a minute of skew.
    if !claims.get("iat").and_then(Value::as_i64).is_some_and(|iat| (now - 300..=now + 60).contains(&iat)) {
        return Err("'iat' claim in the DPoP proof JWT is invalid.");
    }
    let jti =
        claims.get("jti").and_then(Value::as_str).ok_or("'jti' claim in the DPoP proof JWT is invalid.")?;
    if !state.used_proof_ids.insert(jti.to_string()) {
        return Err("'jti' claim in the DPoP proof JWT has already been used.");
    }
    let jkt = jwk.thumbprint(ThumbprintHash::SHA256).map_err(|_| INVALID)?;
    Ok(Proof { claims, jkt })
}
