//! `/admin/v1/directories/{slug}/keys` and `/admin/v1/keys/{id}`: issue (the secret in that one
//! response), list without secrets, get, revoke; last use recorded without a write per request.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::support::{on_both_backends, TestServer};

on_both_backends!(
    a_key_is_issued_once_listed_without_its_secret_and_revoked,
    key_expiry_is_set_by_lifetime_or_time_and_checked,
    keys_are_listed_per_directory_only,
    last_use_is_recorded_at_most_once_per_interval,
);

async fn a_key_is_issued_once_listed_without_its_secret_and_revoked(server: TestServer) {
    let issued = server
        .admin(
            Method::POST,
            "/admin/v1/directories/acme/keys",
            Some(json!({"name": "okta", "expires_in": "90d"})),
        )
        .await;
    assert_eq!(issued.status, StatusCode::CREATED, "{}", issued.body);
    assert_eq!(issued.header("cache-control"), Some("no-store"));
    let token = issued.body["token"].as_str().unwrap().to_string();
    let id = issued.body["id"].as_str().unwrap().to_string();
    assert!(token.starts_with(issued.body["prefix"].as_str().unwrap()));
    assert_eq!(issued.body["status"], "active");
    assert_eq!(issued.body["name"], "okta");
    assert!(issued.body["expires_at"].is_string());

    // The new key works on SCIM, for this directory.
    let users = server.send(server.http.get(server.url("/scim/v2/Users")).bearer_auth(&token)).await;
    assert_eq!(users.status, StatusCode::OK);

    let listed = server.admin(Method::GET, "/admin/v1/directories/acme/keys", None).await;
    assert_eq!(listed.status, StatusCode::OK);
    assert!(!listed.body.to_string().contains(&token), "the secret is never listed");
    let items = listed.body["items"].as_array().unwrap();
    assert_eq!(items.len(), 2, "the test key and the new one");
    for item in items {
        for field in
            ["id", "name", "prefix", "created_at", "expires_at", "last_used_at", "revoked_at", "status"]
        {
            assert!(item.get(field).is_some(), "{field} missing in {item}");
        }
        assert!(item.get("token").is_none() && item.get("hash").is_none());
    }
    let got = server.admin(Method::GET, &format!("/admin/v1/keys/{id}"), None).await;
    assert_eq!(got.body["id"], id.as_str());
    assert!(got.body.get("token").is_none());

    let revoked = server.admin(Method::DELETE, &format!("/admin/v1/keys/{id}"), None).await;
    assert_eq!(revoked.status, StatusCode::OK, "{}", revoked.body);
    assert_eq!(revoked.body["status"], "revoked");
    let first_revocation = revoked.body["revoked_at"].clone();
    assert!(first_revocation.is_string());
    // Effective on the next request; revoking again keeps the first time.
    let refused = server.send(server.http.get(server.url("/scim/v2/Users")).bearer_auth(&token)).await;
    assert!(refused.assert_error(401, None).contains("revoked"));
    let again = server.admin(Method::DELETE, &format!("/admin/v1/keys/{id}"), None).await;
    assert_eq!(again.body["revoked_at"], first_revocation);
    // The other key is untouched.
    assert_eq!(server.get("/scim/v2/Users").await.status, StatusCode::OK);
    server.admin(Method::DELETE, "/admin/v1/keys/no-such-key", None).await.assert_admin_error(404);
    server.admin(Method::GET, "/admin/v1/keys/no-such-key", None).await.assert_admin_error(404);
}

async fn key_expiry_is_set_by_lifetime_or_time_and_checked(server: TestServer) {
    let at = server
        .admin(
            Method::POST,
            "/admin/v1/directories/acme/keys",
            Some(json!({"expires_at": "2099-01-31T00:00:00Z"})),
        )
        .await;
    assert_eq!(at.status, StatusCode::CREATED);
    assert_eq!(at.body["expires_at"], "2099-01-31T00:00:00.000Z");
    let cases = [
        (json!({"expires_in": "90"}), "unit"),
        (json!({"expires_in": "0d"}), "more than zero"),
        (json!({"expires_at": "tomorrow"}), "RFC 3339"),
        (json!({"expires_at": "2001-01-01T00:00:00Z"}), "future"),
        (json!({"expires_in": "1d", "expires_at": "2099-01-01T00:00:00Z"}), "not both"),
        (json!({"name": 5}), "name"),
        (json!({"secret": "mine"}), "unknown field"),
    ];
    for (body, expected) in cases {
        let detail = server
            .admin(Method::POST, "/admin/v1/directories/acme/keys", Some(body.clone()))
            .await
            .assert_admin_error(400);
        assert!(detail.contains(expected), "{body}: {detail}");
    }
    server
        .admin(Method::POST, "/admin/v1/directories/nope/keys", Some(json!({})))
        .await
        .assert_admin_error(404);
    let listed = server.admin(Method::GET, "/admin/v1/directories/acme/keys", None).await;
    assert_eq!(listed.body["items"].as_array().unwrap().len(), 2, "refused requests issued nothing");
}

async fn keys_are_listed_per_directory_only(server: TestServer) {
    server.second_directory("other");
    let acme = server.admin(Method::GET, "/admin/v1/directories/acme/keys", None).await;
    let other = server.admin(Method::GET, "/admin/v1/directories/other/keys", None).await;
    let ids = |reply: &crate::support::Reply| -> Vec<Value> {
        reply.body["items"].as_array().unwrap().iter().map(|k| k["id"].clone()).collect()
    };
    assert_eq!(ids(&acme).len(), 1);
    assert_eq!(ids(&other).len(), 1);
    assert_ne!(ids(&acme), ids(&other));
    assert_eq!(acme.body["items"][0]["directory_id"], json!(server.directory.as_str()));
    server.admin(Method::GET, "/admin/v1/directories/nope/keys", None).await.assert_admin_error(404);
}

async fn last_use_is_recorded_at_most_once_per_interval(server: TestServer) {
    let last_used = || async {
        let listed = server.admin(Method::GET, "/admin/v1/directories/acme/keys", None).await;
        listed.body["items"][0]["last_used_at"].clone()
    };
    assert_eq!(last_used().await, Value::Null);
    assert_eq!(server.get("/scim/v2/Users").await.status, StatusCode::OK);
    // Written in the background: wait for it with a deadline.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let first = loop {
        let value = last_used().await;
        if value.is_string() {
            break value;
        }
        assert!(std::time::Instant::now() < deadline, "last_used_at was never written");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    // Within the interval (60 s) further requests do not write it again.
    for _ in 0..5 {
        assert_eq!(server.get("/scim/v2/Users").await.status, StatusCode::OK);
    }
    assert_eq!(last_used().await, first);
}
