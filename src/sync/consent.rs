//! Delegated consent of Entra connections (`graph-api.md` §1.4). An admin asks scimd for an
//! authorize link ([`start`]: a one-time `state` and a PKCE verifier, kept ten minutes), signs in
//! to Microsoft and consents; Microsoft sends the browser back to scimd's one callback
//! ([`CALLBACK_PATH`]) with a code, which [`finish`] redeems for the refresh token scimd keeps,
//! sealed. The importer then refreshes with it, keeping each new one (see `graph::TokenKeeper`).
//!
//! The callback carries no admin token (the browser comes from Microsoft): the `state` alone
//! authenticates it, once. A callback that fails changes nothing of the connection.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use rand::Rng;

use super::engine;
use super::graph::{self, CodeGrant};
use crate::encryption::SecretKey;
use crate::error::{Error, Result};
use crate::store::audit::Actor;
use crate::store::connections::ConnectionRecord;
use crate::store::consents::{self, NewRequest};
use crate::store::{now_millis, Store};

/// The one redirect URI of scimd, under its public URL: register `{public_url}` + this on the app
/// (App registrations → the app → Authentication → Web → Redirect URIs).
pub const CALLBACK_PATH: &str = "/admin/v1/entra/callback";

/// The redirect URI under `base_url` (the server's public URL).
pub fn redirect_uri(base_url: &str) -> String {
    format!("{}{CALLBACK_PATH}", base_url.trim_end_matches('/'))
}

/// `bytes` random bytes as unpadded base64url.
fn random_text(bytes: usize) -> String {
    let mut buffer = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut buffer);
    URL_SAFE_NO_PAD.encode(buffer)
}

/// An authorize link handed out.
#[derive(Debug, Clone)]
pub struct Authorization {
    /// Where the admin signs in; good once, until `expires_at`.
    pub url: String,
    /// Where Microsoft sends the browser back: it must be registered on the app.
    pub redirect_uri: String,
    /// `auth` or `backup_auth`.
    pub place: &'static str,
    pub client_id: String,
    pub expires_at: i64,
}

fn no_key() -> Error {
    Error::Forbidden(
        "this server has no secret key, so it cannot keep the refresh token of a delegated sign-in: the operator \
         must set SCIMD_SECRET_KEY (make one with 'scimd secret-key generate') and restart"
            .into(),
    )
}

/// The delegated credential a consent is for: the one `credential` names (`auth`,
/// `backup_auth`), or else the primary when it is delegated, or else the backup.
fn pick(connection: &ConnectionRecord, credential: Option<&str>) -> Result<(&'static str, String)> {
    let name = &connection.config.name;
    if connection.config.entra.is_none() {
        return Err(Error::InvalidValue(format!(
            "connection '{name}' is not an Entra connection; only Entra connections with \"method\": \"delegated\" \
             are connected by signing in"
        )));
    }
    let delegated = connection.config.delegated();
    let found = match credential {
        Some(wanted @ ("auth" | "backup_auth")) => delegated.iter().find(|(place, _)| *place == wanted),
        Some(other) => {
            return Err(Error::InvalidValue(format!("credential '{other}' must be 'auth' or 'backup_auth'")))
        }
        None => delegated.first(),
    };
    match (found, credential) {
        (Some((place, auth)), _) => Ok((place, auth.client_id().to_string())),
        (None, Some(wanted)) => Err(Error::InvalidValue(format!(
            "entra.{wanted} of connection '{name}' does not use delegated sign-in (\"method\": \"delegated\"), so \
             there is nothing to consent to"
        ))),
        (None, None) => Err(Error::InvalidValue(format!(
            "connection '{name}' has no delegated credential: neither entra.auth nor entra.backup_auth uses \
             \"method\": \"delegated\", so there is nothing to consent to"
        ))),
    }
}

/// Starts a consent for `connection` as `actor`: a one-time state and PKCE verifier are kept for
/// ten minutes, and the authorize link returned. `base_url` is the server's public URL.
pub async fn start(
    store: &Store,
    key: Option<&SecretKey>,
    actor: Actor,
    connection: &ConnectionRecord,
    credential: Option<&str>,
    base_url: &str,
) -> Result<Authorization> {
    let (place, client_id) = pick(connection, credential)?;
    let key = key.cloned().ok_or_else(no_key)?;
    let entra = connection
        .config
        .entra
        .as_ref()
        .ok_or_else(|| Error::Internal("an Entra connection without entra settings".into()))?;
    let state = random_text(32);
    let code_verifier = random_text(48);
    let redirect_uri = redirect_uri(base_url);
    let url = graph::authorize_url(
        entra,
        &client_id,
        &redirect_uri,
        &state,
        &graph::pkce_challenge(&code_verifier),
    );
    let new = NewRequest {
        connection_id: connection.id.clone(),
        place: place.to_string(),
        client_id: client_id.clone(),
        redirect_uri: redirect_uri.clone(),
        state_hash: crate::token::hash(&state),
        code_verifier,
    };
    let expires_at = store.write(move |conn, _| consents::create_request(conn, &key, &actor, new)).await?;
    tracing::info!(connection = %connection.id, place, "handed out an Entra authorize link");
    Ok(Authorization { url, redirect_uri, place, client_id, expires_at })
}

/// What Microsoft sends back to the callback: `code` and `state`, or `error` and
/// `error_description` (and `state`).
#[derive(Debug, Clone, Default)]
pub struct Callback {
    pub code: Option<String>,
    pub state: Option<String>,
    pub error: Option<String>,
    pub error_description: Option<String>,
}

/// A completed consent.
#[derive(Debug, Clone)]
pub struct Connected {
    pub connection: ConnectionRecord,
    /// `auth` or `backup_auth`.
    pub place: String,
    pub client_id: String,
}

/// Why Microsoft sent the admin back without a code, and what to do.
fn refused_by_microsoft(error: &str, description: Option<&str>, about: &str) -> Error {
    let said = description.and_then(|d| d.lines().next()).map(str::trim).filter(|d| !d.is_empty());
    let said = said.map_or_else(|| error.to_string(), |d| format!("{error}: {d}"));
    let remedy = match error {
        "access_denied" => {
            "the sign-in was declined or cancelled; ask for a new authorize link and accept the permissions"
        }
        "consent_required" | "interaction_required" => {
            "the app's delegated permissions need an admin's consent: sign in as an admin who may grant it, or \
             click \"Grant admin consent\" under App registrations → the app → API permissions, then ask for a \
             new authorize link"
        }
        "temporarily_unavailable" | "server_error" => "Microsoft had a problem; ask for a new authorize link and try again",
        _ => {
            "check the app registration (its redirect URI, its delegated permissions User.Read.All and \
             GroupMember.Read.All), then ask for a new authorize link"
        }
    };
    Error::Forbidden(format!("Microsoft did not connect {about} ({said}); {remedy}; nothing was changed"))
}

/// Completes a consent from Microsoft's callback: the state is taken (good once), the code
/// redeemed with the link's verifier, and the refresh token sealed and kept; the credential is
/// connected again. Any failure leaves the connection as it was.
pub async fn finish(store: &Store, key: Option<&SecretKey>, callback: Callback) -> Result<Connected> {
    let present = |value: Option<String>| value.filter(|v| !v.trim().is_empty());
    let (error, description) = (present(callback.error), present(callback.error_description));
    let Some(state) = present(callback.state) else {
        return Err(match error {
            Some(error) => refused_by_microsoft(&error, description.as_deref(), "a connection"),
            None => Error::InvalidValue(
                "this address is where Microsoft sends an admin back after signing in, with a code and the \
                 state of an authorize link scimd handed out; it was called without a state: ask for an \
                 authorize link (GET /admin/v1/connections/{id}/authorize) and open that"
                    .into(),
            ),
        });
    };
    let key = key.cloned().ok_or_else(no_key)?;
    let state_hash = crate::token::hash(&state);
    let opener = key.clone();
    let request = store
        .write(move |conn, _| consents::take_request(conn, &opener, &state_hash))
        .await?
        .ok_or_else(|| {
            Error::InvalidValue(
                "this sign-in answer matches no sign-in under way: it was used already, it expired, or this \
                 scimd did not start it; ask for a new authorize link (GET /admin/v1/connections/{id}/authorize) \
                 and sign in again; nothing was changed"
                    .into(),
            )
        })?;
    if request.expires_at < now_millis() {
        return Err(Error::InvalidValue(format!(
            "this authorize link expired: the sign-in must be completed within {} minutes of asking for the \
             link; ask for a new one (GET /admin/v1/connections/{}/authorize) and sign in again; nothing was \
             changed",
            consents::REQUEST_LIFETIME_MS / 60_000,
            request.connection_id
        )));
    }
    let connection = store.get_connection(request.connection_id.clone()).await.map_err(|e| match e {
        Error::NotFound(_) => Error::NotFound("the connection this sign-in was for has been deleted".into()),
        other => other,
    })?;
    let about = format!("entra.{} of connection '{}'", request.place, connection.config.name);
    if let Some(error) = error {
        return Err(refused_by_microsoft(&error, description.as_deref(), &about));
    }
    let Some(code) = present(callback.code) else {
        return Err(Error::InvalidValue(format!(
            "Microsoft's answer carries no code, so {about} cannot be connected; ask for a new authorize link \
             and sign in again; nothing was changed"
        )));
    };
    let place: &'static str = if request.place == "auth" { "auth" } else { "backup_auth" };
    let still = connection
        .config
        .delegated()
        .iter()
        .any(|(at, auth)| *at == place && auth.client_id() == request.client_id);
    if !still {
        return Err(Error::Conflict(format!(
            "connection '{}' changed while the admin signed in: entra.{place} no longer uses delegated sign-in of \
             app {}; ask for a new authorize link; nothing was changed",
            connection.config.name, request.client_id
        )));
    }
    let entra = connection.config.entra.as_ref().ok_or_else(|| {
        Error::Conflict(format!("connection '{}' is no longer an Entra connection", connection.config.name))
    })?;
    let secret = engine::reveal(
        store,
        Some(&key),
        &connection,
        format!("entra.{place}.client_secret"),
        "client secret",
    )
    .await?;
    let grant =
        CodeGrant { code: &code, redirect_uri: &request.redirect_uri, code_verifier: &request.code_verifier };
    let refresh_token = graph::redeem_code(entra, place, &secret, grant).await?;
    let client_id = request.client_id.clone();
    let connection =
        store.write(move |conn, _| consents::complete(conn, &key, &request, &refresh_token)).await?;
    tracing::info!(connection = %connection.id, place, "an admin connected a delegated Entra credential");
    Ok(Connected { connection, place: place.to_string(), client_id })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_and_verifiers_are_long_random_and_url_safe() {
        let (a, b) = (random_text(48), random_text(48));
        assert_ne!(a, b);
        assert_eq!(a.len(), 64, "RFC 7636 wants 43 to 128 characters");
        assert!(a.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'), "{a}");
        assert_eq!(random_text(32).len(), 43);
    }

    #[test]
    fn the_redirect_uri_is_one_fixed_path_under_the_public_url() {
        assert_eq!(redirect_uri("https://scimd.example/"), "https://scimd.example/admin/v1/entra/callback");
        assert_eq!(redirect_uri("http://127.0.0.1:8080"), "http://127.0.0.1:8080/admin/v1/entra/callback");
    }

    #[test]
    fn microsofts_refusals_name_what_to_do() {
        let declined = refused_by_microsoft(
            "access_denied",
            Some("AADSTS65004: User declined to consent to access the app.\r\nTrace ID: x"),
            "entra.auth of connection 'entra-main'",
        )
        .to_string();
        assert!(declined.contains("AADSTS65004: User declined"), "{declined}");
        assert!(!declined.contains("Trace ID"), "{declined}");
        assert!(declined.contains("declined or cancelled") && declined.contains("nothing was changed"));
        let consent = refused_by_microsoft("consent_required", None, "x").to_string();
        assert!(consent.contains("Grant admin consent"), "{consent}");
    }
}
