-- Live users by userName for a list of names (an import batch asks for 500 at once). Without
-- table statistics SQLite judged walking the directory's live users cheaper than probing the
-- partial unique index once per name, as soon as the list held more than three names: a run
-- over an imported directory walked it once per batch. With deprovisioned_at in the key this
-- index matches every term of such a query and is chosen.
CREATE INDEX users_directory_user_name_live ON users (directory_id, user_name_folded, deprovisioned_at);
