//! `/admin/v1`: the admin API (plain JSON, not SCIM). Handlers extract, make one store call,
//! and render; errors are `AdminError` JSON (see `http/error.rs`).

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};
use serde_json::{json, Value};

use super::auth::AdminToken;
use super::body::AdminBody;
use super::error::AdminError;
use super::query_pairs;
use crate::app::AppState;
use crate::cli::{parse_duration_millis, token_status};
use crate::error::Error;
use crate::scim::index::format_millis;
use crate::store::audit::{self, Actor, AuditQuery, Cursor, ResourceType};
use crate::store::connections::ConnectionRecord;
use crate::store::directories::{validate_slug, DeletionPolicy, Directory, Settings};
use crate::store::keys::KeyInfo;
use crate::store::now_millis;
use crate::sync::connection;

type AdminResult = Result<HttpResponse, AdminError>;

const OPENAPI: &str = include_str!("../../schemas/admin-openapi.json");
const DEFAULT_PAGE: i64 = 100;
const MAX_PAGE: i64 = 500;

pub fn routes(config: &mut web::ServiceConfig) {
    config.service(
        web::scope("/admin/v1")
            .service(
                web::resource("/openapi.json").route(web::get().to(openapi)).default_service(only("GET")),
            )
            .service(
                web::resource("/directories")
                    .route(web::get().to(list_directories))
                    .route(web::post().to(create_directory))
                    .default_service(only("GET, POST")),
            )
            .service(
                web::resource("/directories/{slug}")
                    .route(web::get().to(get_directory))
                    .route(web::patch().to(configure_directory))
                    .route(web::delete().to(delete_directory))
                    .default_service(only("GET, PATCH, DELETE")),
            )
            .service(
                web::resource("/directories/{slug}/keys")
                    .route(web::get().to(list_keys))
                    .route(web::post().to(issue_key))
                    .default_service(only("GET, POST")),
            )
            .service(
                web::resource("/keys/{id}")
                    .route(web::get().to(get_key))
                    .route(web::delete().to(revoke_key))
                    .default_service(only("GET, DELETE")),
            )
            .service(
                web::resource("/directories/{slug}/connections")
                    .route(web::get().to(list_connections))
                    .route(web::post().to(create_connection))
                    .default_service(only("GET, POST")),
            )
            .service(
                web::resource("/connections/{id}")
                    .route(web::get().to(get_connection))
                    .route(web::put().to(update_connection))
                    .route(web::delete().to(delete_connection))
                    .default_service(only("GET, PUT, DELETE")),
            )
            .service(
                web::resource("/connections/{id}/sync")
                    .route(web::post().to(sync_connection))
                    .default_service(only("POST")),
            )
            .service(
                web::resource("/connections/{id}/verify")
                    .route(web::post().to(verify_connection))
                    .default_service(only("POST")),
            )
            .service(
                web::resource("/connections/{id}/authorize")
                    .route(web::get().to(super::consent::authorize))
                    .default_service(only("GET")),
            )
            // Microsoft sends the admin's browser here after consent: no admin token, the
            // one-time state of the authorize link authenticates it.
            .service(
                web::resource("/entra/callback")
                    .route(web::get().to(super::consent::callback))
                    .default_service(only("GET")),
            )
            .service(
                web::resource("/connections/{id}/runs")
                    .route(web::get().to(connection_runs))
                    .default_service(only("GET")),
            )
            .service(
                web::resource("/directories/{slug}/saml")
                    .route(web::get().to(get_saml))
                    .route(web::put().to(put_saml))
                    .route(web::delete().to(delete_saml))
                    .default_service(only("GET, PUT, DELETE")),
            )
            .service(
                web::resource("/directories/{slug}/lookup")
                    .route(web::get().to(get_lookup))
                    .route(web::put().to(put_lookup))
                    .default_service(only("GET, PUT")),
            )
            .service(web::resource("/audit").route(web::get().to(audit_log)).default_service(only("GET")))
            .default_service(web::to(not_found)),
    );
}

/// The answer of a resource to any method but `allow`: 405 with an `Allow` header.
fn only(allow: &'static str) -> actix_web::Route {
    web::to(move || async move { Err::<HttpResponse, AdminError>(Error::MethodNotAllowed { allow }.into()) })
}

async fn not_found() -> AdminResult {
    Err(Error::NotFound("no such admin endpoint; see /admin/v1/openapi.json".into()).into())
}

/// The OpenAPI document is public: it describes the API, and holds nothing about any directory.
async fn openapi() -> HttpResponse {
    HttpResponse::Ok().content_type("application/json").body(OPENAPI)
}

fn ok(status: StatusCode, body: Value) -> HttpResponse {
    HttpResponse::build(status).content_type("application/json").body(body.to_string())
}

/// A JSON body read into a request type; unknown members and wrong types are 400s that name them.
fn parse<T: DeserializeOwned>(body: AdminBody) -> Result<T, AdminError> {
    serde_path_to_error::deserialize(body.0).map_err(|e| {
        let path = e.path().to_string();
        let at = if path == "." { String::new() } else { format!(" at '{path}'") };
        Error::InvalidValue(format!("request body{at}: {}", e.inner())).into()
    })
}

/// A member that was sent (with `#[serde(default)]`, one left out is `None`). Into
/// `Option<Option<T>>` a `null` is `Some(None)`, "clear it"; into `Option<T>` a `null` is refused
/// as the wrong type rather than silently read as "left out".
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

/// A page size: a whole number, also when a client writes it as `50.0` (JSON has one number type).
#[derive(Debug, Clone, Copy)]
struct PageSize(u32);

impl<'de> Deserialize<'de> for PageSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let number = f64::deserialize(d)?;
        let whole = number.fract() == 0.0 && (0.0..=f64::from(u32::MAX)).contains(&number);
        if whole {
            Ok(PageSize(number as u32))
        } else {
            Err(serde::de::Error::custom(format!("{number} is not a whole number of resources")))
        }
    }
}

fn time(millis: Option<i64>) -> Value {
    millis.map_or(Value::Null, |m| Value::String(format_millis(m)))
}

fn directory_json(directory: &Directory) -> Value {
    json!({
        "id": directory.id,
        "slug": directory.slug,
        "name": directory.name,
        "created_at": format_millis(directory.created_at),
        "deletion": directory.deletion.as_str(),
        "max_page_size": directory.max_page_size,
    })
}

fn key_json(key: &KeyInfo) -> Value {
    json!({
        "id": key.id,
        "directory_id": key.directory_id,
        "name": key.name,
        "prefix": key.prefix,
        "created_at": format_millis(key.created_at),
        "expires_at": time(key.expires_at),
        "last_used_at": time(key.last_used_at),
        "revoked_at": time(key.revoked_at),
        "status": token_status(key.revoked_at, key.expires_at, now_millis()),
    })
}

/// The query parameters; an empty one (`until=`) is refused rather than guessed at.
fn parameters(request: &HttpRequest) -> Result<Vec<(String, String)>, Error> {
    let pairs = query_pairs(request);
    match pairs.iter().find(|(_, value)| value.is_empty()) {
        Some((name, _)) => {
            Err(Error::InvalidValue(format!("parameter '{name}' is empty: give a value or leave it out")))
        }
        None => Ok(pairs),
    }
}

/// `limit` and `cursor` of a paged list.
fn page_params(request: &HttpRequest) -> Result<(i64, Option<String>), Error> {
    let mut limit = DEFAULT_PAGE;
    let mut cursor = None;
    for (name, value) in parameters(request)? {
        match name.as_str() {
            "limit" => {
                limit = value.parse().ok().filter(|n| (1..=MAX_PAGE).contains(n)).ok_or_else(|| {
                    Error::InvalidValue(format!(
                        "limit '{value}' must be a whole number from 1 to {MAX_PAGE}"
                    ))
                })?
            }
            "cursor" => cursor = Some(value),
            _ => {}
        }
    }
    Ok((limit, cursor))
}

fn deletion(text: Option<String>) -> Result<Option<DeletionPolicy>, Error> {
    text.map(|t| DeletionPolicy::parse(&t)).transpose()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateDirectory {
    slug: String,
    #[serde(default, deserialize_with = "present")]
    name: Option<String>,
    #[serde(default, deserialize_with = "present")]
    deletion: Option<String>,
    max_page_size: Option<PageSize>,
}

async fn create_directory(state: web::Data<AppState>, admin: AdminToken, body: AdminBody) -> AdminResult {
    let request: CreateDirectory = parse(body)?;
    let settings = Settings {
        slug: Some(request.slug),
        name: request.name,
        deletion: deletion(request.deletion)?,
        max_page_size: Some(request.max_page_size.map(|size| size.0)),
        show_deactivated: None,
    };
    let created = state.store.create_directory(Actor::AdminToken(admin.0), settings).await?;
    Ok(ok(StatusCode::CREATED, directory_json(&created)))
}

async fn list_directories(state: web::Data<AppState>, _: AdminToken, request: HttpRequest) -> AdminResult {
    let (limit, cursor) = page_params(&request)?;
    if let Some(cursor) = &cursor {
        // The cursor of this list is the last slug of the previous page.
        validate_slug(cursor)
            .map_err(|_| Error::InvalidValue(format!("cursor '{cursor}' is not one this server returned")))?;
    }
    let page = state.store.list_directories(cursor, limit.saturating_add(1)).await?;
    let more = page.len() as i64 > limit;
    let items: Vec<Value> = page.iter().take(limit as usize).map(directory_json).collect();
    let next = if more { page.get(limit as usize - 1).map(|d| d.slug.clone()) } else { None };
    Ok(ok(StatusCode::OK, json!({ "items": items, "next": next })))
}

async fn get_directory(state: web::Data<AppState>, _: AdminToken, slug: web::Path<String>) -> AdminResult {
    let directory = state.store.get_directory(slug.into_inner()).await?;
    Ok(ok(StatusCode::OK, directory_json(&directory)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigureDirectory {
    #[serde(default, deserialize_with = "present")]
    slug: Option<String>,
    #[serde(default, deserialize_with = "present")]
    name: Option<String>,
    #[serde(default, deserialize_with = "present")]
    deletion: Option<String>,
    #[serde(default, deserialize_with = "present")]
    max_page_size: Option<Option<PageSize>>,
}

async fn configure_directory(
    state: web::Data<AppState>,
    admin: AdminToken,
    slug: web::Path<String>,
    body: AdminBody,
) -> AdminResult {
    let request: ConfigureDirectory = parse(body)?;
    let settings = Settings {
        slug: request.slug,
        name: request.name,
        deletion: deletion(request.deletion)?,
        max_page_size: request.max_page_size.map(|size| size.map(|s| s.0)),
        show_deactivated: None,
    };
    if settings == Settings::default() {
        return Err(Error::InvalidValue(
            "nothing to change: send one or more of slug, name, deletion, max_page_size".into(),
        )
        .into());
    }
    let changed =
        state.store.configure_directory(Actor::AdminToken(admin.0), slug.into_inner(), settings).await?;
    Ok(ok(StatusCode::OK, directory_json(&changed)))
}

async fn delete_directory(
    state: web::Data<AppState>,
    admin: AdminToken,
    slug: web::Path<String>,
    request: HttpRequest,
) -> AdminResult {
    let mut purge = false;
    for (name, value) in parameters(&request)? {
        if name == "purge" {
            purge = match value.as_str() {
                "true" => true,
                "false" => false,
                other => {
                    return Err(Error::InvalidValue(format!("purge '{other}' must be true or false")).into())
                }
            };
        }
    }
    state.store.delete_directory(Actor::AdminToken(admin.0), slug.into_inner(), purge).await?;
    Ok(HttpResponse::NoContent().finish())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct IssueKey {
    #[serde(default)]
    name: String,
    /// A lifetime such as "90d".
    #[serde(default, deserialize_with = "present")]
    expires_in: Option<String>,
    /// An RFC 3339 time.
    #[serde(default, deserialize_with = "present")]
    expires_at: Option<String>,
}

async fn issue_key(
    state: web::Data<AppState>,
    admin: AdminToken,
    slug: web::Path<String>,
    body: AdminBody,
) -> AdminResult {
    let request: IssueKey = parse(body)?;
    let expires_at = match (request.expires_in, request.expires_at) {
        (Some(_), Some(_)) => {
            return Err(Error::InvalidValue("give expires_in or expires_at, not both".into()).into());
        }
        (Some(lifetime), None) => {
            let millis = parse_duration_millis(&lifetime)
                .map_err(|e| Error::InvalidValue(format!("expires_in: {e}")))?;
            Some(now_millis().saturating_add(millis))
        }
        (None, Some(at)) => Some(
            chrono::DateTime::parse_from_rfc3339(&at)
                .map_err(|_| {
                    Error::InvalidValue(format!(
                        "expires_at '{at}' is not an RFC 3339 time such as 2027-01-31T00:00:00Z"
                    ))
                })?
                .timestamp_millis(),
        ),
        (None, None) => None,
    };
    if expires_at.is_some_and(|at| at <= now_millis()) {
        return Err(Error::InvalidValue("expires_at must be in the future".into()).into());
    }
    let issued = state
        .store
        .issue_key(Actor::AdminToken(admin.0), slug.into_inner(), request.name, expires_at)
        .await?;
    let mut body = key_json(&issued.info);
    // The only response that ever carries the secret.
    if let Value::Object(fields) = &mut body {
        fields.insert("token".into(), Value::String(issued.token.secret.clone()));
    }
    let mut response = ok(StatusCode::CREATED, body);
    // A response carrying a secret must not be kept by any cache (RFC 9111 §5.2.2.5).
    response.headers_mut().insert(
        actix_web::http::header::CACHE_CONTROL,
        actix_web::http::header::HeaderValue::from_static("no-store"),
    );
    Ok(response)
}

async fn list_keys(state: web::Data<AppState>, _: AdminToken, slug: web::Path<String>) -> AdminResult {
    let keys = state.store.list_keys(slug.into_inner()).await?;
    let items: Vec<Value> = keys.iter().map(key_json).collect();
    Ok(ok(StatusCode::OK, json!({ "items": items, "next": null })))
}

async fn get_key(state: web::Data<AppState>, _: AdminToken, id: web::Path<String>) -> AdminResult {
    let key = state.store.get_key(id.into_inner()).await?;
    Ok(ok(StatusCode::OK, key_json(&key)))
}

async fn revoke_key(state: web::Data<AppState>, admin: AdminToken, id: web::Path<String>) -> AdminResult {
    let key = state.store.revoke_key(Actor::AdminToken(admin.0), id.into_inner()).await?;
    Ok(ok(StatusCode::OK, key_json(&key)))
}

/// A connection as shown: the contract's JSON with each secret as `{"set", "rotated_at"}`, plus
/// its id and times.
fn connection_json(record: &ConnectionRecord) -> Value {
    let mut shown = record.shown();
    if let Value::Object(fields) = &mut shown {
        fields.insert("id".into(), json!(record.id));
        fields.insert("directory_id".into(), json!(record.directory_id));
        fields.insert("created_at".into(), json!(format_millis(record.created_at)));
        fields.insert("updated_at".into(), json!(format_millis(record.updated_at)));
        fields.insert("last_full_at".into(), time(record.last_full_at));
    }
    shown
}

async fn create_connection(
    state: web::Data<AppState>,
    admin: AdminToken,
    slug: web::Path<String>,
    body: AdminBody,
) -> AdminResult {
    let config = connection::parse(body.0)?;
    let created = state
        .store
        .create_connection(Actor::AdminToken(admin.0), state.secret_key.clone(), slug.into_inner(), config)
        .await?;
    Ok(ok(StatusCode::CREATED, connection_json(&created)))
}

async fn list_connections(state: web::Data<AppState>, _: AdminToken, slug: web::Path<String>) -> AdminResult {
    let all = state.store.list_connections(slug.into_inner()).await?;
    let items: Vec<Value> = all.iter().map(connection_json).collect();
    Ok(ok(StatusCode::OK, json!({ "items": items, "next": null })))
}

async fn get_connection(state: web::Data<AppState>, _: AdminToken, id: web::Path<String>) -> AdminResult {
    let found = state.store.get_connection(id.into_inner()).await?;
    Ok(ok(StatusCode::OK, connection_json(&found)))
}

async fn update_connection(
    state: web::Data<AppState>,
    admin: AdminToken,
    id: web::Path<String>,
    body: AdminBody,
) -> AdminResult {
    let config = connection::parse(body.0)?;
    let updated = state
        .store
        .update_connection(Actor::AdminToken(admin.0), state.secret_key.clone(), id.into_inner(), config)
        .await?;
    Ok(ok(StatusCode::OK, connection_json(&updated)))
}

async fn delete_connection(
    state: web::Data<AppState>,
    admin: AdminToken,
    id: web::Path<String>,
) -> AdminResult {
    state.store.delete_connection(Actor::AdminToken(admin.0), id.into_inner()).await?;
    Ok(HttpResponse::NoContent().finish())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SyncRequest {
    #[serde(default = "full_mode")]
    mode: String,
    #[serde(default)]
    dry_run: bool,
    #[serde(default)]
    confirm: bool,
}

fn full_mode() -> String {
    "full".into()
}

/// Starts a run in the background and answers 202 with its id; its outcome is in `/runs`. 409
/// while another run holds the connection (see `store::sync_leases`).
async fn sync_connection(
    state: web::Data<AppState>,
    _: AdminToken,
    id: web::Path<String>,
    body: AdminBody,
) -> AdminResult {
    let request: SyncRequest = parse(body)?;
    let full = match request.mode.as_str() {
        "full" => true,
        "delta" => false,
        other => return Err(Error::InvalidValue(format!("mode '{other}' must be 'full' or 'delta'")).into()),
    };
    let connection = state.store.get_connection(id.into_inner()).await?;
    let run_request = crate::sync::engine::RunRequest {
        full,
        dry_run: request.dry_run,
        confirm: request.confirm,
        trigger: "api",
    };
    let started = crate::sync::engine::start(&state.store, &connection, run_request).await?;
    let run_id = started.run_id.clone();
    let (store, key) = (state.store.clone(), state.secret_key.clone());
    tokio::spawn(async move {
        if let Err(error) = started.execute(&store, key.as_ref(), &connection, &|_| {}).await {
            tracing::error!(%error, "a sync run could not be recorded");
        }
    });
    Ok(ok(StatusCode::ACCEPTED, json!({ "run_id": run_id, "status": "running" })))
}

/// Checks the connection's credentials and permissions now; 200 either way, with each check.
async fn verify_connection(state: web::Data<AppState>, _: AdminToken, id: web::Path<String>) -> AdminResult {
    let connection = state.store.get_connection(id.into_inner()).await?;
    let checks = crate::sync::engine::verify(&state.store, state.secret_key.as_ref(), &connection).await;
    let ok_all = checks.iter().all(|c| c.remedy.is_none());
    let items: Vec<Value> = checks
        .iter()
        .map(|c| json!({ "check": c.what, "ok": c.remedy.is_none(), "remedy": c.remedy }))
        .collect();
    Ok(ok(StatusCode::OK, json!({ "ok": ok_all, "checks": items })))
}

async fn connection_runs(state: web::Data<AppState>, _: AdminToken, id: web::Path<String>) -> AdminResult {
    let runs = state.store.connection_runs(id.into_inner()).await?;
    let items: Vec<Value> = runs
        .into_iter()
        .map(|run| {
            json!({
                "id": run.id, "trigger": run.trigger, "mode": run.mode, "dry_run": run.dry_run,
                "status": run.status, "started_at": format_millis(run.started_at), "finished_at": time(run.finished_at),
                "report": serde_json::from_str::<Value>(&run.report).unwrap_or(Value::Null),
            })
        })
        .collect();
    Ok(ok(StatusCode::OK, json!({ "items": items, "next": null })))
}

fn parse_time(name: &str, value: &str) -> Result<i64, Error> {
    chrono::DateTime::parse_from_rfc3339(value).map(|t| t.timestamp_millis()).map_err(|_| {
        Error::InvalidValue(format!("{name} '{value}' is not an RFC 3339 time such as 2026-11-30T00:00:00Z"))
    })
}

async fn audit_log(state: web::Data<AppState>, _: AdminToken, request: HttpRequest) -> AdminResult {
    let (limit, cursor) = page_params(&request)?;
    let mut query = AuditQuery {
        limit,
        after: cursor.as_deref().map(Cursor::decode).transpose()?,
        ..AuditQuery::default()
    };
    let mut directory_slug = None;
    for (name, value) in parameters(&request)? {
        match name.as_str() {
            "directory" => directory_slug = Some(value),
            "directory_id" => query.directory = Some(crate::ids::DirectoryId(value)),
            "resource" => query.resource_type = Some(ResourceType::parse(&value)?),
            "resource_id" => query.resource_id = Some(value),
            "actor" => query.actor_id = Some(value),
            "since" => query.since = Some(parse_time("since", &value)?),
            "until" => query.until = Some(parse_time("until", &value)?),
            "limit" | "cursor" => {}
            other => {
                return Err(Error::InvalidValue(format!(
                "unknown audit filter '{other}': use directory, directory_id, resource, resource_id, actor, \
                     since, until, limit, cursor"
            ))
                .into())
            }
        }
    }
    if let Some(slug) = directory_slug {
        query.directory = Some(state.store.get_directory(slug).await?.id);
    }
    let (entries, next) = state.store.audit_page(query).await?;
    let items: Vec<Value> = entries.iter().map(entry_json).collect();
    Ok(ok(StatusCode::OK, json!({ "items": items, "next": next.map(|c| c.encode()) })))
}

fn entry_json(entry: &audit::Entry) -> Value {
    json!({
        "id": entry.id,
        "at": format_millis(entry.at),
        "directory_id": entry.directory_id,
        "actor": { "kind": entry.actor_kind, "id": entry.actor_id },
        "resource": { "type": entry.resource_type, "id": entry.resource_id },
        "operation": entry.operation,
        "details": entry.details,
    })
}

/// `PUT /directories/{slug}/saml`: the IdP's settings, or its metadata.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PutSaml {
    sso_url: Option<String>,
    certificate_pem: Option<String>,
    idp_entity_id: Option<String>,
    user_attribute: Option<String>,
    #[serde(default)]
    allow_idp_initiated: bool,
    metadata_xml: Option<String>,
}

fn saml_json(state: &AppState, slug: &str, idp: &crate::saml::IdpSettings) -> Value {
    let sp = crate::saml::SpUrls::of(&state.base_url, slug);
    json!({
        "sso_url": idp.sso_url,
        "certificate_pem": idp.certificate_pem,
        "idp_entity_id": idp.idp_entity_id,
        "user_attribute": idp.user_attribute,
        "allow_idp_initiated": idp.allow_idp_initiated,
        "sp_entity_id": sp.entity_id,
        "sp_metadata_url": sp.entity_id,
        "acs_url": sp.acs_url,
        "login_url": sp.login_url,
    })
}

async fn put_saml(
    state: web::Data<AppState>,
    admin: AdminToken,
    slug: web::Path<String>,
    body: AdminBody,
) -> AdminResult {
    let request: PutSaml = parse(body)?;
    let user_attribute = request.user_attribute.unwrap_or_else(|| crate::saml::NAME_ID.to_string());
    let settings = match request.metadata_xml {
        Some(xml) => {
            crate::saml::IdpSettings::from_metadata(&xml, user_attribute, request.allow_idp_initiated)?
        }
        None => crate::saml::IdpSettings {
            sso_url: request.sso_url.unwrap_or_default(),
            certificate_pem: request.certificate_pem.unwrap_or_default(),
            idp_entity_id: request.idp_entity_id.unwrap_or_default(),
            user_attribute,
            allow_idp_initiated: request.allow_idp_initiated,
        },
    };
    let slug = slug.into_inner();
    let saved = state.store.configure_saml(Actor::AdminToken(admin.0), slug.clone(), settings).await?;
    Ok(ok(StatusCode::OK, saml_json(&state, &slug, &saved)))
}

async fn get_saml(state: web::Data<AppState>, _: AdminToken, slug: web::Path<String>) -> AdminResult {
    let slug = slug.into_inner();
    match state.store.find_saml_idp(slug.clone()).await? {
        Some((_, Some(idp))) => Ok(ok(StatusCode::OK, saml_json(&state, &slug, &idp))),
        Some((_, None)) => {
            Err(Error::NotFound(format!("directory '{slug}' has no SAML IdP configured")).into())
        }
        None => Err(Error::NotFound(format!("no directory '{slug}'")).into()),
    }
}

async fn delete_saml(state: web::Data<AppState>, admin: AdminToken, slug: web::Path<String>) -> AdminResult {
    state.store.remove_saml(Actor::AdminToken(admin.0), slug.into_inner()).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// `PUT /directories/{slug}/lookup`: the people lookup's settings.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PutLookup {
    show_deactivated: bool,
}

fn lookup_json(directory: &Directory) -> Value {
    json!({ "show_deactivated": directory.show_deactivated, "url": format!("/d/{}/", directory.slug) })
}

async fn get_lookup(state: web::Data<AppState>, _: AdminToken, slug: web::Path<String>) -> AdminResult {
    let directory = state.store.get_directory(slug.into_inner()).await?;
    Ok(ok(StatusCode::OK, lookup_json(&directory)))
}

async fn put_lookup(
    state: web::Data<AppState>,
    admin: AdminToken,
    slug: web::Path<String>,
    body: AdminBody,
) -> AdminResult {
    let request: PutLookup = parse(body)?;
    let settings = Settings { show_deactivated: Some(request.show_deactivated), ..Settings::default() };
    let changed =
        state.store.configure_directory(Actor::AdminToken(admin.0), slug.into_inner(), settings).await?;
    Ok(ok(StatusCode::OK, lookup_json(&changed)))
}
