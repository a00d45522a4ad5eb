DROP INDEX users_manager_name_pending;
ALTER TABLE users DROP COLUMN manager_name_pending;
