//! A directory as an application reads it over SCIM, comparable across directories: imported
//! records keyed by their source id, with scimd ids (which differ between directories) replaced
//! by source ids. Sync tests compare a directory with one a different path reached (a delta run
//! with a full run, a crashed run's rerun with a clean import).

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Value};

use super::TestServer;

/// Every user and group of a directory as its key reads them over SCIM, keyed by Okta id, with
/// scimd ids (which differ between directories) replaced by Okta ids.
pub async fn snapshot(server: &TestServer, key: &str) -> BTreeMap<String, Value> {
    let mut records = BTreeMap::new();
    let mut okta_id_of = BTreeMap::new();
    for kind in ["Users", "Groups"] {
        let mut start = 1;
        loop {
            let url = server.url(&format!("/scim/v2/{kind}?startIndex={start}&count=200"));
            let reply = server.send(server.http.get(url).bearer_auth(key)).await;
            assert_eq!(reply.status, 200, "{}", reply.body);
            let page = reply.body["Resources"].as_array().cloned().unwrap_or_default();
            if page.is_empty() {
                break;
            }
            start += page.len();
            for mut record in page {
                let okta_id = record["externalId"].as_str().unwrap().to_string();
                okta_id_of.insert(record["id"].as_str().unwrap().to_string(), okta_id.clone());
                let object = record.as_object_mut().unwrap();
                object.remove("id");
                object.remove("meta");
                records.insert(okta_id, record);
            }
        }
    }
    let enterprise = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
    for record in records.values_mut() {
        if let Some(manager) =
            record.pointer_mut(&format!("/{enterprise}/manager")).and_then(Value::as_object_mut)
        {
            manager.remove("$ref");
            if let Some(id) = manager.get("value").and_then(Value::as_str) {
                let okta_id = json!(okta_id_of.get(id));
                manager.insert("value".into(), okta_id);
            }
        }
        for list in ["members", "groups"] {
            let Some(members) = record.get_mut(list).and_then(Value::as_array_mut) else { continue };
            for member in members.iter_mut() {
                let object = member.as_object_mut().unwrap();
                object.remove("$ref");
                let id = object["value"].as_str().unwrap().to_string();
                object.insert("value".into(), json!(okta_id_of.get(&id)));
            }
            members.sort_by_key(|m| m["value"].to_string());
        }
    }
    records
}

/// Fails naming the first records (by source id) that differ between `left` and `right`.
pub fn assert_same(left: &BTreeMap<String, Value>, right: &BTreeMap<String, Value>, what: &str) {
    let ids: BTreeSet<&String> = left.keys().chain(right.keys()).collect();
    let differing: Vec<(&String, Option<&Value>, Option<&Value>)> = ids
        .into_iter()
        .filter(|id| left.get(*id) != right.get(*id))
        .map(|id| (id, left.get(id), right.get(id)))
        .take(3)
        .collect();
    assert!(differing.is_empty(), "{what}: (source id, left, right) differ: {differing:#?}");
}
