DROP TABLE connection_consents;
DROP TABLE consent_requests;
