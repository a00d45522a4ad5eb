//! Per-key rate limits: a key past its limit gets 429 with Retry-After, while other keys and
//! admin tokens keep their own budgets.

use reqwest::{Method, StatusCode};

use crate::support::{Backend, TestServer};

async fn limited(backend: Backend) -> TestServer {
    TestServer::start_with(backend, |config| {
        config.rate_limit.requests_per_second = 1;
        config.rate_limit.burst = 3;
    })
    .await
}

async fn a_key_past_its_limit_gets_429_and_others_do_not(server: TestServer) {
    for _ in 0..3 {
        assert_eq!(server.get("/scim/v2/Users").await.status, StatusCode::OK);
    }
    let refused = server.get("/scim/v2/Users").await;
    let detail = refused.assert_error(429, None);
    assert!(detail.contains("per second"), "{detail}");
    let retry_after: u64 = refused.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=2).contains(&retry_after), "{retry_after}");

    // Another directory's key has its own budget.
    let (_, other_key) = server.second_directory("other");
    let other = server.send(server.http.get(server.url("/scim/v2/Users")).bearer_auth(&other_key)).await;
    assert_eq!(other.status, StatusCode::OK);

    // So does the admin token, and its refusal is admin JSON.
    for _ in 0..3 {
        assert_eq!(server.admin(Method::GET, "/admin/v1/directories", None).await.status, StatusCode::OK);
    }
    let admin = server.admin(Method::GET, "/admin/v1/directories", None).await;
    admin.assert_admin_error(429);
    assert!(admin.header("retry-after").is_some());
}

mod a_key_past_its_limit_gets_429_and_others_do_not {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite() {
        super::a_key_past_its_limit_gets_429_and_others_do_not(super::limited(super::Backend::Sqlite).await)
            .await
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres() {
        super::a_key_past_its_limit_gets_429_and_others_do_not(super::limited(super::Backend::Postgres).await)
            .await
    }
}
