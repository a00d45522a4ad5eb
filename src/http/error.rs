//! The one place errors become HTTP: status, `scimType`, detail, SCIM error schema.

use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde_json::{json, Map, Value};

use super::SCIM_CONTENT_TYPE;
use crate::error::Error;
use crate::scim::schema::ERROR_SCHEMA;
use crate::telemetry::current_request_id;

/// Status and `scimType` of each error. Exhaustive on purpose: a new variant must be mapped.
fn classify(error: &Error) -> (StatusCode, Option<&'static str>) {
    match error {
        Error::InvalidFilter(_) => (StatusCode::BAD_REQUEST, Some("invalidFilter")),
        Error::InvalidSyntax(_) => (StatusCode::BAD_REQUEST, Some("invalidSyntax")),
        Error::InvalidPath(_) => (StatusCode::BAD_REQUEST, Some("invalidPath")),
        Error::NoTarget(_) => (StatusCode::BAD_REQUEST, Some("noTarget")),
        Error::InvalidValue(_) => (StatusCode::BAD_REQUEST, Some("invalidValue")),
        Error::Mutability(_) => (StatusCode::BAD_REQUEST, Some("mutability")),
        Error::TooMany(_) => (StatusCode::BAD_REQUEST, Some("tooMany")),
        Error::Uniqueness(_) => (StatusCode::CONFLICT, Some("uniqueness")),
        Error::Conflict(_) => (StatusCode::CONFLICT, None),
        Error::RateLimited { .. } => (StatusCode::TOO_MANY_REQUESTS, None),
        Error::PayloadTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, None),
        Error::UnsupportedMediaType(_) => (StatusCode::UNSUPPORTED_MEDIA_TYPE, None),
        Error::NotFound(_) => (StatusCode::NOT_FOUND, None),
        Error::MethodNotAllowed { .. } => (StatusCode::METHOD_NOT_ALLOWED, None),
        Error::Unauthorized(_) => (StatusCode::UNAUTHORIZED, None),
        Error::Forbidden(_) => (StatusCode::FORBIDDEN, None),
        Error::PreconditionFailed(_) => (StatusCode::PRECONDITION_FAILED, None),
        Error::NotImplemented(_) => (StatusCode::NOT_IMPLEMENTED, None),
        Error::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, None),
        Error::Upstream(_) => (StatusCode::BAD_GATEWAY, None),
        Error::Config(_) | Error::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, None),
    }
}

/// The detail a client sees: client errors say what to fix; server errors only quote the
/// request id, and their cause goes to the log.
fn client_detail(error: &Error, status: StatusCode) -> String {
    let request_id = current_request_id().unwrap_or_default();
    if status.is_server_error() {
        tracing::error!(%error, "request failed");
        match error {
            Error::Unavailable(_) => {
                format!("the service is temporarily unavailable; retry later (request id {request_id})")
            }
            // About the source directory, not scimd's insides: the admin needs the remedy.
            Error::Upstream(detail) => format!("{detail} (request id {request_id})"),
            _ => format!("internal error; quote request id {request_id} to the operator"),
        }
    } else {
        // Client mistakes are routine; their details may name a person, so debug only.
        tracing::debug!(status = status.as_u16(), detail = %error, "request refused");
        error.to_string()
    }
}

/// The status and the detail a client may see of an error, for answers that are neither SCIM
/// nor admin JSON: the pages a browser sees when Microsoft sends an admin back after consent.
pub fn status_and_detail(error: &Error) -> (StatusCode, String) {
    let (status, _) = classify(error);
    (status, client_detail(error, status))
}

/// An error response with the headers its status calls for: a Bearer challenge on 401,
/// Retry-After on 429 and 503, Allow on 405.
fn respond(error: &Error, status: StatusCode, content_type: &'static str, body: Value) -> HttpResponse {
    let mut response = HttpResponse::build(status);
    response.insert_header((header::CONTENT_TYPE, content_type));
    if status == StatusCode::UNAUTHORIZED {
        // RFC 6750 §3: no error code when no credentials were presented at all.
        let challenge = match error {
            Error::Unauthorized(detail)
                if detail == super::auth::MISSING_KEY || detail == super::auth::MISSING_ADMIN_TOKEN =>
            {
                WWW_AUTHENTICATE
            }
            _ => WWW_AUTHENTICATE_INVALID,
        };
        response.insert_header((header::WWW_AUTHENTICATE, HeaderValue::from_static(challenge)));
    }
    match error {
        Error::RateLimited { retry_after_secs, .. } => {
            response.insert_header((header::RETRY_AFTER, retry_after_secs.to_string()));
        }
        Error::Unavailable(_) => {
            response.insert_header((header::RETRY_AFTER, "5"));
        }
        // RFC 9110 §15.5.6: a 405 lists what the resource does support.
        Error::MethodNotAllowed { allow } => {
            response.insert_header((header::ALLOW, *allow));
        }
        _ => {}
    }
    response.body(body.to_string())
}

impl ResponseError for Error {
    fn status_code(&self) -> StatusCode {
        classify(self).0
    }

    fn error_response(&self) -> HttpResponse {
        let (status, scim_type) = classify(self);
        let mut body = Map::new();
        body.insert("schemas".into(), json!([ERROR_SCHEMA]));
        body.insert("status".into(), Value::String(status.as_u16().to_string()));
        if let Some(scim_type) = scim_type {
            body.insert("scimType".into(), Value::String(scim_type.into()));
        }
        body.insert("detail".into(), Value::String(client_detail(self, status)));
        respond(self, status, SCIM_CONTENT_TYPE, Value::Object(body))
    }
}

/// An error of the admin API, which speaks plain JSON rather than SCIM:
/// `{"status": 409, "error": "conflict", "detail": "..."}`.
#[derive(Debug)]
pub struct AdminError(pub Error);

impl From<Error> for AdminError {
    fn from(error: Error) -> Self {
        AdminError(error)
    }
}

impl std::fmt::Display for AdminError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// A stable, machine-readable name for each status the admin API answers with.
fn admin_error_code(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "invalid_request",
        401 => "unauthorized",
        403 => "forbidden",
        404 => "not_found",
        405 => "method_not_allowed",
        409 => "conflict",
        412 => "precondition_failed",
        413 => "payload_too_large",
        415 => "unsupported_media_type",
        429 => "rate_limited",
        501 => "not_implemented",
        503 => "unavailable",
        _ => "internal",
    }
}

impl ResponseError for AdminError {
    fn status_code(&self) -> StatusCode {
        classify(&self.0).0
    }

    fn error_response(&self) -> HttpResponse {
        let (status, _) = classify(&self.0);
        let body = json!({
            "status": status.as_u16(),
            "error": admin_error_code(status),
            "detail": client_detail(&self.0, status),
        });
        respond(&self.0, status, "application/json", body)
    }
}

const WWW_AUTHENTICATE: &str = "Bearer realm=\"scimd\"";
const WWW_AUTHENTICATE_INVALID: &str = "Bearer realm=\"scimd\", error=\"invalid_token\"";
