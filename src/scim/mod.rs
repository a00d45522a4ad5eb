//! The SCIM protocol core: pure functions over values, no I/O, no database, no HTTP.

pub mod filter;
pub mod index;
pub mod list;
pub mod members;
pub mod patch;
pub mod path;
pub mod projection;
pub mod resource;
pub mod schema;
