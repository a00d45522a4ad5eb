//! The enterprise manager: stored and returned as sent (Okta sends only a name), and linked
//! best effort to a user of the same directory, re-resolved as people arrive and are renamed.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::support::{on_both_backends, user_body, TestServer};

on_both_backends!(
    managers_are_linked_best_effort_and_relinked,
    ambiguous_or_self_references_link_nothing,
    a_name_that_becomes_common_unlinks_and_stays_unlinked,
);

const ENTERPRISE: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";

fn with_manager(user_name: &str, display_name: &str, manager: Value) -> Value {
    let mut body = user_body(user_name);
    body["schemas"] = json!(["urn:ietf:params:scim:schemas:core:2.0:User", ENTERPRISE]);
    body["displayName"] = json!(display_name);
    body[ENTERPRISE] = json!({"manager": manager});
    body
}

async fn manager(server: &TestServer, id: &str) -> Value {
    server.get(&format!("/scim/v2/Users/{id}")).await.body[ENTERPRISE]["manager"].clone()
}

async fn ids_matching(server: &TestServer, filter: &str) -> Vec<String> {
    let query: String = url::form_urlencoded::byte_serialize(filter.as_bytes()).collect();
    let reply = server.get(&format!("/scim/v2/Users?filter={query}")).await;
    assert_eq!(reply.status, StatusCode::OK, "{filter}: {}", reply.body);
    let mut ids: Vec<String> = reply.body["Resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["id"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    ids
}

async fn managers_are_linked_best_effort_and_relinked(server: TestServer) {
    // The report arrives first, naming a manager nobody has yet: kept as sent, no link.
    let report = server
        .create_user(with_manager("ida@x.example", "Ida Berg", json!({"displayName": "Kari Lunde"})))
        .await;
    let report = report["id"].as_str().unwrap().to_string();
    assert_eq!(manager(&server, &report).await, json!({"displayName": "Kari Lunde"}));

    // The manager arrives: the report now links to her.
    let mut kari_body = user_body("kari@x.example");
    kari_body["displayName"] = json!("Kari Lunde");
    kari_body["externalId"] = json!("00uKARI");
    let kari = server.create_user(kari_body).await["id"].as_str().unwrap().to_string();
    let linked = manager(&server, &report).await;
    assert_eq!(linked["displayName"], "Kari Lunde", "returned as sent");
    assert_eq!(linked["value"], kari.as_str());
    assert_eq!(linked["$ref"], server.url(&format!("/scim/v2/Users/{kari}")).as_str());

    // Both filters find the report.
    let by_name = format!("{ENTERPRISE}:manager.displayName eq \"kari lunde\"");
    assert_eq!(ids_matching(&server, &by_name).await, vec![report.clone()]);
    let by_value = format!("{ENTERPRISE}:manager.value eq \"{kari}\"");
    assert_eq!(ids_matching(&server, &by_value).await, vec![report.clone()]);
    let not_linked = format!("not ({ENTERPRISE}:manager.value eq \"{kari}\")");
    assert!(!ids_matching(&server, &not_linked).await.contains(&report));

    // A value that is the manager's externalId (an HR id) links too, and stays as sent.
    let second =
        server.create_user(with_manager("jon@x.example", "Jon Dahl", json!({"value": "00uKARI"}))).await;
    let second = second["id"].as_str().unwrap().to_string();
    let linked = manager(&server, &second).await;
    assert_eq!(linked["value"], "00uKARI");
    assert_eq!(linked["$ref"], server.url(&format!("/scim/v2/Users/{kari}")).as_str());
    let mut both = vec![report.clone(), second.clone()];
    both.sort();
    assert_eq!(ids_matching(&server, &by_value).await, both);

    // The manager is renamed: the report that named her old name is unlinked...
    let mut renamed = user_body("kari@x.example");
    renamed["displayName"] = json!("Kari Lunde-Olsen");
    renamed["externalId"] = json!("00uKARI");
    let reply = server.put(&format!("/scim/v2/Users/{kari}"), &renamed).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(manager(&server, &report).await, json!({"displayName": "Kari Lunde"}));
    assert_eq!(
        manager(&server, &second).await["$ref"],
        server.url(&format!("/scim/v2/Users/{kari}")).as_str()
    );
    // ...until Okta pushes the report's new manager name.
    let patch = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": [
        {"op": "replace", "path": format!("{ENTERPRISE}:manager.displayName"), "value": "Kari Lunde-Olsen"}]});
    assert_eq!(server.patch(&format!("/scim/v2/Users/{report}"), &patch).await.status, StatusCode::OK);
    assert_eq!(manager(&server, &report).await["value"], kari.as_str());

    // A report that names her by id and name both.
    let third = server
        .create_user(with_manager(
            "tor@x.example",
            "Tor Lie",
            json!({"value": kari.as_str(), "displayName": "Kari Lunde-Olsen"}),
        ))
        .await;
    let third = third["id"].as_str().unwrap().to_string();
    assert_eq!(
        manager(&server, &third).await["$ref"],
        server.url(&format!("/scim/v2/Users/{kari}")).as_str()
    );

    // The manager is deprovisioned: the links go, the text stays.
    assert_eq!(server.delete(&format!("/scim/v2/Users/{kari}")).await.status, StatusCode::NO_CONTENT);
    assert_eq!(manager(&server, &report).await, json!({"displayName": "Kari Lunde-Olsen"}));
    assert_eq!(manager(&server, &second).await, json!({"value": "00uKARI"}));

    // A successor of that name arrives: the report that names its manager by name links to her.
    let mut successor = user_body("kari.lo@x.example");
    successor["displayName"] = json!("Kari Lunde-Olsen");
    let successor = server.create_user(successor).await["id"].as_str().unwrap().to_string();
    assert_eq!(manager(&server, &report).await["value"], successor.as_str());
    let third_manager = manager(&server, &third).await;
    assert_eq!(third_manager["value"], kari.as_str(), "kept as sent");
    assert_eq!(
        third_manager["$ref"],
        server.url(&format!("/scim/v2/Users/{successor}")).as_str(),
        "its id names nobody now; its name names the successor"
    );
    assert_eq!(manager(&server, &second).await, json!({"value": "00uKARI"}), "names by value only");
}

async fn ambiguous_or_self_references_link_nothing(server: TestServer) {
    for user_name in ["ola1@x.example", "ola2@x.example"] {
        let mut body = user_body(user_name);
        body["displayName"] = json!("Ola Nordmann");
        server.create_user(body).await;
    }
    let report = server
        .create_user(with_manager("per@x.example", "Per Aas", json!({"displayName": "Ola Nordmann"})))
        .await;
    assert_eq!(report[ENTERPRISE]["manager"], json!({"displayName": "Ola Nordmann"}));
    let own = server
        .create_user(with_manager("solo@x.example", "Solo Self", json!({"displayName": "Solo Self"})))
        .await;
    assert_eq!(own[ENTERPRISE]["manager"], json!({"displayName": "Solo Self"}));
    let unknown =
        server.create_user(with_manager("eve@x.example", "Eve", json!({"value": "no-such-id"}))).await;
    assert_eq!(unknown[ENTERPRISE]["manager"], json!({"value": "no-such-id"}));
}

/// A manager named only by a name links while one user has it, not once two or three do, and a
/// report naming it later links to none of them. From three on, resolving and relinking count
/// the name's users instead of reading them.
async fn a_name_that_becomes_common_unlinks_and_stays_unlinked(server: TestServer) {
    let named = |user_name: &str| {
        let mut body = user_body(user_name);
        body["displayName"] = json!("Pat Lee");
        body
    };
    let first = server.create_user(named("pat1@x.example")).await["id"].as_str().unwrap().to_string();
    let early = server
        .create_user(with_manager("ann@x.example", "Ann Vik", json!({"displayName": "Pat Lee"})))
        .await["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(manager(&server, &early).await["value"], first.as_str(), "one Pat Lee: linked");
    server.create_user(named("pat2@x.example")).await;
    assert_eq!(manager(&server, &early).await, json!({"displayName": "Pat Lee"}), "two: unlinked");
    server.create_user(named("pat3@x.example")).await;
    assert_eq!(manager(&server, &early).await, json!({"displayName": "Pat Lee"}), "three: still unlinked");
    let late =
        server.create_user(with_manager("bo@x.example", "Bo Ek", json!({"displayName": "Pat Lee"}))).await;
    assert_eq!(late[ENTERPRISE]["manager"], json!({"displayName": "Pat Lee"}), "a report arriving now");
    let by_value = format!("{ENTERPRISE}:manager.value pr");
    assert!(ids_matching(&server, &by_value).await.is_empty(), "nobody is linked to a Pat Lee");
}
