DROP INDEX user_values_user;
CREATE INDEX user_values_user ON user_values (user_id, attr, pos);
