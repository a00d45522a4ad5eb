-- The people lookup: whether a directory's deactivated (and deprovisioned) people stay findable,
-- shown with a "Deactivated" badge (the default, as Federated Directory keeps their contact data),
-- or are hidden from the lookup pages and the search API.
ALTER TABLE directories ADD COLUMN lookup_show_deactivated BOOLEAN NOT NULL DEFAULT TRUE;
