//! `/scim/v2/Users`: extract, one store call, render.

use actix_web::http::header;
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::{json, Value};

use super::auth::DirectoryKey;
use super::body::JsonBody;
use super::{header_value, not_modified, projection_of, query_pairs, scim, with_etag, Projection};
use crate::app::AppState;
use crate::error::Result;
use crate::scim::list::{list_response, ListRequest};
use crate::scim::resource;
use crate::scim::schema::{ResourceKind, ENTERPRISE_USER_SCHEMA};
use crate::scim::{patch, projection};
use crate::store::groups::GroupRef;
use crate::store::users::UserRecord;

pub(super) fn render(state: &AppState, record: UserRecord, projection: &Projection) -> Value {
    let schema = &state.registry().user;
    let mut stored = record.resource;
    if let Some(manager_id) = &record.manager_id {
        link_manager(&mut stored, manager_id, record.manager_name.as_deref(), &state.base_url);
    }
    if !record.groups.is_empty() {
        stored.insert("groups".into(), groups_value(&record.groups, &state.base_url));
    }
    let full = resource::render(schema, stored, &record.meta, &state.base_url);
    Value::Object(projection::project(schema, full, &projection.attributes, &projection.excluded))
}

/// A manager resolved to a user of the directory gets that user's id (unless the client sent
/// a value of its own, which is returned as sent), a `$ref` to them, and their displayName when
/// the client sent none (Entra sends only the id).
fn link_manager(stored: &mut resource::Stored, manager_id: &str, name: Option<&str>, base_url: &str) {
    let manager = stored
        .get_mut(ENTERPRISE_USER_SCHEMA)
        .and_then(Value::as_object_mut)
        .and_then(|extension| extension.get_mut("manager"))
        .and_then(Value::as_object_mut);
    if let Some(manager) = manager {
        manager.entry("value").or_insert_with(|| Value::String(manager_id.to_string()));
        let location = resource::location(ResourceKind::User, manager_id, base_url);
        manager.insert("$ref".into(), Value::String(location));
        if let Some(name) = name {
            manager.entry("displayName").or_insert_with(|| Value::String(name.to_string()));
        }
    }
}

/// A user's read-only `groups`, derived from the membership (RFC 7643 §4.1.2).
fn groups_value(groups: &[GroupRef], base_url: &str) -> Value {
    Value::Array(
        groups
            .iter()
            .map(|group| {
                json!({
                    "value": group.group_id,
                    "$ref": resource::location(ResourceKind::Group, &group.group_id, base_url),
                    "display": group.display_name,
                    "type": "direct",
                })
            })
            .collect(),
    )
}

fn single(state: &AppState, status: StatusCode, record: UserRecord, projection: &Projection) -> HttpResponse {
    let etag = record.meta.etag();
    with_etag(scim(status, &render(state, record, projection)), &etag)
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
    let list_request = ListRequest::from_query(&query_pairs(&request), state.page_limits())?;
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
    let projection = Projection::of_list(&list_request);
    let start_index = list_request.start_index;
    let (total, records) = state.store.search_users(key.0, list_request).await?;
    let resources = records.into_iter().map(|r| render(state, r, &projection)).collect();
    Ok(scim(StatusCode::OK, &list_response(total, start_index, resources)))
}
