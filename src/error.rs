//! The one error type. Variants are named by meaning; `http/error.rs` maps each to SCIM JSON.

use thiserror::Error;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, Error)]
pub enum Error {
    /// 400 `invalidFilter`: the filter does not parse, or names an attribute or operator that
    /// does not fit the schema.
    #[error("{0}")]
    InvalidFilter(String),
    /// 400 `invalidSyntax`: the body is not valid JSON or misses a required message member.
    #[error("{0}")]
    InvalidSyntax(String),
    /// 400 `invalidPath`: a PATCH path does not parse or names an unknown attribute.
    #[error("{0}")]
    InvalidPath(String),
    /// 400 `noTarget`: a PATCH path matched nothing where a match is required.
    #[error("{0}")]
    NoTarget(String),
    /// 400 `invalidValue`: wrong type, missing required attribute, bad parameter.
    #[error("{0}")]
    InvalidValue(String),
    /// 400 `mutability`: an attempt to change a read-only or immutable attribute.
    #[error("{0}")]
    Mutability(String),
    /// 409 `uniqueness`: a value that must be unique in the directory is taken.
    #[error("{0}")]
    Uniqueness(String),
    /// 409: the request conflicts with the current state (e.g. deleting a directory that still
    /// holds users without `purge`).
    #[error("{0}")]
    Conflict(String),
    /// 429: a key sent more requests than its rate limit allows; retry after the given seconds.
    #[error("{detail}")]
    RateLimited { detail: String, retry_after_secs: u64 },
    /// 400 `tooMany`: the request asks for more than the server will process.
    #[error("{0}")]
    TooMany(String),
    /// 413: the body is larger than `max_body_bytes`.
    #[error("{0}")]
    PayloadTooLarge(String),
    /// 415: the body is not JSON.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// 404: unknown resource, or one that belongs to another directory.
    #[error("{0}")]
    NotFound(String),
    /// 405: the endpoint exists but not with this method; `allow` lists the methods it takes.
    #[error("this endpoint supports only {allow}")]
    MethodNotAllowed { allow: &'static str },
    /// 401: no key, or a key that is unknown, revoked or expired. The detail says which,
    /// never anything about the directory.
    #[error("{0}")]
    Unauthorized(String),
    /// 403: the request is understood but refused (e.g. a filter on discovery endpoints).
    #[error("{0}")]
    Forbidden(String),
    /// 412: `If-Match` names a version that is no longer current.
    #[error("{0}")]
    PreconditionFailed(String),
    /// 501: an endpoint scimd deliberately does not implement (`/Bulk`, `/Me`).
    #[error("{0}")]
    NotImplemented(String),
    /// 503: the database is unreachable or the pool is exhausted; retrying later may work.
    #[error("{0}")]
    Unavailable(String),
    /// 502: a source directory (Okta, Graph) failed or refused; the detail names the remedy.
    #[error("{0}")]
    Upstream(String),
    /// Misconfiguration found at start-up or by the CLI; printed to the operator as is.
    #[error("{0}")]
    Config(String),
    /// 500: a fault of scimd or its database. The detail is logged, never sent to clients.
    #[error("{0}")]
    Internal(String),
}

impl Error {
    pub fn internal(context: &str, cause: impl std::fmt::Display) -> Self {
        Error::Internal(format!("{context}: {cause}"))
    }
}
