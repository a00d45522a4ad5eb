//! `/admin/v1/directories`: create, list (paged), get, rename and configure, delete (with and
//! without purge); bad input changes nothing.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::support::{on_both_backends, user_body, TestServer};

on_both_backends!(
    a_directory_is_created_read_listed_renamed_and_deleted,
    directory_lists_page_with_a_cursor,
    deleting_a_directory_that_holds_users_needs_purge,
    bad_directory_input_is_refused_and_changes_nothing,
    a_directory_page_size_cap_lowers_scim_pages,
);

async fn a_directory_is_created_read_listed_renamed_and_deleted(server: TestServer) {
    let created = server
        .admin(
            Method::POST,
            "/admin/v1/directories",
            Some(json!({"slug": "globex", "name": "Globex", "deletion": "delete"})),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    assert_eq!(created.body["slug"], "globex");
    assert_eq!(created.body["name"], "Globex");
    assert_eq!(created.body["deletion"], "delete");
    assert_eq!(created.body["max_page_size"], Value::Null);
    assert!(created.body["created_at"].as_str().unwrap().ends_with('Z'));

    let got = server.admin(Method::GET, "/admin/v1/directories/globex", None).await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.body, created.body);

    let listed = server.admin(Method::GET, "/admin/v1/directories", None).await;
    let slugs: Vec<&str> =
        listed.body["items"].as_array().unwrap().iter().map(|d| d["slug"].as_str().unwrap()).collect();
    assert_eq!(slugs, ["acme", "globex"]);
    assert_eq!(listed.body["next"], Value::Null);

    let renamed = server
        .admin(
            Method::PATCH,
            "/admin/v1/directories/globex",
            Some(json!({"slug": "globex-eu", "name": "Globex Europe", "max_page_size": 50})),
        )
        .await;
    assert_eq!(renamed.status, StatusCode::OK, "{}", renamed.body);
    assert_eq!(renamed.body["slug"], "globex-eu");
    assert_eq!(renamed.body["name"], "Globex Europe");
    assert_eq!(renamed.body["deletion"], "delete", "settings not sent keep their value");
    assert_eq!(renamed.body["max_page_size"], 50);
    assert_eq!(renamed.body["id"], created.body["id"]);
    server.admin(Method::GET, "/admin/v1/directories/globex", None).await.assert_admin_error(404);

    let cleared = server
        .admin(Method::PATCH, "/admin/v1/directories/globex-eu", Some(json!({"max_page_size": null})))
        .await;
    assert_eq!(cleared.body["max_page_size"], Value::Null, "null clears the cap");

    let deleted = server.admin(Method::DELETE, "/admin/v1/directories/globex-eu", None).await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    server.admin(Method::GET, "/admin/v1/directories/globex-eu", None).await.assert_admin_error(404);
    let detail =
        server.admin(Method::DELETE, "/admin/v1/directories/globex-eu", None).await.assert_admin_error(404);
    assert!(detail.contains("globex-eu"), "{detail}");
}

async fn directory_lists_page_with_a_cursor(server: TestServer) {
    for n in 0..5 {
        let slug = format!("dir-{n}");
        let reply = server.admin(Method::POST, "/admin/v1/directories", Some(json!({ "slug": slug }))).await;
        assert_eq!(reply.status, StatusCode::CREATED);
    }
    let mut seen = Vec::new();
    let mut path = "/admin/v1/directories?limit=2".to_string();
    loop {
        let page = server.admin(Method::GET, &path, None).await;
        assert_eq!(page.status, StatusCode::OK);
        let items = page.body["items"].as_array().unwrap();
        assert!(items.len() <= 2);
        seen.extend(items.iter().map(|d| d["slug"].as_str().unwrap().to_string()));
        match page.body["next"].as_str() {
            Some(next) => path = format!("/admin/v1/directories?limit=2&cursor={next}"),
            None => break,
        }
    }
    assert_eq!(seen, ["acme", "dir-0", "dir-1", "dir-2", "dir-3", "dir-4"]);
    for bad in ["limit=0", "limit=501", "limit=ten"] {
        let detail = server
            .admin(Method::GET, &format!("/admin/v1/directories?{bad}"), None)
            .await
            .assert_admin_error(400);
        assert!(detail.contains("limit"), "{detail}");
    }
}

async fn deleting_a_directory_that_holds_users_needs_purge(server: TestServer) {
    let user = server.create_user(user_body("held@example.com")).await;
    let detail =
        server.admin(Method::DELETE, "/admin/v1/directories/acme", None).await.assert_admin_error(409);
    assert!(detail.contains("1 user(s)") && detail.contains("purge=true"), "{detail}");
    // Refused: nothing changed, the key still works and the user is there.
    let id = user["id"].as_str().unwrap();
    assert_eq!(server.get(&format!("/scim/v2/Users/{id}")).await.status, StatusCode::OK);
    server
        .admin(Method::DELETE, "/admin/v1/directories/acme?purge=maybe", None)
        .await
        .assert_admin_error(400);

    let purged = server.admin(Method::DELETE, "/admin/v1/directories/acme?purge=true", None).await;
    assert_eq!(purged.status, StatusCode::NO_CONTENT, "{}", purged.body);
    // Its keys went with it.
    let detail = server.get("/scim/v2/Users").await.assert_error(401, None);
    assert!(!detail.contains("acme"), "{detail}");
    let directory = server.directory.clone();
    let remaining =
        server.store.read_now(move |conn, _| scimd::store::directories::contents(conn, &directory)).unwrap();
    assert_eq!((remaining.users, remaining.groups), (0, 0));
}

async fn bad_directory_input_is_refused_and_changes_nothing(server: TestServer) {
    let cases = [
        (json!({"slug": "Bad Slug"}), "slug"),
        (json!({"slug": "ok", "deletion": "shred"}), "deletion policy"),
        (json!({"slug": "ok", "max_page_size": 0}), "max_page_size"),
        (json!({"slug": "ok", "colour": "red"}), "unknown field"),
        (json!({"name": "no slug"}), "slug"),
        (json!({"slug": 7}), "slug"),
    ];
    for (body, expected) in cases {
        let detail = server
            .admin(Method::POST, "/admin/v1/directories", Some(body.clone()))
            .await
            .assert_admin_error(400);
        assert!(detail.contains(expected), "{body}: {detail}");
    }
    let taken = server.admin(Method::POST, "/admin/v1/directories", Some(json!({"slug": "acme"}))).await;
    assert!(taken.assert_admin_error(409).contains("already exists"));
    let not_json = server
        .send(
            server
                .http
                .post(server.url("/admin/v1/directories"))
                .bearer_auth(&server.admin_token)
                .header("content-type", "application/json")
                .body("{not json"),
        )
        .await;
    not_json.assert_admin_error(400);
    for body in
        [json!({}), json!({"deletion": "shred"}), json!({"slug": "UPPER"}), json!({"max_page_size": 10001})]
    {
        server.admin(Method::PATCH, "/admin/v1/directories/acme", Some(body)).await.assert_admin_error(400);
    }
    server.second_directory("other");
    server
        .admin(Method::PATCH, "/admin/v1/directories/acme", Some(json!({"slug": "other"})))
        .await
        .assert_admin_error(409);

    let listed = server.admin(Method::GET, "/admin/v1/directories", None).await;
    let expected = json!(["acme", "other"]);
    let slugs: Value = listed.body["items"].as_array().unwrap().iter().map(|d| d["slug"].clone()).collect();
    assert_eq!(slugs, expected);
    let acme = server.admin(Method::GET, "/admin/v1/directories/acme", None).await;
    assert_eq!(
        (acme.body["name"].as_str(), acme.body["deletion"].as_str()),
        (Some("Acme"), Some("deactivate"))
    );
    assert_eq!(acme.body["max_page_size"], Value::Null);
    let put = server.admin(Method::PUT, "/admin/v1/directories/acme", None).await;
    put.assert_admin_error(405);
    assert_eq!(put.header("allow"), Some("GET, PATCH, DELETE"));
    for bad in ["cursor=0.5", "cursor=", "limit="] {
        server
            .admin(Method::GET, &format!("/admin/v1/directories?{bad}"), None)
            .await
            .assert_admin_error(400);
    }
    let null_name =
        server.admin(Method::PATCH, "/admin/v1/directories/acme", Some(json!({"name": null}))).await;
    assert!(null_name.assert_admin_error(400).contains("name"));
    let whole =
        server.admin(Method::PATCH, "/admin/v1/directories/acme", Some(json!({"max_page_size": 40.0}))).await;
    assert_eq!(whole.body["max_page_size"], 40, "a whole number written as 40.0 is 40");
    let fraction =
        server.admin(Method::PATCH, "/admin/v1/directories/acme", Some(json!({"max_page_size": 40.5}))).await;
    assert!(fraction.assert_admin_error(400).contains("whole number"));
    server.admin(Method::GET, "/admin/v1/nothing", None).await.assert_admin_error(404);
}

async fn a_directory_page_size_cap_lowers_scim_pages(server: TestServer) {
    for n in 0..5 {
        server.create_user(user_body(&format!("u{n}@example.com"))).await;
    }
    let capped =
        server.admin(Method::PATCH, "/admin/v1/directories/acme", Some(json!({"max_page_size": 2}))).await;
    assert_eq!(capped.status, StatusCode::OK, "{}", capped.body);
    let page = server.get("/scim/v2/Users?count=100").await;
    assert_eq!(page.body["itemsPerPage"], 2);
    assert_eq!(page.body["totalResults"], 5);
    let groups = server.get("/scim/v2/Groups?count=100").await;
    assert_eq!(groups.status, StatusCode::OK);
    // Another directory keeps the server's limit.
    let (_, other_key) = server.second_directory("other");
    for n in 0..3 {
        let reply = server
            .send(
                server
                    .http
                    .post(server.url("/scim/v2/Users"))
                    .bearer_auth(&other_key)
                    .json(&user_body(&format!("o{n}@example.com"))),
            )
            .await;
        assert_eq!(reply.status, StatusCode::CREATED);
    }
    let other =
        server.send(server.http.get(server.url("/scim/v2/Users?count=100")).bearer_auth(&other_key)).await;
    assert_eq!(other.body["itemsPerPage"], 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_is_served_and_names_every_route() {
    let server = TestServer::start(crate::support::Backend::Sqlite).await;
    let reply = server.send(server.http.get(server.url("/admin/v1/openapi.json"))).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body["openapi"], "3.1.0");
    let paths: Vec<&String> = reply.body["paths"].as_object().unwrap().keys().collect();
    for path in [
        "/admin/v1/directories",
        "/admin/v1/directories/{slug}",
        "/admin/v1/directories/{slug}/keys",
        "/admin/v1/keys/{id}",
        "/admin/v1/audit",
        "/admin/v1/connections/{id}/authorize",
        "/admin/v1/entra/callback",
        "/admin/v1/directories/{slug}/saml",
        "/admin/v1/directories/{slug}/lookup",
    ] {
        assert!(paths.iter().any(|p| p.as_str() == path), "{path} missing");
    }
}
