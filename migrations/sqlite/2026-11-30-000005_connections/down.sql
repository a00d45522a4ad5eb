DROP INDEX groups_source;
ALTER TABLE groups DROP COLUMN source_id;
ALTER TABLE groups DROP COLUMN source_connection;
DROP INDEX users_source;
ALTER TABLE users DROP COLUMN source_id;
ALTER TABLE users DROP COLUMN source_connection;
DROP TABLE sync_runs;
DROP TABLE connections;
