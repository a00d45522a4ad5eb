mod auth;
mod discovery;
mod errors;
mod filters;
mod patch;
mod users;
