//! Bearer keys: missing, malformed, unknown, revoked and expired keys are refused on the very
//! next request, with a detail that names the problem and nothing about the directory.

use reqwest::StatusCode;

use crate::support::{on_both_backends, TestServer};
use scimd::store::audit::Actor;
use scimd::store::{directories, keys, now_millis};

on_both_backends!(
    requests_without_a_valid_key_get_401_with_a_bearer_challenge,
    a_revoked_key_stops_working_on_the_next_request,
    an_expired_key_is_refused_and_says_so,
);

async fn requests_without_a_valid_key_get_401_with_a_bearer_challenge(server: TestServer) {
    let url = server.url("/scim/v2/Users");
    let missing = server.send(server.http.get(&url)).await;
    let detail = missing.assert_error(401, None);
    assert!(detail.contains("Authorization: Bearer"), "{detail}");
    assert_eq!(missing.header("www-authenticate"), Some("Bearer realm=\"scimd\""));

    for bad in ["non-token", "Basic dXNlcjpwYXNz", "Bearer ", "Bearer scimd_nope"] {
        let reply = server.send(server.http.get(&url).header("authorization", bad)).await;
        reply.assert_error(401, None);
        assert_eq!(reply.header("www-authenticate"), Some("Bearer realm=\"scimd\", error=\"invalid_token\""));
    }
    // A well-formed key that was never issued.
    let forged = format!("scimd_{}", "ab".repeat(32));
    let reply = server.send(server.http.get(&url).bearer_auth(forged)).await;
    assert_eq!(reply.assert_error(401, None), "the bearer key is not valid");
    // The scheme is case-insensitive.
    let reply =
        server.send(server.http.get(&url).header("authorization", format!("bearer {}", server.key))).await;
    assert_eq!(reply.status, StatusCode::OK);
}

async fn a_revoked_key_stops_working_on_the_next_request(server: TestServer) {
    // Used first, so this server knows the key: the revocation must still win, on reads and
    // writes alike, because every request confirms its key in its own transaction.
    assert_eq!(server.get("/scim/v2/Users").await.status, StatusCode::OK);
    let created = server.create_user(crate::support::user_body("before@example.com")).await;
    let id = created["id"].as_str().unwrap().to_string();
    let directory = server.directory.clone();
    let key_id =
        server.store.read_now(move |conn, _| Ok(keys::list(conn, &directory)?[0].id.clone())).unwrap();
    server.store.write_now(move |conn, _| keys::revoke(conn, &Actor::Cli, key_id.as_str())).unwrap();
    let detail = server.get("/scim/v2/Users").await.assert_error(401, None);
    assert!(detail.contains("revoked"), "{detail}");
    let detail = server.get(&format!("/scim/v2/Users/{id}")).await.assert_error(401, None);
    assert!(detail.contains("revoked"), "{detail}");
    let create = server.http.post(server.url("/scim/v2/Users")).bearer_auth(&server.key);
    let reply = server.send(create.json(&crate::support::user_body("after@example.com"))).await;
    assert!(reply.assert_error(401, None).contains("revoked"));
    let delete = server.http.delete(server.url(&format!("/scim/v2/Users/{id}"))).bearer_auth(&server.key);
    assert!(server.send(delete).await.assert_error(401, None).contains("revoked"));
    // Nothing was written with the revoked key.
    let directory = server.directory.clone();
    let still_there =
        server.store.read_now(move |conn, _| Ok(scimd::store::users::find(conn, &directory, &id)?.is_some()));
    assert!(still_there.unwrap());
}

async fn an_expired_key_is_refused_and_says_so(server: TestServer) {
    let expired = server
        .store
        .write_now(|conn, _| {
            let acme = directories::get_by_slug(conn, "acme")?;
            Ok(keys::issue(conn, &Actor::Cli, &acme.id, "old", Some(now_millis() - 1))?.token.secret)
        })
        .unwrap();
    let reply = server.send(server.http.get(server.url("/scim/v2/Users")).bearer_auth(expired)).await;
    let detail = reply.assert_error(401, None);
    assert!(detail.contains("expired"), "{detail}");
    assert!(!detail.contains("acme"));
}
