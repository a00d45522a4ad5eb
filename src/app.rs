//! Application state and the server factory shared by `scimd serve` and the tests.

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::ServerHandle;
use actix_web::{web, App, HttpServer};

use crate::config::Config;
use crate::error::{Error, Result};
use crate::http;
use crate::http::rate_limit::RateLimiter;
use crate::scim::list::PageLimits;
use crate::scim::schema::Registry;
use crate::store::Store;

/// What every handler can reach.
#[derive(Debug, Clone)]
pub struct AppState {
    pub store: Store,
    pub config: Config,
    /// Absolute base for `meta.location`, without a trailing slash.
    pub base_url: String,
    /// Per-key request limits (see `http::rate_limit`).
    pub rate_limiter: Arc<RateLimiter>,
    /// Seals importer credentials; `None` when the operator set no key.
    pub secret_key: Option<crate::encryption::SecretKey>,
    /// Signs browser cookies; loaded from the database on first use (see `store::saml`).
    pub cookie_key: Arc<tokio::sync::OnceCell<crate::saml::CookieKey>>,
}

impl AppState {
    pub fn registry(&self) -> &Registry {
        self.store.registry()
    }

    /// The key that signs cookies, shared by all instances through the database.
    pub async fn cookie_key(&self) -> Result<&crate::saml::CookieKey> {
        self.cookie_key
            .get_or_try_init(|| async { Ok(crate::saml::CookieKey::new(&self.store.cookie_key().await?)) })
            .await
    }

    /// Whether cookies carry `Secure`: when the public URL is https, unless turned off.
    pub fn secure_cookies(&self) -> bool {
        self.base_url.starts_with("https://") && self.config.session.secure_cookies
    }

    pub fn page_limits(&self) -> PageLimits {
        PageLimits {
            default_count: u64::from(self.config.scim.default_page_size),
            max_count: u64::from(self.config.scim.max_page_size),
        }
    }
}

/// Opens the store on the configured database (migrations are the caller's choice).
pub fn open_store(config: &Config) -> Result<Store> {
    let registry = Arc::new(Registry::load()?);
    Ok(Store::open(
        &config.database_url,
        config.database.pool_size,
        Duration::from_secs(config.database.acquire_timeout_secs),
        config.database.sqlite_mmap_mib,
        registry,
    )?
    .with_last_used_interval(Duration::from_secs(config.auth.last_used_interval_secs))
    .with_sync_lease_ttl(Duration::from_secs(config.sync.lease_ttl_secs)))
}

/// A started server: its address, a handle to stop it, and the future that runs it.
pub struct RunningServer {
    pub addr: SocketAddr,
    pub handle: ServerHandle,
    pub server: actix_web::dev::Server,
}

/// Starts serving on an already bound listener (tests bind 127.0.0.1:0).
pub fn start(store: Store, config: Config, listener: TcpListener) -> Result<RunningServer> {
    let addr = listener.local_addr().map_err(|e| Error::internal("reading the bound address", e))?;
    let state = web::Data::new(AppState {
        base_url: config.base_url(Some(addr)),
        rate_limiter: Arc::new(RateLimiter::new(&config.rate_limit)),
        secret_key: config.secret_key()?,
        cookie_key: Arc::default(),
        store,
        config,
    });
    let server = HttpServer::new(move || {
        // wrap() order: the last added runs first, so the request id exists before tracing.
        App::new()
            .app_data(state.clone())
            .configure(http::routes)
            .wrap(http::trim_trailing_slash())
            .wrap(http::tracing_logger())
            .wrap_fn(http::request_id)
            .wrap_fn(http::metrics::observe)
    })
    .listen(listener)
    .map_err(|e| Error::Config(format!("cannot listen on {addr}: {e}")))?
    .shutdown_timeout(10)
    .run();
    Ok(RunningServer { addr, handle: server.handle(), server })
}

/// How often retention runs.
const MAINTENANCE_INTERVAL: Duration = Duration::from_secs(3600);

/// Background upkeep of `scimd serve`: deletes audit entries past `audit.retention_days`, at
/// start and then hourly. Several instances may do it at once; deleting is idempotent.
pub fn start_maintenance(store: Store, config: &Config) {
    let retention_days = config.audit.retention_days;
    if retention_days == 0 {
        return;
    }
    let retention_ms = i64::from(retention_days) * 86_400_000;
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(MAINTENANCE_INTERVAL);
        loop {
            ticks.tick().await;
            let before = crate::store::now_millis() - retention_ms;
            match store.prune_audit(before).await {
                Ok(0) => {}
                Ok(pruned) => tracing::info!(pruned, retention_days, "deleted audit entries past retention"),
                Err(error) => tracing::warn!(%error, "audit retention failed; will retry"),
            }
        }
    });
}
