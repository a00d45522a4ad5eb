//! Pull sync: importers that read a source directory (Okta, Entra ID) and write it
//! through the same repository as the SCIM handlers. `connection` and `rules` are pure.

pub mod connection;
pub mod consent;
pub mod engine;
pub mod graph;
pub mod okta;
pub mod okta_auth;
pub mod plan;
pub mod rules;
pub mod scheduler;
pub mod source;
