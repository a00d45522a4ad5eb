-- The user a user's enterprise manager resolves to, best effort (store::users::resolve_manager).
-- The manager as the client sent it stays in users.data; this is only the link, kept apart so
-- re-resolving (the manager arrives later, or is renamed) never rewrites what the client sent.
ALTER TABLE users ADD COLUMN manager_id TEXT COLLATE "C" REFERENCES users(id) ON DELETE SET NULL;
CREATE INDEX users_directory_manager ON users (directory_id, manager_id);
