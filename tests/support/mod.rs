//! What every integration test stands on: a real scimd server on 127.0.0.1:0 over a real
//! database (a temp SQLite file, or a fresh database cloned from a migrated template in a
//! throwaway PostgreSQL cluster), and an HTTP client that speaks to it.

#![allow(dead_code)]

pub mod db;
pub mod fake_graph;
pub mod fake_okta;
pub mod snapshot;
pub mod test_idp;

use std::net::TcpListener;
use std::sync::OnceLock;

use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use serde_json::Value;

use scimd::app;
use scimd::config::Config;
use scimd::ids::DirectoryId;
use scimd::store::audit::Actor;
use scimd::store::{admin_tokens, directories, keys, Store};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Runs an `async fn(TestServer)` test once per backend.
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    super::$name(crate::support::TestServer::start(crate::support::Backend::Sqlite).await).await
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    super::$name(crate::support::TestServer::start(crate::support::Backend::Postgres).await).await
                }
            }
        )*
    };
}
pub(crate) use on_both_backends;

/// A migrated PostgreSQL template, made once per test process; tests clone it.
fn postgres_template() -> Result<&'static str, String> {
    static TEMPLATE: OnceLock<Result<String, String>> = OnceLock::new();
    TEMPLATE
        .get_or_init(|| {
            let cluster = db::pg_cluster()?;
            let name = db::unique_database_name("scimd_template");
            let url = cluster.create_database(&name, None)?;
            let mut config = Config { database_url: url, ..Config::default() };
            config.database.pool_size = 1;
            let store = app::open_store(&config).map_err(|e| e.to_string())?;
            store.migrate().map_err(|e| e.to_string())?;
            drop(store);
            Ok(name)
        })
        .as_ref()
        .map(String::as_str)
        .map_err(Clone::clone)
}

/// A new database URL with nothing in it, not even migrations, and what keeps it alive.
pub fn empty_database(backend: Backend) -> (String, Option<tempfile::TempDir>) {
    match backend {
        Backend::Sqlite => {
            let dir = tempfile::tempdir().unwrap();
            (format!("sqlite://{}", dir.path().join("scimd.db").display()), Some(dir))
        }
        Backend::Postgres => {
            let cluster = db::pg_cluster().unwrap_or_else(|e| panic!("{e}"));
            let name = db::unique_database_name("scimd_empty");
            (cluster.create_database(&name, None).unwrap_or_else(|e| panic!("{e}")), None)
        }
    }
}

/// A fresh, empty database URL for one test: migrated on PostgreSQL (cloned from a template);
/// on SQLite a new file, which the server migrates as it starts.
pub fn fresh_database(backend: Backend) -> (String, Option<tempfile::TempDir>) {
    match backend {
        Backend::Sqlite => empty_database(backend),
        Backend::Postgres => {
            let template = postgres_template().unwrap_or_else(|e| panic!("PostgreSQL for tests: {e}"));
            let cluster = db::pg_cluster().unwrap_or_else(|e| panic!("{e}"));
            let url = cluster
                .create_database(&db::unique_database_name("scimd_test"), Some(template))
                .unwrap_or_else(|e| panic!("{e}"));
            (url, None)
        }
    }
}

/// A running server with one directory (`acme`) and a key for it.
pub struct TestServer {
    pub backend: Backend,
    pub base_url: String,
    pub key: String,
    /// An admin token for `/admin/v1`.
    pub admin_token: String,
    pub directory: DirectoryId,
    pub store: Store,
    pub config: Config,
    pub http: reqwest::Client,
    /// The sync scheduler, when the test turned it on (`config.sync.scheduler`).
    pub scheduler: Option<scimd::sync::scheduler::Handle>,
    system: actix_web::rt::System,
    server: actix_web::dev::ServerHandle,
    _data_dir: Option<tempfile::TempDir>,
}

impl TestServer {
    pub async fn start(backend: Backend) -> TestServer {
        Self::start_with(backend, |_| {}).await
    }

    pub async fn start_with(backend: Backend, adjust: impl FnOnce(&mut Config)) -> TestServer {
        if std::env::var_os("RUST_LOG").is_some() {
            scimd::telemetry::init(scimd::config::LogFormat::Pretty);
        }
        let (url, data_dir) = fresh_database(backend);
        let mut config = Config { database_url: url, ..Config::default() };
        config.database.pool_size = 4;
        // Tests send requests back to back with one key; the rate-limit tests turn it on.
        config.rate_limit.requests_per_second = 0;
        // A server that can seal importer credentials, as a production one would be set up.
        config.secret_key = scimd::config::Secret(scimd::encryption::SecretKey::generate_hex());
        // Connections run only when a test runs them; the scheduler tests turn it on.
        config.sync.scheduler = false;
        adjust(&mut config);
        let store = app::open_store(&config).unwrap();
        store.migrate().unwrap();
        let (directory, key, admin_token) = store
            .write_now(|conn, _| {
                let created = directories::create(conn, &Actor::Cli, "acme", "Acme")?;
                let issued = keys::issue(conn, &Actor::Cli, &created.id, "test", None)?;
                let admin = admin_tokens::issue(conn, &Actor::Cli, "test admin", None)?;
                Ok((created.id, issued.token.secret, admin.token.secret))
            })
            .unwrap();
        let (addr, system, server, scheduler) = serve(store.clone(), config.clone());
        TestServer {
            backend,
            base_url: format!("http://{addr}"),
            key,
            admin_token,
            directory,
            store,
            config,
            http: reqwest::Client::new(),
            scheduler,
            system,
            server,
            _data_dir: data_dir,
        }
    }

    /// Another scimd instance on this server's database (its own pool, SQLite writer and sync
    /// lease holder), as behind a load balancer; same directory, key and admin token. Drop it
    /// before this server.
    pub fn join(&self, adjust: impl FnOnce(&mut Config)) -> TestServer {
        let mut config = self.config.clone();
        adjust(&mut config);
        let store = app::open_store(&config).unwrap();
        let (addr, system, server, scheduler) = serve(store.clone(), config.clone());
        TestServer {
            backend: self.backend,
            base_url: format!("http://{addr}"),
            key: self.key.clone(),
            admin_token: self.admin_token.clone(),
            directory: self.directory.clone(),
            store,
            config,
            http: reqwest::Client::new(),
            scheduler,
            system,
            server,
            _data_dir: None,
        }
    }

    /// Creates a pull-sync connection in `directory` from the contract's JSON, its secrets
    /// sealed with this server's key, as `scimd connection create` does.
    pub fn connect(&self, directory: &str, body: Value) -> scimd::store::connections::ConnectionRecord {
        let config = scimd::sync::connection::parse(body).unwrap();
        let key = self.config.secret_key().unwrap();
        let directory = directory.to_string();
        self.store
            .write_now(move |conn, _| {
                scimd::store::connections::create(conn, &Actor::Cli, key.as_ref(), &directory, config)
            })
            .unwrap()
    }

    /// Another directory with its own key, for isolation tests.
    pub fn second_directory(&self, slug: &str) -> (DirectoryId, String) {
        let slug = slug.to_string();
        self.store
            .write_now(move |conn, _| {
                let created = directories::create(conn, &Actor::Cli, &slug, &slug)?;
                let issued = keys::issue(conn, &Actor::Cli, &created.id, "test", None)?;
                Ok((created.id, issued.token.secret))
            })
            .unwrap()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    /// A request with this server's key.
    pub fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.http.request(method, self.url(path)).bearer_auth(&self.key)
    }

    /// An admin API request with this server's admin token; `body` is sent as JSON when given.
    pub async fn admin(&self, method: Method, path: &str, body: Option<Value>) -> Reply {
        let mut request = self.http.request(method, self.url(path)).bearer_auth(&self.admin_token);
        if let Some(body) = body {
            request = request.header("content-type", "application/json").body(body.to_string());
        }
        self.send(request).await
    }

    pub async fn send(&self, request: reqwest::RequestBuilder) -> Reply {
        let response = request.send().await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let text = response.text().await.unwrap();
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("response is not JSON ({e}): {text}"))
        };
        Reply { status, headers, body }
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.send(self.request(Method::GET, path)).await
    }

    pub async fn delete(&self, path: &str) -> Reply {
        self.send(self.request(Method::DELETE, path)).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> Reply {
        self.send(self.json(Method::POST, path, body)).await
    }

    pub async fn put(&self, path: &str, body: &Value) -> Reply {
        self.send(self.json(Method::PUT, path, body)).await
    }

    pub async fn patch(&self, path: &str, body: &Value) -> Reply {
        self.send(self.json(Method::PATCH, path, body)).await
    }

    pub fn json(&self, method: Method, path: &str, body: &Value) -> reqwest::RequestBuilder {
        self.request(method, path).header("content-type", "application/scim+json").body(body.to_string())
    }

    /// Creates a user and returns its representation; panics unless the server answers 201.
    pub async fn create_user(&self, body: Value) -> Value {
        let reply = self.post("/scim/v2/Users", &body).await;
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
        reply.body
    }
}

/// Serves `store` on 127.0.0.1:0 on a thread of its own, with the sync scheduler when the
/// configuration asks for it.
fn serve(
    store: Store,
    config: Config,
) -> (
    std::net::SocketAddr,
    actix_web::rt::System,
    actix_web::dev::ServerHandle,
    Option<scimd::sync::scheduler::Handle>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let (started_tx, started_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let system = actix_web::rt::System::new();
        system.block_on(async move {
            let key = config.secret_key().unwrap();
            let scheduler = scimd::sync::scheduler::spawn(store.clone(), key, &config.sync);
            let running = app::start(store, config, listener).unwrap();
            let handle = running.handle.clone();
            started_tx.send((running.addr, actix_web::rt::System::current(), handle, scheduler)).unwrap();
            running.server.await.unwrap();
        });
    });
    started_rx.recv().unwrap()
}

impl Drop for TestServer {
    fn drop(&mut self) {
        // Stopping the server ends the thread serving it, and with it the last handles on the
        // store: stopping the System alone left that thread waiting on the server, and every
        // finished test kept its database connections open.
        drop(self.server.stop(false));
        self.system.stop();
    }
}

/// A response, read whole.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Asserts a SCIM error of this status (and scimType, if given), returns the detail.
    pub fn assert_error(&self, status: u16, scim_type: Option<&str>) -> String {
        assert_eq!(self.status.as_u16(), status, "{}", self.body);
        assert_eq!(self.body["schemas"], serde_json::json!(["urn:ietf:params:scim:api:messages:2.0:Error"]));
        assert_eq!(self.body["status"], Value::String(status.to_string()), "status is a string");
        assert_eq!(self.body.get("scimType").and_then(Value::as_str), scim_type, "{}", self.body);
        assert!(self.header("content-type").unwrap_or_default().starts_with("application/scim+json"));
        let detail = self.body["detail"].as_str().unwrap_or_default().to_string();
        assert!(!detail.is_empty(), "error without a detail");
        detail
    }
}

impl Reply {
    /// Asserts an admin API error of this status, returns the detail.
    pub fn assert_admin_error(&self, status: u16) -> String {
        assert_eq!(self.status.as_u16(), status, "{}", self.body);
        assert_eq!(self.body["status"], serde_json::json!(status), "{}", self.body);
        assert!(self.body["error"].is_string(), "{}", self.body);
        assert_eq!(self.header("content-type"), Some("application/json"));
        let detail = self.body["detail"].as_str().unwrap_or_default().to_string();
        assert!(!detail.is_empty(), "error without a detail");
        detail
    }
}

/// A minimal valid user body.
pub fn user_body(user_name: &str) -> Value {
    serde_json::json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
        "userName": user_name,
        "name": {"givenName": "Test", "familyName": "User"},
        "emails": [{"value": user_name, "type": "work", "primary": true}],
        "active": true
    })
}
