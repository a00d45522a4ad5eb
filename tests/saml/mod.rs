//! SAML sign-in end to end over real HTTP on both backends: a test IdP signs real Responses;
//! every verification rule has a test that breaks it and is refused with 403 and no session.

use std::collections::BTreeMap;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::support::test_idp::{request_id_of, KeyInfo, Signed, Spec, TestIdp};
use crate::support::{on_both_backends, user_body, TestServer};

const ALICE: &str = "alice@example.com";
const MALLORY: &str = "mallory@example.com";
const BOB: &str = "bob@example.com";

/// A browser: no redirects followed, cookies kept by hand.
pub(crate) struct Browser {
    pub(crate) http: reqwest::Client,
    pub(crate) cookies: BTreeMap<String, String>,
}

pub(crate) struct Answer {
    pub(crate) status: StatusCode,
    pub(crate) location: Option<String>,
    pub(crate) set_cookies: Vec<String>,
    pub(crate) body: String,
}

impl Browser {
    pub(crate) fn new() -> Browser {
        let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
        Browser { http, cookies: BTreeMap::new() }
    }

    pub(crate) async fn send(&mut self, request: reqwest::RequestBuilder) -> Answer {
        let cookie: Vec<String> = self.cookies.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let request = if cookie.is_empty() { request } else { request.header("cookie", cookie.join("; ")) };
        let response = request.send().await.unwrap();
        let status = response.status();
        let location = response.headers().get("location").map(|v| v.to_str().unwrap().to_string());
        let set_cookies: Vec<String> = response
            .headers()
            .get_all("set-cookie")
            .iter()
            .map(|v| v.to_str().unwrap().to_string())
            .collect();
        for line in &set_cookies {
            let pair = line.split(';').next().unwrap();
            let (name, value) = pair.split_once('=').unwrap();
            if value.is_empty() || line.contains("Max-Age=0") {
                self.cookies.remove(name);
            } else {
                self.cookies.insert(name.to_string(), value.to_string());
            }
        }
        let body = response.text().await.unwrap();
        Answer { status, location, set_cookies, body }
    }

    pub(crate) async fn get(&mut self, url: &str) -> Answer {
        let request = self.http.get(url);
        self.send(request).await
    }

    pub(crate) async fn post_form(&mut self, url: &str, form: &[(&str, &str)]) -> Answer {
        let request = self.http.post(url).form(form);
        self.send(request).await
    }

    /// Whether the browser holds a session cookie (of any directory).
    fn has_session(&self) -> bool {
        self.cookies.keys().any(|name| name.starts_with("scimd_session_"))
    }
}

/// A server with alice and mallory (active), bob (deactivated), and the test IdP configured.
pub(crate) async fn setup(server: &TestServer, allow_idp_initiated: bool) -> TestIdp {
    server.create_user(user_body(ALICE)).await;
    server.create_user(user_body(MALLORY)).await;
    let mut bob = user_body(BOB);
    bob["active"] = json!(false);
    server.create_user(bob).await;
    let idp = TestIdp::new("https://idp.example.test/metadata");
    let reply = server
        .admin(Method::PUT, "/admin/v1/directories/acme/saml", Some(idp.settings(allow_idp_initiated)))
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    idp
}

/// Starts sign-in in `browser`; returns the AuthnRequest id.
async fn start(server: &TestServer, browser: &mut Browser, return_to: &str) -> String {
    let url = server.url(&format!("/saml/acme/login?return_to={}", urlencode(return_to)));
    let answer = browser.get(&url).await;
    assert_eq!(answer.status, StatusCode::FOUND, "{}", answer.body);
    let location = answer.location.unwrap();
    assert!(location.starts_with("https://idp.example.test/sso?SAMLRequest="), "{location}");
    request_id_of(&location)
}

fn relay_of(browser_location: &str) -> String {
    url::Url::parse(browser_location)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "RelayState")
        .map(|(_, v)| v.into_owned())
        .unwrap()
}

fn urlencode(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

/// Login in `browser`, returning (request id, relay state).
async fn start_with_relay(server: &TestServer, browser: &mut Browser) -> (String, String) {
    let answer = browser.get(&server.url("/saml/acme/login?return_to=%2Fd%2Facme%2F")).await;
    assert_eq!(answer.status, StatusCode::FOUND, "{}", answer.body);
    let location = answer.location.unwrap();
    (request_id_of(&location), relay_of(&location))
}

async fn post_response(server: &TestServer, browser: &mut Browser, xml: &str, relay: &str) -> Answer {
    let encoded = TestIdp::encode(xml);
    browser
        .post_form(&server.url("/saml/acme/acs"), &[("SAMLResponse", &encoded), ("RelayState", relay)])
        .await
}

/// Asserts a refused sign-in: 403, a page saying `why`, no session cookie.
fn assert_refused(answer: &Answer, browser: &Browser, why: &str) {
    assert_eq!(answer.status, StatusCode::FORBIDDEN, "{}", answer.body);
    assert!(answer.body.contains(why), "expected '{why}' in: {}", answer.body);
    assert!(!answer.set_cookies.iter().any(|c| c.starts_with("scimd_session_") && !c.contains("Max-Age=0")));
    assert!(!browser.has_session());
}

/// Signs in `browser` as `name` through the whole SP-initiated flow.
pub(crate) async fn sign_in(server: &TestServer, idp: &TestIdp, browser: &mut Browser, name: &str) -> Answer {
    let (request_id, relay) = start_with_relay(server, browser).await;
    let spec = idp.spec(&server.base_url, "acme", name, Some(&request_id));
    post_response(server, browser, &idp.response_xml(&spec), &relay).await
}

/// Who the home page says is signed in, if anyone.
async fn signed_in_as(server: &TestServer, browser: &mut Browser) -> Option<String> {
    let page = browser.get(&server.url("/d/acme/")).await;
    if page.status != StatusCode::OK {
        return None;
    }
    let start = page.body.find("id=\"signed-in-as\">")? + "id=\"signed-in-as\">".len();
    let end = start + page.body[start..].find('<')?;
    Some(page.body[start..end].to_string())
}

async fn sp_initiated_sign_in_reaches_the_people_api(server: TestServer) {
    let idp = setup(&server, false).await;
    let mut browser = Browser::new();
    // Without a session: the JSON is 401 and the page sends the browser to sign in.
    assert_eq!(browser.get(&server.url("/d/acme/api/people?q=al")).await.status, StatusCode::UNAUTHORIZED);
    let page = browser.get(&server.url("/d/acme/")).await;
    assert!(page.status == StatusCode::SEE_OTHER || page.status == StatusCode::FOUND);
    assert_eq!(page.location.as_deref(), Some("/saml/acme/login?return_to=%2Fd%2Facme%2F"));

    let request_id = start(&server, &mut browser, "/d/acme/?q=al").await;
    let answer = browser.get(&server.url("/saml/acme/login?return_to=%2Fd%2Facme%2F%3Fq%3Dal")).await;
    let location = answer.location.unwrap();
    let relay = relay_of(&location);
    assert_ne!(relay, "/d/acme/?q=al", "RelayState is an opaque handle, not the path");
    let request_id_2 = request_id_of(&location);
    assert_ne!(request_id, request_id_2);
    let spec = idp.spec(&server.base_url, "acme", "Alice@Example.com", Some(&request_id_2));
    let answer = post_response(&server, &mut browser, &idp.response_xml(&spec), &relay).await;
    assert_eq!(answer.status, StatusCode::SEE_OTHER, "{}", answer.body);
    assert_eq!(answer.location.as_deref(), Some("/d/acme/?q=al"));
    let cookie = answer.set_cookies.iter().find(|c| c.starts_with("scimd_session_")).unwrap();
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax") && cookie.contains("Max-Age="));
    assert!(!cookie.contains("Secure"), "plain-http public URL: no Secure");

    let people = browser.get(&server.url("/d/acme/api/people?q=ali")).await;
    assert_eq!(people.status, StatusCode::OK, "{}", people.body);
    let body: Value = serde_json::from_str(&people.body).unwrap();
    let names: Vec<&str> =
        body["items"].as_array().unwrap().iter().map(|p| p["userName"].as_str().unwrap()).collect();
    assert_eq!(names, vec![ALICE]);
    assert_eq!(body["next"], Value::Null);
    assert_eq!(body["items"][0]["emails"], json!([ALICE]));
    assert_eq!(signed_in_as(&server, &mut browser).await.as_deref(), Some(ALICE));
}

async fn people_search_matches_word_prefixes_and_pages(server: TestServer) {
    let idp = setup(&server, false).await;
    for n in 0..25 {
        let mut body = user_body(&format!("person{n:02}@example.com"));
        body["title"] = json!("Engineer");
        body["name"] = json!({"givenName": "Pat", "familyName": format!("Nr{n:02}")});
        server.create_user(body).await;
    }
    let mut browser = Browser::new();
    assert_eq!(sign_in(&server, &idp, &mut browser, ALICE).await.status, StatusCode::SEE_OTHER);
    let first: Value =
        serde_json::from_str(&browser.get(&server.url("/d/acme/api/people?q=engin")).await.body).unwrap();
    assert_eq!(first["items"].as_array().unwrap().len(), 20);
    let next = first["next"].as_str().unwrap().to_string();
    let second: Value = serde_json::from_str(
        &browser.get(&server.url(&format!("/d/acme/api/people?q=engin&cursor={next}"))).await.body,
    )
    .unwrap();
    assert_eq!(second["items"].as_array().unwrap().len(), 5);
    assert_eq!(second["next"], Value::Null);
    let both: Value =
        serde_json::from_str(&browser.get(&server.url("/d/acme/api/people?q=pat%20nr07")).await.body)
            .unwrap();
    assert_eq!(both["items"].as_array().unwrap().len(), 1, "{both}");
    assert_eq!(both["items"][0]["title"], "Engineer");
    let none: Value =
        serde_json::from_str(&browser.get(&server.url("/d/acme/api/people?q=ngineer")).await.body).unwrap();
    assert_eq!(none["items"], json!([]), "prefixes only");
}

async fn idp_initiated_sign_in_only_when_allowed(server: TestServer) {
    let idp = setup(&server, false).await;
    let mut browser = Browser::new();
    let spec = idp.spec(&server.base_url, "acme", ALICE, None);
    let answer = post_response(&server, &mut browser, &idp.response_xml(&spec), "").await;
    assert_refused(&answer, &browser, "not allowed for this directory");

    let reply = server.admin(Method::PUT, "/admin/v1/directories/acme/saml", Some(idp.settings(true))).await;
    assert_eq!(reply.status, StatusCode::OK);
    let spec = idp.spec(&server.base_url, "acme", ALICE, None);
    let answer = post_response(&server, &mut browser, &idp.response_xml(&spec), "").await;
    assert_eq!(answer.status, StatusCode::SEE_OTHER, "{}", answer.body);
    assert_eq!(answer.location.as_deref(), Some("/d/acme/"));
    assert_eq!(signed_in_as(&server, &mut browser).await.as_deref(), Some(ALICE));
}

/// Posts `xml` (built from a valid spec for a fresh request of `browser`) and asserts refusal.
async fn refused_with(
    server: &TestServer,
    idp: &TestIdp,
    why: &str,
    build: impl FnOnce(&TestIdp, Spec) -> String,
) {
    let mut browser = Browser::new();
    let (request_id, relay) = start_with_relay(server, &mut browser).await;
    let spec = idp.spec(&server.base_url, "acme", ALICE, Some(&request_id));
    let xml = build(idp, spec);
    let answer = post_response(server, &mut browser, &xml, &relay).await;
    assert_refused(&answer, &browser, why);
}

async fn each_broken_rule_is_refused(server: TestServer) {
    let idp = setup(&server, false).await;
    let bad_signature = "not signed by your identity provider";
    refused_with(&server, &idp, bad_signature, |idp, mut spec| {
        spec.signed = Signed::Nothing;
        idp.response_xml(&spec)
    })
    .await;
    refused_with(&server, &idp, bad_signature, |idp, spec| {
        idp.response_xml(&spec)
            .replace(&format!(">{ALICE}</saml:NameID>"), &format!(">{MALLORY}</saml:NameID>"))
    })
    .await;
    refused_with(&server, &idp, bad_signature, |idp, mut spec| {
        spec.signed = Signed::Response;
        idp.response_xml(&spec)
            .replace(&format!(">{ALICE}</saml:NameID>"), &format!(">{MALLORY}</saml:NameID>"))
    })
    .await;
    // Signed by another key that the Response carries as a raw KeyValue.
    refused_with(&server, &idp, bad_signature, |_, mut spec| {
        spec.key_info = KeyInfo::KeyValue;
        TestIdp::new(&spec.issuer).response_xml(&spec)
    })
    .await;
    // Signed by another key whose certificate the Response carries.
    refused_with(&server, &idp, "certificate this directory does not trust", |_, spec| {
        TestIdp::new(&spec.issuer).response_xml(&spec)
    })
    .await;
    refused_with(&server, &idp, "issued for another application", |idp, mut spec| {
        spec.audience = "https://other.example/metadata".into();
        idp.response_xml(&spec)
    })
    .await;
    refused_with(&server, &idp, "meant for another site", |idp, mut spec| {
        spec.recipient = "https://other.example/acs".into();
        idp.response_xml(&spec)
    })
    .await;
    refused_with(&server, &idp, "addressed to another site", |idp, mut spec| {
        spec.signed = Signed::Response;
        spec.destination = "https://other.example/acs".into();
        idp.response_xml(&spec)
    })
    .await;
    refused_with(&server, &idp, "does not trust", |idp, mut spec| {
        spec.issuer = "https://evil.example/idp".into();
        idp.response_xml(&spec)
    })
    .await;
    refused_with(&server, &idp, "has expired", |idp, mut spec| {
        let past = chrono::Utc::now() - chrono::Duration::minutes(10);
        spec.issued = past - chrono::Duration::minutes(5);
        spec.not_before = past - chrono::Duration::minutes(5);
        spec.not_on_or_after = past;
        idp.response_xml(&spec)
    })
    .await;
    refused_with(&server, &idp, "not valid yet", |idp, mut spec| {
        let future = chrono::Utc::now() + chrono::Duration::minutes(10);
        spec.not_before = future;
        spec.not_on_or_after = future + chrono::Duration::minutes(5);
        idp.response_xml(&spec)
    })
    .await;
    refused_with(&server, &idp, "SHA-1", |idp, mut spec| {
        spec.sha1 = true;
        idp.response_xml(&spec)
    })
    .await;
    // Within the 3 minutes' skew: still accepted.
    let mut browser = Browser::new();
    let (request_id, relay) = start_with_relay(&server, &mut browser).await;
    let mut spec = idp.spec(&server.base_url, "acme", ALICE, Some(&request_id));
    spec.not_on_or_after = chrono::Utc::now() - chrono::Duration::minutes(1);
    let answer = post_response(&server, &mut browser, &idp.response_xml(&spec), &relay).await;
    assert_eq!(answer.status, StatusCode::SEE_OTHER, "{}", answer.body);
}

async fn signature_wrapping_never_signs_in_the_wrapped_subject(server: TestServer) {
    let idp = setup(&server, false).await;
    // 1. An unsigned assertion for mallory before alice's signed one.
    let mut browser = Browser::new();
    let (request_id, relay) = start_with_relay(&server, &mut browser).await;
    let spec = idp.spec(&server.base_url, "acme", ALICE, Some(&request_id));
    let signed = idp.response_xml(&spec);
    let mut evil = spec.clone();
    evil.name_id = MALLORY.into();
    evil.assertion_id = "_evil".into();
    let wrapped =
        signed.replace("<saml:Assertion ", &format!("{}<saml:Assertion ", idp.assertion_xml(&evil, false)));
    let answer = post_response(&server, &mut browser, &wrapped, &relay).await;
    if answer.status == StatusCode::SEE_OTHER {
        assert_eq!(signed_in_as(&server, &mut browser).await.as_deref(), Some(ALICE));
    } else {
        assert_refused(&answer, &browser, "");
    }

    // 2. Alice's signed Response moved into an Extensions element of a Response for mallory.
    let mut browser = Browser::new();
    let (request_id, relay) = start_with_relay(&server, &mut browser).await;
    let mut spec = idp.spec(&server.base_url, "acme", ALICE, Some(&request_id));
    spec.signed = Signed::Response;
    let signed = idp.response_xml(&spec);
    let inner = signed.trim_start_matches(r#"<?xml version="1.0" encoding="UTF-8"?>"#).trim().to_string();
    let mut evil = spec.clone();
    evil.name_id = MALLORY.into();
    evil.assertion_id = "_evil2".into();
    evil.response_id = "_evilresponse".into();
    evil.signed = Signed::Nothing;
    let outer = idp
        .response_xml_with(&evil, idp.assertion_xml(&evil, false))
        .replace("<samlp:Status>", &format!("<samlp:Extensions>{inner}</samlp:Extensions><samlp:Status>"));
    let answer = post_response(&server, &mut browser, &outer, &relay).await;
    if answer.status == StatusCode::SEE_OTHER {
        assert_eq!(signed_in_as(&server, &mut browser).await.as_deref(), Some(ALICE));
    } else {
        assert_refused(&answer, &browser, "");
    }

    // 3. A mallory assertion reusing the signed assertion's ID.
    refused_with(&server, &idp, "", |idp, spec| {
        let signed = idp.response_xml(&spec);
        let mut evil = spec.clone();
        evil.name_id = MALLORY.into();
        signed.replace("<samlp:Status>", &format!("{}<samlp:Status>", idp.assertion_xml(&evil, false)))
    })
    .await;
}

async fn replays_and_foreign_requests_are_refused(server: TestServer) {
    let idp = setup(&server, false).await;
    let mut browser = Browser::new();
    let (request_id, relay) = start_with_relay(&server, &mut browser).await;
    let spec = idp.spec(&server.base_url, "acme", ALICE, Some(&request_id));
    let xml = idp.response_xml(&spec);
    assert_eq!(post_response(&server, &mut browser, &xml, &relay).await.status, StatusCode::SEE_OTHER);

    // The same assertion again, even from a browser with a fresh sign-in pending.
    let mut other = Browser::new();
    let (_, relay) = start_with_relay(&server, &mut other).await;
    assert_refused(&post_response(&server, &mut other, &xml, &relay).await, &other, "already used");

    // An answer to a request another browser started.
    let mut victim = Browser::new();
    let (victim_request, _) = start_with_relay(&server, &mut victim).await;
    let mut attacker = Browser::new();
    let (_, attacker_relay) = start_with_relay(&server, &mut attacker).await;
    let spec = idp.spec(&server.base_url, "acme", ALICE, Some(&victim_request));
    let answer = post_response(&server, &mut attacker, &idp.response_xml(&spec), &attacker_relay).await;
    assert_refused(&answer, &attacker, "not started in this browser");

    // The request id answered twice (a second, fresh assertion): the second is refused.
    let mut browser = Browser::new();
    let (request_id, relay) = start_with_relay(&server, &mut browser).await;
    let cookies = browser.cookies.clone();
    let first = idp.spec(&server.base_url, "acme", ALICE, Some(&request_id));
    assert_eq!(
        post_response(&server, &mut browser, &idp.response_xml(&first), &relay).await.status,
        StatusCode::SEE_OTHER
    );
    let mut replayer = Browser::new();
    replayer.cookies = cookies;
    let second = idp.spec(&server.base_url, "acme", ALICE, Some(&request_id));
    let answer = post_response(&server, &mut replayer, &idp.response_xml(&second), &relay).await;
    assert_refused(&answer, &replayer, "already used");
}

async fn only_active_members_get_a_session(server: TestServer) {
    let idp = setup(&server, false).await;
    let mut browser = Browser::new();
    let answer = sign_in(&server, &idp, &mut browser, BOB).await;
    assert_refused(&answer, &browser, "deactivated");
    let answer = sign_in(&server, &idp, &mut browser, "nobody@example.com").await;
    assert_refused(&answer, &browser, "not a member of this directory");
    // JSON when asked.
    let (request_id, relay) = start_with_relay(&server, &mut browser).await;
    let spec = idp.spec(&server.base_url, "acme", BOB, Some(&request_id));
    let request =
        browser.http.post(server.url("/saml/acme/acs")).header("accept", "application/json").form(&[
            ("SAMLResponse", TestIdp::encode(&idp.response_xml(&spec)).as_str()),
            ("RelayState", relay.as_str()),
        ]);
    let answer = browser.send(request).await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN);
    let body: Value = serde_json::from_str(&answer.body).unwrap();
    assert_eq!(body["reason"], "inactive_user");

    let audit = server.admin(Method::GET, "/admin/v1/audit?resource=saml", None).await;
    let operations: Vec<&str> =
        audit.body["items"].as_array().unwrap().iter().map(|e| e["operation"].as_str().unwrap()).collect();
    assert!(operations.iter().filter(|o| **o == "sign_in_refused").count() >= 3, "{}", audit.body);
}

async fn deactivation_and_logout_end_the_session(server: TestServer) {
    let idp = setup(&server, false).await;
    let mut browser = Browser::new();
    assert_eq!(sign_in(&server, &idp, &mut browser, ALICE).await.status, StatusCode::SEE_OTHER);
    let page = browser.get(&server.url("/d/acme/")).await;
    let start = page.body.find("name=\"csrf\" value=\"").unwrap() + "name=\"csrf\" value=\"".len();
    let csrf = page.body[start..start + 64].to_string();

    // A logout without (or with a wrong) CSRF token changes nothing.
    let answer = browser.post_form(&server.url("/saml/acme/logout"), &[]).await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN);
    let answer = browser.post_form(&server.url("/saml/acme/logout"), &[("csrf", &"0".repeat(64))]).await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN);
    assert_eq!(signed_in_as(&server, &mut browser).await.as_deref(), Some(ALICE));

    let stolen = browser.cookies.clone();
    let answer = browser.post_form(&server.url("/saml/acme/logout"), &[("csrf", &csrf)]).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert!(!browser.has_session());
    // The old cookie is revoked on the server too.
    let mut replay = Browser::new();
    replay.cookies = stolen;
    assert_eq!(replay.get(&server.url("/d/acme/api/people?q=a")).await.status, StatusCode::UNAUTHORIZED);

    // Deactivation through SCIM ends a live session at its next request.
    let mut browser = Browser::new();
    assert_eq!(sign_in(&server, &idp, &mut browser, MALLORY).await.status, StatusCode::SEE_OTHER);
    assert_eq!(browser.get(&server.url("/d/acme/api/people?q=a")).await.status, StatusCode::OK);
    let users = server.get(&format!("/scim/v2/Users?filter=userName%20eq%20%22{MALLORY}%22")).await;
    let id = users.body["Resources"][0]["id"].as_str().unwrap().to_string();
    let patch = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
        "Operations": [{"op": "replace", "path": "active", "value": false}]});
    assert_eq!(server.patch(&format!("/scim/v2/Users/{id}"), &patch).await.status, StatusCode::OK);
    assert_eq!(browser.get(&server.url("/d/acme/api/people?q=a")).await.status, StatusCode::UNAUTHORIZED);
}

async fn return_to_must_stay_on_this_server(server: TestServer) {
    setup(&server, false).await;
    let mut browser = Browser::new();
    for bad in ["//evil.example/", "https://evil.example/", "/\\evil.example", "evil.example"] {
        let answer =
            browser.get(&server.url(&format!("/saml/acme/login?return_to={}", urlencode(bad)))).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{bad}: {}", answer.body);
        assert!(answer.location.is_none());
    }
}

async fn configuration_without_a_certificate_is_refused(server: TestServer) {
    let idp = TestIdp::new("https://idp.example.test/metadata");
    let mut settings = idp.settings(false);
    settings["certificate_pem"] = json!("");
    let reply = server.admin(Method::PUT, "/admin/v1/directories/acme/saml", Some(settings)).await;
    assert!(reply.assert_admin_error(400).contains("certificate"));
    let metadata = format!(
        r#"<md:EntityDescriptor xmlns:md="urn:oasis:names:tc:SAML:2.0:metadata" entityID="{}"><md:IDPSSODescriptor protocolSupportEnumeration="urn:oasis:names:tc:SAML:2.0:protocol"><md:SingleSignOnService Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect" Location="{}"/></md:IDPSSODescriptor></md:EntityDescriptor>"#,
        idp.entity_id, idp.sso_url
    );
    let reply = server
        .admin(Method::PUT, "/admin/v1/directories/acme/saml", Some(json!({"metadata_xml": metadata})))
        .await;
    assert!(reply.assert_admin_error(400).contains("no signing certificate"));
    // Nothing configured: sign-in is not offered.
    let mut browser = Browser::new();
    assert_eq!(browser.get(&server.url("/saml/acme/login")).await.status, StatusCode::NOT_FOUND);

    // With metadata that has one, it is configured, shown and removable.
    let b64 = idp.cert_pem.lines().filter(|l| !l.starts_with("-----")).collect::<String>();
    let metadata = metadata.replace(
        "<md:SingleSignOnService",
        &format!(r#"<md:KeyDescriptor use="signing"><ds:KeyInfo xmlns:ds="http://www.w3.org/2000/09/xmldsig#"><ds:X509Data><ds:X509Certificate>{b64}</ds:X509Certificate></ds:X509Data></ds:KeyInfo></md:KeyDescriptor><md:SingleSignOnService"#),
    );
    let reply = server
        .admin(Method::PUT, "/admin/v1/directories/acme/saml", Some(json!({"metadata_xml": metadata})))
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.body["idp_entity_id"], idp.entity_id.as_str());
    assert_eq!(reply.body["sp_entity_id"], format!("{}/saml/acme/metadata", server.base_url));
    let shown = server.admin(Method::GET, "/admin/v1/directories/acme/saml", None).await;
    assert_eq!(shown.body["sso_url"], idp.sso_url.as_str());
    let metadata = browser.get(&server.url("/saml/acme/metadata")).await;
    assert!(metadata.body.contains(&format!("{}/saml/acme/acs", server.base_url)));
    let removed = server.admin(Method::DELETE, "/admin/v1/directories/acme/saml", None).await;
    assert_eq!(removed.status, StatusCode::NO_CONTENT);
    let _ = server.request(Method::GET, "/healthz");
}

async fn another_directorys_session_opens_nothing_here(server: TestServer) {
    let idp = setup(&server, false).await;
    server.second_directory("globex");
    let mut browser = Browser::new();
    assert_eq!(sign_in(&server, &idp, &mut browser, ALICE).await.status, StatusCode::SEE_OTHER);
    assert_eq!(browser.get(&server.url("/d/globex/api/people?q=a")).await.status, StatusCode::UNAUTHORIZED);
}

/// Someone in two directories (a contractor, an IT partner) signs in to both in one browser:
/// the second sign-in and a sign-out of it leave the first session alone.
async fn a_browser_keeps_one_session_per_directory(server: TestServer) {
    let idp = setup(&server, false).await;
    let (_, globex_key) = server.second_directory("globex");
    let created = server
        .http
        .post(server.url("/scim/v2/Users"))
        .bearer_auth(&globex_key)
        .header("content-type", "application/scim+json")
        .body(user_body(ALICE).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
    let reply =
        server.admin(Method::PUT, "/admin/v1/directories/globex/saml", Some(idp.settings(true))).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);

    let mut browser = Browser::new();
    assert_eq!(sign_in(&server, &idp, &mut browser, ALICE).await.status, StatusCode::SEE_OTHER);
    let spec = idp.spec(&server.base_url, "globex", ALICE, None);
    let encoded = TestIdp::encode(&idp.response_xml(&spec));
    let answer = browser
        .post_form(&server.url("/saml/globex/acs"), &[("SAMLResponse", &encoded), ("RelayState", "")])
        .await;
    assert_eq!(answer.status, StatusCode::SEE_OTHER, "{}", answer.body);
    assert_eq!(browser.cookies.keys().filter(|name| name.starts_with("scimd_session_")).count(), 2);
    for directory in ["acme", "globex"] {
        let people = browser.get(&server.url(&format!("/d/{directory}/api/people?q=a"))).await;
        assert_eq!(people.status, StatusCode::OK, "{directory}: {}", people.body);
    }

    let page = browser.get(&server.url("/d/globex/")).await;
    let start = page.body.find("name=\"csrf\" value=\"").unwrap() + "name=\"csrf\" value=\"".len();
    let csrf = page.body[start..start + 64].to_string();
    let answer = browser.post_form(&server.url("/saml/globex/logout"), &[("csrf", &csrf)]).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(browser.get(&server.url("/d/globex/api/people?q=a")).await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(browser.get(&server.url("/d/acme/api/people?q=a")).await.status, StatusCode::OK);
}

on_both_backends!(
    sp_initiated_sign_in_reaches_the_people_api,
    people_search_matches_word_prefixes_and_pages,
    idp_initiated_sign_in_only_when_allowed,
    each_broken_rule_is_refused,
    signature_wrapping_never_signs_in_the_wrapped_subject,
    replays_and_foreign_requests_are_refused,
    only_active_members_get_a_session,
    deactivation_and_logout_end_the_session,
    return_to_must_stay_on_this_server,
    configuration_without_a_certificate_is_refused,
    another_directorys_session_opens_nothing_here,
    a_browser_keeps_one_session_per_directory,
);
