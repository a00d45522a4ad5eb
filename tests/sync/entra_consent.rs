//! Delegated consent of Entra connections end to end, over real HTTP: an admin gets the authorize
//! link from scimd, the fake Microsoft identity platform signs them in and sends the browser
//! back to scimd's callback with a code, scimd keeps the refresh token (sealed, never shown),
//! runs import with it and keep the newest one after every refresh; a refused refresh marks the
//! connection as needing consent, and consenting again mends it. On both backends.

use std::collections::BTreeMap;

use diesel::prelude::*;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::support::fake_graph::{
    AppRegistration, FakeGraph, GraphGroup, GraphUser, Recorded, Tenant, IMPORTER_PERMISSIONS, USER_READ_ALL,
};
use crate::support::{on_both_backends, TestServer};
use scimd::sync::engine::{self, Report, RunRequest};

on_both_backends!(
    an_admin_connects_a_delegated_credential_and_the_newest_refresh_token_is_kept,
    a_revoked_sign_in_fails_the_run_marks_the_connection_and_a_new_consent_mends_it,
    callbacks_with_a_bad_expired_or_used_state_or_a_refusal_change_nothing,
    only_admins_get_authorize_links_and_only_for_delegated_entra_credentials,
    a_delegated_credential_and_a_client_secret_back_each_other_up,
    a_consent_stays_with_its_app_and_goes_when_the_app_changes,
);

const CALLBACK: &str = "/admin/v1/entra/callback";

/// Two users and a group with mail, for runs to import.
fn tenant() -> Tenant {
    let mut tenant = Tenant::empty();
    let lena = GraphUser::new("lena@contoso.example");
    let erik = GraphUser::new("erik@contoso.example");
    let group = GraphGroup::microsoft_365("eng-all", "eng-all@contoso.example");
    let (lena_id, erik_id, group_id) = (lena.id.clone(), erik.id.clone(), group.id.clone());
    tenant.add_user(lena);
    tenant.add_user(erik);
    tenant.add_group(group);
    tenant.add_member(&group_id, &lena_id);
    tenant.add_member(&group_id, &erik_id);
    tenant
}

/// The fake tenant and an app that may be signed into with the importer's delegated
/// permissions, its redirect URI this server's callback.
fn delegated_app(server: &TestServer, roles: &[&str]) -> (FakeGraph, AppRegistration) {
    let fake = FakeGraph::start(tenant());
    let app = fake.register_app(
        AppRegistration::new(roles).with_delegated(&IMPORTER_PERMISSIONS, &server.url(CALLBACK)),
    );
    (fake, app)
}

fn body(fake: &FakeGraph, name: &str, auth: Value, backup: Option<Value>) -> Value {
    let mut entra = fake.entra_source(auth);
    if let Some(backup) = backup {
        entra["backup_auth"] = backup;
    }
    json!({"name": name, "kind": "entra", "entra": entra})
}

/// Creates a connection over the admin API; returns its id.
async fn create(server: &TestServer, body: Value) -> String {
    let created = server.admin(Method::POST, "/admin/v1/directories/acme/connections", Some(body)).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    created.body["id"].as_str().unwrap().to_string()
}

async fn shown(server: &TestServer, id: &str) -> Value {
    let got = server.admin(Method::GET, &format!("/admin/v1/connections/{id}"), None).await;
    assert_eq!(got.status, StatusCode::OK, "{}", got.body);
    got.body
}

async fn run(server: &TestServer, id: &str) -> Report {
    let connection = server.store.get_connection(id.to_string()).await.unwrap();
    let key = server.config.secret_key().unwrap();
    let request = RunRequest { full: true, dry_run: false, confirm: false, trigger: "cli" };
    engine::run(&server.store, key.as_ref(), &connection, request, &|_| {}).await.unwrap()
}

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap()
}

/// The authorize link scimd hands out for `id` (`query` adds e.g. `credential`).
async fn authorize_link(server: &TestServer, id: &str, query: &[(&str, &str)]) -> String {
    let request = server
        .http
        .get(server.url(&format!("/admin/v1/connections/{id}/authorize")))
        .query(query)
        .bearer_auth(&server.admin_token)
        .header("accept", "application/json");
    let reply = server.send(request).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.header("cache-control"), Some("no-store"));
    reply.body["authorize_url"].as_str().unwrap().to_string()
}

fn query_of(url: &str) -> BTreeMap<String, String> {
    url::Url::parse(url).unwrap().query_pairs().into_owned().collect()
}

/// Opens the link at the fake Microsoft sign-in, which sends the browser back: the URL it sends
/// it to.
async fn sign_in(server: &TestServer, link: &str) -> String {
    let answer = no_redirects().get(link).send().await.unwrap();
    assert_eq!(answer.status(), StatusCode::FOUND, "{}", answer.text().await.unwrap());
    let back = answer.headers()["location"].to_str().unwrap().to_string();
    assert!(back.starts_with(&format!("{}?", server.url(CALLBACK))), "{back}");
    back
}

/// What a browser (or, with `json`, a script) gets from a URL.
struct Page {
    status: StatusCode,
    content_type: String,
    cache_control: String,
    text: String,
}

async fn browse(url: &str, json: bool) -> Page {
    let accept = if json { "application/json" } else { "text/html,application/xhtml+xml,*/*;q=0.8" };
    let answer = no_redirects().get(url).header("accept", accept).send().await.unwrap();
    let header =
        |name: &str| answer.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    let (status, content_type, cache_control) =
        (answer.status(), header("content-type"), header("cache-control"));
    Page { status, content_type, cache_control, text: answer.text().await.unwrap() }
}

impl Page {
    fn json(&self) -> Value {
        assert_eq!(self.content_type, "application/json", "{}", self.text);
        serde_json::from_str(&self.text).unwrap()
    }
}

/// The whole consent: link, sign-in, callback; asserts it connected.
async fn consent(server: &TestServer, id: &str) {
    let link = authorize_link(server, id, &[]).await;
    let back = sign_in(server, &link).await;
    let page = browse(&back, false).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.text);
    assert!(page.text.contains("Connected"), "{}", page.text);
}

/// The refresh token scimd keeps for the credential at `place`, opened.
fn stored_refresh_token(server: &TestServer, id: &str, place: &str) -> Option<String> {
    let key = server.config.secret_key().unwrap().unwrap();
    let (owner, name) = (id.to_string(), format!("entra.{place}.refresh_token"));
    server
        .store
        .read_now(move |conn, _| scimd::store::secrets::reveal(conn, &key, &owner, &name))
        .unwrap()
        .map(|bytes| String::from_utf8(bytes).unwrap())
}

fn token_requests(fake: &FakeGraph, grant: &str) -> Vec<Recorded> {
    fake.requests()
        .into_iter()
        .filter(|r| r.path().ends_with("/oauth2/v2.0/token") && r.form_field("grant_type") == Some(grant))
        .collect()
}

async fn an_admin_connects_a_delegated_credential_and_the_newest_refresh_token_is_kept(server: TestServer) {
    let (fake, app) = delegated_app(&server, &[]);
    let id = create(&server, body(&fake, "entra-main", app.delegated_auth(), None)).await;
    let before = shown(&server, &id).await;
    let authorize = format!("/admin/v1/connections/{id}/authorize");
    assert_eq!(before["consent"]["state"], "needs_consent", "{before}");
    assert_eq!(before["consent"]["authorize"], authorize.as_str());
    assert!(before["consent"]["reason"].as_str().unwrap().contains(&authorize), "{before}");
    assert_eq!(before["entra"]["auth"]["refresh_token"], json!({"set": false, "rotated_at": null}));

    // Before any consent, runs and checks say where to connect.
    let unconnected = run(&server, &id).await;
    assert_eq!(unconnected.status, "failed", "{unconnected:?}");
    let error = unconnected.error.clone().unwrap_or_default();
    assert!(error.contains("no admin has connected it yet") && error.contains(&authorize), "{error}");
    let checks = server.admin(Method::POST, &format!("/admin/v1/connections/{id}/verify"), None).await;
    assert_eq!(checks.body["ok"], false, "{}", checks.body);
    assert!(checks.body["checks"][0]["remedy"].as_str().unwrap().contains(&authorize), "{}", checks.body);

    // The link: to the connection's own login host and tenant, a code with PKCE and offline access.
    let link = authorize_link(&server, &id, &[]).await;
    assert!(link.starts_with(&format!("{}?", fake.authorize_url())), "{link}");
    let asked = query_of(&link);
    assert_eq!(asked["client_id"], app.client_id);
    assert_eq!(asked["response_type"], "code");
    assert_eq!(asked["response_mode"], "query");
    assert_eq!(asked["redirect_uri"], server.url(CALLBACK));
    assert_eq!(asked["code_challenge_method"], "S256");
    // The fake stands in for Graph, so the permissions are named under its host as in a national
    // cloud; against graph.microsoft.com they are bare names (see graph.rs's unit tests).
    let graph = fake.base_url();
    assert_eq!(asked["scope"], format!("offline_access {graph}/User.Read.All {graph}/GroupMember.Read.All"));
    assert!(asked["state"].len() >= 43 && asked["code_challenge"].len() == 43, "{asked:?}");
    // Without asking for JSON, the admin is sent there.
    let sent =
        no_redirects().get(server.url(&authorize)).bearer_auth(&server.admin_token).send().await.unwrap();
    assert_eq!(sent.status(), StatusCode::FOUND);
    let location = sent.headers()["location"].to_str().unwrap();
    assert!(location.starts_with(&fake.authorize_url()), "{location}");
    assert_ne!(query_of(location)["state"], asked["state"], "each link has its own state");

    let back = sign_in(&server, &link).await;
    let page = browse(&back, false).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.text);
    assert!(page.content_type.starts_with("text/html"), "{}", page.content_type);
    assert_eq!(page.cache_control, "no-store");
    assert!(page.text.contains("Connected") && page.text.contains("entra-main"), "{}", page.text);

    // The code was redeemed with the link's verifier (the fake checks it against the challenge).
    let redeemed = token_requests(&fake, "authorization_code");
    assert_eq!(redeemed.len(), 1);
    let verifier = redeemed[0].form_field("code_verifier").unwrap();
    assert_eq!(scimd::sync::graph::pkce_challenge(verifier), asked["code_challenge"]);
    assert_eq!(redeemed[0].form_field("redirect_uri"), Some(server.url(CALLBACK).as_str()));
    assert_eq!(redeemed[0].status, 200);

    let first = stored_refresh_token(&server, &id, "auth").expect("the refresh token is kept");
    let connected = shown(&server, &id).await;
    assert_eq!(connected["consent"]["state"], "connected", "{connected}");
    assert_eq!(connected["consent"]["reason"], Value::Null);
    assert_eq!(connected["consent"]["credentials"][0]["place"], "auth");
    assert!(connected["consent"]["credentials"][0]["consented_at"].is_string(), "{connected}");
    assert_eq!(connected["entra"]["auth"]["refresh_token"]["set"], true);
    let listed = server.admin(Method::GET, "/admin/v1/directories/acme/connections", None).await;
    for answer in [&connected, &listed.body] {
        assert!(!answer.to_string().contains(&first), "the refresh token is never shown: {answer}");
    }

    // Runs refresh with the newest token and keep the one each refresh returns.
    let report = run(&server, &id).await;
    assert_eq!(report.status, "succeeded", "{report:?}");
    assert_eq!(report.counts.users_created, 2, "{:?}", report.counts);
    assert_eq!(report.counts.groups_created, 1, "{:?}", report.counts);
    let refreshes = token_requests(&fake, "refresh_token");
    assert_eq!(refreshes.len(), 1);
    assert_eq!(refreshes[0].form_field("refresh_token"), Some(first.as_str()));
    assert!(refreshes[0].form_field("scope").unwrap().contains("offline_access"));
    let second = stored_refresh_token(&server, &id, "auth").unwrap();
    assert_ne!(second, first, "each refresh returns a new refresh token, and scimd keeps it");

    let again = run(&server, &id).await;
    assert_eq!(again.status, "succeeded", "{again:?}");
    let refreshes = token_requests(&fake, "refresh_token");
    assert_eq!(refreshes.len(), 2);
    assert_eq!(refreshes[1].form_field("refresh_token"), Some(second.as_str()), "the newest one is used");
    let third = stored_refresh_token(&server, &id, "auth").unwrap();
    assert!(third != second && third != first);
    assert!(!shown(&server, &id).await.to_string().contains(&third));

    // The audit log says who asked for the link and connected.
    let audit = server
        .admin(Method::GET, &format!("/admin/v1/audit?resource=connection&resource_id={id}"), None)
        .await;
    let operations: Vec<&str> =
        audit.body["items"].as_array().unwrap().iter().filter_map(|e| e["operation"].as_str()).collect();
    assert!(operations.contains(&"authorize") && operations.contains(&"consent"), "{operations:?}");
    assert!(!audit.body.to_string().contains(&first));
}

async fn a_revoked_sign_in_fails_the_run_marks_the_connection_and_a_new_consent_mends_it(server: TestServer) {
    let (fake, app) = delegated_app(&server, &[]);
    let id = create(&server, body(&fake, "entra-main", app.delegated_auth(), None)).await;
    consent(&server, &id).await;
    assert_eq!(run(&server, &id).await.status, "succeeded");
    let kept = stored_refresh_token(&server, &id, "auth");

    // An admin revokes the sessions of the user who connected: AADSTS50173.
    fake.revoke_sign_in_sessions();
    let report = run(&server, &id).await;
    assert_eq!(report.status, "failed", "{report:?}");
    let error = report.error.clone().unwrap_or_default();
    assert!(error.contains("AADSTS50173") && error.contains("connect again"), "{error}");
    assert!(error.contains(&format!("/admin/v1/connections/{id}/authorize")), "{error}");
    assert_eq!(report.counts.users_created + report.counts.users_deactivated, 0);
    let marked = shown(&server, &id).await;
    assert_eq!(marked["consent"]["state"], "needs_consent", "{marked}");
    assert!(marked["consent"]["reason"].as_str().unwrap().contains("AADSTS50173"), "{marked}");
    assert_eq!(marked["consent"]["credentials"][0]["state"], "needs_consent");
    assert_eq!(stored_refresh_token(&server, &id, "auth"), kept, "a refused token is not replaced");

    // The next run fails fast with the same remedy, and so does verify.
    let again = run(&server, &id).await;
    assert_eq!(again.status, "failed");
    assert!(again.error.unwrap_or_default().contains("connect again"));
    let checks = server.admin(Method::POST, &format!("/admin/v1/connections/{id}/verify"), None).await;
    assert_eq!(checks.body["ok"], false);
    assert!(checks.body["checks"][0]["remedy"].as_str().unwrap().contains("AADSTS50173"), "{}", checks.body);
    let audit = server
        .admin(Method::GET, &format!("/admin/v1/audit?resource=connection&resource_id={id}"), None)
        .await;
    let lost =
        audit.body["items"].as_array().unwrap().iter().filter(|e| e["operation"] == "consent_lost").count();
    assert_eq!(lost, 1, "recorded once, not on every run: {}", audit.body);

    // An admin signs in again: connected, and runs work.
    consent(&server, &id).await;
    let mended = shown(&server, &id).await;
    assert_eq!(mended["consent"]["state"], "connected", "{mended}");
    assert_eq!(mended["consent"]["reason"], Value::Null);
    assert_ne!(stored_refresh_token(&server, &id, "auth"), kept);
    let report = run(&server, &id).await;
    assert_eq!(report.status, "succeeded", "{report:?}");

    // Consent withdrawn in the tenant (AADSTS65001) marks it too.
    fake.change_app(&app.client_id, |a| a.delegated_scopes = vec![USER_READ_ALL.into()]);
    let report = run(&server, &id).await;
    assert_eq!(report.status, "failed");
    let error = report.error.unwrap_or_default();
    assert!(error.contains("AADSTS65001") && error.contains("Grant admin consent"), "{error}");
    assert_eq!(shown(&server, &id).await["consent"]["state"], "needs_consent");
}

async fn callbacks_with_a_bad_expired_or_used_state_or_a_refusal_change_nothing(server: TestServer) {
    let (fake, app) = delegated_app(&server, &[]);
    let id = create(&server, body(&fake, "entra-main", app.delegated_auth(), None)).await;
    let link = authorize_link(&server, &id, &[]).await;
    let used = sign_in(&server, &link).await;
    assert_eq!(browse(&used, true).await.status, StatusCode::OK);
    let kept = stored_refresh_token(&server, &id, "auth").unwrap();
    let connected = shown(&server, &id).await;
    assert_eq!(connected["consent"]["state"], "connected");

    // The same answer again: its state was good once.
    let replayed = browse(&used, true).await;
    assert_eq!(replayed.status, StatusCode::BAD_REQUEST, "{}", replayed.text);
    let detail = replayed.json()["detail"].as_str().unwrap().to_string();
    assert!(detail.contains("used already") && detail.contains("nothing was changed"), "{detail}");
    let page = browse(&used, false).await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST);
    assert!(
        page.content_type.starts_with("text/html") && page.text.contains("Not connected"),
        "{}",
        page.text
    );

    // A state scimd never gave, or none.
    let code = query_of(&used)["code"].clone();
    let forged = format!("{}?code={code}&state=made-up", server.url(CALLBACK));
    assert_eq!(browse(&forged, true).await.status, StatusCode::BAD_REQUEST);
    let bare = browse(&server.url(CALLBACK), true).await;
    assert_eq!(bare.status, StatusCode::BAD_REQUEST);
    assert!(bare.json()["detail"].as_str().unwrap().contains("without a state"));

    // An answer after the link's ten minutes.
    let link = authorize_link(&server, &id, &[]).await;
    let late = sign_in(&server, &link).await;
    server
        .store
        .write_now(|conn, _| {
            use scimd::store::schema::consent_requests::dsl::*;
            Ok(diesel::update(consent_requests).set(expires_at.eq(0i64)).execute(conn)?)
        })
        .unwrap();
    let expired = browse(&late, true).await;
    assert_eq!(expired.status, StatusCode::BAD_REQUEST, "{}", expired.text);
    assert!(expired.json()["detail"].as_str().unwrap().contains("expired"), "{}", expired.text);

    // A code Entra does not redeem.
    let link = authorize_link(&server, &id, &[]).await;
    let back = sign_in(&server, &link).await;
    let state = query_of(&back)["state"].clone();
    let bad_code = format!("{}?code=1.AXkAforged&state={state}", server.url(CALLBACK));
    let refused = browse(&bad_code, true).await;
    assert_eq!(refused.status, StatusCode::BAD_GATEWAY, "{}", refused.text);
    let detail = refused.json()["detail"].as_str().unwrap().to_string();
    assert!(detail.contains("authorization code") && detail.contains("AADSTS70000"), "{detail}");

    // The admin declines at Microsoft.
    let link = authorize_link(&server, &id, &[]).await;
    let state = query_of(&link)["state"].clone();
    let declined = url::Url::parse_with_params(
        &server.url(CALLBACK),
        &[
            ("error", "access_denied"),
            (
                "error_description",
                "AADSTS65004: User declined to consent to access the app <b>x</b>.\r\nTrace ID: t",
            ),
            ("state", state.as_str()),
        ],
    )
    .unwrap();
    let page = browse(declined.as_str(), false).await;
    assert_eq!(page.status, StatusCode::FORBIDDEN, "{}", page.text);
    assert!(
        page.text.contains("AADSTS65004: User declined") && page.text.contains("entra-main"),
        "{}",
        page.text
    );
    assert!(
        page.text.contains("&lt;b&gt;x&lt;/b&gt;") && !page.text.contains("<b>x"),
        "escaped: {}",
        page.text
    );
    assert!(!page.text.contains("Trace ID"), "{}", page.text);
    assert_eq!(browse(declined.as_str(), true).await.status, StatusCode::BAD_REQUEST, "its state is used up");

    // Consent not granted for the delegated permissions: Microsoft sends an error back.
    fake.change_app(&app.client_id, |a| a.delegated_scopes = vec![USER_READ_ALL.into()]);
    let link = authorize_link(&server, &id, &[]).await;
    let back = sign_in(&server, &link).await;
    let refused = browse(&back, true).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "{}", refused.text);
    let detail = refused.json()["detail"].as_str().unwrap().to_string();
    assert!(detail.contains("consent_required") && detail.contains("Grant admin consent"), "{detail}");

    assert_eq!(stored_refresh_token(&server, &id, "auth"), Some(kept), "the refresh token is as it was");
    assert_eq!(shown(&server, &id).await["consent"], connected["consent"], "and so is the consent");
    assert_eq!(token_requests(&fake, "authorization_code").len(), 2, "only the good code and the forged one");
}

async fn only_admins_get_authorize_links_and_only_for_delegated_entra_credentials(server: TestServer) {
    let (fake, app) = delegated_app(&server, &IMPORTER_PERMISSIONS);
    let secret_only = create(&server, body(&fake, "entra-secret", app.secret_auth(), None)).await;
    let delegated = create(&server, body(&fake, "entra-main", app.delegated_auth(), None)).await;
    let path = |id: &str| format!("/admin/v1/connections/{id}/authorize");

    let anonymous = server.send(server.http.get(server.url(&path(&delegated)))).await;
    anonymous.assert_admin_error(401);
    let with_key = server.send(server.http.get(server.url(&path(&delegated))).bearer_auth(&server.key)).await;
    with_key.assert_admin_error(401);
    let unknown = server.admin(Method::GET, &path("no-such-connection"), None).await;
    unknown.assert_admin_error(404);
    let not_delegated = server.admin(Method::GET, &path(&secret_only), None).await;
    assert!(
        not_delegated.assert_admin_error(400).contains("no delegated credential"),
        "{}",
        not_delegated.body
    );
    let backup =
        server.admin(Method::GET, &format!("{}?credential=backup_auth", path(&delegated)), None).await;
    assert!(backup.assert_admin_error(400).contains("entra.backup_auth"), "{}", backup.body);
    let bogus = server.admin(Method::GET, &format!("{}?credential=primary", path(&delegated)), None).await;
    bogus.assert_admin_error(400);
    let empty = server.admin(Method::GET, &format!("{}?credential=", path(&delegated)), None).await;
    empty.assert_admin_error(400);
    let posted = server.admin(Method::POST, &path(&delegated), None).await;
    posted.assert_admin_error(405);
    let callback_post = server.send(server.http.post(server.url(CALLBACK))).await;
    callback_post.assert_admin_error(405);

    // No link was handed out by any refusal: none of them is pending.
    let pending: i64 = server
        .store
        .read_now(|conn, _| Ok(scimd::store::schema::consent_requests::table.count().get_result(conn)?))
        .unwrap();
    assert_eq!(pending, 0);
    assert_eq!(
        shown(&server, &secret_only).await.get("consent"),
        None,
        "no delegated credential, no consent"
    );
}

async fn a_delegated_credential_and_a_client_secret_back_each_other_up(server: TestServer) {
    let (fake, app) = delegated_app(&server, &IMPORTER_PERMISSIONS);

    // Delegated first, the app's secret as backup: a revoked sign-in falls back, and says so.
    let id = create(&server, body(&fake, "entra-main", app.delegated_auth(), Some(app.secret_auth()))).await;
    consent(&server, &id).await;
    let report = run(&server, &id).await;
    assert_eq!(report.status, "succeeded", "{report:?}");
    assert!(report.warnings.iter().all(|w| !w.contains("backup")), "{report:?}");
    fake.revoke_sign_in_sessions();
    let report = run(&server, &id).await;
    assert_eq!(report.status, "succeeded", "{report:?}");
    let warning =
        report.warnings.iter().find(|w| w.contains("backup")).unwrap_or_else(|| panic!("{report:?}"));
    assert!(warning.contains("AADSTS50173") && warning.contains("connect again"), "{warning}");
    assert_eq!(shown(&server, &id).await["consent"]["state"], "needs_consent");

    // A client secret first that is refused, delegated sign-in as backup.
    let wrong_secret =
        json!({"method": "client_secret", "client_id": app.client_id, "client_secret": "wrong"});
    let second = create(&server, body(&fake, "entra-second", wrong_secret, Some(app.delegated_auth()))).await;
    let link = authorize_link(&server, &second, &[]).await;
    let back = sign_in(&server, &link).await;
    let connected = browse(&back, true).await;
    assert_eq!(connected.status, StatusCode::OK, "{}", connected.text);
    assert_eq!(connected.json()["credential"], "backup_auth", "the only delegated credential");
    let report = run(&server, &second).await;
    assert_eq!(report.status, "succeeded", "{report:?}");
    let warning =
        report.warnings.iter().find(|w| w.contains("backup")).unwrap_or_else(|| panic!("{report:?}"));
    assert!(warning.contains("delegated sign-in"), "{warning}");
    assert!(stored_refresh_token(&server, &second, "backup_auth").is_some());
    assert_eq!(stored_refresh_token(&server, &second, "auth"), None);
}

async fn a_consent_stays_with_its_app_and_goes_when_the_app_changes(server: TestServer) {
    let (fake, app) = delegated_app(&server, &[]);
    let id = create(&server, body(&fake, "entra-main", app.delegated_auth(), None)).await;
    consent(&server, &id).await;
    let kept = stored_refresh_token(&server, &id, "auth");

    // A new client secret for the same app keeps the consent.
    let path = format!("/admin/v1/connections/{id}");
    let mut auth = app.delegated_auth();
    auth["client_secret"] = json!(app.secret());
    let updated = server.admin(Method::PUT, &path, Some(body(&fake, "entra-main", auth, None))).await;
    assert_eq!(updated.status, StatusCode::OK, "{}", updated.body);
    assert_eq!(updated.body["consent"]["state"], "connected", "{}", updated.body);
    assert_eq!(stored_refresh_token(&server, &id, "auth"), kept);
    assert_eq!(run(&server, &id).await.status, "succeeded");

    // Another app needs a consent of its own.
    let other = fake
        .register_app(AppRegistration::new(&[]).with_delegated(&IMPORTER_PERMISSIONS, &server.url(CALLBACK)));
    let updated =
        server.admin(Method::PUT, &path, Some(body(&fake, "entra-main", other.delegated_auth(), None))).await;
    assert_eq!(updated.status, StatusCode::OK, "{}", updated.body);
    assert_eq!(updated.body["consent"]["state"], "needs_consent", "{}", updated.body);
    assert_eq!(updated.body["entra"]["auth"]["refresh_token"]["set"], false);
    assert_eq!(stored_refresh_token(&server, &id, "auth"), None);
    assert_eq!(run(&server, &id).await.status, "failed");
    consent(&server, &id).await;
    assert_eq!(run(&server, &id).await.status, "succeeded");

    // A link asked for before the app changed is refused when it comes back, changing nothing.
    let link = authorize_link(&server, &id, &[]).await;
    let back = sign_in(&server, &link).await;
    let updated =
        server.admin(Method::PUT, &path, Some(body(&fake, "entra-main", app.delegated_auth(), None))).await;
    assert_eq!(updated.status, StatusCode::OK, "{}", updated.body);
    let stale = browse(&back, true).await;
    assert_eq!(stale.status, StatusCode::CONFLICT, "the link was for the other app: {}", stale.text);
    assert!(stale.json()["detail"].as_str().unwrap().contains("changed while the admin signed in"));
    assert_eq!(stored_refresh_token(&server, &id, "auth"), None);
    assert_eq!(shown(&server, &id).await["consent"]["state"], "needs_consent");
}
