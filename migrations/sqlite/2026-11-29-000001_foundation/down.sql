DROP TABLE user_values;
DROP TABLE users;
DROP TABLE directory_keys;
DROP TABLE directories;
