//! Bad input gets a clear SCIM error and changes nothing; operational endpoints answer.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::support::{on_both_backends, user_body, TestServer};

on_both_backends!(
    malformed_bodies_are_refused_and_nothing_is_written,
    oversized_bodies_get_413,
    unknown_endpoints_and_methods_get_scim_errors,
    health_readiness_and_request_ids,
);

async fn malformed_bodies_are_refused_and_nothing_is_written(server: TestServer) {
    let raw = |body: &str, content_type: &str| {
        server
            .request(Method::POST, "/scim/v2/Users")
            .header("content-type", content_type)
            .body(body.to_string())
    };
    let detail = server
        .send(raw("{\"userName\": ", "application/scim+json"))
        .await
        .assert_error(400, Some("invalidSyntax"));
    assert!(detail.contains("not valid JSON"), "{detail}");
    server.send(raw("", "application/json")).await.assert_error(400, Some("invalidSyntax"));
    let detail =
        server.send(raw("userName=x", "application/x-www-form-urlencoded")).await.assert_error(415, None);
    assert!(detail.contains("application/scim+json"), "{detail}");

    let cases = [
        (json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"]}), "invalidValue", "userName"),
        (
            json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": ["a"]}),
            "invalidValue",
            "string",
        ),
        (
            json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": "a", "active": "sometimes"}),
            "invalidValue",
            "boolean",
        ),
        (
            json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": "a", "emails": "a@b"}),
            "invalidValue",
            "array",
        ),
        (json!({"userName": "a"}), "invalidValue", "schemas"),
        (
            json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"], "userName": "a"}),
            "invalidValue",
            "schemas",
        ),
        (json!(["not", "an", "object"]), "invalidSyntax", "object"),
    ];
    for (body, scim_type, mentions) in cases {
        let detail = server.post("/scim/v2/Users", &body).await.assert_error(400, Some(scim_type));
        assert!(detail.contains(mentions), "{body} -> {detail}");
    }
    // application/json with a charset is as good as application/scim+json.
    let ok =
        server.send(raw(&user_body("ok@example.com").to_string(), "application/json; charset=utf-8")).await;
    assert_eq!(ok.status, StatusCode::CREATED);
    assert_eq!(server.get("/scim/v2/Users").await.body["totalResults"], 1, "only the valid request wrote");
}

async fn oversized_bodies_get_413(server: TestServer) {
    let mut body = user_body("big@example.com");
    body["title"] = json!("x".repeat(server.config.scim.max_body_bytes + 1));
    server.post("/scim/v2/Users", &body).await.assert_error(413, None);
    assert_eq!(server.get("/scim/v2/Users").await.body["totalResults"], 0);
}

async fn unknown_endpoints_and_methods_get_scim_errors(server: TestServer) {
    server.get("/scim/v2/Widgets").await.assert_error(404, None);
    // A 405 lists what the endpoint takes (RFC 9110 §15.5.6).
    let put = server.send(server.request(Method::PUT, "/scim/v2/Users")).await;
    assert_eq!(put.assert_error(405, None), "this endpoint supports only GET, POST");
    assert_eq!(put.header("allow"), Some("GET, POST"));
    let get = server.send(server.request(Method::GET, "/scim/v2/Users/.search")).await;
    get.assert_error(405, None);
    assert_eq!(get.header("allow"), Some("POST"));
    server.post("/scim/v2/Bulk", &json!({})).await.assert_error(501, None);
    server.get("/scim/v2/Me").await.assert_error(501, None);
}

async fn health_readiness_and_request_ids(server: TestServer) {
    let health = server.send(server.http.get(server.url("/healthz"))).await;
    assert_eq!(health.status, StatusCode::OK);
    let ready = server.send(server.http.get(server.url("/readyz"))).await;
    assert_eq!(ready.body["status"], "ready");
    let echoed =
        server.send(server.request(Method::GET, "/scim/v2/Users").header("x-request-id", "trace-123")).await;
    assert_eq!(echoed.header("x-request-id"), Some("trace-123"));
    let generated = server.get("/scim/v2/Users").await;
    assert_eq!(generated.header("x-request-id").map(str::len), Some(36));
    let hostile = server
        .send(server.request(Method::GET, "/scim/v2/Users").header("x-request-id", "a b\"<script>"))
        .await;
    assert_ne!(hostile.header("x-request-id"), Some("a b\"<script>"));
}
