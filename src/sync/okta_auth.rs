//! How the Okta importer proves who it is (`okta-api.md` §1): an SSWS API token, or an OAuth 2.0
//! "API Services" app. The app signs a client assertion (`private_key_jwt`) with the key
//! registered on it, trades it at the org authorization server for an access token of an hour,
//! and, when the app demands DPoP (the default since 2024), binds the token to a key pair made
//! here and proves possession of it on every call.
//!
//! Whether DPoP is needed is learned from Okta's first refusal and kept, with its nonce. The
//! token is cached until shortly before it expires; a 401 drops it (see
//! [`Authorizer::discard`]). Token, DPoP key and nonce belong to the process, not to one run:
//! runs of the same app (a server's scheduled runs) share them (see [`shared_state`]). Claims,
//! proofs and remedies are pure functions, tested below.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex, PoisonError};
use std::time::{Duration, Instant};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::{KeyPair, KeySize};
use aws_lc_rs::signature::{KeyPair as _, RSA_PKCS1_SHA256};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::header::{HeaderMap, ACCEPT};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// `client_assertion_type` of a JWT client assertion (RFC 7523).
pub const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// A client assertion is valid this long; it is used at once (Okta allows at most an hour).
const ASSERTION_LIFETIME_SECS: i64 = 300;
/// A cached token is replaced this long before Okta says it expires (or at half its life).
const EXPIRY_MARGIN: Duration = Duration::from_secs(60);
/// Okta's tokens live an hour; a longer `expires_in` is not believed.
const MAX_LIFETIME: Duration = Duration::from_secs(24 * 3600);
/// Token requests of one exchange: without a proof, with one, with the nonce Okta asked for, and
/// once more should the nonce rotate in between.
const MAX_EXCHANGE_STEPS: u32 = 4;
/// Retries of a 429 or 5xx from the token endpoint.
const MAX_RETRIES: u32 = 3;

/// The credentials of a connection, opened.
#[derive(Clone)]
pub enum Credentials {
    /// `Authorization: SSWS <token>` (§1.1).
    ApiToken(String),
    /// An OAuth service app (§1.2).
    ServiceApp(ServiceApp),
}

/// An "API Services" app with Public key / Private key client authentication.
#[derive(Clone)]
pub struct ServiceApp {
    /// The app's Client ID (`0oa…`).
    pub client_id: String,
    /// The `kid` under which the public half of `private_key_pem` is registered on the app.
    pub key_id: String,
    /// The RSA private key, PEM (PKCS#8 or PKCS#1).
    pub private_key_pem: String,
    /// Ask for `okta.apps.read` too (the rules name an `app_id`).
    pub read_apps: bool,
}

impl ServiceApp {
    /// The scopes the importer asks for.
    pub fn scopes(&self) -> Vec<&'static str> {
        let mut scopes = vec!["okta.users.read", "okta.groups.read"];
        if self.read_apps {
            scopes.push("okta.apps.read");
        }
        scopes
    }
}

/// What one request carries.
pub struct Authorization {
    /// The `Authorization` header: `SSWS …`, `Bearer …` or `DPoP …`.
    pub header: String,
    /// The `DPoP` header, for a DPoP-bound token.
    pub dpop: Option<String>,
    /// The access token sent, so that a 401 drops this one and not a newer one.
    token: Option<String>,
}

/// Authorizes the Okta client's requests.
pub struct Authorizer {
    scheme: Scheme,
}

enum Scheme {
    ApiToken(String),
    ServiceApp(Box<OAuth>),
}

impl std::fmt::Debug for Authorizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.scheme {
            Scheme::ApiToken(_) => f.write_str("Authorizer(SSWS ..)"),
            Scheme::ServiceApp(oauth) => {
                write!(f, "Authorizer(service app {}, key {})", oauth.client_id, oauth.key_id)
            }
        }
    }
}

impl Authorizer {
    /// Checks the private key now, so that a bad one is named before any request.
    pub fn new(org_url: &str, credentials: Credentials, http: reqwest::Client) -> Result<Authorizer> {
        let scheme = match credentials {
            Credentials::ApiToken(token) => Scheme::ApiToken(token),
            Credentials::ServiceApp(app) => {
                let assertion_key = EncodingKey::from_rsa_pem(app.private_key_pem.as_bytes())
                    .map_err(|e| unusable_key(&e))?;
                // A public key in PEM parses as well, and fails only when it signs.
                jsonwebtoken::crypto::sign(b"probe", &assertion_key, Algorithm::RS256)
                    .map_err(|e| unusable_key(&e))?;
                let (token_url, scope) = (token_url(org_url), app.scopes().join(" "));
                let shared =
                    shared_state(&token_url, &app.client_id, &app.key_id, &scope, &app.private_key_pem);
                Scheme::ServiceApp(Box::new(OAuth {
                    http,
                    token_url,
                    scope,
                    client_id: app.client_id,
                    key_id: app.key_id,
                    assertion_key,
                    shared,
                }))
            }
        };
        Ok(Authorizer { scheme })
    }

    /// The headers of a `method` request to `url`, minting an access token first when none is
    /// cached or it is about to expire.
    pub async fn authorize(&self, method: &str, url: &str) -> Result<Authorization> {
        match &self.scheme {
            Scheme::ApiToken(token) => {
                Ok(Authorization { header: format!("SSWS {token}"), dpop: None, token: None })
            }
            Scheme::ServiceApp(oauth) => oauth.authorize(method, url).await,
        }
    }

    /// After a 401 to `used`: drops its access token. True when a new token may help (OAuth);
    /// an API token stays refused.
    pub async fn discard(&self, used: &Authorization) -> bool {
        let (Scheme::ServiceApp(oauth), Some(used)) = (&self.scheme, &used.token) else { return false };
        let mut state = oauth.shared.state.lock().await;
        if state.token.as_ref().is_some_and(|t| t.value == *used) {
            state.token = None;
        }
        true
    }

    /// For `connection verify`: getting an access token, as a check of its own (OAuth only).
    pub async fn check(&self) -> Option<(String, Result<()>)> {
        let Scheme::ServiceApp(oauth) = &self.scheme else { return None };
        let what = format!(
            "get an access token for service app {} with key {} ({})",
            oauth.client_id, oauth.key_id, oauth.scope
        );
        Some((what, oauth.token().await.map(|_| ())))
    }

    /// The remedy for a refused call that only the scheme explains: a DPoP proof refused (told
    /// in `WWW-Authenticate` only), or a 401 to an access token that was just minted.
    pub fn refusal(&self, status: u16, code: &str, summary: &str, headers: &HeaderMap) -> Option<Error> {
        let challenge = headers.get("www-authenticate").and_then(|v| v.to_str().ok()).unwrap_or_default();
        let error = challenge_param(challenge, "error").unwrap_or_default();
        let dpop = challenge.get(..5).is_some_and(|s| s.eq_ignore_ascii_case("dpop "));
        // Not insufficient_scope (remedied by scope) nor invalid_token (an expired token).
        if dpop && matches!(error, "invalid_dpop_proof" | "use_dpop_nonce" | "invalid_request") {
            let description = challenge_param(challenge, "error_description").unwrap_or_default();
            return Some(Error::Upstream(format!(
                "Okta refused the DPoP proof of a call ({error}: {description}); check that this \
                 server's clock is right, or untick \"Require Demonstrating Proof of Possession \
                 (DPoP) header in token requests\" on the service app's General tab"
            )));
        }
        match (&self.scheme, status) {
            (Scheme::ServiceApp(oauth), 401) => Some(Error::Upstream(format!(
                "Okta refused a new access token of service app {} ({code} {summary}); check that \
                 the app is active and holds an admin role such as Read-Only Administrator",
                oauth.client_id
            ))),
            _ => None,
        }
    }
}

fn unusable_key(cause: &jsonwebtoken::errors::Error) -> Error {
    Error::Upstream(format!(
        "the connection's private key cannot sign ({cause}); it must be the RSA private key in PEM \
         form (BEGIN PRIVATE KEY or BEGIN RSA PRIVATE KEY) whose public key is registered on the \
         Okta service app"
    ))
}

/// The org authorization server's token endpoint; a custom server cannot mint `okta.*` scopes.
pub fn token_url(org_url: &str) -> String {
    format!("{}/oauth2/v1/token", org_url.trim_end_matches('/'))
}

struct OAuth {
    http: reqwest::Client,
    token_url: String,
    client_id: String,
    key_id: String,
    /// Space-separated.
    scope: String,
    assertion_key: EncodingKey,
    shared: Arc<SharedState>,
}

/// What every client of one service app (org, app, key, scopes) in this process shares.
#[derive(Default)]
struct SharedState {
    /// Made on first need: apps without DPoP never pay for an RSA key generation.
    dpop_key: tokio::sync::OnceCell<DpopKey>,
    /// Held across a token exchange, so that concurrent calls wait for one new token.
    state: tokio::sync::Mutex<TokenState>,
}

/// The state clients of the same service app share: a run reuses the token (and DPoP key and
/// nonce) an earlier run of the app got, while it is good, instead of asking Okta's token
/// endpoint (rate-limited like the rest) once a run. A changed key or scope is another app.
fn shared_state(
    token_url: &str,
    client_id: &str,
    key_id: &str,
    scope: &str,
    key_pem: &str,
) -> Arc<SharedState> {
    static SHARED: LazyLock<Mutex<HashMap<String, Arc<SharedState>>>> = LazyLock::new(Mutex::default);
    let key_hash = hex::encode(Sha256::digest(key_pem.as_bytes()));
    let name = format!("{token_url} {client_id} {key_id} {scope} {key_hash}");
    let mut shared = SHARED.lock().unwrap_or_else(PoisonError::into_inner);
    shared.entry(name).or_default().clone()
}

#[derive(Default)]
struct TokenState {
    token: Option<AccessToken>,
    /// The app demands DPoP: learned from a refusal, then sent from the first request.
    dpop: bool,
    /// The last `dpop-nonce` Okta sent (valid for days).
    nonce: Option<String>,
}

#[derive(Clone)]
struct AccessToken {
    value: String,
    /// `token_type` was `DPoP`: calls send `Authorization: DPoP` and a proof.
    bound: bool,
    renew_at: Instant,
}

impl OAuth {
    async fn authorize(&self, method: &str, url: &str) -> Result<Authorization> {
        let token = self.token().await?;
        if !token.bound {
            return Ok(Authorization {
                header: format!("Bearer {}", token.value),
                dpop: None,
                token: Some(token.value),
            });
        }
        let claims = proof_claims(method, &htu(url), now(), &jti(), None, Some(&token.value));
        let proof = self.dpop_key().await?.sign(&claims)?;
        Ok(Authorization {
            header: format!("DPoP {}", token.value),
            dpop: Some(proof),
            token: Some(token.value),
        })
    }

    async fn token(&self) -> Result<AccessToken> {
        let mut state = self.shared.state.lock().await;
        if let Some(token) = state.token.clone().filter(|t| Instant::now() < t.renew_at) {
            return Ok(token);
        }
        let token = self.exchange(&mut state).await?;
        state.token = Some(token.clone());
        Ok(token)
    }

    async fn dpop_key(&self) -> Result<&DpopKey> {
        self.shared
            .dpop_key
            .get_or_try_init(|| async {
                tokio::task::spawn_blocking(DpopKey::generate)
                    .await
                    .map_err(|e| Error::internal("generating the DPoP key", e))?
            })
            .await
    }

    fn assertion(&self) -> Result<String> {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(self.key_id.clone());
        let claims = assertion_claims(&self.client_id, &self.token_url, now(), &jti());
        jsonwebtoken::encode(&header, &claims, &self.assertion_key).map_err(|e| unusable_key(&e))
    }

    /// One client-credentials exchange, through Okta's DPoP refusals.
    async fn exchange(&self, state: &mut TokenState) -> Result<AccessToken> {
        let (mut steps, mut retries) = (0, 0);
        loop {
            steps += 1;
            // A fresh assertion each time: Okta refuses a `jti` it has seen.
            let assertion = self.assertion()?;
            let proof = if state.dpop {
                let claims =
                    proof_claims("POST", &self.token_url, now(), &jti(), state.nonce.as_deref(), None);
                Some(self.dpop_key().await?.sign(&claims)?)
            } else {
                None
            };
            let mut request = self.http.post(&self.token_url).header(ACCEPT, "application/json").form(&[
                ("grant_type", "client_credentials"),
                ("scope", self.scope.as_str()),
                ("client_assertion_type", JWT_BEARER),
                ("client_assertion", assertion.as_str()),
            ]);
            if let Some(proof) = &proof {
                request = request.header("DPoP", proof);
            }
            let response = request.send().await.map_err(|e| {
                Error::Upstream(format!("cannot reach Okta's token endpoint {}: {e}", self.token_url))
            })?;
            let status = response.status().as_u16();
            let headers = response.headers().clone();
            let body = response
                .text()
                .await
                .map_err(|e| Error::Upstream(format!("reading Okta's token answer: {e}")))?;
            if status == 200 {
                return granted(&body, proof.is_some());
            }
            if matches!(status, 429 | 500 | 502 | 503 | 504) && retries < MAX_RETRIES {
                retries += 1;
                steps -= 1;
                super::okta::wait_to_retry(status, &headers, retries, "Okta's token endpoint").await;
                continue;
            }
            let (error, description) = oauth_error(&body);
            match error.as_str() {
                "use_dpop_nonce" if steps < MAX_EXCHANGE_STEPS => {
                    let nonce = headers.get("dpop-nonce").and_then(|v| v.to_str().ok()).ok_or_else(|| {
                        Error::Upstream(
                            "Okta asked for a DPoP nonce (use_dpop_nonce) without sending a dpop-nonce header"
                                .into(),
                        )
                    })?;
                    tracing::debug!("Okta asked for a DPoP nonce; retrying the token request with it");
                    state.dpop = true;
                    state.nonce = Some(nonce.to_string());
                }
                "invalid_dpop_proof" if proof.is_none() && steps < MAX_EXCHANGE_STEPS => {
                    tracing::debug!(
                        "the Okta service app requires DPoP; retrying the token request with a proof"
                    );
                    state.dpop = true;
                }
                _ => return Err(token_refusal(status, &error, &description, &self.app())),
            }
        }
    }

    fn app(&self) -> AppNames<'_> {
        AppNames {
            client_id: &self.client_id,
            key_id: &self.key_id,
            token_url: &self.token_url,
            scope: &self.scope,
        }
    }
}

/// A 200 from the token endpoint.
fn granted(body: &str, sent_proof: bool) -> Result<AccessToken> {
    let answer: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    let Some(value) = answer.get("access_token").and_then(Value::as_str).filter(|t| !t.is_empty()) else {
        return Err(Error::Upstream("Okta's token endpoint answered 200 without an access_token".into()));
    };
    let token_type = answer.get("token_type").and_then(Value::as_str).unwrap_or("Bearer");
    let bound = token_type.eq_ignore_ascii_case("DPoP");
    if !bound && !token_type.eq_ignore_ascii_case("Bearer") {
        return Err(Error::Upstream(format!("Okta issued a token of unknown type '{token_type}'")));
    }
    if bound && !sent_proof {
        return Err(Error::Upstream("Okta bound the access token to a DPoP key it was not shown".into()));
    }
    let lifetime = answer
        .get("expires_in")
        .and_then(Value::as_u64)
        .map_or(Duration::from_secs(3600), Duration::from_secs);
    let lifetime = lifetime.min(MAX_LIFETIME);
    let renew_at = Instant::now() + lifetime.saturating_sub(EXPIRY_MARGIN.min(lifetime / 2));
    tracing::debug!(dpop = bound, expires_in = lifetime.as_secs(), "got an Okta access token");
    Ok(AccessToken { value: value.to_string(), bound, renew_at })
}

/// A token-endpoint error body: `error`, `error_description`.
fn oauth_error(body: &str) -> (String, String) {
    let parsed: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    let field = |k: &str| parsed.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
    (field("error"), field("error_description"))
}

/// What a token remedy names.
struct AppNames<'a> {
    client_id: &'a str,
    key_id: &'a str,
    token_url: &'a str,
    scope: &'a str,
}

/// Why the token endpoint refused, in words that tell the admin what to do (§1.2's table).
fn token_refusal(status: u16, error: &str, description: &str, app: &AppNames<'_>) -> Error {
    let AppNames { client_id, key_id, token_url, scope } = app;
    let said = match (error, description) {
        ("", "") => format!("HTTP {status}"),
        (error, "") => error.to_string(),
        (error, description) => format!("{error}: {description}"),
    };
    let has = |word: &str| description.contains(word);
    let detail = match error {
        "invalid_client" if has("private_key_jwt") => format!(
            "the Okta app {client_id} still authenticates with a client secret ({said}); on its General \
             tab set Client authentication to \"Public key / Private key\" and add the public key of \
             key id '{key_id}'"
        ),
        "invalid_client" if has("issuer") => format!(
            "Okta knows no service app with client_id '{client_id}' ({said}); copy the Client ID from \
             the app's General tab"
        ),
        "invalid_client" if has("signature") || has("kid") => format!(
            "the key or key id does not match the service app's public key ({said}); in Okta open app \
             {client_id}, General → Public Keys, and check that key id '{key_id}' is listed there with \
             the public half of the connection's private key"
        ),
        "invalid_client" if has("expir") || has("issued before") => format!(
            "Okta found the client assertion's times wrong ({said}); check that this server's clock \
             is right (NTP)"
        ),
        "invalid_client" if has("audience") => format!(
            "Okta expects the token request at another URL ({said}); org_url must be the org's own \
             URL, whose token endpoint is {token_url}"
        ),
        "invalid_client" => format!(
            "Okta refused the service app's credentials ({said}); check client_id '{client_id}', \
             key_id '{key_id}' and the private key"
        ),
        "invalid_scope" | "consent_required" => format!(
            "the Okta service app {client_id} is not granted the scopes scimd needs ({said}); a super \
             admin must grant {scope} on the app's Okta API Scopes tab"
        ),
        "invalid_dpop_proof" | "use_dpop_nonce" => format!(
            "Okta refused the DPoP proof of the token request ({said}); check that this server's \
             clock is right, or untick \"Require Demonstrating Proof of Possession (DPoP) header in \
             token requests\" on the service app's General tab"
        ),
        "unauthorized_client" | "unsupported_grant_type" => format!(
            "the Okta app {client_id} may not use the Client Credentials grant ({said}); use an API \
             Services app"
        ),
        _ if status == 404 => {
            format!("there is no Okta token endpoint at {token_url} ({said}); check org_url")
        }
        _ => format!("Okta's token endpoint answered {status} ({said})"),
    };
    Error::Upstream(detail)
}

/// A parameter of a `WWW-Authenticate` challenge: `name="value"`.
fn challenge_param<'a>(challenge: &'a str, name: &str) -> Option<&'a str> {
    let mut rest = challenge;
    while let Some(at) = rest.find(name) {
        let before = rest.get(..at).and_then(|b| b.chars().last());
        let after = rest.get(at + name.len()..)?;
        if matches!(before, None | Some(' ' | ',')) {
            if let Some(value) = after.strip_prefix("=\"") {
                return value.split_once('"').map(|(value, _)| value);
            }
        }
        rest = after;
    }
    None
}

/// The client assertion's claims (§1.2): issued by and about the app, for the token URL.
pub fn assertion_claims(client_id: &str, token_url: &str, now: i64, jti: &str) -> Value {
    json!({
        "iss": client_id,
        "sub": client_id,
        "aud": token_url,
        "iat": now,
        "exp": now + ASSERTION_LIFETIME_SECS,
        "jti": jti,
    })
}

/// A DPoP proof's claims (RFC 9449 §4.2): the nonce on token requests once Okta asked for one,
/// `ath` on calls with a bound token.
pub fn proof_claims(
    htm: &str,
    htu: &str,
    now: i64,
    jti: &str,
    nonce: Option<&str>,
    access_token: Option<&str>,
) -> Value {
    let mut claims = serde_json::Map::new();
    claims.insert("htm".into(), json!(htm));
    claims.insert("htu".into(), json!(htu));
    claims.insert("iat".into(), json!(now));
    claims.insert("jti".into(), json!(jti));
    if let Some(nonce) = nonce {
        claims.insert("nonce".into(), json!(nonce));
    }
    if let Some(token) = access_token {
        claims.insert("ath".into(), json!(ath(token)));
    }
    Value::Object(claims)
}

/// `ath`: base64url(SHA-256(access token)), unpadded.
pub fn ath(access_token: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(access_token.as_bytes()))
}

/// `htu`: the URL without its query and fragment.
pub fn htu(url: &str) -> String {
    url.split(['?', '#']).next().unwrap_or(url).to_string()
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

fn jti() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// The client's own DPoP key pair; never the client-assertion key.
struct DpopKey {
    pair: KeyPair,
    /// The proofs' JOSE header, base64url: `typ`, `alg` and the public key as a JWK.
    header: String,
}

impl DpopKey {
    fn generate() -> Result<DpopKey> {
        let pair = KeyPair::generate(KeySize::Rsa2048)
            .map_err(|e| Error::internal("generating a DPoP key pair", e))?;
        let public = pair.public_key();
        let header = json!({
            "typ": "dpop+jwt",
            "alg": "RS256",
            "jwk": {
                "kty": "RSA",
                "n": URL_SAFE_NO_PAD.encode(public.modulus().big_endian_without_leading_zero()),
                "e": URL_SAFE_NO_PAD.encode(public.exponent().big_endian_without_leading_zero()),
            }
        });
        Ok(DpopKey { header: URL_SAFE_NO_PAD.encode(header.to_string()), pair })
    }

    /// A compact JWS of `claims`, RS256.
    fn sign(&self, claims: &Value) -> Result<String> {
        let message = format!("{}.{}", self.header, URL_SAFE_NO_PAD.encode(claims.to_string()));
        let mut signature = vec![0; self.pair.public_modulus_len()];
        self.pair
            .sign(&RSA_PKCS1_SHA256, &SystemRandom::new(), message.as_bytes(), &mut signature)
            .map_err(|e| Error::internal("signing a DPoP proof", e))?;
        Ok(format!("{message}.{}", URL_SAFE_NO_PAD.encode(signature)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::jwk::Jwk;
    use jsonwebtoken::{DecodingKey, Validation};

    const TOKEN_URL: &str = "https://acme.okta.com/oauth2/v1/token";

    #[test]
    fn the_client_assertion_names_the_app_and_the_full_token_url_for_five_minutes() {
        let claims = assertion_claims("0oa1", TOKEN_URL, 1_772_000_000, "j-1");
        assert_eq!(
            claims,
            json!({"iss": "0oa1", "sub": "0oa1", "aud": TOKEN_URL, "iat": 1_772_000_000,
                   "exp": 1_772_000_300, "jti": "j-1"})
        );
        assert_eq!(token_url("https://acme.okta.com/"), TOKEN_URL, "never the custom server's");
    }

    #[test]
    fn proofs_carry_the_nonce_on_token_requests_and_ath_on_calls() {
        let token = proof_claims("POST", TOKEN_URL, 7, "j", Some("n-1"), None);
        assert_eq!(token, json!({"htm": "POST", "htu": TOKEN_URL, "iat": 7, "jti": "j", "nonce": "n-1"}));
        let call = proof_claims("GET", "https://acme.okta.com/api/v1/users", 7, "k", None, Some("tok"));
        assert_eq!(call["ath"], ath("tok"));
        assert!(call.get("nonce").is_none());
        // RFC 9449 §7.1's example: the hash of this access token.
        assert_eq!(
            ath("Kz~8mXK1EalYznwH-LC-1fBAo.4Ljp~zsPE_NeO.gxU"),
            "fUHyO2r2Z3DZ53EsNrWBb0xWXoaNy59IiKCAqksmQEo"
        );
        assert_eq!(
            htu("https://acme.okta.com/api/v1/users?after=00u1&limit=200#x"),
            "https://acme.okta.com/api/v1/users"
        );
    }

    #[test]
    fn a_proof_is_a_dpop_jwt_verifiable_with_its_own_public_jwk() {
        let key = DpopKey::generate().unwrap();
        let claims = proof_claims("GET", "https://a/x", 7, "j", None, Some("tok"));
        let proof = key.sign(&claims).unwrap();
        let header_json: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(proof.split('.').next().unwrap()).unwrap())
                .unwrap();
        assert_eq!(header_json["typ"], "dpop+jwt");
        assert_eq!(header_json["alg"], "RS256");
        let jwk_members: Vec<&String> = header_json["jwk"].as_object().unwrap().keys().collect();
        assert_eq!(jwk_members, ["kty", "n", "e"], "the public key only");
        let header = jsonwebtoken::decode_header(&proof).unwrap();
        let jwk: &Jwk = header.jwk.as_ref().unwrap();
        let mut validation = Validation::new(Algorithm::RS256);
        validation.validate_exp = false;
        validation.required_spec_claims.clear();
        let decoded =
            jsonwebtoken::decode::<Value>(&proof, &DecodingKey::from_jwk(jwk).unwrap(), &validation).unwrap();
        assert_eq!(decoded.claims, claims);
        let other = DpopKey::generate().unwrap();
        assert_ne!(other.header, key.header, "a new key pair each time");
    }

    #[test]
    fn a_key_that_cannot_sign_is_refused_before_any_request() {
        use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der, PublicKeyX509Der};
        use base64::engine::general_purpose::STANDARD;
        let pem = |label: &str, der: &[u8]| {
            format!("-----BEGIN {label}-----\n{}\n-----END {label}-----\n", STANDARD.encode(der))
        };
        let pair = KeyPair::generate(KeySize::Rsa2048).unwrap();
        let private: Pkcs8V1Der<'static> = pair.as_der().unwrap();
        let public: PublicKeyX509Der<'static> = pair.public_key().as_der().unwrap();
        let app = |private_key_pem: String| {
            Credentials::ServiceApp(ServiceApp {
                client_id: "0oa1".into(),
                key_id: "k1".into(),
                private_key_pem,
                read_apps: false,
            })
        };
        let open =
            |credentials| Authorizer::new("https://acme.okta.com", credentials, reqwest::Client::new());
        assert!(open(app(pem("PRIVATE KEY", private.as_ref()))).is_ok());
        for wrong in [pem("PUBLIC KEY", public.as_ref()), "00aBcD-an-api-token".to_string()] {
            let detail = open(app(wrong)).unwrap_err().to_string();
            assert!(detail.contains("private key cannot sign") && detail.contains("PEM"), "{detail}");
        }
    }

    #[test]
    fn token_refusals_name_the_remedy() {
        let app = AppNames {
            client_id: "0oa1",
            key_id: "k1",
            token_url: TOKEN_URL,
            scope: "okta.users.read okta.groups.read",
        };
        let cases = [
            (401, "invalid_client", "The client_assertion signature is invalid.", "does not match the service app's public key"),
            (401, "invalid_client", "The client_assertion JWT kid is invalid.", "key id 'k1'"),
            (401, "invalid_client", "The issuer claim for client_assertion is not a valid client_id.", "Client ID"),
            (401, "invalid_client", "Client Credentials requests to the Org Authorization Server must use the private_key_jwt token_endpoint_auth_method.", "Public key / Private key"),
            (401, "invalid_client", "The client_assertion token is expired.", "clock"),
            (401, "invalid_client", "The client_assertion token must be issued before the current time.", "clock"),
            (401, "invalid_client", "The audience claim for client_assertion must be the endpoint invoked for the request.", TOKEN_URL),
            (400, "invalid_scope", "The following scopes are not allowed for this request: [okta.groups.read]", "Okta API Scopes tab"),
            (400, "consent_required", "You are not allowed any of the requested scopes.", "grant okta.users.read okta.groups.read"),
            (400, "invalid_dpop_proof", "'iat' claim in the DPoP proof JWT is invalid.", "untick"),
            (404, "", "", "check org_url"),
            (500, "server_error", "", "answered 500"),
        ];
        for (status, error, description, expected) in cases {
            let detail = token_refusal(status, error, description, &app).to_string();
            assert!(detail.contains(expected), "{error} {description}: {detail}");
            if !description.is_empty() {
                assert!(detail.contains(description), "Okta's words are kept: {detail}");
            }
        }
    }

    #[test]
    fn a_refused_dpop_proof_is_explained_and_a_missing_scope_left_to_the_scope_remedy() {
        let auth =
            Authorizer::new("https://a", Credentials::ApiToken("t".into()), reqwest::Client::new()).unwrap();
        let refused = |challenge: &str| {
            let mut headers = HeaderMap::new();
            headers.insert("www-authenticate", challenge.parse().unwrap());
            auth.refusal(400, "", "", &headers).map(|e| e.to_string())
        };
        let proof = refused("DPoP algs=\"RS256\", error=\"invalid_dpop_proof\", error_description=\"'htu' claim in the DPoP proof JWT is invalid.\"");
        let proof = proof.unwrap();
        assert!(proof.contains("'htu' claim") && proof.contains("clock"), "{proof}");
        assert_eq!(
            refused("DPoP realm=\"r\", scope=\"okta.groups.read\", error=\"insufficient_scope\""),
            None
        );
        assert_eq!(refused("Bearer error=\"invalid_token\""), None);
    }

    #[test]
    fn challenge_parameters_are_read_by_name() {
        let challenge = "DPoP algs=\"RS256 ES256\", realm=\"r\", scope=\"okta.groups.read\", \
                         error=\"invalid_dpop_proof\", error_description=\"'htu' claim is invalid.\"";
        assert_eq!(challenge_param(challenge, "error"), Some("invalid_dpop_proof"));
        assert_eq!(challenge_param(challenge, "error_description"), Some("'htu' claim is invalid."));
        assert_eq!(challenge_param(challenge, "scope"), Some("okta.groups.read"));
        assert_eq!(challenge_param(challenge, "nonce"), None);
    }
}
