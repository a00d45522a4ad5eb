-- SAML sign-in: each directory's IdP, the replay cache, browser sessions, the cookie key.

-- How a directory trusts its IdP. A signing certificate is required: without one nothing could
-- be verified.
CREATE TABLE saml_idps (
    directory_id        TEXT PRIMARY KEY NOT NULL REFERENCES directories(id) ON DELETE CASCADE,
    sso_url             TEXT NOT NULL,
    certificate_pem     TEXT NOT NULL,
    idp_entity_id       TEXT NOT NULL,
    user_attribute      TEXT NOT NULL,
    allow_idp_initiated BOOLEAN NOT NULL,
    updated_at          BIGINT NOT NULL
);

-- Assertion ids and answered request ids already used, across instances, until they expire:
-- `<directory id>:assertion:<id>` and `<directory id>:request:<id>`.
CREATE TABLE saml_replays (
    id         TEXT PRIMARY KEY NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX saml_replays_expiry ON saml_replays (expires_at);

-- Signed-in browsers. The cookie carries the session id (signed); only its SHA-256 is stored.
CREATE TABLE web_sessions (
    id_hash      TEXT PRIMARY KEY NOT NULL,
    directory_id TEXT NOT NULL REFERENCES directories(id) ON DELETE CASCADE,
    user_id      TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    csrf_token   TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL,
    revoked_at   BIGINT
);
CREATE INDEX web_sessions_user ON web_sessions (user_id);
CREATE INDEX web_sessions_expiry ON web_sessions (expires_at);

-- Keys made by scimd itself on first use and shared by all instances (the cookie HMAC key).
CREATE TABLE web_keys (
    name       TEXT PRIMARY KEY NOT NULL,
    secret     TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
