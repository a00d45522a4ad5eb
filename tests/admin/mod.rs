//! The admin API over real HTTP on both backends: directories, keys, the audit log, token
//! states, rate limits and secrets at rest.

mod audit;
mod connections;
mod directories;
mod keys;
mod limits;
mod secrets;
mod tokens;
