//! `/metrics` (Prometheus) and the middleware that counts every request into it.

use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{Service, ServiceRequest, ServiceResponse};
use actix_web::{web, HttpResponse};

use crate::app::AppState;

/// The text exposition format's content type.
const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// What a request matched no route as: its path would make a label per probe of the server.
const UNMATCHED: &str = "unmatched";

pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    let text = crate::metrics::global().render(Some(state.store.pool_state()));
    HttpResponse::Ok().content_type(CONTENT_TYPE).body(text)
}

/// Outermost layer: counts each request by the route pattern it matched, its method and its
/// status, and its time to answer.
pub fn observe<S, B>(
    request: ServiceRequest,
    service: &S,
) -> impl std::future::Future<Output = Result<ServiceResponse<B>, actix_web::Error>>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: MessageBody,
{
    let started = Instant::now();
    let method = request.method().to_string();
    let response = service.call(request);
    async move {
        let response = response.await;
        // Routing happens inside this layer: the pattern is known once the response is. (The
        // request is not kept meanwhile: inner layers rewrite it, which needs it unshared.)
        let (route, status) = match &response {
            Ok(response) => (response.request().match_pattern(), response.status()),
            Err(error) => (None, error.as_response_error().status_code()),
        };
        let route = route.unwrap_or_else(|| UNMATCHED.to_string());
        let seconds = started.elapsed().as_secs_f64();
        crate::metrics::global().observe_request(&route, &method, status.as_u16(), seconds);
        response
    }
}
