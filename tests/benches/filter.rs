//! Filter hot paths: parse + schema check, canonical printing, compilation to SQL, and
//! in-memory matching. `cargo bench --bench filter`; figures in BENCHMARKS.md.

#![allow(clippy::expect_used)] // a bench setup failure should stop the bench loudly

use criterion::{criterion_group, criterion_main, Criterion};
use scimd::scim::filter;
use scimd::scim::schema::Registry;
use scimd::store::conn::Backend;
use scimd::store::filter_sql;
use serde_json::json;
use std::hint::black_box;

const FILTERS: &[(&str, &str)] = &[
    ("eq", r#"userName eq "bjensen@example.com""#),
    ("okta_lookup", r#"userName eq "m.okafor@harbor.example" or externalId eq "00u4m7qk2ZPxB5bRj5d7""#),
    ("delta", r#"meta.lastModified gt "2026-01-01T00:00:00Z""#),
    ("rfc_value_path", r#"userType eq "Employee" and emails[type eq "work" and value co "@example.com"]"#),
    (
        "enterprise",
        r#"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager.value eq "26118915" and not(active eq false)"#,
    ),
];

fn batch_lookup() -> String {
    (0..100).map(|i| format!(r#"externalId eq "id-{i}""#)).collect::<Vec<_>>().join(" or ")
}

fn benches(c: &mut Criterion) {
    let registry = Registry::load().expect("shipped schemas load");
    let schema = &registry.user;
    let batch = batch_lookup();
    let mut cases: Vec<(&str, &str)> = FILTERS.to_vec();
    cases.push(("batch_100", &batch));

    let resource = json!({
        "id": "2819c223", "externalId": "bjensen", "userName": "bjensen@example.com", "userType": "Employee",
        "active": true, "meta": {"resourceType": "User", "created": "2026-01-02T00:00:00.000Z",
        "lastModified": "2026-01-02T00:00:00.000Z"},
        "emails": [{"value": "bjensen@example.com", "type": "work"}, {"value": "babs@jensen.org", "type": "home"}],
        "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {"manager": {"value": "26118915"}}
    });
    let resource = resource.as_object().expect("an object").clone();

    for (name, text) in cases {
        let parsed = filter::parse(text, schema).expect("bench filters are valid");
        c.bench_function(&format!("filter/parse/{name}"), |b| {
            b.iter(|| filter::parse(black_box(text), schema))
        });
        c.bench_function(&format!("filter/display/{name}"), |b| b.iter(|| black_box(&parsed).to_string()));
        c.bench_function(&format!("filter/compile_sql/{name}"), |b| {
            b.iter(|| filter_sql::compile(black_box(&parsed), "0190c0de-directory", Backend::Postgres))
        });
        c.bench_function(&format!("filter/matches/{name}"), |b| {
            b.iter(|| filter::matches(black_box(&parsed), black_box(&resource)))
        });
    }
}

criterion_group!(filter_benches, benches);
criterion_main!(filter_benches);
