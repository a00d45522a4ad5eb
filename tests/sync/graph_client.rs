//! The Entra importer's Graph client over real HTTP against the fake tenant: tokens by secret
//! and certificate, caching, the backup credential, paging, throttling and retries, delta
//! rounds, and a remedy for every refusal.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde_json::{json, Value};

use crate::support::fake_graph::{
    AppRegistration, ClientSecret, ExpiredDelta, Failure, FakeGraph, Recorded, Tenant, APP_CERTIFICATE,
    GROUP_MEMBER_READ_ALL, IMPORTER_PERMISSIONS, JWT_BEARER, OTHER_CERTIFICATE, USER_READ_ALL,
};
use scimd::error::Error;
use scimd::sync::connection::EntraSource;
use scimd::sync::graph::{self, GraphClient, GraphCredentials, Limits};
use scimd::sync::source::SourceStatus;

/// A client for `block` (an `entra` connection block) with these opened secrets.
fn open(block: Value, primary: &str, backup: Option<&str>, limits: Limits) -> GraphClient {
    let source: EntraSource = serde_json::from_value(block).unwrap();
    let credentials = GraphCredentials { primary: primary.into(), backup: backup.map(str::to_string) };
    GraphClient::new(&source, credentials, limits).unwrap()
}

/// A client of `app` by its secret against `fake`.
fn secret_client(fake: &FakeGraph, app: &AppRegistration) -> GraphClient {
    open(fake.entra_source(app.secret_auth()), &app.secret(), None, Limits::default())
}

fn token_requests(fake: &FakeGraph) -> Vec<Recorded> {
    fake.requests().into_iter().filter(|r| r.path().ends_with("/oauth2/v2.0/token")).collect()
}

fn graph_requests(fake: &FakeGraph, path: &str) -> Vec<Recorded> {
    fake.requests().into_iter().filter(|r| r.path() == path).collect()
}

/// Every object of a listing.
async fn read_all(client: &GraphClient, path: &str) -> Result<Vec<Value>, Error> {
    let mut items = Vec::new();
    client
        .for_each_page(path, |page| {
            items.extend_from_slice(page);
            Ok(())
        })
        .await?;
    Ok(items)
}

async fn read_delta(client: &GraphClient, url: &str) -> Result<(Vec<Value>, String), Error> {
    let mut items = Vec::new();
    let link = client
        .read_delta(url, |page| {
            items.extend_from_slice(page);
            Ok(())
        })
        .await?;
    Ok((items, link))
}

fn ids(items: &[Value]) -> BTreeSet<String> {
    items.iter().map(|item| item["id"].as_str().unwrap().to_string()).collect()
}

fn err(result: Result<Vec<Value>, Error>) -> String {
    result.unwrap_err().to_string()
}

/// A stand-in for both hosts on loopback: every POST gets an access token, every GET one user
/// and the nextLink that `next` makes from its base URL.
fn stub_graph(next: impl Fn(&str) -> String + Send + 'static) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let link = next(&base);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut seen = Vec::new();
            let mut buffer = [0u8; 4096];
            while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut buffer) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => seen.extend_from_slice(&buffer[..n]),
                }
            }
            let body = if seen.starts_with(b"POST") {
                json!({"token_type": "Bearer", "expires_in": 3599, "access_token": "stub.token.x"})
            } else {
                json!({"value": [{"id": "u1"}], "@odata.nextLink": link})
            }
            .to_string();
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    base
}

// ---------------------------------------------------------------------------------------------
// Tokens
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_client_secret_token_is_cached_and_renewed_once_after_a_401() {
    let fake = FakeGraph::start(Tenant::generate(20, 3, 1));
    let app = fake.register_app(AppRegistration::new(&IMPORTER_PERMISSIONS));
    let client = secret_client(&fake, &app);
    for _ in 0..3 {
        assert_eq!(read_all(&client, "/users?$select=id&$top=999").await.unwrap().len(), 20);
    }
    let tokens = token_requests(&fake);
    assert_eq!(tokens.len(), 1, "one token for three listings");
    let form = &tokens[0];
    assert_eq!(form.path(), format!("/{}/oauth2/v2.0/token", fake.tenant_id()));
    assert_eq!(form.form_field("grant_type"), Some("client_credentials"));
    assert_eq!(form.form_field("client_id"), Some(app.client_id.as_str()));
    assert_eq!(form.form_field("client_secret"), Some(app.secret().as_str()));
    assert_eq!(form.form_field("scope"), Some(format!("{}/.default", fake.base_url()).as_str()));
    assert_eq!(form.form_field("client_assertion"), None);
    let bearer = graph_requests(&fake, "/v1.0/users")[0].authorization.clone().unwrap();
    assert!(bearer.starts_with("Bearer ey"), "{bearer}");
    assert!(
        fake.requests().iter().all(|r| r.consistency_level.is_none()),
        "plain listings need no ConsistencyLevel"
    );
    assert!(graph_requests(&fake, "/v1.0/users").iter().all(|r| r.client_request_id.is_some()));

    // An expired token is answered 401: one new token, and the listing goes on.
    fake.expire_access_tokens();
    fake.clear_requests();
    assert_eq!(read_all(&client, "/users?$select=id&$top=999").await.unwrap().len(), 20);
    let statuses: Vec<u16> = fake.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [401, 200, 200], "refused, new token, retried");
    assert_eq!(token_requests(&fake).len(), 1);

    // Refused again with the new token: the call fails, naming what to check.
    fake.clear_requests();
    fake.fail_next("/v1.0/users", 2, Failure::TokenExpired);
    let refused = err(read_all(&client, "/users?$select=id&$top=999").await);
    assert!(refused.contains("same cloud"), "{refused}");
    assert_eq!(token_requests(&fake).len(), 1, "one new token per call, not a loop");
}

/// What a delegated client handed its keeper: `("keep" | "lost", place, token or remedy)`.
#[derive(Default)]
struct Keeper(std::sync::Mutex<Vec<(&'static str, &'static str, String)>>);

impl graph::TokenKeeper for Keeper {
    fn keep(
        &self,
        place: &'static str,
        token: String,
    ) -> futures_util::future::BoxFuture<'static, Result<(), Error>> {
        self.0.lock().unwrap().push(("keep", place, token));
        Box::pin(async { Ok(()) })
    }

    fn lost(
        &self,
        place: &'static str,
        remedy: String,
    ) -> futures_util::future::BoxFuture<'static, Result<(), Error>> {
        self.0.lock().unwrap().push(("lost", place, remedy));
        Box::pin(async { Ok(()) })
    }
}

#[tokio::test]
async fn a_delegated_client_refreshes_with_the_newest_token_and_hands_each_new_one_over() {
    const REDIRECT: &str = "https://scimd.example/admin/v1/entra/callback";
    let fake = FakeGraph::start(Tenant::generate(20, 3, 1));
    let app = fake.register_app(AppRegistration::new(&[]).with_delegated(&IMPORTER_PERMISSIONS, REDIRECT));
    let block = fake.entra_source(app.delegated_auth());
    let source: EntraSource = serde_json::from_value(block.clone()).unwrap();

    // A consent: the link scimd builds, the fake's redirect with a code, the code redeemed.
    let verifier = "a-verifier-long-enough-for-rfc-7636-0123456789abcdefghij";
    let link =
        graph::authorize_url(&source, &app.client_id, REDIRECT, "st", &graph::pkce_challenge(verifier));
    let no_redirects =
        reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let answer = no_redirects.get(&link).send().await.unwrap();
    let back = answer.headers()["location"].to_str().unwrap().to_string();
    let code =
        url::Url::parse(&back).unwrap().query_pairs().find(|(n, _)| n == "code").unwrap().1.into_owned();
    let grant = graph::CodeGrant { code: &code, redirect_uri: REDIRECT, code_verifier: "a-wrong-verifier" };
    let mismatch = graph::redeem_code(&source, "auth", &app.secret(), grant).await.unwrap_err().to_string();
    assert!(mismatch.contains("authorization code") && mismatch.contains("AADSTS501481"), "{mismatch}");
    let link =
        graph::authorize_url(&source, &app.client_id, REDIRECT, "st", &graph::pkce_challenge(verifier));
    let back =
        no_redirects.get(&link).send().await.unwrap().headers()["location"].to_str().unwrap().to_string();
    let code =
        url::Url::parse(&back).unwrap().query_pairs().find(|(n, _)| n == "code").unwrap().1.into_owned();
    let grant = graph::CodeGrant { code: &code, redirect_uri: REDIRECT, code_verifier: verifier };
    let first = graph::redeem_code(&source, "auth", &app.secret(), grant).await.unwrap();

    let keeper = std::sync::Arc::new(Keeper::default());
    let client =
        open(block.clone(), &app.secret(), None, Limits::default()).with_delegation(graph::Delegation {
            primary: Some(first.clone()),
            backup: None,
            keeper: Some(keeper.clone()),
            reconnect: ": sign in again".into(),
        });
    fake.clear_requests();
    assert_eq!(read_all(&client, "/users?$select=id&$top=999").await.unwrap().len(), 20);
    assert_eq!(read_all(&client, "/groups?$select=id&$top=999").await.unwrap().len(), 3);
    let refreshes = token_requests(&fake);
    assert_eq!(refreshes.len(), 1, "the access token is cached");
    assert_eq!(refreshes[0].form_field("grant_type"), Some("refresh_token"));
    assert_eq!(refreshes[0].form_field("refresh_token"), Some(first.as_str()));
    assert_eq!(refreshes[0].form_field("client_secret"), Some(app.secret().as_str()));
    let second = {
        let kept = keeper.0.lock().unwrap();
        assert_eq!(kept.len(), 1);
        assert_eq!((kept[0].0, kept[0].1), ("keep", "auth"));
        assert_ne!(kept[0].2, first);
        kept[0].2.clone()
    };

    // An expired access token: the next refresh uses the newest refresh token.
    fake.expire_access_tokens();
    assert_eq!(read_all(&client, "/users?$select=id&$top=999").await.unwrap().len(), 20);
    let refreshes = token_requests(&fake);
    assert_eq!(refreshes.len(), 2);
    assert_eq!(refreshes[1].form_field("refresh_token"), Some(second.as_str()));
    assert_eq!(keeper.0.lock().unwrap().len(), 2);

    // Sessions revoked: the call fails with the remedy, and the keeper hears of it once.
    fake.revoke_sign_in_sessions();
    fake.expire_access_tokens();
    let revoked = err(read_all(&client, "/users?$select=id&$top=999").await);
    assert!(revoked.contains("AADSTS50173") && revoked.contains("connect again: sign in again"), "{revoked}");
    let kept = keeper.0.lock().unwrap().clone();
    assert_eq!(kept.len(), 3);
    assert_eq!((kept[2].0, kept[2].1, kept[2].2.as_str()), ("lost", "auth", revoked.as_str()));

    // Never connected: no request at all, and the remedy says how to connect.
    fake.clear_requests();
    let unconnected = open(block, &app.secret(), None, Limits::default())
        .with_delegation(graph::Delegation { reconnect: ": sign in".into(), ..Default::default() });
    let never = err(read_all(&unconnected, "/users?$select=id&$top=999").await);
    assert!(never.contains("no admin has connected it yet") && never.contains("sign in"), "{never}");
    assert!(fake.requests().is_empty());
}

#[tokio::test]
async fn a_certificate_assertion_is_signed_for_the_token_url_with_a_fresh_jti() {
    let fake = FakeGraph::start(Tenant::generate(10, 2, 2));
    let app =
        fake.register_app(AppRegistration::new(&IMPORTER_PERMISSIONS).with_certificate(APP_CERTIFICATE));
    let client = open(
        fake.entra_source(app.certificate_auth(APP_CERTIFICATE)),
        APP_CERTIFICATE.private_key_pem,
        None,
        Limits::default(),
    );
    assert_eq!(read_all(&client, "/users?$select=id&$top=999").await.unwrap().len(), 10);
    fake.expire_access_tokens();
    assert_eq!(read_all(&client, "/users?$select=id&$top=999").await.unwrap().len(), 10);
    let tokens = token_requests(&fake);
    assert_eq!(tokens.len(), 2);
    assert!(tokens.iter().all(|t| t.status == 200), "the fake refuses a replayed jti");
    let mut jtis = BTreeSet::new();
    for token in &tokens {
        assert_eq!(token.form_field("client_assertion_type"), Some(JWT_BEARER));
        assert_eq!(token.form_field("client_secret"), None);
        let assertion = token.form_field("client_assertion").unwrap();
        let parts: Vec<&str> = assertion.split('.').collect();
        let decode =
            |part: &str| -> Value { serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap() };
        let header = decode(parts[0]);
        assert_eq!(header["alg"], "RS256");
        assert_eq!(header["x5t#S256"], APP_CERTIFICATE.x5t_s256());
        let claims = decode(parts[1]);
        assert_eq!(claims["aud"], fake.token_url());
        assert_eq!(claims["iss"], app.client_id.as_str());
        assert_eq!(claims["sub"], app.client_id.as_str());
        let lifetime = claims["exp"].as_i64().unwrap() - claims["nbf"].as_i64().unwrap();
        assert!((300..=600).contains(&lifetime), "{lifetime}");
        jtis.insert(claims["jti"].as_str().unwrap().to_string());
    }
    assert_eq!(jtis.len(), 2, "a fresh jti each time");

    // A certificate the app does not know: Entra's AADSTS700027, with the remedy.
    let stranger = open(
        fake.entra_source(app.certificate_auth(OTHER_CERTIFICATE)),
        OTHER_CERTIFICATE.private_key_pem,
        None,
        Limits::default(),
    );
    let refused = err(read_all(&stranger, "/users?$select=id").await);
    assert!(refused.contains("AADSTS700027") && refused.contains("Certificates & secrets"), "{refused}");
}

#[tokio::test]
async fn the_backup_credential_takes_over_when_the_primary_is_refused() {
    let fake = FakeGraph::start(Tenant::generate(10, 2, 3));
    let mut expired = ClientSecret::generate();
    expired.expired = true;
    let mut registration = AppRegistration::new(&IMPORTER_PERMISSIONS).with_certificate(APP_CERTIFICATE);
    registration.secrets.push(expired.clone());
    let app = fake.register_app(registration);
    let with_backup = |primary: &str, backup: Value, backup_secret: &str| {
        let mut block = fake.entra_source(app.secret_auth());
        block["backup_auth"] = backup;
        open(block, primary, Some(backup_secret), Limits::default())
    };

    // An expired secret, a certificate behind it.
    let client =
        with_backup(&expired.value, app.certificate_auth(APP_CERTIFICATE), APP_CERTIFICATE.private_key_pem);
    assert_eq!(client.fallback_used(), None);
    assert_eq!(read_all(&client, "/users?$select=id").await.unwrap().len(), 10);
    let warning = client.fallback_used().unwrap();
    assert!(
        warning.contains("entra.backup_auth")
            && warning.contains("AADSTS7000222")
            && warning.contains("expired"),
        "{warning}"
    );
    let tokens = token_requests(&fake);
    assert_eq!(tokens.len(), 2, "the refused secret, then the certificate");
    assert!(tokens[1].form_field("client_assertion").is_some());
    // The backup stays in use: a renewal does not try the refused secret again.
    fake.expire_access_tokens();
    read_all(&client, "/users?$select=id").await.unwrap();
    let tokens = token_requests(&fake);
    assert_eq!(tokens.len(), 3);
    assert!(tokens[2].form_field("client_assertion").is_some());

    // The secret's id pasted instead of its value, another secret behind it.
    fake.clear_requests();
    let client = with_backup(&app.secrets[0].id, app.secret_auth(), &app.secret());
    read_all(&client, "/users?$select=id").await.unwrap();
    assert!(client.fallback_used().unwrap().contains("AADSTS7000215"));

    // No fallback while the primary works.
    let client =
        with_backup(&app.secret(), app.certificate_auth(APP_CERTIFICATE), APP_CERTIFICATE.private_key_pem);
    read_all(&client, "/users?$select=id").await.unwrap();
    assert_eq!(client.fallback_used(), None);

    // Both refused: both remedies.
    let client = with_backup(
        &expired.value,
        app.certificate_auth(OTHER_CERTIFICATE),
        OTHER_CERTIFICATE.private_key_pem,
    );
    let refused = err(read_all(&client, "/users?$select=id").await);
    assert!(
        refused.contains("both credentials") && refused.contains("7000222") && refused.contains("700027"),
        "{refused}"
    );
    assert_eq!(client.fallback_used(), None);

    // A wrong tenant is no credential problem: the backup would fare no better.
    fake.clear_requests();
    let mut block = fake.entra_source(app.secret_auth());
    block["tenant"] = json!("nowhere.example");
    block["backup_auth"] = app.certificate_auth(APP_CERTIFICATE);
    let client = open(block, &app.secret(), Some(APP_CERTIFICATE.private_key_pem), Limits::default());
    let refused = err(read_all(&client, "/users?$select=id").await);
    assert!(refused.contains("AADSTS90002") && refused.contains("Directory (tenant) ID"), "{refused}");
    assert_eq!(token_requests(&fake).len(), 1, "no backup attempt");
    assert_eq!(client.fallback_used(), None);

    // No backup: the primary's remedy.
    let alone = open(fake.entra_source(app.secret_auth()), &expired.value, None, Limits::default());
    let refused = err(read_all(&alone, "/users?$select=id").await);
    assert!(refused.contains("has expired") && refused.contains("Certificates & secrets"), "{refused}");
}

// ---------------------------------------------------------------------------------------------
// Paging
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn paging_reads_a_generated_tenant_through_every_next_link() {
    let fake = FakeGraph::start(Tenant::generate(2100, 12, 7));
    let app = fake.register_app(AppRegistration::new(&IMPORTER_PERMISSIONS));
    let client = secret_client(&fake, &app);
    let (expected_users, managers, badge) = fake.read(|t| {
        let badge = t.extension_properties.iter().find(|e| e.ends_with("_badgeNumber")).unwrap().clone();
        let managers: BTreeMap<String, Option<String>> =
            t.users.values().map(|u| (u.id.clone(), u.manager_id.clone())).collect();
        let badges: BTreeMap<String, Option<String>> = t
            .users
            .values()
            .map(|u| {
                (
                    u.id.clone(),
                    u.extensions
                        .get(&badge)
                        .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_string)),
                )
            })
            .collect();
        (t.users.keys().cloned().collect::<BTreeSet<_>>(), managers, (badge, badges))
    });

    // The largest page: three pages for 2,100 users.
    let users = read_all(&client, "/users?$select=id&$top=999").await.unwrap();
    assert_eq!(users.len(), 2100);
    assert_eq!(ids(&users), expected_users, "every user once");
    let pages = graph_requests(&fake, "/v1.0/users");
    assert_eq!(pages.len(), 3);
    assert!(pages.iter().all(|p| p.query("$top").as_deref() == Some("999")), "nextLinks kept $top");
    assert!(pages[1..].iter().all(|p| p.query("$skiptoken").is_some()));

    // The importer's own listing: every property the mapping needs, the manager expanded (at
    // most 100 a page), the username from a directory extension.
    let (badge_name, badges) = badge;
    fake.clear_requests();
    let source = format!("attribute:{badge_name}");
    let users = read_all(&client, &graph::users_path(&source)).await.unwrap();
    assert_eq!(users.len(), 2100);
    assert_eq!(graph_requests(&fake, "/v1.0/users").len(), 21, "$expand caps pages at 100");
    let mut disabled = 0;
    for user in &users {
        let mapped = graph::map_user(user, &source).unwrap();
        assert_eq!(mapped.manager_source_id, managers[&mapped.source_id], "{user}");
        assert_eq!(mapped.user_name, badges[&mapped.source_id], "{user}");
        assert!(!mapped.created.is_empty() && !mapped.primary_email.is_empty(), "{user}");
        assert!(mapped.resource.contains_key("displayName"), "{user}");
        disabled += usize::from(mapped.status == SourceStatus::Inactive);
    }
    assert!(disabled > 0, "the generated tenant has disabled accounts");
    assert!(badges.values().any(Option::is_some));

    // Groups, and the users each reaches through nested groups.
    let groups = read_all(&client, &graph::groups_path()).await.unwrap();
    assert_eq!(groups.len(), 12);
    for group in &groups {
        let id = group["id"].as_str().unwrap();
        let members = read_all(&client, &graph::group_users_path(id)).await.unwrap();
        assert_eq!(ids(&members), fake.read(|t| t.transitive_user_ids(id)), "{group}");
    }
}

#[tokio::test]
async fn advanced_queries_send_consistency_level_on_every_page() {
    let fake = FakeGraph::start(Tenant::generate(12, 1, 4));
    let app = fake.register_app(AppRegistration::new(&IMPORTER_PERMISSIONS));
    let client = secret_client(&fake, &app);
    let users = read_all(&client, "/users?$select=id&$top=5&$count=true").await.unwrap();
    assert_eq!(users.len(), 12);
    let pages = graph_requests(&fake, "/v1.0/users");
    assert_eq!(pages.len(), 3);
    assert!(pages.iter().all(|p| p.consistency_level.as_deref() == Some("eventual")), "{pages:?}");
}

#[tokio::test]
async fn a_repeated_or_foreign_next_link_and_the_page_cap_stop_the_listing() {
    let fake = FakeGraph::start(Tenant::generate(30, 1, 5));
    let app = fake.register_app(AppRegistration::new(&IMPORTER_PERMISSIONS));
    let on_stub = |graph_url: &str| {
        let mut block = fake.entra_source(app.secret_auth());
        block["graph_url"] = json!(graph_url);
        block["login_url"] = json!(graph_url);
        open(block, &app.secret(), None, Limits::default())
    };
    let looping = on_stub(&stub_graph(|base| format!("{base}/v1.0/users?$skiptoken=same")));
    let mut pages = 0;
    let refused = looping
        .for_each_page("/users?$select=id", |_| {
            pages += 1;
            Ok(())
        })
        .await
        .unwrap_err()
        .to_string();
    assert!(refused.contains("same next link twice"), "{refused}");
    assert_eq!(pages, 2, "the first page and the one the link named, then the repeat is refused");

    let leaking = on_stub(&stub_graph(|_| "http://127.0.0.1:9/v1.0/users?$skiptoken=x".to_string()));
    let refused = err(read_all(&leaking, "/users?$select=id").await);
    assert!(refused.contains("outside entra.graph_url"), "{refused}");

    let capped = open(
        fake.entra_source(app.secret_auth()),
        &app.secret(),
        None,
        Limits { max_pages: 2, ..Limits::default() },
    );
    let refused = err(read_all(&capped, "/users?$select=id&$top=10").await);
    assert!(refused.contains("caps (2 pages"), "{refused}");
    let capped = open(
        fake.entra_source(app.secret_auth()),
        &app.secret(),
        None,
        Limits { max_records: 15, ..Limits::default() },
    );
    assert!(err(read_all(&capped, "/users?$select=id&$top=10").await).contains("15 records"));
}

// ---------------------------------------------------------------------------------------------
// Throttling and retries
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn retry_after_is_honoured_on_429_503_and_504() {
    let fake = FakeGraph::start(Tenant::generate(5, 1, 6));
    let app = fake.register_app(AppRegistration::new(&IMPORTER_PERMISSIONS));
    let client = secret_client(&fake, &app);
    for failure in [
        Failure::Throttled { retry_after_secs: Some(1) },
        Failure::Unavailable { retry_after_secs: Some(1) },
        Failure::GatewayTimeout { retry_after_secs: Some(1) },
    ] {
        fake.clear_requests();
        fake.fail_next("/v1.0/users", 1, failure);
        assert_eq!(read_all(&client, "/users?$select=id").await.unwrap().len(), 5, "{failure:?}");
        let tries = graph_requests(&fake, "/v1.0/users");
        assert_eq!(tries.len(), 2, "{failure:?}");
        assert!(matches!(tries[0].status, 429 | 503 | 504) && tries[1].status == 200);
        let gap = tries[1].received.duration_since(tries[0].received);
        assert!(gap >= Duration::from_secs(1), "{failure:?}: retried after {gap:?}");
    }
}

#[tokio::test]
async fn transient_failures_are_retried_then_fail_with_a_remedy() {
    let fake = FakeGraph::start(Tenant::generate(5, 1, 7));
    let app = fake.register_app(AppRegistration::new(&IMPORTER_PERMISSIONS));
    let client = open(
        fake.entra_source(app.secret_auth()),
        &app.secret(),
        None,
        Limits { max_retries: 2, ..Limits::default() },
    );
    fake.fail_next("/v1.0/users", 2, Failure::Unavailable { retry_after_secs: None });
    assert_eq!(read_all(&client, "/users?$select=id").await.unwrap().len(), 5);
    assert_eq!(graph_requests(&fake, "/v1.0/users").len(), 3, "two backoffs, then the page");

    fake.clear_requests();
    fake.fail_next("/v1.0/users", 3, Failure::GatewayTimeout { retry_after_secs: None });
    let refused = err(read_all(&client, "/users?$select=id").await);
    assert!(refused.contains("unavailable") && refused.contains("after 2 retries"), "{refused}");
    assert_eq!(graph_requests(&fake, "/v1.0/users").len(), 3);

    fake.clear_requests();
    fake.fail_next("/v1.0/users", 3, Failure::Throttled { retry_after_secs: Some(0) });
    let refused = err(read_all(&client, "/users?$select=id").await);
    assert!(refused.contains("kept throttling"), "{refused}");
}

#[tokio::test]
async fn requests_stay_within_the_in_flight_limit_and_the_resource_unit_budget() {
    let fake = FakeGraph::start(Tenant::generate(40, 8, 8));
    let app = fake.register_app(AppRegistration::new(&IMPORTER_PERMISSIONS));
    let client = open(
        fake.entra_source(app.secret_auth()),
        &app.secret(),
        None,
        Limits { max_in_flight: 2, ..Limits::default() },
    );
    let groups = read_all(&client, &graph::groups_path()).await.unwrap();
    fake.set_latency(Duration::from_millis(100));
    let paths: Vec<String> =
        groups.iter().map(|g| graph::group_users_path(g["id"].as_str().unwrap())).collect();
    assert_eq!(paths.len(), 8);
    for result in futures_util::future::join_all(paths.iter().map(|p| read_all(&client, p))).await {
        result.unwrap();
    }
    assert_eq!(fake.max_in_flight(), 2, "eight concurrent reads, two at a time");

    // A budget of 2 RU a second: the third 1-RU request waits for the next window.
    fake.set_latency(Duration::ZERO);
    let budgeted = open(
        fake.entra_source(app.secret_auth()),
        &app.secret(),
        None,
        Limits { resource_units: Some(2), window: Duration::from_secs(1), ..Limits::default() },
    );
    fake.clear_requests();
    for _ in 0..3 {
        read_all(&budgeted, "/users?$select=id&$top=999").await.unwrap();
    }
    let tries = graph_requests(&fake, "/v1.0/users");
    assert_eq!(tries.len(), 3);
    assert!(tries[1].received.duration_since(tries[0].received) < Duration::from_millis(900));
    let gap = tries[2].received.duration_since(tries[0].received);
    assert!(gap >= Duration::from_millis(900), "third request after {gap:?}");
}

// ---------------------------------------------------------------------------------------------
// Refusals and verify
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn each_missing_permission_is_named_with_admin_consent() {
    let fake = FakeGraph::start(Tenant::generate(10, 3, 9));
    let users_only = fake.register_app(AppRegistration::new(&[USER_READ_ALL]));
    let refused = err(read_all(&secret_client(&fake, &users_only), &graph::groups_path()).await);
    assert!(
        refused.contains("GroupMember.Read.All (or Group.Read.All)")
            && refused.contains("Grant admin consent")
            && refused.contains(&users_only.client_id),
        "{refused}"
    );
    let groups_only = fake.register_app(AppRegistration::new(&[GROUP_MEMBER_READ_ALL]));
    let refused = err(read_all(&secret_client(&fake, &groups_only), &graph::users_path("mail")).await);
    assert!(refused.contains("User.Read.All") && refused.contains("Grant admin consent"), "{refused}");
    let full = fake.register_app(AppRegistration::new(&IMPORTER_PERMISSIONS));
    let group = fake.read(|t| t.groups.keys().next().unwrap().clone());
    fake.fail_next(&format!("/v1.0/groups/{group}"), 1, Failure::Forbidden);
    let refused = err(read_all(&secret_client(&fake, &full), &graph::group_users_path(&group)).await);
    assert!(refused.contains("permission GroupMember.Read.All;"), "{refused}");
    // A deleted group's members: not found, for the engine to skip.
    let gone = read_all(&secret_client(&fake, &full), &graph::group_users_path("0000-missing")).await;
    assert!(matches!(gone, Err(Error::NotFound(_))), "{gone:?}");
}

#[tokio::test]
async fn verify_tries_the_token_and_each_permission() {
    let fake = FakeGraph::start(Tenant::generate(10, 3, 10));
    let app = fake.register_app(AppRegistration::new(&IMPORTER_PERMISSIONS));
    let remedies = |checks: &[graph::Check]| {
        checks.iter().filter_map(|c| c.remedy.clone()).collect::<Vec<_>>().join(" | ")
    };

    let checks = secret_client(&fake, &app).verify(true).await;
    let whats: Vec<&str> = checks.iter().map(|c| c.what.as_str()).collect();
    assert_eq!(checks.len(), 4, "{whats:?}");
    assert!(checks.iter().all(|c| c.remedy.is_none()), "{checks:?}");
    assert!(whats[1].contains("User.Read.All") && whats[3].contains("members"), "{whats:?}");
    assert!(graph_requests(&fake, "/v1.0/users").iter().all(|r| r.query("$top").as_deref() == Some("1")));
    assert_eq!(secret_client(&fake, &app).verify(false).await.len(), 2, "token and users");

    let no_consent = fake.register_app(AppRegistration::new(&[]));
    let checks = secret_client(&fake, &no_consent).verify(true).await;
    assert_eq!(checks.len(), 3, "the token works; users and groups are refused; no group id to try");
    assert!(checks[0].remedy.is_none());
    let said = remedies(&checks);
    assert!(
        said.contains("User.Read.All") && said.contains("GroupMember.Read.All (or Group.Read.All)"),
        "{said}"
    );

    let group = fake.read(|t| t.groups.keys().next().unwrap().clone());
    fake.fail_next(&format!("/v1.0/groups/{group}/"), 1, Failure::Forbidden);
    let checks = secret_client(&fake, &app).verify(true).await;
    assert_eq!(checks.iter().filter(|c| c.remedy.is_some()).count(), 1, "{checks:?}");
    assert!(checks[3].remedy.as_deref().unwrap().contains("GroupMember.Read.All"), "{checks:?}");

    let wrong_secret =
        open(fake.entra_source(app.secret_auth()), &app.secrets[0].id, None, Limits::default());
    let checks = wrong_secret.verify(true).await;
    assert_eq!(checks.len(), 1, "nothing else can be tried without a token");
    assert!(remedies(&checks).contains("not its Secret ID"), "{checks:?}");

    let mut unknown_app = app.clone();
    unknown_app.client_id = "11111111-2222-4333-8444-555555555555".into();
    let checks = secret_client(&fake, &unknown_app).verify(true).await;
    assert!(remedies(&checks).contains("Application (client) ID"), "{checks:?}");

    let mut block = fake.entra_source(app.secret_auth());
    block["tenant"] = json!("nowhere.example");
    let checks = open(block, &app.secret(), None, Limits::default()).verify(true).await;
    assert!(remedies(&checks).contains("Directory (tenant) ID"), "{checks:?}");

    let mut block = fake.entra_source(app.secret_auth());
    block["login_url"] = json!("http://127.0.0.1:9");
    let checks = open(block, &app.secret(), None, Limits::default()).verify(true).await;
    assert!(remedies(&checks).contains("cannot reach the Microsoft identity platform"), "{checks:?}");

    let mut block = fake.entra_source(app.secret_auth());
    block["login_url"] = json!(stub_graph(|base| base.to_string()));
    block["graph_url"] = json!("http://127.0.0.1:9");
    let checks = open(block, &app.secret(), None, Limits::default()).verify(false).await;
    assert!(checks[0].remedy.is_none());
    assert!(remedies(&checks).contains("cannot reach Microsoft Graph"), "{checks:?}");

    // A refused primary with a working backup: verify says so, and goes on with the backup.
    let certified =
        fake.register_app(AppRegistration::new(&IMPORTER_PERMISSIONS).with_certificate(APP_CERTIFICATE));
    let mut block = fake.entra_source(app.secret_auth());
    block["backup_auth"] = certified.certificate_auth(APP_CERTIFICATE);
    let client = open(block, "wrong", Some(APP_CERTIFICATE.private_key_pem), Limits::default());
    let checks = client.verify(true).await;
    assert_eq!(checks.len(), 5, "{checks:?}");
    assert!(checks[0].remedy.as_deref().unwrap().contains("entra.backup_auth"), "{checks:?}");
    assert!(checks[1..].iter().all(|c| c.remedy.is_none()), "{checks:?}");
}

// ---------------------------------------------------------------------------------------------
// Delta
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_delta_round_reaches_a_delta_link_and_the_next_reports_changes_and_removals() {
    let fake = FakeGraph::start(Tenant::generate(450, 6, 11));
    let app = fake.register_app(AppRegistration::new(&IMPORTER_PERMISSIONS));
    let client = secret_client(&fake, &app);

    let (users, users_link) =
        read_delta(&client, &graph::users_delta_path("userPrincipalName")).await.unwrap();
    assert_eq!(ids(&users), fake.read(|t| t.users.keys().cloned().collect()));
    assert!(graph_requests(&fake, "/v1.0/users/delta").len() >= 3, "paged by the service");
    assert!(
        users_link.starts_with(&fake.graph_base()) && users_link.contains("$deltatoken="),
        "{users_link}"
    );
    let managed =
        users.iter().filter_map(|u| graph::map_user(u, "userPrincipalName")?.manager_source_id).count();
    assert!(managed > 0, "manager@delta gives the manager");

    let (groups, groups_link) = read_delta(&client, &graph::groups_delta_path()).await.unwrap();
    // Members of a big group may come on several pages, the group repeated: accumulate.
    let mut members: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for group in &groups {
        let entry = members.entry(group["id"].as_str().unwrap().to_string()).or_default();
        for member in group["members@delta"].as_array().into_iter().flatten() {
            entry.insert(member["id"].as_str().unwrap().to_string());
        }
    }
    let expected: BTreeMap<String, BTreeSet<String>> = fake.read(|t| {
        t.groups.keys().map(|g| (g.clone(), t.members.get(g).cloned().unwrap_or_default())).collect()
    });
    assert_eq!(members, expected);

    let (disabled, soft, hard) = fake.read(|t| {
        let mut ids = t.users.keys().cloned();
        (ids.next().unwrap(), ids.next().unwrap(), ids.next().unwrap())
    });
    let (group, member) = fake.read(|t| {
        t.members
            .iter()
            .find_map(|(g, m)| Some((g.clone(), m.iter().find(|id| t.users.contains_key(*id))?.clone())))
            .unwrap()
    });
    fake.change(|t| {
        t.disable_user(&disabled);
        t.soft_delete_user(&soft);
        t.hard_delete_user(&hard);
        t.remove_member(&group, &member);
    });
    let (changes, next_link) = read_delta(&client, &users_link).await.unwrap();
    assert_ne!(next_link, users_link);
    let by_id: BTreeMap<String, &Value> =
        changes.iter().map(|c| (c["id"].as_str().unwrap().to_string(), c)).collect();
    assert_eq!(by_id[&soft]["@removed"]["reason"], "changed");
    assert_eq!(by_id[&hard]["@removed"]["reason"], "deleted");
    assert_eq!(
        graph::map_user(by_id[&disabled], "userPrincipalName").unwrap().status,
        SourceStatus::Inactive
    );
    assert!(changes.len() < 50, "only changes: {}", changes.len());

    let (group_changes, _) = read_delta(&client, &groups_link).await.unwrap();
    let removal = group_changes
        .iter()
        .filter(|g| g["id"] == group.as_str())
        .flat_map(|g| g["members@delta"].as_array().cloned().unwrap_or_default())
        .find(|m| m["id"] == member.as_str())
        .unwrap_or_else(|| panic!("no members@delta for {member}: {group_changes:?}"));
    assert!(removal.get("@removed").is_some(), "{removal}");
}

#[tokio::test]
async fn an_expired_delta_link_is_recognised_for_a_full_run() {
    let fake = FakeGraph::start(Tenant::generate(30, 2, 12));
    let app = fake.register_app(AppRegistration::new(&IMPORTER_PERMISSIONS));
    let client = secret_client(&fake, &app);
    for answer in [ExpiredDelta::SyncStateNotFound, ExpiredDelta::ResyncRequired, ExpiredDelta::Gone] {
        let (_, link) = read_delta(&client, &graph::users_delta_path("mail")).await.unwrap();
        fake.expire_delta_tokens(answer);
        let error = read_delta(&client, &link).await.unwrap_err();
        assert!(graph::is_delta_expired(&error), "{answer:?}: {error}");
        assert!(error.to_string().contains("full run"), "{error}");
    }
    for failure in [Failure::SyncStateNotFound, Failure::ResyncRequired, Failure::DeltaGone] {
        fake.fail_next("/v1.0/groups/delta", 1, failure);
        let error = read_delta(&client, &graph::groups_delta_path()).await.unwrap_err();
        assert!(graph::is_delta_expired(&error), "{failure:?}: {error}");
    }
    // Other failures are not mistaken for it.
    fake.fail_next("/v1.0/users/delta", 1, Failure::Forbidden);
    let error = read_delta(&client, &graph::users_delta_path("mail")).await.unwrap_err();
    assert!(!graph::is_delta_expired(&error), "{error}");
    // A listing that ends without a deltaLink is no delta round.
    let error = read_delta(&client, "/users?$select=id").await.unwrap_err();
    assert!(error.to_string().contains("without a deltaLink"), "{error}");
}
