//! `connection verify`: each credential or permission problem is found by a small request and
//! answered with what the admin must do.

use reqwest::Method;
use serde_json::{json, Value};

use crate::support::fake_okta::{Failure, FakeOkta, Org};
use crate::support::{on_both_backends, TestServer};
use scimd::store::connections::ConnectionRecord;

on_both_backends!(each_verify_failure_names_its_remedy,);

fn connect(
    server: &TestServer,
    name: &str,
    org_url: &str,
    token: &str,
    app_id: Option<&str>,
) -> ConnectionRecord {
    let body = json!({
        "name": name, "kind": "okta",
        "okta": {"org_url": org_url, "allow_insecure_http": true, "auth": {"method": "api_token", "token": token}},
        "rules": {"app_id": app_id}
    });
    server.connect("acme", body)
}

async fn verify(server: &TestServer, connection: &ConnectionRecord) -> Value {
    let reply =
        server.admin(Method::POST, &format!("/admin/v1/connections/{}/verify", connection.id), None).await;
    assert_eq!(reply.status, reqwest::StatusCode::OK, "{}", reply.body);
    reply.body
}

fn remedies(report: &Value) -> String {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["remedy"].as_str())
        .collect::<Vec<_>>()
        .join(" | ")
}

async fn each_verify_failure_names_its_remedy(server: TestServer) {
    let mut org = Org::empty();
    org.apps.insert("0oaapp00000000000697".into(), Default::default());
    let fake = FakeOkta::start(org);
    let good = connect(&server, "good", &fake.base_url(), &fake.api_token(), Some("0oaapp00000000000697"));
    let report = verify(&server, &good).await;
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(report["checks"].as_array().unwrap().len(), 3, "users, groups, the app");

    let bad_token = connect(&server, "bad-token", &fake.base_url(), "00wrong", None);
    let report = verify(&server, &bad_token).await;
    assert_eq!(report["ok"], false);
    assert!(remedies(&report).contains("Admin → Security → API → Tokens"), "{report}");

    fake.fail_next("/api/v1/groups", 1, Failure::Forbidden);
    let report = verify(&server, &good).await;
    assert!(remedies(&report).contains("Read-Only Administrator"), "{report}");

    fake.fail_next("/api/v1/users", 1, Failure::InsufficientScope);
    let report = verify(&server, &good).await;
    assert!(remedies(&report).contains("okta.users.read"), "{report}");

    let unknown_app =
        connect(&server, "unknown-app", &fake.base_url(), &fake.api_token(), Some("0oanope0000000000697"));
    let report = verify(&server, &unknown_app).await;
    assert!(remedies(&report).contains("app_id"), "{report}");
    assert_eq!(report["checks"][0]["ok"], true, "users could be read");

    let unreachable = connect(&server, "unreachable", "http://127.0.0.1:9", &fake.api_token(), None);
    let report = verify(&server, &unreachable).await;
    assert!(remedies(&report).contains("cannot reach Okta"), "{report}");
}
