//! `/admin/v1/directories/{slug}/connections` and `/admin/v1/connections/{id}`: the contract's
//! connection JSON in, the same JSON out with each secret only as set / rotated; bad configs
//! refused naming the key, with nothing stored.

use diesel::prelude::*;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::support::{on_both_backends, Backend, TestServer};
use scimd::store::schema::secrets as table;

on_both_backends!(
    a_connection_is_created_shown_without_secrets_updated_and_deleted,
    bad_connections_are_refused_naming_the_key_and_nothing_is_stored,
    connections_belong_to_their_directory,
);

fn okta_body(name: &str, token: Option<&str>) -> Value {
    let mut auth = json!({"method": "api_token"});
    if let Some(token) = token {
        auth["token"] = json!(token);
    }
    json!({
        "name": name, "kind": "okta",
        "okta": {"org_url": "https://acme.okta.com", "auth": auth},
        "rules": {"group_prefixes": ["eng-"], "email_domains": ["acme.example", "*.acme-labs.example"]},
        "schedule": {"enabled": true, "delta_every": "2h", "full_every": "24h"},
        "brake": {"max_deactivate_percent": 10}
    })
}

async fn a_connection_is_created_shown_without_secrets_updated_and_deleted(server: TestServer) {
    let token = "00aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789ab";
    let created = server
        .admin(
            Method::POST,
            "/admin/v1/directories/acme/connections",
            Some(okta_body("okta-main", Some(token))),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    assert!(!created.body.to_string().contains(token), "the secret is never returned");
    assert_eq!(created.body["okta"]["auth"]["token"]["set"], true);
    let first_rotation = created.body["okta"]["auth"]["token"]["rotated_at"].clone();
    assert!(first_rotation.is_string());
    assert_eq!(created.body["rules"]["group_prefixes"], json!(["eng-"]));
    assert_eq!(created.body["schedule"]["delta_every"], "2h");
    let id = created.body["id"].as_str().unwrap().to_string();

    // Sealed at rest.
    let stored: Vec<String> =
        server.store.read_now(|conn, _| Ok(table::table.select(table::ciphertext).load(conn)?)).unwrap();
    assert_eq!(stored.len(), 1);
    assert!(!stored[0].contains(token) && !stored[0].contains(&hex::encode(token)));

    let got = server.admin(Method::GET, &format!("/admin/v1/connections/{id}"), None).await;
    assert_eq!(got.body, created.body);
    let listed = server.admin(Method::GET, "/admin/v1/directories/acme/connections", None).await;
    assert_eq!(listed.body["items"], json!([created.body]));

    // PUT without the token keeps it; new rules apply.
    let mut changed = okta_body("okta-main", None);
    changed["rules"]["group_prefixes"] = json!(["vpn-"]);
    let updated = server.admin(Method::PUT, &format!("/admin/v1/connections/{id}"), Some(changed)).await;
    assert_eq!(updated.status, StatusCode::OK, "{}", updated.body);
    assert_eq!(updated.body["rules"]["group_prefixes"], json!(["vpn-"]));
    assert_eq!(updated.body["okta"]["auth"]["token"]["rotated_at"], first_rotation);

    // Changing the kind is refused and changes nothing.
    let entra = json!({"name": "okta-main", "kind": "entra", "entra": {"tenant": "contoso.onmicrosoft.com",
        "auth": {"method": "client_secret", "client_id": "c", "client_secret": "s"}}});
    let refused = server.admin(Method::PUT, &format!("/admin/v1/connections/{id}"), Some(entra)).await;
    assert!(refused.assert_admin_error(400).contains("kind"));
    let second = server
        .admin(
            Method::POST,
            "/admin/v1/directories/acme/connections",
            Some(okta_body("okta-main", Some("x"))),
        )
        .await;
    assert!(second.assert_admin_error(409).contains("okta-main"));

    let log = server
        .admin(Method::GET, &format!("/admin/v1/audit?resource=connection&resource_id={id}"), None)
        .await;
    let operations: Vec<&str> =
        log.body["items"].as_array().unwrap().iter().map(|e| e["operation"].as_str().unwrap()).collect();
    assert_eq!(operations, ["update", "create"]);
    assert!(!log.body.to_string().contains(token));

    let deleted = server.admin(Method::DELETE, &format!("/admin/v1/connections/{id}"), None).await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    server.admin(Method::GET, &format!("/admin/v1/connections/{id}"), None).await.assert_admin_error(404);
    let left: i64 = server.store.read_now(|conn, _| Ok(table::table.count().get_result(conn)?)).unwrap();
    assert_eq!(left, 0, "its secrets went with it");
}

async fn bad_connections_are_refused_naming_the_key_and_nothing_is_stored(server: TestServer) {
    let mut unknown_rule = okta_body("o", Some("t"));
    unknown_rule["rules"]["colour"] = json!("red");
    let mut bad_source = okta_body("o", Some("t"));
    bad_source["rules"]["username_source"] = json!("nickname");
    let mut insecure = okta_body("o", Some("t"));
    insecure["okta"]["org_url"] = json!("http://acme.okta.com");
    let mut file = okta_body("o", None);
    file["okta"]["auth"]["token_file"] = json!("/etc/token");
    let cases = [
        (unknown_rule, "colour"),
        (bad_source, "rules.username_source"),
        (insecure, "okta.org_url"),
        (okta_body("o", None), "okta.auth.token"),
        (file, "--config"),
        (json!({"name": "o"}), "kind"),
    ];
    for (body, key) in cases {
        let reply =
            server.admin(Method::POST, "/admin/v1/directories/acme/connections", Some(body.clone())).await;
        let detail = reply.assert_admin_error(400);
        assert!(detail.contains(key), "{body}: {detail}");
    }
    server
        .admin(Method::POST, "/admin/v1/directories/nope/connections", Some(okta_body("o", Some("t"))))
        .await
        .assert_admin_error(404);
    let listed = server.admin(Method::GET, "/admin/v1/directories/acme/connections", None).await;
    assert_eq!(listed.body["items"], json!([]));
    let stored: i64 = server.store.read_now(|conn, _| Ok(table::table.count().get_result(conn)?)).unwrap();
    assert_eq!(stored, 0);
}

async fn connections_belong_to_their_directory(server: TestServer) {
    server.second_directory("other");
    let created = server
        .admin(
            Method::POST,
            "/admin/v1/directories/other/connections",
            Some(okta_body("okta-main", Some("t"))),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED);
    let acme = server.admin(Method::GET, "/admin/v1/directories/acme/connections", None).await;
    assert_eq!(acme.body["items"], json!([]));
    // The same name may be used in another directory.
    let same_name = server
        .admin(
            Method::POST,
            "/admin/v1/directories/acme/connections",
            Some(okta_body("okta-main", Some("t"))),
        )
        .await;
    assert_eq!(same_name.status, StatusCode::CREATED);
    assert_ne!(same_name.body["id"], created.body["id"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_server_key_credentials_are_refused_with_the_remedy() {
    let server =
        TestServer::start_with(Backend::Sqlite, |config| config.secret_key = Default::default()).await;
    let reply = server
        .admin(
            Method::POST,
            "/admin/v1/directories/acme/connections",
            Some(okta_body("okta-main", Some("t"))),
        )
        .await;
    let detail = reply.assert_admin_error(403);
    assert!(detail.contains("SCIMD_SECRET_KEY") && detail.contains("secret-key generate"), "{detail}");
    let listed = server.admin(Method::GET, "/admin/v1/directories/acme/connections", None).await;
    assert_eq!(listed.body["items"], json!([]), "nothing stored");
}
