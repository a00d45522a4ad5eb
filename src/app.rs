//! Application state and the server factory shared by `scimd serve` and the tests.

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::ServerHandle;
use actix_web::{web, App, HttpServer};

use crate::config::Config;
use crate::error::{Error, Result};
use crate::http;
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
}

impl AppState {
    pub fn registry(&self) -> &Registry {
        self.store.registry()
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
    Store::open(
        &config.database_url,
        config.database.pool_size,
        Duration::from_secs(config.database.acquire_timeout_secs),
        registry,
    )
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
    let state = web::Data::new(AppState { base_url: config.base_url(Some(addr)), store, config });
    let server = HttpServer::new(move || {
        // wrap() order: the last added runs first, so the request id exists before tracing.
        App::new()
            .app_data(state.clone())
            .configure(http::routes)
            .wrap(http::trim_trailing_slash())
            .wrap(http::tracing_logger())
            .wrap_fn(http::request_id)
    })
    .listen(listener)
    .map_err(|e| Error::Config(format!("cannot listen on {addr}: {e}")))?
    .shutdown_timeout(10)
    .run();
    Ok(RunningServer { addr, handle: server.handle(), server })
}
