//! Operating scimd: what a monitoring system scrapes, and starting several instances.

mod metrics;
mod startup;
