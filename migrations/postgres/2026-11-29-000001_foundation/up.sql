-- Foundation: directories (tenants), their bearer keys, and users.
-- Times are epoch milliseconds (UTC); ids are UUIDv7 text, so ordering by id is creation order.
-- PostgreSQL: compared columns use the C collation so ordering and prefix ranges are bytewise,
-- exactly as in SQLite, and one btree serves =, <, > and prefix search.

CREATE TABLE directories (
    id          TEXT PRIMARY KEY NOT NULL,
    slug        TEXT NOT NULL UNIQUE,
    name        TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);

CREATE TABLE directory_keys (
    id           TEXT PRIMARY KEY NOT NULL,
    directory_id TEXT NOT NULL REFERENCES directories(id) ON DELETE CASCADE,
    name         TEXT NOT NULL,
    -- The public first characters of the token, shown in listings and used to find the row.
    lookup       TEXT NOT NULL,
    -- SHA-256 of the whole token, hex; the token itself is never stored.
    hash         TEXT NOT NULL UNIQUE,
    created_at   BIGINT NOT NULL,
    expires_at   BIGINT,
    revoked_at   BIGINT,
    last_used_at BIGINT
);
CREATE INDEX directory_keys_lookup ON directory_keys (lookup);
CREATE INDEX directory_keys_directory ON directory_keys (directory_id);

CREATE TABLE users (
    id                  TEXT COLLATE "C" PRIMARY KEY NOT NULL,
    directory_id        TEXT NOT NULL REFERENCES directories(id) ON DELETE CASCADE,
    user_name           TEXT NOT NULL,
    -- Case-folded copies (scim::index::fold) of case-insensitive attributes, for indexes.
    user_name_folded    TEXT COLLATE "C" NOT NULL,
    external_id         TEXT COLLATE "C",
    display_name_folded TEXT COLLATE "C",
    active              BOOLEAN NOT NULL,
    -- The stored resource (canonical SCIM JSON without id, meta and groups).
    data                TEXT NOT NULL,
    created_at          BIGINT NOT NULL,
    modified_at         BIGINT NOT NULL,
    version             BIGINT NOT NULL
);
CREATE UNIQUE INDEX users_directory_user_name ON users (directory_id, user_name_folded);
CREATE INDEX users_directory_id ON users (directory_id, id);
CREATE INDEX users_directory_external_id ON users (directory_id, external_id);
CREATE INDEX users_directory_display_name ON users (directory_id, display_name_folded);
CREATE INDEX users_directory_active ON users (directory_id, active, id);
CREATE INDEX users_directory_modified ON users (directory_id, modified_at);
CREATE INDEX users_directory_created ON users (directory_id, created_at);

-- Every other attribute value of a user, one row per leaf, so that any filter runs on an index.
-- attr is the lower-case path (scim::index), pos the element index within a multi-valued
-- attribute (0 for single values); a row with the bare attribute name marks each element.
CREATE TABLE user_values (
    directory_id TEXT NOT NULL,
    user_id      TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    attr         TEXT NOT NULL,
    pos          INTEGER NOT NULL,
    value        TEXT COLLATE "C" NOT NULL
);
CREATE INDEX user_values_lookup ON user_values (directory_id, attr, value);
CREATE INDEX user_values_user ON user_values (user_id, attr, pos);
