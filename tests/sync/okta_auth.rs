//! Okta service apps (`okta-api.md` §1.2): the importer signs a `private_key_jwt` client
//! assertion, takes DPoP-bound tokens when the app demands them, keeps one token for a run,
//! replaces it when Okta refuses it, and names the remedy when the token endpoint says no.

use std::collections::BTreeSet;
use std::sync::OnceLock;

use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der, PublicKeyX509Der};
use aws_lc_rs::rsa::{KeyPair, KeySize};
use aws_lc_rs::signature::KeyPair as _;
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use reqwest::Method;
use serde_json::{json, Value};

use crate::support::fake_okta::{Failure, FakeOkta, Org, Recorded, ServiceApp};
use crate::support::{on_both_backends, TestServer};
use scimd::store::connections::ConnectionRecord;
use scimd::sync::engine::{self, Report, RunRequest};
use scimd::sync::okta::{Caps, OktaClient};
use scimd::sync::okta_auth::{self, Credentials};

on_both_backends!(
    a_service_app_imports_with_one_bearer_token_until_it_expires,
    a_service_app_that_requires_dpop_imports_with_bound_tokens,
    a_refused_access_token_is_replaced_once_per_call,
    a_wrong_key_id_or_key_fails_the_run_with_the_remedy_and_writes_nothing,
    verify_gets_a_token_first_and_names_a_missing_scope,
);

const CLIENT_ID: &str = "0oa1scimdSvcApp00697";
const KEY_ID: &str = "scimd-2026";
const APP_ID: &str = "0oaapp00000000000697";
const USERS: usize = 450;

/// An RSA key pair in PEM: PKCS#8 private key, SPKI public key.
struct Pem {
    private: String,
    public: String,
}

fn pem(label: &str, der: &[u8]) -> String {
    let text = STANDARD.encode(der);
    let lines: Vec<&str> = text.as_bytes().chunks(64).map(|l| std::str::from_utf8(l).unwrap()).collect();
    format!("-----BEGIN {label}-----\n{}\n-----END {label}-----\n", lines.join("\n"))
}

/// The service app's key pair and a stranger's, made once per test process, never written.
fn keys() -> &'static [Pem; 2] {
    static KEYS: OnceLock<[Pem; 2]> = OnceLock::new();
    KEYS.get_or_init(|| {
        let make = || {
            let pair = KeyPair::generate(KeySize::Rsa2048).unwrap();
            let private: Pkcs8V1Der<'static> = pair.as_der().unwrap();
            let public: PublicKeyX509Der<'static> = pair.public_key().as_der().unwrap();
            Pem { private: pem("PRIVATE KEY", private.as_ref()), public: pem("PUBLIC KEY", public.as_ref()) }
        };
        [make(), make()]
    })
}

/// 450 active users (three pages of 200) and a group of three.
fn org() -> Org {
    let mut org = Org::empty();
    for n in 0..USERS {
        org.add_user(Org::user(&format!("00u{n:014}697"), &format!("user{n}@acme.example"), "ACTIVE"));
    }
    org.add_group(Org::group("00gengall000000000697", "eng-all"));
    for n in 0..3 {
        org.add_member("00gengall000000000697", &format!("00u{n:014}697"));
    }
    org.apps.insert(APP_ID.into(), Default::default());
    org
}

fn register(fake: &FakeOkta, scopes: &[&str], require_dpop: bool) {
    fake.register_service_app(ServiceApp {
        client_id: CLIENT_ID.into(),
        public_key_pem: keys()[0].public.clone(),
        key_id: KEY_ID.into(),
        scopes: scopes.iter().map(|s| s.to_string()).collect(),
        require_dpop,
    });
}

const READ_USERS_AND_GROUPS: [&str; 2] = ["okta.users.read", "okta.groups.read"];

fn connect(
    server: &TestServer,
    fake: &FakeOkta,
    name: &str,
    key_id: &str,
    key: &Pem,
    app_id: Option<&str>,
) -> ConnectionRecord {
    let body = json!({
        "name": name, "kind": "okta",
        "okta": {"org_url": fake.base_url(), "allow_insecure_http": true,
                 "auth": {"method": "private_key_jwt", "client_id": CLIENT_ID, "key_id": key_id,
                          "private_key_pem": key.private}},
        "rules": {"app_id": app_id},
        "brake": {"max_deactivate_percent": 50}
    });
    server.connect("acme", body)
}

async fn run(server: &TestServer, connection: &ConnectionRecord) -> Report {
    let key = server.config.secret_key().unwrap();
    let request = RunRequest { full: true, dry_run: false, confirm: false, trigger: "cli" };
    engine::run(&server.store, key.as_ref(), connection, request, &|_| {}).await.unwrap()
}

fn token_requests(fake: &FakeOkta) -> usize {
    fake.requests().iter().filter(|r| r.path_and_query == "/oauth2/v1/token").count()
}

/// The Management API calls, in order.
fn api_calls(fake: &FakeOkta) -> Vec<Recorded> {
    fake.requests().into_iter().filter(|r| r.path_and_query.starts_with("/api/v1/")).collect()
}

fn authorizations(calls: &[Recorded]) -> BTreeSet<String> {
    calls.iter().map(|c| c.authorization.clone().unwrap_or_default()).collect()
}

async fn total_users(server: &TestServer) -> Value {
    server.get("/scim/v2/Users?count=1").await.body["totalResults"].clone()
}

async fn a_service_app_imports_with_one_bearer_token_until_it_expires(server: TestServer) {
    let fake = FakeOkta::start(org());
    register(&fake, &READ_USERS_AND_GROUPS, false);
    let connection = connect(&server, &fake, "okta-app", KEY_ID, &keys()[0], None);
    let report = run(&server, &connection).await;
    assert_eq!(report.status, "succeeded", "{report:?}");
    assert_eq!(report.counts.users_created, USERS as u64);
    assert_eq!(report.counts.members_added, 3, "{:?}", report.counts);
    assert_eq!(total_users(&server).await, USERS);
    assert_eq!(token_requests(&fake), 1, "one token for all the run's pages");
    let calls = api_calls(&fake);
    let user_pages = calls
        .iter()
        .filter(|c| c.path_and_query.starts_with("/api/v1/users?") && !c.path_and_query.contains("filter="))
        .count();
    assert_eq!(user_pages, 3, "{calls:?}");
    let used = authorizations(&calls);
    assert_eq!(used.len(), 1, "{used:?}");
    assert!(used.iter().all(|a| a.starts_with("Bearer ")), "{used:?}");

    // The next run (a server's next scheduled run) uses the same token while it is good.
    let next = run(&server, &connection).await;
    assert_eq!(next.status, "succeeded", "{next:?}");
    assert_eq!(token_requests(&fake), 1, "the token endpoint is rate-limited too");

    // An hour later Okta refuses it: the run gets a new one and goes on.
    fake.expire_access_tokens();
    let again = run(&server, &connection).await;
    assert_eq!(again.status, "succeeded", "{again:?}");
    assert_eq!(token_requests(&fake), 2);
}

async fn a_service_app_that_requires_dpop_imports_with_bound_tokens(server: TestServer) {
    let fake = FakeOkta::start(org());
    register(&fake, &READ_USERS_AND_GROUPS, true);
    let connection = connect(&server, &fake, "okta-dpop", KEY_ID, &keys()[0], None);
    let report = run(&server, &connection).await;
    assert_eq!(report.status, "succeeded", "{report:?}");
    assert_eq!(report.counts.users_created, USERS as u64);
    assert_eq!(total_users(&server).await, USERS);
    // Refused without a proof, asked for the nonce, then granted; the fake checked each call's
    // proof (key, htm, htu, iat, jti, ath).
    assert_eq!(token_requests(&fake), 3);
    let used = authorizations(&api_calls(&fake));
    assert_eq!(used.len(), 1, "{used:?}");
    assert!(used.iter().all(|a| a.starts_with("DPoP ")), "{used:?}");
}

async fn a_refused_access_token_is_replaced_once_per_call(server: TestServer) {
    let fake = FakeOkta::start(org());
    register(&fake, &READ_USERS_AND_GROUPS, false);
    let connection = connect(&server, &fake, "okta-app", KEY_ID, &keys()[0], None);

    // Refused twice in a row: one new token, then the run fails and applies nothing.
    fake.fail_next("/api/v1/groups", 2, Failure::InvalidToken);
    let failed = run(&server, &connection).await;
    assert_eq!(failed.status, "failed", "{failed:?}");
    let error = failed.error.unwrap();
    assert!(error.contains("new access token of service app") && error.contains(CLIENT_ID), "{error}");
    assert!(!error.contains("API token"), "not the SSWS remedy: {error}");
    assert_eq!(token_requests(&fake), 2);
    assert_eq!(total_users(&server).await, 0, "users read before the failure were not applied");

    // Refused once: the call is repeated with a new token and the run goes on.
    fake.fail_next("/api/v1/groups", 1, Failure::InvalidToken);
    let before = fake.requests().len();
    let report = run(&server, &connection).await;
    assert_eq!(report.status, "succeeded", "{report:?}");
    assert_eq!(total_users(&server).await, USERS);
    // The run began with the good token the failed run got last, then replaced the refused one.
    assert_eq!(token_requests(&fake), 3);
    let mut calls = fake.requests().split_off(before);
    calls.retain(|r| r.path_and_query.starts_with("/api/v1/"));
    assert_eq!(authorizations(&calls).len(), 2, "the refused token, then its replacement");
    let groups: Vec<&Recorded> =
        calls.iter().filter(|c| c.path_and_query.starts_with("/api/v1/groups?")).collect();
    assert_eq!(groups.len(), 2, "{groups:?}");
    assert_ne!(groups[0].authorization, groups[1].authorization);
}

async fn a_wrong_key_id_or_key_fails_the_run_with_the_remedy_and_writes_nothing(server: TestServer) {
    let fake = FakeOkta::start(org());
    register(&fake, &READ_USERS_AND_GROUPS, true);
    let [ours, stranger] = keys();
    let cases = [
        ("wrong-kid", "scimd-2025", ours, "The client_assertion JWT kid is invalid."),
        ("wrong-key", KEY_ID, stranger, "The client_assertion signature is invalid."),
    ];
    for (name, key_id, key, okta_said) in cases {
        let connection = connect(&server, &fake, name, key_id, key, None);
        let before = token_requests(&fake);
        let report = run(&server, &connection).await;
        assert_eq!(report.status, "failed", "{name}: {report:?}");
        let error = report.error.unwrap();
        assert!(error.contains("the key or key id does not match the service app's public key"), "{error}");
        assert!(error.contains(okta_said) && error.contains(&format!("'{key_id}'")), "{error}");
        assert_eq!(token_requests(&fake), before + 1, "{name}: no retry loop");
    }
    assert!(api_calls(&fake).is_empty(), "nothing read without a token");
    assert_eq!(total_users(&server).await, 0);
    assert_eq!(server.get("/scim/v2/Groups").await.body["totalResults"], 0);
}

async fn verify(server: &TestServer, connection: &ConnectionRecord) -> Value {
    let reply =
        server.admin(Method::POST, &format!("/admin/v1/connections/{}/verify", connection.id), None).await;
    assert_eq!(reply.status, reqwest::StatusCode::OK, "{}", reply.body);
    reply.body
}

async fn verify_gets_a_token_first_and_names_a_missing_scope(server: TestServer) {
    let fake = FakeOkta::start(org());
    register(&fake, &["okta.users.read"], true);
    let connection = connect(&server, &fake, "okta-app", KEY_ID, &keys()[0], None);
    let report = verify(&server, &connection).await;
    assert_eq!(report["ok"], false, "{report}");
    let checks = report["checks"].as_array().unwrap();
    assert_eq!(checks.len(), 1, "nothing else can be tried without a token: {report}");
    assert!(checks[0]["check"].as_str().unwrap().contains("access token"), "{report}");
    let remedy = checks[0]["remedy"].as_str().unwrap();
    assert!(remedy.contains("[okta.groups.read]") && remedy.contains("Okta API Scopes tab"), "{remedy}");

    // app_id needs okta.apps.read too.
    register(&fake, &READ_USERS_AND_GROUPS, true);
    let with_app = connect(&server, &fake, "okta-with-app", KEY_ID, &keys()[0], Some(APP_ID));
    let report = verify(&server, &with_app).await;
    assert_eq!(report["ok"], false, "{report}");
    assert!(report["checks"][0]["remedy"].as_str().unwrap().contains("[okta.apps.read]"), "{report}");

    register(&fake, &["okta.users.read", "okta.groups.read", "okta.apps.read"], true);
    let report = verify(&server, &with_app).await;
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(report["checks"].as_array().unwrap().len(), 4, "the token, users, groups, the app: {report}");
}

/// Straight through the client, to expire the token between two pages of one listing.
#[tokio::test]
async fn a_token_that_expires_between_pages_is_replaced_and_the_dpop_nonce_reused() {
    for require_dpop in [false, true] {
        let fake = FakeOkta::start(org());
        register(&fake, &READ_USERS_AND_GROUPS, require_dpop);
        let credentials = Credentials::ServiceApp(okta_auth::ServiceApp {
            client_id: CLIENT_ID.into(),
            key_id: KEY_ID.into(),
            private_key_pem: keys()[0].private.clone(),
            read_apps: false,
        });
        let client =
            OktaClient::with_credentials(&fake.base_url(), credentials, 1.0, Caps::default()).unwrap();
        let mut pager = client.pager("/api/v1/users?limit=200");
        let mut read = pager.next_page().await.unwrap().unwrap().len();
        let minted = token_requests(&fake);
        assert_eq!(minted, if require_dpop { 3 } else { 1 });

        fake.expire_access_tokens();
        while let Some(page) = pager.next_page().await.unwrap() {
            read += page.len();
        }
        assert_eq!(read, USERS);
        assert_eq!(token_requests(&fake), minted + 1, "dpop {require_dpop}: one new token, no nonce dance");
        let calls = api_calls(&fake);
        assert_eq!(calls.len(), 4, "three pages and the one refused: {calls:?}");
        assert_eq!(calls[1].path_and_query, calls[2].path_and_query, "the refused page was asked again");
        assert_eq!(authorizations(&calls).len(), 2);
    }
}
