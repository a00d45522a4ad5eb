//! `/scim/v2/Users`: extract, one store call, render.

use actix_web::http::header;
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::Value;

use super::auth::DirectoryKey;
use super::body::JsonBody;
use super::scim;
use crate::app::AppState;
use crate::error::Result;
use crate::scim::list::{list_response, ListRequest};
use crate::scim::resource::{self, Meta};
use crate::scim::{patch, projection};
use crate::store::users::UserRecord;

/// `attributes` / `excludedAttributes` of a single-resource request.
#[derive(Debug, Default)]
struct Projection {
    attributes: Vec<String>,
    excluded: Vec<String>,
}

fn projection_of(request: &HttpRequest) -> Projection {
    let split = |v: &str| v.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_string).collect();
    let mut projection = Projection::default();
    for (name, value) in url::form_urlencoded::parse(request.query_string().as_bytes()) {
        if name.eq_ignore_ascii_case("attributes") {
            projection.attributes = split(&value);
        } else if name.eq_ignore_ascii_case("excludedAttributes") {
            projection.excluded = split(&value);
        }
    }
    projection
}

fn header_value(request: &HttpRequest, name: header::HeaderName) -> Option<String> {
    request.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_string)
}

fn render(state: &AppState, record: UserRecord, projection: &Projection) -> Value {
    let schema = &state.registry().user;
    let full = resource::render(schema, record.resource, &record.meta, &state.base_url);
    Value::Object(projection::project(schema, full, &projection.attributes, &projection.excluded))
}

fn single(state: &AppState, status: StatusCode, record: UserRecord, projection: &Projection) -> HttpResponse {
    let etag = record.meta.etag();
    with_etag(scim(status, &render(state, record, projection)), &etag)
}

/// The `ETag` header carries the same weak tag as `meta.version` (RFC 7644 §3.14).
fn with_etag(mut response: HttpResponse, etag: &str) -> HttpResponse {
    if let Ok(etag) = header::HeaderValue::from_str(etag) {
        response.headers_mut().insert(header::ETAG, etag);
    }
    response
}

pub async fn create(
    state: web::Data<AppState>,
    key: DirectoryKey,
    request: HttpRequest,
    body: JsonBody,
) -> Result<HttpResponse> {
    let stored = resource::normalize(&state.registry().user, &body.0)?;
    let record = state.store.create_user(key.0, stored).await?;
    let location = resource::location(state.registry().user.kind, &record.meta.id, &state.base_url);
    let mut response = single(&state, StatusCode::CREATED, record, &projection_of(&request));
    if let Ok(location) = header::HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    Ok(response)
}

pub async fn get(
    state: web::Data<AppState>,
    key: DirectoryKey,
    request: HttpRequest,
    id: web::Path<String>,
) -> Result<HttpResponse> {
    let record = state.store.get_user(key.0, id.into_inner()).await?;
    if let Some(tags) = header_value(&request, header::IF_NONE_MATCH) {
        if resource::if_match_admits(&tags, &record.meta) {
            return Ok(not_modified(&record.meta));
        }
    }
    Ok(single(&state, StatusCode::OK, record, &projection_of(&request)))
}

fn not_modified(meta: &Meta) -> HttpResponse {
    with_etag(HttpResponse::NotModified().finish(), &meta.etag())
}

pub async fn replace(
    state: web::Data<AppState>,
    key: DirectoryKey,
    request: HttpRequest,
    id: web::Path<String>,
    body: JsonBody,
) -> Result<HttpResponse> {
    let stored = resource::normalize(&state.registry().user, &body.0)?;
    let if_match = header_value(&request, header::IF_MATCH);
    let record = state.store.replace_user(key.0, id.into_inner(), if_match, stored).await?;
    Ok(single(&state, StatusCode::OK, record, &projection_of(&request)))
}

pub async fn patch(
    state: web::Data<AppState>,
    key: DirectoryKey,
    request: HttpRequest,
    id: web::Path<String>,
    body: JsonBody,
) -> Result<HttpResponse> {
    let operations = patch::parse(&body.0)?;
    let if_match = header_value(&request, header::IF_MATCH);
    let record = state
        .store
        .patch_user(key.0, id.into_inner(), if_match, move |current, registry| {
            patch::apply(&registry.user, current, &operations)
        })
        .await?;
    Ok(single(&state, StatusCode::OK, record, &projection_of(&request)))
}

pub async fn delete(
    state: web::Data<AppState>,
    key: DirectoryKey,
    request: HttpRequest,
    id: web::Path<String>,
) -> Result<HttpResponse> {
    let if_match = header_value(&request, header::IF_MATCH);
    state.store.delete_user(key.0, id.into_inner(), if_match).await?;
    Ok(HttpResponse::NoContent().finish())
}

pub async fn list(
    state: web::Data<AppState>,
    key: DirectoryKey,
    request: HttpRequest,
) -> Result<HttpResponse> {
    let pairs: Vec<(String, String)> = url::form_urlencoded::parse(request.query_string().as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let list_request = ListRequest::from_query(&pairs, state.page_limits())?;
    respond_list(&state, key, list_request).await
}

pub async fn search(state: web::Data<AppState>, key: DirectoryKey, body: JsonBody) -> Result<HttpResponse> {
    let list_request = ListRequest::from_search_body(&body.0, state.page_limits())?;
    respond_list(&state, key, list_request).await
}

async fn respond_list(
    state: &AppState,
    key: DirectoryKey,
    list_request: ListRequest,
) -> Result<HttpResponse> {
    let projection = Projection {
        attributes: list_request.attributes.clone(),
        excluded: list_request.excluded_attributes.clone(),
    };
    let start_index = list_request.start_index;
    let (total, records) = state.store.search_users(key.0, list_request).await?;
    let resources = records.into_iter().map(|r| render(state, r, &projection)).collect();
    Ok(scim(StatusCode::OK, &list_response(total, start_index, resources)))
}
