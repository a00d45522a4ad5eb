//! Load run against the real release server (not a test): seeds a directory of N users through
//! the store, starts `scimd serve` as its own process on that database, drives it over HTTP
//! with keep-alive clients and reports throughput, latency percentiles, CPU and RSS.
//!
//! ```sh
//! cargo bench --bench load -- --backend sqlite --users 10000,100000 --concurrency 16,64 --seconds 10
//! ```
//! Operations (`--ops`): `create`, `lookup` (`userName eq`), `deactivate` (PATCH active),
//! `page` (pages of 100 in order, as an IdP imports) and `page_random` (any page).
//! `--groups 10,10000,100000` instead measures `group_patch`: 10 members added to, then removed
//! from, one group of each size (the membership cost must not grow with the group).
//! PostgreSQL runs on a throwaway cluster this bench starts (like the tests do).
//! Under `cargo test` (no `--bench` argument) it does nothing.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a bench stops loudly

#[path = "../support/db.rs"]
mod db;
#[path = "server.rs"]
mod server;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use scimd::app;
use scimd::config::Config;
use scimd::ids::DirectoryId;
use scimd::scim::resource;
use scimd::store::audit::Actor;
use scimd::store::{directories, keys, users, Store};
use server::{percentile, serve, Server};

struct Options {
    backend: String,
    sizes: Vec<u64>,
    concurrency: Vec<usize>,
    seconds: u64,
    ops: Vec<String>,
    /// Group sizes for the membership bench (`--groups 10,10000,100000`); replaces the user ops.
    groups: Vec<u64>,
}

fn options() -> Option<Options> {
    let args: Vec<String> = std::env::args().collect();
    if !args.iter().any(|a| a == "--bench") {
        return None;
    }
    let value = |name: &str, default: &str| -> String {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
            .unwrap_or_else(|| default.to_string())
    };
    let list = |name: &str, default: &str| -> Vec<String> {
        value(name, default).split(',').map(str::to_string).collect()
    };
    Some(Options {
        backend: value("--backend", "sqlite"),
        sizes: list("--users", "10000").iter().map(|s| s.parse().unwrap()).collect(),
        concurrency: list("--concurrency", "16,64").iter().map(|s| s.parse().unwrap()).collect(),
        seconds: value("--seconds", "10").parse().unwrap(),
        ops: list("--ops", "create,lookup,deactivate,page,page_random"),
        groups: if args.iter().any(|a| a == "--groups") {
            list("--groups", "").iter().map(|s| s.parse().unwrap()).collect()
        } else {
            Vec::new()
        },
    })
}

fn user(n: u64) -> Value {
    json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User", "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"],
        "userName": format!("user{n}@bench.example"), "externalId": format!("00u{n:012}"),
        "displayName": format!("Bench User {n}"), "title": "Engineer", "active": true,
        "name": {"givenName": "Bench", "familyName": format!("User{n}")},
        "emails": [{"value": format!("user{n}@bench.example"), "type": "work", "primary": true}],
        "phoneNumbers": [{"value": format!("+1 555 {n:07}"), "type": "work"}],
        "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {"department": "R&D", "employeeNumber": n.to_string()}
    })
}

/// Seeds `count` users in transactions of 2,000; returns their ids.
fn seed(store: &Store, directory: &DirectoryId, count: u64) -> Vec<String> {
    let started = Instant::now();
    let mut ids = Vec::with_capacity(count as usize);
    let mut next = 0;
    while next < count {
        let end = (next + 2_000).min(count);
        let directory = directory.clone();
        let batch: Vec<_> =
            (next..end).map(|n| resource::normalize(&store.registry().user, &user(n)).unwrap()).collect();
        let created = store
            .write_now(move |conn, registry| {
                batch
                    .into_iter()
                    .map(|r| users::insert(conn, registry, &directory, &Actor::Cli, r).map(|u| u.meta.id))
                    .collect::<Result<Vec<_>, _>>()
            })
            .unwrap();
        ids.extend(created);
        // A fresh PostgreSQL table has no statistics, so the planner scans it instead of using its
        // indexes and the seeding turns quadratic; autovacuum would catch up only minutes later.
        // Analyse as it doubles, as an operator importing a directory at once would.
        let batches = end.div_ceil(2_000);
        if store.backend() == scimd::store::Backend::Postgres && batches.is_power_of_two() {
            store
                .write_now(|conn, _| {
                    diesel::connection::SimpleConnection::batch_execute(
                        conn,
                        "ANALYZE users; ANALYZE user_values",
                    )
                    .map_err(scimd::store::db_error)
                })
                .unwrap();
        }
        next = end;
    }
    eprintln!("seeded {count} users in {:.1} s", started.elapsed().as_secs_f64());
    ids
}

fn proc_cpu_ticks(pid: &str) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> =
        stat.rsplit_once(')').map(|(_, rest)| rest.split_whitespace().collect()).unwrap_or_default();
    // utime and stime are fields 14 and 15; after the ')' they are at 11 and 12.
    fields.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
        + fields.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
}

fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

struct Outcome {
    requests: u64,
    errors: u64,
    latencies_us: Vec<u32>,
    elapsed: Duration,
}

/// Numbers new userNames across every phase of a run, so creates never collide.
static CREATED: AtomicU64 = AtomicU64::new(0);

#[allow(clippy::too_many_arguments)]
async fn drive(
    op: &str,
    base: &str,
    key: &str,
    ids: Arc<Vec<String>>,
    users: u64,
    group: &str,
    concurrency: usize,
    seconds: u64,
) -> Outcome {
    let counter = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for worker in 0..concurrency {
        let (op, base, key, ids, counter, group) = (
            op.to_string(),
            base.to_string(),
            key.to_string(),
            ids.clone(),
            counter.clone(),
            group.to_string(),
        );
        tasks.push(tokio::spawn(async move {
            let client = reqwest::Client::builder().pool_max_idle_per_host(1).build().unwrap();
            let mut latencies = Vec::new();
            let mut errors = 0u64;
            let mut state = (worker as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
            let mut random = move || {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state
            };
            let first_page = random();
            let mut n_local = 0u64;
            let mut batch: Vec<String> = Vec::new();
            while Instant::now() < deadline {
                let n = counter.fetch_add(1, Ordering::Relaxed);
                let request = match op.as_str() {
                    "create" => client
                        .post(format!("{base}/scim/v2/Users"))
                        .header("content-type", "application/scim+json")
                        .body(user(1_000_000_000 + CREATED.fetch_add(1, Ordering::Relaxed)).to_string()),
                    "lookup" => {
                        let target = random() % users;
                        client
                            .get(format!("{base}/scim/v2/Users"))
                            .query(&[("filter", format!("userName eq \"user{target}@bench.example\""))])
                    }
                    "deactivate" => {
                        let id = &ids[(random() % ids.len() as u64) as usize];
                        let active = n % 2 == 1;
                        client
                            .patch(format!("{base}/scim/v2/Users/{id}"))
                            .header("content-type", "application/scim+json")
                            .body(
                                json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                                   "Operations": [{"op": "replace", "value": {"active": active}}]})
                                .to_string(),
                            )
                    }
                    // As an IdP imports: page after page, each worker from its own random start.
                    "page" => {
                        let pages = (users / 100).max(1);
                        let page = (first_page + n_local) % pages;
                        n_local += 1;
                        client.get(format!("{base}/scim/v2/Users?startIndex={}&count=100", page * 100 + 1))
                    }
                    // Any page at random: every request pays for the offset.
                    "page_random" => {
                        let pages = (users / 100).max(1);
                        let start = (random() % pages) * 100 + 1;
                        client.get(format!("{base}/scim/v2/Users?startIndex={start}&count=100"))
                    }
                    // Ten members in, then the same ten out, of one group (`ids` are non-members).
                    "group_patch" => {
                        let operation = if batch.is_empty() {
                            batch = (0..10)
                                .map(|_| ids[(random() % ids.len() as u64) as usize].clone())
                                .collect();
                            let members: Vec<Value> = batch.iter().map(|id| json!({"value": id})).collect();
                            json!({"op": "add", "path": "members", "value": members})
                        } else {
                            let members: Vec<Value> =
                                batch.drain(..).map(|id| json!({"value": id})).collect();
                            json!({"op": "remove", "path": "members", "value": members})
                        };
                        client
                            .patch(format!("{base}/scim/v2/Groups/{group}"))
                            .header("content-type", "application/scim+json")
                            .body(
                                json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                                   "Operations": [operation]})
                                .to_string(),
                            )
                    }
                    other => panic!("unknown op {other}"),
                };
                let sent = Instant::now();
                let ok = match request.bearer_auth(&key).send().await {
                    Ok(response) => {
                        let status = response.status();
                        let _ = response.bytes().await;
                        status.is_success()
                    }
                    Err(_) => false,
                };
                latencies.push(sent.elapsed().as_micros().min(u32::MAX as u128) as u32);
                if !ok {
                    errors += 1;
                }
            }
            (latencies, errors)
        }));
    }
    let mut outcome = Outcome { requests: 0, errors: 0, latencies_us: Vec::new(), elapsed: Duration::ZERO };
    for task in tasks {
        let (latencies, errors) = task.await.unwrap();
        outcome.requests += latencies.len() as u64;
        outcome.errors += errors;
        outcome.latencies_us.extend(latencies);
    }
    outcome.elapsed = started.elapsed();
    outcome.latencies_us.sort_unstable();
    outcome
}

fn database(backend: &str, dir: &std::path::Path, size: u64) -> String {
    match backend {
        "sqlite" => format!("sqlite://{}", dir.join(format!("bench-{size}.db")).display()),
        "postgres" => {
            db::keep_durable_defaults();
            let cluster = db::pg_cluster().unwrap();
            cluster.create_database(&db::unique_database_name(&format!("bench_{size}")), None).unwrap()
        }
        other => panic!("unknown backend {other}: use sqlite or postgres"),
    }
}

/// A fresh database with one directory and its key.
fn prepare(options: &Options, dir: &std::path::Path, size: u64) -> (String, Store, DirectoryId, String) {
    let url = database(&options.backend, dir, size);
    let config = Config { database_url: url.clone(), ..Config::default() };
    let store = app::open_store(&config).unwrap();
    store.migrate().unwrap();
    let (directory, key) = store
        .write_now(|conn, _| {
            let created = directories::create(conn, &Actor::Cli, "bench", "Bench")?;
            Ok((created.id.clone(), keys::issue(conn, &Actor::Cli, &created.id, "bench", None)?.token.secret))
        })
        .unwrap();
    (url, store, directory, key)
}

/// Drives one row and prints it.
#[allow(clippy::too_many_arguments)]
fn measure(
    runtime: &tokio::runtime::Runtime,
    options: &Options,
    server: &Server,
    base: &str,
    key: &str,
    op: &str,
    ids: Arc<Vec<String>>,
    size: u64,
    group: &str,
    concurrency: usize,
) {
    let pid = server.0.id().to_string();
    let server_before = proc_cpu_ticks(&pid);
    let client_before = proc_cpu_ticks("self");
    let outcome = runtime.block_on(drive(op, base, key, ids, size, group, concurrency, options.seconds));
    let ticks_per_second = 100.0; // USER_HZ on Linux
    let seconds = outcome.elapsed.as_secs_f64();
    let server_cpu = (proc_cpu_ticks(&pid) - server_before) as f64 / ticks_per_second / seconds * 100.0;
    let client_cpu = (proc_cpu_ticks("self") - client_before) as f64 / ticks_per_second / seconds * 100.0;
    println!(
        "| {} | {} | {} | {} | {:.0} | {:.2} | {:.2} | {} | {:.0} | {:.0} | {:.0} |",
        options.backend,
        size,
        op,
        concurrency,
        outcome.requests as f64 / seconds,
        percentile(&outcome.latencies_us, 0.50),
        percentile(&outcome.latencies_us, 0.99),
        outcome.errors,
        server_cpu,
        client_cpu,
        rss_mib(server.0.id()),
    );
}

/// Membership PATCH (10 members in, 10 out) against groups of each size, in one directory whose
/// other users are the members added: the cost must not depend on the group's size.
fn group_bench(runtime: &tokio::runtime::Runtime, options: &Options, dir: &std::path::Path) {
    const POOL: u64 = 10_000;
    let largest = options.groups.iter().copied().max().unwrap_or(0);
    let (url, store, directory, key) = prepare(options, dir, largest + POOL);
    let ids = seed(&store, &directory, largest + POOL);
    let pool = Arc::new(ids[ids.len() - POOL as usize..].to_vec());
    let mut groups = Vec::new();
    for (n, &size) in options.groups.iter().enumerate() {
        let started = Instant::now();
        let members: std::collections::BTreeSet<String> = ids[..size as usize].iter().cloned().collect();
        let directory = directory.clone();
        let body = json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"], "displayName": format!("Group {n}")});
        let stored = resource::normalize(&store.registry().group, &body).unwrap();
        let created = store
            .write_now(move |conn, _| {
                scimd::store::groups::insert(conn, &directory, &Actor::Cli, stored, members)
            })
            .unwrap();
        eprintln!("group of {size} members created in {:.1} s", started.elapsed().as_secs_f64());
        groups.push((size, created.meta.id));
    }
    drop(store);
    let (server, base) = serve(&url);
    for (size, group) in &groups {
        for &concurrency in &options.concurrency {
            measure(
                runtime,
                options,
                &server,
                &base,
                &key,
                "group_patch",
                pool.clone(),
                *size,
                group,
                concurrency,
            );
        }
    }
}

fn main() {
    let Some(options) = options() else {
        eprintln!("load bench: run it with `cargo bench --bench load` (see the file's header)");
        return;
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let size_header = if options.groups.is_empty() { "users" } else { "members" };
    println!("| backend | {size_header} | op | concurrency | req/s | p50 ms | p99 ms | errors | server CPU % | client CPU % | server RSS MiB |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    if !options.groups.is_empty() {
        return group_bench(&runtime, &options, dir.path());
    }
    for &size in &options.sizes {
        let (url, store, directory, key) = prepare(&options, dir.path(), size);
        let ids = Arc::new(seed(&store, &directory, size));
        drop(store);
        let (server, base) = serve(&url);
        for op in &options.ops {
            for &concurrency in &options.concurrency {
                measure(&runtime, &options, &server, &base, &key, op, ids.clone(), size, "", concurrency);
            }
        }
        drop(server);
    }
}
