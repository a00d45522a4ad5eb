-- Value rows name their directory and attribute by one small integer instead of two strings.
-- A 100k-user import writes 2.65 M value rows; keyed by the 36-byte directory id and the
-- attribute path they took 680 MiB with their indexes and a third of the import's time.
-- `value_attrs` numbers each (directory, attribute path) pair once; filters look the number up
-- by a subquery on its unique index. The table is WITHOUT ROWID, keyed by the covering per-user
-- index it had anyway, so a row is stored twice (that key and user_values_lookup), not three
-- times, and the lookup index carries the user id instead of a rowid to follow.
CREATE TABLE value_attrs (
    id           INTEGER PRIMARY KEY NOT NULL,
    directory_id TEXT NOT NULL REFERENCES directories(id) ON DELETE CASCADE,
    attr         TEXT NOT NULL,
    UNIQUE (directory_id, attr)
);
INSERT INTO value_attrs (directory_id, attr)
    SELECT DISTINCT directory_id, attr FROM user_values ORDER BY directory_id, attr;

CREATE TABLE user_values_keyed (
    user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    attr_id INTEGER NOT NULL,
    pos     INTEGER NOT NULL,
    value   TEXT NOT NULL,
    PRIMARY KEY (user_id, attr_id, pos, value)
) WITHOUT ROWID;
INSERT OR IGNORE INTO user_values_keyed (user_id, attr_id, pos, value)
    SELECT v.user_id, a.id, v.pos, v.value
    FROM user_values v JOIN value_attrs a ON a.directory_id = v.directory_id AND a.attr = v.attr;
DROP TABLE user_values;
ALTER TABLE user_values_keyed RENAME TO user_values;
CREATE INDEX user_values_lookup ON user_values (attr_id, value);
