-- Deletion policy per directory: 'deactivate' (default) keeps a deleted user as deprovisioned,
-- invisible to SCIM but kept for directory lookup and audit; 'delete' removes the row.
ALTER TABLE directories ADD COLUMN deletion TEXT NOT NULL DEFAULT 'deactivate';

-- When a user was deprovisioned (SCIM DELETE under 'deactivate'); NULL while live.
ALTER TABLE users ADD COLUMN deprovisioned_at BIGINT;

-- userName is unique among live users only, so a deprovisioned person's userName may be
-- provisioned again.
DROP INDEX users_directory_user_name;
CREATE UNIQUE INDEX users_directory_user_name ON users (directory_id, user_name_folded)
    WHERE deprovisioned_at IS NULL;
-- SCIM lists only live users (deprovisioned_at IS NULL), in id order. With the flag in the
-- index, counting them and walking to an offset never visit the table; a partial index on
-- (directory_id, id) did not stop SQLite counting through another index and reading every row.
CREATE INDEX users_directory_live ON users (directory_id, deprovisioned_at, id);
