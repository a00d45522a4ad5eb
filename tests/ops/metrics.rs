//! `/metrics` over real HTTP: requests counted by route pattern and status, latency histograms,
//! sync runs, and the database pool, in Prometheus' text format.

use reqwest::Method;
use serde_json::json;

use crate::support::fake_okta::{FakeOkta, Org};
use crate::support::{on_both_backends, TestServer};
use scimd::sync::engine::{self, RunRequest};

on_both_backends!(metrics_count_requests_by_route_and_status_and_sync_runs_and_show_the_pool,);

/// The scraped text and its content type.
async fn scrape(server: &TestServer) -> String {
    let response = server.http.get(server.url("/metrics")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"].to_str().unwrap().to_string();
    assert!(content_type.starts_with("text/plain; version=0.0.4"), "{content_type}");
    response.text().await.unwrap()
}

/// The value of the sample named exactly `series` (name and labels), 0 when absent. Other tests
/// of this process count into the same registry, so tests compare before and after.
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')))
        .map_or(0.0, |value| value.parse().unwrap())
}

async fn metrics_count_requests_by_route_and_status_and_sync_runs_and_show_the_pool(server: TestServer) {
    let before = scrape(&server).await;
    assert_eq!(server.get("/scim/v2/Users").await.status, 200);
    assert_eq!(server.get("/scim/v2/Users/no-such-user").await.status, 404);
    let anonymous = server.send(server.http.get(server.url("/scim/v2/Users"))).await;
    assert_eq!(anonymous.status, 401);
    let probe = server.send(server.request(Method::GET, "/wp-login.php")).await;
    assert_eq!(probe.status, 404);
    let fake = FakeOkta::start(Org::empty());
    let connection = server.connect(
        "acme",
        json!({"name": "okta-main", "kind": "okta",
               "okta": {"org_url": fake.base_url(), "allow_insecure_http": true,
                        "auth": {"method": "api_token", "token": fake.api_token()}}}),
    );
    let key = server.config.secret_key().unwrap();
    let request = RunRequest { full: true, dry_run: false, confirm: false, trigger: "cli" };
    let report = engine::run(&server.store, key.as_ref(), &connection, request, &|_| {}).await.unwrap();
    assert_eq!(report.status, "succeeded");
    let after = scrape(&server).await;

    let grew = |series: &str, by: f64| {
        let (was, is) = (sample(&before, series), sample(&after, series));
        assert!(is >= was + by, "{series}: {was} then {is}\n{after}");
    };
    grew(r#"scimd_http_requests_total{route="/scim/v2/Users",method="GET",status="200"}"#, 1.0);
    grew(r#"scimd_http_requests_total{route="/scim/v2/Users",method="GET",status="401"}"#, 1.0);
    grew(r#"scimd_http_requests_total{route="/scim/v2/Users/{id}",method="GET",status="404"}"#, 1.0);
    // A path no route matches is counted without its path, which would make a series per probe.
    grew(r#"scimd_http_requests_total{route="unmatched",method="GET",status="404"}"#, 1.0);
    assert!(!after.contains("wp-login"), "{after}");
    grew(r#"scimd_http_request_duration_seconds_count{route="/scim/v2/Users",method="GET"}"#, 2.0);
    let buckets = sample(
        &after,
        r#"scimd_http_request_duration_seconds_bucket{route="/scim/v2/Users",method="GET",le="+Inf"}"#,
    );
    let count =
        sample(&after, r#"scimd_http_request_duration_seconds_count{route="/scim/v2/Users",method="GET"}"#);
    assert_eq!(buckets, count, "the +Inf bucket holds every observation");
    grew(r#"scimd_sync_runs_total{kind="okta",mode="full",status="succeeded"}"#, 1.0);
    grew(r#"scimd_sync_run_duration_seconds_count{kind="okta",mode="full"}"#, 1.0);
    assert!(sample(&after, "scimd_db_pool_max_connections") >= 1.0, "{after}");
    assert!(after.contains("scimd_db_pool_connections{state=\"idle\"}"), "{after}");
}
