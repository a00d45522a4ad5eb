//! Delta runs: they ask Okta only for what changed since the last successful run, and reach the
//! same directory a full run reaches. Checked over SCIM, on both backends.

use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};
use serde_json::{json, Value};

use crate::support::fake_okta::{FakeOkta, Org};
use crate::support::snapshot::{assert_same, snapshot};
use crate::support::{on_both_backends, TestServer};
use scimd::store::audit::Actor;
use scimd::store::connections::{self, ConnectionRecord};
use scimd::sync::engine::{self, Report, RunRequest};

on_both_backends!(
    a_delta_run_reads_only_what_changed_and_applies_it,
    a_membership_change_alone_reaches_the_user_in_a_delta_run,
    changed_settings_and_dry_runs_keep_the_delta_honest,
    delta_and_full_runs_reach_the_same_directory_after_random_changes,
    a_username_freed_in_scimd_reaches_the_next_delta_run,
);

const ENG: &str = "00gdeltaeng00000000697";
const OFFBOARDING: &str = "00gdeltaoff00000000697";

fn rules() -> Value {
    json!({
        "group_prefixes": ["eng", "ops", "vpn"],
        "allowed_users_groups": ["eng-all", "ops-all"],
        "denied_users_groups": ["offboarding"],
        "email_domains": ["acme.example", "*.acme.example"]
    })
}

/// A generated org (stamped in the past, so a delta window holds only the test's changes) with
/// the groups the rules name, eng-all holding most users.
fn org(users: usize, seed: u64) -> Org {
    let mut org = Org::generate(users, 12, seed);
    org.add_group(Org::group(ENG, "eng-all"));
    org.add_group(Org::group(OFFBOARDING, "offboarding"));
    let ids: Vec<String> = org.users.iter().map(|u| u.id.clone()).collect();
    for (i, id) in ids.iter().enumerate() {
        if i % 5 != 0 {
            org.add_member(ENG, id);
        }
        if i % 17 == 0 {
            org.add_member(OFFBOARDING, id);
        }
    }
    org
}

fn connect(server: &TestServer, fake: &FakeOkta, directory: &str, rules: Value) -> ConnectionRecord {
    let body = json!({
        "name": "okta-main", "kind": "okta",
        "okta": {"org_url": fake.base_url(), "allow_insecure_http": true,
                 "auth": {"method": "api_token", "token": fake.api_token()}},
        "rules": rules,
        "brake": {"max_deactivate_percent": 100}
    });
    server.connect(directory, body)
}

/// The connection as stored now (runs move its delta position).
fn reload(server: &TestServer, connection: &ConnectionRecord) -> ConnectionRecord {
    let id = connection.id.clone();
    server.store.read_now(move |conn, _| connections::get(conn, &id)).unwrap()
}

async fn run(server: &TestServer, connection: &ConnectionRecord, full: bool, dry_run: bool) -> Report {
    let key = server.config.secret_key().unwrap();
    let request = RunRequest { full, dry_run, confirm: false, trigger: "cli" };
    let connection = reload(server, connection);
    let report = engine::run(&server.store, key.as_ref(), &connection, request, &|_| {}).await.unwrap();
    assert!(matches!(report.status, "succeeded" | "dry_run"), "{report:?}");
    report
}

fn user_in_scope(org: &Org, pick: usize) -> String {
    org.users[pick % org.users.len()].id.clone()
}

async fn a_delta_run_reads_only_what_changed_and_applies_it(server: TestServer) {
    let fake = FakeOkta::start(org(300, 7));
    let connection = connect(&server, &fake, "acme", rules());
    let first = run(&server, &connection, false, false).await;
    assert_eq!(first.mode, "full", "the first run of a connection is full");
    let before = snapshot(&server, &server.key).await;
    assert!(before.len() > 200, "{}", before.len());
    let second = run(&server, &connection, false, false).await;
    assert_eq!(second.mode, "delta");
    assert_eq!(
        (second.counts.users_created, second.counts.users_updated, second.counts.users_deactivated),
        (0, 0, 0),
        "nothing changed in Okta"
    );

    let (retitled, leaver) = fake.read(|org| {
        let active: Vec<&str> = org
            .users
            .iter()
            .filter(|u| u.status == "ACTIVE" && before.get(&u.id).is_some_and(|r| r["active"] == true))
            .map(|u| u.id.as_str())
            .collect();
        (active[0].to_string(), active[1].to_string())
    });
    let requests_before = fake.requests().len();
    fake.change(|org| {
        org.update_user(&retitled, |u| {
            u.profile.insert("title".into(), json!("Principal Engineer"));
        });
        org.update_user(&leaver, |u| u.status = "DEPROVISIONED".into());
        let mut newcomer = Org::user("00udeltanew0000000697", "nina.new@acme.example", "ACTIVE");
        newcomer.profile.insert("department".into(), json!("Platform"));
        org.add_user(newcomer);
        org.add_member(ENG, "00udeltanew0000000697");
        org.update_group(ENG, |g| g.name = "eng-everyone".into());
    });
    // The rules name eng-all; its rename leaves its members outside the allow-list.
    let third = run(&server, &connection, false, false).await;
    assert_eq!(third.mode, "delta");
    let asked: Vec<String> =
        fake.requests()[requests_before..].iter().map(|r| r.path_and_query.clone()).collect();
    let user_listings: Vec<&String> = asked.iter().filter(|p| p.starts_with("/api/v1/users")).collect();
    assert!(
        user_listings.iter().all(|p| p.contains("filter=lastUpdated") || p.contains("filter=id")),
        "a delta run never lists all users: {user_listings:?}"
    );
    assert!(
        asked.iter().any(|p| p.starts_with("/api/v1/groups?") && p.contains("lastMembershipUpdated")),
        "{asked:?}"
    );
    assert_eq!(third.counts.users_created, 1, "{:?}", third.counts);

    let after = snapshot(&server, &server.key).await;
    assert_eq!(after[&retitled]["title"], "Principal Engineer");
    assert_eq!(after[&leaver]["active"], false, "deprovisioned: inactive, kept");
    assert_eq!(after["00udeltanew0000000697"]["userName"], "nina.new@acme.example");
    assert_eq!(after[ENG]["displayName"], "eng-everyone");
    let eng_members = after[ENG]["members"].as_array().unwrap();
    assert!(eng_members.iter().any(|m| m["value"] == "00udeltanew0000000697"));
    // eng-all is renamed away: exactly the users the rules still allow are active.
    let (allowed, now_active) = fake.read(|org| {
        let named = |names: &[&str]| -> std::collections::BTreeSet<String> {
            org.groups
                .iter()
                .filter(|g| names.contains(&g.name.as_str()))
                .flat_map(|g| org.members.get(&g.id).cloned().unwrap_or_default())
                .collect()
        };
        let (allowed, denied) = (named(&["eng-all", "ops-all"]), named(&["offboarding"]));
        let expected: Vec<String> = after
            .iter()
            .filter(|(_, r)| r.get("userName").is_some() && r["active"] == true)
            .map(|(id, _)| id.clone())
            .filter(|id| !allowed.contains(id) || denied.contains(id))
            .collect();
        (expected, after.values().filter(|r| r.get("userName").is_some() && r["active"] == true).count())
    });
    assert!(allowed.is_empty(), "active though the rules no longer allow them: {allowed:?}");
    let was_active = before.values().filter(|r| r.get("userName").is_some() && r["active"] == true).count();
    assert!(now_active < was_active, "the rename took eng-all's members out of the allow-list");
}

async fn a_membership_change_alone_reaches_the_user_in_a_delta_run(server: TestServer) {
    let fake = FakeOkta::start(org(60, 11));
    let connection = connect(&server, &fake, "acme", rules());
    run(&server, &connection, false, false).await;
    let before = snapshot(&server, &server.key).await;
    // An active Okta user outside eng-all (inactive here), and one inside it (active here).
    let (outside, inside) = fake.read(|org| {
        let in_scope =
            |u: &&crate::support::fake_okta::OktaUser| u.status == "ACTIVE" && before.contains_key(&u.id);
        let members = &org.members[ENG];
        let denied = &org.members[OFFBOARDING];
        let outside = org
            .users
            .iter()
            .filter(in_scope)
            .find(|u| !members.contains(&u.id) && !denied.contains(&u.id))
            .unwrap();
        let inside = org
            .users
            .iter()
            .filter(in_scope)
            .find(|u| members.contains(&u.id) && !denied.contains(&u.id))
            .unwrap();
        (outside.id.clone(), inside.id.clone())
    });
    assert_eq!(before[&outside]["active"], false);
    assert_eq!(before[&inside]["active"], true);
    let requests_before = fake.requests().len();
    // Memberships change; the users' own records (and lastUpdated) do not.
    fake.change(|org| {
        org.add_member(ENG, &outside);
        org.add_member(OFFBOARDING, &inside);
    });
    let report = run(&server, &connection, false, false).await;
    assert_eq!(report.mode, "delta");
    assert_eq!(
        (report.counts.users_reactivated, report.counts.users_deactivated),
        (1, 1),
        "{:?}",
        report.counts
    );
    let after = snapshot(&server, &server.key).await;
    assert_eq!(after[&outside]["active"], true, "joined the allow-list group");
    assert_eq!(after[&inside]["active"], false, "joined the deny group: deny wins");
    assert!(
        fake.requests()[requests_before..].iter().any(|r| r.path_and_query.contains("filter=id%20eq")),
        "the two users are read again by id"
    );
    // Leaving the deny group again is a membership change too.
    fake.change(|org| org.remove_member(OFFBOARDING, &inside));
    let report = run(&server, &connection, false, false).await;
    assert_eq!(report.counts.users_reactivated, 1, "{:?}", report.counts);
}

async fn changed_settings_and_dry_runs_keep_the_delta_honest(server: TestServer) {
    let fake = FakeOkta::start(org(40, 5));
    let connection = connect(&server, &fake, "acme", rules());
    run(&server, &connection, false, false).await;
    // An active user the first run imported.
    let imported = snapshot(&server, &server.key).await;
    let target = fake.read(|org| {
        org.users.iter().find(|u| u.status == "ACTIVE" && imported.contains_key(&u.id)).unwrap().id.clone()
    });
    fake.change(|org| {
        org.update_user(&target, |u| {
            u.profile.insert("title".into(), json!("Changed once"));
        })
    });
    // A dry run sees the change and moves nothing: the next real run still applies it.
    let dry = run(&server, &connection, false, true).await;
    assert_eq!(dry.mode, "delta");
    assert!(dry.counts.users_updated + dry.counts.users_reactivated + dry.counts.users_deactivated >= 1);
    assert_eq!(snapshot(&server, &server.key).await, imported, "a dry run writes nothing");
    let real = run(&server, &connection, false, false).await;
    assert_eq!(real.mode, "delta");
    assert_eq!(snapshot(&server, &server.key).await[&target]["title"], "Changed once");
    // New settings: the next run reads everything, and says why.
    let id = connection.id.clone();
    let mut config = connection.config.clone();
    config.rules.email_domains = vec!["acme.example".into()];
    server.store.write_now(move |conn, _| connections::update(conn, &Actor::Cli, None, &id, config)).unwrap();
    let after_update = run(&server, &connection, false, false).await;
    assert_eq!(after_update.mode, "full");
    assert!(
        after_update.warnings.iter().any(|w| w.contains("settings changed")),
        "{:?}",
        after_update.warnings
    );
    let next = run(&server, &connection, false, false).await;
    assert_eq!(next.mode, "delta");
}

/// Random changes in Okta, then a delta run in one directory and a full run in another, both
/// fed by the same org with the same rules: the two directories must read the same.
async fn delta_and_full_runs_reach_the_same_directory_after_random_changes(server: TestServer) {
    let fake = FakeOkta::start(org(150, 3));
    let (_, mirror_key) = server.second_directory("mirror");
    let delta = connect(&server, &fake, "acme", rules());
    let full = connect(&server, &fake, "mirror", rules());
    run(&server, &delta, false, false).await;
    run(&server, &full, true, false).await;
    assert_same(
        &snapshot(&server, &server.key).await,
        &snapshot(&server, &mirror_key).await,
        "after the first runs",
    );
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(0x5eed);
    let mut fresh = 0;
    for round in 0..4 {
        fake.change(|org| {
            for _ in 0..12 {
                mutate(org, &mut rng, &mut fresh);
            }
        });
        let report = run(&server, &delta, false, false).await;
        assert_eq!(report.mode, "delta", "round {round}");
        run(&server, &full, true, false).await;
        let (by_delta, by_full) =
            (snapshot(&server, &server.key).await, snapshot(&server, &mirror_key).await);
        assert_same(&by_delta, &by_full, &format!("round {round}"));
    }
}

/// One random change of the kinds Okta reports to a delta run: profile and status changes,
/// joiners, memberships and group renames. (Deletions are seen by full runs only.)
fn mutate(org: &mut Org, rng: &mut Xoshiro256PlusPlus, fresh: &mut usize) {
    let groups: Vec<String> =
        org.groups.iter().filter(|g| g.group_type != "BUILT_IN").map(|g| g.id.clone()).collect();
    let user = user_in_scope(org, rng.random_range(0..org.users.len()));
    let group = groups[rng.random_range(0..groups.len())].clone();
    match rng.random_range(0..8) {
        0 => org.update_user(&user, |u| {
            u.profile.insert("title".into(), json!(format!("Title {}", rng.random_range(0..1000))));
        }),
        1 => org.update_user(&user, |u| {
            u.status = ["ACTIVE", "SUSPENDED", "DEPROVISIONED", "LOCKED_OUT"][rng.random_range(0..4)].into()
        }),
        2 => org.update_user(&user, |u| {
            let domain = ["acme.example", "eu.acme.example", "other.example"][rng.random_range(0..3)];
            let local = u.profile["login"].as_str().unwrap().split('@').next().unwrap().to_string();
            u.profile.insert("email".into(), json!(format!("{local}@{domain}")));
        }),
        3 => {
            *fresh += 1;
            let id = format!("00udeltafresh{:05}697", *fresh);
            org.add_user(Org::user(&id, &format!("fresh.{}@acme.example", *fresh), "ACTIVE"));
            org.add_member(&group, &id);
        }
        4 | 5 => org.add_member(&group, &user),
        6 => org.remove_member(&group, &user),
        _ => {
            // Okta group names are unique.
            let name =
                ["eng-all", "ops-all", "offboarding", "vpn-users", "eng-platform", "sales", "ops-oncall"]
                    [rng.random_range(0..7)];
            if org.groups.iter().all(|g| g.name != name) {
                org.update_group(&group, |g| g.name = name.into());
            }
        }
    }
}

/// A user in conflict with a pushed user stays in conflict in delta runs, and is imported by
/// the first delta run after the pushed user is gone, though nothing changed in Okta.
async fn a_username_freed_in_scimd_reaches_the_next_delta_run(server: TestServer) {
    let fake = FakeOkta::start(org(20, 5));
    let (id, login) = fake.read(|org| {
        let user = org.users.iter().find(|u| u.status == "ACTIVE").unwrap();
        (user.id.clone(), user.profile["login"].as_str().unwrap().to_string())
    });
    let pushed = server.create_user(crate::support::user_body(&login)).await;
    let connection = connect(&server, &fake, "acme", json!({}));
    let first = run(&server, &connection, false, false).await;
    assert_eq!(first.conflicts.len(), 1, "{first:?}");
    let second = run(&server, &connection, false, false).await;
    assert_eq!((second.mode, second.conflicts.len()), ("delta", 1), "still reported: {second:?}");
    let deleted = server.delete(&format!("/scim/v2/Users/{}", pushed["id"].as_str().unwrap())).await;
    assert_eq!(deleted.status, 204);
    let third = run(&server, &connection, false, false).await;
    assert_eq!((third.mode, third.counts.users_created), ("delta", 1), "{third:?}");
    assert!(third.conflicts.is_empty(), "{third:?}");
    let filter = format!("externalId eq \"{id}\"");
    let reply = server
        .send(server.request(reqwest::Method::GET, "/scim/v2/Users").query(&[("filter", filter)]))
        .await;
    assert_eq!(reply.body["Resources"][0]["userName"], login.as_str());
}
