//! Bearer-token extractors: a directory key selects its directory (`/scim/v2`); an admin token
//! opens `/admin/v1`. A token of the wrong kind is told apart by its prefix and refused with a
//! detail that says which kind the endpoint needs, before any database work.

use std::future::Future;
use std::pin::Pin;

use actix_web::dev::Payload;
use actix_web::http::header;
use actix_web::{web, FromRequest, HttpRequest};

use super::error::AdminError;
use crate::app::AppState;
use crate::error::Error;
use crate::ids::AdminTokenId;
use crate::store::keys::Principal;
use crate::store::usage::TokenTable;
use crate::token::Kind;

pub const MISSING_KEY: &str =
    "this endpoint needs a directory key: send 'Authorization: Bearer <key>' (issue one with 'scimd key issue <directory>')";
pub const MISSING_ADMIN_TOKEN: &str =
    "the admin API needs an admin token: send 'Authorization: Bearer <token>' (issue one with 'scimd admin-token issue')";
const ADMIN_TOKEN_ON_SCIM: &str =
    "this is an admin token; SCIM endpoints need a directory key (issue one with 'scimd key issue <directory>')";
const KEY_ON_ADMIN: &str =
    "this is a directory key; the admin API needs an admin token (issue one with 'scimd admin-token issue')";

/// A request authenticated by a directory key. Store methods take the principal and confirm the
/// key again inside their own transaction (see `store::keys::confirm`).
#[derive(Debug, Clone)]
pub struct DirectoryKey(pub Principal);

/// A request authenticated by an admin token, checked against the database just now.
#[derive(Debug, Clone)]
pub struct AdminToken(pub AdminTokenId);

/// The token from `Authorization: Bearer <token>`; the scheme is case-insensitive (RFC 7235).
fn bearer_token(request: &HttpRequest, missing: &'static str) -> Result<String, Error> {
    let Some(value) = request.headers().get(header::AUTHORIZATION) else {
        return Err(Error::Unauthorized(missing.into()));
    };
    let value = value.to_str().unwrap_or_default().trim();
    match value.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() => {
            Ok(token.trim().to_string())
        }
        _ => Err(Error::Unauthorized("the Authorization header must be 'Bearer <token>'".into())),
    }
}

fn state_of(request: &HttpRequest) -> Option<web::Data<AppState>> {
    request.app_data::<web::Data<AppState>>().cloned()
}

impl FromRequest for DirectoryKey {
    type Error = Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self, Error>>>>;

    fn from_request(request: &HttpRequest, _: &mut Payload) -> Self::Future {
        let token = bearer_token(request, MISSING_KEY);
        let state = state_of(request);
        Box::pin(async move {
            let token = token?;
            if Kind::claimed_by(&token) == Some(Kind::Admin) {
                return Err(Error::Unauthorized(ADMIN_TOKEN_ON_SCIM.into()));
            }
            let state = state.ok_or_else(|| Error::Internal("application state missing".into()))?;
            match state.store.authenticate(token).await? {
                Ok(principal) => {
                    tracing::Span::current().record("directory_id", principal.directory_id.as_str());
                    state.rate_limiter.check(principal.key_id.as_str())?;
                    Ok(DirectoryKey(principal))
                }
                Err(refusal) => Err(Error::Unauthorized(refusal.detail().into())),
            }
        })
    }
}

impl FromRequest for AdminToken {
    type Error = AdminError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, AdminError>>>>;

    fn from_request(request: &HttpRequest, _: &mut Payload) -> Self::Future {
        let token = bearer_token(request, MISSING_ADMIN_TOKEN);
        let state = state_of(request);
        Box::pin(async move {
            let token = token?;
            if Kind::claimed_by(&token) == Some(Kind::Directory) {
                return Err(Error::Unauthorized(KEY_ON_ADMIN.into()).into());
            }
            let state = state.ok_or_else(|| Error::Internal("application state missing".into()))?;
            match state.store.authenticate_admin(token).await? {
                Ok(id) => {
                    state.rate_limiter.check(id.as_str())?;
                    state.store.note_use(TokenTable::AdminTokens, id.as_str());
                    Ok(AdminToken(id))
                }
                Err(refusal) => Err(Error::Unauthorized(refusal.admin_detail().into()).into()),
            }
        })
    }
}
