//! The people lookup of a directory, for its signed-in members: the search page
//! `GET /d/{directory}/?q=&cursor=`, a person's page `GET /d/{directory}/people/{id}`, and the
//! search box's JSON, `GET /d/{directory}/api/people?q=&cursor=`. Without a session (or with
//! another directory's), pages redirect to sign-in and the JSON answers 401. Deactivated people
//! are shown, marked, unless the directory's `show_deactivated` is off. Markup is in `pages.rs`.

use actix_web::http::header;
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use rand::Rng;
use serde_json::json;

use super::pages::{self, Chrome, Results};
use super::query_pairs;
use super::saml::{error_answer, session_of};
use crate::app::AppState;
use crate::error::Error;
use crate::store::directories::Directory;
use crate::store::people::Person;
use crate::store::saml::SessionUser;

const PAGE_SIZE: i64 = 20;

pub fn routes(config: &mut web::ServiceConfig) {
    // Trailing slashes are trimmed before routing: `/d/acme/` arrives as `/d/acme`.
    config
        .route("/d/{directory}", web::get().to(home))
        .route("/d/{directory}/people/{id}", web::get().to(person))
        .route("/d/{directory}/api/people", web::get().to(people));
}

/// 303 to sign-in, coming back to this page.
fn to_sign_in(slug: &str, request: &HttpRequest) -> HttpResponse {
    let path = request.path();
    let path = if path == format!("/d/{slug}") { format!("{path}/") } else { path.to_string() };
    let here = match request.uri().query() {
        Some(query) => format!("{path}?{query}"),
        None => path,
    };
    let location = format!("/saml/{slug}/login?return_to={}", pages::query_value(&here));
    HttpResponse::SeeOther().insert_header((header::LOCATION, location)).finish()
}

/// The directory and the signed-in person, or the answer to give instead (sign-in or error).
async fn signed_in(
    state: &AppState,
    request: &HttpRequest,
    slug: &str,
) -> Result<(Directory, SessionUser), HttpResponse> {
    match session_of(state, request, slug).await {
        Ok(Some((directory, user, _))) => Ok((directory, user)),
        Ok(None) => Err(to_sign_in(slug, request)),
        Err(error) => Err(error_answer(request, &error)),
    }
}

/// `q` and `cursor` of a search.
fn search_params(request: &HttpRequest) -> (String, Option<String>) {
    let mut query = String::new();
    let mut cursor = None;
    for (name, value) in query_pairs(request) {
        match name.as_str() {
            "q" => query = value,
            "cursor" if !value.is_empty() => cursor = Some(value),
            _ => {}
        }
    }
    (query, cursor)
}

/// One page of people, and the cursor of the next when there is one (`found` holds one more
/// than a page when there is).
fn paged(mut found: Vec<Person>) -> (Vec<Person>, Option<String>) {
    let more = found.len() as i64 > PAGE_SIZE;
    found.truncate(PAGE_SIZE as usize);
    let next = if more { found.last().map(|p| p.id.clone()) } else { None };
    (found, next)
}

/// A page with a fresh nonce for its inline style and script, and a policy allowing only those.
fn html(status: StatusCode, render: impl FnOnce(&str) -> String) -> HttpResponse {
    let mut nonce = [0u8; 16];
    rand::rng().fill_bytes(&mut nonce);
    let nonce = hex::encode(nonce);
    let policy = format!(
        "default-src 'none'; style-src 'nonce-{nonce}'; script-src 'nonce-{nonce}'; connect-src 'self'; \
         img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    );
    HttpResponse::build(status)
        .insert_header((header::CONTENT_TYPE, "text/html; charset=utf-8"))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header((header::CONTENT_SECURITY_POLICY, policy))
        .insert_header((header::REFERRER_POLICY, "same-origin"))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .body(render(&nonce))
}

fn chrome<'a>(slug: &'a str, directory: &'a Directory, user: &'a SessionUser, nonce: &'a str) -> Chrome<'a> {
    Chrome {
        slug,
        directory_name: &directory.name,
        user_name: &user.user_name,
        csrf_token: &user.csrf_token,
        nonce,
    }
}

/// The search page; with `q`, its results rendered on the server (the page works without
/// JavaScript; with it, the list follows the search box as one types).
async fn home(state: web::Data<AppState>, slug: web::Path<String>, request: HttpRequest) -> HttpResponse {
    let slug = slug.into_inner();
    let (directory, user) = match signed_in(&state, &request, &slug).await {
        Ok(found) => found,
        Err(answer) => return answer,
    };
    let (query, cursor) = search_params(&request);
    let found = if query.trim().is_empty() {
        None
    } else {
        let search = state.store.search_people(
            directory.id.clone(),
            query.clone(),
            cursor,
            PAGE_SIZE + 1,
            directory.show_deactivated,
        );
        match search.await {
            Ok(found) => Some(paged(found)),
            Err(error) => return error_answer(&request, &error),
        }
    };
    html(StatusCode::OK, |nonce| {
        let results = found.as_ref().map(|(people, next)| Results { people, next: next.as_deref() });
        pages::search_page(&chrome(&slug, &directory, &user, nonce), &query, results.as_ref())
    })
}

/// A person's page: contact data, manager, direct reports and groups.
async fn person(
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
    request: HttpRequest,
) -> HttpResponse {
    let (slug, id) = path.into_inner();
    let (directory, user) = match signed_in(&state, &request, &slug).await {
        Ok(found) => found,
        Err(answer) => return answer,
    };
    match state.store.find_profile(directory.id.clone(), id, directory.show_deactivated).await {
        Ok(Some(profile)) => html(StatusCode::OK, |nonce| {
            pages::person_page(&chrome(&slug, &directory, &user, nonce), &profile)
        }),
        Ok(None) => {
            html(StatusCode::NOT_FOUND, |nonce| pages::missing_page(&chrome(&slug, &directory, &user, nonce)))
        }
        Err(error) => error_answer(&request, &error),
    }
}

async fn people(state: web::Data<AppState>, slug: web::Path<String>, request: HttpRequest) -> HttpResponse {
    let slug = slug.into_inner();
    let json_error = |error: Error| {
        let (status, detail) = super::error::status_and_detail(&error);
        HttpResponse::build(status)
            .content_type("application/json")
            .body(json!({ "status": status.as_u16(), "detail": detail }).to_string())
    };
    let (directory, _, _) = match session_of(&state, &request, &slug).await {
        Ok(Some(found)) => found,
        Ok(None) => {
            return json_error(Error::Unauthorized(format!(
                "sign in first: /saml/{slug}/login?return_to=/d/{slug}/"
            )))
        }
        Err(error) => return json_error(error),
    };
    let (query, cursor) = search_params(&request);
    match state
        .store
        .search_people(directory.id, query, cursor, PAGE_SIZE + 1, directory.show_deactivated)
        .await
    {
        Ok(found) => {
            let (found, next) = paged(found);
            HttpResponse::Ok()
                .content_type("application/json")
                .insert_header((header::CACHE_CONTROL, "no-store"))
                .body(json!({ "items": found, "next": next }).to_string())
        }
        Err(error) => json_error(error),
    }
}
