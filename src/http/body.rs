//! The JSON body extractor: content type checked, size capped, errors in SCIM form.

use std::future::Future;
use std::pin::Pin;

use actix_web::dev::Payload;
use actix_web::http::header;
use actix_web::{web, FromRequest, HttpRequest};
use futures_util::StreamExt;
use serde_json::Value;

use crate::app::AppState;
use crate::error::Error;

/// A request body parsed as JSON. Accepts `application/scim+json` and `application/json`
/// (with or without charset), and a missing content type; anything else is 415.
#[derive(Debug)]
pub struct JsonBody(pub Value);

fn check_content_type(request: &HttpRequest) -> Result<(), Error> {
    let Some(value) = request.headers().get(header::CONTENT_TYPE) else { return Ok(()) };
    let essence =
        value.to_str().unwrap_or_default().split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    if essence == "application/scim+json" || essence == "application/json" {
        Ok(())
    } else {
        Err(Error::UnsupportedMediaType(format!(
            "the body must be JSON sent as 'Content-Type: application/scim+json' (or application/json), not '{essence}'"
        )))
    }
}

impl FromRequest for JsonBody {
    type Error = Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self, Error>>>>;

    fn from_request(request: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let checked = check_content_type(request);
        let limit =
            request.app_data::<web::Data<AppState>>().map_or(1024 * 1024, |s| s.config.scim.max_body_bytes);
        let declared = request
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        let mut payload = payload.take();
        Box::pin(async move {
            checked?;
            let too_large =
                || Error::PayloadTooLarge(format!("the body is larger than the limit of {limit} bytes"));
            if declared.is_some_and(|length| length > limit) {
                return Err(too_large());
            }
            let mut bytes = web::BytesMut::new();
            while let Some(chunk) = payload.next().await {
                let chunk =
                    chunk.map_err(|e| Error::InvalidSyntax(format!("the body could not be read: {e}")))?;
                if bytes.len() + chunk.len() > limit {
                    return Err(too_large());
                }
                bytes.extend_from_slice(&chunk);
            }
            if bytes.is_empty() {
                return Err(Error::InvalidSyntax("the request needs a JSON body".into()));
            }
            serde_json::from_slice(&bytes)
                .map(JsonBody)
                .map_err(|e| Error::InvalidSyntax(format!("the body is not valid JSON: {e}")))
        })
    }
}

/// [`JsonBody`] for the admin API: the same checks, with errors in admin JSON.
#[derive(Debug)]
pub struct AdminBody(pub Value);

impl FromRequest for AdminBody {
    type Error = super::error::AdminError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, Self::Error>>>>;

    fn from_request(request: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let body = JsonBody::from_request(request, payload);
        Box::pin(async move { body.await.map(|body| AdminBody(body.0)).map_err(Into::into) })
    }
}
