//! The per-directory deletion policy: under `deactivate` (the default) a SCIM DELETE
//! deprovisions the user, who is then gone for SCIM but kept in the repository; under `delete`
//! the row is removed. Either way nothing else in the directory changes.

use reqwest::StatusCode;
use serde_json::json;

use crate::support::{on_both_backends, user_body, TestServer};
use scimd::store::audit::Actor;
use scimd::store::directories::{self, DeletionPolicy};
use scimd::store::users;

on_both_backends!(delete_deprovisions_by_default_and_keeps_the_record, delete_policy_removes_the_row);

async fn delete_deprovisions_by_default_and_keeps_the_record(server: TestServer) {
    let mut body = user_body("lena@fjord.example");
    body["phoneNumbers"] = json!([{"value": "+47 22 00 11 22", "type": "work"}]);
    body["displayName"] = json!("Lena Hoffmann");
    let lena = server.create_user(body).await["id"].as_str().unwrap().to_string();
    let mut report = user_body("per@fjord.example");
    report["urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"] =
        json!({"manager": {"displayName": "Lena Hoffmann"}});
    let per = server.create_user(report).await["id"].as_str().unwrap().to_string();
    let group = server
        .post(
            "/scim/v2/Groups",
            &json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
            "displayName": "Pilots", "members": [{"value": lena}, {"value": per}]}),
        )
        .await;
    let group_path = format!("/scim/v2/Groups/{}", group.body["id"].as_str().unwrap());
    let path = format!("/scim/v2/Users/{lena}");

    assert_eq!(server.delete(&path).await.status, StatusCode::NO_CONTENT);
    // Gone for SCIM, as RFC 7644 requires of a deleted resource.
    server.get(&path).await.assert_error(404, None);
    server.delete(&path).await.assert_error(404, None);
    let patch = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
        "Operations": [{"op": "replace", "value": {"active": true}}]});
    server.patch(&path, &patch).await.assert_error(404, None);
    let lookup = server.get("/scim/v2/Users?filter=userName%20eq%20%22lena@fjord.example%22").await;
    assert_eq!(lookup.body["totalResults"], 0);
    assert_eq!(server.get("/scim/v2/Users").await.body["totalResults"], 1);
    // Not a member any more; the report keeps its manager text, without the link.
    let members = server.get(&group_path).await.body["members"].clone();
    assert_eq!(
        members,
        json!([{"value": per, "display": "per@fjord.example", "type": "User",
        "$ref": server.url(&format!("/scim/v2/Users/{per}"))}])
    );
    let report = server.get(&format!("/scim/v2/Users/{per}")).await.body;
    assert_eq!(
        report["urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"]["manager"],
        json!({"displayName": "Lena Hoffmann"})
    );
    // Nor can she be added to a group again.
    let add = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
        "Operations": [{"op": "add", "path": "members", "value": [{"value": lena}]}]});
    server.patch(&group_path, &add).await.assert_error(400, Some("invalidValue"));

    // The record, with its contact data, stays in the repository.
    let (directory, id) = (server.directory.clone(), lena.clone());
    let kept = server.store.read_now(move |conn, _| users::find_any(conn, &directory, &id)).unwrap();
    let (record, deprovisioned_at) = kept.expect("the deprovisioned user is kept");
    assert!(deprovisioned_at.is_some());
    assert_eq!(record.resource["phoneNumbers"], json!([{"value": "+47 22 00 11 22", "type": "work"}]));

    // The userName may be provisioned again: a new person with a new id.
    let again = server.create_user(user_body("LENA@fjord.example")).await;
    assert_ne!(again["id"].as_str().unwrap(), lena);
}

async fn delete_policy_removes_the_row(server: TestServer) {
    server
        .store
        .write_now(|conn, _| {
            directories::configure(
                conn,
                &Actor::Cli,
                "acme",
                &directories::Settings { deletion: Some(DeletionPolicy::Delete), ..Default::default() },
            )
        })
        .unwrap();
    let id = server.create_user(user_body("gone@example.com")).await["id"].as_str().unwrap().to_string();
    assert_eq!(server.delete(&format!("/scim/v2/Users/{id}")).await.status, StatusCode::NO_CONTENT);
    server.get(&format!("/scim/v2/Users/{id}")).await.assert_error(404, None);
    let directory = server.directory.clone();
    let kept = server.store.read_now(move |conn, _| users::find_any(conn, &directory, &id)).unwrap();
    assert!(kept.is_none(), "the row is removed");
}

/// Lists count live users: that count must come from one covering index, or every list of a
/// large directory reads every row (it did: pages fell to 13/s at 1M users).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_users_are_counted_from_a_covering_index() {
    use diesel::RunQueryDsl;

    #[derive(diesel::QueryableByName)]
    struct Plan {
        #[diesel(sql_type = diesel::sql_types::Text)]
        detail: String,
    }
    let server = TestServer::start(crate::support::Backend::Sqlite).await;
    let count = "EXPLAIN QUERY PLAN SELECT COUNT(*) AS n FROM users \
                 WHERE users.directory_id = 'd' AND users.deprovisioned_at IS NULL";
    let plan = server
        .store
        .read_now(|conn, _| diesel::sql_query(count).load::<Plan>(conn).map_err(scimd::store::db_error))
        .unwrap();
    let details: Vec<String> = plan.into_iter().map(|p| p.detail).collect();
    assert!(details.iter().any(|d| d.contains("COVERING INDEX users_directory_live")), "{details:?}");
}
