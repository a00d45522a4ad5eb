//! An importer at scale: a generated org served by the fake Okta, or a generated tenant served by
//! the fake Microsoft Graph (in this process), the release `scimd` binary as its own process
//! running `sync run`, its wall time, peak RSS and CPU.
//!
//! ```sh
//! cargo bench --bench import -- --users 100000 --groups 2000
//! cargo bench --bench import -- --users 10000 --groups 200 --okta-limits
//! cargo bench --bench import -- --users 100000 --groups 2000 --delta 1000 --skip-second-full
//! cargo bench --bench import -- --source entra --users 100000 --groups 2000 --delta 1000 --skip-second-full
//! ```
//!
//! `--source` is `okta` (the default) or `entra`. `--okta-limits` enforces Okta's published
//! per-minute buckets in the fake (users 600, groups 500, apps 100); the importer then spends
//! half of each, as it does against a real org; it is refused with `--source entra`. `--delta N`
//! makes N changes in the source after the full runs, then runs a delta run.
//! `--keep-database PATH` writes the SQLite database there and keeps it. `IMPORT_BENCH_BINARY`
//! runs another `scimd` build (a copy kept for an A/B comparison) instead of this one.

// The bench uses only part of what the tests use.
#[allow(dead_code)]
#[path = "../support/fake_okta.rs"]
mod fake_okta;

#[allow(dead_code)]
#[path = "../support/fake_graph.rs"]
mod fake_graph;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use fake_graph::{AppRegistration, FakeGraph, Tenant, IMPORTER_PERMISSIONS};
use fake_okta::{FakeOkta, Org, RateLimits};

/// The fake the bench generates its source in and serves it from; the connection (and its
/// `scimd` name) is named after it.
enum Source {
    Okta(FakeOkta),
    Entra(FakeGraph),
}

impl Source {
    /// Generates `users` and `groups` in the fake named `name` and starts it; returns it and its
    /// memberships (Okta: every group's members, Everyone's too; Entra: users directly in
    /// groups, not nested groups or devices).
    fn generate(name: &str, users: usize, groups: usize, okta_limits: bool) -> (Source, usize) {
        match name {
            "okta" => {
                let mut org = Org::generate(users, groups, 1);
                let memberships = org.members.values().map(|m| m.len()).sum();
                let per_minute = |n: u32| if okta_limits { n } else { u32::MAX };
                org.limits = RateLimits {
                    users_list: per_minute(600),
                    groups: per_minute(500),
                    apps: per_minute(100),
                    other: per_minute(1200),
                    window: Duration::from_secs(60),
                };
                (Source::Okta(FakeOkta::start(org)), memberships)
            }
            "entra" => {
                let tenant = Tenant::generate(users, groups, 1);
                let memberships =
                    tenant.members.values().flatten().filter(|id| tenant.users.contains_key(*id)).count();
                (Source::Entra(FakeGraph::start(tenant)), memberships)
            }
            other => refuse(&format!("unknown --source {other}: okta or entra")),
        }
    }

    /// The connection's name in `scimd` (`acme/<name>`).
    fn name(&self) -> &'static str {
        match self {
            Source::Okta(_) => "okta",
            Source::Entra(_) => "entra",
        }
    }

    /// The body of `connection create`: the default rules (Okta leaves Everyone out, Entra the
    /// groups without e-mail), and a brake that never holds.
    fn connection(&self) -> serde_json::Value {
        let brake = serde_json::json!({"max_deactivate_percent": 100});
        match self {
            Source::Okta(fake) => serde_json::json!({
                "name": self.name(), "kind": "okta",
                "okta": {"org_url": fake.base_url(), "allow_insecure_http": true,
                         "auth": {"method": "api_token", "token": fake.api_token()}},
                "brake": brake
            }),
            Source::Entra(fake) => {
                let app = fake.register_app(AppRegistration::new(&IMPORTER_PERMISSIONS));
                serde_json::json!({
                    "name": self.name(), "kind": "entra",
                    "entra": fake.entra_source(app.secret_auth()),
                    "brake": brake
                })
            }
        }
    }

    /// How many requests the fake has received so far.
    fn requests(&self) -> usize {
        match self {
            Source::Okta(fake) => fake.requests().len(),
            Source::Entra(fake) => fake.requests().len(),
        }
    }
}

/// Ends the bench on a bad command line.
fn refuse(message: &str) -> ! {
    eprintln!("import bench: {message}");
    std::process::exit(2);
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if !args.iter().any(|a| a == "--bench") {
        return; // `cargo test --all-targets` builds benches and runs them without --bench.
    }
    let value = |name: &str, default: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
            .unwrap_or_else(|| default.into())
    };
    let source = value("--source", "okta");
    let users: usize = value("--users", "100000").parse().unwrap();
    let groups: usize = value("--groups", "2000").parse().unwrap();
    let okta_limits = args.iter().any(|a| a == "--okta-limits");
    // `--delta N`: after the full runs, N changes in the org, then a delta run.
    let changes: usize = value("--delta", "0").parse().unwrap();
    let only_delta = args.iter().any(|a| a == "--skip-second-full");
    // `--narrow-to PREFIX`: at the end, the rules keep only groups named PREFIX…, then a full
    // run (an admin narrowing the allow-list: most mirrored memberships go at once).
    let narrow_to = args
        .iter()
        .position(|a| a == "--narrow-to")
        .map(|i| args.get(i + 1).cloned().unwrap_or_else(|| refuse("--narrow-to needs a group name prefix")));
    if source == "entra" && okta_limits {
        refuse("--okta-limits is for --source okta only");
    }

    let started = Instant::now();
    let (source, memberships) = Source::generate(&source, users, groups, okta_limits);
    eprintln!(
        "generated {users} users, {groups} groups, {memberships} memberships in {:.1?}",
        started.elapsed()
    );

    let dir = tempfile::tempdir().unwrap();
    // `--keep-database PATH`: the database is written there and kept, to inspect afterwards.
    let database_path = match args.iter().position(|a| a == "--keep-database") {
        Some(i) => std::path::PathBuf::from(
            args.get(i + 1).unwrap_or_else(|| refuse("--keep-database needs a path")),
        ),
        None => dir.path().join("import.db"),
    };
    let db = format!("sqlite://{}", database_path.display());
    let secret = "ab".repeat(32);
    let scimd = |args: &[&str]| {
        let binary =
            std::env::var("IMPORT_BENCH_BINARY").unwrap_or_else(|_| env!("CARGO_BIN_EXE_scimd").into());
        let mut command = Command::new(binary);
        command
            .current_dir(dir.path())
            .env("SCIMD_SECRET_KEY", &secret)
            .env("RUST_LOG", "warn")
            .args(["--database-url", &db])
            .args(args);
        command
    };
    assert!(scimd(&["directory", "create", "acme"]).status().unwrap().success());
    let name = source.name();
    let config_file = format!("{name}.json");
    let connection_config = source.connection();
    std::fs::write(dir.path().join(&config_file), connection_config.to_string()).unwrap();
    assert!(scimd(&["connection", "create", "acme", name, "--config", &config_file])
        .status()
        .unwrap()
        .success());
    let connection = format!("acme/{name}");
    let full = ["sync", "run", &connection, "--full", "--json"];
    let delta = ["sync", "run", &connection, "--json"];

    println!(
        "| run | users | groups | memberships | seconds | peak RSS MiB | created | updated | deactivated | unchanged | members added | requests |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    let row = |label: &str, args: &[&str]| {
        let requests_before = source.requests();
        let (seconds, rss, report) = timed(scimd(args));
        let requests = source.requests() - requests_before;
        println!(
            "| {label} | {users} | {groups} | {memberships} | {seconds:.1} | {rss} | {} | {} | {} | {} | {} | {requests} |",
            report["users"]["created"],
            report["users"]["updated"],
            report["users"]["deactivated"],
            report["users"]["unchanged"],
            report["memberships"]["added"]
        );
        assert_eq!(report["status"], "succeeded", "{report}");
        report
    };
    let requests_before = source.requests();
    row("first full run", &full);
    if let (Source::Okta(fake), true) = (&source, okta_limits) {
        // The least time these requests can take within half of each bucket per 60 s window:
        // a bucket's n requests need ceil(n / allowance) windows, all but the last waited out
        // whole; the importer uses the buckets one after another (users, then groups).
        let requests = fake.requests()[requests_before..].to_vec();
        let in_bucket = |f: &dyn Fn(&str) -> bool| {
            requests.iter().filter(|r| f(r.path_and_query.split('?').next().unwrap_or_default())).count()
        };
        let buckets = [
            ("users", in_bucket(&|p| p == "/api/v1/users"), 600),
            ("groups", in_bucket(&|p| p.starts_with("/api/v1/groups")), 500),
        ];
        let mut floor = 0;
        for (name, count, limit) in buckets {
            let allowance = limit / 2;
            let windows = count.div_ceil(allowance);
            floor += windows.saturating_sub(1) * 60;
            eprintln!("{name} bucket: {count} requests, {allowance} per window: {windows} windows");
        }
        println!(
            "floor set by the limits (reading only): {floor} s; compare the run's 'read the source' time"
        );
    }
    if !only_delta {
        row("second full run, no change", &full);
    }
    row("delta run, no change", &delta);
    if changes > 0 {
        // A day's worth of churn: retitled and moved people, leavers, joiners, and group
        // moves (a membership change touches the group, not the user).
        match &source {
            Source::Okta(fake) => fake.change(|org| {
                let ids: Vec<String> = org.users.iter().map(|u| u.id.clone()).collect();
                let group_ids: Vec<String> =
                    org.groups.iter().filter(|g| g.group_type != "BUILT_IN").map(|g| g.id.clone()).collect();
                for i in 0..changes {
                    let user = &ids[(i * 7919) % ids.len()];
                    match i % 4 {
                        0 | 1 => org.update_user(user, |u| {
                            u.profile.insert("title".into(), serde_json::json!(format!("Retitled {i}")));
                        }),
                        2 => org.update_user(user, |u| u.status = "DEPROVISIONED".into()),
                        _ => org.add_member(&group_ids[i % group_ids.len()], user),
                    }
                }
            }),
            Source::Entra(fake) => fake.change(|tenant| {
                let ids: Vec<String> = tenant.users.keys().cloned().collect();
                let group_ids: Vec<String> = tenant.groups.keys().cloned().collect();
                for i in 0..changes {
                    let user = &ids[(i * 7919) % ids.len()];
                    match i % 4 {
                        0 | 1 => tenant.update_user(user, |u| u.job_title = Some(format!("Retitled {i}"))),
                        2 => tenant.disable_user(user),
                        _ => tenant.add_member(&group_ids[i % group_ids.len()], user),
                    }
                }
            }),
        }
        let report = row(&format!("delta run, {changes} changes"), &delta);
        assert_eq!(report["mode"], "delta", "{report}");
    }
    if let Some(prefix) = narrow_to {
        let mut narrowed = connection_config.clone();
        narrowed["rules"] = serde_json::json!({ "group_prefixes": [prefix] });
        std::fs::write(dir.path().join(&config_file), narrowed.to_string()).unwrap();
        assert!(scimd(&["connection", "update", &connection, "--config", &config_file])
            .status()
            .unwrap()
            .success());
        row(&format!("full run, groups narrowed to {prefix}*"), &full);
    }
}

/// Runs a command to its end, sampling its peak RSS (VmHWM) while it runs.
fn timed(mut command: Command) -> (f64, u64, serde_json::Value) {
    let started = Instant::now();
    // The importer's progress (phases and their times) goes to the bench's stderr.
    let mut child = command.stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn().unwrap();
    let status_file = format!("/proc/{}/status", child.id());
    let stat_file = format!("/proc/{}/stat", child.id());
    let mut peak_kib = 0u64;
    let mut cpu_ticks = 0u64;
    loop {
        // utime + stime (fields 14 and 15), in clock ticks: CPU spent, whatever else the
        // machine runs meanwhile.
        if let Ok(stat) = std::fs::read_to_string(&stat_file) {
            let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or_default().split_whitespace().collect();
            let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
            cpu_ticks = cpu_ticks.max(ticks(11) + ticks(12));
        }
        if let Ok(status) = std::fs::read_to_string(&status_file) {
            if let Some(line) = status.lines().find(|l| l.starts_with("VmHWM:")) {
                let kib: u64 = line.split_whitespace().nth(1).and_then(|v| v.parse().ok()).unwrap_or(0);
                peak_kib = peak_kib.max(kib);
            }
        }
        if child.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let seconds = started.elapsed().as_secs_f64();
    let output = child.wait_with_output().unwrap();
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap_or_default();
    eprintln!("CPU (user + system) of the sync run, sampled: {:.1} s", cpu_ticks as f64 / 100.0);
    (seconds, peak_kib / 1024, report)
}
