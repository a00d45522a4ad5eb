//! SAML 2.0 service provider logic: IdP settings, AuthnRequests, strict Response verification,
//! `return_to` checks and signed cookies. Pure: the clock and randomness are passed in; HTTP
//! lives in `http/saml.rs`, storage in `store/saml.rs`.
//!
//! XML signatures are verified by samael's xmlsec binding, and only with the configured
//! certificate: the key is inserted into the signature context, so a key the Response carries
//! in its own `KeyInfo` is never used, and a certificate it carries must be the configured one.
//! samael verifies nothing when it is given no certificate (it fails open), so a configuration
//! without one is refused here, and verification never runs without it. Only the content the
//! signature covers is used (samael reduces the document to it), which defeats signature
//! wrapping; everything SAML asks of that content is checked here, against `now`.

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use chrono::{DateTime, Duration, Utc};
use samael::crypto::{AllowedSignatureAlgorithm, CertificateDer, Crypto, CryptoProvider, ReduceMode};
use samael::schema::{Assertion, Response};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The most the IdP's clock may differ from ours.
pub const MAX_CLOCK_SKEW_SECS: i64 = 180;
/// The default assertion attribute matched to `userName`.
pub const NAME_ID: &str = "NameID";

const SUCCESS: &str = "urn:oasis:names:tc:SAML:2.0:status:Success";
const BEARER: &str = "urn:oasis:names:tc:SAML:2.0:cm:bearer";
const HTTP_POST: &str = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST";
const HTTP_REDIRECT: &str = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect";
/// RSA and ECDSA with SHA-256 or stronger, for the signature and every digest.
const ALLOWED_ALGORITHMS: &[AllowedSignatureAlgorithm] = &[
    AllowedSignatureAlgorithm::RsaSha256,
    AllowedSignatureAlgorithm::RsaSha384,
    AllowedSignatureAlgorithm::RsaSha512,
    AllowedSignatureAlgorithm::EcdsaSha256,
    AllowedSignatureAlgorithm::EcdsaSha384,
    AllowedSignatureAlgorithm::EcdsaSha512,
];

/// The service provider of one directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpUrls {
    /// The entity id, which is also the metadata URL.
    pub entity_id: String,
    pub acs_url: String,
    pub login_url: String,
    pub logout_url: String,
}

impl SpUrls {
    /// The SP of directory `slug` under the public base URL (no trailing slash).
    pub fn of(base_url: &str, slug: &str) -> SpUrls {
        let base = format!("{}/saml/{slug}", base_url.trim_end_matches('/'));
        SpUrls {
            entity_id: format!("{base}/metadata"),
            acs_url: format!("{base}/acs"),
            login_url: format!("{base}/login"),
            logout_url: format!("{base}/logout"),
        }
    }

    /// The SP metadata the IdP administrator imports.
    pub fn metadata_xml(&self) -> String {
        format!(
            r#"<?xml version="1.0" encoding="UTF-8"?>
<md:EntityDescriptor xmlns:md="urn:oasis:names:tc:SAML:2.0:metadata" entityID="{entity}">
  <md:SPSSODescriptor AuthnRequestsSigned="false" WantAssertionsSigned="true" protocolSupportEnumeration="urn:oasis:names:tc:SAML:2.0:protocol">
    <md:NameIDFormat>urn:oasis:names:tc:SAML:1.1:nameid-format:unspecified</md:NameIDFormat>
    <md:AssertionConsumerService Binding="{HTTP_POST}" Location="{acs}" index="0" isDefault="true"/>
  </md:SPSSODescriptor>
</md:EntityDescriptor>
"#,
            entity = xml_escape(&self.entity_id),
            acs = xml_escape(&self.acs_url),
        )
    }
}

/// How a directory trusts its IdP, as stored and as the admin API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdpSettings {
    pub sso_url: String,
    pub certificate_pem: String,
    pub idp_entity_id: String,
    pub user_attribute: String,
    pub allow_idp_initiated: bool,
}

impl IdpSettings {
    /// Checks settings given by an administrator: an absolute SSO URL, an entity id, an
    /// attribute name and a parseable X.509 signing certificate (without one, nothing could be
    /// verified: refused, never treated as "accept unsigned").
    pub fn validate(&self) -> Result<()> {
        match url::Url::parse(&self.sso_url) {
            Ok(url) if matches!(url.scheme(), "https" | "http") => {}
            _ => {
                return Err(Error::InvalidValue(format!(
                    "sso_url '{}' must be the IdP's absolute http(s) sign-in URL",
                    self.sso_url
                )))
            }
        }
        if self.idp_entity_id.trim().is_empty() {
            return Err(Error::InvalidValue(
                "idp_entity_id is required: the Issuer the IdP puts in its Responses".into(),
            ));
        }
        if self.user_attribute.trim().is_empty() {
            return Err(Error::InvalidValue(
                "user_attribute must name an assertion attribute, or NameID".into(),
            ));
        }
        self.certificate_der().map(|_| ())
    }

    /// The signing certificate, DER.
    pub fn certificate_der(&self) -> Result<Vec<u8>> {
        if self.certificate_pem.trim().is_empty() {
            return Err(Error::InvalidValue(
                "a signing certificate is required (certificate_pem): without it no Response could be verified".into(),
            ));
        }
        let certificate = openssl::x509::X509::from_pem(self.certificate_pem.as_bytes()).map_err(|_| {
            Error::InvalidValue(
                "certificate_pem is not a PEM X.509 certificate ('-----BEGIN CERTIFICATE-----...')".into(),
            )
        })?;
        certificate.to_der().map_err(|e| Error::internal("encoding the IdP certificate", e))
    }

    /// Settings from IdP metadata (an `EntityDescriptor`): entity id, HTTP-Redirect SSO URL and
    /// signing certificate. Metadata without a signing certificate is refused.
    pub fn from_metadata(
        xml: &str,
        user_attribute: String,
        allow_idp_initiated: bool,
    ) -> Result<IdpSettings> {
        let descriptor: samael::metadata::EntityDescriptor = xml
            .parse()
            .map_err(|e| Error::InvalidValue(format!("metadata_xml is not SAML metadata: {e}")))?;
        let idp_entity_id = descriptor.entity_id.clone().unwrap_or_default();
        let sp = samael::service_provider::ServiceProvider { idp_metadata: descriptor, ..Default::default() };
        let sso_url = sp.sso_binding_location(HTTP_REDIRECT).ok_or_else(|| {
            Error::InvalidValue(
                "metadata_xml has no SingleSignOnService with the HTTP-Redirect binding".into(),
            )
        })?;
        let certificates = sp
            .idp_signing_certs()
            .map_err(|e| Error::InvalidValue(format!("metadata_xml has an unreadable certificate: {e}")))?
            .unwrap_or_default();
        let Some(certificate) = certificates.first() else {
            return Err(Error::InvalidValue(
                "metadata_xml has no signing certificate: scimd would have nothing to verify Responses with"
                    .into(),
            ));
        };
        let settings = IdpSettings {
            sso_url,
            certificate_pem: pem_of(certificate.der_data()),
            idp_entity_id,
            user_attribute,
            allow_idp_initiated,
        };
        settings.validate()?;
        Ok(settings)
    }
}

fn pem_of(der: &[u8]) -> String {
    let body = STANDARD.encode(der);
    let mut pem = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in body.as_bytes().chunks(64) {
        pem.push_str(&String::from_utf8_lossy(line));
        pem.push('\n');
    }
    pem.push_str("-----END CERTIFICATE-----\n");
    pem
}

fn xml_escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// The IdP URL a browser is sent to: an unsigned AuthnRequest in the HTTP-Redirect binding.
/// `request_id` must be an XML NCName (start with a letter or `_`).
pub fn authn_request_url(
    sp: &SpUrls,
    idp: &IdpSettings,
    request_id: &str,
    relay_state: &str,
    now: DateTime<Utc>,
) -> Result<String> {
    let request = samael::schema::AuthnRequest {
        id: request_id.to_string(),
        version: "2.0".into(),
        issue_instant: now,
        destination: Some(idp.sso_url.clone()),
        assertion_consumer_service_url: Some(sp.acs_url.clone()),
        protocol_binding: Some(HTTP_POST.into()),
        issuer: Some(samael::schema::Issuer { value: Some(sp.entity_id.clone()), ..Default::default() }),
        ..Default::default()
    };
    match request.redirect(relay_state) {
        Ok(Some(url)) => Ok(url.to_string()),
        Ok(None) => Err(Error::InvalidValue("the IdP has no sign-in URL".into())),
        Err(e) => Err(Error::internal("building the AuthnRequest", e)),
    }
}

/// Why a sign-in was refused, in words for the person who tried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    Malformed,
    WeakAlgorithm,
    ForeignCertificate,
    BadSignature,
    Issuer,
    Destination,
    Recipient,
    Audience,
    Expired,
    NotYetValid,
    Status,
    /// An answer to a sign-in this browser did not start (or one already finished).
    UnknownRequest,
    /// IdP-initiated sign-in while the directory does not allow it.
    Unsolicited,
    NoSubject,
    Replayed,
    UnknownUser,
    InactiveUser,
}

impl Refusal {
    pub fn message(&self) -> &'static str {
        match self {
            Refusal::Malformed => "The sign-in answer from your identity provider could not be read.",
            Refusal::WeakAlgorithm => {
                "Your identity provider signed the sign-in with SHA-1, which is no longer safe; it must use SHA-256 or stronger."
            }
            Refusal::ForeignCertificate => {
                "The sign-in answer was signed with a certificate this directory does not trust."
            }
            Refusal::BadSignature => {
                "The sign-in answer is not signed by your identity provider's configured certificate, or was altered."
            }
            Refusal::Issuer => "The sign-in answer comes from an identity provider this directory does not trust.",
            Refusal::Destination => "The sign-in answer was addressed to another site.",
            Refusal::Recipient => "The sign-in answer was meant for another site.",
            Refusal::Audience => "The sign-in answer was issued for another application.",
            Refusal::Expired => "The sign-in answer has expired. Please sign in again.",
            Refusal::NotYetValid => {
                "The sign-in answer is not valid yet; the identity provider's clock may be wrong."
            }
            Refusal::Status => "Your identity provider did not sign you in.",
            Refusal::UnknownRequest => {
                "This sign-in was not started in this browser, or was already used. Please sign in again."
            }
            Refusal::Unsolicited => {
                "Sign-in started at the identity provider is not allowed for this directory. Please start at this site."
            }
            Refusal::NoSubject => "The sign-in answer does not say who you are.",
            Refusal::Replayed => "This sign-in answer was already used. Please sign in again.",
            Refusal::UnknownUser => "You are not a member of this directory.",
            Refusal::InactiveUser => "Your account in this directory is deactivated.",
        }
    }

    /// A short code for logs and the audit log.
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::Malformed => "malformed",
            Refusal::WeakAlgorithm => "weak_algorithm",
            Refusal::ForeignCertificate => "foreign_certificate",
            Refusal::BadSignature => "bad_signature",
            Refusal::Issuer => "issuer",
            Refusal::Destination => "destination",
            Refusal::Recipient => "recipient",
            Refusal::Audience => "audience",
            Refusal::Expired => "expired",
            Refusal::NotYetValid => "not_yet_valid",
            Refusal::Status => "status",
            Refusal::UnknownRequest => "unknown_request",
            Refusal::Unsolicited => "unsolicited",
            Refusal::NoSubject => "no_subject",
            Refusal::Replayed => "replayed",
            Refusal::UnknownUser => "unknown_user",
            Refusal::InactiveUser => "inactive_user",
        }
    }
}

impl From<Refusal> for Error {
    fn from(refusal: Refusal) -> Self {
        Error::Forbidden(refusal.message().to_string())
    }
}

/// What a Response must match.
#[derive(Debug, Clone)]
pub struct Expected<'a> {
    pub sp: &'a SpUrls,
    pub idp: &'a IdpSettings,
    /// The AuthnRequest this browser has pending, if any.
    pub request_id: Option<&'a str>,
    pub now: DateTime<Utc>,
}

/// A verified sign-in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedLogin {
    pub assertion_id: String,
    /// The value of `user_attribute` (or the NameID), to match to `userName`.
    pub subject: String,
    /// The request answered; `None` for IdP-initiated sign-in.
    pub in_response_to: Option<String>,
    /// Until when the assertion could be presented (for the replay cache).
    pub valid_until: DateTime<Utc>,
}

/// Verifies a base64 `SAMLResponse` (HTTP-POST binding) strictly; see the module docs.
pub fn verify_response(encoded: &str, expected: &Expected<'_>) -> Result<VerifiedLogin, Refusal> {
    let compact: String = encoded.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    let bytes = STANDARD.decode(compact).map_err(|_| Refusal::Malformed)?;
    let xml = String::from_utf8(bytes).map_err(|_| Refusal::Malformed)?;
    let certificate = expected.idp.certificate_der().map_err(|_| Refusal::BadSignature)?;
    inspect_signatures(&xml, &certificate)?;
    xmlsec_errors::silence_default_output();
    let signed = Crypto::reduce_xml_to_signed_with_allowed_algorithms(
        &xml,
        &[CertificateDer::from(certificate)],
        ReduceMode::ValidateAndMarkNoAncestors,
        Some(ALLOWED_ALGORITHMS),
    );
    xmlsec_errors::route_to_tracing();
    let signed = signed.map_err(|_| Refusal::BadSignature)?;
    // Only what the signature covers: a signed Response (with its assertion), or a signed
    // Assertion alone, whose surrounding Response then says nothing we may rely on.
    // (serde does not look at the root element's name: the root decides what to parse as.)
    let (assertion, response_in_response_to) = match root_name(&signed).as_deref() {
        Some("Response") => {
            let response = signed.parse::<Response>().map_err(|_| Refusal::Malformed)?;
            check_response(&response, expected)?;
            let in_response_to = response.in_response_to.clone();
            if response.encrypted_assertion.is_some() {
                return Err(Refusal::Malformed);
            }
            (response.assertion.ok_or(Refusal::Malformed)?, Some(in_response_to))
        }
        Some("Assertion") => (signed.parse::<Assertion>().map_err(|_| Refusal::Malformed)?, None),
        _ => return Err(Refusal::Malformed),
    };
    let login = check_assertion(&assertion, expected)?;
    if let Some(Some(response_irt)) = response_in_response_to {
        if login.in_response_to.as_deref() != Some(response_irt.as_str()) {
            return Err(Refusal::UnknownRequest);
        }
    }
    Ok(login)
}

/// The local name of the root element, if the XML has one; elements must be SAML's.
fn root_name(xml: &str) -> Option<String> {
    use quick_xml::events::Event;
    let mut reader = quick_xml::NsReader::from_str(xml);
    loop {
        match reader.read_resolved_event().ok()? {
            (namespace, Event::Start(element) | Event::Empty(element)) => {
                let namespace = match namespace {
                    quick_xml::name::ResolveResult::Bound(ns) => ns.as_ref().to_vec(),
                    _ => return None,
                };
                let name = String::from_utf8_lossy(element.local_name().as_ref()).into_owned();
                let expected: &[u8] = match name.as_str() {
                    "Response" => b"urn:oasis:names:tc:SAML:2.0:protocol",
                    "Assertion" => b"urn:oasis:names:tc:SAML:2.0:assertion",
                    _ => return None,
                };
                return (namespace == expected).then_some(name);
            }
            (_, Event::Eof) => return None,
            _ => {}
        }
    }
}

/// Before any verification: no DTDs, no SHA-1, and a certificate carried in a signature's
/// `KeyInfo` must be the configured one.
fn inspect_signatures(xml: &str, certificate: &[u8]) -> Result<(), Refusal> {
    use quick_xml::events::Event;
    let mut reader = quick_xml::Reader::from_str(xml);
    let mut in_certificate = false;
    let mut certificate_text = String::new();
    loop {
        match reader.read_event().map_err(|_| Refusal::Malformed)? {
            Event::DocType(_) => return Err(Refusal::Malformed),
            Event::Start(element) | Event::Empty(element) => {
                let name = element.local_name();
                let name = name.as_ref();
                if name == b"SignatureMethod" || name == b"DigestMethod" {
                    let algorithm = element
                        .try_get_attribute("Algorithm")
                        .map_err(|_| Refusal::Malformed)?
                        .map(|a| String::from_utf8_lossy(&a.value).to_ascii_lowercase())
                        .unwrap_or_default();
                    if algorithm.ends_with("sha1") {
                        return Err(Refusal::WeakAlgorithm);
                    }
                }
                if name == b"X509Certificate" {
                    in_certificate = true;
                    certificate_text.clear();
                }
            }
            Event::Text(text) if in_certificate => {
                certificate_text.push_str(&String::from_utf8_lossy(text.as_ref()));
            }
            Event::End(element) if element.local_name().as_ref() == b"X509Certificate" => {
                in_certificate = false;
                let compact: String = certificate_text.chars().filter(|c| !c.is_ascii_whitespace()).collect();
                match STANDARD.decode(compact) {
                    Ok(carried) if carried == certificate => {}
                    _ => return Err(Refusal::ForeignCertificate),
                }
            }
            Event::Eof => return Ok(()),
            _ => {}
        }
    }
}

fn check_response(response: &Response, expected: &Expected<'_>) -> Result<(), Refusal> {
    if response.destination.as_deref() != Some(expected.sp.acs_url.as_str()) {
        return Err(Refusal::Destination);
    }
    if let Some(issuer) = &response.issuer {
        if issuer.value.as_deref() != Some(expected.idp.idp_entity_id.as_str()) {
            return Err(Refusal::Issuer);
        }
    }
    let status = response.status.as_ref().and_then(|s| s.status_code.value.as_deref());
    if status != Some(SUCCESS) {
        return Err(Refusal::Status);
    }
    Ok(())
}

fn check_assertion(assertion: &Assertion, expected: &Expected<'_>) -> Result<VerifiedLogin, Refusal> {
    let skew = Duration::seconds(MAX_CLOCK_SKEW_SECS);
    let now = expected.now;
    if assertion.issuer.value.as_deref() != Some(expected.idp.idp_entity_id.as_str()) {
        return Err(Refusal::Issuer);
    }
    let conditions = assertion.conditions.as_ref().ok_or(Refusal::Audience)?;
    let audiences = conditions.audience_restrictions.as_deref().unwrap_or_default();
    if audiences.is_empty()
        || !audiences.iter().all(|r| r.audience.iter().any(|a| a == &expected.sp.entity_id))
    {
        return Err(Refusal::Audience);
    }
    if let Some(not_before) = conditions.not_before {
        if now + skew < not_before {
            return Err(Refusal::NotYetValid);
        }
    }
    let mut valid_until = conditions.not_on_or_after;
    if let Some(not_on_or_after) = conditions.not_on_or_after {
        if now >= not_on_or_after + skew {
            return Err(Refusal::Expired);
        }
    }
    let subject = assertion.subject.as_ref().ok_or(Refusal::NoSubject)?;
    let bearer: Vec<_> = subject
        .subject_confirmations
        .iter()
        .flatten()
        .filter(|c| c.method.as_deref() == Some(BEARER))
        .filter_map(|c| c.subject_confirmation_data.as_ref())
        .collect();
    // Every bearer confirmation must hold; there must be at least one.
    let mut in_response_to = None;
    if bearer.is_empty() {
        return Err(Refusal::Recipient);
    }
    for data in bearer {
        if data.recipient.as_deref() != Some(expected.sp.acs_url.as_str()) {
            return Err(Refusal::Recipient);
        }
        if let Some(not_before) = data.not_before {
            if now + skew < not_before {
                return Err(Refusal::NotYetValid);
            }
        }
        let not_on_or_after = data.not_on_or_after.ok_or(Refusal::Expired)?;
        if now >= not_on_or_after + skew {
            return Err(Refusal::Expired);
        }
        valid_until = Some(valid_until.map_or(not_on_or_after, |v| v.min(not_on_or_after)));
        match (&in_response_to, &data.in_response_to) {
            (None, Some(id)) => in_response_to = Some(id.clone()),
            (Some(seen), Some(id)) if seen != id => return Err(Refusal::UnknownRequest),
            _ => {}
        }
    }
    match (&in_response_to, expected.request_id) {
        (Some(answered), Some(pending)) if answered == pending => {}
        (Some(_), _) => return Err(Refusal::UnknownRequest),
        (None, _) if expected.idp.allow_idp_initiated => {}
        (None, _) => return Err(Refusal::Unsolicited),
    }
    let subject_value = subject_value(assertion, &expected.idp.user_attribute).ok_or(Refusal::NoSubject)?;
    Ok(VerifiedLogin {
        assertion_id: assertion.id.clone(),
        subject: subject_value,
        in_response_to,
        valid_until: valid_until.unwrap_or(now) + skew,
    })
}

/// The NameID, or the first value of the attribute named `attribute` (Name or FriendlyName,
/// case-insensitively).
fn subject_value(assertion: &Assertion, attribute: &str) -> Option<String> {
    let value = if attribute.eq_ignore_ascii_case(NAME_ID) {
        assertion.subject.as_ref()?.name_id.as_ref().map(|n| n.value.clone())
    } else {
        assertion
            .attribute_statements
            .iter()
            .flatten()
            .flat_map(|s| s.attributes.iter())
            .find(|a| {
                a.name.as_deref().is_some_and(|n| n.eq_ignore_ascii_case(attribute))
                    || a.friendly_name.as_deref().is_some_and(|n| n.eq_ignore_ascii_case(attribute))
            })
            .and_then(|a| a.values.iter().find_map(|v| v.value.clone()))
    }?;
    let value = value.trim().to_string();
    (!value.is_empty()).then_some(value)
}

/// The local path a sign-in may return to: an absolute path on this server, nothing that a
/// browser could read as another host (`//host`, `/\host`, a scheme), no control characters.
pub fn local_return_to(candidate: &str) -> Option<String> {
    let ok = candidate.starts_with('/')
        && !candidate.starts_with("//")
        && !candidate.contains('\\')
        && candidate.len() <= 2048
        && !candidate.chars().any(|c| c.is_control() || c.is_whitespace());
    if !ok {
        return None;
    }
    // The path must resolve to this very host.
    let base = url::Url::parse("http://scimd.invalid/").ok()?;
    let joined = base.join(candidate).ok()?;
    (joined.host_str() == Some("scimd.invalid") && joined.scheme() == "http").then(|| candidate.to_string())
}

/// A pending SP-initiated sign-in, kept in a short-lived signed cookie of the browser that
/// started it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingSignIn {
    pub directory: String,
    pub request_id: String,
    /// The opaque handle sent as `RelayState`.
    pub relay: String,
    pub return_to: String,
}

/// HMAC-SHA256 over cookie values, so a browser cannot forge or alter them.
#[derive(Clone)]
pub struct CookieKey(aws_lc_rs::hmac::Key);

impl std::fmt::Debug for CookieKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CookieKey(..)")
    }
}

impl CookieKey {
    pub fn new(secret: &[u8]) -> CookieKey {
        CookieKey(aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret))
    }

    fn tag(&self, purpose: &str, payload: &str, expires_at: i64) -> Vec<u8> {
        let message = format!("{purpose}\n{expires_at}\n{payload}");
        aws_lc_rs::hmac::sign(&self.0, message.as_bytes()).as_ref().to_vec()
    }

    /// `payload` sealed for `purpose` until `expires_at` (epoch ms).
    pub fn seal(&self, purpose: &str, payload: &str, expires_at: i64) -> String {
        format!(
            "{}.{expires_at}.{}",
            URL_SAFE_NO_PAD.encode(payload),
            URL_SAFE_NO_PAD.encode(self.tag(purpose, payload, expires_at))
        )
    }

    /// The payload of a cookie sealed for `purpose`, if genuine and not expired at `now`.
    pub fn open(&self, purpose: &str, sealed: &str, now: i64) -> Option<String> {
        let mut parts = sealed.split('.');
        let (payload, expires_at, tag) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() {
            return None;
        }
        let payload = String::from_utf8(URL_SAFE_NO_PAD.decode(payload).ok()?).ok()?;
        let expires_at: i64 = expires_at.parse().ok()?;
        let tag = URL_SAFE_NO_PAD.decode(tag).ok()?;
        let message = format!("{purpose}\n{expires_at}\n{payload}");
        aws_lc_rs::hmac::verify(&self.0, message.as_bytes(), &tag).ok()?;
        (now < expires_at).then_some(payload)
    }
}

/// libxmlsec reports each failure (a digest that does not match a tampered document, a bad
/// signature) by printing a raw `func=...:file=...` line to stderr, outside the server's log and
/// its JSON format. The refusal itself is already answered, counted and audited, so the details
/// go to tracing at debug level instead.
mod xmlsec_errors {
    use std::borrow::Cow;
    use std::ffi::{c_char, c_int, CStr};
    use std::sync::Once;

    type Callback = extern "C" fn(
        file: *const c_char,
        line: c_int,
        func: *const c_char,
        object: *const c_char,
        subject: *const c_char,
        reason: c_int,
        msg: *const c_char,
    );

    // libxmlsec1's errors.h; samael links the library but does not expose these.
    extern "C" {
        fn xmlSecErrorsSetCallback(callback: Callback);
        fn xmlSecErrorsDefaultCallbackEnableOutput(enabled: c_int);
    }

    fn text<'a>(pointer: *const c_char) -> Cow<'a, str> {
        if pointer.is_null() {
            return Cow::Borrowed("");
        }
        // SAFETY: libxmlsec passes NUL-terminated strings that live for the callback's duration.
        unsafe { CStr::from_ptr(pointer) }.to_string_lossy()
    }

    extern "C" fn log_error(
        _file: *const c_char,
        _line: c_int,
        func: *const c_char,
        object: *const c_char,
        subject: *const c_char,
        reason: c_int,
        msg: *const c_char,
    ) {
        tracing::debug!(
            func = %text(func),
            object = %text(object),
            subject = %text(subject),
            reason,
            detail = %text(msg),
            "libxmlsec refused"
        );
    }

    /// Before a verification: the default callback prints nothing. (This setting survives
    /// libxmlsec's initialisation, which samael runs inside the first verification.)
    pub fn silence_default_output() {
        static SILENCED: Once = Once::new();
        // SAFETY: sets a plain int flag in libxmlsec, once, before the first verification.
        SILENCED.call_once(|| unsafe { xmlSecErrorsDefaultCallbackEnableOutput(0) });
    }

    /// After a verification: reports go to tracing from now on. Not before the first one has
    /// returned, because the initialisation inside it installs the default callback again.
    pub fn route_to_tracing() {
        static ROUTED: Once = Once::new();
        // SAFETY: log_error matches xmlSecErrorsCallback; the callback is a pointer-sized global
        // that libxmlsec only reads, and it is written once, after initialisation.
        ROUTED.call_once(|| unsafe { xmlSecErrorsSetCallback(log_error) });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn return_to_accepts_only_local_paths() {
        for good in ["/d/acme/", "/d/acme/people/1?x=1", "/"] {
            assert_eq!(local_return_to(good).as_deref(), Some(good), "{good}");
        }
        for bad in [
            "//evil.example/",
            "/\\evil.example",
            "\\\\evil",
            "https://evil.example/",
            "evil.example",
            "",
            "/d/\nx",
            "javascript:alert(1)",
            "/ /evil",
        ] {
            assert_eq!(local_return_to(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn sealed_cookies_open_only_unaltered_unexpired_and_for_their_purpose() {
        let key = CookieKey::new(b"0123456789abcdef0123456789abcdef");
        let sealed = key.seal("session", "abc", 1_000);
        assert_eq!(key.open("session", &sealed, 999).as_deref(), Some("abc"));
        assert_eq!(key.open("session", &sealed, 1_000), None, "expired");
        assert_eq!(key.open("request", &sealed, 999), None, "other purpose");
        let altered = sealed.replacen("1000", "9000", 1);
        assert_eq!(key.open("session", &altered, 999), None, "extended expiry");
        let other = CookieKey::new(b"another key of thirty-two bytes!");
        assert_eq!(other.open("session", &sealed, 999), None, "other key");
    }

    #[test]
    fn settings_without_a_certificate_are_refused() {
        let settings = IdpSettings {
            sso_url: "https://idp.example/sso".into(),
            certificate_pem: String::new(),
            idp_entity_id: "https://idp.example".into(),
            user_attribute: NAME_ID.into(),
            allow_idp_initiated: false,
        };
        assert!(settings.validate().unwrap_err().to_string().contains("certificate"));
    }

    #[test]
    fn sp_urls_hang_off_the_public_url() {
        let sp = SpUrls::of("https://dir.example/", "acme");
        assert_eq!(sp.entity_id, "https://dir.example/saml/acme/metadata");
        assert_eq!(sp.acs_url, "https://dir.example/saml/acme/acs");
        assert!(sp.metadata_xml().contains("entityID=\"https://dir.example/saml/acme/metadata\""));
    }
}
