-- What a sync run read from its source, staged page by page so a run's memory stays bounded
-- whatever the directory's size; planned and applied from here, deleted when the run ends.
CREATE TABLE sync_stage_users (
    run_id           TEXT COLLATE "C" NOT NULL REFERENCES sync_runs(id) ON DELETE CASCADE,
    source_id        TEXT COLLATE "C" NOT NULL,
    -- The scimd id this record has (the owned user's) or will get (fresh), known before any
    -- write so that managers can be linked whatever order users arrive in.
    user_id          TEXT COLLATE "C" NOT NULL,
    user_name_folded TEXT COLLATE "C",
    created          TEXT NOT NULL,
    data             TEXT NOT NULL,
    PRIMARY KEY (run_id, source_id)
);
CREATE INDEX sync_stage_users_name ON sync_stage_users (run_id, user_name_folded);

CREATE TABLE sync_stage_groups (
    run_id     TEXT COLLATE "C" NOT NULL REFERENCES sync_runs(id) ON DELETE CASCADE,
    source_id  TEXT COLLATE "C" NOT NULL,
    name       TEXT NOT NULL,
    group_type TEXT NOT NULL,
    PRIMARY KEY (run_id, source_id)
);

CREATE TABLE sync_stage_members (
    run_id          TEXT COLLATE "C" NOT NULL REFERENCES sync_runs(id) ON DELETE CASCADE,
    group_source_id TEXT COLLATE "C" NOT NULL,
    user_source_id  TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (run_id, group_source_id, user_source_id)
);
CREATE INDEX sync_stage_members_user ON sync_stage_members (run_id, user_source_id);
