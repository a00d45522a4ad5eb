//! Importer secrets at rest: sealed with AES-256-GCM under the server's key, never readable
//! without it, rotated in place; only their existence and rotation time are shown.

use diesel::prelude::*;

use crate::support::{on_both_backends, TestServer};
use scimd::encryption::SecretKey;
use scimd::error::Error;
use scimd::store::schema::secrets as table;
use scimd::store::secrets;

on_both_backends!(secrets_are_sealed_rotated_and_need_their_key,);

async fn secrets_are_sealed_rotated_and_need_their_key(server: TestServer) {
    let key = SecretKey::from_hex(&SecretKey::generate_hex()).unwrap();
    let directory = server.directory.clone();
    let sealing = key.clone();
    let first = server
        .store
        .write_now(move |conn, _| {
            secrets::put(conn, &sealing, &directory, "conn-1", "api_token", b"00aBcD-okta-token")
        })
        .unwrap();
    // What is stored is not the plaintext.
    let stored: Vec<String> =
        server.store.read_now(|conn, _| Ok(table::table.select(table::ciphertext).load(conn)?)).unwrap();
    assert_eq!(stored.len(), 1);
    assert!(!stored[0].contains("okta") && !stored[0].contains(&hex::encode("00aBcD-okta-token")));

    let opening = key.clone();
    let plain =
        server.store.read_now(move |conn, _| secrets::reveal(conn, &opening, "conn-1", "api_token")).unwrap();
    assert_eq!(plain.as_deref(), Some(&b"00aBcD-okta-token"[..]));

    // Rotation replaces the value and moves rotated_at, keeping created_at.
    let (directory, sealing) = (server.directory.clone(), key.clone());
    let rotated = server
        .store
        .write_now(move |conn, _| {
            secrets::put(conn, &sealing, &directory, "conn-1", "api_token", b"new-token")
        })
        .unwrap();
    assert_eq!(rotated.created_at, first.created_at);
    assert!(rotated.rotated_at >= first.rotated_at);
    let statuses = server.store.read_now(|conn, _| secrets::statuses(conn, "conn-1")).unwrap();
    assert_eq!(statuses, vec![rotated]);

    // Start-up check: the right key passes; no key, or another key, is refused with a remedy.
    let right = key.clone();
    server.store.read_now(move |conn, _| secrets::check_key(conn, Some(&right))).unwrap();
    let missing = server.store.read_now(|conn, _| secrets::check_key(conn, None)).unwrap_err();
    assert!(
        matches!(&missing, Error::Config(d) if d.contains("SCIMD_SECRET_KEY") && d.contains("1 encrypted")),
        "{missing}"
    );
    let wrong = SecretKey::from_hex(&SecretKey::generate_hex()).unwrap();
    let refused = server.store.read_now(move |conn, _| secrets::check_key(conn, Some(&wrong))).unwrap_err();
    assert!(refused.to_string().contains("does not open"), "{refused}");
    let other_key = SecretKey::from_hex(&SecretKey::generate_hex()).unwrap();
    assert!(server
        .store
        .read_now(move |conn, _| secrets::reveal(conn, &other_key, "conn-1", "api_token"))
        .is_err());
}
