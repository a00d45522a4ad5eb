//! Each token state on each API: valid, expired, revoked, unknown, and the wrong kind (a
//! directory key on the admin API and an admin token on SCIM); revocation across instances.

use std::net::TcpListener;

use reqwest::{Method, StatusCode};

use crate::support::{on_both_backends, TestServer};
use scimd::app;
use scimd::store::admin_tokens;
use scimd::store::audit::Actor;
use scimd::store::now_millis;

on_both_backends!(
    admin_tokens_in_each_state_are_told_apart,
    a_token_of_the_wrong_kind_is_refused_on_each_api,
    a_key_revoked_on_one_instance_is_refused_by_another_on_the_next_request,
);

async fn admin_tokens_in_each_state_are_told_apart(server: TestServer) {
    let url = server.url("/admin/v1/directories");
    assert_eq!(server.admin(Method::GET, "/admin/v1/directories", None).await.status, StatusCode::OK);

    let missing = server.send(server.http.get(&url)).await;
    assert!(missing.assert_admin_error(401).contains("admin-token issue"));
    assert_eq!(missing.header("www-authenticate"), Some("Bearer realm=\"scimd\""));

    let unknown = format!("scimd_admin_{}", "cd".repeat(32));
    let reply = server.send(server.http.get(&url).bearer_auth(&unknown)).await;
    assert_eq!(reply.assert_admin_error(401), "the admin token is not valid");
    assert_eq!(reply.header("www-authenticate"), Some("Bearer realm=\"scimd\", error=\"invalid_token\""));

    let (expired, revoked) = server
        .store
        .write_now(|conn, _| {
            let expired = admin_tokens::issue(conn, &Actor::Cli, "old", Some(now_millis() - 1))?;
            let revoked = admin_tokens::issue(conn, &Actor::Cli, "gone", None)?;
            Ok((expired.token.secret, revoked))
        })
        .unwrap();
    let detail = server.send(server.http.get(&url).bearer_auth(&expired)).await.assert_admin_error(401);
    assert!(detail.contains("expired"), "{detail}");

    // Used once, then revoked: refused on the very next request.
    let works = server.send(server.http.get(&url).bearer_auth(&revoked.token.secret)).await;
    assert_eq!(works.status, StatusCode::OK);
    let id = revoked.info.id.clone();
    server.store.write_now(move |conn, _| admin_tokens::revoke(conn, &Actor::Cli, id.as_str())).unwrap();
    let detail =
        server.send(server.http.get(&url).bearer_auth(&revoked.token.secret)).await.assert_admin_error(401);
    assert!(detail.contains("revoked"), "{detail}");
    // Writes are refused too, and change nothing.
    let create = server
        .http
        .post(&url)
        .bearer_auth(&revoked.token.secret)
        .header("content-type", "application/json")
        .body(r#"{"slug":"sneaky"}"#);
    server.send(create).await.assert_admin_error(401);
    server.admin(Method::GET, "/admin/v1/directories/sneaky", None).await.assert_admin_error(404);
}

async fn a_token_of_the_wrong_kind_is_refused_on_each_api(server: TestServer) {
    let on_admin =
        server.send(server.http.get(server.url("/admin/v1/directories")).bearer_auth(&server.key)).await;
    let detail = on_admin.assert_admin_error(401);
    assert!(detail.contains("directory key") && detail.contains("admin token"), "{detail}");
    assert!(!detail.contains("acme"));

    let on_scim =
        server.send(server.http.get(server.url("/scim/v2/Users")).bearer_auth(&server.admin_token)).await;
    let detail = on_scim.assert_error(401, None);
    assert!(detail.contains("admin token") && detail.contains("directory key"), "{detail}");
    // Both still work where they belong.
    assert_eq!(server.get("/scim/v2/Users").await.status, StatusCode::OK);
    assert_eq!(server.admin(Method::GET, "/admin/v1/directories", None).await.status, StatusCode::OK);
}

async fn a_key_revoked_on_one_instance_is_refused_by_another_on_the_next_request(server: TestServer) {
    // A second scimd on the same database, as behind a load balancer.
    let store = app::open_store(&server.config).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let (started_tx, started_rx) = std::sync::mpsc::channel();
    let config = server.config.clone();
    std::thread::spawn(move || {
        let system = actix_web::rt::System::new();
        system.block_on(async move {
            let running = app::start(store, config, listener).unwrap();
            started_tx.send((running.addr, running.handle.clone())).unwrap();
            running.server.await.unwrap();
        });
    });
    let (addr, handle) = started_rx.recv().unwrap();
    let other = format!("http://{addr}/scim/v2/Users");
    // The other instance has seen and remembered the key.
    assert_eq!(server.send(server.http.get(&other).bearer_auth(&server.key)).await.status, StatusCode::OK);

    let keys = server.admin(Method::GET, "/admin/v1/directories/acme/keys", None).await;
    let id = keys.body["items"][0]["id"].as_str().unwrap().to_string();
    let revoked = server.admin(Method::DELETE, &format!("/admin/v1/keys/{id}"), None).await;
    assert_eq!(revoked.status, StatusCode::OK);

    let refused = server.send(server.http.get(&other).bearer_auth(&server.key)).await;
    assert!(refused.assert_error(401, None).contains("revoked"));
    handle.stop(false).await;
}
