//! Root `POST /.search` (RFC 7644 §3.4.3): one search over every resource type. Results are the
//! matching Users, then the matching Groups, each in id order, paged as one list. A filter that
//! only one type can answer (`userName eq …`, `members eq …`) searches that type alone.

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};

use super::auth::DirectoryKey;
use super::body::JsonBody;
use super::{groups, scim, users, Projection};
use crate::app::AppState;
use crate::error::{Error, Result};
use crate::scim::filter;
use crate::scim::list::{list_response, ListRequest};

pub async fn search_all(
    state: web::Data<AppState>,
    key: DirectoryKey,
    body: JsonBody,
) -> Result<HttpResponse> {
    let request = ListRequest::from_search_body(&body.0, state.page_limits())?;
    if request.sort_by.is_some() {
        return Err(Error::InvalidValue(
            "sortBy is not supported when searching across resource types; search /Users/.search or \
             /Groups/.search to sort"
                .into(),
        ));
    }
    let registry = state.registry();
    let (search_users, search_groups) = match &request.filter {
        None => (true, true),
        Some(text) => match (filter::parse(text, &registry.user), filter::parse(text, &registry.group)) {
            // Neither type can answer it: the Users error says what is wrong.
            (Err(error), Err(_)) => return Err(error),
            (user, group) => (user.is_ok(), group.is_ok()),
        },
    };
    let projection = Projection::of_list(&request);
    let offset = request.start_index.saturating_sub(1);
    let mut total = 0;
    let mut resources = Vec::new();
    if search_users {
        let (user_total, records) = state.store.search_users(key.0.clone(), request.clone()).await?;
        total += user_total;
        resources.extend(records.into_iter().map(|r| users::render(&state, r, &projection)));
    }
    if search_groups {
        // The groups' part of the page starts where the users' part of the list ends.
        let room = request.count.saturating_sub(u64::try_from(resources.len()).unwrap_or(u64::MAX));
        let groups_request =
            ListRequest { start_index: offset.saturating_sub(total) + 1, count: room, ..request.clone() };
        let with_members = groups::wants_members(&state, &projection);
        let (group_total, records) = state.store.search_groups(key.0, groups_request, with_members).await?;
        total += group_total;
        resources.extend(records.into_iter().map(|r| groups::render(&state, r, &projection)));
    }
    Ok(scim(StatusCode::OK, &list_response(total, request.start_index, resources)))
}
