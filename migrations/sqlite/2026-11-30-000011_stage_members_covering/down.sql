DROP INDEX sync_stage_members_user;
CREATE INDEX sync_stage_members_user ON sync_stage_members (run_id, user_source_id);
