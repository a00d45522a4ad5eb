ALTER TABLE directories DROP COLUMN lookup_show_deactivated;
