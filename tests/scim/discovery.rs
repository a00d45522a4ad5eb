//! Discovery endpoints: served from schemas/*.json, unauthenticated, filter refused.

use reqwest::StatusCode;

use crate::support::{on_both_backends, TestServer};

on_both_backends!(discovery_is_public_absolute_and_consistent_with_the_configuration);

async fn discovery_is_public_absolute_and_consistent_with_the_configuration(server: TestServer) {
    let get = |path: &str| server.send(server.http.get(server.url(path)));

    let config = get("/scim/v2/ServiceProviderConfig").await;
    assert_eq!(config.status, StatusCode::OK);
    assert_eq!(config.body["filter"]["maxResults"], server.config.scim.max_page_size);
    assert_eq!(config.body["patch"]["supported"], true);
    assert_eq!(config.body["bulk"]["supported"], false);
    assert_eq!(config.body["meta"]["location"], server.url("/scim/v2/ServiceProviderConfig"));

    let types = get("/scim/v2/ResourceTypes").await;
    assert_eq!(types.body["totalResults"], 2);
    let user_type = get("/scim/v2/ResourceTypes/User").await;
    assert_eq!(user_type.body["endpoint"], "/Users");
    assert_eq!(user_type.body["meta"]["location"], server.url("/scim/v2/ResourceTypes/User"));

    let schemas = get("/scim/v2/Schemas").await;
    let ids: Vec<&str> =
        schemas.body["Resources"].as_array().unwrap().iter().filter_map(|s| s["id"].as_str()).collect();
    assert!(ids.contains(&"urn:ietf:params:scim:schemas:core:2.0:User"));
    assert!(ids.contains(&"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"));
    let user = get("/scim/v2/Schemas/urn:ietf:params:scim:schemas:core:2.0:User").await;
    let user_name =
        user.body["attributes"].as_array().unwrap().iter().find(|a| a["name"] == "userName").unwrap();
    assert_eq!(user_name["uniqueness"], "server");
    assert_eq!(user_name["caseExact"], false);
    assert!(!user.body.to_string().contains("null"));

    get("/scim/v2/Schemas/urn:nope").await.assert_error(404, None);
    get("/scim/v2/ResourceTypes/Widget").await.assert_error(404, None);
    get("/scim/v2/Schemas?filter=id%20pr").await.assert_error(403, None);
    let post = server.send(server.http.post(server.url("/scim/v2/Schemas"))).await;
    post.assert_error(405, None);
    // A client that sends its key anyway is served the same.
    assert_eq!(server.get("/scim/v2/ServiceProviderConfig").await.body, config.body);
}
