DROP TABLE sync_source_subgroups;
DROP TABLE sync_stage_subgroups;
