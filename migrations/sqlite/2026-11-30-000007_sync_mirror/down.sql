ALTER TABLE sync_stage_groups DROP COLUMN members_read;
ALTER TABLE sync_stage_groups DROP COLUMN changed;
DROP TABLE sync_source_members;
DROP TABLE sync_source_groups;
