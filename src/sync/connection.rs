//! A connection's configuration: the JSON of the pull-sync contract (`sync-rules.md` §1), the
//! same for the admin API body and the CLI's `--config` file. Pure: parsing, defaults,
//! validation, and splitting the secrets off so they can be sealed apart from the rest.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Error, Result};

/// Which source a connection pulls from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Okta,
    Entra,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Okta => "okta",
            Kind::Entra => "entra",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Connection {
    pub name: String,
    pub kind: Kind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub okta: Option<OktaSource>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entra: Option<EntraSource>,
    #[serde(default)]
    pub rules: Rules,
    #[serde(default)]
    pub schedule: Schedule,
    #[serde(default)]
    pub brake: Brake,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OktaSource {
    pub org_url: String,
    pub auth: OktaAuth,
    #[serde(default)]
    pub allow_insecure_http: bool,
    /// The share (percent) of each Okta rate-limit bucket the importer may spend: the buckets
    /// belong to the whole org (its admin console and other integrations draw on them too).
    #[serde(default = "default_rate_limit_percent")]
    pub rate_limit_percent: u32,
}

fn default_rate_limit_percent() -> u32 {
    50
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "method", rename_all = "snake_case", deny_unknown_fields)]
pub enum OktaAuth {
    ApiToken {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        token: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        token_file: Option<String>,
    },
    PrivateKeyJwt {
        client_id: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        private_key_pem: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        private_key_file: Option<String>,
        key_id: String,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntraSource {
    pub tenant: String,
    pub auth: EntraAuth,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_auth: Option<EntraAuth>,
    #[serde(default = "default_login_url")]
    pub login_url: String,
    #[serde(default = "default_graph_url")]
    pub graph_url: String,
    #[serde(default)]
    pub allow_insecure_http: bool,
}

fn default_login_url() -> String {
    "https://login.microsoftonline.com".into()
}

fn default_graph_url() -> String {
    "https://graph.microsoft.com".into()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "method", rename_all = "snake_case", deny_unknown_fields)]
pub enum EntraAuth {
    ClientSecret {
        client_id: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        client_secret: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        client_secret_file: Option<String>,
    },
    Certificate {
        client_id: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        private_key_pem: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        private_key_file: Option<String>,
        certificate_pem: String,
    },
    Delegated {
        client_id: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        client_secret: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        client_secret_file: Option<String>,
    },
}

impl EntraAuth {
    pub fn client_id(&self) -> &str {
        match self {
            EntraAuth::ClientSecret { client_id, .. }
            | EntraAuth::Certificate { client_id, .. }
            | EntraAuth::Delegated { client_id, .. } => client_id.trim(),
        }
    }
}

/// Where a delegated credential's refresh token is kept: a sealed secret like the others, but
/// one scimd gets from the admin's consent (`/admin/v1/connections/{id}/authorize`), never from
/// the connection JSON. `place` is `auth` or `backup_auth`.
pub fn refresh_token_name(place: &str) -> SecretName {
    match place {
        "auth" => "entra.auth.refresh_token",
        _ => "entra.backup_auth.refresh_token",
    }
}

/// The rules of `sync-rules.md` §4. Okta-only and Entra-only keys are refused on the other kind.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rules {
    #[serde(default)]
    pub group_prefixes: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_types: Option<Vec<String>>,
    #[serde(default)]
    pub allowed_users_groups: Vec<String>,
    #[serde(default)]
    pub denied_users_groups: Vec<String>,
    #[serde(default)]
    pub app_id: Option<String>,
    #[serde(default)]
    pub email_domains: Vec<String>,
    #[serde(default)]
    pub include_subdomains: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username_source: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub staged: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub import_security_groups: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub import_groups_without_email: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Schedule {
    #[serde(default = "yes")]
    pub enabled: bool,
    #[serde(default = "two_hours")]
    pub delta_every: String,
    #[serde(default = "one_day")]
    pub full_every: String,
}

impl Default for Schedule {
    fn default() -> Self {
        Schedule { enabled: true, delta_every: two_hours(), full_every: one_day() }
    }
}

fn yes() -> bool {
    true
}

fn two_hours() -> String {
    "2h".into()
}

fn one_day() -> String {
    "24h".into()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Brake {
    #[serde(default = "ten")]
    pub max_deactivate_percent: u32,
}

impl Default for Brake {
    fn default() -> Self {
        Brake { max_deactivate_percent: ten() }
    }
}

fn ten() -> u32 {
    10
}

pub const OKTA_GROUP_TYPES: [&str; 3] = ["OKTA_GROUP", "APP_GROUP", "BUILT_IN"];
const OKTA_DEFAULT_GROUP_TYPES: [&str; 2] = ["OKTA_GROUP", "APP_GROUP"];
const OKTA_USERNAME_SOURCES: [&str; 3] = ["login", "email", "login-local-part"];
const ENTRA_USERNAME_SOURCES: [&str; 3] = ["userPrincipalName", "mail", "mailNickname"];

/// A secret field of a connection, by its place in the JSON (`okta.auth.token`).
pub type SecretName = &'static str;

/// Parses a connection body; every error names the key at fault.
pub fn parse(body: Value) -> Result<Connection> {
    let connection: Connection = serde_path_to_error::deserialize(body).map_err(|e| {
        let path = e.path().to_string();
        let at = if path == "." { String::new() } else { format!("key '{path}': ") };
        Error::InvalidValue(format!("connection {at}{}", e.inner()))
    })?;
    connection.validate()?;
    Ok(connection)
}

fn invalid(key: &str, why: impl std::fmt::Display) -> Error {
    Error::InvalidValue(format!("connection key '{key}': {why}"))
}

impl Connection {
    fn validate(&self) -> Result<()> {
        crate::store::directories::validate_slug(&self.name).map_err(|_| {
            invalid("name", "use 1-63 lower-case letters, digits and inner dashes, e.g. 'okta-main'")
        })?;
        match (self.kind, &self.okta, &self.entra) {
            (Kind::Okta, Some(okta), None) => okta.validate()?,
            (Kind::Entra, None, Some(entra)) => entra.validate()?,
            (Kind::Okta, _, _) => {
                return Err(invalid("okta", "an okta connection needs an 'okta' block and no 'entra' block"))
            }
            (Kind::Entra, _, _) => {
                return Err(invalid(
                    "entra",
                    "an entra connection needs an 'entra' block and no 'okta' block",
                ))
            }
        }
        self.rules.validate(self.kind)?;
        self.schedule.validate()?;
        if self.brake.max_deactivate_percent > 100 {
            return Err(invalid("brake.max_deactivate_percent", "must be from 0 to 100"));
        }
        Ok(())
    }

    /// The userName source in force (the kind's default when none is set).
    pub fn username_source(&self) -> &str {
        match (&self.rules.username_source, self.kind) {
            (Some(source), _) => source,
            (None, Kind::Okta) => "login",
            (None, Kind::Entra) => "userPrincipalName",
        }
    }

    /// Okta group types in force.
    pub fn group_types(&self) -> Vec<String> {
        self.rules
            .group_types
            .clone()
            .unwrap_or_else(|| OKTA_DEFAULT_GROUP_TYPES.iter().map(|t| t.to_string()).collect())
    }

    /// Whether STAGED Okta users are skipped (`"skip"`) rather than imported inactive.
    pub fn skip_staged(&self) -> bool {
        self.rules.staged.as_deref() == Some("skip")
    }

    /// Takes the secrets out of the connection, leaving `None` in their place: what remains is
    /// safe to store in the clear and to show. `*_file` keys must have been read already.
    pub fn take_secrets(&mut self) -> Result<Vec<(SecretName, String)>> {
        let mut secrets = Vec::new();
        let mut take = |name: SecretName, value: &mut Option<String>, file: &Option<String>| -> Result<()> {
            if file.is_some() {
                return Err(invalid(
                    name,
                    "a '*_file' key is only read from a CLI --config file; send the value itself",
                ));
            }
            if let Some(value) = value.take() {
                secrets.push((name, value));
            }
            Ok(())
        };
        if let Some(okta) = &mut self.okta {
            match &mut okta.auth {
                OktaAuth::ApiToken { token, token_file } => take("okta.auth.token", token, token_file)?,
                OktaAuth::PrivateKeyJwt { private_key_pem, private_key_file, .. } => {
                    take("okta.auth.private_key_pem", private_key_pem, private_key_file)?
                }
            }
        }
        if let Some(entra) = &mut self.entra {
            for (place, auth) in
                [("entra.auth", Some(&mut entra.auth)), ("entra.backup_auth", entra.backup_auth.as_mut())]
            {
                let Some(auth) = auth else { continue };
                let (field, value, file) = match auth {
                    EntraAuth::ClientSecret { client_secret, client_secret_file, .. }
                    | EntraAuth::Delegated { client_secret, client_secret_file, .. } => {
                        ("client_secret", client_secret, &*client_secret_file)
                    }
                    EntraAuth::Certificate { private_key_pem, private_key_file, .. } => {
                        ("private_key_pem", private_key_pem, &*private_key_file)
                    }
                };
                take(secret_name(place, field), value, file)?;
            }
        }
        Ok(secrets)
    }

    /// Reads every `*_file` key (CLI `--config` files only), relative to `base`, into the value
    /// it stands for.
    pub fn read_secret_files(&mut self, base: &std::path::Path) -> Result<()> {
        let read = |value: &mut Option<String>, file: &mut Option<String>, key: &str| -> Result<()> {
            if let Some(path) = file.take() {
                let full = base.join(&path);
                let text = std::fs::read_to_string(&full)
                    .map_err(|e| invalid(key, format!("cannot read {}: {e}", full.display())))?;
                *value = Some(text.trim().to_string());
            }
            Ok(())
        };
        if let Some(okta) = &mut self.okta {
            match &mut okta.auth {
                OktaAuth::ApiToken { token, token_file } => read(token, token_file, "okta.auth.token_file")?,
                OktaAuth::PrivateKeyJwt { private_key_pem, private_key_file, .. } => {
                    read(private_key_pem, private_key_file, "okta.auth.private_key_file")?
                }
            }
        }
        if let Some(entra) = &mut self.entra {
            for auth in [Some(&mut entra.auth), entra.backup_auth.as_mut()].into_iter().flatten() {
                match auth {
                    EntraAuth::ClientSecret { client_secret, client_secret_file, .. }
                    | EntraAuth::Delegated { client_secret, client_secret_file, .. } => {
                        read(client_secret, client_secret_file, "client_secret_file")?
                    }
                    EntraAuth::Certificate { private_key_pem, private_key_file, .. } => {
                        read(private_key_pem, private_key_file, "private_key_file")?
                    }
                }
            }
        }
        Ok(())
    }

    /// The secret fields this connection's methods need, by name.
    pub fn secret_names(&self) -> Vec<SecretName> {
        let mut names = Vec::new();
        if let Some(okta) = &self.okta {
            names.push(match okta.auth {
                OktaAuth::ApiToken { .. } => "okta.auth.token",
                OktaAuth::PrivateKeyJwt { .. } => "okta.auth.private_key_pem",
            });
        }
        if let Some(entra) = &self.entra {
            for (place, auth) in
                [("entra.auth", Some(&entra.auth)), ("entra.backup_auth", entra.backup_auth.as_ref())]
            {
                let Some(auth) = auth else { continue };
                let field = match auth {
                    EntraAuth::ClientSecret { .. } | EntraAuth::Delegated { .. } => "client_secret",
                    EntraAuth::Certificate { .. } => "private_key_pem",
                };
                names.push(secret_name(place, field));
            }
        }
        names
    }

    /// The delegated credentials of an Entra connection, by place (`auth`, `backup_auth`).
    pub fn delegated(&self) -> Vec<(&'static str, &EntraAuth)> {
        let Some(entra) = &self.entra else { return Vec::new() };
        [("auth", Some(&entra.auth)), ("backup_auth", entra.backup_auth.as_ref())]
            .into_iter()
            .filter_map(|(place, auth)| match auth {
                Some(auth @ EntraAuth::Delegated { .. }) => Some((place, auth)),
                _ => None,
            })
            .collect()
    }

    /// The refresh tokens a consent left that still belong to this configuration, when it
    /// replaces `before`: those of delegated credentials that stay the same app in the same
    /// tenant and cloud. Any other change needs a new consent.
    pub fn refresh_tokens_kept(&self, before: &Connection) -> Vec<SecretName> {
        let same_tenant = match (&self.entra, &before.entra) {
            (Some(now), Some(then)) => {
                now.tenant.trim().eq_ignore_ascii_case(then.tenant.trim())
                    && now.login_url.trim_end_matches('/') == then.login_url.trim_end_matches('/')
            }
            _ => false,
        };
        if !same_tenant {
            return Vec::new();
        }
        let earlier = before.delegated();
        self.delegated()
            .into_iter()
            .filter(|(place, auth)| {
                earlier.iter().any(|(was, old)| was == place && old.client_id() == auth.client_id())
            })
            .map(|(place, _)| refresh_token_name(place))
            .collect()
    }

    /// The connection as shown: its JSON with each secret replaced by `{"set", "rotated_at"}`
    /// (a delegated credential's refresh token included).
    pub fn shown(&self, secret_status: &dyn Fn(SecretName) -> Option<String>) -> Value {
        let mut shown = serde_json::to_value(self).unwrap_or(Value::Null);
        let refresh_tokens = self.delegated().into_iter().map(|(place, _)| refresh_token_name(place));
        for name in self.secret_names().into_iter().chain(refresh_tokens) {
            let status = match secret_status(name) {
                Some(rotated_at) => serde_json::json!({ "set": true, "rotated_at": rotated_at }),
                None => serde_json::json!({ "set": false, "rotated_at": null }),
            };
            set_path(&mut shown, name, status);
        }
        shown
    }
}

fn secret_name(place: &str, field: &str) -> SecretName {
    match (place, field) {
        ("entra.auth", "client_secret") => "entra.auth.client_secret",
        ("entra.auth", _) => "entra.auth.private_key_pem",
        (_, "client_secret") => "entra.backup_auth.client_secret",
        _ => "entra.backup_auth.private_key_pem",
    }
}

/// Sets `a.b.c` in a JSON object, creating nothing: a missing parent leaves it as it is.
fn set_path(value: &mut Value, path: &str, new: Value) {
    let mut parts: Vec<&str> = path.split('.').collect();
    let Some(last) = parts.pop() else { return };
    let mut node = value;
    for part in parts {
        match node.get_mut(part) {
            Some(next) => node = next,
            None => return,
        }
    }
    if let Some(object) = node.as_object_mut() {
        object.insert(last.to_string(), new);
    }
}

/// `https://`, or `http://` to a loopback host when `allow_insecure_http` says so.
fn validate_base_url(key: &str, text: &str, allow_insecure_http: bool) -> Result<()> {
    let url = url::Url::parse(text).map_err(|_| invalid(key, format!("'{text}' is not an absolute URL")))?;
    match url.scheme() {
        "https" => Ok(()),
        "http" if allow_insecure_http => {
            let loopback = match url.host() {
                Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
                Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
                Some(url::Host::Domain(name)) => name == "localhost",
                None => false,
            };
            if loopback {
                Ok(())
            } else {
                Err(invalid(
                    key,
                    "http:// is allowed only for loopback hosts (test and demo orgs); use https://",
                ))
            }
        }
        "http" => Err(invalid(
            key,
            "must be https:// (allow_insecure_http permits http:// for loopback hosts only)",
        )),
        other => Err(invalid(key, format!("scheme '{other}' is not https"))),
    }
}

impl OktaSource {
    fn validate(&self) -> Result<()> {
        validate_base_url("okta.org_url", &self.org_url, self.allow_insecure_http)?;
        if !(1..=100).contains(&self.rate_limit_percent) {
            return Err(invalid(
                "okta.rate_limit_percent",
                "must be a whole number of percent from 1 to 100",
            ));
        }
        match &self.auth {
            // Whether the secret itself is present is checked on create: an update may leave it
            // out to keep the stored one.
            OktaAuth::ApiToken { .. } => {}
            OktaAuth::PrivateKeyJwt { client_id, key_id, .. } => {
                if client_id.trim().is_empty() || key_id.trim().is_empty() {
                    return Err(invalid("okta.auth", "private_key_jwt needs client_id and key_id"));
                }
            }
        }
        Ok(())
    }
}

impl EntraSource {
    fn validate(&self) -> Result<()> {
        if self.tenant.trim().is_empty() {
            return Err(invalid("entra.tenant", "must name the tenant (id or domain)"));
        }
        validate_base_url("entra.login_url", &self.login_url, self.allow_insecure_http)?;
        validate_base_url("entra.graph_url", &self.graph_url, self.allow_insecure_http)
    }
}

impl Rules {
    fn validate(&self, kind: Kind) -> Result<()> {
        let okta_only = [
            ("rules.group_types", self.group_types.is_some()),
            ("rules.app_id", self.app_id.is_some()),
            ("rules.staged", self.staged.is_some()),
        ];
        let entra_only = [
            ("rules.import_security_groups", self.import_security_groups.is_some()),
            ("rules.import_groups_without_email", self.import_groups_without_email.is_some()),
        ];
        let (foreign, other) = match kind {
            Kind::Okta => (entra_only.as_slice(), "entra"),
            Kind::Entra => (okta_only.as_slice(), "okta"),
        };
        if let Some((key, _)) = foreign.iter().find(|(_, set)| *set) {
            return Err(invalid(key, format!("applies to {other} connections only")));
        }
        if let Some(types) = &self.group_types {
            if let Some(bad) = types.iter().find(|t| !OKTA_GROUP_TYPES.contains(&t.as_str())) {
                return Err(invalid(
                    "rules.group_types",
                    format!("'{bad}' is not one of {}", OKTA_GROUP_TYPES.join(", ")),
                ));
            }
        }
        if let Some(staged) = &self.staged {
            if staged != "inactive" && staged != "skip" {
                return Err(invalid("rules.staged", format!("'{staged}' must be 'inactive' or 'skip'")));
            }
        }
        if let Some(source) = &self.username_source {
            let known = match kind {
                Kind::Okta => OKTA_USERNAME_SOURCES.as_slice(),
                Kind::Entra => ENTRA_USERNAME_SOURCES.as_slice(),
            };
            let attribute = source.strip_prefix("attribute:").is_some_and(|name| !name.trim().is_empty());
            if !known.contains(&source.as_str()) && !attribute {
                return Err(invalid(
                    "rules.username_source",
                    format!("'{source}' is not one of {} or attribute:<name>", known.join(", ")),
                ));
            }
        }
        for domain in &self.email_domains {
            let bare = domain.strip_prefix("*.").unwrap_or(domain);
            let valid = !bare.is_empty()
                && !bare.contains(['@', '*', ' ', '/'])
                && bare.split('.').all(|label| !label.is_empty());
            if !valid {
                return Err(invalid(
                    "rules.email_domains",
                    format!("'{domain}' is not a domain such as acme.example or *.acme.example"),
                ));
            }
        }
        for (key, names) in [
            ("rules.allowed_users_groups", &self.allowed_users_groups),
            ("rules.denied_users_groups", &self.denied_users_groups),
            ("rules.group_prefixes", &self.group_prefixes),
        ] {
            if names.iter().any(|name| name.trim().is_empty()) {
                return Err(invalid(key, "names cannot be empty"));
            }
        }
        Ok(())
    }
}

impl Schedule {
    fn validate(&self) -> Result<()> {
        for (key, text) in
            [("schedule.delta_every", &self.delta_every), ("schedule.full_every", &self.full_every)]
        {
            crate::cli::parse_duration_millis(text).map_err(|e| invalid(key, e))?;
        }
        Ok(())
    }
}

/// The stored form: the connection without secrets, as JSON text.
pub fn to_stored(connection: &Connection) -> Result<String> {
    serde_json::to_string(connection).map_err(|e| Error::internal("storing a connection", e))
}

pub fn from_stored(text: &str) -> Result<Connection> {
    serde_json::from_str(text)
        .map_err(|e| Error::Internal(format!("a stored connection does not parse: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn okta(extra_rules: Value) -> Value {
        json!({
            "name": "okta-main", "kind": "okta",
            "okta": {"org_url": "https://acme.okta.com", "auth": {"method": "api_token", "token": "00abc"}},
            "rules": extra_rules
        })
    }

    #[test]
    fn the_contract_example_parses_with_defaults() {
        let parsed = parse(okta(json!({}))).unwrap();
        assert_eq!(parsed.username_source(), "login");
        assert_eq!(parsed.group_types(), ["OKTA_GROUP", "APP_GROUP"]);
        assert_eq!(parsed.schedule, Schedule::default());
        assert_eq!(parsed.brake.max_deactivate_percent, 10);
        assert!(!parsed.skip_staged());
        let full = parse(okta(json!({
            "group_prefixes": ["eng-", "vpn-"], "group_types": ["OKTA_GROUP", "APP_GROUP"],
            "allowed_users_groups": ["eng-all"], "denied_users_groups": ["offboarding"], "app_id": null,
            "email_domains": ["acme.example", "*.acme-labs.example"], "include_subdomains": false,
            "username_source": "login", "staged": "skip"
        })))
        .unwrap();
        assert!(full.skip_staged());
    }

    #[test]
    fn bad_connections_are_refused_naming_the_key() {
        let cases = [
            (okta(json!({"username_source": "nickname"})), "rules.username_source"),
            (okta(json!({"group_types": ["TEAM"]})), "rules.group_types"),
            (okta(json!({"staged": "maybe"})), "rules.staged"),
            (okta(json!({"email_domains": ["@acme.example"]})), "rules.email_domains"),
            (okta(json!({"import_security_groups": true})), "rules.import_security_groups"),
            (okta(json!({"colour": "red"})), "rules"),
            (
                json!({"name": "Okta Main", "kind": "okta", "okta": {"org_url": "https://a.okta.com", "auth": {"method": "api_token", "token": "x"}}}),
                "'name'",
            ),
            (
                json!({"name": "o", "kind": "okta", "okta": {"org_url": "http://acme.okta.com", "auth": {"method": "api_token", "token": "x"}}}),
                "okta.org_url",
            ),
            (
                json!({"name": "o", "kind": "okta", "okta": {"org_url": "http://acme.okta.com", "allow_insecure_http": true, "auth": {"method": "api_token", "token": "x"}}}),
                "loopback",
            ),
            (
                json!({"name": "o", "kind": "okta", "okta": {"org_url": "https://a.okta.com", "auth": {"method": "password"}}}),
                "okta.auth",
            ),
            (json!({"name": "o", "kind": "okta"}), "'okta'"),
            (json!({"name": "o", "kind": "ldap"}), "kind"),
            (
                json!({"name": "o", "kind": "okta", "okta": {"org_url": "https://a.okta.com", "auth": {"method": "api_token", "token": "x"}}, "schedule": {"delta_every": "soon"}}),
                "schedule.delta_every",
            ),
            (
                json!({"name": "o", "kind": "okta", "okta": {"org_url": "https://a.okta.com", "auth": {"method": "api_token", "token": "x"}}, "brake": {"max_deactivate_percent": 101}}),
                "brake.max_deactivate_percent",
            ),
        ];
        for (body, key) in cases {
            let detail = parse(body.clone()).unwrap_err().to_string();
            assert!(detail.contains(key), "{body}: {detail}");
        }
        let loopback = json!({"name": "o", "kind": "okta", "okta": {"org_url": "http://127.0.0.1:9999", "allow_insecure_http": true, "auth": {"method": "api_token", "token": "x"}}});
        assert!(parse(loopback).is_ok());
    }

    #[test]
    fn secrets_are_taken_out_and_shown_only_as_set() {
        let mut connection = parse(okta(json!({}))).unwrap();
        let secrets = connection.take_secrets().unwrap();
        assert_eq!(secrets, vec![("okta.auth.token", "00abc".to_string())]);
        let stored = to_stored(&connection).unwrap();
        assert!(!stored.contains("00abc"));
        let shown = from_stored(&stored)
            .unwrap()
            .shown(&|name| (name == "okta.auth.token").then(|| "2026-11-30T00:00:00.000Z".into()));
        assert_eq!(
            shown["okta"]["auth"]["token"],
            json!({"set": true, "rotated_at": "2026-11-30T00:00:00.000Z"})
        );
        assert!(!shown.to_string().contains("00abc"));

        let mut entra = parse(json!({"name": "e", "kind": "entra", "entra": {"tenant": "contoso.onmicrosoft.com",
            "auth": {"method": "client_secret", "client_id": "c1", "client_secret": "s1"},
            "backup_auth": {"method": "certificate", "client_id": "c2", "private_key_pem": "KEY", "certificate_pem": "CERT"}}}))
        .unwrap();
        let secrets = entra.take_secrets().unwrap();
        assert_eq!(
            secrets,
            vec![
                ("entra.auth.client_secret", "s1".to_string()),
                ("entra.backup_auth.private_key_pem", "KEY".to_string())
            ]
        );
        assert_eq!(entra.username_source(), "userPrincipalName");
        let shown = entra.shown(&|_| None);
        assert_eq!(
            shown["entra"]["backup_auth"]["private_key_pem"],
            json!({"set": false, "rotated_at": null})
        );
        assert_eq!(shown["entra"]["backup_auth"]["certificate_pem"], "CERT", "a certificate is public");
    }

    #[test]
    fn a_consent_stays_with_its_app_in_its_tenant() {
        let entra = |tenant: &str, auth: Value, backup: Value| {
            parse(json!({"name": "e", "kind": "entra", "entra": {"tenant": tenant, "auth": auth, "backup_auth": backup}}))
                .unwrap()
        };
        let delegated = |id: &str| json!({"method": "delegated", "client_id": id, "client_secret": "s"});
        let secret = json!({"method": "client_secret", "client_id": "c", "client_secret": "s"});
        let before = entra("contoso", delegated("app-1"), secret.clone());
        assert_eq!(
            before.delegated().iter().map(|(p, a)| (*p, a.client_id())).collect::<Vec<_>>(),
            [("auth", "app-1")]
        );
        assert_eq!(
            entra("contoso", delegated("app-1"), Value::Null).refresh_tokens_kept(&before),
            ["entra.auth.refresh_token"]
        );
        assert_eq!(
            entra("CONTOSO", delegated("app-1"), secret.clone()).refresh_tokens_kept(&before).len(),
            1
        );
        assert!(entra("fabrikam", delegated("app-1"), secret.clone())
            .refresh_tokens_kept(&before)
            .is_empty());
        assert!(entra("contoso", delegated("app-2"), secret.clone()).refresh_tokens_kept(&before).is_empty());
        assert!(
            entra("contoso", secret.clone(), delegated("app-1")).refresh_tokens_kept(&before).is_empty(),
            "moved to the backup"
        );
        let both = entra("contoso", delegated("app-1"), delegated("app-3"));
        assert_eq!(
            both.refresh_tokens_kept(&both),
            ["entra.auth.refresh_token", "entra.backup_auth.refresh_token"]
        );

        let mut shown_one = both.clone();
        shown_one.take_secrets().unwrap();
        let shown = shown_one
            .shown(&|name| (name == "entra.auth.refresh_token").then(|| "2026-12-01T00:00:00.000Z".into()));
        assert_eq!(
            shown["entra"]["auth"]["refresh_token"],
            json!({"set": true, "rotated_at": "2026-12-01T00:00:00.000Z"})
        );
        assert_eq!(shown["entra"]["backup_auth"]["refresh_token"], json!({"set": false, "rotated_at": null}));
        assert_eq!(shown["entra"]["auth"]["client_secret"]["set"], false);
    }

    #[test]
    fn secret_files_are_for_config_files_only() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("token.txt"), "00fromfile\n").unwrap();
        let body = json!({"name": "o", "kind": "okta", "okta": {"org_url": "https://a.okta.com", "auth": {"method": "api_token", "token_file": "token.txt"}}});
        let mut from_api = parse(body.clone()).unwrap();
        assert!(from_api.take_secrets().unwrap_err().to_string().contains("--config"));
        let mut from_cli = parse(body).unwrap();
        from_cli.read_secret_files(dir.path()).unwrap();
        assert_eq!(from_cli.take_secrets().unwrap(), vec![("okta.auth.token", "00fromfile".to_string())]);
    }
}
