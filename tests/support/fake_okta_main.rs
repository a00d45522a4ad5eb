//! Serves a generated fake Okta org on a fixed port, for running the importer by hand and for
//! load benchmarks:
//!
//! ```text
//! cargo run --release --example fake_okta -- --port 9999 --users 100000 --groups 2000 --seed 1
//! ```
//!
//! Prints the base URL and the SSWS API token, then serves until killed.

// The example uses only part of what the tests use.
#[allow(dead_code)]
#[path = "fake_okta.rs"]
mod fake_okta;

use std::time::Instant;

use fake_okta::{FakeOkta, Org};

const USAGE: &str = "usage: fake_okta [--port 9999] [--users 100000] [--groups 2000] [--seed 1]";

fn main() {
    let (mut port, mut users, mut groups, mut seed) = (9999u16, 100_000usize, 2_000usize, 1u64);
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().unwrap_or_else(|| fail(&format!("{flag} needs a value")));
        match flag.as_str() {
            "--port" => port = number(&flag, &value),
            "--users" => users = number(&flag, &value),
            "--groups" => groups = number(&flag, &value),
            "--seed" => seed = number(&flag, &value),
            _ => fail(&format!("unknown argument {flag}")),
        }
    }
    let started = Instant::now();
    let org = Org::generate(users, groups, seed);
    let generated = started.elapsed();
    let fake = FakeOkta::start_on_port(org, port);
    eprintln!("generated {users} users and {groups} groups (seed {seed}) in {generated:.2?}");
    println!("base_url  {}", fake.base_url());
    println!("api_token {}", fake.api_token());
    loop {
        std::thread::park();
    }
}

fn number<T: std::str::FromStr>(flag: &str, value: &str) -> T {
    value.parse().unwrap_or_else(|_| fail(&format!("{flag}: not a number: {value}")))
}

fn fail(message: &str) -> ! {
    eprintln!("{message}\n{USAGE}");
    std::process::exit(2);
}
