//! PATCH over HTTP: Okta's deactivation, Entra's dialect, atomicity and versions.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::support::{on_both_backends, user_body, TestServer};

on_both_backends!(
    deactivation_keeps_the_person_and_their_contact_data,
    entra_dialect_is_understood,
    a_failing_operation_changes_nothing,
    versions_move_only_on_real_changes_and_if_match_is_checked,
    another_directory_cannot_patch,
);

fn ops(operations: Value) -> Value {
    json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": operations})
}

async fn create(server: &TestServer) -> (String, Value) {
    let mut body = user_body("pat@example.com");
    body["phoneNumbers"] = json!([{"value": "+44 7700 900123", "type": "mobile"}]);
    let created = server.create_user(body).await;
    (format!("/scim/v2/Users/{}", created["id"].as_str().unwrap()), created)
}

async fn deactivation_keeps_the_person_and_their_contact_data(server: TestServer) {
    let (path, created) = create(&server).await;
    // Okta deactivates with a pathless replace.
    let reply = server.patch(&path, &ops(json!([{"op": "replace", "value": {"active": false}}]))).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.body["active"], false);
    let fetched = server.get(&path).await.body;
    assert_eq!(fetched["active"], false);
    for kept in ["userName", "name", "emails", "phoneNumbers"] {
        assert_eq!(fetched[kept], created[kept], "{kept} must survive deactivation");
    }
    let inactive = server.get("/scim/v2/Users?filter=active%20eq%20false").await;
    assert_eq!(inactive.body["totalResults"], 1);
    // Reactivation.
    let reply = server.patch(&path, &ops(json!([{"op": "replace", "path": "active", "value": true}]))).await;
    assert_eq!(reply.body["active"], true);
}

async fn entra_dialect_is_understood(server: TestServer) {
    let (path, _) = create(&server).await;
    let reply = server
        .patch(
            &path,
            &ops(json!([
                {"op": "Replace", "path": "active", "value": "False"},
                {"op": "Replace", "path": "emails[type eq \"work\"].value", "value": "pat.new@example.com"},
                {"op": "Add", "path": "addresses[type eq \"work\"].formatted", "value": "1 Quay St"},
                {"op": "Replace", "value": {"name.familyName": "Smith",
                    "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department": "Ops"}}
            ])),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let user = server.get(&path).await.body;
    assert_eq!(user["active"], false);
    assert_eq!(user["emails"][0]["value"], "pat.new@example.com");
    assert_eq!(user["addresses"], json!([{"type": "work", "formatted": "1 Quay St"}]));
    assert_eq!(user["name"]["familyName"], "Smith");
    assert_eq!(user["urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"]["department"], "Ops");
    // The index follows: the new address is searchable, the old one is not.
    let found = server.get("/scim/v2/Users?filter=emails.value%20eq%20%22pat.new@example.com%22").await;
    assert_eq!(found.body["totalResults"], 1);
    let gone = server.get("/scim/v2/Users?filter=emails.value%20eq%20%22pat@example.com%22").await;
    assert_eq!(gone.body["totalResults"], 0);
}

async fn a_failing_operation_changes_nothing(server: TestServer) {
    let (path, created) = create(&server).await;
    let cases = [
        (
            json!([{"op": "replace", "path": "title", "value": "Boss"}, {"op": "replace", "path": "id", "value": "x"}]),
            "mutability",
        ),
        (
            json!([{"op": "replace", "path": "title", "value": "Boss"}, {"op": "remove", "path": "userName"}]),
            "mutability",
        ),
        (
            json!([{"op": "replace", "path": "title", "value": "Boss"}, {"op": "replace", "path": "bogus", "value": 1}]),
            "invalidPath",
        ),
        (json!([{"op": "replace", "path": "title", "value": "Boss"}, {"op": "remove"}]), "noTarget"),
        (
            json!([{"op": "replace", "path": "title", "value": "Boss"}, {"op": "replace", "path": "active", "value": "maybe"}]),
            "invalidValue",
        ),
        (json!([{"op": "jump", "path": "title"}]), "invalidSyntax"),
    ];
    for (operations, scim_type) in cases {
        server.patch(&path, &ops(operations.clone())).await.assert_error(400, Some(scim_type));
        assert_eq!(server.get(&path).await.body, created, "{operations} must leave no trace");
    }
    server.patch(&path, &json!({"Operations": []})).await.assert_error(400, Some("invalidSyntax"));
}

async fn versions_move_only_on_real_changes_and_if_match_is_checked(server: TestServer) {
    let (path, _) = create(&server).await;
    let same = server.patch(&path, &ops(json!([{"op": "replace", "path": "active", "value": true}]))).await;
    assert_eq!(same.body["meta"]["version"], "W/\"1\"", "a PATCH that changes nothing keeps the version");
    let stale = server
        .send(
            server
                .json(Method::PATCH, &path, &ops(json!([{"op": "replace", "path": "title", "value": "A"}])))
                .header("if-match", "W/\"7\""),
        )
        .await;
    stale.assert_error(412, None);
    let fresh = server
        .send(
            server
                .json(Method::PATCH, &path, &ops(json!([{"op": "replace", "path": "title", "value": "A"}])))
                .header("if-match", "W/\"1\""),
        )
        .await;
    assert_eq!(fresh.status, StatusCode::OK);
    assert_eq!(fresh.body["meta"]["version"], "W/\"2\"");
    assert_eq!(fresh.header("etag"), Some("W/\"2\""));
}

async fn another_directory_cannot_patch(server: TestServer) {
    let (path, created) = create(&server).await;
    let (_, other_key) = server.second_directory("initech");
    let request = server
        .http
        .patch(server.url(&path))
        .bearer_auth(other_key)
        .header("content-type", "application/scim+json")
        .body(ops(json!([{"op": "replace", "path": "active", "value": false}])).to_string());
    server.send(request).await.assert_error(404, None);
    assert_eq!(server.get(&path).await.body, created);
}
