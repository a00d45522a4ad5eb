//! The actix-web edge: routes, middleware, and response helpers. Handlers extract, make one
//! store call, and render.

pub mod admin;
pub mod auth;
pub mod body;
pub mod consent;
pub mod discovery;
pub mod error;
pub mod groups;
pub mod health;
pub mod lookup;
pub mod metrics;
pub mod pages;
pub mod rate_limit;
pub mod saml;
pub mod search;
pub mod users;

use actix_web::body::MessageBody;
use actix_web::dev::{Service, ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::middleware::{NormalizePath, TrailingSlash};
use actix_web::{web, HttpMessage, HttpRequest, HttpResponse};
use serde_json::Value;
use tracing_actix_web::TracingLogger;

use crate::error::Error;
use crate::scim::list::ListRequest;
use crate::scim::resource::Meta;
use crate::telemetry::{RequestId, ScimdRootSpan, CURRENT_REQUEST_ID};

pub const SCIM_CONTENT_TYPE: &str = "application/scim+json; charset=utf-8";
const REQUEST_ID_HEADER: &str = "x-request-id";

pub fn routes(config: &mut web::ServiceConfig) {
    config
        .route("/healthz", web::get().to(health::healthz))
        .route("/readyz", web::get().to(health::readyz))
        .service(only_get("/metrics", web::get().to(metrics::metrics)))
        .configure(admin::routes)
        .configure(saml::routes)
        .configure(lookup::routes)
        .service(
            web::scope("/scim/v2")
                .service(only_get(
                    "/ServiceProviderConfig",
                    web::get().to(discovery::service_provider_config),
                ))
                .service(only_get("/ResourceTypes", web::get().to(discovery::resource_types)))
                .service(only_get("/ResourceTypes/{name}", web::get().to(discovery::resource_type)))
                .service(only_get("/Schemas", web::get().to(discovery::schemas)))
                .service(only_get("/Schemas/{urn}", web::get().to(discovery::schema)))
                .service(
                    web::resource("/Users")
                        .route(web::get().to(users::list))
                        .route(web::post().to(users::create))
                        .default_service(only("GET, POST")),
                )
                .service(
                    web::resource("/.search")
                        .route(web::post().to(search::search_all))
                        .default_service(only("POST")),
                )
                .service(
                    web::resource("/Users/.search")
                        .route(web::post().to(users::search))
                        .default_service(only("POST")),
                )
                .service(
                    web::resource("/Users/{id}")
                        .route(web::get().to(users::get))
                        .route(web::put().to(users::replace))
                        .route(web::patch().to(users::patch))
                        .route(web::delete().to(users::delete))
                        .default_service(only("GET, PUT, PATCH, DELETE")),
                )
                .route(
                    "/Bulk",
                    web::to(|| {
                        not_implemented("bulk operations are not supported (bulk.supported is false)")
                    }),
                )
                .route(
                    "/Me",
                    web::to(|| {
                        not_implemented("/Me is not supported: a key belongs to a directory, not a person")
                    }),
                )
                .service(
                    web::resource("/Groups")
                        .route(web::get().to(groups::list))
                        .route(web::post().to(groups::create))
                        .default_service(only("GET, POST")),
                )
                .service(
                    web::resource("/Groups/.search")
                        .route(web::post().to(groups::search))
                        .default_service(only("POST")),
                )
                .service(
                    web::resource("/Groups/{id}")
                        .route(web::get().to(groups::get))
                        .route(web::put().to(groups::replace))
                        .route(web::patch().to(groups::patch))
                        .route(web::delete().to(groups::delete))
                        .default_service(only("GET, PUT, PATCH, DELETE")),
                ),
        )
        .default_service(web::to(not_found));
}

fn only_get(path: &str, route: actix_web::Route) -> actix_web::Resource {
    web::resource(path).route(route).default_service(only("GET"))
}

/// Request tracing with scimd's root span (inside the request-id layer).
pub fn tracing_logger() -> TracingLogger<ScimdRootSpan> {
    TracingLogger::<ScimdRootSpan>::new()
}

/// `/Users/` is `/Users` (RFC 7644 leaves it open; clients differ).
pub fn trim_trailing_slash() -> NormalizePath {
    NormalizePath::new(TrailingSlash::Trim)
}

/// Outermost layer: adopts a sane incoming `X-Request-Id` or makes one, scopes it for the
/// request (error details quote it), and echoes it on the response.
pub fn request_id<S, B>(
    request: ServiceRequest,
    service: &S,
) -> impl std::future::Future<Output = Result<ServiceResponse<B>, actix_web::Error>>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: MessageBody,
{
    let incoming = request
        .headers()
        .get(REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| is_sane_request_id(v));
    let id = incoming.map_or_else(|| uuid::Uuid::new_v4().to_string(), str::to_string);
    request.extensions_mut().insert(RequestId(id.clone()));
    let response = service.call(request);
    async move {
        let mut response = CURRENT_REQUEST_ID.scope(id.clone(), response).await?;
        if let Ok(value) = HeaderValue::from_str(&id) {
            response.headers_mut().insert(header::HeaderName::from_static(REQUEST_ID_HEADER), value);
        }
        Ok(response)
    }
}

fn is_sane_request_id(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= 128
        && value.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
}

/// `attributes` / `excludedAttributes` of a request (query parameters, or a search body).
#[derive(Debug, Default)]
pub struct Projection {
    pub attributes: Vec<String>,
    pub excluded: Vec<String>,
}

impl Projection {
    pub fn of_list(request: &ListRequest) -> Projection {
        Projection { attributes: request.attributes.clone(), excluded: request.excluded_attributes.clone() }
    }

    /// Whether the request named any attributes to return or exclude.
    pub fn is_requested(&self) -> bool {
        !self.attributes.is_empty() || !self.excluded.is_empty()
    }
}

pub fn projection_of(request: &HttpRequest) -> Projection {
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

pub fn header_value(request: &HttpRequest, name: header::HeaderName) -> Option<String> {
    request.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_string)
}

/// The `ETag` header carries the same weak tag as `meta.version` (RFC 7644 §3.14).
pub fn with_etag(mut response: HttpResponse, etag: &str) -> HttpResponse {
    if let Ok(etag) = HeaderValue::from_str(etag) {
        response.headers_mut().insert(header::ETAG, etag);
    }
    response
}

pub fn not_modified(meta: &Meta) -> HttpResponse {
    with_etag(HttpResponse::NotModified().finish(), &meta.etag())
}

/// The query string as name/value pairs, decoded.
pub fn query_pairs(request: &HttpRequest) -> Vec<(String, String)> {
    url::form_urlencoded::parse(request.query_string().as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// A SCIM JSON response.
pub fn scim(status: StatusCode, body: &Value) -> HttpResponse {
    HttpResponse::build(status)
        .insert_header((header::CONTENT_TYPE, SCIM_CONTENT_TYPE))
        .body(body.to_string())
}

async fn not_found() -> Result<HttpResponse, Error> {
    Err(Error::NotFound("no such endpoint; SCIM lives under /scim/v2".into()))
}

/// The answer of a resource to any method but `allow`: 405 with an `Allow` header.
fn only(allow: &'static str) -> actix_web::Route {
    web::to(move || async move { Err::<HttpResponse, Error>(Error::MethodNotAllowed { allow }) })
}

async fn not_implemented(detail: &'static str) -> Result<HttpResponse, Error> {
    Err(Error::NotImplemented(detail.into()))
}
