//! The Entra importer end to end: the fake Microsoft Graph over HTTP, the same engine as Okta's,
//! a real database on both backends, and the result checked over SCIM with the directory's key.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::support::fake_graph::{
    AppRegistration, FakeGraph, GraphGroup, GraphUser, Tenant, APP_CERTIFICATE, IMPORTER_PERMISSIONS,
    USER_READ_ALL,
};
use crate::support::snapshot::{assert_same, snapshot};
use crate::support::{on_both_backends, TestServer};
use scimd::store::connections::{self, ConnectionRecord};
use scimd::sync::engine::{self, Report, RunRequest};

on_both_backends!(
    a_full_import_shows_entra_users_and_groups_over_scim,
    security_groups_and_groups_without_mail_are_imported_when_the_rules_say_so,
    a_failing_primary_credential_falls_back_to_the_backup_and_says_so,
    a_missing_permission_fails_the_run_with_its_remedy_and_writes_nothing,
    a_username_held_by_a_pushed_user_is_a_conflict_never_an_overwrite,
    group_members_are_read_while_users_are_still_listed,
    a_full_read_flattens_nested_groups_from_the_groups_delta_round,
    a_full_run_forgets_memberships_gone_from_the_tenant,
);

const ENTERPRISE: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";

/// Ids of the users and groups of [`small_tenant`].
struct Ids {
    lead: String,
    engineer: String,
    disabled: String,
    leaver: String,
    outsider: String,
}

/// A lead and the engineer she manages, a disabled account, a leaver in the offboarding group,
/// an outsider by domain. eng-all (Microsoft 365) holds the lead and, through the nested
/// security group eng-platform, the engineer; all-staff is a distribution list.
fn small_tenant() -> (Tenant, Ids) {
    let mut tenant = Tenant::empty();
    let mut lead = GraphUser::new("lena.lead@contoso.example");
    lead.job_title = Some("Engineering Lead".into());
    let mut engineer = GraphUser::new("erik.eng@contoso.example");
    engineer.job_title = Some("Engineer".into());
    engineer.department = Some("Platform".into());
    engineer.employee_id = Some("E-1001".into());
    engineer.business_phones = vec!["+47 22 00 00 01".into()];
    engineer.mobile_phone = Some("+47 400 12 345".into());
    engineer.city = Some("Oslo".into());
    engineer.country = Some("Norway".into());
    engineer.manager_id = Some(lead.id.clone());
    let mut disabled = GraphUser::new("dan.disabled@contoso.example");
    disabled.account_enabled = false;
    let leaver = GraphUser::new("olga.leaver@contoso.example");
    let outsider = GraphUser::new("otto@elsewhere.example");
    let ids = Ids {
        lead: lead.id.clone(),
        engineer: engineer.id.clone(),
        disabled: disabled.id.clone(),
        leaver: leaver.id.clone(),
        outsider: outsider.id.clone(),
    };
    for user in [lead, engineer, disabled, leaver, outsider] {
        tenant.add_user(user);
    }
    let eng_all = GraphGroup::microsoft_365("eng-all", "eng-all@contoso.example");
    let platform = GraphGroup::security("eng-platform");
    let offboarding = GraphGroup::security("offboarding");
    let all_staff = GraphGroup::distribution("all-staff", "all-staff@contoso.example");
    let (eng_all_id, platform_id, offboarding_id, all_staff_id) =
        (eng_all.id.clone(), platform.id.clone(), offboarding.id.clone(), all_staff.id.clone());
    for group in [eng_all, platform, offboarding, all_staff] {
        tenant.add_group(group);
    }
    tenant.add_member(&eng_all_id, &ids.lead);
    tenant.add_member(&eng_all_id, &platform_id);
    tenant.add_member(&platform_id, &ids.engineer);
    tenant.add_member(&offboarding_id, &ids.leaver);
    for user in [&ids.lead, &ids.engineer, &ids.leaver] {
        tenant.add_member(&all_staff_id, user);
    }
    (tenant, ids)
}

fn connection_body(fake: &FakeGraph, auth: Value, rules: Value) -> Value {
    json!({
        "name": "entra-main", "kind": "entra",
        "entra": fake.entra_source(auth),
        "rules": rules,
        "brake": {"max_deactivate_percent": 50}
    })
}

fn importer_app(fake: &FakeGraph) -> AppRegistration {
    fake.register_app(AppRegistration::new(&IMPORTER_PERMISSIONS))
}

/// Runs the connection as stored now: a delta run starts from the links the last run stored.
async fn run(server: &TestServer, connection: &ConnectionRecord, full: bool) -> Report {
    let key = server.config.secret_key().unwrap();
    let request = RunRequest { full, dry_run: false, confirm: false, trigger: "cli" };
    let id = connection.id.clone();
    let connection = server.store.read_now(move |conn, _| connections::get(conn, &id)).unwrap();
    engine::run(&server.store, key.as_ref(), &connection, request, &|_| {}).await.unwrap()
}

async fn scim_list(server: &TestServer, path: &str, filter: &str) -> Vec<Value> {
    let reply = server.send(server.request(reqwest::Method::GET, path).query(&[("filter", filter)])).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    reply.body["Resources"].as_array().cloned().unwrap_or_default()
}

async fn user_by_external_id(server: &TestServer, entra_id: &str) -> Option<Value> {
    scim_list(server, "/scim/v2/Users", &format!("externalId eq \"{entra_id}\"")).await.into_iter().next()
}

/// The scimd ids of the users imported from these Entra ids, sorted.
async fn scim_ids(server: &TestServer, entra_ids: &[&str]) -> Vec<String> {
    let mut found = Vec::new();
    for id in entra_ids {
        let user = user_by_external_id(server, id).await.unwrap_or_else(|| panic!("{id} was not imported"));
        found.push(user["id"].as_str().unwrap().to_string());
    }
    found.sort();
    found
}

async fn group_member_ids(server: &TestServer, name: &str) -> Option<Vec<String>> {
    let group = scim_list(server, "/scim/v2/Groups", &format!("displayName eq \"{name}\""))
        .await
        .into_iter()
        .next()?;
    let mut ids: Vec<String> = group["members"]
        .as_array()
        .map(|members| members.iter().filter_map(|m| m["value"].as_str().map(str::to_string)).collect())
        .unwrap_or_default();
    ids.sort();
    Some(ids)
}

async fn a_full_import_shows_entra_users_and_groups_over_scim(server: TestServer) {
    let (tenant, ids) = small_tenant();
    let fake = FakeGraph::start(tenant);
    let app = importer_app(&fake);
    let rules = json!({"email_domains": ["contoso.example"], "denied_users_groups": ["offboarding"]});
    let connection = server.connect("acme", connection_body(&fake, app.secret_auth(), rules));
    let report = run(&server, &connection, true).await;
    assert_eq!(report.status, "succeeded", "{report:?}");
    assert_eq!(report.mode, "full");
    assert_eq!(report.counts.users_created, 4, "all but the outsider: {:?}", report.counts);
    assert_eq!(report.counts.groups_created, 2, "the groups with mail: {:?}", report.counts);

    let lead = user_by_external_id(&server, &ids.lead).await.unwrap();
    let engineer = user_by_external_id(&server, &ids.engineer).await.unwrap();
    assert_eq!(engineer["userName"], "erik.eng@contoso.example", "userPrincipalName by default");
    assert_eq!(engineer["displayName"], "Erik Eng");
    assert_eq!(engineer["name"]["givenName"], "Erik");
    assert_eq!(engineer["name"]["familyName"], "Eng");
    assert_eq!(engineer["title"], "Engineer");
    assert_eq!(engineer["active"], true);
    assert_eq!(
        engineer["emails"][0],
        json!({"value": "erik.eng@contoso.example", "type": "work", "primary": true})
    );
    let phones = engineer["phoneNumbers"].as_array().unwrap();
    assert!(phones.contains(&json!({"value": "+47 22 00 00 01", "type": "work"})), "{phones:?}");
    assert!(phones.contains(&json!({"value": "+47 400 12 345", "type": "mobile"})), "{phones:?}");
    assert_eq!(engineer["addresses"][0]["locality"], "Oslo");
    assert_eq!(engineer["addresses"][0]["country"], "Norway");
    let enterprise = &engineer[ENTERPRISE];
    assert_eq!(enterprise["employeeNumber"], "E-1001");
    assert_eq!(enterprise["department"], "Platform");
    assert_eq!(enterprise["manager"]["value"], lead["id"], "the manager is linked to the imported lead");
    assert_eq!(enterprise["manager"]["displayName"], "Lena Lead");

    let disabled = user_by_external_id(&server, &ids.disabled).await.unwrap();
    assert_eq!(disabled["active"], false, "accountEnabled false is inactive");
    let leaver = user_by_external_id(&server, &ids.leaver).await.unwrap();
    assert_eq!(leaver["active"], false, "a member of a denied group is inactive");
    assert_eq!(leaver["emails"][0]["value"], "olga.leaver@contoso.example", "and keeps their contact data");
    assert!(user_by_external_id(&server, &ids.outsider).await.is_none(), "outside the e-mail domains");

    let mut nested =
        vec![lead["id"].as_str().unwrap().to_string(), engineer["id"].as_str().unwrap().to_string()];
    nested.sort();
    assert_eq!(
        group_member_ids(&server, "eng-all").await,
        Some(nested),
        "the nested group's member is flattened into eng-all"
    );
    assert_eq!(group_member_ids(&server, "all-staff").await.map(|m| m.len()), Some(3));
    assert_eq!(group_member_ids(&server, "eng-platform").await, None, "a security group without mail");
    assert_eq!(group_member_ids(&server, "offboarding").await, None);

    // A full run with nothing changed in the tenant changes nothing.
    let before = snapshot(&server, &server.key).await;
    let again = run(&server, &connection, true).await;
    assert_eq!(again.status, "succeeded", "{again:?}");
    assert_eq!(again.mode, "full");
    assert_eq!(again.counts.users_unchanged, 4, "{:?}", again.counts);
    assert_eq!(again.counts.users_created + again.counts.users_updated + again.counts.users_deactivated, 0);
    assert_eq!(again.counts.groups_unchanged, 2, "{:?}", again.counts);
    assert_same(&before, &snapshot(&server, &server.key).await, "a second run with nothing changed");

    // A change in the tenant reaches the directory on the next run.
    fake.change(|t| t.disable_user(&ids.engineer));
    let third = run(&server, &connection, true).await;
    assert_eq!(third.counts.users_deactivated, 1, "{:?}", third.counts);
    let engineer = user_by_external_id(&server, &ids.engineer).await.unwrap();
    assert_eq!(engineer["active"], false);
}

async fn security_groups_and_groups_without_mail_are_imported_when_the_rules_say_so(server: TestServer) {
    let (tenant, _) = small_tenant();
    let fake = FakeGraph::start(tenant);
    let app = importer_app(&fake);
    let rules = json!({"import_security_groups": true, "group_prefixes": ["eng-"]});
    let connection = server.connect("acme", connection_body(&fake, app.secret_auth(), rules));
    let report = run(&server, &connection, true).await;
    assert_eq!(report.status, "succeeded", "{report:?}");
    assert_eq!(report.counts.groups_created, 2, "eng-all and eng-platform; the prefix leaves the others out");
    assert!(group_member_ids(&server, "eng-platform").await.is_some());
    assert!(group_member_ids(&server, "offboarding").await.is_none());
    assert!(group_member_ids(&server, "all-staff").await.is_none());
}

async fn a_failing_primary_credential_falls_back_to_the_backup_and_says_so(server: TestServer) {
    let (tenant, ids) = small_tenant();
    let fake = FakeGraph::start(tenant);
    let app =
        fake.register_app(AppRegistration::new(&IMPORTER_PERMISSIONS).with_certificate(APP_CERTIFICATE));
    let mut entra = fake.entra_source(json!({
        "method": "client_secret", "client_id": app.client_id, "client_secret": "not-the-secret"
    }));
    entra["backup_auth"] = app.certificate_auth(APP_CERTIFICATE);
    let body = json!({"name": "entra-main", "kind": "entra", "entra": entra});
    let connection = server.connect("acme", body);
    let report = run(&server, &connection, true).await;
    assert_eq!(report.status, "succeeded", "{report:?}");
    assert!(user_by_external_id(&server, &ids.lead).await.is_some());
    let fallback =
        report.warnings.iter().find(|w| w.contains("backup")).unwrap_or_else(|| panic!("{report:?}"));
    assert!(fallback.contains("secret"), "the warning says what failed: {fallback}");
}

async fn a_missing_permission_fails_the_run_with_its_remedy_and_writes_nothing(server: TestServer) {
    let (tenant, _) = small_tenant();
    let fake = FakeGraph::start(tenant);
    let app = fake.register_app(AppRegistration::new(&[USER_READ_ALL]));
    let connection = server.connect("acme", connection_body(&fake, app.secret_auth(), json!({})));
    let report = run(&server, &connection, true).await;
    assert_eq!(report.status, "failed", "{report:?}");
    let error = report.error.clone().unwrap_or_default();
    assert!(error.contains("GroupMember.Read.All") || error.contains("Group.Read.All"), "{error}");
    assert!(error.to_lowercase().contains("consent"), "the remedy says what to do: {error}");
    assert!(scim_list(&server, "/scim/v2/Users", "userName pr").await.is_empty(), "nothing was applied");

    let key = server.config.secret_key().unwrap();
    let checks = engine::verify(&server.store, key.as_ref(), &connection).await;
    assert!(checks.first().is_some_and(|c| c.remedy.is_none()), "the token is fine: {checks:?}");
    assert!(checks.iter().any(|c| c.remedy.as_deref().is_some_and(|r| r.contains("Read.All"))), "{checks:?}");
}

async fn a_username_held_by_a_pushed_user_is_a_conflict_never_an_overwrite(server: TestServer) {
    let pushed = server.create_user(crate::support::user_body("erik.eng@contoso.example")).await;
    let (tenant, ids) = small_tenant();
    let fake = FakeGraph::start(tenant);
    let app = importer_app(&fake);
    let connection = server.connect("acme", connection_body(&fake, app.secret_auth(), json!({})));
    let report = run(&server, &connection, true).await;
    assert_eq!(report.status, "succeeded", "{report:?}");
    assert_eq!(report.conflicts.len(), 1, "{:?}", report.conflicts);
    assert_eq!(report.conflicts[0]["userName"], "erik.eng@contoso.example");
    assert_eq!(report.conflicts[0]["source_id"], ids.engineer.as_str());
    assert_eq!(report.conflicts[0]["held_by"], "a user provisioned by SCIM push");
    let still = server.get(&format!("/scim/v2/Users/{}", pushed["id"].as_str().unwrap())).await;
    assert_eq!(still.body["name"], pushed["name"], "never overwritten");
    assert!(still.body.get("externalId").is_none());
    assert_eq!(user_by_external_id(&server, &ids.engineer).await, None, "never merged");
}

/// A full read lists users and reads group members at once: the groups delta round spends the
/// budget's windows while the users are listed, instead of waiting for later windows after
/// them. With 40 ms a request, a page of the round arrives before the last page of users.
async fn group_members_are_read_while_users_are_still_listed(server: TestServer) {
    let mut tenant = Tenant::generate(2_500, 20, 7);
    // Several pages of groups and members, as a large tenant's round has.
    tenant.paging.delta_members_per_page = 50;
    let fake = FakeGraph::start(tenant);
    let app = importer_app(&fake);
    let connection = server.connect("acme", connection_body(&fake, app.secret_auth(), json!({})));
    fake.set_latency(std::time::Duration::from_millis(40));
    let report = run(&server, &connection, true).await;
    assert_eq!(report.status, "succeeded", "{report:?}");
    assert!(report.counts.groups_created > 0 && report.counts.members_added > 0, "{:?}", report.counts);
    let requests = fake.requests();
    let users_pages: Vec<_> = requests.iter().filter(|r| r.path() == "/v1.0/users").collect();
    assert!(users_pages.len() > 1, "several pages of users");
    let round: Vec<_> = requests
        .iter()
        .filter(|r| r.path() == "/v1.0/groups/delta" && r.query("$deltatoken").is_none())
        .map(|r| r.received)
        .collect();
    assert!(round.len() > 1, "several pages of groups");
    let last_users_page = users_pages.iter().map(|r| r.received).max().unwrap();
    assert!(round[1] < last_users_page, "the groups waited for the users listing");
}

/// A full read takes every group's direct members from the groups delta round (1 resource unit
/// a page) and flattens nested groups itself, at any depth and through a cycle, as Graph's
/// transitive listing (5 units a group) would: groups the rules do not import still bring their
/// members into the groups they are nested in. Big groups span pages, and pages replay objects.
/// A delta run, which reads a changed group's transitive members, agrees.
async fn a_full_read_flattens_nested_groups_from_the_groups_delta_round(server: TestServer) {
    let mut tenant = Tenant::empty();
    let users: Vec<GraphUser> = ["ada", "bo", "cy", "di"]
        .iter()
        .map(|name| GraphUser::new(&format!("{name}@contoso.example")))
        .collect();
    let ids: Vec<String> = users.iter().map(|u| u.id.clone()).collect();
    for user in users {
        tenant.add_user(user);
    }
    let outer = GraphGroup::microsoft_365("outer", "outer@contoso.example");
    let (middle, inner) = (GraphGroup::security("middle"), GraphGroup::security("inner"));
    let (outer_id, middle_id, inner_id) = (outer.id.clone(), middle.id.clone(), inner.id.clone());
    for group in [outer, middle, inner] {
        tenant.add_group(group);
    }
    tenant.add_member(&outer_id, &ids[0]);
    tenant.add_member(&outer_id, &middle_id);
    tenant.add_member(&middle_id, &ids[1]);
    tenant.add_member(&middle_id, &inner_id);
    tenant.add_member(&inner_id, &ids[2]);
    tenant.add_member(&inner_id, &outer_id);
    tenant.paging.delta_page_size = 2;
    tenant.paging.delta_members_per_page = 1;
    tenant.paging.replay_last_delta_object = true;
    let fake = FakeGraph::start(tenant);
    let app = importer_app(&fake);
    let connection = server.connect("acme", connection_body(&fake, app.secret_auth(), json!({})));

    let report = run(&server, &connection, true).await;
    assert_eq!(report.status, "succeeded", "{report:?}");
    assert_eq!(report.counts.groups_created, 1, "only outer has mail: {:?}", report.counts);
    let requests = fake.requests();
    assert!(requests.iter().all(|r| !r.path().ends_with("/transitiveMembers")), "no transitive listing");
    assert!(requests.iter().filter(|r| r.path() == "/v1.0/groups/delta").count() > 3, "a round of pages");
    assert_eq!(
        group_member_ids(&server, "outer").await,
        Some(scim_ids(&server, &[&ids[0], &ids[1], &ids[2]]).await),
        "members two levels down, and none twice through the cycle"
    );

    fake.change(|t| {
        t.remove_member(&inner_id, &ids[2]);
        t.add_member(&middle_id, &ids[3]);
    });
    let delta = run(&server, &connection, false).await;
    assert_eq!(delta.status, "succeeded", "{delta:?}");
    assert_eq!(delta.mode, "delta");
    let expected = Some(scim_ids(&server, &[&ids[0], &ids[1], &ids[3]]).await);
    assert_eq!(group_member_ids(&server, "outer").await, expected, "the delta run");
    let full = run(&server, &connection, true).await;
    assert_eq!(full.status, "succeeded", "{full:?}");
    assert_eq!(full.counts.members_added + full.counts.members_removed, 0, "agrees: {:?}", full.counts);
    assert_eq!(group_member_ids(&server, "outer").await, expected, "the full run");
}

/// A full run moves the connection's mirror of memberships to what it read, by difference: a
/// membership gone from the tenant leaves the mirror. The next delta run, which does not read
/// that group again, then judges the user by what holds: the leaver, out of the denied group,
/// stays active when only their title changes.
async fn a_full_run_forgets_memberships_gone_from_the_tenant(server: TestServer) {
    let (tenant, ids) = small_tenant();
    let offboarding = tenant.groups.values().find(|g| g.display_name == "offboarding").unwrap().id.clone();
    let fake = FakeGraph::start(tenant);
    let app = importer_app(&fake);
    let rules = json!({"denied_users_groups": ["offboarding"]});
    let connection = server.connect("acme", connection_body(&fake, app.secret_auth(), rules));
    run(&server, &connection, true).await;
    assert_eq!(user_by_external_id(&server, &ids.leaver).await.unwrap()["active"], false, "denied");

    fake.change(|t| t.remove_member(&offboarding, &ids.leaver));
    let full = run(&server, &connection, true).await;
    assert_eq!(full.counts.users_reactivated, 1, "{:?}", full.counts);
    fake.change(|t| t.update_user(&ids.leaver, |u| u.job_title = Some("Returner".into())));
    let delta = run(&server, &connection, false).await;
    assert_eq!(delta.mode, "delta");
    let leaver = user_by_external_id(&server, &ids.leaver).await.unwrap();
    assert_eq!(leaver["title"], "Returner");
    assert_eq!(leaver["active"], true, "judged by a mirror that still held the old membership");
}
