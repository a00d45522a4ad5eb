DROP TABLE web_keys;
DROP TABLE web_sessions;
DROP TABLE saml_replays;
DROP TABLE saml_idps;
