//! The single integration-test binary: real HTTP against a real scimd on SQLite and PostgreSQL.

mod support;

mod admin;
mod cli;
mod lookup;
mod ops;
mod saml;
mod scim;
mod sync;
