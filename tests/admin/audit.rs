//! The audit log: every change recorded with its actor in the change's own transaction (a
//! refused request leaves no entry), never a password; queried by resource, actor, directory
//! and time, paged; pruned by retention.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::support::{on_both_backends, user_body, TestServer};
use scimd::store::now_millis;

on_both_backends!(
    scim_changes_are_recorded_with_the_key_that_made_them,
    admin_changes_are_recorded_with_the_admin_token,
    the_audit_log_filters_and_pages,
    refused_audit_queries_say_what_to_fix,
    retention_deletes_only_entries_past_it,
);

async fn entries(server: &TestServer, query: &str) -> Vec<Value> {
    let reply = server.admin(Method::GET, &format!("/admin/v1/audit?{query}"), None).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    reply.body["items"].as_array().unwrap().clone()
}

async fn key_id(server: &TestServer) -> String {
    let keys = server.admin(Method::GET, "/admin/v1/directories/acme/keys", None).await;
    keys.body["items"][0]["id"].as_str().unwrap().to_string()
}

async fn scim_changes_are_recorded_with_the_key_that_made_them(server: TestServer) {
    let mut body = user_body("ada@example.com");
    body["password"] = json!("Sup3r-secret!");
    let user = server.create_user(body).await;
    let id = user["id"].as_str().unwrap().to_string();
    // Refused requests leave no entry: a duplicate userName, a failing PATCH.
    assert_eq!(
        server.post("/scim/v2/Users", &user_body("ada@example.com")).await.status,
        StatusCode::CONFLICT
    );
    let bad_patch = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
        "Operations": [{"op": "replace", "path": "title", "value": "CEO"}, {"op": "replace", "path": "nope", "value": 1}]});
    assert_eq!(
        server.patch(&format!("/scim/v2/Users/{id}"), &bad_patch).await.status,
        StatusCode::BAD_REQUEST
    );

    let deactivate = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
        "Operations": [{"op": "replace", "value": {"active": false, "password": "N3w-secret!"}}]});
    assert_eq!(server.patch(&format!("/scim/v2/Users/{id}"), &deactivate).await.status, StatusCode::OK);
    let group = server
        .post(
            "/scim/v2/Groups",
            &json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
            "displayName": "Ops", "members": [{"value": id}]}),
        )
        .await;
    assert_eq!(group.status, StatusCode::CREATED);
    let group_id = group.body["id"].as_str().unwrap().to_string();
    let remove = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
        "Operations": [{"op": "remove", "path": format!("members[value eq \"{id}\"]")}]});
    assert_eq!(
        server.patch(&format!("/scim/v2/Groups/{group_id}"), &remove).await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(server.delete(&format!("/scim/v2/Users/{id}")).await.status, StatusCode::NO_CONTENT);

    let log = entries(&server, &format!("directory=acme&actor={}", key_id(&server).await)).await;
    let summary: Vec<(String, String)> = log
        .iter()
        .rev()
        .map(|e| {
            (
                e["resource"]["type"].as_str().unwrap().to_string(),
                e["operation"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let expected = [
        ("user", "create"),
        ("user", "deactivate"),
        ("group", "create"),
        ("membership", "change"),
        ("membership", "change"),
        ("user", "deprovision"),
    ];
    let expected: Vec<(String, String)> =
        expected.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect();
    assert_eq!(summary, expected);
    for entry in &log {
        assert_eq!(entry["actor"]["kind"], "key");
        assert_eq!(entry["directory_id"], json!(server.directory.as_str()));
    }
    let text = serde_json::to_string(&log).unwrap();
    assert!(!text.contains("Sup3r-secret") && !text.contains("N3w-secret"), "no password value: {text}");
    let deactivation = &log[log.len() - 2];
    assert_eq!(deactivation["resource"]["id"], json!(id));
    // scimd never stores a password, so a password change alone changes nothing to record.
    assert_eq!(deactivation["details"]["attributes"], json!(["active"]));
    let removal = &log[1];
    assert_eq!(removal["details"]["removed"], json!([id]));
    assert_eq!(removal["details"]["removed_count"], 1);
}

async fn admin_changes_are_recorded_with_the_admin_token(server: TestServer) {
    let created = server.admin(Method::POST, "/admin/v1/directories", Some(json!({"slug": "globex"}))).await;
    let directory_id = created.body["id"].as_str().unwrap().to_string();
    server.admin(Method::PATCH, "/admin/v1/directories/globex", Some(json!({"deletion": "delete"}))).await;
    let issued =
        server.admin(Method::POST, "/admin/v1/directories/globex/keys", Some(json!({"name": "okta"}))).await;
    let token = issued.body["token"].as_str().unwrap().to_string();
    let key = issued.body["id"].as_str().unwrap().to_string();
    server.admin(Method::DELETE, &format!("/admin/v1/keys/{key}"), None).await;
    server.admin(Method::DELETE, "/admin/v1/directories/globex", None).await;

    // The deleted directory's record stays, found by its id.
    let log = entries(&server, &format!("directory_id={directory_id}")).await;
    let operations: Vec<(&str, &str)> = log
        .iter()
        .rev()
        .map(|e| (e["resource"]["type"].as_str().unwrap(), e["operation"].as_str().unwrap()))
        .collect();
    assert_eq!(
        operations,
        [
            ("directory", "create"),
            ("directory", "configure"),
            ("key", "issue"),
            ("key", "revoke"),
            ("directory", "delete")
        ]
    );
    for entry in &log {
        assert_eq!(entry["actor"]["kind"], "admin_token");
        assert!(entry["actor"]["id"].is_string());
    }
    assert_eq!(log[3]["details"]["deletion"], "delete");
    assert_eq!(log[2]["details"]["name"], "okta");
    assert!(!serde_json::to_string(&log).unwrap().contains(&token), "never the key itself");
}

async fn the_audit_log_filters_and_pages(server: TestServer) {
    let mut ids = Vec::new();
    for n in 0..5 {
        ids.push(
            server.create_user(user_body(&format!("p{n}@example.com"))).await["id"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    let (_, other_key) = server.second_directory("other");
    let reply = server
        .send(
            server
                .http
                .post(server.url("/scim/v2/Users"))
                .bearer_auth(&other_key)
                .json(&user_body("o@example.com")),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED);

    assert_eq!(entries(&server, "directory=acme&resource=user").await.len(), 5);
    assert_eq!(entries(&server, "directory=other&resource=user").await.len(), 1);
    let one = entries(&server, &format!("resource=user&resource_id={}", ids[2])).await;
    assert_eq!(one.len(), 1);
    assert_eq!(one[0]["resource"]["id"], json!(ids[2]));
    assert!(entries(&server, "until=2000-01-01T00:00:00Z").await.is_empty());
    assert_eq!(entries(&server, "resource=user&since=2000-01-01T00:00:00Z").await.len(), 6);

    // Pages of two, newest first, each entry once.
    let mut seen = Vec::new();
    let mut path = "/admin/v1/audit?directory=acme&resource=user&limit=2".to_string();
    loop {
        let page = server.admin(Method::GET, &path, None).await;
        let items = page.body["items"].as_array().unwrap();
        seen.extend(items.iter().map(|e| e["resource"]["id"].as_str().unwrap().to_string()));
        match page.body["next"].as_str() {
            Some(next) => {
                path = format!("/admin/v1/audit?directory=acme&resource=user&limit=2&cursor={next}")
            }
            None => break,
        }
    }
    ids.reverse();
    assert_eq!(seen, ids);
}

async fn refused_audit_queries_say_what_to_fix(server: TestServer) {
    let cases = [
        ("resource=users", "user, group"),
        ("since=yesterday", "RFC 3339"),
        ("cursor=abc", "cursor"),
        ("limit=0", "limit"),
        ("colour=red", "unknown audit filter"),
    ];
    for (query, expected) in cases {
        let detail = server
            .admin(Method::GET, &format!("/admin/v1/audit?{query}"), None)
            .await
            .assert_admin_error(400);
        assert!(detail.contains(expected), "{query}: {detail}");
    }
    server.admin(Method::GET, "/admin/v1/audit?directory=nope", None).await.assert_admin_error(404);
    server.admin(Method::POST, "/admin/v1/audit", None).await.assert_admin_error(405);
}

async fn retention_deletes_only_entries_past_it(server: TestServer) {
    server.create_user(user_body("old@example.com")).await;
    let cut = now_millis() + 1;
    // Wait (with a deadline) until the clock has passed the cut, so later entries are newer.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while now_millis() <= cut {
        assert!(std::time::Instant::now() < deadline);
        tokio::task::yield_now().await;
    }
    server.create_user(user_body("new@example.com")).await;
    let before = entries(&server, "resource=user").await;
    assert_eq!(before.len(), 2);
    let pruned = server.store.prune_audit(cut).await.unwrap();
    assert!(pruned >= 1, "the old user's entry, and the setup's entries, are past the cut");
    let after = entries(&server, "resource=user").await;
    assert_eq!(after.len(), 1);
    assert_eq!(after[0], before[0], "the newest entry stays");
}
