DROP INDEX users_directory_manager;
ALTER TABLE users DROP COLUMN manager_id;
