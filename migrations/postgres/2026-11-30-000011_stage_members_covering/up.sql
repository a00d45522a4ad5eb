-- A user's staged memberships, read for every batch a run plans, come from this index alone.
-- Without the group in it SQLite preferred the covering primary key and walked every staged
-- membership of the run for each batch: planning 100k users took 16 s instead of about 2.
DROP INDEX sync_stage_members_user;
CREATE INDEX sync_stage_members_user ON sync_stage_members (run_id, user_source_id, group_source_id);
