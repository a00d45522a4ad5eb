//! scimd: a multi-tenant SCIM 2.0 provisioning server and corporate directory.
//!
//! `scim/` is the pure protocol core, `store/` the one repository (the only diesel user),
//! `http/` the actix-web edge. `cli` and `config` wire them together for the binary.

// Nothing a request, a file or a remote API controls may panic the server.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)
)]

pub mod app;
pub mod cli;
pub mod config;
pub mod encryption;
pub mod error;
pub mod http;
pub mod ids;
pub mod metrics;
pub mod saml;
pub mod scim;
pub mod store;
pub mod sync;
pub mod telemetry;
pub mod token;

/// The throwaway PostgreSQL cluster of the integration tests, for unit tests that must also
/// hold on PostgreSQL (the filter-to-SQL property test).
#[cfg(test)]
#[path = "../tests/support/db.rs"]
mod test_postgres;
