//! The Okta importer end to end: a fake Okta org over HTTP, the engine, a real database on both
//! backends, and the result checked over SCIM with the directory's key, as an application sees it.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::support::fake_okta::{Failure, FakeOkta, Org};
use crate::support::{on_both_backends, user_body, TestServer};
use scimd::store::connections::ConnectionRecord;
use scimd::sync::engine::{self, Report, RunRequest};

on_both_backends!(
    a_full_import_shows_okta_users_and_groups_over_scim,
    a_second_run_without_source_changes_writes_nothing,
    vanished_users_and_denied_members_become_inactive_never_deleted,
    a_username_held_by_a_pushed_user_is_a_conflict_and_imported_users_refuse_push_edits,
    the_brake_stops_a_mass_deactivation_until_confirmed,
    a_dry_run_writes_nothing,
    a_failure_while_reading_applies_nothing_and_names_the_remedy,
    pages_are_followed_and_rate_limits_waited_out,
    a_run_spends_only_its_share_of_each_rate_limit_window,
    a_username_freed_in_a_large_run_is_taken_later_in_the_same_run,
    a_first_run_applies_in_one_pass_and_later_runs_are_planned,
    a_runs_stage_is_cleared_a_chunk_at_a_time_and_only_its_own,
);

/// The org most tests use: an engineer managed by a lead, a suspended, a deprovisioned and a
/// staged user, an outsider by domain, eng-all and offboarding groups and Everyone.
fn small_org() -> Org {
    let mut org = Org::empty();
    org.add_group(Org::group("00geveryone0000000697", "Everyone"));
    org.update_group("00geveryone0000000697", |g| g.group_type = "BUILT_IN".into());
    org.add_group(Org::group("00gengall000000000697", "eng-all"));
    org.add_group(Org::group("00goffboard00000000697", "offboarding"));
    let mut lead = Org::user("00ulead00000000000697", "lena.lead@acme.example", "ACTIVE");
    lead.profile.insert("title".into(), json!("Engineering Lead"));
    org.add_user(lead);
    let mut engineer = Org::user("00ueng000000000000697", "erik.eng@acme.example", "ACTIVE");
    engineer.profile.insert("managerId".into(), json!("00ulead00000000000697"));
    engineer.profile.insert("manager".into(), json!("Lena Lead"));
    engineer.profile.insert("department".into(), json!("Platform"));
    engineer.profile.insert("mobilePhone".into(), json!("+47 400 12 345"));
    org.add_user(engineer);
    org.add_user(Org::user("00ususp00000000000697", "sam.susp@acme.example", "SUSPENDED"));
    org.add_user(Org::user("00udepr00000000000697", "dora.depr@acme.example", "DEPROVISIONED"));
    org.add_user(Org::user("00ustag00000000000697", "stan.staged@acme.example", "STAGED"));
    org.add_user(Org::user("00uoutsider0000000697", "otto@elsewhere.example", "ACTIVE"));
    for user in ["00ulead00000000000697", "00ueng000000000000697", "00ususp00000000000697"] {
        org.add_member("00gengall000000000697", user);
    }
    org
}

fn connection_body(fake: &FakeOkta, rules: Value) -> Value {
    json!({
        "name": "okta-main", "kind": "okta",
        "okta": {"org_url": fake.base_url(), "allow_insecure_http": true,
                 "auth": {"method": "api_token", "token": fake.api_token()}},
        "rules": rules,
        "brake": {"max_deactivate_percent": 50}
    })
}

fn connect(server: &TestServer, body: Value) -> ConnectionRecord {
    server.connect("acme", body)
}

async fn run(server: &TestServer, connection: &ConnectionRecord, request: RunRequest) -> Report {
    let key = server.config.secret_key().unwrap();
    engine::run(&server.store, key.as_ref(), connection, request, &|_| {}).await.unwrap()
}

fn full() -> RunRequest {
    RunRequest { full: true, dry_run: false, confirm: false, trigger: "cli" }
}

async fn user_by_external_id(server: &TestServer, okta_id: &str) -> Option<Value> {
    let filter = format!("externalId eq \"{okta_id}\"");
    let reply = server
        .send(server.request(reqwest::Method::GET, "/scim/v2/Users").query(&[("filter", filter)]))
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    reply.body["Resources"].as_array().unwrap().first().cloned()
}

async fn a_full_import_shows_okta_users_and_groups_over_scim(server: TestServer) {
    let fake = FakeOkta::start(small_org());
    let connection = connect(&server, connection_body(&fake, json!({"email_domains": ["acme.example"]})));
    let report = run(&server, &connection, full()).await;
    assert_eq!(report.status, "succeeded", "{:?}", report);
    assert_eq!(report.counts.users_created, 5, "everyone but the outsider: {:?}", report.counts);
    assert_eq!(report.counts.groups_created, 2, "eng-all and offboarding; Everyone is BUILT_IN");

    let engineer = user_by_external_id(&server, "00ueng000000000000697").await.unwrap();
    let lead = user_by_external_id(&server, "00ulead00000000000697").await.unwrap();
    assert_eq!(engineer["userName"], "erik.eng@acme.example");
    assert_eq!(engineer["active"], true);
    assert_eq!(
        engineer["emails"][0],
        json!({"value": "erik.eng@acme.example", "type": "work", "primary": true})
    );
    assert_eq!(engineer["phoneNumbers"][0], json!({"value": "+47 400 12 345", "type": "mobile"}));
    let enterprise = &engineer["urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"];
    assert_eq!(enterprise["department"], "Platform");
    assert_eq!(enterprise["manager"]["value"], lead["id"], "the manager is linked by Okta id");
    assert_eq!(enterprise["manager"]["displayName"], "Lena Lead");
    assert_eq!(lead["title"], "Engineering Lead");
    for (okta_id, active) in
        [("00ususp00000000000697", false), ("00udepr00000000000697", false), ("00ustag00000000000697", false)]
    {
        let user = user_by_external_id(&server, okta_id).await.unwrap();
        assert_eq!(user["active"], active, "{okta_id}");
    }
    assert!(
        user_by_external_id(&server, "00uoutsider0000000697").await.is_none(),
        "outside the e-mail domains"
    );

    let groups = server.get("/scim/v2/Groups?filter=displayName%20eq%20%22eng-all%22").await;
    let group = &groups.body["Resources"][0];
    assert_eq!(group["externalId"], "00gengall000000000697");
    let mut members: Vec<&str> =
        group["members"].as_array().unwrap().iter().map(|m| m["value"].as_str().unwrap()).collect();
    members.sort();
    let mut expected = vec![lead["id"].as_str().unwrap(), engineer["id"].as_str().unwrap()];
    let suspended = user_by_external_id(&server, "00ususp00000000000697").await.unwrap();
    expected.push(suspended["id"].as_str().unwrap());
    expected.sort();
    assert_eq!(members, expected, "inactive users stay members");
    let everyone = server.get("/scim/v2/Groups?filter=displayName%20eq%20%22Everyone%22").await;
    assert_eq!(everyone.body["totalResults"], 0);

    // The run is in the history, its writes in the audit log under the run's id.
    let log = server
        .admin(reqwest::Method::GET, &format!("/admin/v1/audit?actor={}&resource=user", report.run_id), None)
        .await;
    assert_eq!(log.body["items"].as_array().unwrap().len(), 5);
    assert_eq!(log.body["items"][0]["actor"]["kind"], "importer");
}

async fn a_second_run_without_source_changes_writes_nothing(server: TestServer) {
    let fake = FakeOkta::start(small_org());
    let connection = connect(&server, connection_body(&fake, json!({})));
    assert_eq!(run(&server, &connection, full()).await.status, "succeeded");
    let before = server.get("/scim/v2/Users?count=100").await.body;
    let report = run(&server, &connection, full()).await;
    assert_eq!(report.status, "succeeded");
    let c = &report.counts;
    assert_eq!(
        (c.users_created, c.users_updated, c.users_deactivated, c.users_reactivated),
        (0, 0, 0, 0),
        "{c:?}"
    );
    assert_eq!(c.users_unchanged, 6);
    assert_eq!(
        (c.groups_created, c.groups_updated, c.members_added, c.members_removed),
        (0, 0, 0, 0),
        "{c:?}"
    );
    let after = server.get("/scim/v2/Users?count=100").await.body;
    assert_eq!(before, after, "no version or lastModified moved");
}

async fn vanished_users_and_denied_members_become_inactive_never_deleted(server: TestServer) {
    let fake = FakeOkta::start(small_org());
    let mut body = connection_body(&fake, json!({"denied_users_groups": ["offboarding"]}));
    body["brake"]["max_deactivate_percent"] = json!(100);
    let connection = connect(&server, body);
    assert_eq!(run(&server, &connection, full()).await.status, "succeeded");
    fake.change(|org| {
        org.remove_user("00ulead00000000000697");
        org.add_member("00goffboard00000000697", "00ueng000000000000697");
    });
    let report = run(&server, &connection, full()).await;
    assert_eq!(report.status, "succeeded", "{report:?}");
    assert_eq!(report.counts.users_deactivated, 2, "{:?}", report.counts);
    let lead = user_by_external_id(&server, "00ulead00000000000697").await.expect("kept, not deleted");
    assert_eq!(lead["active"], false);
    assert_eq!(lead["emails"][0]["value"], "lena.lead@acme.example", "contact data kept");
    let engineer = user_by_external_id(&server, "00ueng000000000000697").await.unwrap();
    assert_eq!(engineer["active"], false, "deny wins");
    // Back in the source: reactivated.
    fake.change(|org| org.remove_member("00goffboard00000000697", "00ueng000000000000697"));
    let report = run(&server, &connection, full()).await;
    assert_eq!(report.counts.users_reactivated, 1, "{:?}", report.counts);
}

async fn a_username_held_by_a_pushed_user_is_a_conflict_and_imported_users_refuse_push_edits(
    server: TestServer,
) {
    let pushed = server.create_user(user_body("erik.eng@acme.example")).await;
    let fake = FakeOkta::start(small_org());
    let connection = connect(&server, connection_body(&fake, json!({})));
    let report = run(&server, &connection, full()).await;
    assert_eq!(report.status, "succeeded");
    assert_eq!(report.conflicts.len(), 1, "{:?}", report.conflicts);
    assert_eq!(report.conflicts[0]["userName"], "erik.eng@acme.example");
    assert_eq!(report.conflicts[0]["source_id"], "00ueng000000000000697");
    let still = server.get(&format!("/scim/v2/Users/{}", pushed["id"].as_str().unwrap())).await;
    assert_eq!(still.body["name"], pushed["name"], "never overwritten");
    assert!(still.body.get("externalId").is_none());

    let lead = user_by_external_id(&server, "00ulead00000000000697").await.unwrap();
    let patch = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
        "Operations": [{"op": "replace", "path": "title", "value": "CEO"}]});
    let refused = server.patch(&format!("/scim/v2/Users/{}", lead["id"].as_str().unwrap()), &patch).await;
    let detail = refused.assert_error(409, None);
    assert!(detail.contains("okta-main"), "{detail}");
    let deleted = server.delete(&format!("/scim/v2/Users/{}", lead["id"].as_str().unwrap())).await;
    deleted.assert_error(409, None);
}

async fn the_brake_stops_a_mass_deactivation_until_confirmed(server: TestServer) {
    let fake = FakeOkta::start(small_org());
    let connection = connect(&server, connection_body(&fake, json!({})));
    assert_eq!(run(&server, &connection, full()).await.status, "succeeded");
    // The token's role narrowed: the org looks empty. 3 active users vanish, > 50 %.
    fake.change(|org| {
        for id in ["00ulead00000000000697", "00ueng000000000000697", "00uoutsider0000000697"] {
            org.remove_user(id);
        }
    });
    let braked = run(&server, &connection, full()).await;
    assert_eq!(braked.status, "braked", "{braked:?}");
    assert_eq!(braked.counts.users_deactivated, 3);
    assert_eq!(
        user_by_external_id(&server, "00ulead00000000000697").await.unwrap()["active"],
        true,
        "nothing applied"
    );
    let confirmed = run(&server, &connection, RunRequest { confirm: true, ..full() }).await;
    assert_eq!(confirmed.status, "succeeded");
    assert_eq!(user_by_external_id(&server, "00ulead00000000000697").await.unwrap()["active"], false);
}

async fn a_dry_run_writes_nothing(server: TestServer) {
    let fake = FakeOkta::start(small_org());
    let connection = connect(&server, connection_body(&fake, json!({})));
    let report = run(&server, &connection, RunRequest { dry_run: true, ..full() }).await;
    assert_eq!(report.status, "dry_run");
    assert_eq!(report.counts.users_created, 6);
    assert_eq!(server.get("/scim/v2/Users").await.body["totalResults"], 0);
    assert_eq!(server.get("/scim/v2/Groups").await.body["totalResults"], 0);
    // The plan is exact: applying it does what the dry run said, memberships of users it creates
    // included.
    let applied = run(&server, &connection, full()).await;
    assert_eq!(applied.counts, report.counts);
    assert_eq!(applied.counts.members_added, 3, "{:?}", applied.counts);
}

async fn a_failure_while_reading_applies_nothing_and_names_the_remedy(server: TestServer) {
    let fake = FakeOkta::start(small_org());
    let connection = connect(&server, connection_body(&fake, json!({})));
    fake.fail_next("/api/v1/groups", 1, Failure::InvalidToken);
    let report = run(&server, &connection, full()).await;
    assert_eq!(report.status, "failed");
    let error = report.error.unwrap();
    assert!(error.contains("API token") && error.contains("Security"), "{error}");
    assert_eq!(
        server.get("/scim/v2/Users").await.body["totalResults"],
        0,
        "users read before the failure were not applied"
    );
}

async fn pages_are_followed_and_rate_limits_waited_out(server: TestServer) {
    let mut org = Org::empty();
    for n in 0..450 {
        org.add_user(Org::user(&format!("00u{n:014}697"), &format!("user{n}@acme.example"), "ACTIVE"));
    }
    let fake = FakeOkta::start(org);
    let connection = connect(&server, connection_body(&fake, json!({})));
    fake.fail_next("/api/v1/users", 1, Failure::RateLimited);
    fake.fail_next("/api/v1/groups", 1, Failure::ServerError);
    let report = run(&server, &connection, full()).await;
    assert_eq!(report.status, "succeeded", "{report:?}");
    assert_eq!(report.counts.users_created, 450);
    assert_eq!(server.get("/scim/v2/Users").await.body["totalResults"], 450);
    let listings: Vec<String> = fake
        .requests()
        .into_iter()
        .map(|r| r.path_and_query)
        .filter(|p| p.starts_with("/api/v1/users") && !p.contains("filter="))
        .collect();
    // One 429, then three pages of at most 200, the later ones by the `after` cursor Okta gave.
    assert_eq!(listings.len(), 4, "{listings:?}");
    assert!(listings.iter().all(|p| p.contains("limit=200")), "{listings:?}");
    assert!(listings.iter().skip(2).all(|p| p.contains("after=")), "{listings:?}");
    let auth = fake.requests().into_iter().find_map(|r| r.authorization).unwrap();
    assert!(auth.starts_with("SSWS "), "{auth}");
}

/// Okta's buckets belong to the whole org: a run spends at most the connection's share of each
/// window (50 % unless `rate_limit_percent` says otherwise) and waits for the next window.
async fn a_run_spends_only_its_share_of_each_rate_limit_window(server: TestServer) {
    let mut org = Org::empty();
    for n in 0..2300 {
        org.add_user(Org::user(&format!("00u{n:014}697"), &format!("user{n}@acme.example"), "ACTIVE"));
    }
    // 13 listing requests (12 pages of 200 and the deprovisioned listing) against 10 a window.
    org.limits.users_list = 10;
    org.limits.window = std::time::Duration::from_secs(1);
    for (directory, percent, most) in [("acme", None, 5), ("second", Some(80), 8)] {
        let fake = FakeOkta::start(org.clone());
        let mut body = connection_body(&fake, json!({}));
        if let Some(percent) = percent {
            body["okta"]["rate_limit_percent"] = json!(percent);
        }
        if directory != "acme" {
            server.second_directory(directory);
        }
        let connection = server.connect(directory, body);
        let report = run(&server, &connection, full()).await;
        assert_eq!((report.status, report.counts.users_created), ("succeeded", 2300), "{report:?}");
        let listings =
            fake.requests().iter().filter(|r| r.path_and_query.starts_with("/api/v1/users?")).count();
        assert_eq!(listings, 13, "no request was refused with a 429");
        assert_eq!(fake.most_used_in_a_window("/api/v1/users"), most, "{percent:?} % of 10 a window");
    }
    let mut body = connection_body(&FakeOkta::start(Org::empty()), json!({}));
    body["okta"]["rate_limit_percent"] = json!(0);
    let refused = scimd::sync::connection::parse(body).unwrap_err().to_string();
    assert!(refused.contains("okta.rate_limit_percent") && refused.contains("1 to 100"), "{refused}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sync_started_by_the_admin_api_runs_in_the_background_and_is_in_the_history() {
    let server = TestServer::start(crate::support::Backend::Sqlite).await;
    let fake = FakeOkta::start(small_org());
    let connection = connect(&server, connection_body(&fake, json!({})));
    let path = format!("/admin/v1/connections/{}/sync", connection.id);
    let bad = server.admin(reqwest::Method::POST, &path, Some(json!({"mode": "sideways"}))).await;
    assert!(bad.assert_admin_error(400).contains("mode"));
    let started = server.admin(reqwest::Method::POST, &path, Some(json!({"mode": "full"}))).await;
    assert_eq!(started.status, StatusCode::ACCEPTED, "{}", started.body);
    let run_id = started.body["run_id"].as_str().unwrap().to_string();
    let runs_path = format!("/admin/v1/connections/{}/runs", connection.id);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let run = loop {
        let runs = server.admin(reqwest::Method::GET, &runs_path, None).await;
        let run = runs.body["items"][0].clone();
        assert_eq!(run["id"], run_id.as_str());
        if run["status"] != "running" {
            break run;
        }
        assert!(std::time::Instant::now() < deadline, "the run never finished");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(run["trigger"], "api");
    assert_eq!(run["report"]["users"]["created"], 6);
    server.admin(reqwest::Method::GET, "/admin/v1/connections/nope/runs", None).await.assert_admin_error(404);
}

/// An Okta id that sorts by `series` and then `n`: the engine stages and applies users in
/// source-id order, 500 to a batch.
fn numbered(series: char, n: usize) -> String {
    format!("00u{series}{n:013}697")
}

fn rename(org: &mut Org, id: &str, login: &str) {
    org.update_user(id, |u| {
        u.profile.insert("login".into(), json!(login));
    });
}

async fn user_name_of(server: &TestServer, okta_id: &str) -> Value {
    user_by_external_id(server, okta_id).await.unwrap()["userName"].clone()
}

/// With over 2,000 changed users the apply pass spans several transactions. A userName freed by
/// a rename early in the run must still go to the user who takes it later in the run, whether it
/// is freed in the transaction before or earlier in the same one: each batch is decided against
/// what is stored just before it is applied (deciding ahead, on a reader, got this wrong).
async fn a_username_freed_in_a_large_run_is_taken_later_in_the_same_run(server: TestServer) {
    let mut org = Org::empty();
    for n in 0..1000 {
        org.add_user(Org::user(&numbered('b', n), &format!("b{n}@acme.example"), "ACTIVE"));
    }
    let fake = FakeOkta::start(org);
    let connection = connect(&server, connection_body(&fake, json!({})));
    assert_eq!(run(&server, &connection, full()).await.counts.users_created, 1000);

    // 2,000 new users sort first, so the first transaction only creates and the batches of the
    // second are decided ahead of it. In the second, b100 (its first batch) gives up its name
    // and b700 (its second) takes it; b701 changes too, so b700's batch is applied.
    fake.change(|org| {
        for n in 0..2000 {
            org.add_user(Org::user(&numbered('a', n), &format!("a{n}@acme.example"), "ACTIVE"));
        }
        rename(org, &numbered('b', 100), "b100.moved@acme.example");
        rename(org, &numbered('b', 700), "b100@acme.example");
        org.update_user(&numbered('b', 701), |u| {
            u.profile.insert("title".into(), json!("Buyer"));
        });
    });
    let report = run(&server, &connection, full()).await;
    assert_eq!(report.status, "succeeded", "{report:?}");
    assert_eq!(report.counts.users_created, 2000);
    assert_eq!(user_name_of(&server, &numbered('b', 100)).await, "b100.moved@acme.example");
    assert_eq!(user_name_of(&server, &numbered('b', 700)).await, "b100@acme.example");

    // Everyone changes now, so every transaction updates: a0 gives up its name in the first
    // transaction and b300 takes it in the first batch of the second.
    fake.change(|org| {
        let ids: Vec<String> = org.users.iter().map(|u| u.id.clone()).collect();
        for id in ids {
            org.update_user(&id, |u| {
                u.profile.insert("title".into(), json!("Analyst"));
            });
        }
        rename(org, &numbered('a', 0), "a0.moved@acme.example");
        rename(org, &numbered('b', 300), "a0@acme.example");
    });
    let report = run(&server, &connection, full()).await;
    assert_eq!(report.status, "succeeded", "{report:?}");
    assert_eq!(report.counts.users_updated, 3000, "{:?}", report.counts);
    assert_eq!(user_name_of(&server, &numbered('a', 0)).await, "a0.moved@acme.example");
    assert_eq!(user_name_of(&server, &numbered('b', 300)).await, "a0@acme.example");
}

/// A first run (the connection holds no active users) can deactivate no one, so nothing can trip
/// the brake and it is not planned first: it decides and applies every batch in one pass, ten
/// batches of 500 a transaction. Past one transaction's worth, and with a login two users share,
/// each user is still created once and the collision reported once. A later run is planned.
async fn a_first_run_applies_in_one_pass_and_later_runs_are_planned(server: TestServer) {
    let mut org = Org::empty();
    for n in 0..5_100 {
        org.add_user(Org::user(&numbered('c', n), &format!("c{n}@acme.example"), "ACTIVE"));
    }
    org.add_user(Org::user(&numbered('d', 0), "c5050@acme.example", "ACTIVE"));
    let fake = FakeOkta::start(org);
    let connection = connect(&server, connection_body(&fake, json!({})));
    let key = server.config.secret_key().unwrap();
    let phases = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let lines = phases.clone();
    let note = move |line: &str| lines.lock().unwrap().push(line.to_string());
    let planned = |phases: &std::sync::Mutex<Vec<String>>| {
        phases.lock().unwrap().drain(..).filter(|line| line.starts_with("planned users")).count()
    };

    let first = engine::run(&server.store, key.as_ref(), &connection, full(), &note).await.unwrap();
    assert_eq!(first.status, "succeeded", "{first:?}");
    assert_eq!(planned(&phases), 0, "a first run is not planned");
    assert_eq!(first.counts.users_created, 5_100, "{:?}", first.counts);
    assert_eq!(first.conflicts.len(), 1, "{:?}", first.conflicts);
    assert_eq!(first.conflicts[0]["userName"], "c5050@acme.example");
    let listed =
        server.send(server.request(reqwest::Method::GET, "/scim/v2/Users").query(&[("count", "1")])).await;
    assert_eq!(listed.body["totalResults"], 5_100);

    fake.change(|org| {
        org.update_user(&numbered('c', 4_999), |u| {
            u.profile.insert("title".into(), json!("Buyer"));
        });
    });
    let second = engine::run(&server.store, key.as_ref(), &connection, full(), &note).await.unwrap();
    assert_eq!(planned(&phases), 1, "a run that could deactivate someone is planned");
    assert_eq!(
        (second.counts.users_updated, second.counts.users_unchanged),
        (1, 5_099),
        "{:?}",
        second.counts
    );
}

/// A run's stage is deleted a chunk of rows per statement (SQLite holds memory for every row one
/// DELETE removes), until none is left, and no other run's stage is touched.
async fn a_runs_stage_is_cleared_a_chunk_at_a_time_and_only_its_own(server: TestServer) {
    use scimd::store::schema::{
        sync_stage_groups, sync_stage_members, sync_stage_subgroups, sync_stage_users,
    };
    use scimd::store::sync_runs::{self, StagedGroup};
    use scimd::sync::source::{MappedUser, SourceStatus};
    let fake = FakeOkta::start(small_org());
    let connection = connect(&server, connection_body(&fake, json!({})));
    // Staged rows per table for `run`: users, groups, members, nested groups.
    fn staged(server: &TestServer, run: &str) -> [i64; 4] {
        let run = run.to_string();
        server
            .store
            .read_now(move |conn, _| {
                use diesel::prelude::*;
                Ok([
                    sync_stage_users::table
                        .filter(sync_stage_users::run_id.eq(&run))
                        .count()
                        .get_result(conn)?,
                    sync_stage_groups::table
                        .filter(sync_stage_groups::run_id.eq(&run))
                        .count()
                        .get_result(conn)?,
                    sync_stage_members::table
                        .filter(sync_stage_members::run_id.eq(&run))
                        .count()
                        .get_result(conn)?,
                    sync_stage_subgroups::table
                        .filter(sync_stage_subgroups::run_id.eq(&run))
                        .count()
                        .get_result(conn)?,
                ])
            })
            .unwrap()
    }
    let id = connection.id.clone();
    let runs: Vec<String> = server
        .store
        .write_now(move |conn, _| {
            let mut runs = Vec::new();
            for _ in 0..2 {
                let run = sync_runs::start(conn, &id, "cli", "full", false)?;
                let users: Vec<MappedUser> = (0..23)
                    .map(|i| MappedUser {
                        source_id: format!("00u{i:017}"),
                        status: SourceStatus::Active,
                        created: "2026-01-01T00:00:00.000Z".into(),
                        user_name: Some(format!("u{i}@acme.example")),
                        primary_email: format!("u{i}@acme.example"),
                        manager_source_id: None,
                        resource: Default::default(),
                    })
                    .collect();
                sync_runs::stage_users(conn, &run, &id, &users)?;
                let members: Vec<String> = users.iter().map(|u| u.source_id.clone()).collect();
                for g in 0..5 {
                    let group = format!("00g{g:017}");
                    let staged = StagedGroup {
                        source_id: group.clone(),
                        name: format!("group {g}"),
                        group_type: "OKTA_GROUP".into(),
                        changed: true,
                        members_read: true,
                        imported: true,
                    };
                    sync_runs::stage_groups(conn, &run, &[staged])?;
                    sync_runs::stage_members(conn, &run, &group, &members[g..])?;
                    let nested: Vec<String> = (g + 1..5).map(|n| format!("00g{n:017}")).collect();
                    sync_runs::stage_subgroups(conn, &run, &group, &nested)?;
                }
                runs.push(run);
            }
            Ok(runs)
        })
        .unwrap();
    let full = [23, 5, 23 + 22 + 21 + 20 + 19, 10];
    assert_eq!(staged(&server, &runs[0]), full);
    let first = runs[0].clone();
    server.store.write_now(move |conn, _| sync_runs::clear_stage_by(conn, &first, 4)).unwrap();
    assert_eq!(staged(&server, &runs[0]), [0; 4], "every chunk deleted");
    assert_eq!(staged(&server, &runs[1]), full, "the other run's stage is untouched");
}
