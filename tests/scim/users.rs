//! `/scim/v2/Users`: CRUD, versions, uniqueness, projection and isolation, over real HTTP.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::support::{on_both_backends, user_body, TestServer};

const ENTERPRISE: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";

on_both_backends!(
    create_answers_201_with_location_etag_and_meta,
    get_returns_what_create_returned_and_honours_if_none_match,
    user_name_is_unique_case_insensitively_and_a_conflict_writes_nothing,
    put_replaces_keeps_active_when_omitted_and_checks_if_match,
    delete_removes_the_user_and_frees_the_user_name,
    password_is_accepted_but_never_stored_or_returned,
    another_directorys_key_sees_nothing,
    enterprise_manager_with_only_a_display_name_round_trips,
    projection_shapes_single_and_list_responses,
    paging_is_one_based_stable_and_reports_totals,
    trailing_slash_is_the_same_endpoint,
    concurrent_writes_succeed_or_fail_independently,
    paging_in_order_continues_where_the_last_page_ended_until_a_write,
);

async fn create_answers_201_with_location_etag_and_meta(server: TestServer) {
    let reply = server.post("/scim/v2/Users", &user_body("ann@example.com")).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
    let id = reply.body["id"].as_str().unwrap();
    assert_eq!(uuid::Uuid::parse_str(id).unwrap().get_version_num(), 7);
    let location = format!("{}/scim/v2/Users/{id}", server.base_url);
    assert_eq!(reply.header("location"), Some(location.as_str()));
    assert_eq!(reply.body["meta"]["location"], location);
    assert_eq!(reply.body["meta"]["resourceType"], "User");
    assert_eq!(reply.body["meta"]["version"], "W/\"1\"");
    assert_eq!(reply.header("etag"), Some("W/\"1\""));
    assert_eq!(reply.body["meta"]["created"], reply.body["meta"]["lastModified"]);
    assert!(reply.header("content-type").unwrap().starts_with("application/scim+json"));
    assert_eq!(reply.body["schemas"], json!(["urn:ietf:params:scim:schemas:core:2.0:User"]));
    assert_eq!(reply.body["userName"], "ann@example.com");
    assert_eq!(reply.body["active"], true);
}

async fn get_returns_what_create_returned_and_honours_if_none_match(server: TestServer) {
    let created = server.create_user(user_body("bob@example.com")).await;
    let path = format!("/scim/v2/Users/{}", created["id"].as_str().unwrap());
    let reply = server.get(&path).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body, created);
    let not_modified =
        server.send(server.request(Method::GET, &path).header("if-none-match", "W/\"1\"")).await;
    assert_eq!(not_modified.status, StatusCode::NOT_MODIFIED);
    let modified = server.send(server.request(Method::GET, &path).header("if-none-match", "W/\"0\"")).await;
    assert_eq!(modified.status, StatusCode::OK);
    server.get("/scim/v2/Users/00000000-0000-0000-0000-000000000000").await.assert_error(404, None);
}

async fn user_name_is_unique_case_insensitively_and_a_conflict_writes_nothing(server: TestServer) {
    server.create_user(user_body("Carol@Example.com")).await;
    let reply = server.post("/scim/v2/Users", &user_body("carol@EXAMPLE.COM")).await;
    let detail = reply.assert_error(409, Some("uniqueness"));
    assert!(detail.contains("carol@EXAMPLE.COM"), "{detail}");
    let list = server.get("/scim/v2/Users").await;
    assert_eq!(list.body["totalResults"], 1);

    // Renaming another user onto a taken name is refused too, and changes nothing.
    let dave = server.create_user(user_body("dave@example.com")).await;
    let path = format!("/scim/v2/Users/{}", dave["id"].as_str().unwrap());
    server.put(&path, &user_body("CAROL@example.com")).await.assert_error(409, Some("uniqueness"));
    assert_eq!(server.get(&path).await.body, dave);
}

async fn put_replaces_keeps_active_when_omitted_and_checks_if_match(server: TestServer) {
    let mut body = user_body("erin@example.com");
    body["active"] = json!(false);
    body["title"] = json!("Clerk");
    let created = server.create_user(body).await;
    let id = created["id"].as_str().unwrap();
    let path = format!("/scim/v2/Users/{id}");

    // Okta's read-modify-write PUT echoes id and meta; omitted attributes are cleared.
    let replacement = json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
        "id": "someone-else", "meta": {"version": "W/\"77\""},
        "userName": "erin@example.com", "displayName": "Erin E"
    });
    let reply =
        server.send(server.json(Method::PUT, &path, &replacement).header("if-match", "W/\"1\"")).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.body["id"], id);
    assert_eq!(reply.body["displayName"], "Erin E");
    assert!(reply.body.get("title").is_none(), "omitted attributes are cleared: {}", reply.body);
    assert!(reply.body.get("emails").is_none());
    assert_eq!(reply.body["active"], false, "active omitted on PUT keeps its value");
    assert_eq!(reply.body["meta"]["version"], "W/\"2\"");
    assert_eq!(reply.body["meta"]["created"], created["meta"]["created"]);

    // A stale version is refused and changes nothing.
    let stale = server
        .send(server.json(Method::PUT, &path, &user_body("erin@example.com")).header("if-match", "W/\"1\""))
        .await;
    stale.assert_error(412, None);
    assert_eq!(server.get(&path).await.body["displayName"], "Erin E");

    // The same content again is not a change: the version stays.
    let again = server.put(&path, &replacement).await;
    assert_eq!(again.body["meta"]["version"], "W/\"2\"");

    server.put("/scim/v2/Users/nope", &replacement).await.assert_error(404, None);
}

async fn delete_removes_the_user_and_frees_the_user_name(server: TestServer) {
    let created = server.create_user(user_body("fay@example.com")).await;
    let path = format!("/scim/v2/Users/{}", created["id"].as_str().unwrap());
    let stale = server.send(server.request(Method::DELETE, &path).header("if-match", "W/\"9\"")).await;
    stale.assert_error(412, None);
    let reply = server.delete(&path).await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    server.get(&path).await.assert_error(404, None);
    server.delete(&path).await.assert_error(404, None);
    server.put(&path, &user_body("fay@example.com")).await.assert_error(404, None);
    assert_eq!(server.get("/scim/v2/Users").await.body["totalResults"], 0);
    server.create_user(user_body("fay@example.com")).await;
}

async fn password_is_accepted_but_never_stored_or_returned(server: TestServer) {
    let mut body = user_body("gil@example.com");
    body["password"] = json!("correct horse battery staple");
    let created = server.create_user(body).await;
    assert!(created.get("password").is_none());
    let id = created["id"].as_str().unwrap().to_string();
    let fetched = server.get(&format!("/scim/v2/Users/{id}?attributes=password,userName")).await;
    assert!(fetched.body.get("password").is_none());
    let directory = server.directory.clone();
    let stored = server
        .store
        .read_now(move |conn, _| Ok(scimd::store::users::get(conn, &directory, &id)?.resource))
        .unwrap();
    assert!(!Value::Object(stored).to_string().contains("horse"));
}

async fn another_directorys_key_sees_nothing(server: TestServer) {
    let created = server.create_user(user_body("hal@example.com")).await;
    let path = format!("/scim/v2/Users/{}", created["id"].as_str().unwrap());
    let (_, other_key) = server.second_directory("globex");
    let as_other = |method: Method| server.http.request(method, server.url(&path)).bearer_auth(&other_key);

    server.send(as_other(Method::GET)).await.assert_error(404, None);
    server
        .send(
            as_other(Method::PUT)
                .header("content-type", "application/scim+json")
                .body(user_body("x@y").to_string()),
        )
        .await
        .assert_error(404, None);
    server.send(as_other(Method::DELETE)).await.assert_error(404, None);
    let list = server.send(server.http.get(server.url("/scim/v2/Users")).bearer_auth(&other_key)).await;
    assert_eq!(list.body["totalResults"], 0);
    // The same userName is free in the other directory.
    let reply = server
        .send(
            server
                .http
                .post(server.url("/scim/v2/Users"))
                .bearer_auth(&other_key)
                .header("content-type", "application/scim+json")
                .body(user_body("hal@example.com").to_string()),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED);
    assert_eq!(server.get(&path).await.body, created, "the first directory's user is untouched");
}

async fn enterprise_manager_with_only_a_display_name_round_trips(server: TestServer) {
    let mut body = user_body("ivy@example.com");
    body["schemas"] = json!(["urn:ietf:params:scim:schemas:core:2.0:User", ENTERPRISE]);
    body[ENTERPRISE] =
        json!({"employeeNumber": "42", "department": "Ops", "manager": {"displayName": "Jo Boss"}});
    let created = server.create_user(body).await;
    assert_eq!(created["schemas"], json!(["urn:ietf:params:scim:schemas:core:2.0:User", ENTERPRISE]));
    assert_eq!(
        created[ENTERPRISE],
        json!({"employeeNumber": "42", "department": "Ops", "manager": {"displayName": "Jo Boss"}})
    );
    let fetched = server.get(&format!("/scim/v2/Users/{}", created["id"].as_str().unwrap())).await;
    assert_eq!(fetched.body[ENTERPRISE]["manager"]["displayName"], "Jo Boss");
}

async fn projection_shapes_single_and_list_responses(server: TestServer) {
    let created = server.create_user(user_body("jan@example.com")).await;
    let path =
        format!("/scim/v2/Users/{}?attributes=userName,name.familyName", created["id"].as_str().unwrap());
    let reply = server.get(&path).await;
    assert_eq!(
        reply.body,
        json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "id": created["id"],
               "userName": "jan@example.com", "name": {"familyName": "User"}})
    );
    let list = server.get("/scim/v2/Users?excludedAttributes=emails,meta,name").await;
    let item = &list.body["Resources"][0];
    assert!(item.get("emails").is_none() && item.get("meta").is_none() && item.get("name").is_none());
    assert_eq!(item["userName"], "jan@example.com");
    // Projection applies to write responses too.
    let reply = server.post("/scim/v2/Users?attributes=userName", &user_body("kim@example.com")).await;
    assert_eq!(reply.status, StatusCode::CREATED);
    assert!(reply.body.get("emails").is_none() && reply.body["id"].is_string());
}

async fn paging_is_one_based_stable_and_reports_totals(server: TestServer) {
    let mut ids = Vec::new();
    for n in 0..7 {
        ids.push(server.create_user(user_body(&format!("user{n}@example.com"))).await["id"].clone());
    }
    let page = server.get("/scim/v2/Users?startIndex=3&count=2").await;
    assert_eq!(page.body["schemas"], json!(["urn:ietf:params:scim:api:messages:2.0:ListResponse"]));
    assert_eq!(page.body["totalResults"], 7);
    assert_eq!(page.body["itemsPerPage"], 2);
    assert_eq!(page.body["startIndex"], 3);
    let got: Vec<Value> =
        page.body["Resources"].as_array().unwrap().iter().map(|r| r["id"].clone()).collect();
    assert_eq!(got, ids[2..4].to_vec(), "without sortBy, pages follow creation order");

    // A last, partial page and a filtered first page report the same totals.
    let last = server.get("/scim/v2/Users?startIndex=6&count=5").await;
    assert_eq!((last.body["totalResults"].clone(), last.body["itemsPerPage"].clone()), (json!(7), json!(2)));
    let filtered = server.get("/scim/v2/Users?filter=userName%20sw%20%22user1%22").await;
    assert_eq!(
        (filtered.body["totalResults"].clone(), filtered.body["itemsPerPage"].clone()),
        (json!(1), json!(1))
    );

    let only_total = server.get("/scim/v2/Users?count=0").await;
    assert_eq!(only_total.body["totalResults"], 7);
    assert_eq!(only_total.body["Resources"], json!([]));
    let past_end = server.get("/scim/v2/Users?startIndex=50").await;
    assert_eq!(past_end.body["Resources"], json!([]));
    assert_eq!(past_end.body["totalResults"], 7);
    let clamped = server.get("/scim/v2/Users?startIndex=-4&count=100000").await;
    assert_eq!(clamped.body["itemsPerPage"], 7);
    assert_eq!(clamped.body["startIndex"], 1);
    server.get("/scim/v2/Users?count=lots").await.assert_error(400, Some("invalidValue"));
}

async fn trailing_slash_is_the_same_endpoint(server: TestServer) {
    let reply = server.post("/scim/v2/Users/", &user_body("lee@example.com")).await;
    assert_eq!(reply.status, StatusCode::CREATED);
    assert_eq!(server.get("/scim/v2/Users/").await.body["totalResults"], 1);
}

async fn concurrent_writes_succeed_or_fail_independently(server: TestServer) {
    // 60 creates at once, a third of them duplicates: on SQLite they share group commits,
    // and a failing one must not take the others down with it.
    let requests = (0..60).map(|n| {
        let name = format!("user{}@example.com", n % 40);
        let server = &server;
        async move { server.post("/scim/v2/Users", &user_body(&name)).await.status }
    });
    let statuses = futures_util::future::join_all(requests).await;
    let created = statuses.iter().filter(|s| **s == StatusCode::CREATED).count();
    let conflicts = statuses.iter().filter(|s| **s == StatusCode::CONFLICT).count();
    assert_eq!((created, conflicts), (40, 20), "{statuses:?}");
    assert_eq!(server.get("/scim/v2/Users?count=0").await.body["totalResults"], 40);
}

async fn paging_in_order_continues_where_the_last_page_ended_until_a_write(server: TestServer) {
    let mut ids = Vec::new();
    for n in 0..7 {
        ids.push(server.create_user(user_body(&format!("p{n}@example.com"))).await["id"].clone());
    }
    let page = |start: u64| {
        let server = &server;
        async move {
            let reply = server.get(&format!("/scim/v2/Users?startIndex={start}&count=3")).await;
            let got: Vec<Value> =
                reply.body["Resources"].as_array().unwrap().iter().map(|r| r["id"].clone()).collect();
            (reply.body["totalResults"].clone(), got)
        }
    };
    // An IdP's import: each page continues after the one before (served from remembered ends).
    assert_eq!(page(1).await, (json!(7), ids[0..3].to_vec()));
    assert_eq!(page(4).await, (json!(7), ids[3..6].to_vec()));
    assert_eq!(page(7).await, (json!(7), ids[6..7].to_vec()));
    assert_eq!(page(4).await, (json!(7), ids[3..6].to_vec()), "asking again gives the same page");

    // A write makes remembered positions and totals stale: offsets count afresh.
    let first = format!("/scim/v2/Users/{}", ids[0].as_str().unwrap());
    assert_eq!(server.delete(&first).await.status, StatusCode::NO_CONTENT);
    assert_eq!(page(4).await, (json!(6), ids[4..7].to_vec()));
    server.create_user(user_body("p7@example.com")).await;
    assert_eq!(page(1).await.0, json!(7));
}
