//! Groups over HTTP: CRUD, relational membership (Okta's and Entra's PATCH shapes), filters,
//! projection, users' derived `groups`, and isolation between directories.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::support::{on_both_backends, user_body, TestServer};

on_both_backends!(
    a_group_is_created_read_listed_renamed_and_deleted,
    members_are_added_and_removed_as_okta_and_entra_send_them,
    unknown_members_are_refused_by_id_and_nothing_changes,
    filters_find_groups_by_name_external_id_and_member,
    excluded_members_are_not_returned,
    users_show_their_groups_and_deletions_leave_no_dangling_members,
    put_replaces_name_and_membership,
    display_names_are_unique_per_directory_case_insensitively,
    another_directory_cannot_see_or_change_a_group,
    root_search_spans_users_then_groups,
);

const GROUP_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";

fn ops(operations: Value) -> Value {
    json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": operations})
}

fn group_body(name: &str, members: &[&str]) -> Value {
    let members: Vec<Value> = members.iter().map(|id| json!({"value": id})).collect();
    json!({"schemas": [GROUP_SCHEMA], "displayName": name, "members": members})
}

async fn user(server: &TestServer, user_name: &str) -> String {
    server.create_user(user_body(user_name)).await["id"].as_str().unwrap().to_string()
}

async fn create_group(server: &TestServer, body: Value) -> (String, Value) {
    let reply = server.post("/scim/v2/Groups", &body).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
    let id = reply.body["id"].as_str().unwrap().to_string();
    (format!("/scim/v2/Groups/{id}"), reply.body)
}

fn member_ids(group: &Value) -> Vec<String> {
    let mut ids: Vec<String> = group["members"]
        .as_array()
        .map(|members| members.iter().map(|m| m["value"].as_str().unwrap().to_string()).collect())
        .unwrap_or_default();
    ids.sort();
    ids
}

fn sorted(ids: &[&String]) -> Vec<String> {
    let mut ids: Vec<String> = ids.iter().map(|s| s.to_string()).collect();
    ids.sort();
    ids
}

async fn a_group_is_created_read_listed_renamed_and_deleted(server: TestServer) {
    let ann = user(&server, "ann@example.com").await;
    // Okta's Push Groups body: a name and no members.
    let reply = server
        .post(
            "/scim/v2/Groups",
            &json!({"schemas": [GROUP_SCHEMA], "displayName": "Harbour Ops — Bergen", "members": []}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
    let id = reply.body["id"].as_str().unwrap().to_string();
    let path = format!("/scim/v2/Groups/{id}");
    assert_eq!(reply.header("location"), Some(server.url(&path).as_str()));
    assert!(reply.header("content-type").unwrap().starts_with("application/scim+json"));
    assert_eq!(reply.body["schemas"], json!([GROUP_SCHEMA]));
    assert_eq!(reply.body["displayName"], "Harbour Ops — Bergen");
    // An empty group has no members to show: omitted (never null), which Okta accepts.
    assert!(reply.body.get("members").is_none_or(|m| m == &json!([])), "{}", reply.body);
    assert_eq!(reply.body["meta"]["resourceType"], "Group");
    assert_eq!(reply.body["meta"]["version"], "W/\"1\"");

    // Okta renames with a pathless replace that echoes the id: 204, one new version.
    let rename =
        ops(json!([{"op": "replace", "value": {"id": id, "displayName": "Harbour Ops — Bergen & Ålesund"}}]));
    let reply = server.patch(&path, &rename).await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{}", reply.body);
    assert_eq!(reply.header("etag"), Some("W/\"2\""));
    // The same rename again changes nothing, not even the version.
    assert_eq!(server.patch(&path, &rename).await.header("etag"), Some("W/\"2\""));
    // Entra renames with a capitalised op and a path; asking for attributes returns the group.
    let reply = server
        .patch(
            &format!("{path}?attributes=displayName"),
            &ops(json!([{"op": "Replace", "path": "displayName", "value": "Ops"}])),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.body["displayName"], "Ops");
    assert!(reply.body.get("members").is_none());

    let reply =
        server.patch(&path, &ops(json!([{"op": "add", "path": "members", "value": [{"value": ann}]}]))).await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    let fetched = server.get(&path).await;
    assert_eq!(fetched.status, StatusCode::OK);
    assert_eq!(fetched.body["members"][0]["value"], ann.as_str());
    assert_eq!(fetched.body["members"][0]["display"], "ann@example.com");
    assert_eq!(fetched.body["members"][0]["type"], "User");
    assert_eq!(fetched.body["members"][0]["$ref"], server.url(&format!("/scim/v2/Users/{ann}")).as_str());
    assert_eq!(fetched.body["meta"]["version"], "W/\"4\"");

    // Okta's import walks the list: integers, stable order.
    let listed = server.get("/scim/v2/Groups?startIndex=1&count=100").await;
    assert_eq!(listed.status, StatusCode::OK);
    assert_eq!(listed.body["totalResults"], 1);
    assert_eq!(listed.body["startIndex"], 1);
    assert_eq!(listed.body["Resources"][0]["id"], id.as_str());
    let searched = server.post("/scim/v2/Groups/.search", &json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:SearchRequest"], "filter": "displayName eq \"ops\""})).await;
    assert_eq!(searched.body["totalResults"], 1, "{}", searched.body);

    assert_eq!(server.delete(&path).await.status, StatusCode::NO_CONTENT);
    server.get(&path).await.assert_error(404, None);
    server.delete(&path).await.assert_error(404, None);
    // Deleting a group never deletes its members.
    assert_eq!(server.get(&format!("/scim/v2/Users/{ann}")).await.status, StatusCode::OK);
}

async fn members_are_added_and_removed_as_okta_and_entra_send_them(server: TestServer) {
    let mut ids = Vec::new();
    for n in 0..4 {
        ids.push(user(&server, &format!("m{n}@example.com")).await);
    }
    let (path, _) = create_group(&server, group_body("Pilots", &[&ids[0]])).await;

    // Okta: remove by filter and add, in one PATCH; adding a present member is a no-op.
    let reply = server
        .patch(
            &path,
            &ops(json!([
                {"op": "remove", "path": format!("members[value eq \"{}\"]", ids[0])},
                {"op": "add", "path": "members", "value": [
                    {"value": ids[1], "display": "m1@example.com"}, {"value": ids[2], "display": "m2@example.com"}]}
            ])),
        )
        .await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{}", reply.body);
    assert_eq!(member_ids(&server.get(&path).await.body), sorted(&[&ids[1], &ids[2]]));

    // Entra: Add with "$ref": null; re-adding an existing member succeeds.
    let add = ops(
        json!([{"op": "Add", "path": "members", "value": [{"$ref": null, "value": ids[3]}, {"$ref": null, "value": ids[1]}]}]),
    );
    assert_eq!(server.patch(&path, &add).await.status, StatusCode::NO_CONTENT);
    let version = server.get(&path).await.body["meta"]["version"].clone();
    // Repeating the whole PATCH (Entra retries) changes nothing, version included.
    assert_eq!(server.patch(&path, &add).await.status, StatusCode::NO_CONTENT);
    assert_eq!(server.get(&path).await.body["meta"]["version"], version);

    // Entra without its 2020 flag: remove with path "members" and a value list removes only those.
    let remove = ops(json!([{"op": "Remove", "path": "members", "value": [{"value": ids[1]}]}]));
    assert_eq!(server.patch(&path, &remove).await.status, StatusCode::NO_CONTENT);
    assert_eq!(member_ids(&server.get(&path).await.body), sorted(&[&ids[2], &ids[3]]));
    // Removing someone who is not a member, or an id nobody has, is not an error.
    let remove_absent = ops(json!([{"op": "remove", "path": "members[value eq \"no-such-user\"]"}]));
    assert_eq!(server.patch(&path, &remove_absent).await.status, StatusCode::NO_CONTENT);
    assert_eq!(server.patch(&path, &remove).await.status, StatusCode::NO_CONTENT);

    // Okta may push the full membership.
    let replace = ops(json!([{"op": "replace", "path": "members", "value": [{"value": ids[0]}]}]));
    assert_eq!(server.patch(&path, &replace).await.status, StatusCode::NO_CONTENT);
    assert_eq!(member_ids(&server.get(&path).await.body), vec![ids[0].clone()]);
    // A remove on "members" without a value empties the group.
    assert_eq!(
        server.patch(&path, &ops(json!([{"op": "remove", "path": "members"}]))).await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(member_ids(&server.get(&path).await.body), Vec::<String>::new());
}

async fn unknown_members_are_refused_by_id_and_nothing_changes(server: TestServer) {
    let ann = user(&server, "ann@example.com").await;
    let bob = user(&server, "bob@example.com").await;
    let (path, created) = create_group(&server, group_body("Crew", &[&ann])).await;
    let reply = server
        .patch(
            &path,
            &ops(json!([
                {"op": "replace", "path": "displayName", "value": "Renamed"},
                {"op": "add", "path": "members", "value": [{"value": bob}, {"value": "ghost-1"}, {"value": "ghost-2"}]}
            ])),
        )
        .await;
    let detail = reply.assert_error(400, Some("invalidValue"));
    assert!(detail.contains("'ghost-1'") && detail.contains("'ghost-2'"), "{detail}");
    assert!(!detail.contains(&bob), "{detail}");
    let after = server.get(&path).await.body;
    assert_eq!(after["displayName"], "Crew");
    assert_eq!(member_ids(&after), vec![ann.clone()]);
    assert_eq!(after["meta"]["version"], created["meta"]["version"]);
    // The same on create: no group is made.
    server
        .post("/scim/v2/Groups", &group_body("Ghosts", &["ghost-3"]))
        .await
        .assert_error(400, Some("invalidValue"));
    assert_eq!(
        server.get("/scim/v2/Groups?filter=displayName%20eq%20%22Ghosts%22").await.body["totalResults"],
        0
    );
    // Members of another directory are unknown here.
    let (_, other_key) = server.second_directory("initech");
    let outsider = server
        .send(
            server
                .http
                .post(server.url("/scim/v2/Users"))
                .bearer_auth(&other_key)
                .json(&user_body("out@initech.example")),
        )
        .await;
    let outsider_id = outsider.body["id"].as_str().unwrap();
    let add = ops(json!([{"op": "add", "path": "members", "value": [{"value": outsider_id}]}]));
    server.patch(&path, &add).await.assert_error(400, Some("invalidValue"));
    // Malformed member values and unsupported member paths say what is wrong.
    let no_value = ops(json!([{"op": "add", "path": "members", "value": [{"display": "x"}]}]));
    assert!(server.patch(&path, &no_value).await.assert_error(400, Some("invalidValue")).contains("value"));
    let by_display = ops(json!([{"op": "remove", "path": "members[display eq \"x\"]"}]));
    server.patch(&path, &by_display).await.assert_error(400, Some("invalidFilter"));
}

async fn filters_find_groups_by_name_external_id_and_member(server: TestServer) {
    let ann = user(&server, "ann@example.com").await;
    let bob = user(&server, "bob@example.com").await;
    let mut entra = group_body("Terminal Planning (PL)", &[&ann]);
    entra["externalId"] = json!("e2c4a6f8-1b3d-4f5a-8c7e-9d0b1a2c3e4f");
    entra["schemas"] =
        json!([GROUP_SCHEMA, "http://schemas.microsoft.com/2006/11/ResourceManagement/ADSCIM/2.0/Group"]);
    let (_, planning) = create_group(&server, entra).await;
    let (_, crew) = create_group(&server, group_body("Crew", &[&ann, &bob])).await;

    let find = |filter: &str| {
        let query: String = url::form_urlencoded::byte_serialize(filter.as_bytes()).collect();
        format!("/scim/v2/Groups?filter={query}&excludedAttributes=members")
    };
    let names = |reply: &Value| -> Vec<String> {
        let mut names: Vec<String> = reply["Resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| g["displayName"].as_str().unwrap().to_string())
            .collect();
        names.sort();
        names
    };
    let cases: Vec<(String, Vec<&str>)> = vec![
        ("displayName eq \"terminal planning (pl)\"".into(), vec!["Terminal Planning (PL)"]),
        ("externalId eq \"e2c4a6f8-1b3d-4f5a-8c7e-9d0b1a2c3e4f\"".into(), vec!["Terminal Planning (PL)"]),
        (format!("members[value eq \"{bob}\"]"), vec!["Crew"]),
        (format!("members.value eq \"{ann}\""), vec!["Crew", "Terminal Planning (PL)"]),
        // Entra's membership check: the group if the user is a member, else nothing.
        (format!("id eq \"{}\" and members eq \"{bob}\"", planning["id"].as_str().unwrap()), vec![]),
        (format!("id eq \"{}\" and members eq \"{bob}\"", crew["id"].as_str().unwrap()), vec!["Crew"]),
        ("displayName sw \"Ter\" or displayName eq \"nobody\"".into(), vec!["Terminal Planning (PL)"]),
        ("not (members pr)".into(), vec![]),
        ("displayName eq \"b6f0d0c4-3e0e-4c4b-9f1c-2f6e1d0a7b33\"".into(), vec![]),
    ];
    for (filter, expected) in cases {
        let reply = server.get(&find(&filter)).await;
        assert_eq!(reply.status, StatusCode::OK, "{filter}: {}", reply.body);
        assert_eq!(names(&reply.body), expected, "{filter}");
    }
    let reply = server.get(&find("members.display eq \"ann@example.com\"")).await;
    assert!(reply.assert_error(400, Some("invalidFilter")).contains("members.value"));
    server.get(&find("userName eq \"x\"")).await.assert_error(400, Some("invalidFilter"));
    let sorted = server
        .get("/scim/v2/Groups?sortBy=displayName&sortOrder=descending&excludedAttributes=members")
        .await;
    assert_eq!(sorted.body["Resources"][0]["displayName"], "Terminal Planning (PL)");
    // A listing with members gives each group its own (read for the whole page at once).
    let listed = server.get("/scim/v2/Groups?sortBy=displayName").await.body;
    assert_eq!(listed["Resources"][0]["displayName"], "Crew");
    let mut crew_members = vec![ann.clone(), bob.clone()];
    crew_members.sort();
    assert_eq!(member_ids(&listed["Resources"][0]), crew_members);
    assert_eq!(member_ids(&listed["Resources"][1]), vec![ann.clone()]);
}

async fn excluded_members_are_not_returned(server: TestServer) {
    let ann = user(&server, "ann@example.com").await;
    let (path, _) = create_group(&server, group_body("Crew", &[&ann])).await;
    let reply = server.get(&format!("{path}?excludedAttributes=members")).await;
    assert_eq!(reply.body["displayName"], "Crew");
    assert!(reply.body.get("members").is_none(), "{}", reply.body);
    let reply = server.get("/scim/v2/Groups?excludedAttributes=members").await;
    assert!(reply.body["Resources"][0].get("members").is_none());
    let reply = server.get(&format!("{path}?attributes=members.value")).await;
    assert_eq!(reply.body["members"], json!([{"value": ann}]));
    assert!(reply.body.get("displayName").is_none());
}

async fn users_show_their_groups_and_deletions_leave_no_dangling_members(server: TestServer) {
    let ann = user(&server, "ann@example.com").await;
    let bob = user(&server, "bob@example.com").await;
    let (crew_path, crew) = create_group(&server, group_body("Crew", &[&ann, &bob])).await;
    let (pilots_path, pilots) = create_group(&server, group_body("Pilots", &[&ann])).await;

    let fetched = server.get(&format!("/scim/v2/Users/{ann}")).await.body;
    let mut groups: Vec<(String, String)> = fetched["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| (g["value"].as_str().unwrap().to_string(), g["display"].as_str().unwrap().to_string()))
        .collect();
    groups.sort();
    let mut expected = vec![
        (crew["id"].as_str().unwrap().to_string(), "Crew".to_string()),
        (pilots["id"].as_str().unwrap().to_string(), "Pilots".to_string()),
    ];
    expected.sort();
    assert_eq!(groups, expected);
    assert_eq!(
        fetched["groups"][0]["$ref"],
        server.url(&format!("/scim/v2/Groups/{}", groups[0].0)).as_str(),
        "{}",
        fetched
    );
    // In lists too, and `groups` is read-only: a client cannot write it.
    let listed = server.get("/scim/v2/Users?filter=userName%20eq%20%22bob@example.com%22").await.body;
    assert_eq!(listed["Resources"][0]["groups"][0]["display"], "Crew");
    let mut body = user_body("bob@example.com");
    body["groups"] = json!([{"value": pilots["id"]}]);
    let replaced = server.put(&format!("/scim/v2/Users/{bob}"), &body).await;
    assert_eq!(replaced.body["groups"].as_array().unwrap().len(), 1, "{}", replaced.body);

    // Deleting a group removes it from its members' groups.
    assert_eq!(server.delete(&pilots_path).await.status, StatusCode::NO_CONTENT);
    assert_eq!(
        server.get(&format!("/scim/v2/Users/{ann}")).await.body["groups"].as_array().unwrap().len(),
        1
    );
    // Deleting a user removes their memberships.
    assert_eq!(server.delete(&format!("/scim/v2/Users/{bob}")).await.status, StatusCode::NO_CONTENT);
    assert_eq!(member_ids(&server.get(&crew_path).await.body), vec![ann.clone()]);
    // A user without groups has no `groups` attribute at all.
    let carol = user(&server, "carol@example.com").await;
    assert!(server.get(&format!("/scim/v2/Users/{carol}")).await.body.get("groups").is_none());
    // A page of three users (their groups are read in one padded statement) gets each its own.
    let dave = user(&server, "dave@example.com").await;
    let page = server.get("/scim/v2/Users?attributes=groups").await.body;
    let groups_by_user: Vec<(String, usize)> = page["Resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| (u["id"].as_str().unwrap().to_string(), u["groups"].as_array().map_or(0, Vec::len)))
        .collect();
    assert_eq!(groups_by_user, vec![(ann.clone(), 1), (carol, 0), (dave, 0)]);
}

async fn put_replaces_name_and_membership(server: TestServer) {
    let ann = user(&server, "ann@example.com").await;
    let bob = user(&server, "bob@example.com").await;
    let (path, created) = create_group(&server, group_body("Crew", &[&ann])).await;
    // Okta's AIW PUT, echoing the id.
    let mut body = group_body("Crew (all)", &[&bob]);
    body["id"] = created["id"].clone();
    let reply = server.put(&path, &body).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.body["displayName"], "Crew (all)");
    assert_eq!(member_ids(&reply.body), vec![bob.clone()]);
    assert_eq!(reply.body["meta"]["version"], "W/\"2\"");
    // A stale If-Match is refused and changes nothing.
    let stale = server.json(Method::PUT, &path, &group_body("Stale", &[])).header("if-match", "W/\"1\"");
    server.send(stale).await.assert_error(412, None);
    assert_eq!(server.get(&path).await.body["displayName"], "Crew (all)");
    // A body without displayName is refused.
    server.put(&path, &json!({"schemas": [GROUP_SCHEMA]})).await.assert_error(400, Some("invalidValue"));
}

async fn display_names_are_unique_per_directory_case_insensitively(server: TestServer) {
    create_group(&server, group_body("Crew", &[])).await;
    let detail =
        server.post("/scim/v2/Groups", &group_body("CREW", &[])).await.assert_error(409, Some("uniqueness"));
    assert!(detail.contains("CREW"), "{detail}");
    let (path, _) = create_group(&server, group_body("Pilots", &[])).await;
    let rename = ops(json!([{"op": "replace", "path": "displayName", "value": "crew"}]));
    server.patch(&path, &rename).await.assert_error(409, Some("uniqueness"));
    // Another directory may use the name.
    let (_, other_key) = server.second_directory("initech");
    let reply = server
        .send(
            server
                .http
                .post(server.url("/scim/v2/Groups"))
                .bearer_auth(&other_key)
                .json(&group_body("Crew", &[])),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
}

async fn another_directory_cannot_see_or_change_a_group(server: TestServer) {
    let ann = user(&server, "ann@example.com").await;
    let (path, _) = create_group(&server, group_body("Crew", &[&ann])).await;
    let (_, other_key) = server.second_directory("initech");
    let as_other = |method: Method| server.http.request(method, server.url(&path)).bearer_auth(&other_key);
    server.send(as_other(Method::GET)).await.assert_error(404, None);
    server.send(as_other(Method::DELETE)).await.assert_error(404, None);
    let patch = as_other(Method::PATCH).json(&ops(json!([{"op": "remove", "path": "members"}])));
    server.send(patch).await.assert_error(404, None);
    let listed = server.send(server.http.get(server.url("/scim/v2/Groups")).bearer_auth(&other_key)).await;
    assert_eq!(listed.body["totalResults"], 0);
    assert_eq!(member_ids(&server.get(&path).await.body), vec![ann]);
}

async fn root_search_spans_users_then_groups(server: TestServer) {
    let ann = user(&server, "ann@example.com").await;
    let bob = user(&server, "bob@example.com").await;
    let (_, crew) = create_group(&server, group_body("Crew", &[&ann])).await;
    let (_, pilots) = create_group(&server, group_body("Pilots", &[])).await;
    let server = &server;
    let search = |body: Value| async move { server.post("/scim/v2/.search", &body).await };
    let ids = |reply: &Value| -> Vec<String> {
        reply["Resources"].as_array().unwrap().iter().map(|r| r["id"].as_str().unwrap().to_string()).collect()
    };
    let all = search(json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:SearchRequest"]})).await;
    assert_eq!(all.status, StatusCode::OK, "{}", all.body);
    assert_eq!(all.body["totalResults"], 4);
    let everyone = vec![
        ann.clone(),
        bob.clone(),
        crew["id"].as_str().unwrap().to_string(),
        pilots["id"].as_str().unwrap().to_string(),
    ];
    assert_eq!(ids(&all.body), everyone);
    // One list, paged across the boundary between the types.
    let page = search(json!({"startIndex": 2, "count": 2})).await;
    assert_eq!(page.body["totalResults"], 4);
    assert_eq!(ids(&page.body), everyone[1..3].to_vec());
    let last = search(json!({"startIndex": 4, "count": 10})).await;
    assert_eq!(ids(&last.body), everyone[3..].to_vec());
    // A filter only one type can answer searches that type; one both can answer, both.
    let by_user_name = search(json!({"filter": "userName eq \"bob@example.com\""})).await;
    assert_eq!(ids(&by_user_name.body), vec![bob.clone()]);
    let by_id = search(json!({"filter": format!("id eq \"{}\"", crew["id"].as_str().unwrap()), "attributes": ["displayName"]})).await;
    assert_eq!(
        by_id.body["Resources"],
        json!([{"schemas": [GROUP_SCHEMA], "id": crew["id"], "displayName": "Crew"}])
    );
    let counted = search(json!({"count": 0})).await;
    assert_eq!(counted.body["totalResults"], 4);
    assert_eq!(counted.body["Resources"], json!([]));
    search(json!({"filter": "nonsense eq 1"})).await.assert_error(400, Some("invalidFilter"));
    search(json!({"sortBy": "displayName"})).await.assert_error(400, Some("invalidValue"));
}
