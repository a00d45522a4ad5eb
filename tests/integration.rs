//! The single integration-test binary: real HTTP against a real scimd on SQLite and PostgreSQL.

mod support;

mod cli;
mod scim;
