//! Operating scimd: what a monitoring system scrapes.

mod metrics;
