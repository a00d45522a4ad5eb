mod fake_okta;
mod okta_import;
