//! The fake Okta org answers as okta-api.md says, over real HTTP: the importer's tests are only
//! as good as this fake.

use std::collections::{BTreeMap, HashSet};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::header::HeaderMap;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::support::fake_okta::{base64url, Failure, FakeOkta, Org, ServiceApp};

const CLIENT_ID: &str = "0oa1fakeSvcApp0scim697";
const KEY_ID: &str = "scimd-test-1";
const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// A response, read whole.
struct Got {
    status: u16,
    headers: HeaderMap,
    body: Value,
}

impl Got {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    fn links(&self) -> Vec<String> {
        self.headers.get_all("link").iter().map(|v| v.to_str().unwrap().to_string()).collect()
    }

    /// The `rel="next"` URL, if any.
    fn next(&self) -> Option<String> {
        self.links().iter().find(|l| l.ends_with("rel=\"next\"")).map(|l| {
            let start = l.find('<').unwrap() + 1;
            let end = l.find('>').unwrap();
            l[start..end].to_string()
        })
    }

    fn ids(&self) -> Vec<String> {
        let items = self.body.as_array().unwrap_or_else(|| panic!("not an array: {}", self.body));
        items.iter().map(|item| item["id"].as_str().unwrap().to_string()).collect()
    }

    fn rate(&self, which: &str) -> i64 {
        self.header(&format!("X-Rate-Limit-{which}")).unwrap().parse().unwrap()
    }

    /// Asserts an Okta error body (§6) with this status and code.
    fn assert_okta_error(&self, status: u16, code: &str) {
        assert_eq!(self.status, status, "{}", self.body);
        assert_eq!(self.body["errorCode"], code, "{}", self.body);
        assert_eq!(self.body["errorLink"], code);
        assert!(self.body["errorSummary"].as_str().is_some_and(|s| !s.is_empty()));
        assert!(self.body["errorId"].as_str().is_some_and(|s| s.starts_with("oae") && s.len() > 10));
        assert!(self.body["errorCauses"].is_array());
        assert_eq!(self.header("content-type"), Some("application/json"));
    }

    /// Asserts a token-endpoint error (§1.2).
    fn assert_oauth_error(&self, status: u16, error: &str, description: &str) {
        assert_eq!(self.status, status, "{}", self.body);
        assert_eq!(self.body, json!({ "error": error, "error_description": description }));
    }
}

async fn send(request: reqwest::RequestBuilder) -> Got {
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let text = response.text().await.unwrap();
    let body = if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap() };
    Got { status, headers, body }
}

fn ssws(fake: &FakeOkta, url: &str) -> reqwest::RequestBuilder {
    reqwest::Client::new().get(url).header("Authorization", format!("SSWS {}", fake.api_token()))
}

async fn get(fake: &FakeOkta, path_and_query: &str) -> Got {
    send(ssws(fake, &format!("{}{path_and_query}", fake.base_url()))).await
}

/// Follows `rel="next"` from `path_and_query` to the end; returns every item and every page.
async fn list_all(fake: &FakeOkta, path_and_query: &str) -> (Vec<Value>, Vec<Got>) {
    let mut url = format!("{}{path_and_query}", fake.base_url());
    let (mut items, mut pages) = (Vec::new(), Vec::new());
    loop {
        let page = send(ssws(fake, &url)).await;
        assert_eq!(page.status, 200, "{url}: {}", page.body);
        items.extend(page.body.as_array().unwrap().iter().cloned());
        let next = page.next();
        pages.push(page);
        match next {
            Some(next) => url = next,
            None => return (items, pages),
        }
        assert!(pages.len() < 10_000, "paging does not end");
    }
}

fn ids(items: &[Value]) -> Vec<String> {
    items.iter().map(|item| item["id"].as_str().unwrap().to_string()).collect()
}

fn escape(text: &str) -> String {
    percent_encoding::utf8_percent_encode(text, percent_encoding::NON_ALPHANUMERIC).to_string()
}

fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

#[tokio::test]
async fn bare_user_list_pages_by_link_to_the_end_with_limit_capped_and_omits_deprovisioned() {
    let fake = FakeOkta::start(Org::generate(450, 10, 7));
    let base = fake.base_url();
    let expected: Vec<String> = fake
        .read(|org| org.users.iter().filter(|u| u.status != "DEPROVISIONED").map(|u| u.id.clone()).collect());
    assert!(expected.len() < 450, "the org has deprovisioned users");

    let (items, pages) = list_all(&fake, "/api/v1/users?limit=1000").await;

    assert_eq!(ids(&items), expected, "every non-deprovisioned user once, in id order");
    assert_eq!(pages.len(), expected.len().div_ceil(200));
    assert_eq!(pages[0].links()[0], format!("<{base}/api/v1/users?limit=1000>; rel=\"self\""));
    for (i, page) in pages.iter().enumerate() {
        assert!(page.body.as_array().unwrap().len() <= 200);
        let links = page.links();
        assert!(links[0].ends_with("; rel=\"self\""), "{links:?}");
        if i + 1 < pages.len() {
            assert_eq!(links.len(), 2, "self and next as two headers");
            let next = page.next().unwrap();
            assert!(next.starts_with(&format!("{base}/api/v1/users?after=")), "{next}");
            assert!(next.ends_with("&limit=200"), "{next}");
        } else {
            assert_eq!(links.len(), 1, "the last page has no next: {links:?}");
        }
    }

    let user = &items[0];
    for key in [
        "id",
        "status",
        "created",
        "activated",
        "statusChanged",
        "lastLogin",
        "lastUpdated",
        "passwordChanged",
    ] {
        assert!(user.get(key).is_some(), "{key} missing from {user}");
    }
    assert!(user["type"]["id"].is_string());
    assert!(user["profile"]["login"].is_string());
    assert_eq!(user["credentials"]["provider"], json!({ "type": "OKTA", "name": "OKTA" }));
    assert_eq!(
        user["_links"]["self"]["href"],
        format!("{base}/api/v1/users/{}", user["id"].as_str().unwrap())
    );
    assert_eq!(pages[0].header("content-type"), Some("application/json"));
}

#[tokio::test]
async fn filter_and_search_include_deprovisioned_users_with_okta_case_rules() {
    let fake = FakeOkta::start(Org::generate(300, 10, 5));
    let deprovisioned: Vec<(String, String)> = fake.read(|org| {
        org.users
            .iter()
            .filter(|u| u.status == "DEPROVISIONED")
            .map(|u| (u.id.clone(), u.profile["login"].as_str().unwrap().to_string()))
            .collect()
    });
    assert!(deprovisioned.len() >= 2);
    let deprovisioned_ids: Vec<String> = deprovisioned.iter().map(|(id, _)| id.clone()).collect();

    let by_filter =
        list_all(&fake, &format!("/api/v1/users?filter={}", escape("status eq \"DEPROVISIONED\""))).await;
    assert_eq!(ids(&by_filter.0), deprovisioned_ids);
    let by_search =
        list_all(&fake, &format!("/api/v1/users?search={}", escape("status eq \"deprovisioned\""))).await;
    assert_eq!(ids(&by_search.0), deprovisioned_ids, "search values are case-insensitive");
    let lowercase =
        get(&fake, &format!("/api/v1/users?filter={}", escape("status eq \"deprovisioned\""))).await;
    assert_eq!(lowercase.status, 200);
    assert_eq!(lowercase.body, json!([]), "filter values are case-sensitive");

    let (first, second) = (&deprovisioned[0], &deprovisioned[1]);
    let by_login =
        get(&fake, &format!("/api/v1/users?filter={}", escape(&format!("profile.login eq \"{}\"", first.1))))
            .await;
    assert_eq!(by_login.ids(), vec![first.0.clone()]);
    let either = format!("(id eq \"{}\" or id eq \"{}\") and status eq \"DEPROVISIONED\"", first.0, second.0);
    let by_ids = get(&fake, &format!("/api/v1/users?filter={}", escape(&either))).await;
    assert_eq!(by_ids.ids(), vec![first.0.clone(), second.0.clone()]);

    let engineers: Vec<String> = fake.read(|org| {
        org.users
            .iter()
            .filter(|u| u.profile["department"] == "Engineering" && u.status == "ACTIVE")
            .map(|u| u.id.clone())
            .collect()
    });
    let search = escape("profile.department eq \"engineering\" and status eq \"active\"");
    let (found, _) = list_all(&fake, &format!("/api/v1/users?search={search}")).await;
    assert_eq!(ids(&found), engineers);

    // A filtered listing pages with its filter kept in the next link and sees everyone.
    let since = escape("lastUpdated gt \"2000-01-01T00:00:00.000Z\"");
    let (all, pages) = list_all(&fake, &format!("/api/v1/users?filter={since}&limit=120")).await;
    assert_eq!(all.len(), 300);
    assert_eq!(pages.len(), 3);
    let next = pages[0].next().unwrap();
    assert!(
        next.contains("&limit=120&filter=lastUpdated%20gt%20%222000-01-01T00%3A00%3A00.000Z%22"),
        "{next}"
    );
}

#[tokio::test]
async fn delta_filters_see_changes_made_between_runs_but_not_deletions() {
    let fake = FakeOkta::start(Org::generate(60, 6, 3));
    let (changed, joiner, group, before) = fake.read(|org| {
        let group = org.groups.iter().find(|g| g.group_type == "OKTA_GROUP").unwrap().id.clone();
        let joiner = org
            .users
            .iter()
            .find(|u| org.members.get(&group).is_none_or(|m| !m.contains(&u.id)))
            .unwrap()
            .id
            .clone();
        let changed = org.users.iter().find(|u| u.id != joiner && u.status == "ACTIVE").unwrap().id.clone();
        let latest_user = org.users.iter().map(|u| u.last_updated.clone()).max().unwrap();
        let latest_group = org.groups.iter().map(|g| g.last_membership_updated.clone()).max().unwrap();
        (changed, joiner, group, latest_user.max(latest_group))
    });
    fake.change(|org| {
        org.update_user(&changed, |u| {
            u.profile.insert("title".into(), "Chief Tester".into());
        });
        org.add_member(&group, &joiner);
    });

    let users =
        get(&fake, &format!("/api/v1/users?filter={}", escape(&format!("lastUpdated gt \"{before}\""))))
            .await;
    assert_eq!(users.ids(), vec![changed.clone()]);
    assert_eq!(users.body[0]["profile"]["title"], "Chief Tester");
    let groups = get(
        &fake,
        &format!("/api/v1/groups?filter={}", escape(&format!("lastMembershipUpdated gt \"{before}\""))),
    )
    .await;
    assert_eq!(groups.ids(), vec![group.clone()]);
    let profiles =
        get(&fake, &format!("/api/v1/groups?filter={}", escape(&format!("lastUpdated gt \"{before}\""))))
            .await;
    assert_eq!(profiles.body, json!([]), "a membership change leaves the group's lastUpdated alone");
    let (members, _) = list_all(&fake, &format!("/api/v1/groups/{group}/users?limit=200")).await;
    assert!(ids(&members).contains(&joiner));

    let after_change = fake.read(|org| org.find_user(&changed).unwrap().last_updated.clone());
    fake.change(|org| org.remove_user(&changed));
    let delta = get(
        &fake,
        &format!("/api/v1/users?filter={}", escape(&format!("lastUpdated ge \"{after_change}\""))),
    )
    .await;
    assert_eq!(delta.body, json!([]), "a deleted user does not show in a delta");
    let (everyone, _) = list_all(&fake, "/api/v1/users").await;
    assert!(!ids(&everyone).contains(&changed));
    let everyone_group =
        fake.read(|org| org.groups.iter().find(|g| g.group_type == "BUILT_IN").unwrap().id.clone());
    let (members, _) = list_all(&fake, &format!("/api/v1/groups/{everyone_group}/users")).await;
    assert_eq!(members.len(), 59, "a deleted user leaves every group");
}

#[tokio::test]
async fn malformed_expressions_cursors_and_limits_are_okta_errors() {
    let fake = FakeOkta::start(Org::generate(30, 4, 2));
    let cases: &[(&str, u16, &str)] = &[
        ("/api/v1/users?filter=status ne \"ACTIVE\"", 400, "E0000031"),
        ("/api/v1/users?filter=profile.city eq \"Oslo\"", 400, "E0000031"),
        ("/api/v1/users?filter=status eq ACTIVE", 400, "E0000031"),
        ("/api/v1/users?filter=Status eq \"ACTIVE\"", 400, "E0000031"),
        ("/api/v1/users?filter=lastUpdated gt \"yesterday\"", 400, "E0000031"),
        ("/api/v1/users?filter=(status eq \"ACTIVE\"", 400, "E0000031"),
        ("/api/v1/users?filter=status eq \"ACTIVE\" not", 400, "E0000031"),
        ("/api/v1/users?filter=", 400, "E0000031"),
        ("/api/v1/users?search=profile.city co \"Os\"", 400, "E0000031"),
        ("/api/v1/users?search=status ne \"ACTIVE\"", 400, "E0000031"),
        ("/api/v1/groups?filter=profile.name eq \"eng-all\"", 400, "E0000031"),
        ("/api/v1/users?search=status eq \"ACTIVE\"&filter=status eq \"ACTIVE\"", 400, "E0000033"),
        ("/api/v1/users?after=00u1a2b3c4D5e6F7g8h9", 400, "E0000029"),
        ("/api/v1/users?limit=lots", 400, "E0000001"),
        ("/api/v1/groups/00gnothere0000000697/users", 404, "E0000007"),
        ("/api/v1/apps/0oanothere0000000697/users", 404, "E0000007"),
        ("/api/v1/apps/0oanothere0000000697/groups", 404, "E0000007"),
        ("/api/v1/users/00unothere0000000697", 404, "E0000007"),
        ("/api/v1/roles", 404, "E0000007"),
    ];
    for (path, status, code) in cases {
        let url = reqwest::Url::parse(&format!("{}{path}", fake.base_url())).unwrap();
        let got = send(ssws(&fake, url.as_str())).await;
        assert_eq!(got.status, *status, "{path}: {}", got.body);
        got.assert_okta_error(*status, code);
    }

    // Cursors are opaque: garbled, or issued by another listing, they are refused.
    let groups = get(&fake, "/api/v1/groups?limit=1").await;
    let next = groups.next().unwrap();
    let cursor = next.split("after=").nth(1).unwrap().split('&').next().unwrap().to_string();
    assert_eq!(send(ssws(&fake, &next)).await.status, 200);
    get(&fake, &format!("/api/v1/users?after={cursor}")).await.assert_okta_error(400, "E0000029");
    let mut garbled = cursor.clone().into_bytes();
    garbled[3] = if garbled[3] == b'0' { b'1' } else { b'0' };
    let garbled = String::from_utf8(garbled).unwrap();
    get(&fake, &format!("/api/v1/groups?limit=1&after={garbled}")).await.assert_okta_error(400, "E0000029");

    let post = send(
        reqwest::Client::new()
            .post(format!("{}/api/v1/users", fake.base_url()))
            .header("Authorization", format!("SSWS {}", fake.api_token())),
    )
    .await;
    post.assert_okta_error(405, "E0000022");
    let token_get = send(reqwest::Client::new().get(format!("{}/oauth2/v1/token", fake.base_url()))).await;
    token_get.assert_okta_error(405, "E0000022");
}

#[tokio::test]
async fn rate_limit_headers_count_down_per_bucket_and_429_when_exhausted() {
    let mut org = Org::generate(5, 3, 1);
    org.limits.users_list = 3;
    let fake = FakeOkta::start(org);
    for remaining in [2, 1, 0] {
        let got = get(&fake, "/api/v1/users").await;
        assert_eq!(got.status, 200);
        assert_eq!((got.rate("Limit"), got.rate("Remaining")), (3, remaining));
        let reset = got.rate("Reset");
        assert!(reset >= now() && reset <= now() + 61, "reset {reset} is the window's end in epoch seconds");
        assert!(got.header("date").is_some());
    }
    let limited = get(&fake, "/api/v1/users").await;
    limited.assert_okta_error(429, "E0000047");
    assert_eq!((limited.rate("Limit"), limited.rate("Remaining")), (3, 0));
    assert!(limited.header("date").is_some());

    let groups = get(&fake, "/api/v1/groups").await;
    assert_eq!((groups.status, groups.rate("Limit"), groups.rate("Remaining")), (200, 500, 499));
    let group = groups.ids()[0].clone();
    let members = get(&fake, &format!("/api/v1/groups/{group}/users")).await;
    assert_eq!(
        (members.rate("Limit"), members.rate("Remaining")),
        (500, 498),
        "members count in the groups bucket"
    );
    let app = fake.read(|org| org.apps.keys().next().unwrap().clone());
    let apps = get(&fake, &format!("/api/v1/apps/{app}/users")).await;
    assert_eq!((apps.status, apps.rate("Limit"), apps.rate("Remaining")), (200, 100, 99));
    let one = get(&fake, &format!("/api/v1/groups/{group}")).await;
    assert_eq!((one.status, one.rate("Limit")), (200, 1200));

    fake.reset_rate_limits();
    let again = get(&fake, "/api/v1/users").await;
    assert_eq!((again.status, again.rate("Remaining")), (200, 2));
}

#[tokio::test]
async fn fail_next_injects_failures_in_order_and_records_every_request() {
    let fake = FakeOkta::start(Org::generate(5, 3, 1));
    let cases = [
        (Failure::RateLimited, 429, Some("E0000047")),
        (Failure::ServerError, 500, Some("E0000009")),
        (Failure::Unavailable, 503, Some("E0000010")),
        (Failure::InvalidToken, 401, Some("E0000011")),
        (Failure::Forbidden, 403, Some("E0000006")),
        (Failure::InsufficientScope, 403, None),
    ];
    for (failure, status, code) in cases {
        fake.fail_next("/api/v1/users", 1, failure);
        let got = get(&fake, "/api/v1/users?limit=2").await;
        match code {
            Some(code) => got.assert_okta_error(status, code),
            None => {
                assert_eq!(got.status, status);
                assert_eq!(got.body, Value::Null, "no body");
                let challenge = got.header("www-authenticate").unwrap();
                assert!(challenge.contains("error=\"insufficient_scope\""), "{challenge}");
                assert!(challenge.contains("scope=\"okta.users.read\""), "{challenge}");
            }
        }
        if failure == Failure::RateLimited {
            assert_eq!(got.rate("Remaining"), 0);
            assert!(got.rate("Reset") <= now() + 2);
        }
        assert_eq!(get(&fake, "/api/v1/users?limit=2").await.status, 200, "only one request fails");
    }

    fake.fail_next("/api/v1/groups", 2, Failure::ServerError);
    assert_eq!(get(&fake, "/api/v1/users").await.status, 200, "another path is not affected");
    assert_eq!(get(&fake, "/api/v1/groups").await.status, 500);
    assert_eq!(get(&fake, "/api/v1/groups?limit=5").await.status, 500);
    assert_eq!(get(&fake, "/api/v1/groups").await.status, 200);

    let requests = fake.requests();
    assert_eq!(requests.len(), 16);
    assert_eq!(requests[0].method, "GET");
    assert_eq!(requests[0].path_and_query, "/api/v1/users?limit=2");
    assert_eq!(requests[14].path_and_query, "/api/v1/groups?limit=5");
    assert!(requests.iter().all(|r| r.authorization == Some(format!("SSWS {}", fake.api_token()))));
}

#[tokio::test]
async fn api_calls_need_the_orgs_ssws_token() {
    let fake = FakeOkta::start(Org::generate(5, 3, 1));
    let token = fake.api_token();
    assert!(token.len() == 42 && token.starts_with("00") && token.chars().all(|c| c.is_ascii_alphanumeric()));
    let url = format!("{}/api/v1/users", fake.base_url());
    let client = reqwest::Client::new();
    send(client.get(&url)).await.assert_okta_error(401, "E0000011");
    send(client.get(&url).header("Authorization", "SSWS 00notTheToken"))
        .await
        .assert_okta_error(401, "E0000011");
    send(client.get(&url).header("Authorization", format!("Bearer {token}")))
        .await
        .assert_okta_error(401, "E0000011");
    send(client.get(&url).header("Authorization", "Basic YWRtaW46aHVudGVyMg=="))
        .await
        .assert_okta_error(403, "E0000005");
    assert_eq!(send(client.get(&url).header("Authorization", format!("SSWS {token}"))).await.status, 200);
}

/// RSA key pairs made once per run with the openssl CLI: the service app's, a stranger's, and
/// a DPoP key. Test-only; never written outside a temp dir.
struct KeyPair {
    private_pem: String,
    public_pem: String,
}

fn keys() -> &'static [KeyPair; 3] {
    static KEYS: OnceLock<[KeyPair; 3]> = OnceLock::new();
    KEYS.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let make = |name: &str| {
            let private = dir.path().join(format!("{name}.pem"));
            let public = dir.path().join(format!("{name}.pub.pem"));
            let run = |command: &mut Command| {
                let output = command.output().unwrap_or_else(|e| panic!("openssl: {e}"));
                assert!(output.status.success(), "openssl: {}", String::from_utf8_lossy(&output.stderr));
            };
            run(Command::new("openssl")
                .args(["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out"])
                .arg(&private));
            run(Command::new("openssl")
                .args(["pkey", "-pubout", "-in"])
                .arg(&private)
                .arg("-out")
                .arg(&public));
            KeyPair {
                private_pem: std::fs::read_to_string(&private).unwrap(),
                public_pem: std::fs::read_to_string(&public).unwrap(),
            }
        };
        [make("service-app"), make("stranger"), make("dpop")]
    })
}

fn register(fake: &FakeOkta, scopes: &[&str], require_dpop: bool) {
    fake.register_service_app(ServiceApp {
        client_id: CLIENT_ID.into(),
        public_key_pem: keys()[0].public_pem.clone(),
        key_id: KEY_ID.into(),
        scopes: scopes.iter().map(|s| s.to_string()).collect(),
        require_dpop,
    });
}

/// A client assertion as the importer should make it, then `adjust`ed.
fn assertion(fake: &FakeOkta, key: &KeyPair, kid: &str, adjust: impl FnOnce(&mut Value)) -> String {
    let now = now();
    let mut claims = json!({
        "iss": CLIENT_ID,
        "sub": CLIENT_ID,
        "aud": format!("{}/oauth2/v1/token", fake.base_url()),
        "iat": now,
        "exp": now + 300,
        "jti": uuid::Uuid::new_v4().to_string()
    });
    adjust(&mut claims);
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(kid.into());
    jsonwebtoken::encode(&header, &claims, &EncodingKey::from_rsa_pem(key.private_pem.as_bytes()).unwrap())
        .unwrap()
}

fn good_assertion(fake: &FakeOkta) -> String {
    assertion(fake, &keys()[0], KEY_ID, |_| {})
}

/// A DPoP proof for `htm` `htu`, plus `extra` claims (nonce, ath, overrides).
fn proof(key: &KeyPair, htm: &str, htu: &str, extra: Value) -> String {
    let encoding = EncodingKey::from_rsa_pem(key.private_pem.as_bytes()).unwrap();
    let mut header = Header::new(Algorithm::RS256);
    header.typ = Some("dpop+jwt".into());
    header.jwk = Some(Jwk::from_encoding_key(&encoding, Algorithm::RS256).unwrap());
    let mut claims = json!({ "htm": htm, "htu": htu, "iat": now(), "jti": uuid::Uuid::new_v4().to_string() });
    for (name, value) in extra.as_object().unwrap() {
        claims[name] = value.clone();
    }
    jsonwebtoken::encode(&header, &claims, &encoding).unwrap()
}

async fn token_request(fake: &FakeOkta, assertion: &str, scope: &str, dpop: Option<&str>) -> Got {
    let mut request = reqwest::Client::new().post(format!("{}/oauth2/v1/token", fake.base_url())).form(&[
        ("grant_type", "client_credentials"),
        ("scope", scope),
        ("client_assertion_type", JWT_BEARER),
        ("client_assertion", assertion),
    ]);
    if let Some(dpop) = dpop {
        request = request.header("DPoP", dpop);
    }
    send(request).await
}

#[tokio::test]
async fn token_endpoint_mints_a_bearer_token_whose_scopes_decide_what_it_reads() {
    let fake = FakeOkta::start(Org::generate(5, 3, 1));
    register(&fake, &["okta.users.read", "okta.apps.read"], false);
    let minted = token_request(&fake, &good_assertion(&fake), "okta.users.read okta.apps.read", None).await;
    assert_eq!(minted.status, 200, "{}", minted.body);
    assert_eq!(minted.body["token_type"], "Bearer");
    assert_eq!(minted.body["expires_in"], 3600);
    assert_eq!(minted.body["scope"], "okta.users.read okta.apps.read");
    let token = minted.body["access_token"].as_str().unwrap().to_string();

    let bearer =
        |path: &str| reqwest::Client::new().get(format!("{}{path}", fake.base_url())).bearer_auth(&token);
    assert_eq!(send(bearer("/api/v1/users")).await.status, 200);
    let groups = send(bearer("/api/v1/groups")).await;
    assert_eq!(groups.status, 403);
    assert_eq!(groups.body, Value::Null, "Okta sends no body for a missing scope");
    let challenge = groups.header("www-authenticate").unwrap();
    assert!(challenge.starts_with("Bearer authorization_uri="), "{challenge}");
    for part in ["scope=\"okta.groups.read\"", "error=\"insufficient_scope\"", "resource=\"/api/v1/groups\""]
    {
        assert!(challenge.contains(part), "{part} not in {challenge}");
    }

    fake.expire_access_tokens();
    send(bearer("/api/v1/users")).await.assert_okta_error(401, "E0000011");
}

#[tokio::test]
async fn token_endpoint_rejects_each_bad_client_assertion() {
    let fake = FakeOkta::start(Org::empty());
    register(&fake, &["okta.users.read"], false);
    let [ours, stranger, _] = keys();
    let token_url = format!("{}/oauth2/v1/token", fake.base_url());
    let now = now();
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "bad signature",
            assertion(&fake, stranger, KEY_ID, |_| {}),
            "The client_assertion signature is invalid.",
        ),
        (
            "unknown kid",
            assertion(&fake, ours, "scimd-test-2", |_| {}),
            "The client_assertion JWT kid is invalid.",
        ),
        (
            "wrong aud",
            assertion(&fake, ours, KEY_ID, |c| c["aud"] = json!("https://acme.okta.com/oauth2/v1/token")),
            "The audience claim for client_assertion must be the endpoint invoked for the request.",
        ),
        (
            "custom server aud",
            assertion(&fake, ours, KEY_ID, |c| {
                c["aud"] = json!(token_url.replace("/oauth2/", "/oauth2/default/"))
            }),
            "The audience claim for client_assertion must be the endpoint invoked for the request.",
        ),
        (
            "exp too far",
            assertion(&fake, ours, KEY_ID, |c| c["exp"] = json!(now + 7200)),
            "The client_assertion token has an expiration too far into the future.",
        ),
        (
            "expired",
            assertion(&fake, ours, KEY_ID, |c| c["exp"] = json!(now - 10)),
            "The client_assertion token is expired.",
        ),
        (
            "iat in the future",
            assertion(&fake, ours, KEY_ID, |c| c["iat"] = json!(now + 600)),
            "The client_assertion token must be issued before the current time.",
        ),
        (
            "unknown issuer",
            assertion(&fake, ours, KEY_ID, |c| {
                c["iss"] = json!("0oaSomeoneElse0000697");
                c["sub"] = json!("0oaSomeoneElse0000697");
            }),
            "The issuer claim for client_assertion is not a valid client_id.",
        ),
        ("not a JWT", "not-a-jwt".to_string(), "The client_assertion token is invalid."),
    ];
    for (name, assertion, description) in cases {
        let got = token_request(&fake, &assertion, "okta.users.read", None).await;
        assert_eq!(got.status, 401, "{name}: {}", got.body);
        got.assert_oauth_error(401, "invalid_client", description);
    }

    let once = assertion(&fake, ours, KEY_ID, |c| c["jti"] = json!("the-same-jti"));
    assert_eq!(token_request(&fake, &once, "okta.users.read", None).await.status, 200);
    let again = assertion(&fake, ours, KEY_ID, |c| c["jti"] = json!("the-same-jti"));
    token_request(&fake, &again, "okta.users.read", None).await.assert_oauth_error(
        401,
        "invalid_client",
        "The client_assertion token has already been used.",
    );

    let secret = send(reqwest::Client::new().post(&token_url).form(&[
        ("grant_type", "client_credentials"),
        ("scope", "okta.users.read"),
        ("client_id", CLIENT_ID),
        ("client_secret", "hunter2"),
    ]))
    .await;
    secret.assert_oauth_error(
        401,
        "invalid_client",
        "Client Credentials requests to the Org Authorization Server must use the private_key_jwt token_endpoint_auth_method.",
    );
}

#[tokio::test]
async fn token_endpoint_refuses_scopes_the_app_was_not_granted() {
    let fake = FakeOkta::start(Org::empty());
    register(&fake, &["okta.users.read"], false);
    token_request(&fake, &good_assertion(&fake), "okta.users.read okta.groups.read", None)
        .await
        .assert_oauth_error(
            400,
            "invalid_scope",
            "The following scopes are not allowed for this request: [okta.groups.read]",
        );
    token_request(&fake, &good_assertion(&fake), "okta.groups.read", None).await.assert_oauth_error(
        400,
        "consent_required",
        "You are not allowed any of the requested scopes.",
    );
    token_request(&fake, &good_assertion(&fake), "", None).await.assert_oauth_error(
        400,
        "invalid_scope",
        "No scopes were requested.",
    );
}

#[tokio::test]
async fn dpop_tokens_need_the_nonce_dance_and_a_fresh_bound_proof_per_call() {
    assert_eq!(
        (base64url(b"Man"), base64url(b"Ma"), base64url(&[0xfb, 0xff])),
        ("TWFu".into(), "TWE".into(), "-_8".into())
    );
    let fake = FakeOkta::start(Org::generate(5, 3, 1));
    register(&fake, &["okta.users.read", "okta.groups.read"], true);
    let [_, stranger, dpop_key] = keys();
    let base = fake.base_url();
    let token_url = format!("{base}/oauth2/v1/token");
    let client_assertion = good_assertion(&fake);

    token_request(&fake, &client_assertion, "okta.users.read", None).await.assert_oauth_error(
        400,
        "invalid_dpop_proof",
        "The DPoP proof JWT header is missing.",
    );
    let first = proof(dpop_key, "POST", &token_url, json!({}));
    let nonce_needed = token_request(&fake, &client_assertion, "okta.users.read", Some(&first)).await;
    nonce_needed.assert_oauth_error(
        400,
        "use_dpop_nonce",
        "Authorization server requires nonce in DPoP proof.",
    );
    let nonce = nonce_needed.header("dpop-nonce").unwrap().to_string();
    let wrong_htu =
        proof(dpop_key, "POST", &format!("{base}/oauth2/default/v1/token"), json!({ "nonce": nonce }));
    token_request(&fake, &client_assertion, "okta.users.read", Some(&wrong_htu)).await.assert_oauth_error(
        400,
        "invalid_dpop_proof",
        "'htu' claim in the DPoP proof JWT is invalid.",
    );
    let with_nonce = proof(dpop_key, "POST", &token_url, json!({ "nonce": nonce }));
    let minted = token_request(&fake, &client_assertion, "okta.users.read", Some(&with_nonce)).await;
    assert_eq!(minted.status, 200, "{}", minted.body);
    assert_eq!(minted.body["token_type"], "DPoP");
    let token = minted.body["access_token"].as_str().unwrap().to_string();
    let ath = base64url(&Sha256::digest(token.as_bytes()));

    let users_url = format!("{base}/api/v1/users");
    let call = |proof: Option<String>, scheme: &str| {
        let mut request = reqwest::Client::new()
            .get(format!("{users_url}?limit=2"))
            .header("Authorization", format!("{scheme} {token}"));
        if let Some(proof) = proof {
            request = request.header("DPoP", proof);
        }
        request
    };
    let good = proof(dpop_key, "GET", &users_url, json!({ "ath": ath }));
    let ok = send(call(Some(good.clone()), "DPoP")).await;
    assert_eq!(ok.status, 200, "{:?}", ok.headers);
    assert_eq!(ok.ids().len(), 2);

    let challenge = |got: &Got| -> String {
        assert_eq!(got.status, 400, "{:?}", got.headers);
        got.header("www-authenticate").unwrap().to_string()
    };
    let bearer = challenge(&send(call(None, "Bearer")).await);
    assert!(bearer.contains("error=\"invalid_request\""), "{bearer}");
    assert!(
        bearer.contains("must use the DPoP authentication scheme when using a DPoP bound token"),
        "{bearer}"
    );
    let cases = [
        ("replayed", Some(good), "'jti' claim in the DPoP proof JWT has already been used."),
        ("missing", None, "The DPoP proof JWT header is missing."),
        (
            "query in htu",
            Some(proof(dpop_key, "GET", &format!("{users_url}?limit=2"), json!({ "ath": ath }))),
            "'htu' claim in the DPoP proof JWT is invalid.",
        ),
        (
            "wrong htm",
            Some(proof(dpop_key, "POST", &users_url, json!({ "ath": ath }))),
            "'htm' claim in the DPoP proof JWT is invalid.",
        ),
        (
            "wrong ath",
            Some(proof(dpop_key, "GET", &users_url, json!({ "ath": "AAAA" }))),
            "'ath' claim in the DPoP proof JWT is invalid.",
        ),
        (
            "stale",
            Some(proof(dpop_key, "GET", &users_url, json!({ "ath": ath, "iat": now() - 600 }))),
            "'iat' claim in the DPoP proof JWT is invalid.",
        ),
        (
            "another key",
            Some(proof(stranger, "GET", &users_url, json!({ "ath": ath }))),
            "The DPoP proof JWT key does not match the key the access token is bound to.",
        ),
    ];
    for (name, proof, description) in cases {
        let header = challenge(&send(call(proof, "DPoP")).await);
        assert!(header.starts_with("DPoP algs="), "{name}: {header}");
        assert!(header.contains("error=\"invalid_dpop_proof\""), "{name}: {header}");
        assert!(header.contains(&format!("error_description=\"{description}\"")), "{name}: {header}");
    }
}

#[tokio::test]
async fn app_assignments_list_direct_and_group_users_but_never_deprovisioned_ones() {
    let app = Org::new_id("0oa");
    let wide_app = Org::new_id("0oa");
    let group = Org::new_id("00g");
    let user_ids: Vec<String> = (0..5).map(|_| Org::new_id("00u")).collect();
    let (direct, member, deprovisioned, suspended, unassigned) =
        (&user_ids[0], &user_ids[1], &user_ids[2], &user_ids[3], &user_ids[4]);
    let mut org = Org::empty();
    org.add_group(Org::group(&group, "eng-platform"));
    for (id, status) in [
        (direct, "ACTIVE"),
        (member, "ACTIVE"),
        (deprovisioned, "DEPROVISIONED"),
        (suspended, "SUSPENDED"),
        (unassigned, "ACTIVE"),
    ] {
        org.add_user(Org::user(id, &format!("user.{id}@acme.example"), status));
    }
    for id in [member, deprovisioned, suspended] {
        org.add_member(&group, id);
    }
    org.assign_user_to_app(&app, direct);
    org.assign_user_to_app(&app, deprovisioned);
    org.assign_group_to_app(&app, &group);
    for n in 0..25 {
        let id = Org::new_id("00g");
        org.add_group(Org::group(&id, &format!("vpn-site-{n}")));
        org.assign_group_to_app(&wide_app, &id);
    }
    let fake = FakeOkta::start(org);

    let mut expected =
        vec![(direct.clone(), "USER"), (member.clone(), "GROUP"), (suspended.clone(), "GROUP")];
    expected.sort();
    let users = get(&fake, &format!("/api/v1/apps/{app}/users?expand=user")).await;
    assert_eq!(users.status, 200, "{}", users.body);
    let got: Vec<(String, &str)> = users
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|u| (u["id"].as_str().unwrap().to_string(), u["scope"].as_str().unwrap()))
        .collect();
    assert_eq!(got, expected);
    let first = &users.body[0];
    assert_eq!(first["_embedded"]["user"]["id"], first["id"]);
    assert_eq!(first["credentials"]["userName"], first["_embedded"]["user"]["profile"]["login"]);
    assert!(first["syncState"].is_string() && first["status"].is_string());
    let plain = get(&fake, &format!("/api/v1/apps/{app}/users")).await;
    assert!(plain.body[0].get("_embedded").is_none());
    let (paged, pages) = list_all(&fake, &format!("/api/v1/apps/{app}/users?limit=1")).await;
    assert_eq!(ids(&paged), expected.iter().map(|(id, _)| id.clone()).collect::<Vec<_>>());
    assert_eq!(pages.len(), 3);

    let groups = get(&fake, &format!("/api/v1/apps/{app}/groups?expand=group")).await;
    assert_eq!(groups.ids(), vec![group.clone()]);
    assert_eq!(groups.body[0]["_embedded"]["group"]["profile"]["name"], "eng-platform");
    assert_eq!(groups.body[0]["priority"], 0);

    // limit has a floor of 20 on app groups.
    let (all, pages) = list_all(&fake, &format!("/api/v1/apps/{wide_app}/groups?limit=5")).await;
    assert_eq!(all.len(), 25);
    assert_eq!(pages[0].ids().len(), 20);
    assert!(pages[0].next().unwrap().ends_with("&limit=20"));
    assert!(all[0].get("_embedded").is_none());
}

#[tokio::test]
async fn group_listings_filter_page_and_keep_deprovisioned_members() {
    let fake = FakeOkta::start(Org::generate(220, 12, 11));
    let (everyone, app_groups, all_users) = fake.read(|org| {
        let everyone = org.groups.iter().find(|g| g.group_type == "BUILT_IN").unwrap().id.clone();
        let app_groups: Vec<String> =
            org.groups.iter().filter(|g| g.group_type == "APP_GROUP").map(|g| g.id.clone()).collect();
        (everyone, app_groups, org.users.iter().map(|u| u.id.clone()).collect::<Vec<_>>())
    });
    assert!(!app_groups.is_empty());

    let (members, pages) = list_all(&fake, &format!("/api/v1/groups/{everyone}/users?limit=100")).await;
    assert_eq!(ids(&members), all_users, "every user, deprovisioned ones included");
    assert_eq!(pages.len(), 3);
    assert!(members.iter().any(|m| m["status"] == "DEPROVISIONED"));

    let builtin = get(&fake, &format!("/api/v1/groups?filter={}", escape("type eq \"BUILT_IN\""))).await;
    assert_eq!(builtin.ids(), vec![everyone.clone()]);
    assert_eq!(builtin.body[0]["profile"]["name"], "Everyone");
    let searched = get(&fake, &format!("/api/v1/groups?search={}", escape("type eq \"app_group\""))).await;
    assert_eq!(searched.ids(), app_groups);
    assert_eq!(searched.body[0]["objectClass"], json!(["okta:windows_security_principal"]));
    assert!(searched.body[0]["_links"]["source"]["href"].is_string());
    let with_stats = get(
        &fake,
        &format!("/api/v1/groups?expand=stats&filter={}", escape(&format!("id eq \"{everyone}\""))),
    )
    .await;
    assert_eq!(with_stats.body[0]["_embedded"]["stats"]["usersCount"], 220);

    let (groups, pages) = list_all(&fake, "/api/v1/groups?limit=5").await;
    assert_eq!(groups.len(), 12);
    assert_eq!(pages.len(), 3);
    let one_page = get(&fake, "/api/v1/groups").await;
    assert_eq!(one_page.ids(), ids(&groups), "the default limit is large enough for one page");
    assert_eq!(one_page.links().len(), 1);
}

#[tokio::test]
async fn requests_beyond_the_concurrency_cap_get_a_429_with_limit_zero() {
    let mut org = Org::generate(3, 2, 1);
    org.max_in_flight = 1;
    let fake = FakeOkta::start(org);
    fake.set_latency(Duration::from_secs(2));
    let slow = tokio::spawn(send(ssws(&fake, &format!("{}/api/v1/users", fake.base_url()))));
    let deadline = Instant::now() + Duration::from_secs(10);
    while fake.requests().is_empty() {
        assert!(Instant::now() < deadline, "the first request never arrived");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let second = get(&fake, "/api/v1/groups").await;
    second.assert_okta_error(429, "E0000047");
    assert_eq!((second.rate("Limit"), second.rate("Remaining")), (0, 0));
    assert_eq!(slow.await.unwrap().status, 200);
}

#[test]
fn generated_org_is_deterministic_and_shaped_like_a_workforce_org() {
    let started = Instant::now();
    let org = Org::generate(100_000, 2_000, 1);
    eprintln!("Org::generate(100_000, 2_000, 1) took {:?}", started.elapsed());
    assert!(org == Org::generate(100_000, 2_000, 1), "same seed, same org");
    assert!(Org::generate(500, 20, 1) != Org::generate(500, 20, 2), "another seed, another org");

    assert_eq!((org.users.len(), org.groups.len()), (100_000, 2_000));
    let shaped = |id: &str, prefix: &str| {
        id.len() == 20 && id.starts_with(prefix) && id.chars().all(|c| c.is_ascii_alphanumeric())
    };
    assert!(org.users.iter().all(|u| shaped(&u.id, "00u")));
    assert!(org.groups.iter().all(|g| shaped(&g.id, "00g")));
    assert!(org.users.windows(2).all(|w| w[0].id < w[1].id), "sorted by id, unique");
    let logins: HashSet<&str> = org.users.iter().map(|u| u.profile["login"].as_str().unwrap()).collect();
    assert_eq!(logins.len(), 100_000, "logins are unique");
    for domain in ["@acme.example", "@eu.acme.example", "@other.example"] {
        assert!(logins.iter().any(|l| l.ends_with(domain)), "no login under {domain}");
    }

    let mut statuses: BTreeMap<&str, usize> = BTreeMap::new();
    for user in &org.users {
        *statuses.entry(user.status.as_str()).or_default() += 1;
    }
    for status in [
        "ACTIVE",
        "STAGED",
        "PROVISIONED",
        "RECOVERY",
        "PASSWORD_EXPIRED",
        "LOCKED_OUT",
        "SUSPENDED",
        "DEPROVISIONED",
    ] {
        assert!(statuses.get(status).is_some_and(|&n| n > 0), "no {status} user: {statuses:?}");
    }
    assert!(statuses["ACTIVE"] > 70_000, "{statuses:?}");
    let small = Org::generate(8, 2, 9);
    assert_eq!(
        small.users.iter().map(|u| u.status.as_str()).collect::<HashSet<_>>().len(),
        8,
        "every status even in a tiny org"
    );

    let by_id: BTreeMap<&str, &str> =
        org.users.iter().map(|u| (u.id.as_str(), u.profile["displayName"].as_str().unwrap())).collect();
    let managed = org
        .users
        .iter()
        .filter(|u| {
            let manager_id = u.profile.get("managerId").and_then(Value::as_str);
            manager_id.is_some_and(|m| m != u.id && by_id.get(m).copied() == u.profile["manager"].as_str())
        })
        .count();
    assert!(managed > 80_000, "{managed} users have a manager that exists, named as in its profile");
    for key in ["firstName", "lastName", "email", "title", "department", "city", "countryCode", "timezone"] {
        assert!(org.users.iter().all(|u| u.profile.get(key).is_some()), "{key} is not always set");
    }

    let builtin: Vec<_> = org.groups.iter().filter(|g| g.group_type == "BUILT_IN").collect();
    assert_eq!(builtin.len(), 1);
    assert_eq!(builtin[0].name, "Everyone");
    assert_eq!(org.members[&builtin[0].id].len(), 100_000);
    assert!(org.groups.iter().filter(|g| g.group_type == "APP_GROUP").count() >= 100);
    for prefix in ["eng-", "vpn-", "sales-"] {
        assert!(org.groups.iter().any(|g| g.group_type == "OKTA_GROUP" && g.name.starts_with(prefix)));
    }
    let mut memberships: BTreeMap<&str, usize> = BTreeMap::new();
    for (group, users) in &org.members {
        if *group != builtin[0].id {
            for user in users {
                *memberships.entry(user.as_str()).or_default() += 1;
            }
        }
    }
    assert_eq!(memberships.len(), 100_000, "everyone is in a group besides Everyone");
    assert!(memberships.values().all(|&n| (1..=4).contains(&n)));
    assert_eq!(org.apps.len(), 2);
    assert!(org.apps.values().all(|(users, _)| !users.is_empty()));
}

#[tokio::test]
async fn malformed_requests_get_error_answers_and_the_fake_keeps_serving() {
    let fake = FakeOkta::start(Org::generate(20, 4, 4));
    register(&fake, &["okta.users.read"], true);
    let deep = format!("{}status eq \"ACTIVE\"{}", "(".repeat(40), ")".repeat(40));
    let long = vec!["id eq \"x\""; 500].join(" or ");
    let cases: Vec<(String, u16, &str)> = vec![
        (format!("/api/v1/users?filter={}", escape(&deep)), 400, "E0000031"),
        (format!("/api/v1/users?search={}", escape(&long)), 400, "E0000031"),
        (
            format!("/api/v1/users?filter={}", escape("lastUpdated gt \"0000-01-01T00:00:00+01:00\"")),
            400,
            "E0000031",
        ),
        (format!("/api/v1/users?filter={}", escape("profile.login eq \"unterminated")), 400, "E0000031"),
        (format!("/api/v1/users?after={}", escape("💩💩💩💩💩💩💩💩💩💩")), 400, "E0000029"),
        ("/api/v1/users?limit=-5".into(), 400, "E0000001"),
        ("/api/v1/users?limit=99999999999999999999999".into(), 400, "E0000001"),
        ("/api/v1/users/%ZZ".into(), 404, "E0000007"),
        (format!("/api/v1/groups/{}/users", escape("💩")), 404, "E0000007"),
    ];
    for (path, status, code) in cases {
        get(&fake, &path).await.assert_okta_error(status, code);
    }
    assert_eq!(
        get(&fake, "/api/v1/users?%ZZ=%ZZ&limit=3").await.ids().len(),
        3,
        "unknown parameters are ignored"
    );

    let url = format!("{}/api/v1/users", fake.base_url());
    let client = reqwest::Client::new();
    for authorization in [&b"DPoP"[..], b"SSWS", b"Bearer ", b"\xff\xfe SSWS"] {
        let header = reqwest::header::HeaderValue::from_bytes(authorization).unwrap();
        send(client.get(&url).header("Authorization", header)).await.assert_okta_error(401, "E0000011");
    }

    // A DPoP-bound token with proofs that are not even well-formed.
    let minted = {
        let token_url = format!("{}/oauth2/v1/token", fake.base_url());
        let first = proof(&keys()[2], "POST", &token_url, json!({}));
        let nonce = token_request(&fake, &good_assertion(&fake), "okta.users.read", Some(&first)).await;
        let nonce = nonce.header("dpop-nonce").unwrap().to_string();
        let second = proof(&keys()[2], "POST", &token_url, json!({ "nonce": nonce }));
        token_request(&fake, &good_assertion(&fake), "okta.users.read", Some(&second)).await
    };
    let token = minted.body["access_token"].as_str().unwrap().to_string();
    let symmetric = format!(
        "{}.{}.{}",
        base64url(br#"{"typ":"dpop+jwt","alg":"HS256","jwk":{"kty":"oct","k":"c2VjcmV0"}}"#),
        base64url(json!({ "htm": "GET", "htu": url, "iat": now(), "jti": "j" }).to_string().as_bytes()),
        base64url(b"signature")
    );
    for bad in ["a.b.c", "", "....", symmetric.as_str()] {
        let got =
            send(client.get(&url).header("Authorization", format!("DPoP {token}")).header("DPoP", bad)).await;
        assert_eq!(got.status, 400, "{bad}");
        assert!(got.header("www-authenticate").unwrap().contains("invalid_dpop_proof"));
    }

    let token_url = format!("{}/oauth2/v1/token", fake.base_url());
    let garbage = send(client.post(&token_url).body(vec![0xff, 0x00, 0x26, 0x3d])).await;
    assert_eq!((garbage.status, garbage.body["error"].as_str()), (400, Some("invalid_request")));
    for assertion in ["a.b.c", "eyJhbGciOiJub25lIn0.e30.", ""] {
        let got = token_request(&fake, assertion, "okta.users.read", None).await;
        assert_eq!((got.status, got.body["error"].as_str()), (401, Some("invalid_client")), "{assertion}");
    }
    let proofless =
        token_request(&fake, &good_assertion(&fake), "okta.users.read", Some("not.a.proof")).await;
    assert_eq!((proofless.status, proofless.body["error"].as_str()), (400, Some("invalid_dpop_proof")));

    assert_eq!(get(&fake, "/api/v1/users?limit=1").await.status, 200, "still serving");
}
