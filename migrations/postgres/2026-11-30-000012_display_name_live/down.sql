DROP INDEX users_directory_display_name;
CREATE INDEX users_directory_display_name ON users (directory_id, display_name_folded);
