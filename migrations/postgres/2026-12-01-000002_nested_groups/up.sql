-- The groups nested (at any depth) in each group whose members a run read. Graph's delta
-- reports a membership change on the group that changed only, never on the groups it is nested
-- in; a delta run finds those through this mirror and reads their members again.
CREATE TABLE sync_stage_subgroups (
    run_id              TEXT COLLATE "C" NOT NULL REFERENCES sync_runs(id) ON DELETE CASCADE,
    group_source_id     TEXT COLLATE "C" NOT NULL,
    subgroup_source_id  TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (run_id, group_source_id, subgroup_source_id)
);

CREATE TABLE sync_source_subgroups (
    connection_id       TEXT COLLATE "C" NOT NULL REFERENCES connections(id) ON DELETE CASCADE,
    group_source_id     TEXT COLLATE "C" NOT NULL,
    subgroup_source_id  TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (connection_id, group_source_id, subgroup_source_id)
);
CREATE INDEX sync_source_subgroups_nested ON sync_source_subgroups (connection_id, subgroup_source_id);
