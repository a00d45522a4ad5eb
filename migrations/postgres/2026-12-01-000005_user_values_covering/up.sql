-- The per-person check of the people search (and any filter probing one user's values) reads
-- user_values by (user_id, attr) and tests the value: with the value in the index it never
-- reads the table row. Replaces the index without it, so writes keep two indexes.
DROP INDEX user_values_user;
CREATE INDEX user_values_user ON user_values (user_id, attr, pos, value);
