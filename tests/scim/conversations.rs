//! Okta and Entra conversations replayed over HTTP from fixtures (`tests/fixtures/{okta,entra}`),
//! with each IdP's headers and bodies, and the responses checked the way that IdP reads them.
//!
//! A fixture is a JSON object:
//! - `source`: where the sequence comes from (a section of `../shared/reference/*-push.md`);
//! - `headers`: sent on every request (the IdP's `User-Agent`, `Accept`, `Content-Type`);
//! - `steps`: each `{ "note", "method", "path", "body"?, "headers"?, "expect": { "status",
//!   "headers"?, "body"?, "absent"? }, "save"? }`.
//!
//! `{{name}}` in a path, header or body is replaced by a value saved earlier; `{{base}}` is the
//! server's URL. `expect.body` is matched as a subset: every member given must be there with an
//! equal value (objects recursively, arrays element by element and of the same length);
//! `"$any"` matches any present value (and, ending a header value, any rest of it).
//! `expect.absent` lists JSON pointers that must not exist.
//! `save` maps names to JSON pointers into the response body. Each fixture runs in a directory of
//! its own.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use reqwest::Method;
use serde_json::Value;

use crate::support::{on_both_backends, TestServer};

on_both_backends!(okta_conversations, entra_conversations);

async fn okta_conversations(server: TestServer) {
    replay_all(&server, "okta").await;
}

async fn entra_conversations(server: TestServer) {
    replay_all(&server, "entra").await;
}

fn fixture_dir(idp: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(idp)
}

async fn replay_all(server: &TestServer, idp: &str) {
    let mut files: Vec<PathBuf> = std::fs::read_dir(fixture_dir(idp))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no {idp} fixtures");
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let fixture: Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        replay(server, idp, &file, &fixture).await;
    }
}

/// Replays one fixture in a directory of its own, as a fresh IdP connection would see it.
async fn replay(server: &TestServer, idp: &str, file: &Path, fixture: &Value) {
    let name = file.file_name().unwrap().to_string_lossy().to_string();
    let stem = file.file_stem().unwrap().to_string_lossy().to_string();
    let (_, key) = server.second_directory(&format!("{idp}-{stem}"));
    let mut saved: HashMap<String, String> = HashMap::new();
    saved.insert("base".into(), server.base_url.clone());
    let common = fixture["headers"].as_object().cloned().unwrap_or_default();
    for (n, step) in fixture["steps"].as_array().unwrap().iter().enumerate() {
        let label = format!("{name} step {} ({})", n + 1, step["note"].as_str().unwrap_or(""));
        let method = Method::from_bytes(step["method"].as_str().unwrap().as_bytes()).unwrap();
        let path = substitute(step["path"].as_str().unwrap(), &saved);
        let mut request = server.http.request(method, server.url(&path));
        let mut headers = common.clone();
        headers.extend(step["headers"].as_object().cloned().unwrap_or_default());
        let mut authorized = false;
        for (header, value) in &headers {
            let value = substitute(value.as_str().unwrap(), &saved);
            authorized |= header.eq_ignore_ascii_case("authorization");
            request = request.header(header.as_str(), value);
        }
        if !authorized {
            request = request.bearer_auth(&key);
        }
        if let Some(body) = step.get("body") {
            request = request.body(substitute(&body.to_string(), &saved));
        }
        let reply = server.send(request).await;
        let expect = &step["expect"];
        assert_eq!(
            reply.status.as_u16(),
            expect["status"].as_u64().unwrap() as u16,
            "{label}: {}",
            reply.body
        );
        for (header, wanted) in expect["headers"].as_object().cloned().unwrap_or_default() {
            let wanted = substitute(wanted.as_str().unwrap(), &saved);
            let got = reply.header(&header).unwrap_or_else(|| panic!("{label}: no {header} header"));
            let prefix_matches = wanted.strip_suffix("$any").is_some_and(|prefix| got.starts_with(prefix));
            let media_type_matches = header.eq_ignore_ascii_case("content-type") && got.starts_with(&wanted);
            assert!(
                got == wanted || prefix_matches || media_type_matches,
                "{label}: {header} is {got}, expected {wanted}"
            );
        }
        if let Some(wanted) = expect.get("body") {
            let wanted: Value = serde_json::from_str(&substitute(&wanted.to_string(), &saved)).unwrap();
            if let Err(why) = includes(&reply.body, &wanted, "") {
                panic!("{label}: {why}\nresponse: {:#}", reply.body);
            }
        }
        for pointer in expect["absent"].as_array().cloned().unwrap_or_default() {
            let pointer = pointer.as_str().unwrap();
            assert!(
                reply.body.pointer(pointer).is_none(),
                "{label}: {pointer} must be absent: {}",
                reply.body
            );
        }
        for (key, pointer) in step["save"].as_object().cloned().unwrap_or_default() {
            let value = reply
                .body
                .pointer(pointer.as_str().unwrap())
                .unwrap_or_else(|| panic!("{label}: nothing at {pointer} to save"));
            saved.insert(key, value.as_str().map_or_else(|| value.to_string(), str::to_string));
        }
    }
}

/// Replaces `{{name}}` with saved values; an unknown name is a fixture bug.
fn substitute(text: &str, saved: &HashMap<String, String>) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        let end = rest[start..].find("}}").map(|e| start + e).expect("unclosed {{");
        out.push_str(&rest[..start]);
        let name = &rest[start + 2..end];
        out.push_str(saved.get(name).unwrap_or_else(|| panic!("nothing saved as {name}")));
        rest = &rest[end + 2..];
    }
    out.push_str(rest);
    out
}

/// `got` has everything `wanted` has (see the module header).
fn includes(got: &Value, wanted: &Value, at: &str) -> Result<(), String> {
    match (got, wanted) {
        (_, Value::String(s)) if s == "$any" => Ok(()),
        (Value::Object(got), Value::Object(wanted)) => {
            for (key, value) in wanted {
                let inner = format!("{at}/{key}");
                let found = got.get(key).ok_or_else(|| format!("{inner} is missing"))?;
                includes(found, value, &inner)?;
            }
            Ok(())
        }
        (Value::Array(got), Value::Array(wanted)) => {
            if got.len() != wanted.len() {
                return Err(format!("{at} has {} elements, expected {}", got.len(), wanted.len()));
            }
            for (n, (g, w)) in got.iter().zip(wanted).enumerate() {
                includes(g, w, &format!("{at}/{n}"))?;
            }
            Ok(())
        }
        (got, wanted) if got == wanted => Ok(()),
        (got, wanted) => Err(format!("{at} is {got}, expected {wanted}")),
    }
}
