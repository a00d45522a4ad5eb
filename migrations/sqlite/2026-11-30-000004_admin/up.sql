-- Admin API: admin tokens, the audit log, encrypted importer secrets, a page-size cap per directory.

-- Tokens for /admin/v1, separate from directory keys; stored like them (lookup prefix + SHA-256).
CREATE TABLE admin_tokens (
    id           TEXT PRIMARY KEY NOT NULL,
    name         TEXT NOT NULL,
    lookup       TEXT NOT NULL,
    hash         TEXT NOT NULL UNIQUE,
    created_at   BIGINT NOT NULL,
    expires_at   BIGINT,
    revoked_at   BIGINT,
    last_used_at BIGINT
);
CREATE INDEX admin_tokens_lookup ON admin_tokens (lookup);

-- One row per change, written in the transaction of the change. No foreign keys: the record of
-- a directory, key or user outlives it. `details` is JSON with attribute names, never values
-- of secrets or passwords.
CREATE TABLE audit_events (
    id            TEXT PRIMARY KEY NOT NULL,
    at            BIGINT NOT NULL,
    directory_id  TEXT,
    actor_kind    TEXT NOT NULL,
    actor_id      TEXT,
    resource_type TEXT NOT NULL,
    resource_id   TEXT,
    operation     TEXT NOT NULL,
    details       TEXT NOT NULL
);
-- Newest first, by (at, id); each filter the admin API offers has its own index.
CREATE INDEX audit_events_at ON audit_events (at, id);
CREATE INDEX audit_events_directory ON audit_events (directory_id, at, id);
CREATE INDEX audit_events_resource ON audit_events (resource_type, resource_id, at, id);
CREATE INDEX audit_events_actor ON audit_events (actor_id, at, id);

-- Importer credentials, sealed with AES-256-GCM under the server's secret key (never stored).
CREATE TABLE secrets (
    id           TEXT PRIMARY KEY NOT NULL,
    directory_id TEXT NOT NULL REFERENCES directories(id) ON DELETE CASCADE,
    owner        TEXT NOT NULL,
    name         TEXT NOT NULL,
    nonce        TEXT NOT NULL,
    ciphertext   TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    rotated_at   BIGINT NOT NULL,
    UNIQUE (owner, name)
);
CREATE INDEX secrets_directory ON secrets (directory_id);

-- Largest SCIM page this directory serves; NULL: the server's scim.max_page_size.
ALTER TABLE directories ADD COLUMN max_page_size INTEGER;
