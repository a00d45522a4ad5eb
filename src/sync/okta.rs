//! The Okta Management API as the importer reads it (`okta-api.md`): how an Okta user becomes a
//! SCIM resource (pure), and a client that pages by `Link` headers within a share of the org's
//! rate-limit buckets, waits out 429s by `X-Rate-Limit-Reset`, and retries transient 5xx.

use std::collections::HashMap;
use std::time::Duration;

use reqwest::header::{HeaderMap, AUTHORIZATION, DATE};
use serde_json::{json, Map, Value};

use super::okta_auth::{Authorizer, Credentials};
use super::rules;
pub use super::source::MappedUser;
use super::source::{self, SourceStatus};
use crate::error::{Error, Result};
use crate::scim::schema::ENTERPRISE_USER_SCHEMA;

fn text<'a>(profile: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    profile.get(key).and_then(Value::as_str).map(str::trim).filter(|v| !v.is_empty())
}

/// Okta's status as rule 5 reads it: ACTIVE, PROVISIONED, RECOVERY, PASSWORD_EXPIRED and
/// LOCKED_OUT are states the user can leave on their own; STAGED is its own case; anything else
/// (SUSPENDED, DEPROVISIONED, a status Okta adds later) is inactive.
pub fn status(okta_status: &str) -> SourceStatus {
    match okta_status {
        "ACTIVE" | "PROVISIONED" | "RECOVERY" | "PASSWORD_EXPIRED" | "LOCKED_OUT" => SourceStatus::Active,
        "STAGED" => SourceStatus::Staged,
        _ => SourceStatus::Inactive,
    }
}

/// Maps an Okta user object (§3.1) as `sync-rules.md` §3 says; `None` when it has no id.
pub fn map_user(user: &Value, username_source: &str) -> Option<MappedUser> {
    let source_id = user.get("id")?.as_str()?.to_string();
    let empty = Map::new();
    let profile = user.get("profile").and_then(Value::as_object).unwrap_or(&empty);
    let field = |key: &str| text(profile, key).map(|v| Value::String(v.to_string()));
    let mut resource = Map::new();
    resource.insert("externalId".into(), Value::String(source_id.clone()));
    let (first, last) = (text(profile, "firstName"), text(profile, "lastName"));
    let display = text(profile, "displayName").map(str::to_string).or_else(|| {
        let joined = [first, last].into_iter().flatten().collect::<Vec<_>>().join(" ");
        (!joined.is_empty()).then_some(joined)
    });
    if let Some(display) = display {
        resource.insert("displayName".into(), Value::String(display));
    }
    let mut name = Map::new();
    if let Some(first) = first {
        name.insert("givenName".into(), json!(first));
    }
    if let Some(last) = last {
        name.insert("familyName".into(), json!(last));
    }
    if !name.is_empty() {
        resource.insert("name".into(), Value::Object(name));
    }
    let mut emails = Vec::new();
    if let Some(email) = text(profile, "email") {
        emails.push(json!({"value": email, "type": "work", "primary": true}));
    }
    if let Some(second) = text(profile, "secondEmail") {
        emails.push(json!({"value": second, "type": "other"}));
    }
    if !emails.is_empty() {
        resource.insert("emails".into(), Value::Array(emails));
    }
    for (scim, okta) in [
        ("title", "title"),
        ("userType", "userType"),
        ("preferredLanguage", "preferredLanguage"),
        ("locale", "locale"),
        ("timezone", "timezone"),
    ] {
        if let Some(value) = field(okta) {
            resource.insert(scim.into(), value);
        }
    }
    if let Some(phones) = source::phone_numbers(text(profile, "primaryPhone"), text(profile, "mobilePhone")) {
        resource.insert("phoneNumbers".into(), phones);
    }
    let address = [
        ("streetAddress", "streetAddress"),
        ("locality", "city"),
        ("region", "state"),
        ("postalCode", "zipCode"),
        ("country", "countryCode"),
    ];
    if let Some(addresses) = source::work_address(address.map(|(scim, okta)| (scim, field(okta)))) {
        resource.insert("addresses".into(), addresses);
    }
    let mut enterprise = Map::new();
    for key in ["employeeNumber", "department", "division", "organization", "costCenter"] {
        if let Some(value) = field(key) {
            enterprise.insert(key.into(), value);
        }
    }
    if let Some(manager) = text(profile, "manager") {
        enterprise.insert("manager".into(), json!({ "displayName": manager }));
    }
    if !enterprise.is_empty() {
        resource.insert(ENTERPRISE_USER_SCHEMA.into(), Value::Object(enterprise));
    }
    let string = |key: &str| user.get(key).and_then(Value::as_str).unwrap_or_default().to_string();
    Some(MappedUser {
        status: status(&string("status")),
        created: string("created"),
        user_name: rules::okta_user_name(username_source, profile),
        primary_email: text(profile, "email").or(text(profile, "login")).unwrap_or_default().to_string(),
        manager_source_id: text(profile, "managerId").map(str::to_string),
        source_id,
        resource,
    })
}

/// The `rel="next"` URL of a response: from several `link` headers, or one with comma-separated
/// values (`okta-api.md` §2). Followed verbatim, never built.
pub fn next_link(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all("link")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .find_map(|link| {
            let (target, params) = link.trim().split_once(';')?;
            let is_next = params.split(';').any(|p| {
                let p = p.trim().replace(' ', "");
                p.eq_ignore_ascii_case("rel=\"next\"") || p.eq_ignore_ascii_case("rel=next")
            });
            let target = target.trim().strip_prefix('<')?.strip_suffix('>')?;
            is_next.then(|| target.to_string())
        })
}

/// The rate-limit bucket a request counts against (`okta-api.md` §7), by path.
fn bucket_of(path: &str) -> &'static str {
    if path.starts_with("/api/v1/apps") {
        "apps"
    } else if path.starts_with("/api/v1/groups") {
        "groups"
    } else if path == "/api/v1/users" {
        "users"
    } else {
        "other"
    }
}

/// What the last response said about a bucket.
#[derive(Debug, Clone, Copy)]
struct BucketState {
    limit: u64,
    remaining: u64,
    /// Seconds to wait, from the response's own `Date`, until the window refills.
    reset_in: u64,
    seen: std::time::Instant,
}

/// How long to wait before spending another request of a bucket, so that this importer uses at
/// most `share` of it (Okta's buckets are shared by the whole org). Pure, for tests.
pub fn wait_before_request(
    limit: u64,
    remaining: u64,
    reset_in: Duration,
    elapsed: Duration,
    share: f64,
) -> Duration {
    // Requests the rest of the org keeps: (1 - share) of the limit.
    let reserved = ((limit as f64) * (1.0 - share)).ceil() as u64;
    if limit == 0 || remaining > reserved {
        return Duration::ZERO;
    }
    // The reset and the `Date` it is read against are whole seconds, so the window may end up
    // to a second after they say: a request sent at the stated reset could still count against
    // the spent window.
    (reset_in + RESET_MARGIN).saturating_sub(elapsed)
}

/// What waiting for a window to reset adds to the reset Okta states (see [`wait_before_request`]).
const RESET_MARGIN: Duration = Duration::from_secs(1);

/// Limits that stop a run that has gone wrong (a cursor loop, a much larger directory than expected).
#[derive(Debug, Clone, Copy)]
pub struct Caps {
    pub max_pages: usize,
    pub max_records: usize,
}

impl Default for Caps {
    fn default() -> Self {
        Caps { max_pages: 100_000, max_records: 5_000_000 }
    }
}

#[derive(Debug)]
pub struct OktaClient {
    http: reqwest::Client,
    org_url: String,
    auth: Authorizer,
    share: f64,
    caps: Caps,
    buckets: tokio::sync::Mutex<HashMap<&'static str, BucketState>>,
    /// Okta's clock at its first answer (its `Date` header): where a run's reading began, by the
    /// clock that stamps `lastUpdated`.
    first_answer_at: std::sync::OnceLock<i64>,
    /// Retries of a 5xx or 429 before the run fails.
    max_retries: u32,
}

/// An Okta error body (§6), for messages and remedies.
fn error_code(body: &str) -> (String, String) {
    let parsed: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    let field = |k: &str| parsed.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
    (field("errorCode"), field("errorSummary"))
}

/// Why an Okta call failed, in words that tell the admin what to do.
fn remedy(status: u16, code: &str, summary: &str, headers: &HeaderMap) -> Error {
    let detail = match (status, code) {
        (401, "E0000011") => {
            "Okta refused the API token (E0000011): it is invalid, revoked, or expired after 30 days \
             unused; create a new one in Admin → Security → API → Tokens"
                .to_string()
        }
        (401, _) => {
            format!("Okta refused the credentials ({code} {summary}); check the connection's auth settings")
        }
        (403, "E0000006") => {
            "the Okta admin behind this credential lacks a role for this resource (E0000006); give it \
             the Read-Only Administrator role"
                .to_string()
        }
        (403, _) => {
            let challenge = headers.get("www-authenticate").and_then(|v| v.to_str().ok()).unwrap_or_default();
            if challenge.contains("insufficient_scope") {
                format!("the Okta service app lacks a scope ({challenge}); grant okta.users.read, okta.groups.read (and okta.apps.read for app_id) on its Okta API Scopes tab")
            } else {
                format!("Okta refused the request ({code} {summary})")
            }
        }
        (404, _) => format!("Okta answered not found ({code} {summary}): check org_url, and that app_id names an app of this org"),
        _ => format!("Okta answered {status} ({code} {summary})"),
    };
    Error::Upstream(detail)
}

impl OktaClient {
    /// A client with an SSWS API token.
    pub fn new(org_url: &str, api_token: &str, share: f64, caps: Caps) -> Result<OktaClient> {
        Self::with_credentials(org_url, Credentials::ApiToken(api_token.to_string()), share, caps)
    }

    /// A client with either scheme; a service app's private key is checked here.
    pub fn with_credentials(
        org_url: &str,
        credentials: Credentials,
        share: f64,
        caps: Caps,
    ) -> Result<OktaClient> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| Error::internal("building the Okta client", e))?;
        let org_url = org_url.trim_end_matches('/').to_string();
        Ok(OktaClient {
            auth: Authorizer::new(&org_url, credentials, http.clone())?,
            http,
            org_url,
            share: share.clamp(0.01, 1.0),
            caps,
            buckets: tokio::sync::Mutex::default(),
            first_answer_at: std::sync::OnceLock::new(),
            max_retries: 5,
        })
    }

    /// Okta's clock (seconds since the epoch) when it first answered this client, if it has.
    pub fn first_answer_at(&self) -> Option<i64> {
        self.first_answer_at.get().copied()
    }

    /// Waits as the bucket of `path` asks, before a request.
    async fn pace(&self, path: &str) {
        let wait = {
            let mut buckets = self.buckets.lock().await;
            buckets.get_mut(bucket_of(path)).map_or(Duration::ZERO, |b| {
                let wait = wait_before_request(
                    b.limit,
                    b.remaining,
                    Duration::from_secs(b.reset_in),
                    b.seen.elapsed(),
                    self.share,
                );
                // Count the request now, so requests in flight together (member reads, the
                // listings) do not each spend the same last request of the share.
                if wait.is_zero() {
                    b.remaining = b.remaining.saturating_sub(1);
                }
                wait
            })
        };
        if !wait.is_zero() {
            tracing::warn!(
                bucket = bucket_of(path),
                wait_ms = wait.as_millis() as u64,
                "pacing Okta requests to stay within the rate-limit share"
            );
            tokio::time::sleep(wait).await;
        }
    }

    async fn note_limits(&self, path: &str, headers: &HeaderMap) {
        self.first_answer_at.get_or_init(|| server_now(headers) as i64);
        let number = |name: &str| {
            headers.get(name).and_then(|v| v.to_str().ok()).and_then(|v| v.trim().parse::<u64>().ok())
        };
        let (Some(limit), Some(remaining), Some(reset)) =
            (number("x-rate-limit-limit"), number("x-rate-limit-remaining"), number("x-rate-limit-reset"))
        else {
            return;
        };
        let now = server_now(headers);
        let state = BucketState {
            limit,
            remaining,
            reset_in: reset.saturating_sub(now),
            seen: std::time::Instant::now(),
        };
        self.buckets.lock().await.insert(bucket_of(path), state);
    }

    /// GETs one page, with pacing, 429 waits and 5xx retries; returns the JSON array and the next link.
    async fn page(&self, url: &str) -> Result<(Vec<Value>, Option<String>)> {
        let path = url::Url::parse(url).map(|u| u.path().to_string()).unwrap_or_default();
        let mut attempt = 0;
        // An access token refused with 401 is replaced once per page.
        let mut reauthorized = false;
        loop {
            self.pace(&path).await;
            let authorization = self.auth.authorize("GET", url).await?;
            let mut request = self
                .http
                .get(url)
                .header(AUTHORIZATION, &authorization.header)
                .header("accept", "application/json");
            if let Some(proof) = &authorization.dpop {
                request = request.header("DPoP", proof);
            }
            let response = request
                .send()
                .await
                .map_err(|e| Error::Upstream(format!("cannot reach Okta at {}: {e}", self.org_url)))?;
            let status = response.status().as_u16();
            let headers = response.headers().clone();
            self.note_limits(&path, &headers).await;
            let body =
                response.text().await.map_err(|e| Error::Upstream(format!("reading Okta's answer: {e}")))?;
            match status {
                200 => {
                    let items: Vec<Value> = serde_json::from_str(&body).map_err(|e| {
                        Error::Upstream(format!("Okta sent a page that is not a JSON array: {e}"))
                    })?;
                    return Ok((items, next_link(&headers)));
                }
                401 if !reauthorized && self.auth.discard(&authorization).await => {
                    reauthorized = true;
                    tracing::debug!("Okta refused the access token; getting a new one");
                }
                429 | 500 | 502 | 503 | 504 if attempt < self.max_retries => {
                    attempt += 1;
                    wait_to_retry(status, &headers, attempt, "Okta").await;
                }
                _ => {
                    let (code, summary) = error_code(&body);
                    return Err(self
                        .auth
                        .refusal(status, &code, &summary, &headers)
                        .unwrap_or_else(|| remedy(status, &code, &summary, &headers)));
                }
            }
        }
    }

    /// Reads every page of `path_and_query` (limit included), handing each to `each`. Stops with
    /// an error on a repeated cursor or past the caps.
    pub async fn for_each_page(
        &self,
        path_and_query: &str,
        mut each: impl FnMut(Vec<Value>) -> Result<()>,
    ) -> Result<usize> {
        let mut pager = self.pager(path_and_query);
        while let Some(items) = pager.next_page().await? {
            each(items)?;
        }
        Ok(pager.records)
    }

    /// Pages of a listing one at a time, for callers that must await between pages (to stage
    /// each before reading the next, so memory holds one page).
    pub fn pager(&self, path_and_query: &str) -> Pager<'_> {
        Pager {
            client: self,
            next: Some(format!("{}{path_and_query}", self.org_url)),
            seen: std::collections::HashSet::new(),
            pages: 0,
            records: 0,
        }
    }
}

/// One check of `connection verify`: what was tried and, when it failed, what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub what: String,
    pub remedy: Option<String>,
}

impl OktaClient {
    /// Tries, with one small request each, everything the rules need: reading users, groups
    /// and group members, and the app's assignments when `app_id` is set. A service app first
    /// gets its access token; when it cannot, nothing else can be tried.
    pub async fn verify(&self, app_id: Option<&str>) -> Vec<Check> {
        let mut checks = Vec::new();
        if let Some((what, outcome)) = self.auth.check().await {
            let failed = outcome.is_err();
            checks.push(Check { what, remedy: outcome.err().map(|e| e.to_string()) });
            if failed {
                return checks;
            }
        }
        let mut probe = |what: &str, outcome: Result<()>| {
            checks.push(Check { what: what.to_string(), remedy: outcome.err().map(|e| e.to_string()) });
        };
        probe("read users (okta.users.read)", self.probe("/api/v1/users?limit=1").await);
        probe("read groups (okta.groups.read)", self.probe("/api/v1/groups?limit=1").await);
        if let Some(app) = app_id {
            probe(
                &format!("read the assignments of app {app} (okta.apps.read)"),
                self.probe(&format!("/api/v1/apps/{app}/users?limit=1")).await,
            );
        }
        checks
    }

    async fn probe(&self, path_and_query: &str) -> Result<()> {
        self.page(&format!("{}{path_and_query}", self.org_url)).await.map(|_| ())
    }
}

/// A listing being read; see [`OktaClient::pager`].
#[derive(Debug)]
pub struct Pager<'a> {
    client: &'a OktaClient,
    next: Option<String>,
    seen: std::collections::HashSet<String>,
    pages: usize,
    pub records: usize,
}

impl Pager<'_> {
    /// The next page, or `None` after the last. Stops with an error on a repeated cursor or past
    /// the caps.
    pub async fn next_page(&mut self) -> Result<Option<Vec<Value>>> {
        let Some(url) = self.next.take() else { return Ok(None) };
        if !self.seen.insert(url.clone()) {
            return Err(Error::Upstream(format!(
                "Okta returned the same next link twice ({url}); stopping to avoid a loop"
            )));
        }
        let (items, next) = self.client.page(&url).await?;
        self.pages += 1;
        self.records += items.len();
        let caps = self.client.caps;
        if self.pages > caps.max_pages || self.records > caps.max_records {
            return Err(Error::Upstream(format!(
                "the listing passed the configured caps ({} pages, {} records); nothing of this run is applied",
                caps.max_pages, caps.max_records
            )));
        }
        self.next = next;
        Ok(Some(items))
    }
}

/// The server's clock from its `Date` header (the reset time is on that clock), else ours.
fn server_now(headers: &HeaderMap) -> u64 {
    headers
        .get(DATE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| chrono::DateTime::parse_from_rfc2822(v).ok())
        .map_or_else(|| chrono::Utc::now().timestamp(), |t| t.timestamp())
        .max(0) as u64
}

/// Before retrying a request Okta answered with a 429 (until its window resets) or a transient
/// 5xx (jittered backoff, by `attempt`), logged as what was asked (`who`).
pub(super) async fn wait_to_retry(status: u16, headers: &HeaderMap, attempt: u32, who: &str) {
    let wait = if status == 429 { reset_wait(headers) } else { backoff(attempt) };
    tracing::warn!(
        status,
        attempt,
        wait_ms = wait.as_millis() as u64,
        "{who} asked to slow down or failed; retrying"
    );
    tokio::time::sleep(wait).await;
}

/// After a 429: until `X-Rate-Limit-Reset` by the server's clock, plus up to a second of jitter
/// so that clients do not return together.
fn reset_wait(headers: &HeaderMap) -> Duration {
    let reset = headers
        .get("x-rate-limit-reset")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let base = reset.map_or(Duration::from_secs(1), |reset| {
        Duration::from_secs(reset.saturating_sub(server_now(headers)))
    });
    base + jitter(Duration::from_millis(1000))
}

/// Exponential backoff with full jitter: up to 0.5 s, 1 s, 2 s, ... capped at 30 s.
fn backoff(attempt: u32) -> Duration {
    let ceiling =
        Duration::from_millis(500u64.saturating_mul(1 << attempt.min(6))).min(Duration::from_secs(30));
    jitter(ceiling)
}

fn jitter(up_to: Duration) -> Duration {
    use rand::RngExt;
    let millis = u64::try_from(up_to.as_millis()).unwrap_or(u64::MAX).max(1);
    Duration::from_millis(rand::rng().random_range(0..millis))
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn statuses_map_as_the_contract_says() {
        for okta in ["ACTIVE", "PROVISIONED", "RECOVERY", "PASSWORD_EXPIRED", "LOCKED_OUT"] {
            assert_eq!(status(okta), SourceStatus::Active, "{okta}");
        }
        for okta in ["SUSPENDED", "DEPROVISIONED", "SOMETHING_NEW"] {
            assert_eq!(status(okta), SourceStatus::Inactive, "{okta}");
        }
        assert_eq!(status("STAGED"), SourceStatus::Staged);
    }

    #[test]
    fn next_links_are_found_in_separate_or_joined_headers() {
        let mut separate = HeaderMap::new();
        separate.append(
            "link",
            HeaderValue::from_static("<https://a.okta.com/api/v1/users?limit=200>; rel=\"self\""),
        );
        separate.append(
            "link",
            HeaderValue::from_static("<https://a.okta.com/api/v1/users?after=00u1&limit=200>; rel=\"next\""),
        );
        assert_eq!(
            next_link(&separate).as_deref(),
            Some("https://a.okta.com/api/v1/users?after=00u1&limit=200")
        );
        let mut joined = HeaderMap::new();
        joined.insert(
            "link",
            HeaderValue::from_static(
                "<https://a/x?limit=2>; rel=\"self\", <https://a/x?after=b&limit=2>; rel=\"next\"",
            ),
        );
        assert_eq!(next_link(&joined).as_deref(), Some("https://a/x?after=b&limit=2"));
        let mut last = HeaderMap::new();
        last.insert("link", HeaderValue::from_static("<https://a/x?limit=2>; rel=\"self\""));
        assert_eq!(next_link(&last), None);
    }

    #[test]
    fn pacing_keeps_the_rest_of_the_bucket_for_the_org() {
        let reset = Duration::from_secs(40);
        // Half of 600 is reserved for the org: at 301 remaining go on, at 300 wait for the reset.
        assert_eq!(wait_before_request(600, 301, reset, Duration::ZERO, 0.5), Duration::ZERO);
        // The wait is to the stated reset and a second more (it is given in whole seconds).
        assert_eq!(wait_before_request(600, 300, reset, Duration::ZERO, 0.5), Duration::from_secs(41));
        assert_eq!(
            wait_before_request(600, 10, reset, Duration::from_secs(30), 0.5),
            Duration::from_secs(11)
        );
        assert_eq!(wait_before_request(600, 10, reset, Duration::from_secs(41), 0.5), Duration::ZERO);
        assert_eq!(
            wait_before_request(0, 0, reset, Duration::ZERO, 0.5),
            Duration::ZERO,
            "a concurrency 429 reports no limit"
        );
        assert_eq!(
            wait_before_request(100, 1, reset, Duration::ZERO, 1.0),
            Duration::ZERO,
            "a full share may spend it all"
        );
    }

    #[test]
    fn an_okta_user_maps_to_scim_as_the_contract_table_says() {
        let user = json!({
            "id": "00u7kq2f9xHTm3Lp0697", "status": "ACTIVE", "created": "2025-11-03T09:12:44.000Z",
            "lastUpdated": "2026-02-28T16:21:09.000Z",
            "profile": {
                "login": "ines.moreau@fjord.example", "email": "ines.moreau@fjord.example", "secondEmail": "ines@home.example",
                "firstName": "Inès", "lastName": "Moreau", "displayName": null, "title": "Staff Engineer",
                "department": "Platform", "division": "R&D", "costCenter": "CC-4410", "organization": "Fjord Ltd",
                "employeeNumber": "E-20931", "userType": "Employee", "managerId": "00u5abcXYZ12def0697", "manager": "Tomas Berg",
                "mobilePhone": "+47 400 12 345", "primaryPhone": null, "streetAddress": "Kirkegata 5", "city": "Oslo",
                "state": null, "zipCode": "0153", "countryCode": "NO", "preferredLanguage": "nb", "locale": "nb_NO",
                "timezone": "Europe/Oslo"
            }
        });
        let mapped = map_user(&user, "login").unwrap();
        assert_eq!(mapped.source_id, "00u7kq2f9xHTm3Lp0697");
        assert_eq!(mapped.user_name.as_deref(), Some("ines.moreau@fjord.example"));
        assert_eq!(mapped.manager_source_id.as_deref(), Some("00u5abcXYZ12def0697"));
        assert_eq!(
            Value::Object(mapped.resource),
            json!({
                "externalId": "00u7kq2f9xHTm3Lp0697",
                "displayName": "Inès Moreau",
                "name": {"givenName": "Inès", "familyName": "Moreau"},
                "emails": [{"value": "ines.moreau@fjord.example", "type": "work", "primary": true},
                           {"value": "ines@home.example", "type": "other"}],
                "title": "Staff Engineer", "userType": "Employee", "preferredLanguage": "nb", "locale": "nb_NO",
                "timezone": "Europe/Oslo",
                "phoneNumbers": [{"value": "+47 400 12 345", "type": "mobile"}],
                "addresses": [{"streetAddress": "Kirkegata 5", "locality": "Oslo", "postalCode": "0153", "country": "NO", "type": "work"}],
                "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {
                    "employeeNumber": "E-20931", "department": "Platform", "division": "R&D",
                    "organization": "Fjord Ltd", "costCenter": "CC-4410", "manager": {"displayName": "Tomas Berg"}
                }
            })
        );
        let sparse =
            map_user(&json!({"id": "00u1", "status": "STAGED", "profile": {"login": "x"}}), "email").unwrap();
        assert_eq!(sparse.user_name, None, "no email: no userName from that source");
        assert_eq!(sparse.primary_email, "x", "the login stands in for the e-mail");
        assert!(map_user(&json!({"profile": {}}), "login").is_none());
    }
}
