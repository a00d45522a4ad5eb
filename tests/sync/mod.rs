mod fake_graph;
mod fake_okta;
mod graph_client;
mod okta_auth;
mod okta_delta;
mod okta_import;
mod okta_verify;
mod scheduler;
