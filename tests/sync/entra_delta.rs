//! Entra delta runs: they follow the deltaLinks of the last successful run, apply removals as
//! deactivations, reach groups through nested-group changes Graph does not report on them, fall
//! back to a full read when Graph expired the links, and reach the same directory a full run
//! reaches. Checked over SCIM, on both backends.

use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};
use serde_json::{json, Value};

use crate::support::fake_graph::{
    AppRegistration, ExpiredDelta, FakeGraph, GraphGroup, GraphUser, Tenant, IMPORTER_PERMISSIONS,
};
use crate::support::snapshot::{assert_same, snapshot};
use crate::support::{on_both_backends, TestServer};
use scimd::store::connections::{self, ConnectionRecord};
use scimd::sync::engine::{self, Report, RunRequest};

on_both_backends!(
    a_delta_run_reads_only_what_changed_and_applies_it,
    a_change_inside_a_nested_group_reaches_the_groups_it_is_nested_in,
    an_expired_delta_link_falls_back_to_a_full_read_with_a_warning,
    removals_in_a_delta_run_count_for_the_brake,
    a_username_freed_in_scimd_reaches_the_next_delta_run,
    delta_and_full_runs_reach_the_same_directory_after_random_changes,
);

const ENTERPRISE: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";

fn rules() -> Value {
    json!({
        "allowed_users_groups": ["eng-all"],
        "denied_users_groups": ["offboarding"],
        "email_domains": ["contoso.example", "*.contoso.example"],
        "import_security_groups": true
    })
}

/// The groups every tenant here has: eng-all (Microsoft 365) with the security group
/// eng-platform nested in it, and offboarding.
struct Groups {
    eng_all: String,
    platform: String,
    offboarding: String,
}

fn add_rule_groups(tenant: &mut Tenant) -> Groups {
    let eng_all = GraphGroup::microsoft_365("eng-all", "eng-all@contoso.example");
    let platform = GraphGroup::security("eng-platform");
    let offboarding = GraphGroup::security("offboarding");
    let groups = Groups {
        eng_all: eng_all.id.clone(),
        platform: platform.id.clone(),
        offboarding: offboarding.id.clone(),
    };
    for group in [eng_all, platform, offboarding] {
        tenant.add_group(group);
    }
    tenant.add_member(&groups.eng_all, &groups.platform);
    groups
}

fn connect(server: &TestServer, fake: &FakeGraph, directory: &str) -> ConnectionRecord {
    connect_braked_at(server, fake, directory, 100)
}

fn connect_braked_at(
    server: &TestServer,
    fake: &FakeGraph,
    directory: &str,
    percent: u32,
) -> ConnectionRecord {
    let app = fake.register_app(AppRegistration::new(&IMPORTER_PERMISSIONS));
    server.connect(
        directory,
        json!({
            "name": "entra-main", "kind": "entra",
            "entra": fake.entra_source(app.secret_auth()),
            "rules": rules(),
            "brake": {"max_deactivate_percent": percent}
        }),
    )
}

/// The connection as stored now (runs move its delta links).
fn reload(server: &TestServer, connection: &ConnectionRecord) -> ConnectionRecord {
    let id = connection.id.clone();
    server.store.read_now(move |conn, _| connections::get(conn, &id)).unwrap()
}

async fn run(server: &TestServer, connection: &ConnectionRecord, full: bool) -> Report {
    let key = server.config.secret_key().unwrap();
    let request = RunRequest { full, dry_run: false, confirm: false, trigger: "cli" };
    let connection = reload(server, connection);
    let report = engine::run(&server.store, key.as_ref(), &connection, request, &|_| {}).await.unwrap();
    assert_eq!(report.status, "succeeded", "{report:?}");
    report
}

async fn scim_list(server: &TestServer, path: &str, filter: &str) -> Vec<Value> {
    let reply = server.send(server.request(reqwest::Method::GET, path).query(&[("filter", filter)])).await;
    assert_eq!(reply.status, reqwest::StatusCode::OK, "{}", reply.body);
    reply.body["Resources"].as_array().cloned().unwrap_or_default()
}

async fn user(server: &TestServer, entra_id: &str) -> Option<Value> {
    scim_list(server, "/scim/v2/Users", &format!("externalId eq \"{entra_id}\"")).await.into_iter().next()
}

/// The Entra ids of a group's members, sorted; none when there is no such group.
async fn member_external_ids(server: &TestServer, group: &str) -> Vec<String> {
    let Some(group) =
        scim_list(server, "/scim/v2/Groups", &format!("displayName eq \"{group}\"")).await.into_iter().next()
    else {
        return Vec::new();
    };
    let mut ids = Vec::new();
    for member in group["members"].as_array().cloned().unwrap_or_default() {
        let path = format!("/scim/v2/Users/{}", member["value"].as_str().unwrap());
        let reply = server.send(server.request(reqwest::Method::GET, &path)).await;
        ids.push(reply.body["externalId"].as_str().unwrap().to_string());
    }
    ids.sort();
    ids
}

/// A run right after `report` that must find nothing to change: the delta run before it left
/// the directory as a full read sees it.
fn assert_nothing_to_change(report: &Report, after: &str) {
    let c = &report.counts;
    assert_eq!(
        (c.users_created, c.users_updated, c.users_deactivated, c.users_reactivated),
        (0, 0, 0, 0),
        "a full run after {after} found user changes: {report:?}"
    );
    assert_eq!(
        (c.groups_created, c.groups_updated, c.members_added, c.members_removed),
        (0, 0, 0, 0),
        "a full run after {after} found group changes: {report:?}"
    );
}

async fn a_delta_run_reads_only_what_changed_and_applies_it(server: TestServer) {
    let mut tenant = Tenant::empty();
    let groups = add_rule_groups(&mut tenant);
    let mut lead = GraphUser::new("lena.lead@contoso.example");
    lead.job_title = Some("Lead".into());
    let mut people = vec![lead.id.clone()];
    let mut users = vec![lead];
    for name in ["ann", "bo", "cy", "di", "ed"] {
        let mut user = GraphUser::new(&format!("{name}.x@contoso.example"));
        user.manager_id = Some(people[0].clone());
        people.push(user.id.clone());
        users.push(user);
    }
    for user in users {
        tenant.add_user(user);
    }
    let [lead, ann, bo, cy, di, ed] = <[String; 6]>::try_from(people).unwrap();
    for id in [&lead, &ann, &bo, &cy] {
        tenant.add_member(&groups.eng_all, id);
    }
    tenant.add_member(&groups.platform, &di);
    tenant.add_member(&groups.platform, &ed);
    let fake = FakeGraph::start(tenant);
    let connection = connect(&server, &fake, "acme");
    let first = run(&server, &connection, false).await;
    assert_eq!((first.mode, first.counts.users_created), ("full", 6), "{first:?}");
    let stored = reload(&server, &connection);
    assert!(stored.delta_state.as_deref().is_some_and(|s| s.contains("deltatoken")), "{stored:?}");

    let mut newcomer = GraphUser::new("nina.new@contoso.example");
    newcomer.manager_id = Some(lead.clone());
    let newcomer_id = newcomer.id.clone();
    fake.change(|t| {
        t.update_user(&ann, |u| u.job_title = Some("Staff Engineer".into()));
        t.disable_user(&bo);
        t.soft_delete_user(&cy);
        t.hard_delete_user(&ed);
        t.add_user(newcomer);
        t.add_member(&groups.eng_all, &newcomer_id);
        t.add_member(&groups.offboarding, &di);
    });
    fake.clear_requests();
    let delta = run(&server, &connection, false).await;
    assert_eq!(delta.mode, "delta", "{delta:?}");
    let paths: Vec<String> = fake.requests().iter().map(|r| r.path_and_query.clone()).collect();
    // Users are read by id only: di, whose standing changed with offboarding's membership.
    let listings: Vec<&String> =
        paths.iter().filter(|p| p.starts_with("/v1.0/users?") || p.starts_with("/v1.0/groups?")).collect();
    assert!(listings.iter().all(|p| p.contains("filter=id")), "no full listing: {listings:#?}");
    assert!(paths.iter().any(|p| p.contains("/users/delta") && p.contains("deltatoken")), "{paths:#?}");
    assert_eq!(delta.counts.users_created, 1, "{delta:?}");
    // bo disabled, cy and ed removed, di denied by offboarding.
    assert_eq!(delta.counts.users_deactivated, 4, "{delta:?}");

    let ann_now = user(&server, &ann).await.unwrap();
    assert_eq!(ann_now["title"], "Staff Engineer");
    for (id, why) in [(&bo, "disabled"), (&cy, "soft-deleted"), (&ed, "deleted for good"), (&di, "denied")] {
        let gone = user(&server, id).await.unwrap_or_else(|| panic!("{why} user kept"));
        assert_eq!(gone["active"], false, "{why}: {gone}");
        assert!(gone["emails"][0]["value"].is_string(), "{why} keeps its contact data: {gone}");
    }
    let nina = user(&server, &newcomer_id).await.unwrap();
    assert_eq!(nina["active"], true);
    assert_eq!(nina[ENTERPRISE]["manager"]["displayName"], "Lena Lead", "{nina}");
    let lead_now = user(&server, &lead).await.unwrap();
    assert_eq!(nina[ENTERPRISE]["manager"]["value"], lead_now["id"]);
    let mut expected = vec![lead.clone(), ann.clone(), bo.clone(), newcomer_id.clone(), di.clone()];
    // cy left eng-all when soft-deleted; di stays a member though inactive; ed is gone.
    expected.sort();
    assert_eq!(member_external_ids(&server, "eng-all").await, expected);

    // A delta run with nothing changed reads two empty rounds and writes nothing.
    let before = snapshot(&server, &server.key).await;
    let quiet = run(&server, &connection, false).await;
    assert_eq!(quiet.mode, "delta");
    assert_nothing_to_change(&quiet, "a quiet delta");
    assert_same(&before, &snapshot(&server, &server.key).await, "a delta run with nothing changed");

    // A full read finds the delta run left nothing undone.
    let full = run(&server, &connection, true).await;
    assert_nothing_to_change(&full, "the delta run");

    // A soft-deleted user restored comes back active with its memberships.
    fake.change(|t| t.restore_user(&cy));
    let restored = run(&server, &connection, false).await;
    assert_eq!((restored.mode, restored.counts.users_reactivated), ("delta", 1), "{restored:?}");
    assert!(member_external_ids(&server, "eng-all").await.contains(&cy));
}

async fn a_change_inside_a_nested_group_reaches_the_groups_it_is_nested_in(server: TestServer) {
    let mut tenant = Tenant::empty();
    let groups = add_rule_groups(&mut tenant);
    let team = GraphGroup::security("eng-platform-db");
    let team_id = team.id.clone();
    tenant.add_group(team);
    tenant.add_member(&groups.platform, &team_id);
    let (a, b) = (GraphUser::new("a.a@contoso.example"), GraphUser::new("b.b@contoso.example"));
    let (a_id, b_id) = (a.id.clone(), b.id.clone());
    tenant.add_user(a);
    tenant.add_user(b);
    tenant.add_member(&team_id, &a_id);
    let fake = FakeGraph::start(tenant);
    let connection = connect(&server, &fake, "acme");
    run(&server, &connection, false).await;
    assert_eq!(member_external_ids(&server, "eng-all").await, vec![a_id.clone()]);
    assert_eq!(user(&server, &b_id).await.unwrap()["active"], false, "b is in no allowed group");

    // Graph reports the change on eng-platform-db alone, two levels below eng-all.
    fake.change(|t| t.add_member(&team_id, &b_id));
    let delta = run(&server, &connection, false).await;
    assert_eq!(delta.mode, "delta");
    assert_eq!(delta.counts.users_reactivated, 1, "b is now allowed through eng-all: {delta:?}");
    assert_eq!(user(&server, &b_id).await.unwrap()["active"], true);
    let mut both = vec![a_id.clone(), b_id.clone()];
    both.sort();
    assert_eq!(member_external_ids(&server, "eng-all").await, both);
    assert_eq!(member_external_ids(&server, "eng-platform").await, both);

    // Taking the nested group out of eng-platform takes its members out of both.
    fake.change(|t| t.remove_member(&groups.platform, &team_id));
    let delta = run(&server, &connection, false).await;
    assert_eq!(delta.counts.users_deactivated, 2, "no longer in an allowed group: {delta:?}");
    assert_eq!(member_external_ids(&server, "eng-all").await, Vec::<String>::new());
    assert_nothing_to_change(&run(&server, &connection, true).await, "the nested changes");
}

async fn an_expired_delta_link_falls_back_to_a_full_read_with_a_warning(server: TestServer) {
    let mut tenant = Tenant::empty();
    let groups = add_rule_groups(&mut tenant);
    let a = GraphUser::new("a.a@contoso.example");
    let a_id = a.id.clone();
    tenant.add_user(a);
    tenant.add_member(&groups.eng_all, &a_id);
    let fake = FakeGraph::start(tenant);
    let connection = connect(&server, &fake, "acme");
    run(&server, &connection, false).await;
    for (answer, said) in
        [(ExpiredDelta::SyncStateNotFound, "syncStateNotFound"), (ExpiredDelta::Gone, "410")]
    {
        fake.expire_delta_tokens(answer);
        fake.change(|t| t.update_user(&a_id, |u| u.job_title = Some(format!("after {said}"))));
        let report = run(&server, &connection, false).await;
        assert_eq!(report.mode, "full", "{said}: {report:?}");
        assert!(
            report
                .warnings
                .iter()
                .any(|w| w.contains("delta link has expired") && w.contains("read the whole tenant")),
            "{said}: {report:?}"
        );
        assert_eq!(user(&server, &a_id).await.unwrap()["title"], format!("after {said}"));
        // The full read stored fresh links: the next run is a delta again.
        let next = run(&server, &connection, false).await;
        assert_eq!(next.mode, "delta", "{said}: {next:?}");
        assert!(next.warnings.is_empty(), "{next:?}");
    }
}

async fn removals_in_a_delta_run_count_for_the_brake(server: TestServer) {
    let mut tenant = Tenant::empty();
    let groups = add_rule_groups(&mut tenant);
    let users: Vec<GraphUser> =
        (0..4).map(|n| GraphUser::new(&format!("user{n}.x@contoso.example"))).collect();
    let ids: Vec<String> = users.iter().map(|u| u.id.clone()).collect();
    for user in users {
        tenant.add_user(user);
    }
    for id in &ids {
        tenant.add_member(&groups.eng_all, id);
    }
    let fake = FakeGraph::start(tenant);
    let connection = connect_braked_at(&server, &fake, "acme", 50);
    run(&server, &connection, false).await;
    // A clean-up script deleted three of four accounts (75 %, over the 50 % brake).
    fake.change(|t| {
        t.soft_delete_user(&ids[0]);
        t.soft_delete_user(&ids[1]);
        t.hard_delete_user(&ids[2]);
    });
    let key = server.config.secret_key().unwrap();
    let request = RunRequest { full: false, dry_run: false, confirm: false, trigger: "cli" };
    let braked =
        engine::run(&server.store, key.as_ref(), &reload(&server, &connection), request.clone(), &|_| {})
            .await
            .unwrap();
    assert_eq!(
        (braked.status, braked.mode, braked.counts.users_deactivated),
        ("braked", "delta", 3),
        "{braked:?}"
    );
    assert_eq!(user(&server, &ids[0]).await.unwrap()["active"], true, "nothing applied");
    // A braked run is no good run: the next one reads the same changes again, and applies them
    // once confirmed.
    let confirm = RunRequest { confirm: true, ..request };
    let applied = engine::run(&server.store, key.as_ref(), &reload(&server, &connection), confirm, &|_| {})
        .await
        .unwrap();
    assert_eq!((applied.status, applied.mode, applied.counts.users_deactivated), ("succeeded", "delta", 3));
    for id in &ids[..3] {
        assert_eq!(user(&server, id).await.unwrap()["active"], false);
    }
    assert_eq!(user(&server, &ids[3]).await.unwrap()["active"], true);
}

/// Random changes in the tenant, then a delta run in one directory and a full run in another,
/// both fed by the same tenant with the same rules: the two directories must read the same.
async fn delta_and_full_runs_reach_the_same_directory_after_random_changes(server: TestServer) {
    let mut tenant = Tenant::generate(120, 10, 7);
    let groups = add_rule_groups(&mut tenant);
    let ids: Vec<String> = tenant.users.keys().cloned().collect();
    for (i, id) in ids.iter().enumerate() {
        match i % 4 {
            0 => tenant.add_member(&groups.platform, id),
            1 | 2 => tenant.add_member(&groups.eng_all, id),
            _ => {}
        }
        if i % 13 == 0 {
            tenant.add_member(&groups.offboarding, id);
        }
    }
    let fake = FakeGraph::start(tenant);
    let (_, mirror_key) = server.second_directory("mirror");
    let delta = connect(&server, &fake, "acme");
    let full = connect(&server, &fake, "mirror");
    run(&server, &delta, false).await;
    run(&server, &full, true).await;
    assert_same(&snapshot(&server, &server.key).await, &snapshot(&server, &mirror_key).await, "first runs");
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(0xde17a);
    let mut fresh = 0;
    for round in 0..4 {
        fake.change(|t| {
            for _ in 0..15 {
                mutate(t, &groups, &mut rng, &mut fresh);
            }
        });
        let report = run(&server, &delta, false).await;
        assert_eq!(report.mode, "delta", "round {round}: {report:?}");
        run(&server, &full, true).await;
        assert_same(
            &snapshot(&server, &server.key).await,
            &snapshot(&server, &mirror_key).await,
            &format!("round {round}"),
        );
    }
}

/// One random change of the kinds Graph's delta reports: profile, manager and account changes,
/// joiners, soft and hard deletes and restores, memberships (of nested groups too), group
/// renames, new nested groups and deleted groups.
fn mutate(tenant: &mut Tenant, rules: &Groups, rng: &mut Xoshiro256PlusPlus, fresh: &mut usize) {
    let users: Vec<String> = tenant.users.keys().cloned().collect();
    let user = users[rng.random_range(0..users.len())].clone();
    let groups: Vec<String> = tenant.groups.keys().cloned().collect();
    let group = groups[rng.random_range(0..groups.len())].clone();
    let protected = [&rules.eng_all, &rules.platform, &rules.offboarding];
    match rng.random_range(0..13) {
        0 => tenant.update_user(&user, |u| u.job_title = Some(format!("Title {}", rng.random_range(0..100)))),
        1 => tenant.update_user(&user, |u| u.account_enabled = !u.account_enabled),
        2 => {
            let manager = users[rng.random_range(0..users.len())].clone();
            if manager != user {
                tenant.set_manager(&user, Some(&manager));
            }
        }
        3 => tenant.soft_delete_user(&user),
        4 => {
            let deleted: Vec<String> = tenant.deleted_users.keys().cloned().collect();
            if let Some(id) = deleted.first() {
                tenant.restore_user(id);
            }
        }
        5 if rng.random_range(0..3) == 0 => tenant.hard_delete_user(&user),
        6 => {
            *fresh += 1;
            let newcomer = GraphUser::new(&format!("fresh.{fresh}@contoso.example"));
            let id = newcomer.id.clone();
            tenant.add_user(newcomer);
            tenant.add_member([&rules.eng_all, &rules.platform][rng.random_range(0..2)], &id);
        }
        7 | 8 => tenant.add_member(&group, &user),
        9 => tenant.remove_member(&group, &user),
        10 => {
            let name = ["eng-all", "offboarding", "eng-tools", "sales"][rng.random_range(0..4)];
            if !protected.contains(&&group) && tenant.groups.values().all(|g| g.display_name != name) {
                tenant.rename_group(&group, name);
            }
        }
        11 => {
            *fresh += 1;
            let nested = GraphGroup::security(&format!("eng-team-{fresh}"));
            let id = nested.id.clone();
            tenant.add_group(nested);
            tenant.add_member(&id, &user);
            tenant.add_member([&rules.eng_all, &rules.platform][rng.random_range(0..2)], &id);
        }
        _ => {
            if !protected.contains(&&group) {
                tenant.delete_group(&group);
            }
        }
    }
}

/// A user in conflict with a pushed user is imported by the first delta run after the pushed
/// user is gone, though nothing changed in the tenant.
async fn a_username_freed_in_scimd_reaches_the_next_delta_run(server: TestServer) {
    let mut tenant = Tenant::empty();
    let groups = add_rule_groups(&mut tenant);
    let ann = GraphUser::new("ann.x@contoso.example");
    let ann_id = ann.id.clone();
    tenant.add_user(ann);
    tenant.add_member(&groups.eng_all, &ann_id);
    let pushed = server.create_user(crate::support::user_body("ann.x@contoso.example")).await;
    let fake = FakeGraph::start(tenant);
    let connection = connect(&server, &fake, "acme");
    assert_eq!(run(&server, &connection, false).await.conflicts.len(), 1);
    let still = run(&server, &connection, false).await;
    assert_eq!((still.mode, still.conflicts.len()), ("delta", 1), "{still:?}");
    let deleted = server.delete(&format!("/scim/v2/Users/{}", pushed["id"].as_str().unwrap())).await;
    assert_eq!(deleted.status, 204);
    let freed = run(&server, &connection, false).await;
    assert_eq!((freed.mode, freed.counts.users_created), ("delta", 1), "{freed:?}");
    assert_eq!(user(&server, &ann_id).await.unwrap()["userName"], "ann.x@contoso.example");
}
