//! The `scimd` binary: parse the command line, load configuration, start logging, run.

#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use clap::Parser;

use scimd::cli::{self, Cli};
use scimd::config::Config;
use scimd::error::Error;
use scimd::telemetry;

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let config = match cli::load_config(&cli) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("scimd: {error}");
            return std::process::ExitCode::FAILURE;
        }
    };
    telemetry::init(config.log_format);
    for name in Config::unknown_env_vars() {
        tracing::warn!(variable = %name, "ignoring an environment variable that matches no configuration key");
    }
    match cli::run(cli, config) {
        Ok(code) => code,
        // Bad input from the operator (a value, a config file) exits 2, like a usage error.
        Err(error @ (Error::InvalidValue(_) | Error::InvalidSyntax(_))) => {
            eprintln!("scimd: {error}");
            std::process::ExitCode::from(2)
        }
        Err(error) => {
            eprintln!("scimd: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}
