//! Delegated consent of Entra connections over HTTP: `GET /admin/v1/connections/{id}/authorize`
//! hands an admin the link to sign in to Microsoft with (a 302 to it, or `{"authorize_url"}` for
//! `Accept: application/json`); `GET /admin/v1/entra/callback` is where Microsoft sends the
//! browser back. The callback carries no admin token: the one-time `state` authenticates it
//! (see `sync::consent`). It answers a small page, or JSON when asked.

use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use serde_json::json;

use super::auth::AdminToken;
use super::error::{status_and_detail, AdminError};
use super::query_pairs;
use crate::app::AppState;
use crate::error::Error;
use crate::scim::index::format_millis;
use crate::store::audit::Actor;
use crate::sync::consent::{self, Callback};

/// Whether the client asked for JSON rather than a page (a browser asks for `text/html`).
fn wants_json(request: &HttpRequest) -> bool {
    let accept = request.headers().get(header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or_default();
    accept.contains("application/json") && !accept.contains("text/html")
}

/// Answers that carry a one-time link or follow a sign-in are kept by no cache.
fn no_store(mut response: HttpResponse) -> HttpResponse {
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// Hands out an authorize link for the connection's delegated credential (`?credential=auth` or
/// `backup_auth`; by default the delegated one, the primary first).
pub async fn authorize(
    state: web::Data<AppState>,
    admin: AdminToken,
    id: web::Path<String>,
    request: HttpRequest,
) -> Result<HttpResponse, AdminError> {
    let mut credential = None;
    for (name, value) in query_pairs(&request) {
        if name == "credential" {
            if value.is_empty() {
                return Err(Error::InvalidValue(
                    "parameter 'credential' is empty: give auth or backup_auth, or leave it out".into(),
                )
                .into());
            }
            credential = Some(value);
        }
    }
    let connection = state.store.get_connection(id.into_inner()).await?;
    let link = consent::start(
        &state.store,
        state.secret_key.as_ref(),
        Actor::AdminToken(admin.0),
        &connection,
        credential.as_deref(),
        &state.base_url,
    )
    .await?;
    let response = if wants_json(&request) {
        let body = json!({
            "authorize_url": link.url,
            "redirect_uri": link.redirect_uri,
            "credential": link.place,
            "client_id": link.client_id,
            "expires_at": format_millis(link.expires_at),
        });
        HttpResponse::Ok().content_type("application/json").body(body.to_string())
    } else {
        HttpResponse::Found().insert_header((header::LOCATION, link.url)).finish()
    };
    Ok(no_store(response))
}

/// Where Microsoft sends the admin back after signing in: `?code&state`, or `?error&state`.
pub async fn callback(state: web::Data<AppState>, request: HttpRequest) -> HttpResponse {
    let mut answer = Callback::default();
    for (name, value) in query_pairs(&request) {
        match name.as_str() {
            "code" => answer.code = Some(value),
            "state" => answer.state = Some(value),
            "error" => answer.error = Some(value),
            "error_description" => answer.error_description = Some(value),
            _ => {}
        }
    }
    let json = wants_json(&request);
    let response = match consent::finish(&state.store, state.secret_key.as_ref(), answer).await {
        Ok(connected) => {
            let connection = &connected.connection;
            let tenant = connection.config.entra.as_ref().map(|e| e.tenant.as_str()).unwrap_or_default();
            if json {
                let body = json!({
                    "connection_id": connection.id,
                    "name": connection.config.name,
                    "credential": connected.place,
                    "client_id": connected.client_id,
                    "tenant": tenant,
                    "state": "connected",
                });
                HttpResponse::Ok().content_type("application/json").body(body.to_string())
            } else {
                let text = format!(
                    "Connection '{}' (entra.{}, app {}) can now read tenant {} as the admin who signed in. \
                     scimd keeps the refresh token, encrypted, and renews it on every sync. You can close \
                     this window.",
                    connection.config.name, connected.place, connected.client_id, tenant
                );
                page(StatusCode::OK, "Connected", &text)
            }
        }
        Err(error) if json => AdminError(error).error_response(),
        Err(error) => {
            let (status, detail) = status_and_detail(&error);
            page(status, "Not connected", &detail)
        }
    };
    no_store(response)
}

/// Text as it goes into HTML.
fn escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&#39;"),
            other => escaped.push(other),
        }
    }
    escaped
}

/// A small page for the browser, with nothing it could run or load.
fn page(status: StatusCode, title: &str, text: &str) -> HttpResponse {
    let body = format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>scimd: {title}</title></head>\n\
         <body><h1>{title}</h1>\n<p>{}</p></body></html>\n",
        escape(text),
        title = escape(title),
    );
    HttpResponse::build(status)
        .content_type("text/html; charset=utf-8")
        .insert_header((header::CONTENT_SECURITY_POLICY, "default-src 'none'; frame-ancestors 'none'"))
        .insert_header((header::REFERRER_POLICY, "no-referrer"))
        .body(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_escape_what_microsoft_or_a_caller_wrote() {
        assert_eq!(
            escape("<script>alert('x')</script> & \"y\""),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;y&quot;"
        );
    }
}
