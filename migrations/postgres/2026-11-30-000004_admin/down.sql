ALTER TABLE directories DROP COLUMN max_page_size;
DROP TABLE secrets;
DROP TABLE audit_events;
DROP TABLE admin_tokens;
