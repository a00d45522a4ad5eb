CREATE TABLE user_values_named (
    directory_id TEXT NOT NULL,
    user_id      TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    attr         TEXT NOT NULL,
    pos          INTEGER NOT NULL,
    value        TEXT COLLATE "C" NOT NULL
);
INSERT INTO user_values_named (directory_id, user_id, attr, pos, value)
    SELECT a.directory_id, v.user_id, a.attr, v.pos, v.value
    FROM user_values v JOIN value_attrs a ON a.id = v.attr_id;
DROP TABLE user_values;
ALTER TABLE user_values_named RENAME TO user_values;
CREATE INDEX user_values_lookup ON user_values (directory_id, attr, value);
CREATE INDEX user_values_user ON user_values (user_id, attr, pos, value);
DROP TABLE value_attrs;
