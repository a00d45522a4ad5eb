mod auth;
mod discovery;
mod errors;
mod users;
