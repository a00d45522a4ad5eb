-- The folded manager displayName of a user whose manager link does not come from the manager's
-- `value` (no value, or one that names nobody yet): only these reports can change link when a
-- user of that name arrives, is renamed or leaves. Kept apart from user_values (which has every
-- report's manager name, for filters) so that a new user re-resolves these few reports instead
-- of every report whose manager shares a common name.
ALTER TABLE users ADD COLUMN manager_name_pending TEXT;
CREATE INDEX users_manager_name_pending ON users (directory_id, manager_name_pending)
    WHERE manager_name_pending IS NOT NULL;
-- Existing reports not linked by their value: as the relinking before this column treated them.
UPDATE users SET manager_name_pending = (
    SELECT v.value FROM user_values v
    WHERE v.user_id = users.id AND v.attr = 'enterprise:manager.displayname'
    ORDER BY v.pos LIMIT 1
)
WHERE NOT EXISTS (
    SELECT 1 FROM user_values w
    WHERE w.user_id = users.id AND w.attr = 'enterprise:manager.value' AND w.value = users.manager_id
);
