mod auth;
mod conversations;
mod discovery;
mod errors;
mod filters;
mod groups;
mod patch;
mod users;
