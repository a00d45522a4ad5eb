-- How many live users share a display name, read from this index alone: a manager named only
-- by a name that several users share links to no one, so resolving and relinking skip such
-- names without reading their users (users::live_name_counts).
DROP INDEX users_directory_display_name;
CREATE INDEX users_directory_display_name ON users (directory_id, display_name_folded, deprovisioned_at);
