DROP INDEX users_directory_live;
DROP INDEX users_directory_user_name;
DELETE FROM users WHERE deprovisioned_at IS NOT NULL;
CREATE UNIQUE INDEX users_directory_user_name ON users (directory_id, user_name_folded);
ALTER TABLE users DROP COLUMN deprovisioned_at;
ALTER TABLE directories DROP COLUMN deletion;
