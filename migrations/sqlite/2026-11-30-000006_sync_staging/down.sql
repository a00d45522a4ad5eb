DROP TABLE sync_stage_members;
DROP TABLE sync_stage_groups;
DROP TABLE sync_stage_users;
