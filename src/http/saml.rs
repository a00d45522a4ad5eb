//! SAML sign-in over HTTP, per directory: `/saml/{directory}/metadata` (the SP's entity id),
//! `/login?return_to=` (302 to the IdP), `/acs` (HTTP-POST binding; 303 back with a session
//! cookie, or 403 saying why), `POST /logout` (CSRF-checked). Pages are small server-rendered
//! HTML; JSON when the request asks for it. The rules live in `saml.rs` and `store/saml.rs`.

use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use rand::Rng;
use serde::Deserialize;
use serde_json::json;
use subtle::ConstantTimeEq;

use super::error::status_and_detail;
use super::query_pairs;
use crate::app::AppState;
use crate::error::Error;
use crate::ids::DirectoryId;
use crate::saml::{self, Expected, IdpSettings, PendingSignIn, Refusal, SpUrls};
use crate::store::directories::Directory;
use crate::store::now_millis;
use crate::store::saml::{NewSession, SessionUser};

/// The name of the cookie of a browser signed in to `directory`. One per directory (by id, which
/// a slug rename leaves alone): signing in to one directory keeps the browser's session with
/// another.
pub fn session_cookie(directory: &DirectoryId) -> String {
    format!("scimd_session_{}", directory.0.replace('-', ""))
}
/// The short-lived cookie binding a pending AuthnRequest to the browser that started it.
const REQUEST_COOKIE: &str = "scimd_saml_request";
const SESSION_PURPOSE: &str = "session";
const REQUEST_PURPOSE: &str = "saml_request";
/// How long a browser may take at the IdP.
const REQUEST_TTL_MS: i64 = 10 * 60 * 1000;
/// SAML Responses are a few kilobytes; larger forms are refused.
const MAX_FORM_BYTES: usize = 256 * 1024;

pub fn routes(config: &mut web::ServiceConfig) {
    config.service(
        web::scope("/saml/{directory}")
            .app_data(web::FormConfig::default().limit(MAX_FORM_BYTES))
            .route("/metadata", web::get().to(metadata))
            .route("/login", web::get().to(login))
            .route("/acs", web::post().to(acs))
            .route("/logout", web::post().to(logout)),
    );
}

/// Whether the client asked for JSON rather than a page.
pub fn wants_json(request: &HttpRequest) -> bool {
    let accept = request.headers().get(header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or_default();
    accept.contains("application/json") && !accept.contains("text/html")
}

pub use super::pages::escape as html_escape;

/// A small page; `body` is HTML already escaped.
pub fn page(status: StatusCode, title: &str, body: &str) -> HttpResponse {
    let html = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title}</title></head><body><main><h1>{title}</h1>{body}</main></body></html>\n",
        title = html_escape(title)
    );
    no_store(
        HttpResponse::build(status)
            .insert_header((header::CONTENT_TYPE, "text/html; charset=utf-8"))
            .body(html),
    )
}

fn no_store(mut response: HttpResponse) -> HttpResponse {
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// An error as a page, or as JSON when asked.
pub fn error_answer(request: &HttpRequest, error: &Error) -> HttpResponse {
    let (status, detail) = status_and_detail(error);
    if wants_json(request) {
        let body = json!({ "status": status.as_u16(), "error": "sign_in", "detail": detail });
        return no_store(HttpResponse::build(status).content_type("application/json").body(body.to_string()));
    }
    page(status, "Sign-in", &format!("<p>{}</p>", html_escape(&detail)))
}

/// A refused sign-in: 403, in words a person understands; no session.
fn refused(request: &HttpRequest, slug: &str, refusal: &Refusal) -> HttpResponse {
    tracing::info!(reason = refusal.code(), directory = slug, "SAML sign-in refused");
    let mut response = if wants_json(request) {
        let body = json!({ "status": 403, "error": "sign_in_refused", "reason": refusal.code(), "detail": refusal.message() });
        no_store(HttpResponse::Forbidden().content_type("application/json").body(body.to_string()))
    } else {
        page(
            StatusCode::FORBIDDEN,
            "Sign-in refused",
            &format!(
                "<p>{}</p><p><a href=\"/saml/{slug}/login\">Try again</a></p>",
                html_escape(refusal.message()),
                slug = html_escape(slug)
            ),
        )
    };
    add_cookie(&mut response, &clear_cookie(REQUEST_COOKIE, &format!("/saml/{slug}")));
    response
}

/// The value of cookie `name` in the request, if sent.
pub fn cookie(request: &HttpRequest, name: &str) -> Option<String> {
    request.headers().get_all(header::COOKIE).filter_map(|v| v.to_str().ok()).find_map(|line| {
        line.split(';').map(str::trim).find_map(|pair| {
            let (key, value) = pair.split_once('=')?;
            (key == name).then(|| value.to_string())
        })
    })
}

fn add_cookie(response: &mut HttpResponse, cookie: &str) {
    if let Ok(value) = HeaderValue::from_str(cookie) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
}

fn clear_cookie(name: &str, path: &str) -> String {
    format!("{name}=; Path={path}; Max-Age=0; HttpOnly")
}

fn random_hex(bytes: usize) -> String {
    let mut buffer = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut buffer);
    hex::encode(buffer)
}

fn sp_of(state: &AppState, slug: &str) -> SpUrls {
    SpUrls::of(&state.base_url, slug)
}

async fn metadata(state: web::Data<AppState>, slug: web::Path<String>, request: HttpRequest) -> HttpResponse {
    let slug = slug.into_inner();
    match state.store.find_saml_idp(slug.clone()).await {
        Ok(Some(_)) => HttpResponse::Ok()
            .insert_header((header::CONTENT_TYPE, "application/samlmetadata+xml"))
            .body(sp_of(&state, &slug).metadata_xml()),
        Ok(None) => error_answer(&request, &Error::NotFound(format!("no directory '{slug}'"))),
        Err(error) => error_answer(&request, &error),
    }
}

/// What a sign-in at `slug` needs: the directory, its IdP, and the key that signs cookies.
async fn sign_in_setup<'a>(
    state: &'a AppState,
    slug: &str,
) -> Result<(Directory, IdpSettings, &'a saml::CookieKey), Error> {
    let Some((directory, Some(idp))) = state.store.find_saml_idp(slug.to_string()).await? else {
        return Err(Error::NotFound(format!("sign-in is not set up for directory '{slug}'")));
    };
    Ok((directory, idp, state.cookie_key().await?))
}

async fn login(state: web::Data<AppState>, slug: web::Path<String>, request: HttpRequest) -> HttpResponse {
    let slug = slug.into_inner();
    let mut return_to = format!("/d/{slug}/");
    for (name, value) in query_pairs(&request) {
        if name == "return_to" {
            match saml::local_return_to(&value) {
                Some(path) => return_to = path,
                None => {
                    return error_answer(
                        &request,
                        &Error::InvalidValue(
                            "return_to must be a path on this server (such as /d/acme/), not another site"
                                .into(),
                        ),
                    )
                }
            }
        }
    }
    let (_, idp, key) = match sign_in_setup(&state, &slug).await {
        Ok(setup) => setup,
        Err(error) => return error_answer(&request, &error),
    };
    let pending = PendingSignIn {
        directory: slug.clone(),
        request_id: format!("id{}", random_hex(16)),
        relay: random_hex(16),
        return_to,
    };
    let sp = sp_of(&state, &slug);
    let url =
        match saml::authn_request_url(&sp, &idp, &pending.request_id, &pending.relay, chrono::Utc::now()) {
            Ok(url) => url,
            Err(error) => return error_answer(&request, &error),
        };
    let payload = serde_json::to_string(&pending).unwrap_or_default();
    let sealed = key.seal(REQUEST_PURPOSE, &payload, now_millis() + REQUEST_TTL_MS);
    // The IdP posts back cross-site: over https the cookie must be SameSite=None to come along;
    // over plain http (local use) browsers allow a fresh cookie without SameSite on that POST.
    let same_site = if state.secure_cookies() { "; SameSite=None; Secure" } else { "" };
    let mut response = no_store(HttpResponse::Found().insert_header((header::LOCATION, url)).finish());
    add_cookie(
        &mut response,
        &format!(
            "{REQUEST_COOKIE}={sealed}; Path=/saml/{slug}; Max-Age={}; HttpOnly{same_site}",
            REQUEST_TTL_MS / 1000
        ),
    );
    response
}

#[derive(Debug, Deserialize)]
struct AcsForm {
    #[serde(rename = "SAMLResponse")]
    saml_response: String,
    #[serde(rename = "RelayState", default)]
    relay_state: Option<String>,
}

async fn acs(
    state: web::Data<AppState>,
    slug: web::Path<String>,
    form: web::Form<AcsForm>,
    request: HttpRequest,
) -> HttpResponse {
    let slug = slug.into_inner();
    let (directory, idp, key) = match sign_in_setup(&state, &slug).await {
        Ok(setup) => setup,
        Err(error) => return error_answer(&request, &error),
    };
    // The sign-in this browser started, if the RelayState names it.
    let pending: Option<PendingSignIn> = cookie(&request, REQUEST_COOKIE)
        .and_then(|sealed| key.open(REQUEST_PURPOSE, &sealed, now_millis()))
        .and_then(|payload| serde_json::from_str::<PendingSignIn>(&payload).ok())
        .filter(|p| p.directory == slug && form.relay_state.as_deref() == Some(p.relay.as_str()));
    let sp = sp_of(&state, &slug);
    let expected = Expected {
        sp: &sp,
        idp: &idp,
        request_id: pending.as_ref().map(|p| p.request_id.as_str()),
        now: chrono::Utc::now(),
    };
    let login = match saml::verify_response(&form.saml_response, &expected) {
        Ok(login) => login,
        Err(refusal) => return refused(&request, &slug, &refusal),
    };
    let session_id = random_hex(32);
    let expires_at = now_millis()
        + i64::try_from(state.config.session.ttl_secs.saturating_mul(1000)).unwrap_or(i64::MAX / 2);
    let session =
        NewSession { id_hash: crate::token::hash(&session_id), csrf_token: random_hex(32), expires_at };
    let user: SessionUser = match state.store.complete_sign_in(directory.id.clone(), login, session).await {
        Ok(Ok(user)) => user,
        Ok(Err(refusal)) => return refused(&request, &slug, &refusal),
        Err(error) => return error_answer(&request, &error),
    };
    tracing::debug!(user = %user.user_id, directory = slug, "SAML sign-in");
    let return_to = pending.map_or_else(|| format!("/d/{slug}/"), |p| p.return_to);
    let sealed = key.seal(SESSION_PURPOSE, &session_id, expires_at);
    let secure = if state.secure_cookies() { "; Secure" } else { "" };
    let mut response =
        no_store(HttpResponse::SeeOther().insert_header((header::LOCATION, return_to)).finish());
    add_cookie(
        &mut response,
        &format!(
            "{}={sealed}; Path=/; Max-Age={}; HttpOnly; SameSite=Lax{secure}",
            session_cookie(&directory.id),
            state.config.session.ttl_secs
        ),
    );
    add_cookie(&mut response, &clear_cookie(REQUEST_COOKIE, &format!("/saml/{slug}")));
    response
}

/// The session id of the request's session cookie for `directory`, if genuine and unexpired.
pub async fn session_id(
    state: &AppState,
    request: &HttpRequest,
    directory: &DirectoryId,
) -> Result<Option<String>, Error> {
    let Some(sealed) = cookie(request, &session_cookie(directory)) else { return Ok(None) };
    let key = state.cookie_key().await?;
    Ok(key.open(SESSION_PURPOSE, &sealed, now_millis()))
}

/// The signed-in person of directory `slug`, if the request carries a live session for it.
pub async fn session_of(
    state: &AppState,
    request: &HttpRequest,
    slug: &str,
) -> Result<Option<(Directory, SessionUser, String)>, Error> {
    let Some((directory, _)) = state.store.find_saml_idp(slug.to_string()).await? else {
        return Err(Error::NotFound(format!("no directory '{slug}'")));
    };
    let Some(id) = session_id(state, request, &directory.id).await? else { return Ok(None) };
    let id_hash = crate::token::hash(&id);
    let user = state.store.find_session(directory.id.clone(), id_hash.clone()).await?;
    Ok(user.map(|user| (directory, user, id_hash)))
}

#[derive(Debug, Deserialize)]
struct LogoutForm {
    #[serde(default)]
    csrf: String,
}

async fn logout(
    state: web::Data<AppState>,
    slug: web::Path<String>,
    form: web::Form<LogoutForm>,
    request: HttpRequest,
) -> HttpResponse {
    let slug = slug.into_inner();
    let (directory, user, id_hash) = match session_of(&state, &request, &slug).await {
        Ok(Some(found)) => found,
        Ok(None) => return error_answer(&request, &Error::Unauthorized("you are not signed in".into())),
        Err(error) => return error_answer(&request, &error),
    };
    let genuine: bool = form.csrf.as_bytes().ct_eq(user.csrf_token.as_bytes()).into();
    if form.csrf.is_empty() || !genuine {
        return error_answer(
            &request,
            &Error::Forbidden(
                "this sign-out form is stale or came from another site; reload the page and try again".into(),
            ),
        );
    }
    if let Err(error) = state.store.revoke_session(id_hash).await {
        return error_answer(&request, &error);
    }
    let mut response = page(
        StatusCode::OK,
        "Signed out",
        &format!("<p>You are signed out.</p><p><a href=\"/d/{}/\">Sign in again</a></p>", html_escape(&slug)),
    );
    add_cookie(&mut response, &clear_cookie(&session_cookie(&directory.id), "/"));
    response
}
