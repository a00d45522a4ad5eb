//! The people lookup of a directory, for its signed-in members: `GET /d/{directory}/` and the
//! search box's JSON, `GET /d/{directory}/api/people?q=&cursor=`. Without a session, pages
//! redirect to sign-in and the JSON answers 401.

use actix_web::http::header;
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::json;

use super::query_pairs;
use super::saml::{error_answer, html_escape, page, session_of};
use crate::app::AppState;
use crate::error::Error;

const PAGE_SIZE: i64 = 20;

pub fn routes(config: &mut web::ServiceConfig) {
    // Trailing slashes are trimmed before routing: `/d/acme/` arrives as `/d/acme`.
    config
        .route("/d/{directory}", web::get().to(home))
        .route("/d/{directory}/api/people", web::get().to(people));
}

/// 303 to sign-in, coming back to this page.
fn to_sign_in(slug: &str, request: &HttpRequest) -> HttpResponse {
    let here = match request.uri().path_and_query() {
        Some(pq) if pq.path().ends_with('/') || pq.query().is_some() => pq.to_string(),
        _ => format!("{}/", request.path()),
    };
    let location = format!(
        "/saml/{slug}/login?return_to={}",
        url::form_urlencoded::byte_serialize(here.as_bytes()).collect::<String>()
    );
    HttpResponse::SeeOther().insert_header((header::LOCATION, location)).finish()
}

// The minimal page of the SAML slice: who is signed in, and the sign-out form. The lookup page
// slice replaces it with the search page.
async fn home(state: web::Data<AppState>, slug: web::Path<String>, request: HttpRequest) -> HttpResponse {
    let slug = slug.into_inner();
    match session_of(&state, &request, &slug).await {
        Ok(Some((directory, user, _))) => page(
            StatusCode::OK,
            &directory.name,
            &format!(
                "<p>Signed in as <strong id=\"signed-in-as\">{user}</strong>.</p>\
                 <form method=\"post\" action=\"/saml/{slug}/logout\">\
                 <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
                 <button type=\"submit\">Sign out</button></form>",
                user = html_escape(&user.user_name),
                slug = html_escape(&slug),
                csrf = html_escape(&user.csrf_token),
            ),
        ),
        Ok(None) => to_sign_in(&slug, &request),
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
    let mut query = String::new();
    let mut cursor = None;
    for (name, value) in query_pairs(&request) {
        match name.as_str() {
            "q" => query = value,
            "cursor" if !value.is_empty() => cursor = Some(value),
            _ => {}
        }
    }
    match state.store.search_people(directory.id, query, cursor, PAGE_SIZE + 1).await {
        Ok(mut found) => {
            let more = found.len() as i64 > PAGE_SIZE;
            found.truncate(PAGE_SIZE as usize);
            let next = if more { found.last().map(|p| p.id.clone()) } else { None };
            HttpResponse::Ok()
                .content_type("application/json")
                .insert_header((header::CACHE_CONTROL, "no-store"))
                .body(json!({ "items": found, "next": next }).to_string())
        }
        Err(error) => json_error(error),
    }
}
