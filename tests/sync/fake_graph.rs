//! The fake Entra tenant answers as graph-api.md says, over real HTTP: the Entra importer's
//! tests are only as good as this fake.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::header::HeaderMap;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::support::fake_graph::{
    AppRegistration, ExpiredDelta, Failure, FakeGraph, GraphDevice, GraphGroup, GraphUser, RefreshFailure,
    Tenant, TestCertificate, APP_CERTIFICATE, DIRECTORY_READ_ALL, GRAPH_DEFAULT_SCOPE, GROUP_MEMBER_READ_ALL,
    GROUP_READ_ALL, IMPORTER_PERMISSIONS, JWT_BEARER, OTHER_CERTIFICATE, USER_READ_ALL,
};

/// A response, read whole.
#[derive(Debug)]
struct Got {
    status: u16,
    headers: HeaderMap,
    body: Value,
}

impl Got {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    fn next_link(&self) -> Option<String> {
        self.body["@odata.nextLink"].as_str().map(str::to_string)
    }

    fn delta_link(&self) -> Option<String> {
        self.body["@odata.deltaLink"].as_str().map(str::to_string)
    }

    fn value(&self) -> &Vec<Value> {
        self.body["value"].as_array().unwrap_or_else(|| panic!("no value: {}", self.body))
    }

    fn ids(&self) -> Vec<String> {
        ids(self.value())
    }

    /// Asserts a Graph error body (§7) with this status and code.
    fn assert_graph_error(&self, status: u16, code: &str) -> String {
        assert_eq!(self.status, status, "{}", self.body);
        assert_eq!(self.body["error"]["code"], code, "{}", self.body);
        let inner = &self.body["error"]["innerError"];
        assert_eq!(inner["request-id"].as_str(), self.header("request-id"), "{}", self.body);
        assert!(inner["date"].as_str().is_some_and(|d| d.len() == 19 && d.contains('T')), "{inner}");
        assert!(inner["client-request-id"].is_string());
        self.body["error"]["message"].as_str().unwrap().to_string()
    }

    /// Asserts an AADSTS token error (§1.5) and returns its description's first line.
    fn assert_aad_error(&self, status: u16, error: &str, code: u64) -> String {
        assert_eq!(self.status, status, "{}", self.body);
        assert_eq!(self.body["error"], error, "{}", self.body);
        assert_eq!(self.body["error_codes"], json!([code]), "{}", self.body);
        let description = self.body["error_description"].as_str().unwrap();
        assert!(description.starts_with(&format!("AADSTS{code}: ")), "{description}");
        let lines: Vec<&str> = description.split("\r\n").collect();
        assert_eq!(lines.len(), 4, "{description}");
        assert_eq!(lines[1], format!("Trace ID: {}", self.body["trace_id"].as_str().unwrap()));
        assert_eq!(lines[2], format!("Correlation ID: {}", self.body["correlation_id"].as_str().unwrap()));
        let timestamp = self.body["timestamp"].as_str().unwrap();
        assert_eq!(lines[3], format!("Timestamp: {timestamp}"));
        assert!(
            timestamp.len() == 20 && timestamp.ends_with('Z') && timestamp.as_bytes()[10] == b' ',
            "{timestamp}"
        );
        assert_eq!(self.body["error_uri"], format!("https://login.microsoftonline.com/error?code={code}"));
        lines[0].to_string()
    }
}

async fn send(request: reqwest::RequestBuilder) -> Got {
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let text = response.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or(if text.is_empty() {
        Value::Null
    } else {
        Value::String(text)
    });
    Got { status, headers, body }
}

fn ids(items: &[Value]) -> Vec<String> {
    items.iter().map(|item| item["id"].as_str().unwrap().to_string()).collect()
}

fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

fn escape(text: &str) -> String {
    percent_encoding::utf8_percent_encode(text, percent_encoding::NON_ALPHANUMERIC).to_string()
}

async fn token_request(fake: &FakeGraph, form: &[(&str, &str)]) -> Got {
    send(reqwest::Client::new().post(fake.token_url()).form(form)).await
}

/// A client-credentials token with the app's secret.
async fn app_token(fake: &FakeGraph, app: &AppRegistration) -> String {
    let secret = app.secret();
    let got = token_request(
        fake,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", &app.client_id),
            ("client_secret", &secret),
            ("scope", GRAPH_DEFAULT_SCOPE),
        ],
    )
    .await;
    assert_eq!(got.status, 200, "{}", got.body);
    got.body["access_token"].as_str().unwrap().to_string()
}

/// A fake serving `tenant` and an app with the importer's permissions, and its token.
async fn start(tenant: Tenant) -> (FakeGraph, AppRegistration, String) {
    let fake = FakeGraph::start(tenant);
    let app = fake.register_app(AppRegistration::new(&IMPORTER_PERMISSIONS));
    let token = app_token(&fake, &app).await;
    (fake, app, token)
}

/// GET `url` (absolute, or a path under the fake) with the bearer token and extra headers.
async fn get(fake: &FakeGraph, token: &str, url: &str, headers: &[(&str, &str)]) -> Got {
    let url = if url.starts_with("http") { url.to_string() } else { format!("{}{url}", fake.base_url()) };
    let mut request = reqwest::Client::new().get(url).bearer_auth(token);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    send(request).await
}

/// Follows nextLinks from `url` to the end, re-sending `headers` on every page; returns every
/// item and every page.
async fn follow(
    fake: &FakeGraph,
    token: &str,
    url: &str,
    headers: &[(&str, &str)],
) -> (Vec<Value>, Vec<Got>) {
    let (mut items, mut pages) = (Vec::new(), Vec::new());
    let mut url = url.to_string();
    loop {
        let page = get(fake, token, &url, headers).await;
        assert_eq!(page.status, 200, "{url}: {}", page.body);
        items.extend(page.value().iter().cloned());
        let next = page.next_link();
        pages.push(page);
        match next {
            Some(next) => url = next,
            None => return (items, pages),
        }
        assert!(pages.len() < 10_000, "paging does not end");
    }
}

fn user(upn: &str) -> GraphUser {
    GraphUser::new(upn)
}

/// The tenant the hand-written tests use: Lena with every property, a guest, a manager chain.
fn small_tenant() -> (Tenant, BTreeMap<&'static str, String>) {
    let mut tenant = Tenant::empty();
    let extension = tenant.add_extension_property("6c1e2f3a-4b5d-4e6f-8a7b-9c0d1e2f3a4b", "costCenter");
    let mut lena = user("lena.hoffmann@fjord.example");
    lena.job_title = Some("Controller".into());
    lena.department = Some("Finance".into());
    lena.employee_id = Some("100482".into());
    lena.employee_type = Some("Employee".into());
    lena.company_name = Some("Fjord GmbH".into());
    lena.office_location = Some("Hamburg 3.14".into());
    lena.business_phones = vec!["+49 40 5550 1100".into()];
    lena.street_address = Some("Speicherstadt 7".into());
    lena.city = Some("Hamburg".into());
    lena.state = Some("HH".into());
    lena.postal_code = Some("20457".into());
    lena.country = Some("Germany".into());
    lena.preferred_language = Some("de-DE".into());
    lena.on_premises_sam_account_name = Some("lhoffmann".into());
    lena.on_premises_immutable_id = Some("q1w2e3r4t5y6u7i8o9p0aA==".into());
    lena.employee_org_data = Some(crate::support::fake_graph::EmployeeOrgData {
        division: Some("Corporate".into()),
        cost_center: Some("4711".into()),
    });
    lena.extensions.insert(extension.clone(), json!("CC-4711"));
    let boss = user("ole.berg@fjord.example");
    lena.manager_id = Some(boss.id.clone());
    let mut guest = GraphUser::guest("partner@ext.example", tenant.initial_domain());
    guest.account_enabled = false;
    let names = BTreeMap::from([
        ("lena", lena.id.clone()),
        ("boss", boss.id.clone()),
        ("guest", guest.id.clone()),
        ("extension", extension),
    ]);
    tenant.add_user(lena);
    tenant.add_user(boss);
    tenant.add_user(guest);
    (tenant, names)
}

// ---------------------------------------------------------------------------------------------
// Tokens
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn client_secret_mints_a_bearer_token_by_form_or_basic_and_by_tenant_id_or_domain() {
    let fake = FakeGraph::start(Tenant::empty());
    let app = fake.register_app(AppRegistration::new(&IMPORTER_PERMISSIONS));
    let secret = app.secret();
    assert!(secret.len() == 40 && &secret[3..6] == "8Q~", "{secret}");
    let form = [
        ("grant_type", "client_credentials"),
        ("client_id", app.client_id.as_str()),
        ("client_secret", secret.as_str()),
        ("scope", GRAPH_DEFAULT_SCOPE),
    ];
    let minted = token_request(&fake, &form).await;
    assert_eq!(minted.status, 200, "{}", minted.body);
    let keys: BTreeSet<&str> = minted.body.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        BTreeSet::from(["token_type", "expires_in", "ext_expires_in", "access_token"]),
        "no refresh token"
    );
    assert_eq!(minted.body["token_type"], "Bearer");
    assert_eq!(minted.body["expires_in"], 3599);
    let token = minted.body["access_token"].as_str().unwrap();
    assert_eq!(token.split('.').count(), 3, "a JWT-shaped token");
    assert_eq!(get(&fake, token, "/v1.0/users", &[]).await.status, 200);

    let basic = send(
        reqwest::Client::new()
            .post(format!("{}/fjord.example/oauth2/v2.0/token", fake.base_url()))
            .basic_auth(&app.client_id, Some(&secret))
            .form(&[("grant_type", "client_credentials"), ("scope", "https://graph.microsoft.com/.default")]),
    )
    .await;
    assert_eq!(basic.status, 200, "HTTP Basic at a verified domain: {}", basic.body);
    let by_graph_app_id = token_request(
        &fake,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", &app.client_id),
            ("client_secret", &secret),
            ("scope", "00000003-0000-0000-c000-000000000000/.default"),
        ],
    )
    .await;
    assert_eq!(by_graph_app_id.status, 200);
    let source = fake.entra_source(app.secret_auth());
    assert_eq!(
        source["auth"],
        json!({ "method": "client_secret", "client_id": app.client_id, "client_secret": secret })
    );
    assert_eq!(
        format!(
            "{}/{}/oauth2/v2.0/token",
            source["login_url"].as_str().unwrap(),
            source["tenant"].as_str().unwrap()
        ),
        fake.token_url()
    );
    assert_eq!(format!("{}/v1.0", source["graph_url"].as_str().unwrap()), fake.graph_base());
    let recorded = fake.requests();
    assert_eq!(recorded[0].form_field("grant_type"), Some("client_credentials"));
    assert_eq!(recorded[0].path(), format!("/{}/oauth2/v2.0/token", fake.tenant_id()));
}

#[tokio::test]
async fn token_endpoint_answers_each_credential_mistake_with_its_aadsts_error() {
    let fake = FakeGraph::start(Tenant::empty());
    let mut app = AppRegistration::new(&IMPORTER_PERMISSIONS);
    let mut expired = crate::support::fake_graph::ClientSecret::generate();
    expired.expired = true;
    app.secrets.push(expired.clone());
    let app = fake.register_app(app);
    let (id, secret) = (app.client_id.as_str(), app.secret());
    let base = fake.base_url();
    let form = |client_id: &str, secret: &str, scope: &str| {
        vec![
            ("grant_type".to_string(), "client_credentials".to_string()),
            ("client_id".to_string(), client_id.to_string()),
            ("client_secret".to_string(), secret.to_string()),
            ("scope".to_string(), scope.to_string()),
        ]
    };
    let post = |url: String, form: Vec<(String, String)>| async move {
        send(reqwest::Client::new().post(url).form(&form)).await
    };
    let token_url = fake.token_url();

    let wrong = post(token_url.clone(), form(id, "not-the-secret", GRAPH_DEFAULT_SCOPE)).await;
    assert!(wrong.assert_aad_error(401, "invalid_client", 7000215).contains("not the client secret ID"));
    let secret_id = app.secrets[0].id.clone();
    post(token_url.clone(), form(id, &secret_id, GRAPH_DEFAULT_SCOPE)).await.assert_aad_error(
        401,
        "invalid_client",
        7000215,
    );
    let expired_answer = post(token_url.clone(), form(id, &expired.value, GRAPH_DEFAULT_SCOPE)).await;
    assert!(expired_answer.assert_aad_error(401, "invalid_client", 7000222).contains("are expired"));
    let unknown = uuid::Uuid::new_v4().to_string();
    post(token_url.clone(), form(&unknown, &secret, GRAPH_DEFAULT_SCOPE)).await.assert_aad_error(
        400,
        "unauthorized_client",
        700016,
    );
    let no_tenant =
        post(format!("{base}/nosuch.example/oauth2/v2.0/token"), form(id, &secret, GRAPH_DEFAULT_SCOPE))
            .await;
    assert!(no_tenant
        .assert_aad_error(400, "invalid_request", 90002)
        .contains("Tenant 'nosuch.example' not found"));
    post(format!("{base}/common/oauth2/v2.0/token"), form(id, &secret, GRAPH_DEFAULT_SCOPE))
        .await
        .assert_aad_error(400, "invalid_request", 50059);
    for scope in [
        "User.Read.All",
        "https://graph.microsoft.com/User.Read.All",
        "https://graph.microsoft.com/.default https://outlook.office.com/.default",
        "",
    ] {
        post(token_url.clone(), form(id, &secret, scope)).await.assert_aad_error(400, "invalid_scope", 70011);
    }
    let no_credential = vec![
        ("grant_type".to_string(), "client_credentials".to_string()),
        ("client_id".to_string(), id.to_string()),
        ("scope".to_string(), GRAPH_DEFAULT_SCOPE.to_string()),
    ];
    post(token_url.clone(), no_credential).await.assert_aad_error(401, "invalid_client", 7000218);
    let mut password = form(id, &secret, GRAPH_DEFAULT_SCOPE);
    password[0].1 = "password".into();
    post(token_url.clone(), password).await.assert_aad_error(400, "unsupported_grant_type", 70003);
    assert_eq!(
        post(token_url, form(id, &secret, GRAPH_DEFAULT_SCOPE)).await.status,
        200,
        "the good secret still works"
    );
}

/// A client assertion as the importer should make it (PS256, `x5t#S256`), then `adjust`ed.
fn assertion(
    fake: &FakeGraph,
    client_id: &str,
    signer: TestCertificate,
    header: impl FnOnce(&mut Header),
    claims: impl FnOnce(&mut Value),
) -> String {
    let now = now();
    let mut body = json!({
        "aud": fake.token_url(),
        "iss": client_id,
        "sub": client_id,
        "jti": uuid::Uuid::new_v4().to_string(),
        "nbf": now,
        "iat": now,
        "exp": now + 600
    });
    claims(&mut body);
    let mut jwt_header = Header::new(Algorithm::PS256);
    jwt_header.x5t_s256 = Some(APP_CERTIFICATE.x5t_s256());
    header(&mut jwt_header);
    jsonwebtoken::encode(
        &jwt_header,
        &body,
        &EncodingKey::from_rsa_pem(signer.private_key_pem.as_bytes()).unwrap(),
    )
    .unwrap()
}

async fn assertion_request(fake: &FakeGraph, client_id: &str, assertion: &str) -> Got {
    token_request(
        fake,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", client_id),
            ("client_assertion_type", JWT_BEARER),
            ("client_assertion", assertion),
            ("scope", GRAPH_DEFAULT_SCOPE),
        ],
    )
    .await
}

#[tokio::test]
async fn certificate_assertions_are_verified_against_the_registered_certificate() {
    let fake = FakeGraph::start(Tenant::empty());
    let app =
        fake.register_app(AppRegistration::new(&IMPORTER_PERMISSIONS).with_certificate(APP_CERTIFICATE));
    let id = app.client_id.clone();
    let sha256 = Sha256::digest(
        base64::Engine::decode(
            &base64::engine::general_purpose::STANDARD,
            APP_CERTIFICATE.certificate_pem.lines().filter(|l| !l.starts_with("-----")).collect::<String>(),
        )
        .unwrap(),
    );
    assert_eq!(
        APP_CERTIFICATE.x5t_s256(),
        base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, sha256),
        "x5t#S256 is the base64url SHA-256 of the DER certificate"
    );
    assert_eq!(APP_CERTIFICATE.x5t().len(), 27, "SHA-1, base64url");

    let ps256 = assertion(&fake, &id, APP_CERTIFICATE, |_| {}, |_| {});
    let minted = assertion_request(&fake, &id, &ps256).await;
    assert_eq!(minted.status, 200, "{}", minted.body);
    assert_eq!(
        get(&fake, minted.body["access_token"].as_str().unwrap(), "/v1.0/groups", &[]).await.status,
        200
    );
    let legacy = assertion(
        &fake,
        &id,
        APP_CERTIFICATE,
        |h| {
            h.alg = Algorithm::RS256;
            h.x5t_s256 = None;
            h.x5t = Some(APP_CERTIFICATE.x5t());
        },
        |_| {},
    );
    assert_eq!(assertion_request(&fake, &id, &legacy).await.status, 200, "RS256 with legacy x5t");
    let by_domain = assertion(
        &fake,
        &id,
        APP_CERTIFICATE,
        |_| {},
        |c| c["aud"] = json!(format!("{}/fjord.example/oauth2/v2.0/token", fake.base_url())),
    );
    assert_eq!(
        assertion_request(&fake, &id, &by_domain).await.status,
        200,
        "aud naming the tenant by domain"
    );

    let now = now();
    let cases: Vec<(&str, String, u16, &str, u64)> = vec![
        (
            "signed by another key",
            assertion(&fake, &id, OTHER_CERTIFICATE, |_| {}, |_| {}),
            401,
            "invalid_client",
            700027,
        ),
        (
            "unregistered certificate",
            assertion(
                &fake,
                &id,
                OTHER_CERTIFICATE,
                |h| h.x5t_s256 = Some(OTHER_CERTIFICATE.x5t_s256()),
                |_| {},
            ),
            401,
            "invalid_client",
            700027,
        ),
        (
            "no thumbprint",
            assertion(&fake, &id, APP_CERTIFICATE, |h| h.x5t_s256 = None, |_| {}),
            401,
            "invalid_client",
            700027,
        ),
        (
            "wrong aud",
            assertion(
                &fake,
                &id,
                APP_CERTIFICATE,
                |_| {},
                |c| c["aud"] = json!("https://login.microsoftonline.com/fjord.example/oauth2/v2.0/token"),
            ),
            401,
            "invalid_client",
            700023,
        ),
        (
            "v1 token endpoint aud",
            assertion(
                &fake,
                &id,
                APP_CERTIFICATE,
                |_| {},
                |c| c["aud"] = json!(fake.token_url().replace("/v2.0", "")),
            ),
            401,
            "invalid_client",
            700023,
        ),
        (
            "iss not the client",
            assertion(&fake, &id, APP_CERTIFICATE, |_| {}, |c| c["iss"] = json!("someone")),
            401,
            "invalid_client",
            700021,
        ),
        (
            "sub not the client",
            assertion(&fake, &id, APP_CERTIFICATE, |_| {}, |c| c["sub"] = json!("someone")),
            401,
            "invalid_client",
            700021,
        ),
        (
            "expired",
            assertion(&fake, &id, APP_CERTIFICATE, |_| {}, |c| c["exp"] = json!(now - 900)),
            401,
            "invalid_client",
            700024,
        ),
        (
            "no exp",
            assertion(
                &fake,
                &id,
                APP_CERTIFICATE,
                |_| {},
                |c| {
                    c.as_object_mut().unwrap().remove("exp");
                },
            ),
            401,
            "invalid_client",
            700024,
        ),
        (
            "not yet valid",
            assertion(&fake, &id, APP_CERTIFICATE, |_| {}, |c| c["nbf"] = json!(now + 3600)),
            401,
            "invalid_client",
            700024,
        ),
        (
            "no jti",
            assertion(
                &fake,
                &id,
                APP_CERTIFICATE,
                |_| {},
                |c| {
                    c.as_object_mut().unwrap().remove("jti");
                },
            ),
            401,
            "invalid_client",
            700027,
        ),
        ("not a JWT", "not-a-jwt".into(), 400, "invalid_request", 50027),
    ];
    for (name, assertion, status, error, code) in cases {
        let got = assertion_request(&fake, &id, &assertion).await;
        assert_eq!(got.status, status, "{name}: {}", got.body);
        got.assert_aad_error(status, error, code);
    }

    let once = assertion(&fake, &id, APP_CERTIFICATE, |_| {}, |c| c["jti"] = json!("the-same-jti"));
    assert_eq!(assertion_request(&fake, &id, &once).await.status, 200);
    let again = assertion(&fake, &id, APP_CERTIFICATE, |_| {}, |c| c["jti"] = json!("the-same-jti"));
    assertion_request(&fake, &id, &again).await.assert_aad_error(401, "invalid_client", 700027);
    let both = token_request(
        &fake,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", &id),
            ("client_secret", &app.secret()),
            ("client_assertion_type", JWT_BEARER),
            ("client_assertion", &assertion(&fake, &id, APP_CERTIFICATE, |_| {}, |_| {})),
            ("scope", GRAPH_DEFAULT_SCOPE),
        ],
    )
    .await;
    assert_eq!(both.status, 400, "secret and assertion together: {}", both.body);
}

// ---------------------------------------------------------------------------------------------
// Permissions and tokens at Graph
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn graph_answers_403_for_a_missing_permission_and_401_for_a_bad_or_expired_token() {
    let (tenant, names) = small_tenant();
    let fake = FakeGraph::start(tenant);
    let mut group = GraphGroup::security("sg-finance");
    group.id = "8a9b0c1d-2e3f-4a5b-8c6d-7e8f9a0b1c2d".into();
    fake.change(|t| {
        t.add_group(group.clone());
        t.add_member(&group.id, &names["lena"]);
    });
    let members_url = format!("/v1.0/groups/{}/members?$select=id,displayName,userPrincipalName", group.id);
    let expectations: Vec<(&[&str], [u16; 4])> = vec![
        // users, users/delta, groups, groups/delta
        (&[USER_READ_ALL], [200, 200, 403, 403]),
        (&[GROUP_MEMBER_READ_ALL], [403, 403, 200, 200]),
        (&[GROUP_READ_ALL], [403, 403, 200, 200]),
        (&[DIRECTORY_READ_ALL], [200, 200, 200, 200]),
        (&[], [403, 403, 403, 403]),
    ];
    for (roles, statuses) in expectations {
        let app = fake.register_app(AppRegistration::new(roles));
        let token = app_token(&fake, &app).await;
        for (path, status) in
            ["/v1.0/users", "/v1.0/users/delta", "/v1.0/groups", "/v1.0/groups/delta"].iter().zip(statuses)
        {
            let got = get(&fake, &token, path, &[]).await;
            if status == 403 {
                let message = got.assert_graph_error(403, "Authorization_RequestDenied");
                assert_eq!(message, "Insufficient privileges to complete the operation.");
            } else {
                assert_eq!(got.status, 200, "{roles:?} {path}: {}", got.body);
            }
        }
    }

    // Members the app may not read come back with @odata.type and id only.
    let groups_only = fake.register_app(AppRegistration::new(&[GROUP_MEMBER_READ_ALL]));
    let token = app_token(&fake, &groups_only).await;
    let limited = get(&fake, &token, &members_url, &[]).await;
    assert_eq!(
        limited.body["value"],
        json!([{ "@odata.type": "#microsoft.graph.user", "id": names["lena"], "displayName": null, "userPrincipalName": null }])
    );
    let full = fake.register_app(AppRegistration::new(&IMPORTER_PERMISSIONS));
    let full_token = app_token(&fake, &full).await;
    let readable = get(&fake, &full_token, &members_url, &[]).await;
    assert_eq!(readable.body["value"][0]["userPrincipalName"], "lena.hoffmann@fjord.example");

    // Consent granted later: the old token keeps its roles, a new one has them.
    let late = fake.register_app(AppRegistration::new(&[]));
    let before = app_token(&fake, &late).await;
    fake.change_app(&late.client_id, |a| a.roles = vec![USER_READ_ALL.into()]);
    assert_eq!(get(&fake, &before, "/v1.0/users", &[]).await.status, 403);
    assert_eq!(get(&fake, &app_token(&fake, &late).await, "/v1.0/users", &[]).await.status, 200);

    let url = format!("{}/v1.0/users", fake.base_url());
    let client = reqwest::Client::new();
    let missing = send(client.get(&url)).await;
    assert_eq!(missing.assert_graph_error(401, "InvalidAuthenticationToken"), "Access token is empty.");
    assert!(missing.header("www-authenticate").unwrap().starts_with("Bearer "));
    send(client.get(&url).bearer_auth("garbage")).await.assert_graph_error(401, "InvalidAuthenticationToken");
    send(client.get(&url).bearer_auth("a.b.c")).await.assert_graph_error(401, "InvalidAuthenticationToken");
    fake.expire_access_tokens();
    let expired = get(&fake, &full_token, "/v1.0/users", &[]).await;
    assert_eq!(
        expired.assert_graph_error(401, "InvalidAuthenticationToken"),
        "Lifetime validation failed, the token is expired."
    );
    assert_eq!(
        get(&fake, &app_token(&fake, &full).await, "/v1.0/users", &[]).await.status,
        200,
        "a new token works"
    );
}

// ---------------------------------------------------------------------------------------------
// Users
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn users_list_honours_select_and_top_and_pages_by_opaque_skiptoken() {
    let (fake, _, token) = start(Tenant::generate(450, 10, 3)).await;
    let expected: Vec<String> = fake.read(|t| t.users.keys().cloned().collect());
    let select = "id,userPrincipalName,accountEnabled,department";
    let (items, pages) = follow(&fake, &token, &format!("/v1.0/users?$select={select}&$top=100"), &[]).await;
    assert_eq!(ids(&items), expected, "every user once");
    assert_eq!(pages.len(), 5);
    for (i, page) in pages.iter().enumerate() {
        assert!(page.value().len() <= 100);
        assert!(page.header("content-type").unwrap().starts_with("application/json;odata.metadata=minimal"));
        match page.next_link() {
            Some(next) => {
                assert!(i < 4);
                assert!(next.starts_with(&format!("{}/v1.0/users?", fake.base_url())), "{next}");
                assert!(next.contains(&format!("$select={select}")) && next.contains("$top=100"), "{next}");
                let skiptoken = next.split("$skiptoken=").nth(1).unwrap();
                assert!(!skiptoken.contains(&items[0]["id"].as_str().unwrap()[..8]), "opaque: {skiptoken}");
            }
            None => assert_eq!(i, 4),
        }
    }
    assert!(pages[0].body["@odata.context"]
        .as_str()
        .unwrap()
        .ends_with(&format!("$metadata#users({select})")));
    for item in &items {
        let keys: BTreeSet<&str> = item.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(keys, BTreeSet::from(["id", "userPrincipalName", "accountEnabled", "department"]));
    }
    assert!(items.iter().any(|u| u["department"].is_null()), "guests have no department: null, not absent");

    let default = get(&fake, &token, "/v1.0/users", &[]).await;
    assert_eq!(default.value().len(), 100, "default page size");
    let keys: BTreeSet<&str> = default.value()[0].as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        BTreeSet::from([
            "id",
            "userPrincipalName",
            "displayName",
            "givenName",
            "surname",
            "mail",
            "jobTitle",
            "mobilePhone",
            "businessPhones",
            "officeLocation",
            "preferredLanguage"
        ]),
        "no accountEnabled, department or employeeId without $select"
    );
    let max = get(&fake, &token, "/v1.0/users?$top=999&$select=id", &[]).await;
    assert_eq!(max.value().len(), 450);
    assert!(max.next_link().is_none());

    let too_big = get(&fake, &token, "/v1.0/users?$top=1000", &[]).await;
    assert_eq!(
        too_big.assert_graph_error(400, "Request_UnsupportedQuery"),
        "Invalid page size specified: '1000'. Must be between 1 and 999 inclusive."
    );
    get(&fake, &token, "/v1.0/users?$top=0", &[]).await.assert_graph_error(400, "Request_UnsupportedQuery");
    get(&fake, &token, "/v1.0/users?$select=id,nosuchProperty", &[])
        .await
        .assert_graph_error(400, "Request_BadRequest");
    get(&fake, &token, "/v1.0/users?$select=id,skills", &[]).await.assert_graph_error(501, "NotImplemented");
    get(&fake, &token, "/v1.0/users?$skiptoken=forged", &[])
        .await
        .assert_graph_error(400, "Request_BadRequest");
    get(&fake, &token, "/v1.0/users?$skip=10", &[]).await.assert_graph_error(400, "Request_BadRequest");
    let group_token = pages[0].next_link().unwrap().replace("/v1.0/users?", "/v1.0/groups?");
    get(&fake, &token, &group_token, &[]).await.assert_graph_error(400, "Request_BadRequest");

    let requests = fake.requests();
    let listing = requests.iter().find(|r| r.path() == "/v1.0/users").unwrap();
    assert_eq!(listing.query("$select").as_deref(), Some(select));
    assert_eq!(listing.query("$top").as_deref(), Some("100"));
    assert_eq!(listing.status, 200);
}

#[tokio::test]
async fn users_carry_employee_data_phones_address_extensions_and_managers() {
    let (tenant, names) = small_tenant();
    let (fake, _, token) = start(tenant).await;
    let extension = &names["extension"];
    let every = format!(
        "id,userPrincipalName,mail,mailNickname,displayName,givenName,surname,jobTitle,department,employeeId,employeeType,companyName,officeLocation,businessPhones,mobilePhone,streetAddress,city,state,postalCode,country,preferredLanguage,accountEnabled,userType,onPremisesSamAccountName,onPremisesImmutableId,employeeOrgData,{extension}"
    );
    let got = get(&fake, &token, &format!("/v1.0/users?$select={every}"), &[]).await;
    let by_id: BTreeMap<String, Value> =
        got.value().iter().map(|u| (u["id"].as_str().unwrap().to_string(), u.clone())).collect();
    let lena = &by_id[&names["lena"]];
    assert_eq!(lena["employeeOrgData"], json!({ "division": "Corporate", "costCenter": "4711" }));
    assert_eq!(lena["businessPhones"], json!(["+49 40 5550 1100"]));
    assert_eq!(lena["mobilePhone"], Value::Null);
    for (key, value) in [
        ("city", "Hamburg"),
        ("postalCode", "20457"),
        ("country", "Germany"),
        ("streetAddress", "Speicherstadt 7"),
        ("state", "HH"),
        ("employeeId", "100482"),
        ("companyName", "Fjord GmbH"),
        ("onPremisesImmutableId", "q1w2e3r4t5y6u7i8o9p0aA=="),
        ("userType", "Member"),
    ] {
        assert_eq!(lena[key], value, "{key}");
    }
    assert_eq!(lena[extension.as_str()], "CC-4711");
    assert!(extension.starts_with("extension_6c1e2f3a4b5d4e6f8a7b9c0d1e2f3a4b_"));
    let guest = &by_id[&names["guest"]];
    assert_eq!(guest["accountEnabled"], false);
    assert_eq!(guest["userType"], "Guest");
    assert!(guest["userPrincipalName"].as_str().unwrap().contains("#EXT#@fjord.onmicrosoft.com"));
    assert_eq!(guest["businessPhones"], json!([]));
    assert_eq!(guest["employeeOrgData"], Value::Null);
    assert!(guest.get(extension.as_str()).is_none(), "an unset extension is absent");
    let unknown_extension = "/v1.0/users?$select=id,extension_00000000000000000000000000000000_nope";
    get(&fake, &token, unknown_extension, &[]).await.assert_graph_error(400, "Request_BadRequest");

    let expanded =
        get(&fake, &token, "/v1.0/users?$select=id,displayName&$expand=manager($select=id,displayName)", &[])
            .await;
    assert_eq!(expanded.status, 200, "{}", expanded.body);
    for u in expanded.value() {
        if u["id"] == names["lena"] {
            assert_eq!(
                u["manager"],
                json!({ "@odata.type": "#microsoft.graph.user", "id": names["boss"], "displayName": "Ole Berg" })
            );
        } else {
            assert!(u.get("manager").is_none(), "no manager, no key: {u}");
        }
    }
    get(&fake, &token, "/v1.0/users?$expand=memberOf", &[])
        .await
        .assert_graph_error(400, "Request_BadRequest");

    let manager = get(
        &fake,
        &token,
        &format!("/v1.0/users/{}/manager?$select=id,userPrincipalName,displayName", names["lena"]),
        &[],
    )
    .await;
    assert_eq!(manager.status, 200);
    assert_eq!(manager.body["@odata.type"], "#microsoft.graph.user");
    assert_eq!(manager.body["userPrincipalName"], "ole.berg@fjord.example");
    assert!(manager.body["@odata.context"].as_str().unwrap().ends_with("$metadata#directoryObjects/$entity"));
    get(&fake, &token, &format!("/v1.0/users/{}/manager", names["boss"]), &[])
        .await
        .assert_graph_error(404, "Request_ResourceNotFound");
    let by_upn = get(&fake, &token, "/v1.0/users/lena.hoffmann@fjord.example?$select=id,skills", &[]).await;
    assert_eq!(by_upn.body["id"], names["lena"]);
    assert_eq!(by_upn.body["skills"], Value::Null, "single-user-only properties work on a single GET");
    get(&fake, &token, &format!("/v1.0/users/{}", uuid::Uuid::new_v4()), &[])
        .await
        .assert_graph_error(404, "Request_ResourceNotFound");

    // $expand caps pages at 100 whatever $top says.
    fake.change(|t| {
        for n in 0..250 {
            t.add_user(user(&format!("user{n}@fjord.example")));
        }
    });
    let (all, pages) = follow(&fake, &token, "/v1.0/users?$top=999&$select=id&$expand=manager", &[]).await;
    assert_eq!(all.len(), 253);
    assert_eq!(pages.iter().map(|p| p.value().len()).collect::<Vec<_>>(), vec![100, 100, 53]);
}

#[tokio::test]
async fn advanced_queries_need_consistency_level_eventual_and_count_on_every_page() {
    let (fake, _, token) = start(Tenant::generate(300, 20, 8)).await;
    let disabled: Vec<String> =
        fake.read(|t| t.users.values().filter(|u| !u.account_enabled).map(|u| u.id.clone()).collect());
    assert!(!disabled.is_empty());
    let basic = follow(
        &fake,
        &token,
        &format!("/v1.0/users?$select=id&$filter={}", escape("accountEnabled eq false")),
        &[],
    )
    .await;
    assert_eq!(ids(&basic.0), disabled, "accountEnabled eq works without the header");
    let lenas: Vec<String> = fake.read(|t| {
        t.users
            .values()
            .filter(|u| u.display_name.as_deref().is_some_and(|d| d.starts_with("Lena")))
            .map(|u| u.id.clone())
            .collect()
    });
    let prefix = get(
        &fake,
        &token,
        &format!("/v1.0/users?$filter={}&$top=999", escape("startswith(displayName,'lena')")),
        &[],
    )
    .await;
    assert_eq!(prefix.ids(), lenas, "startsWith, case-insensitive, no header needed");

    let ends = format!(
        "/v1.0/users?$select=id,mail&$top=20&$filter={}",
        escape("endsWith(mail,'@eu.fjord.example')")
    );
    let refused = get(&fake, &token, &ends, &[]).await;
    assert_eq!(
        refused.assert_graph_error(400, "Request_UnsupportedQuery"),
        "Unsupported or invalid query filter clause specified for property 'mail' of resource 'User'."
    );
    get(&fake, &token, &ends, &[("ConsistencyLevel", "eventual")])
        .await
        .assert_graph_error(400, "Request_UnsupportedQuery");
    let counted = format!("{ends}&$count=true");
    get(&fake, &token, &counted, &[]).await.assert_graph_error(400, "Request_UnsupportedQuery");
    let eventual = [("ConsistencyLevel", "eventual")];
    let (items, pages) = follow(&fake, &token, &counted, &eventual).await;
    let expected = fake.read(|t| {
        t.users
            .values()
            .filter(|u| u.mail.as_deref().is_some_and(|m| m.ends_with("@eu.fjord.example")))
            .count()
    });
    assert!(expected > 20, "more than one page");
    assert_eq!(items.len(), expected);
    assert!(items.iter().all(|u| u["mail"].as_str().unwrap().ends_with("@eu.fjord.example")));
    assert_eq!(pages[0].body["@odata.count"], expected, "count on the first page");
    assert!(pages[1..].iter().all(|p| p.body.get("@odata.count").is_none()), "and only there");
    // nextLink does not carry the header: without it the second page fails.
    get(&fake, &token, &pages[0].next_link().unwrap(), &[])
        .await
        .assert_graph_error(400, "Request_UnsupportedQuery");
    let recorded: Vec<_> =
        fake.requests().into_iter().filter(|r| r.status == 200 && r.query("$count").is_some()).collect();
    assert!(
        recorded.len() >= 2 && recorded.iter().all(|r| r.consistency_level.as_deref() == Some("eventual"))
    );

    let ne = format!("/v1.0/users?$count=true&$top=999&$filter={}", escape("accountEnabled ne true"));
    get(&fake, &token, &ne, &[]).await.assert_graph_error(400, "Request_UnsupportedQuery");
    assert_eq!(get(&fake, &token, &ne, &eventual).await.ids(), disabled);
    let not = format!("/v1.0/users?$count=true&$top=999&$filter={}", escape("not(accountEnabled eq true)"));
    assert_eq!(get(&fake, &token, &not, &eventual).await.ids(), disabled);
    let two: Vec<String> =
        fake.read(|t| t.users.values().take(2).map(|u| u.user_principal_name.clone()).collect());
    let within = format!(
        "/v1.0/users?$filter={}",
        escape(&format!("userPrincipalName in ('{}', '{}')", two[0], two[1].to_uppercase()))
    );
    assert_eq!(get(&fake, &token, &within, &[]).await.value().len(), 2);

    let search = format!("/v1.0/users?$search={}", escape("\"displayName:lena\""));
    get(&fake, &token, &search, &[]).await.assert_graph_error(400, "Request_UnsupportedQuery");
    let containing = fake.read(|t| {
        t.users
            .values()
            .filter(|u| u.display_name.as_deref().is_some_and(|d| d.to_lowercase().contains("lena")))
            .count()
    });
    assert!(containing > lenas.len(), "Elena contains lena too");
    assert_eq!(get(&fake, &token, &format!("{search}&$top=999"), &eventual).await.value().len(), containing);
    let ordered =
        get(&fake, &token, "/v1.0/users?$orderby=displayName&$select=id,displayName&$top=999", &[]).await;
    let names: Vec<String> =
        ordered.value().iter().map(|u| u["displayName"].as_str().unwrap().to_lowercase()).collect();
    assert!(names.windows(2).all(|w| w[0] <= w[1]), "ordered by displayName");
    let order_and_filter =
        format!("/v1.0/users?$orderby=displayName&$filter={}", escape("accountEnabled eq true"));
    get(&fake, &token, &order_and_filter, &[]).await.assert_graph_error(400, "Request_UnsupportedQuery");
    assert_eq!(get(&fake, &token, &order_and_filter, &eventual).await.status, 200);

    let unified = format!("/v1.0/groups?$top=999&$filter={}", escape("groupTypes/any(c:c eq 'Unified')"));
    let m365 = get(&fake, &token, &unified, &[]).await;
    assert!(!m365.value().is_empty() && m365.value().iter().all(|g| g["groupTypes"] == json!(["Unified"])));
    for bad in
        ["accountEnabled eq", "displayName eq 'unterminated", "nosuch eq 'x'", "(((accountEnabled eq true)"]
    {
        let got = get(&fake, &token, &format!("/v1.0/users?$filter={}", escape(bad)), &[]).await;
        got.assert_graph_error(400, "BadRequest");
    }
}

// ---------------------------------------------------------------------------------------------
// Groups and members
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn groups_list_every_kind_with_its_mail_and_group_types_and_pages() {
    let (fake, _, token) = start(Tenant::generate(100, 23, 4)).await;
    let select = "id,displayName,description,mail,mailEnabled,mailNickname,securityEnabled,groupTypes,membershipRule,onPremisesSyncEnabled,createdDateTime";
    let (groups, pages) = follow(&fake, &token, &format!("/v1.0/groups?$top=10&$select={select}"), &[]).await;
    assert_eq!(groups.len(), 23);
    assert_eq!(pages.len(), 3);
    let kind = |g: &Value| {
        (
            g["groupTypes"].clone(),
            g["mailEnabled"].as_bool().unwrap(),
            g["securityEnabled"].as_bool().unwrap(),
        )
    };
    let security: Vec<&Value> = groups.iter().filter(|g| kind(g) == (json!([]), false, true)).collect();
    assert!(
        !security.is_empty() && security.iter().all(|g| g["mail"].is_null()),
        "security groups have no mail"
    );
    let mail_security = groups.iter().filter(|g| kind(g) == (json!([]), true, true)).count();
    let distribution: Vec<&Value> = groups.iter().filter(|g| kind(g) == (json!([]), true, false)).collect();
    let unified: Vec<&Value> = groups.iter().filter(|g| kind(g).0 == json!(["Unified"])).collect();
    let dynamic: Vec<&Value> = groups.iter().filter(|g| kind(g).0 == json!(["DynamicMembership"])).collect();
    assert!(mail_security > 0 && !distribution.is_empty() && !unified.is_empty() && !dynamic.is_empty());
    assert!(unified.iter().chain(&distribution).all(|g| g["mail"].as_str().is_some_and(|m| m.contains('@'))));
    assert!(dynamic.iter().all(|g| g["membershipRule"].as_str().is_some_and(|r| r.contains("-eq"))));
    let domains: HashSet<&str> =
        groups.iter().filter_map(|g| g["mail"].as_str()).map(|m| m.split('@').nth(1).unwrap()).collect();
    assert!(domains.contains("eu.fjord.example") && domains.contains("fjord.example"), "{domains:?}");
    let one = get(&fake, &token, &format!("/v1.0/groups/{}", groups[0]["id"].as_str().unwrap()), &[]).await;
    assert_eq!(one.body["displayName"], groups[0]["displayName"]);
    get(&fake, &token, "/v1.0/groups/nosuch", &[]).await.assert_graph_error(404, "Request_ResourceNotFound");
}

#[tokio::test]
async fn members_are_direct_and_mixed_and_transitive_members_flatten_nested_groups() {
    let mut tenant = Tenant::empty();
    let users: Vec<GraphUser> = (0..5).map(|n| user(&format!("member{n}@fjord.example"))).collect();
    let (mut outer, mut middle, mut inner) = (
        GraphGroup::security("sg-outer"),
        GraphGroup::security("sg-middle"),
        GraphGroup::security("sg-inner"),
    );
    outer.id = "00000000-0000-4000-8000-00000000000a".into();
    middle.id = "00000000-0000-4000-8000-00000000000b".into();
    inner.id = "00000000-0000-4000-8000-00000000000c".into();
    let kiosk = GraphDevice::new("KIOSK-07");
    for u in &users {
        tenant.add_user(u.clone());
    }
    for g in [&outer, &middle, &inner] {
        tenant.add_group(g.clone());
    }
    tenant.add_device(kiosk.clone());
    tenant.add_member(&outer.id, &users[0].id);
    tenant.add_member(&outer.id, &middle.id);
    tenant.add_member(&outer.id, &kiosk.id);
    tenant.add_member(&middle.id, &users[1].id);
    tenant.add_member(&middle.id, &users[2].id);
    tenant.add_member(&middle.id, &inner.id);
    tenant.add_member(&inner.id, &users[3].id);
    // users[1] also directly in inner: transitive lists it once.
    tenant.add_member(&inner.id, &users[1].id);
    let (fake, _, token) = start(tenant).await;

    let direct = get(
        &fake,
        &token,
        &format!("/v1.0/groups/{}/members?$select=id,userPrincipalName,displayName", outer.id),
        &[],
    )
    .await;
    assert_eq!(direct.status, 200, "{}", direct.body);
    let by_type: BTreeMap<String, Value> =
        direct.value().iter().map(|m| (m["@odata.type"].as_str().unwrap().to_string(), m.clone())).collect();
    assert_eq!(by_type.len(), 3, "{}", direct.body);
    assert_eq!(by_type["#microsoft.graph.user"]["userPrincipalName"], "member0@fjord.example");
    assert_eq!(
        by_type["#microsoft.graph.group"],
        json!({ "@odata.type": "#microsoft.graph.group", "id": middle.id, "userPrincipalName": null, "displayName": "sg-middle" })
    );
    // Without Device.Read.All a device comes with its type and id only (§1.3).
    assert_eq!(
        by_type["#microsoft.graph.device"],
        json!({ "@odata.type": "#microsoft.graph.device", "id": kiosk.id, "displayName": null })
    );
    let directory = fake.register_app(AppRegistration::new(&[DIRECTORY_READ_ALL]));
    let directory_token = app_token(&fake, &directory).await;
    let readable = get(
        &fake,
        &directory_token,
        &format!(
            "/v1.0/groups/{}/members/microsoft.graph.device?$select=id,userPrincipalName,displayName",
            outer.id
        ),
        &[],
    )
    .await;
    assert_eq!(
        readable.body["value"],
        json!([{ "@odata.type": "#microsoft.graph.device", "id": kiosk.id, "displayName": "KIOSK-07" }])
    );

    let cast = get(
        &fake,
        &token,
        &format!("/v1.0/groups/{}/members/microsoft.graph.user?$select=id", outer.id),
        &[],
    )
    .await;
    assert_eq!(cast.ids(), vec![users[0].id.clone()]);
    let mut everyone: Vec<String> = vec![
        users[0].id.clone(),
        middle.id.clone(),
        kiosk.id.clone(),
        users[1].id.clone(),
        users[2].id.clone(),
        inner.id.clone(),
        users[3].id.clone(),
    ];
    everyone.sort();
    let transitive =
        get(&fake, &token, &format!("/v1.0/groups/{}/transitiveMembers?$select=id", outer.id), &[]).await;
    assert_eq!(transitive.ids(), everyone, "nested groups and their members, each once");
    let (transitive_users, pages) = follow(
        &fake,
        &token,
        &format!("/v1.0/groups/{}/transitiveMembers/microsoft.graph.user?$select=id&$top=2", outer.id),
        &[],
    )
    .await;
    let mut expected: Vec<String> = users[..4].iter().map(|u| u.id.clone()).collect();
    expected.sort();
    assert_eq!(ids(&transitive_users), expected);
    assert_eq!(pages.len(), 2);
    assert!(pages[0].next_link().unwrap().contains("/transitiveMembers/microsoft.graph.user?"));
    assert_eq!(fake.read(|t| t.transitive_user_ids(&outer.id)).into_iter().collect::<Vec<_>>(), expected);

    let (paged, pages) =
        follow(&fake, &token, &format!("/v1.0/groups/{}/members?$top=1", middle.id), &[]).await;
    assert_eq!(paged.len(), 3);
    assert_eq!(pages.len(), 3);
    get(&fake, &token, &format!("/v1.0/groups/{}/members/microsoft.graph.application", outer.id), &[])
        .await
        .assert_graph_error(400, "Request_UnsupportedQuery");
    let contacts =
        get(&fake, &token, &format!("/v1.0/groups/{}/members/microsoft.graph.orgContact", outer.id), &[])
            .await;
    assert_eq!(contacts.value().len(), 0);
    get(&fake, &token, &format!("/v1.0/groups/{}/members", uuid::Uuid::new_v4()), &[])
        .await
        .assert_graph_error(404, "Request_ResourceNotFound");
    get(&fake, &token, &format!("/v1.0/groups/{}/owners", outer.id), &[])
        .await
        .assert_graph_error(400, "Request_BadRequest");
    let costs: Vec<String> = [
        format!("/v1.0/groups/{}/members", outer.id),
        format!("/v1.0/groups/{}/transitiveMembers", outer.id),
        "/v1.0/users".to_string(),
        "/v1.0/users?$select=id".to_string(),
        "/v1.0/users?$top=5".to_string(),
        "/v1.0/groups".to_string(),
    ]
    .iter()
    .map(|p| p.to_string())
    .collect();
    let mut units = Vec::new();
    for path in &costs {
        units.push(get(&fake, &token, path, &[]).await.header("x-ms-resource-unit").unwrap().to_string());
    }
    assert_eq!(units, vec!["3", "5", "2", "1", "1", "1"], "resource units per request (§6)");
}

// ---------------------------------------------------------------------------------------------
// Delta
// ---------------------------------------------------------------------------------------------

/// Runs a delta round from `url` to its deltaLink; returns the items and the deltaLink.
async fn delta_round(
    fake: &FakeGraph,
    token: &str,
    url: &str,
    headers: &[(&str, &str)],
) -> (Vec<Value>, String, usize) {
    let (items, pages) = follow(fake, token, url, headers).await;
    let last = pages.last().unwrap();
    for page in &pages[..pages.len() - 1] {
        assert!(page.delta_link().is_none() && page.next_link().unwrap().contains("/delta?$skiptoken="));
    }
    let delta_link = last.delta_link().expect("the last page has a deltaLink");
    assert!(
        delta_link.starts_with(&format!("{}/v1.0/", fake.base_url()))
            && delta_link.contains("/delta?$deltatoken=")
    );
    (items, delta_link, pages.len())
}

#[tokio::test]
async fn users_delta_pages_an_initial_round_then_reports_only_changes_with_removed_reasons() {
    let (fake, _, token) = start(Tenant::generate(450, 5, 6)).await;
    let select = "/v1.0/users/delta?$select=id,userPrincipalName,displayName,department,mobilePhone,accountEnabled,manager";
    let (initial, delta_link, pages) = delta_round(&fake, &token, select, &[]).await;
    assert_eq!(pages, 3, "200 per page");
    assert_eq!(ids(&initial), fake.read(|t| t.users.keys().cloned().collect::<Vec<_>>()));
    assert!(initial.iter().all(|u| u.get("@removed").is_none()));
    let with_manager = fake.read(|t| {
        t.users.values().find(|u| u.manager_id.is_some() && u.mobile_phone.is_some()).unwrap().clone()
    });
    let item = initial.iter().find(|u| u["id"] == with_manager.id).unwrap();
    assert_eq!(
        item["manager@delta"],
        json!([{ "@odata.type": "#microsoft.graph.user", "id": with_manager.manager_id.clone().unwrap() }])
    );
    let guest = initial.iter().find(|u| u["userPrincipalName"].as_str().unwrap().contains("#EXT#")).unwrap();
    assert!(guest.get("department").is_none(), "never-set properties are omitted in delta: {guest}");

    let (nothing, same_link, _) = delta_round(&fake, &token, &delta_link, &[]).await;
    assert!(nothing.is_empty(), "no change, no items: {nothing:?}");

    let ids_now: Vec<String> = fake.read(|t| {
        t.users
            .values()
            .filter(|u| u.id != with_manager.id && u.account_enabled)
            .map(|u| u.id.clone())
            .take(4)
            .collect()
    });
    let (moved, cleared, disabled, soft, hard) =
        (&ids_now[0], &with_manager.id, &ids_now[1], &ids_now[2], &ids_now[3]);
    let added = user("new.hire@fjord.example");
    fake.change(|t| {
        t.update_user(moved, |u| u.department = Some("Treasury".into()));
        t.update_user(cleared, |u| u.mobile_phone = None);
        t.set_manager(cleared, None);
        t.disable_user(disabled);
        t.soft_delete_user(soft);
        t.hard_delete_user(hard);
        t.add_user(added.clone());
    });
    let (changes, next_link, _) = delta_round(&fake, &token, &same_link, &[]).await;
    let by_id: BTreeMap<String, Value> =
        changes.iter().map(|u| (u["id"].as_str().unwrap().to_string(), u.clone())).collect();
    let mut expected: Vec<&String> = vec![moved, cleared, disabled, soft, hard, &added.id];
    expected.sort();
    assert_eq!(by_id.keys().collect::<Vec<_>>(), expected);
    assert_eq!(by_id[moved]["department"], "Treasury");
    assert!(
        by_id[moved]["userPrincipalName"].is_string(),
        "unchanged selected properties come too by default"
    );
    assert_eq!(by_id[cleared]["mobilePhone"], Value::Null, "a cleared property is an explicit null");
    assert_eq!(by_id[cleared]["manager@delta"][0]["@removed"], json!({ "reason": "deleted" }));
    assert_eq!(by_id[disabled]["accountEnabled"], false);
    assert_eq!(by_id[soft], json!({ "id": soft, "@removed": { "reason": "changed" } }));
    assert_eq!(by_id[hard], json!({ "id": hard, "@removed": { "reason": "deleted" } }));
    assert_eq!(by_id[&added.id]["userPrincipalName"], "new.hire@fjord.example");

    fake.change(|t| {
        t.update_user(moved, |u| u.department = Some("Controlling".into()));
        t.restore_user(soft);
    });
    let minimal = [("Prefer", "return=minimal")];
    let (minimal_changes, _, _) = delta_round(&fake, &token, &next_link, &minimal).await;
    let by_id: BTreeMap<String, Value> =
        minimal_changes.iter().map(|u| (u["id"].as_str().unwrap().to_string(), u.clone())).collect();
    assert_eq!(
        by_id[moved],
        json!({ "id": moved, "department": "Controlling" }),
        "return=minimal: only what changed"
    );
    assert!(
        by_id[soft].get("@removed").is_none() && by_id[soft]["userPrincipalName"].is_string(),
        "restored: {}",
        by_id[soft]
    );

    let latest = get(&fake, &token, "/v1.0/users/delta?$deltatoken=latest&$select=id,department", &[]).await;
    assert_eq!(latest.value().len(), 0);
    let from_now = latest.delta_link().unwrap();
    fake.change(|t| t.update_user(moved, |u| u.department = Some("Audit".into())));
    let (after_latest, _, _) = delta_round(&fake, &token, &from_now, &[]).await;
    assert_eq!(after_latest, vec![json!({ "id": moved, "department": "Audit" })]);

    let one = format!(
        "/v1.0/users/delta?$select=id&$filter={}",
        escape(&format!("id eq '{moved}' or id eq '{disabled}'"))
    );
    let (filtered, _, _) = delta_round(&fake, &token, &one, &[]).await;
    assert_eq!(filtered.len(), 2);
    get(&fake, &token, &format!("/v1.0/users/delta?$filter={}", escape("accountEnabled eq true")), &[])
        .await
        .assert_graph_error(400, "Request_UnsupportedQuery");
    get(&fake, &token, "/v1.0/users/delta?$top=10", &[])
        .await
        .assert_graph_error(400, "Request_UnsupportedQuery");
    get(&fake, &token, "/v1.0/users/delta?$expand=manager", &[])
        .await
        .assert_graph_error(400, "Request_UnsupportedQuery");
    let token_part = same_link.split("$deltatoken=").nth(1).unwrap();
    let without_dollar = get(&fake, &token, &format!("/v1.0/users/delta?deltatoken={token_part}"), &[]).await;
    assert_eq!(
        without_dollar.assert_graph_error(400, "Request_BadRequest"),
        "Unrecognized query argument specified: 'deltatoken'."
    );
}

#[tokio::test]
async fn delta_knobs_replay_objects_add_empty_pages_and_report_removed_objects_initially() {
    let (fake, _, token) = start(Tenant::generate(30, 2, 2)).await;
    let gone = fake.change(|t| {
        t.paging.delta_page_size = 10;
        t.paging.empty_first_delta_page = true;
        t.paging.replay_last_delta_object = true;
        t.paging.removed_in_initial_round = true;
        let id = t.users.keys().nth(5).unwrap().clone();
        t.hard_delete_user(&id);
        id
    });
    let (items, _, pages) = delta_round(&fake, &token, "/v1.0/users/delta?$select=id", &[]).await;
    let first = get(&fake, &token, "/v1.0/users/delta?$select=id", &[]).await;
    assert!(first.value().is_empty() && first.next_link().is_some(), "an empty page that goes on");
    let unique: BTreeSet<String> = ids(&items).into_iter().collect();
    assert_eq!(unique.len(), 30, "29 users and one removed");
    assert!(items.len() > 30, "some objects replayed");
    assert!(pages >= 5);
    assert!(items.iter().any(|u| u == &json!({ "id": gone, "@removed": { "reason": "deleted" } })));
}

#[tokio::test]
async fn groups_delta_splits_big_memberships_across_pages_and_reports_member_changes() {
    let mut tenant = Tenant::empty();
    tenant.paging.delta_members_per_page = 10;
    let people: Vec<GraphUser> = (0..30).map(|n| user(&format!("p{n:02}@fjord.example"))).collect();
    for p in &people {
        tenant.add_user(p.clone());
    }
    let big = GraphGroup::microsoft_365("Team All", "all@fjord.example");
    let small = GraphGroup::security("sg-small");
    let empty = GraphGroup::distribution("dl-empty", "empty@fjord.example");
    let nested = GraphGroup::security("sg-nested");
    for g in [&big, &small, &empty, &nested] {
        tenant.add_group(g.clone());
    }
    for p in &people[..25] {
        tenant.add_member(&big.id, &p.id);
    }
    tenant.add_member(&small.id, &people[25].id);
    tenant.add_member(&small.id, &nested.id);
    tenant.add_member(&nested.id, &people[26].id);
    let (fake, _, token) = start(tenant).await;

    let (items, link, pages) =
        delta_round(&fake, &token, "/v1.0/groups/delta?$select=id,displayName,mail,groupTypes,members", &[])
            .await;
    assert!(pages >= 3, "the big group spans pages");
    let mut members: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut appearances: BTreeMap<String, usize> = BTreeMap::new();
    for item in &items {
        let id = item["id"].as_str().unwrap().to_string();
        *appearances.entry(id.clone()).or_default() += 1;
        assert!(item["displayName"].is_string(), "each chunk repeats the group object: {item}");
        for m in item["members@delta"].as_array().into_iter().flatten() {
            assert!(m.get("@removed").is_none());
            members.entry(id.clone()).or_default().insert(m["id"].as_str().unwrap().to_string());
        }
        assert!(item["members@delta"].as_array().is_none_or(|m| m.len() <= 10));
    }
    assert_eq!(appearances[&big.id], 3, "25 members in chunks of 10");
    assert_eq!(members[&big.id], people[..25].iter().map(|p| p.id.clone()).collect());
    assert_eq!(members[&small.id], BTreeSet::from([people[25].id.clone(), nested.id.clone()]));
    let empty_item = items.iter().find(|i| i["id"] == empty.id).unwrap();
    assert!(empty_item.get("members@delta").is_none(), "no members, no key");
    assert!(items.iter().find(|i| i["id"] == small.id).unwrap()["members@delta"]
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m["@odata.type"] == "#microsoft.graph.group"));

    fake.change(|t| {
        t.add_member(&small.id, &people[27].id);
        t.remove_member(&big.id, &people[0].id);
        t.rename_group(&empty.id, "dl-renamed");
        t.add_member(&nested.id, &people[28].id);
        t.hard_delete_user(&people[1].id);
    });
    let (changes, link, _) = delta_round(&fake, &token, &link, &[]).await;
    let by_id: BTreeMap<String, Value> =
        changes.iter().map(|g| (g["id"].as_str().unwrap().to_string(), g.clone())).collect();
    let big_changes: BTreeMap<String, Value> = by_id[&big.id]["members@delta"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["id"].as_str().unwrap().to_string(), m.clone()))
        .collect();
    assert_eq!(big_changes.len(), 2);
    assert_eq!(big_changes[&people[0].id]["@removed"], json!({ "reason": "deleted" }));
    assert_eq!(
        big_changes[&people[1].id]["@removed"],
        json!({ "reason": "deleted" }),
        "a deleted member leaves its groups"
    );
    assert_eq!(
        by_id[&small.id]["members@delta"],
        json!([{ "@odata.type": "#microsoft.graph.user", "id": people[27].id }])
    );
    assert_eq!(by_id[&empty.id]["displayName"], "dl-renamed");
    assert!(by_id[&empty.id].get("members@delta").is_none());
    assert!(by_id.contains_key(&nested.id), "the nested group itself changed");
    assert_eq!(by_id.len(), 4, "the parent of a changed nested group is not reported: {:?}", by_id.keys());

    fake.change(|t| t.delete_group(&nested.id));
    let (removed, _, _) = delta_round(&fake, &token, &link, &[]).await;
    let by_id: BTreeMap<String, Value> =
        removed.iter().map(|g| (g["id"].as_str().unwrap().to_string(), g.clone())).collect();
    assert_eq!(by_id[&nested.id], json!({ "id": nested.id, "@removed": { "reason": "deleted" } }));
    assert_eq!(by_id[&small.id]["members@delta"][0]["@removed"], json!({ "reason": "deleted" }));

    let without_members = get(&fake, &token, "/v1.0/groups/delta?$select=id,displayName", &[]).await;
    assert!(without_members.value().iter().all(|g| g.get("members@delta").is_none()));
    let default = get(&fake, &token, "/v1.0/groups/delta", &[]).await;
    assert!(default.value().iter().any(|g| g.get("members@delta").is_some()), "members come by default");
}

#[tokio::test]
async fn expired_or_reset_delta_tokens_answer_as_graph_does() {
    let (fake, _, token) = start(Tenant::generate(20, 3, 5)).await;
    fake.change(|t| t.paging.delta_page_size = 5);
    let first = get(&fake, &token, "/v1.0/users/delta?$select=id,displayName", &[]).await;
    let skip_link = first.next_link().unwrap();
    let (_, delta_link, _) =
        delta_round(&fake, &token, "/v1.0/users/delta?$select=id,displayName", &[]).await;

    fake.expire_delta_tokens(ExpiredDelta::SyncStateNotFound);
    let expired = get(&fake, &token, &delta_link, &[]).await;
    assert_eq!(
        expired.assert_graph_error(400, "syncStateNotFound"),
        "The sync state generation is not found. The delta token is expired and data must be synchronized again."
    );
    get(&fake, &token, &skip_link, &[]).await.assert_graph_error(400, "syncStateNotFound");

    let (_, delta_link, _) =
        delta_round(&fake, &token, "/v1.0/users/delta?$select=id,displayName", &[]).await;
    fake.expire_delta_tokens(ExpiredDelta::ResyncRequired);
    get(&fake, &token, &delta_link, &[]).await.assert_graph_error(400, "resyncRequired");

    let (_, delta_link, _) =
        delta_round(&fake, &token, "/v1.0/users/delta?$select=id,displayName", &[]).await;
    fake.expire_delta_tokens(ExpiredDelta::Gone);
    let gone = get(&fake, &token, &delta_link, &[]).await;
    gone.assert_graph_error(410, "resyncRequired");
    let location = gone.header("location").unwrap().to_string();
    assert!(location.ends_with("$deltatoken="), "{location}");
    let (again, _, _) = delta_round(&fake, &token, &location, &[]).await;
    assert_eq!(again.len(), 20, "the Location starts the initial round again");
    assert!(
        again.iter().all(|u| u.as_object().unwrap().keys().all(|k| k == "id" || k == "displayName")),
        "with the same $select"
    );

    fake.fail_next("/v1.0/groups/delta", 1, Failure::SyncStateNotFound);
    get(&fake, &token, "/v1.0/groups/delta", &[]).await.assert_graph_error(400, "syncStateNotFound");
    fake.fail_next("/v1.0/groups/delta", 1, Failure::DeltaGone);
    let injected = get(&fake, &token, "/v1.0/groups/delta", &[]).await;
    injected.assert_graph_error(410, "resyncRequired");
    assert!(injected.header("location").unwrap().contains("/v1.0/groups/delta?"));
    assert_eq!(get(&fake, &token, "/v1.0/groups/delta", &[]).await.status, 200);
    get(&fake, &token, "/v1.0/users/delta?$deltatoken=forged", &[])
        .await
        .assert_graph_error(400, "Request_BadRequest");
}

// ---------------------------------------------------------------------------------------------
// Throttling and injected failures
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn spending_the_resource_unit_budget_gets_429_with_retry_after_per_app() {
    let mut tenant = Tenant::generate(10, 2, 1);
    tenant.throttle.resource_units = Some(10);
    tenant.throttle.retry_after_secs = Some(1);
    let (fake, app, token) = start(tenant).await;
    let mut statuses = Vec::new();
    let mut percentages = Vec::new();
    for _ in 0..6 {
        // /users costs 2 RU: 5 fit in 10.
        let got = get(
            &fake,
            &token,
            "/v1.0/users",
            &[("client-request-id", "1f0c9d1e-2b3a-4c5d-8e6f-7a8b9c0d1e2f")],
        )
        .await;
        assert_eq!(got.header("x-ms-resource-unit"), Some("2"));
        assert_eq!(got.header("client-request-id"), Some("1f0c9d1e-2b3a-4c5d-8e6f-7a8b9c0d1e2f"), "echoed");
        assert!(got.header("request-id").is_some());
        percentages.push(got.header("x-ms-throttle-limit-percentage").map(str::to_string));
        statuses.push(got.status);
        if got.status == 429 {
            let message = got.assert_graph_error(429, "TooManyRequests");
            assert!(message.contains(&app.client_id), "{message}");
            assert_eq!(got.header("retry-after"), Some("1"));
            assert_eq!(
                got.header("x-ms-throttle-scope"),
                Some(format!("Tenant_Application/Read/{}/{}", app.client_id, fake.tenant_id()).as_str())
            );
            assert_eq!(got.header("x-ms-throttle-information"), Some("ResourceUnitLimitExceeded"));
            assert_eq!(
                got.body["error"]["innerError"]["client-request-id"],
                "1f0c9d1e-2b3a-4c5d-8e6f-7a8b9c0d1e2f"
            );
        }
    }
    assert_eq!(statuses, vec![200, 200, 200, 200, 200, 429]);
    assert_eq!(percentages[..4], [None, None, None, None], "{percentages:?}");
    assert_eq!(percentages[4].as_deref(), Some("1.0"), "above 80 %: {percentages:?}");

    let other = fake.register_app(AppRegistration::new(&IMPORTER_PERMISSIONS));
    let other_token = app_token(&fake, &other).await;
    assert_eq!(get(&fake, &other_token, "/v1.0/users", &[]).await.status, 200, "each app has its own budget");
    assert_eq!(
        get(&fake, &token, "/v1.0/users?$select=id", &[]).await.status,
        429,
        "throttled requests count"
    );
    fake.reset_throttling();
    assert_eq!(get(&fake, &token, "/v1.0/users", &[]).await.status, 200, "a new window");

    fake.change(|t| {
        t.throttle.retry_after_secs = None;
        t.throttle.resource_units = Some(1);
    });
    fake.reset_throttling();
    get(&fake, &token, "/v1.0/groups", &[]).await;
    let window = get(&fake, &token, "/v1.0/groups", &[]).await;
    let seconds: u64 = window.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=10).contains(&seconds), "the rest of the 10 s window: {seconds}");
}

#[tokio::test]
async fn injected_failures_come_in_order_and_every_request_is_recorded() {
    let (fake, app, token) = start(Tenant::generate(5, 2, 1)).await;
    let cases: Vec<(Failure, u16, &str, Option<&str>)> = vec![
        (Failure::Throttled { retry_after_secs: Some(1) }, 429, "TooManyRequests", Some("1")),
        (Failure::Throttled { retry_after_secs: None }, 429, "TooManyRequests", None),
        (Failure::Unavailable { retry_after_secs: Some(1) }, 503, "serviceNotAvailable", Some("1")),
        (Failure::Unavailable { retry_after_secs: None }, 503, "serviceNotAvailable", None),
        (Failure::GatewayTimeout { retry_after_secs: Some(1) }, 504, "UnknownError", Some("1")),
        (Failure::TokenExpired, 401, "InvalidAuthenticationToken", None),
        (Failure::Forbidden, 403, "Authorization_RequestDenied", None),
    ];
    for (failure, status, code, retry_after) in &cases {
        fake.fail_next("/v1.0/users", 1, *failure);
        let got = get(&fake, &token, "/v1.0/users?$top=2", &[]).await;
        got.assert_graph_error(*status, code);
        assert_eq!(got.header("retry-after"), *retry_after, "{failure:?}");
        if *status == 429 {
            assert!(got.header("x-ms-throttle-scope").unwrap().contains(&app.client_id));
        }
        assert_eq!(get(&fake, &token, "/v1.0/users?$top=2", &[]).await.status, 200, "only one request fails");
    }
    fake.fail_next("/v1.0/groups", 2, Failure::Unavailable { retry_after_secs: None });
    assert_eq!(get(&fake, &token, "/v1.0/users", &[]).await.status, 200, "another path is not affected");
    assert_eq!(get(&fake, &token, "/v1.0/groups", &[]).await.status, 503);
    assert_eq!(
        get(&fake, &token, "/v1.0/groups?$top=5", &[("ConsistencyLevel", "eventual")]).await.status,
        503
    );
    assert_eq!(get(&fake, &token, "/v1.0/groups", &[]).await.status, 200);
    fake.fail_next(
        &format!("/{}/oauth2", fake.tenant_id()),
        1,
        Failure::Unavailable { retry_after_secs: None },
    );
    assert_eq!(
        token_request(&fake, &[("grant_type", "client_credentials"), ("client_id", &app.client_id)])
            .await
            .status,
        503,
        "the token endpoint can fail too"
    );

    let requests = fake.requests();
    assert_eq!(requests[0].method, "POST");
    assert_eq!(requests[0].form_field("client_id"), Some(app.client_id.as_str()));
    let graph: Vec<_> = requests.iter().filter(|r| r.path().starts_with("/v1.0/")).collect();
    assert_eq!(graph.len(), 2 * cases.len() + 4);
    assert_eq!(graph[0].path_and_query, "/v1.0/users?$top=2");
    assert_eq!(graph[0].query("$top").as_deref(), Some("2"));
    assert_eq!(graph[0].status, 429);
    assert_eq!(graph[1].status, 200);
    assert!(graph.iter().all(|r| r.authorization == Some(format!("Bearer {token}"))));
    let eventual = graph.iter().find(|r| r.path_and_query == "/v1.0/groups?$top=5").unwrap();
    assert_eq!(eventual.consistency_level.as_deref(), Some("eventual"));
    assert!(graph.windows(2).all(|w| w[0].received <= w[1].received));
    fake.clear_requests();
    assert!(fake.requests().is_empty());
}

// ---------------------------------------------------------------------------------------------
// Delegated sign-in
// ---------------------------------------------------------------------------------------------

const REDIRECT_URI: &str = "https://scimd.example/admin/entra/callback";

/// The authorize redirect for `scope`: Location's query pairs.
async fn authorize(fake: &FakeGraph, client_id: &str, scope: &str, challenge: &str) -> Got {
    let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let query = [
        ("client_id", client_id),
        ("response_type", "code"),
        ("redirect_uri", REDIRECT_URI),
        ("response_mode", "query"),
        ("state", "csrf-123"),
        ("code_challenge", challenge),
        ("code_challenge_method", "S256"),
        ("scope", scope),
    ];
    send(client.get(fake.authorize_url()).query(&query)).await
}

fn location_pairs(got: &Got) -> BTreeMap<String, String> {
    assert_eq!(got.status, 302, "{}", got.body);
    let location = got.header("location").unwrap();
    assert!(location.starts_with(&format!("{REDIRECT_URI}?")), "{location}");
    url::Url::parse(location).unwrap().query_pairs().into_owned().collect()
}

#[tokio::test]
async fn delegated_sign_in_redirects_with_a_code_and_refresh_tokens_rotate_until_revoked() {
    let (tenant, _) = small_tenant();
    let fake = FakeGraph::start(tenant);
    let app =
        fake.register_app(AppRegistration::new(&[]).with_delegated(&IMPORTER_PERMISSIONS, REDIRECT_URI));
    let (id, secret) = (app.client_id.clone(), app.secret());
    let verifier = "a-code-verifier-of-enough-length-0123456789-abcdefghijkl";
    let challenge = base64::Engine::encode(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        Sha256::digest(verifier.as_bytes()),
    );
    let scope = "offline_access User.Read.All GroupMember.Read.All";

    let redirect = location_pairs(&authorize(&fake, &id, scope, &challenge).await);
    assert_eq!(redirect["state"], "csrf-123");
    let code = redirect["code"].clone();
    let redeem = |code: String, verifier: &'static str| {
        let (id, secret) = (id.clone(), secret.clone());
        let fake = &fake;
        async move {
            token_request(
                fake,
                &[
                    ("grant_type", "authorization_code"),
                    ("client_id", &id),
                    ("client_secret", &secret),
                    ("code", &code),
                    ("redirect_uri", REDIRECT_URI),
                    ("code_verifier", verifier),
                ],
            )
            .await
        }
    };
    redeem(code.clone(), "not-the-verifier").await.assert_aad_error(400, "invalid_grant", 501481);
    let tokens = redeem(code.clone(), verifier).await;
    assert_eq!(tokens.status, 200, "{}", tokens.body);
    for key in ["access_token", "refresh_token", "expires_in", "scope", "token_type"] {
        assert!(tokens.body.get(key).is_some(), "{key} missing: {}", tokens.body);
    }
    assert!(tokens.body["scope"].as_str().unwrap().contains("User.Read.All"));
    redeem(code, verifier).await.assert_aad_error(400, "invalid_grant", 54005);
    let access = tokens.body["access_token"].as_str().unwrap();
    assert_eq!(get(&fake, access, "/v1.0/users", &[]).await.status, 200, "delegated token reads users");
    assert_eq!(get(&fake, access, "/v1.0/groups/delta", &[]).await.status, 200);

    let refresh = |refresh_token: String| {
        let (id, secret) = (id.clone(), secret.clone());
        let fake = &fake;
        async move {
            token_request(
                fake,
                &[
                    ("grant_type", "refresh_token"),
                    ("client_id", &id),
                    ("client_secret", &secret),
                    ("refresh_token", &refresh_token),
                    ("scope", scope),
                ],
            )
            .await
        }
    };
    let first = tokens.body["refresh_token"].as_str().unwrap().to_string();
    let rotated = refresh(first.clone()).await;
    assert_eq!(rotated.status, 200, "{}", rotated.body);
    let second = rotated.body["refresh_token"].as_str().unwrap().to_string();
    assert_ne!(second, first, "each use returns a new refresh token");
    assert_eq!(refresh(first.clone()).await.status, 200, "the old one is not revoked");
    refresh("0.AXkAforged".into()).await.assert_aad_error(400, "invalid_grant", 9002313);

    fake.revoke_sign_in_sessions();
    let revoked = refresh(second.clone()).await;
    assert!(revoked.assert_aad_error(400, "invalid_grant", 50173).contains("revoked"));
    refresh(first).await.assert_aad_error(400, "invalid_grant", 50173);

    let sign_in_again = || {
        let (fake, id, challenge) = (&fake, id.clone(), challenge.clone());
        async move { location_pairs(&authorize(fake, &id, scope, &challenge).await)["code"].clone() }
    };
    let code = sign_in_again().await;
    let fresh = redeem(code, verifier).await.body["refresh_token"].as_str().unwrap().to_string();
    assert_eq!(refresh(fresh.clone()).await.status, 200, "a new sign-in works after revocation");
    fake.fail_refresh(RefreshFailure::Inactive);
    refresh(fresh).await.assert_aad_error(400, "invalid_grant", 700082);
    let code = sign_in_again().await;
    let fresh = redeem(code, verifier).await.body["refresh_token"].as_str().unwrap().to_string();
    fake.fail_refresh(RefreshFailure::SignInFrequency);
    refresh(fresh).await.assert_aad_error(400, "invalid_grant", 70043);
    let code = sign_in_again().await;
    let fresh = redeem(code, verifier).await.body["refresh_token"].as_str().unwrap().to_string();
    fake.fail_refresh(RefreshFailure::MfaRequired);
    refresh(fresh.clone()).await.assert_aad_error(400, "invalid_grant", 50076);
    fake.clear_refresh_failure();
    assert_eq!(refresh(fresh.clone()).await.status, 200);
    fake.change_app(&id, |a| a.delegated_scopes = vec![USER_READ_ALL.into()]);
    let withdrawn = refresh(fresh).await;
    withdrawn.assert_aad_error(400, "invalid_grant", 65001);
    assert_eq!(withdrawn.body["suberror"], "consent_required");

    let not_consented = location_pairs(&authorize(&fake, &id, scope, &challenge).await);
    assert_eq!(not_consented["error"], "consent_required");
    assert!(not_consented["error_description"].starts_with("AADSTS65001:"));
    assert_eq!(not_consented["state"], "csrf-123");
    let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let wrong_redirect = send(client.get(fake.authorize_url()).query(&[
        ("client_id", id.as_str()),
        ("response_type", "code"),
        ("redirect_uri", "https://evil.example/callback"),
        ("scope", "offline_access User.Read.All"),
    ]))
    .await;
    assert_eq!(wrong_redirect.status, 400, "never redirects to an unregistered URI");
    assert!(wrong_redirect.body.as_str().unwrap().contains("AADSTS50011"));
}

// ---------------------------------------------------------------------------------------------
// The generator
// ---------------------------------------------------------------------------------------------

#[test]
fn generated_tenant_is_deterministic_and_shaped_like_a_workforce_tenant() {
    let started = Instant::now();
    let tenant = Tenant::generate(100_000, 2_000, 1);
    eprintln!("Tenant::generate(100_000, 2_000, 1) took {:?}", started.elapsed());
    assert!(tenant == Tenant::generate(100_000, 2_000, 1), "same seed, same tenant");
    assert!(Tenant::generate(500, 20, 1) != Tenant::generate(500, 20, 2), "another seed, another tenant");
    assert_eq!((tenant.users.len(), tenant.groups.len()), (100_000, 2_000));
    assert!(tenant.users.keys().chain(tenant.groups.keys()).all(|id| uuid::Uuid::parse_str(id).is_ok()));

    let upns: HashSet<String> = tenant.users.values().map(|u| u.user_principal_name.to_lowercase()).collect();
    assert_eq!(upns.len(), 100_000, "UPNs are unique");
    let domains: HashSet<&str> =
        tenant.users.values().map(|u| u.user_principal_name.rsplit('@').next().unwrap()).collect();
    for domain in [
        "fjord.example",
        "eu.fjord.example",
        "dev.eu.fjord.example",
        "fabrikam.example",
        "fjord.onmicrosoft.com",
    ] {
        assert!(domains.contains(domain), "no user under {domain}");
    }
    let guests: Vec<&GraphUser> = tenant.users.values().filter(|u| u.user_type == "Guest").collect();
    assert!(guests.len() > 1000 && guests.iter().all(|g| g.user_principal_name.contains("#EXT#@")));
    let disabled = tenant.users.values().filter(|u| !u.account_enabled).count();
    assert!((3_000..15_000).contains(&disabled), "{disabled}");
    assert!(
        tenant.users.values().any(|u| u.mail.is_none() && u.user_type == "Member"),
        "users without a mailbox"
    );
    let managed = tenant
        .users
        .values()
        .filter(|u| u.manager_id.as_ref().is_some_and(|m| m != &u.id && tenant.users.contains_key(m)))
        .count();
    assert!(managed > 70_000, "{managed}");
    assert!(tenant
        .users
        .values()
        .all(|u| u.manager_id.as_ref().is_none_or(|m| tenant.users.contains_key(m))));
    let members: Vec<&GraphUser> = tenant.users.values().filter(|u| u.user_type == "Member").collect();
    assert!(members.iter().all(|u| u.employee_id.is_some() && u.department.is_some() && u.city.is_some()));
    assert!(
        members.iter().any(|u| !u.business_phones.is_empty())
            && members.iter().any(|u| u.mobile_phone.is_some())
    );
    assert_eq!(tenant.extension_properties.len(), 2);
    assert!(tenant.users.values().filter(|u| !u.extensions.is_empty()).count() > 30_000);

    let groups: Vec<&GraphGroup> = tenant.groups.values().collect();
    let security =
        groups.iter().filter(|g| g.security_enabled && !g.mail_enabled && g.group_types.is_empty()).count();
    let unified = groups.iter().filter(|g| g.group_types == ["Unified"]).count();
    let dynamic = groups.iter().filter(|g| g.membership_rule.is_some()).count();
    let with_mail = groups.iter().filter(|g| g.mail.is_some()).count();
    assert!(security > 500 && unified > 400 && dynamic > 100 && with_mail > 600 && with_mail < 2_000);
    assert!(groups.iter().all(|g| g.mail.is_some() == g.mail_enabled));
    let nested: Vec<(&String, &String)> = tenant
        .members
        .iter()
        .flat_map(|(g, m)| m.iter().filter(|id| tenant.groups.contains_key(*id)).map(move |id| (g, id)))
        .collect();
    assert!(nested.len() > 100, "{}", nested.len());
    assert!(
        nested.iter().all(|(parent, _)| tenant.groups[*parent].group_types.is_empty()),
        "no groups inside M365 or dynamic groups"
    );
    assert!(
        tenant.members.values().flatten().any(|id| tenant.devices.contains_key(id)),
        "devices are members too"
    );
    let mut in_a_group: HashSet<&String> = HashSet::new();
    for ms in tenant.members.values() {
        in_a_group.extend(ms.iter());
    }
    assert!(tenant.users.keys().all(|u| in_a_group.contains(u)), "every user is in a group");

    let small = Tenant::generate(10, 4, 9);
    assert!(small.users.values().any(|u| u.user_type == "Guest"));
    assert!(small.users.values().any(|u| !u.account_enabled));
    let kinds: HashSet<(bool, bool, bool)> = small
        .groups
        .values()
        .map(|g| (g.group_types.contains(&"Unified".to_string()), g.mail_enabled, g.security_enabled))
        .collect();
    assert_eq!(kinds.len(), 4, "four groups, four kinds: {kinds:?}");
}

#[tokio::test]
async fn a_hundred_thousand_users_page_through_the_listing_and_the_delta_round() {
    let (fake, _, token) = start(Tenant::generate(100_000, 200, 2)).await;
    let (users, pages) =
        follow(&fake, &token, "/v1.0/users?$top=999&$select=id,userPrincipalName,accountEnabled", &[]).await;
    assert_eq!(users.len(), 100_000);
    assert_eq!(pages.len(), 101);
    let (delta, _, _) = delta_round(&fake, &token, "/v1.0/users/delta?$select=id,accountEnabled", &[]).await;
    assert_eq!(delta.len(), 100_000);
}

#[tokio::test]
async fn latency_holds_requests_and_the_most_in_flight_at_once_is_recorded() {
    let (fake, _, token) = start(Tenant::generate(5, 2, 1)).await;
    assert_eq!(fake.max_in_flight(), 1);
    fake.set_latency(std::time::Duration::from_millis(500));
    let (a, b, c) = tokio::join!(
        get(&fake, &token, "/v1.0/users", &[]),
        get(&fake, &token, "/v1.0/groups", &[]),
        get(&fake, &token, "/v1.0/users/delta", &[])
    );
    assert_eq!((a.status, b.status, c.status), (200, 200, 200));
    assert_eq!(fake.max_in_flight(), 3);
}
