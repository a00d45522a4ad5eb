//! Filters, sorting and `.search` over HTTP: compiled to SQL and answered by the database.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::support::{on_both_backends, TestServer};

const ENTERPRISE: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";

on_both_backends!(
    filters_follow_rfc_7644_semantics,
    bad_filters_get_400_invalid_filter_with_a_useful_detail,
    sort_by_orders_case_insensitively_with_unassigned_last,
    search_endpoint_takes_the_same_request_in_a_body,
    filters_see_each_change_and_nothing_stale,
);

async fn seed(server: &TestServer) -> Vec<Value> {
    let people = [
        json!({"userName": "Ann.Lee@Harbor.example", "displayName": "Ann Lee", "title": "Dock Supervisor",
               "externalId": "00uANN", "userType": "Employee",
               "emails": [{"value": "ann.lee@harbor.example", "type": "work", "primary": true},
                          {"value": "ann@home.example", "type": "home"}],
               ENTERPRISE: {"department": "Logistics", "manager": {"displayName": "Tom Reyes"}}}),
        json!({"userName": "bob@harbor.example", "displayName": "Bob Ng", "active": false,
               "externalId": "00uBOB", "userType": "Intern",
               "emails": [{"value": "bob@harbor.example", "type": "home"}],
               ENTERPRISE: {"department": "Finance"}}),
        json!({"userName": "Çelik@harbor.example", "displayName": "Ömer Çelik", "title": "Analyst",
               "externalId": "00uCEL", "userType": "Employee",
               "emails": [{"value": "omer@other.example", "type": "work"}]}),
    ];
    let mut created = Vec::new();
    for mut person in people {
        person["schemas"] = json!(["urn:ietf:params:scim:schemas:core:2.0:User", ENTERPRISE]);
        created.push(server.create_user(person).await);
    }
    created
}

async fn user_names(server: &TestServer, filter: &str) -> Vec<String> {
    let reply = server
        .send(server.request(reqwest::Method::GET, "/scim/v2/Users").query(&[("filter", filter)]))
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{filter}: {}", reply.body);
    let mut names: Vec<String> = reply.body["Resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["userName"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(reply.body["totalResults"], names.len(), "{filter}");
    names.sort();
    names
}

async fn filters_follow_rfc_7644_semantics(server: TestServer) {
    let created = seed(&server).await;
    let ann = "Ann.Lee@Harbor.example".to_string();
    let bob = "bob@harbor.example".to_string();
    let omer = "Çelik@harbor.example".to_string();
    let cases: Vec<(String, Vec<&String>)> = vec![
        // Okta's lookup before create: case-insensitive userName.
        ("userName eq \"ann.lee@harbor.EXAMPLE\"".into(), vec![&ann]),
        ("USERNAME EQ \"çelik@HARBOR.example\"".into(), vec![&omer]),
        ("userName sw \"B\"".into(), vec![&bob]),
        ("userName ew \"@harbor.example\"".into(), vec![&ann, &bob, &omer]),
        ("displayName co \"ng\"".into(), vec![&bob]),
        // externalId is caseExact.
        ("externalId eq \"00uBOB\"".into(), vec![&bob]),
        ("externalId eq \"00ubob\"".into(), vec![]),
        (format!("id eq \"{}\"", created[2]["id"].as_str().unwrap()), vec![&omer]),
        ("active eq false".into(), vec![&bob]),
        ("active ne false".into(), vec![&ann, &omer]),
        ("title pr".into(), vec![&ann, &omer]),
        ("not (title pr)".into(), vec![&bob]),
        ("title eq null".into(), vec![&bob]),
        ("emails.value ew \"@harbor.example\"".into(), vec![&ann, &bob]),
        ("emails co \"other\"".into(), vec![&omer]),
        // A value path needs one e-mail satisfying both; the flat form does not.
        ("emails[type eq \"work\" and value ew \"@harbor.example\"]".into(), vec![&ann]),
        ("emails.type eq \"home\" and emails.value ew \"@harbor.example\"".into(), vec![&ann, &bob]),
        ("emails[type eq \"home\" and value ew \"@harbor.example\"]".into(), vec![&bob]),
        ("userType eq \"Employee\" and (emails co \"other\" or title sw \"dock\")".into(), vec![&ann, &omer]),
        (
            "userType eq \"Intern\" or userType eq \"Employee\" and title eq \"Analyst\"".into(),
            vec![&bob, &omer],
        ),
        (format!("{ENTERPRISE}:department eq \"logistics\""), vec![&ann]),
        (format!("{ENTERPRISE}:manager.displayName eq \"Tom Reyes\""), vec![&ann]),
        (format!("schemas eq \"{ENTERPRISE}\""), vec![&ann, &bob]),
        ("meta.lastModified gt \"2000-01-01T00:00:00Z\"".into(), vec![&ann, &bob, &omer]),
        ("meta.created lt \"2000-01-01T00:00:00Z\"".into(), vec![]),
        ("not(userType eq \"Employee\")".into(), vec![&bob]),
    ];
    for (filter, expected) in cases {
        let expected: Vec<String> = expected.into_iter().cloned().collect();
        assert_eq!(user_names(&server, &filter).await, expected, "{filter}");
    }
}

async fn bad_filters_get_400_invalid_filter_with_a_useful_detail(server: TestServer) {
    for (filter, mentions) in [
        ("userName eq", "a value after 'eq'"),
        ("nosuch eq \"x\"", "nosuch"),
        ("active gt true", "active"),
        ("active eq \"yes\"", "active"),
        ("meta.lastModified gt \"yesterday\"", "lastModified"),
        ("name eq \"x\"", "name"),
        ("userName eq \"a\" and", "and"),
        ("password eq \"x\"", "password"),
        ("((((userName eq \"a\"", "')'"),
    ] {
        let reply = server
            .send(server.request(reqwest::Method::GET, "/scim/v2/Users").query(&[("filter", filter)]))
            .await;
        let detail = reply.assert_error(400, Some("invalidFilter"));
        assert!(detail.to_lowercase().contains(&mentions.to_lowercase()), "{filter} -> {detail}");
    }
    let deep = format!("{}userName pr{}", "(".repeat(200), ")".repeat(200));
    let reply =
        server.send(server.request(reqwest::Method::GET, "/scim/v2/Users").query(&[("filter", deep)])).await;
    reply.assert_error(400, Some("invalidFilter"));
}

async fn sort_by_orders_case_insensitively_with_unassigned_last(server: TestServer) {
    seed(&server).await;
    let order = |query: &'static str| {
        let server = &server;
        async move {
            let reply = server.get(&format!("/scim/v2/Users?{query}")).await;
            assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
            reply.body["Resources"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["userName"].as_str().unwrap().to_string())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        order("sortBy=userName").await,
        ["Ann.Lee@Harbor.example", "bob@harbor.example", "Çelik@harbor.example"]
    );
    assert_eq!(
        order("sortBy=USERNAME&sortOrder=descending").await,
        ["Çelik@harbor.example", "bob@harbor.example", "Ann.Lee@Harbor.example"]
    );
    // "analyst" < "dock supervisor"; Bob has no title.
    assert_eq!(
        order("sortBy=title").await,
        ["Çelik@harbor.example", "Ann.Lee@Harbor.example", "bob@harbor.example"]
    );
    assert_eq!(
        order("sortBy=title&sortOrder=descending").await,
        ["bob@harbor.example", "Ann.Lee@Harbor.example", "Çelik@harbor.example"]
    );
    assert_eq!(order("sortBy=emails&count=1&startIndex=2").await, ["bob@harbor.example"]);
    let detail = server.get("/scim/v2/Users?sortBy=nosuch").await.assert_error(400, Some("invalidValue"));
    assert!(detail.contains("nosuch"), "{detail}");
}

async fn search_endpoint_takes_the_same_request_in_a_body(server: TestServer) {
    seed(&server).await;
    let reply = server
        .post(
            "/scim/v2/Users/.search",
            &json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:SearchRequest"],
                    "filter": "emails.type eq \"work\"", "attributes": ["userName"],
                    "sortBy": "userName", "sortOrder": "descending", "startIndex": 1, "count": 1}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.body["totalResults"], 2);
    assert_eq!(reply.body["itemsPerPage"], 1);
    let id = reply.body["Resources"][0]["id"].clone();
    let expected = json!([{"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "id": id, "userName": "Çelik@harbor.example"}]);
    assert_eq!(reply.body["Resources"], expected);
    server
        .post("/scim/v2/Users/.search", &json!({"filter": "userName xx \"a\""}))
        .await
        .assert_error(400, Some("invalidFilter"));
}

/// A write re-indexes only the values that changed: what it removed, moved or replaced no longer
/// matches, what it kept still does.
async fn filters_see_each_change_and_nothing_stale(server: TestServer) {
    let created = seed(&server).await;
    let ann = created[0]["id"].as_str().unwrap();
    let patch = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": [
        {"op": "replace", "path": "title", "value": "Harbor Master"},
        {"op": "remove", "path": "emails[type eq \"home\"]"},
        {"op": "add", "path": "phoneNumbers", "value": [{"value": "+47 22 00 00 00", "type": "work"}]}]});
    let reply = server.patch(&format!("/scim/v2/Users/{ann}"), &patch).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let ann_only = vec!["Ann.Lee@Harbor.example".to_string()];
    assert_eq!(user_names(&server, "title eq \"Dock Supervisor\"").await, Vec::<String>::new());
    assert_eq!(user_names(&server, "title eq \"Harbor Master\"").await, ann_only);
    assert_eq!(user_names(&server, "emails.value eq \"ann@home.example\"").await, Vec::<String>::new());
    assert_eq!(
        user_names(&server, "emails[type eq \"work\" and value eq \"ann.lee@harbor.example\"]").await,
        ann_only
    );
    assert_eq!(user_names(&server, "phoneNumbers.value eq \"+47 22 00 00 00\"").await, ann_only);
    assert_eq!(user_names(&server, &format!("{ENTERPRISE}:department eq \"Logistics\"")).await, ann_only);
    // Replacing the whole user drops every value it no longer has.
    let mut put = created[0].clone();
    for gone in ["title", "emails", "phoneNumbers", ENTERPRISE, "meta", "id"] {
        put.as_object_mut().unwrap().remove(gone);
    }
    let reply = server.put(&format!("/scim/v2/Users/{ann}"), &put).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    for filter in ["title pr", "emails pr", "phoneNumbers pr"] {
        assert!(!user_names(&server, filter).await.contains(&ann_only[0]), "{filter}");
    }
    assert_eq!(
        user_names(&server, &format!("{ENTERPRISE}:department eq \"Logistics\"")).await,
        Vec::<String>::new()
    );
    assert_eq!(user_names(&server, "displayName eq \"Ann Lee\"").await, ann_only);
}
