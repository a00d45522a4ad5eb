mod auth;
mod discovery;
mod errors;
mod filters;
mod groups;
mod patch;
mod users;
