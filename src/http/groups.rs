//! `/scim/v2/Groups`: extract, one store call, render. Members are read only when the response
//! includes them, and a PATCH answers 204 unless the request asks for attributes back.

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
use crate::scim::members::{self, MemberChanges};
use crate::scim::schema::ResourceKind;
use crate::scim::{patch, projection, resource};
use crate::store::groups::{GroupRecord, Member};

pub(super) fn wants_members(state: &AppState, projection: &Projection) -> bool {
    projection::keeps(&state.registry().group, "members", &projection.attributes, &projection.excluded)
}

pub(super) fn render(state: &AppState, record: GroupRecord, projection: &Projection) -> Value {
    let schema = &state.registry().group;
    let mut stored = record.resource;
    if let Some(members) = &record.members {
        stored.insert("members".into(), members_value(members, &state.base_url));
    }
    let full = resource::render(schema, stored, &record.meta, &state.base_url);
    Value::Object(projection::project(schema, full, &projection.attributes, &projection.excluded))
}

/// Members as returned: the user's id, a link to it, and their userName to display.
fn members_value(members: &[Member], base_url: &str) -> Value {
    Value::Array(
        members
            .iter()
            .map(|member| {
                json!({
                    "value": member.user_id,
                    "$ref": resource::location(ResourceKind::User, &member.user_id, base_url),
                    "display": member.user_name,
                    "type": "User",
                })
            })
            .collect(),
    )
}

fn single(
    state: &AppState,
    status: StatusCode,
    record: GroupRecord,
    projection: &Projection,
) -> HttpResponse {
    let etag = record.meta.etag();
    with_etag(scim(status, &render(state, record, projection)), &etag)
}

pub async fn create(
    state: web::Data<AppState>,
    key: DirectoryKey,
    request: HttpRequest,
    body: JsonBody,
) -> Result<HttpResponse> {
    let mut stored = resource::normalize(&state.registry().group, &body.0)?;
    let member_ids = members::take_members(&mut stored)?;
    let record = state.store.create_group(key.0, stored, member_ids).await?;
    let location = resource::location(ResourceKind::Group, &record.meta.id, &state.base_url);
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
    let projection = projection_of(&request);
    let with_members = wants_members(&state, &projection);
    let record = state.store.get_group(key.0, id.into_inner(), with_members).await?;
    if let Some(tags) = header_value(&request, header::IF_NONE_MATCH) {
        if resource::if_match_admits(&tags, &record.meta) {
            return Ok(not_modified(&record.meta));
        }
    }
    Ok(single(&state, StatusCode::OK, record, &projection))
}

/// PUT: full replacement of the name, externalId and membership.
pub async fn replace(
    state: web::Data<AppState>,
    key: DirectoryKey,
    request: HttpRequest,
    id: web::Path<String>,
    body: JsonBody,
) -> Result<HttpResponse> {
    let mut stored = resource::normalize(&state.registry().group, &body.0)?;
    let mut changes = MemberChanges::default();
    changes.replace_all(members::take_members(&mut stored)?);
    let projection = projection_of(&request);
    let with_members = wants_members(&state, &projection);
    let if_match = header_value(&request, header::IF_MATCH);
    let record = state
        .store
        .modify_group(key.0, id.into_inner(), if_match, move |_, _| Ok(stored), changes, with_members)
        .await?;
    Ok(single(&state, StatusCode::OK, record, &projection))
}

pub async fn patch(
    state: web::Data<AppState>,
    key: DirectoryKey,
    request: HttpRequest,
    id: web::Path<String>,
    body: JsonBody,
) -> Result<HttpResponse> {
    let operations = patch::parse(&body.0)?;
    let (attribute_ops, changes) = members::split_patch(&state.registry().group, &operations)?;
    let projection = projection_of(&request);
    // Entra asks for no body ("returning … all the members isn't advisable"); a client that
    // names attributes gets the resource.
    let respond_with_body = projection.is_requested();
    let with_members = respond_with_body && wants_members(&state, &projection);
    let if_match = header_value(&request, header::IF_MATCH);
    let record = state
        .store
        .modify_group(
            key.0,
            id.into_inner(),
            if_match,
            move |current, registry| {
                if attribute_ops.is_empty() {
                    Ok(current.clone())
                } else {
                    patch::apply(&registry.group, current, &attribute_ops)
                }
            },
            changes,
            with_members,
        )
        .await?;
    if respond_with_body {
        Ok(single(&state, StatusCode::OK, record, &projection))
    } else {
        Ok(with_etag(HttpResponse::NoContent().finish(), &record.meta.etag()))
    }
}

pub async fn delete(
    state: web::Data<AppState>,
    key: DirectoryKey,
    request: HttpRequest,
    id: web::Path<String>,
) -> Result<HttpResponse> {
    let if_match = header_value(&request, header::IF_MATCH);
    state.store.delete_group(key.0, id.into_inner(), if_match).await?;
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
    let with_members = wants_members(state, &projection);
    let start_index = list_request.start_index;
    let (total, records) = state.store.search_groups(key.0, list_request, with_members).await?;
    let resources = records.into_iter().map(|r| render(state, r, &projection)).collect();
    Ok(scim(StatusCode::OK, &list_response(total, start_index, resources)))
}
