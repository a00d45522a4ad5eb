//! `/ServiceProviderConfig`, `/ResourceTypes`, `/Schemas`: served from `schemas/*.json`,
//! with absolute locations and the configured page limit. Unauthenticated (RFC 7644 §4 allows
//! it), so a client can discover the server before it has a key.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::Value;

use super::scim;
use crate::app::AppState;
use crate::error::{Error, Result};
use crate::scim::list::list_response;

/// A filtered 200 would let a client believe everything returned matched (RFC 7644 §4).
fn refuse_filter(request: &HttpRequest) -> Result<()> {
    let has_filter = url::form_urlencoded::parse(request.query_string().as_bytes())
        .any(|(name, _)| name.eq_ignore_ascii_case("filter"));
    if has_filter {
        Err(Error::Forbidden("discovery endpoints do not support filtering".into()))
    } else {
        Ok(())
    }
}

/// Makes `meta.location` absolute.
fn located(mut document: Value, base_url: &str) -> Value {
    if let Some(Value::String(location)) = document.pointer_mut("/meta/location") {
        *location = format!("{base_url}/scim/v2{location}");
    }
    document
}

pub async fn service_provider_config(
    state: web::Data<AppState>,
    request: HttpRequest,
) -> Result<HttpResponse> {
    refuse_filter(&request)?;
    let mut document = located(state.registry().documents.service_provider_config.clone(), &state.base_url);
    if let Some(max) = document.pointer_mut("/filter/maxResults") {
        *max = Value::from(state.config.scim.max_page_size);
    }
    Ok(scim(StatusCode::OK, &document))
}

pub async fn resource_types(state: web::Data<AppState>, request: HttpRequest) -> Result<HttpResponse> {
    refuse_filter(&request)?;
    Ok(all(&state.registry().documents.resource_types, &state.base_url))
}

pub async fn resource_type(state: web::Data<AppState>, name: web::Path<String>) -> Result<HttpResponse> {
    one(&state.registry().documents.resource_types, &name, &state.base_url)
        .ok_or_else(|| Error::NotFound(format!("no resource type '{name}'; see /scim/v2/ResourceTypes")))
}

pub async fn schemas(state: web::Data<AppState>, request: HttpRequest) -> Result<HttpResponse> {
    refuse_filter(&request)?;
    Ok(all(&state.registry().documents.schemas, &state.base_url))
}

pub async fn schema(state: web::Data<AppState>, urn: web::Path<String>) -> Result<HttpResponse> {
    one(&state.registry().documents.schemas, &urn, &state.base_url)
        .ok_or_else(|| Error::NotFound(format!("no schema '{urn}'; see /scim/v2/Schemas")))
}

/// Every document, as a ListResponse.
fn all(documents: &[Value], base_url: &str) -> HttpResponse {
    let located_all: Vec<Value> = documents.iter().map(|d| located(d.clone(), base_url)).collect();
    scim(StatusCode::OK, &list_response(located_all.len() as u64, 1, located_all))
}

/// The document with this id (case-insensitive, like every SCIM name).
fn one(documents: &[Value], id: &str, base_url: &str) -> Option<HttpResponse> {
    documents
        .iter()
        .find(|d| d.get("id").and_then(Value::as_str).is_some_and(|known| known.eq_ignore_ascii_case(id)))
        .map(|document| scim(StatusCode::OK, &located(document.clone(), base_url)))
}
