//! The `scimd` binary: parse the command line, load configuration, start logging, run.

#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use clap::Parser;

use scimd::cli::{self, Cli};
use scimd::config::Config;
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
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("scimd: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}
