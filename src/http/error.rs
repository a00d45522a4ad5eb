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
        Error::PayloadTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, None),
        Error::UnsupportedMediaType(_) => (StatusCode::UNSUPPORTED_MEDIA_TYPE, None),
        Error::NotFound(_) => (StatusCode::NOT_FOUND, None),
        Error::MethodNotAllowed(_) => (StatusCode::METHOD_NOT_ALLOWED, None),
        Error::Unauthorized(_) => (StatusCode::UNAUTHORIZED, None),
        Error::Forbidden(_) => (StatusCode::FORBIDDEN, None),
        Error::PreconditionFailed(_) => (StatusCode::PRECONDITION_FAILED, None),
        Error::NotImplemented(_) => (StatusCode::NOT_IMPLEMENTED, None),
        Error::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, None),
        Error::Config(_) | Error::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, None),
    }
}

impl ResponseError for Error {
    fn status_code(&self) -> StatusCode {
        classify(self).0
    }

    fn error_response(&self) -> HttpResponse {
        let (status, scim_type) = classify(self);
        let request_id = current_request_id().unwrap_or_default();
        let detail = if status.is_server_error() {
            // The cause stays in the log; the client gets the id to quote.
            tracing::error!(error = %self, "request failed");
            match self {
                Error::Unavailable(_) => {
                    format!("the service is temporarily unavailable; retry later (request id {request_id})")
                }
                _ => format!("internal error; quote request id {request_id} to the operator"),
            }
        } else {
            // Client mistakes are routine; their details may name a person, so debug only.
            tracing::debug!(status = status.as_u16(), detail = %self, "request refused");
            self.to_string()
        };
        let mut body = Map::new();
        body.insert("schemas".into(), json!([ERROR_SCHEMA]));
        body.insert("status".into(), Value::String(status.as_u16().to_string()));
        if let Some(scim_type) = scim_type {
            body.insert("scimType".into(), Value::String(scim_type.into()));
        }
        body.insert("detail".into(), Value::String(detail));
        let mut response = HttpResponse::build(status);
        response.insert_header((header::CONTENT_TYPE, SCIM_CONTENT_TYPE));
        if status == StatusCode::UNAUTHORIZED {
            // RFC 6750 §3: no error code when no credentials were presented at all.
            let challenge = match self {
                Error::Unauthorized(detail) if detail == super::auth::MISSING_KEY => WWW_AUTHENTICATE,
                _ => WWW_AUTHENTICATE_INVALID,
            };
            response.insert_header((header::WWW_AUTHENTICATE, HeaderValue::from_static(challenge)));
        }
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response.insert_header((header::RETRY_AFTER, "5"));
        }
        response.body(Value::Object(body).to_string())
    }
}

const WWW_AUTHENTICATE: &str = "Bearer realm=\"scimd\"";
const WWW_AUTHENTICATE_INVALID: &str = "Bearer realm=\"scimd\", error=\"invalid_token\"";
