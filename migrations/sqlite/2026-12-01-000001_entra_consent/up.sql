-- Delegated sign-in of Entra connections (graph-api.md §1.4): the consent requests under way,
-- and whether each delegated credential can still get tokens. The refresh tokens themselves are
-- importer secrets (`secrets`, sealed; names `entra.auth.refresh_token` and
-- `entra.backup_auth.refresh_token`, owner = the connection id).

-- One row per authorize link handed out, until its callback arrives or it expires (10 minutes).
-- The `state` sent to Microsoft is kept only as its SHA-256; the PKCE code verifier is sealed
-- like an importer secret. Whoever asked for the link is recorded for the audit log.
CREATE TABLE consent_requests (
    id                  TEXT PRIMARY KEY NOT NULL,
    state_hash          TEXT NOT NULL UNIQUE,
    connection_id       TEXT NOT NULL REFERENCES connections(id) ON DELETE CASCADE,
    -- `auth` or `backup_auth`: the delegated credential the consent is for.
    place               TEXT NOT NULL,
    client_id           TEXT NOT NULL,
    redirect_uri        TEXT NOT NULL,
    verifier_nonce      TEXT NOT NULL,
    verifier_ciphertext TEXT NOT NULL,
    actor_kind          TEXT NOT NULL,
    actor_id            TEXT,
    created_at          BIGINT NOT NULL,
    expires_at          BIGINT NOT NULL
);
CREATE INDEX consent_requests_connection ON consent_requests (connection_id);
CREATE INDEX consent_requests_expiry ON consent_requests (expires_at);

-- The standing of each delegated credential: `connected` after a consent (or a refresh that
-- worked), `needs_consent` once Entra refused its refresh token, with the remedy as `reason`.
-- No row: no admin has connected it yet.
CREATE TABLE connection_consents (
    connection_id TEXT NOT NULL REFERENCES connections(id) ON DELETE CASCADE,
    place         TEXT NOT NULL,
    state         TEXT NOT NULL,
    reason        TEXT,
    consented_at  BIGINT,
    changed_at    BIGINT NOT NULL,
    PRIMARY KEY (connection_id, place)
);
