//! A SAML identity provider for tests: a fresh RSA key and self-signed certificate, and real
//! signed Responses (signed in-process with xmlsec through samael), plus the malformed and
//! hostile variants the negative tests need.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use chrono::{DateTime, Duration, Utc};
use openssl::asn1::Asn1Time;
use openssl::hash::MessageDigest;
use openssl::pkey::PKey;
use openssl::rsa::Rsa;
use openssl::x509::{X509Builder, X509NameBuilder};
use samael::crypto::{Crypto, CryptoProvider};
use serde_json::{json, Value};

pub struct TestIdp {
    pub entity_id: String,
    pub sso_url: String,
    key_der: Vec<u8>,
    pub cert_pem: String,
    cert_der: Vec<u8>,
}

/// What is signed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signed {
    Assertion,
    Response,
    Nothing,
}

/// What goes in a signature's KeyInfo.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyInfo {
    Certificate,
    /// The raw public key (`KeyValue`), as an attacker signing with their own key would send.
    KeyValue,
}

/// One Response; [`TestIdp::spec`] fills in a valid one for a server and user.
#[derive(Debug, Clone)]
pub struct Spec {
    pub name_id: String,
    pub in_response_to: Option<String>,
    pub audience: String,
    pub recipient: String,
    pub destination: String,
    pub issuer: String,
    pub issued: DateTime<Utc>,
    pub not_before: DateTime<Utc>,
    pub not_on_or_after: DateTime<Utc>,
    pub assertion_id: String,
    pub response_id: String,
    pub signed: Signed,
    pub sha1: bool,
    pub key_info: KeyInfo,
}

fn time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn fresh_id() -> String {
    format!("_{}", uuid::Uuid::new_v4().simple())
}

impl TestIdp {
    pub fn new(entity_id: &str) -> TestIdp {
        let rsa = Rsa::generate(2048).unwrap();
        let key = PKey::from_rsa(rsa).unwrap();
        let mut name = X509NameBuilder::new().unwrap();
        name.append_entry_by_text("CN", "scimd test IdP").unwrap();
        let name = name.build();
        let mut builder = X509Builder::new().unwrap();
        builder.set_version(2).unwrap();
        builder.set_subject_name(&name).unwrap();
        builder.set_issuer_name(&name).unwrap();
        builder.set_pubkey(&key).unwrap();
        builder.set_not_before(&Asn1Time::days_from_now(0).unwrap()).unwrap();
        builder.set_not_after(&Asn1Time::days_from_now(30).unwrap()).unwrap();
        builder.sign(&key, MessageDigest::sha256()).unwrap();
        let cert = builder.build();
        TestIdp {
            entity_id: entity_id.to_string(),
            sso_url: "https://idp.example.test/sso".to_string(),
            key_der: key.private_key_to_der().unwrap(),
            cert_pem: String::from_utf8(cert.to_pem().unwrap()).unwrap(),
            cert_der: cert.to_der().unwrap(),
        }
    }

    /// The admin API body configuring this IdP.
    pub fn settings(&self, allow_idp_initiated: bool) -> Value {
        json!({
            "sso_url": self.sso_url,
            "certificate_pem": self.cert_pem,
            "idp_entity_id": self.entity_id,
            "user_attribute": "NameID",
            "allow_idp_initiated": allow_idp_initiated,
        })
    }

    /// A valid Response for `name_id` to the SP of `directory` on `base_url`.
    pub fn spec(&self, base_url: &str, directory: &str, name_id: &str, in_response_to: Option<&str>) -> Spec {
        let now = Utc::now();
        Spec {
            name_id: name_id.to_string(),
            in_response_to: in_response_to.map(str::to_string),
            audience: format!("{base_url}/saml/{directory}/metadata"),
            recipient: format!("{base_url}/saml/{directory}/acs"),
            destination: format!("{base_url}/saml/{directory}/acs"),
            issuer: self.entity_id.clone(),
            issued: now,
            not_before: now - Duration::seconds(30),
            not_on_or_after: now + Duration::minutes(5),
            assertion_id: fresh_id(),
            response_id: fresh_id(),
            signed: Signed::Assertion,
            sha1: false,
            key_info: KeyInfo::Certificate,
        }
    }

    fn signature_template(&self, spec: &Spec, reference: &str) -> String {
        let (signature_method, digest_method) = if spec.sha1 {
            ("http://www.w3.org/2000/09/xmldsig#rsa-sha1", "http://www.w3.org/2000/09/xmldsig#sha1")
        } else {
            ("http://www.w3.org/2001/04/xmldsig-more#rsa-sha256", "http://www.w3.org/2001/04/xmlenc#sha256")
        };
        let key_info = match spec.key_info {
            KeyInfo::Certificate => format!(
                "<ds:X509Data><ds:X509Certificate>{}</ds:X509Certificate></ds:X509Data>",
                STANDARD.encode(&self.cert_der)
            ),
            KeyInfo::KeyValue => "<ds:KeyValue/>".to_string(),
        };
        format!(
            r##"<ds:Signature xmlns:ds="http://www.w3.org/2000/09/xmldsig#"><ds:SignedInfo><ds:CanonicalizationMethod Algorithm="http://www.w3.org/2001/10/xml-exc-c14n#"/><ds:SignatureMethod Algorithm="{signature_method}"/><ds:Reference URI="#{reference}"><ds:Transforms><ds:Transform Algorithm="http://www.w3.org/2000/09/xmldsig#enveloped-signature"/><ds:Transform Algorithm="http://www.w3.org/2001/10/xml-exc-c14n#"/></ds:Transforms><ds:DigestMethod Algorithm="{digest_method}"/><ds:DigestValue></ds:DigestValue></ds:Reference></ds:SignedInfo><ds:SignatureValue></ds:SignatureValue><ds:KeyInfo>{key_info}</ds:KeyInfo></ds:Signature>"##
        )
    }

    /// The Assertion element of `spec`, with a signature template when it is to be signed.
    pub fn assertion_xml(&self, spec: &Spec, with_template: bool) -> String {
        let in_response_to =
            spec.in_response_to.as_ref().map(|id| format!(" InResponseTo=\"{id}\"")).unwrap_or_default();
        let signature =
            if with_template { self.signature_template(spec, &spec.assertion_id) } else { String::new() };
        format!(
            r#"<saml:Assertion xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion" ID="{id}" Version="2.0" IssueInstant="{issued}"><saml:Issuer>{issuer}</saml:Issuer>{signature}<saml:Subject><saml:NameID Format="urn:oasis:names:tc:SAML:1.1:nameid-format:unspecified">{name}</saml:NameID><saml:SubjectConfirmation Method="urn:oasis:names:tc:SAML:2.0:cm:bearer"><saml:SubjectConfirmationData{in_response_to} NotOnOrAfter="{until}" Recipient="{recipient}"/></saml:SubjectConfirmation></saml:Subject><saml:Conditions NotBefore="{from}" NotOnOrAfter="{until}"><saml:AudienceRestriction><saml:Audience>{audience}</saml:Audience></saml:AudienceRestriction></saml:Conditions><saml:AuthnStatement AuthnInstant="{issued}"><saml:AuthnContext><saml:AuthnContextClassRef>urn:oasis:names:tc:SAML:2.0:ac:classes:PasswordProtectedTransport</saml:AuthnContextClassRef></saml:AuthnContext></saml:AuthnStatement></saml:Assertion>"#,
            id = spec.assertion_id,
            issued = time(spec.issued),
            issuer = spec.issuer,
            name = spec.name_id,
            until = time(spec.not_on_or_after),
            from = time(spec.not_before),
            recipient = spec.recipient,
            audience = spec.audience,
        )
    }

    /// The Response XML of `spec`, signed as it says (with this IdP's key).
    pub fn response_xml(&self, spec: &Spec) -> String {
        self.response_xml_with(spec, self.assertion_xml(spec, spec.signed == Signed::Assertion))
    }

    /// A Response around `assertion` (signed as `spec` says).
    pub fn response_xml_with(&self, spec: &Spec, assertion: String) -> String {
        let in_response_to =
            spec.in_response_to.as_ref().map(|id| format!(" InResponseTo=\"{id}\"")).unwrap_or_default();
        let signature = if spec.signed == Signed::Response {
            self.signature_template(spec, &spec.response_id)
        } else {
            String::new()
        };
        let xml = format!(
            r#"<?xml version="1.0" encoding="UTF-8"?><samlp:Response xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol" xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion" ID="{id}" Version="2.0" IssueInstant="{issued}" Destination="{destination}"{in_response_to}><saml:Issuer>{issuer}</saml:Issuer>{signature}<samlp:Status><samlp:StatusCode Value="urn:oasis:names:tc:SAML:2.0:status:Success"/></samlp:Status>{assertion}</samlp:Response>"#,
            id = spec.response_id,
            issued = time(spec.issued),
            destination = spec.destination,
            issuer = spec.issuer,
        );
        match spec.signed {
            Signed::Nothing => xml,
            Signed::Assertion | Signed::Response => self.sign(&xml),
        }
    }

    /// Signs the first signature template of `xml` with this IdP's key.
    pub fn sign(&self, xml: &str) -> String {
        Crypto::sign_xml(xml, &self.key_der).unwrap()
    }

    /// Base64 for the `SAMLResponse` form field.
    pub fn encode(xml: &str) -> String {
        STANDARD.encode(xml)
    }
}

/// The `ID` of the AuthnRequest in an HTTP-Redirect binding URL.
pub fn request_id_of(location: &str) -> String {
    use std::io::Read;
    let url = url::Url::parse(location).unwrap();
    let encoded = url.query_pairs().find(|(k, _)| k == "SAMLRequest").map(|(_, v)| v.into_owned()).unwrap();
    let deflated = STANDARD.decode(encoded).unwrap();
    let mut xml = String::new();
    flate2::read::DeflateDecoder::new(&deflated[..]).read_to_string(&mut xml).unwrap();
    let start = xml.find(" ID=\"").unwrap() + 5;
    let end = start + xml[start..].find('"').unwrap();
    xml[start..end].to_string()
}

/// The test IdP over HTTP on 127.0.0.1:0, for a real browser: `GET /sso?SAMLRequest=&RelayState=`
/// (the HTTP-Redirect binding) answers a page that posts a Response signed for `name_id` to
/// the ACS of `directory` at `base_url` (the HTTP-POST binding, submitted by script as IdPs do).
pub struct IdpServer {
    pub sso_url: String,
}

impl IdpServer {
    pub fn start(idp: std::sync::Arc<TestIdp>, base_url: &str, directory: &str, name_id: &str) -> IdpServer {
        use std::io::{BufRead, BufReader, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let sso_url = format!("http://{}/sso", listener.local_addr().unwrap());
        let (base_url, directory, name_id) =
            (base_url.to_string(), directory.to_string(), name_id.to_string());
        // Serves until the test process ends; one request per connection.
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut request_line = String::new();
                if reader.read_line(&mut request_line).is_err() {
                    continue;
                }
                loop {
                    let mut header = String::new();
                    match reader.read_line(&mut header) {
                        Ok(0) | Err(_) => break,
                        Ok(_) if header == "\r\n" || header == "\n" => break,
                        Ok(_) => {}
                    }
                }
                let target = request_line.split_whitespace().nth(1).unwrap_or_default().to_string();
                let (status, body) = if target.starts_with("/sso?") {
                    let url = url::Url::parse(&format!("http://idp{target}")).unwrap();
                    let relay = url
                        .query_pairs()
                        .find(|(k, _)| k == "RelayState")
                        .map(|(_, v)| v.into_owned())
                        .unwrap_or_default();
                    let request_id = request_id_of(url.as_str());
                    let spec = idp.spec(&base_url, &directory, &name_id, Some(&request_id));
                    let response = TestIdp::encode(&idp.response_xml(&spec));
                    let acs = format!("{base_url}/saml/{directory}/acs");
                    let relay = relay.replace('&', "&amp;").replace('"', "&quot;").replace('<', "&lt;");
                    (
                        "200 OK",
                        format!(
                            "<!doctype html><html lang=\"en\"><head><title>Test IdP</title></head>\
                             <body><p>Signing you in\u{2026}</p><form method=\"post\" action=\"{acs}\">\
                             <input type=\"hidden\" name=\"SAMLResponse\" value=\"{response}\">\
                             <input type=\"hidden\" name=\"RelayState\" value=\"{relay}\">\
                             <noscript><button type=\"submit\">Continue</button></noscript></form>\
                             <script>document.forms[0].submit();</script></body></html>"
                        ),
                    )
                } else {
                    ("404 Not Found", "not found".to_string())
                };
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status}\r\ncontent-type: text/html; charset=utf-8\r\ncontent-length: {}\r\n\
                     connection: close\r\ncache-control: no-store\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        IdpServer { sso_url }
    }
}
