-- What each connection last read of its source's groups and their members. A delta run re-reads
-- only the groups that changed; it takes the rest from here to judge the allow/deny rules and to
-- set group members, so that a delta run and a full run reach the same directory.
CREATE TABLE sync_source_groups (
    connection_id TEXT COLLATE "C" NOT NULL REFERENCES connections(id) ON DELETE CASCADE,
    source_id     TEXT COLLATE "C" NOT NULL,
    name          TEXT NOT NULL,
    group_type    TEXT NOT NULL,
    -- Whether its members were read (only groups the rules import or name are).
    members_read  BOOLEAN NOT NULL,
    PRIMARY KEY (connection_id, source_id)
);

CREATE TABLE sync_source_members (
    connection_id   TEXT COLLATE "C" NOT NULL REFERENCES connections(id) ON DELETE CASCADE,
    group_source_id TEXT COLLATE "C" NOT NULL,
    user_source_id  TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (connection_id, group_source_id, user_source_id)
);
CREATE INDEX sync_source_members_user ON sync_source_members (connection_id, user_source_id);

-- A staged group was either read from the source by this run (`changed`) or copied from the
-- mirror above by a delta run; `members_read` says whether its members were read.
ALTER TABLE sync_stage_groups ADD COLUMN changed BOOLEAN NOT NULL DEFAULT TRUE;
ALTER TABLE sync_stage_groups ADD COLUMN members_read BOOLEAN NOT NULL DEFAULT FALSE;
