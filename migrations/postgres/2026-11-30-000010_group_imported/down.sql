ALTER TABLE sync_source_groups DROP COLUMN imported;
ALTER TABLE sync_stage_groups DROP COLUMN imported;
