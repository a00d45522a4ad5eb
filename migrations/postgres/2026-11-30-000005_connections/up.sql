-- Pull-sync connections (an Okta org or Entra tenant feeding one directory), their run history,
-- and which source each user and group came from.

CREATE TABLE connections (
    id           TEXT PRIMARY KEY NOT NULL,
    directory_id TEXT NOT NULL REFERENCES directories(id) ON DELETE CASCADE,
    name         TEXT NOT NULL,
    kind         TEXT NOT NULL,
    -- The connection JSON of the contract without its secrets (those are in `secrets`, sealed,
    -- with the connection id as owner).
    config       TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL,
    -- Where the next delta run starts (source-specific: Okta's max lastUpdated seen).
    delta_state  TEXT,
    last_full_at BIGINT,
    UNIQUE (directory_id, name)
);

CREATE TABLE sync_runs (
    id            TEXT COLLATE "C" PRIMARY KEY NOT NULL,
    connection_id TEXT COLLATE "C" NOT NULL REFERENCES connections(id) ON DELETE CASCADE,
    trigger       TEXT NOT NULL,
    mode          TEXT NOT NULL,
    dry_run       BOOLEAN NOT NULL,
    status        TEXT NOT NULL,
    started_at    BIGINT NOT NULL,
    finished_at   BIGINT,
    -- The run output of the contract (counts, conflicts, warnings, error) as JSON.
    report        TEXT NOT NULL
);
CREATE INDEX sync_runs_connection ON sync_runs (connection_id, started_at);

-- Source of each record: NULL for SCIM push, else the connection that imported it, with the
-- record's id in that source. A connection finds what it owns by this index.
ALTER TABLE users ADD COLUMN source_connection TEXT COLLATE "C";
ALTER TABLE users ADD COLUMN source_id TEXT COLLATE "C";
CREATE UNIQUE INDEX users_source ON users (source_connection, source_id) WHERE source_connection IS NOT NULL;
ALTER TABLE groups ADD COLUMN source_connection TEXT COLLATE "C";
ALTER TABLE groups ADD COLUMN source_id TEXT COLLATE "C";
CREATE UNIQUE INDEX groups_source ON groups (source_connection, source_id) WHERE source_connection IS NOT NULL;
