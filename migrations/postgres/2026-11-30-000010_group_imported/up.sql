-- Whether the rules import a staged group. The importer that read the group decides, by its
-- source's rules (Okta: group types, prefixes, app assignments; Entra: e-mail, security,
-- prefixes), so that planning and applying groups need no source-specific rule. The mirror
-- keeps it for the groups a delta run does not re-read.
ALTER TABLE sync_stage_groups ADD COLUMN imported BOOLEAN NOT NULL DEFAULT TRUE;
ALTER TABLE sync_source_groups ADD COLUMN imported BOOLEAN NOT NULL DEFAULT TRUE;
