//! Serves a generated fake Entra tenant (identity platform + Microsoft Graph) on a fixed port,
//! for running the importer by hand and for benchmarks:
//!
//! ```text
//! cargo run --release --example fake_graph -- --port 9998 --users 100000 --groups 2000 --seed 1
//! ```
//!
//! Prints the URLs, the tenant id, and an app's client id and secret (application permissions
//! User.Read.All and GroupMember.Read.All; the test certificate under tests/fixtures/graph is
//! registered too), then serves until killed.

// The example uses only part of what the tests use.
#[allow(dead_code)]
#[path = "fake_graph.rs"]
mod fake_graph;

use std::time::Instant;

use fake_graph::{AppRegistration, FakeGraph, Tenant, APP_CERTIFICATE, IMPORTER_PERMISSIONS};

const USAGE: &str = "usage: fake_graph [--port 9998] [--users 100000] [--groups 2000] [--seed 1]";

fn main() {
    let (mut port, mut users, mut groups, mut seed) = (9998u16, 100_000usize, 2_000usize, 1u64);
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
    let tenant = Tenant::generate(users, groups, seed);
    let generated = started.elapsed();
    let fake = FakeGraph::start_on_port(tenant, port);
    let app =
        fake.register_app(AppRegistration::new(&IMPORTER_PERMISSIONS).with_certificate(APP_CERTIFICATE));
    eprintln!("generated {users} users and {groups} groups (seed {seed}) in {generated:.2?}");
    println!("login_url     {}", fake.base_url());
    println!("graph_url     {}", fake.base_url());
    println!("tenant        {}", fake.tenant_id());
    println!("token_url     {}", fake.token_url());
    println!("client_id     {}", app.client_id);
    println!("client_secret {}", app.secret());
    println!("certificate   tests/fixtures/graph/app-certificate.pem (key: app-private-key.pem)");
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
