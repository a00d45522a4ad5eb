//! The bearer-key extractor: the key alone selects the directory.

use std::future::Future;
use std::pin::Pin;

use actix_web::dev::Payload;
use actix_web::http::header;
use actix_web::{web, FromRequest, HttpRequest};

use crate::app::AppState;
use crate::error::Error;
use crate::store::keys::Principal;

pub const MISSING_KEY: &str =
    "this endpoint needs a directory key: send 'Authorization: Bearer <key>' (issue one with 'scimd key issue <directory>')";

/// A request authenticated by a directory key. Store methods take the principal and confirm the
/// key again inside their own transaction (see `store::keys::confirm`).
#[derive(Debug, Clone)]
pub struct DirectoryKey(pub Principal);

/// The token from `Authorization: Bearer <token>`; the scheme is case-insensitive (RFC 7235).
fn bearer_token(request: &HttpRequest) -> Result<String, Error> {
    let Some(value) = request.headers().get(header::AUTHORIZATION) else {
        return Err(Error::Unauthorized(MISSING_KEY.into()));
    };
    let value = value.to_str().unwrap_or_default().trim();
    match value.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() => {
            Ok(token.trim().to_string())
        }
        _ => Err(Error::Unauthorized(
            "the Authorization header must be 'Bearer <key>' with a directory key".into(),
        )),
    }
}

impl FromRequest for DirectoryKey {
    type Error = Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self, Error>>>>;

    fn from_request(request: &HttpRequest, _: &mut Payload) -> Self::Future {
        let token = bearer_token(request);
        let state = request.app_data::<web::Data<AppState>>().cloned();
        Box::pin(async move {
            let token = token?;
            let state = state.ok_or_else(|| Error::Internal("application state missing".into()))?;
            match state.store.authenticate(token).await? {
                Ok(principal) => {
                    tracing::Span::current().record("directory_id", principal.directory_id.as_str());
                    Ok(DirectoryKey(principal))
                }
                Err(refusal) => Err(Error::Unauthorized(refusal.detail().into())),
            }
        })
    }
}
