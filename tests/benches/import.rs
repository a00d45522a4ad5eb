//! The Okta importer at scale: a generated org served by the fake Okta (in this process), the
//! release `scimd` binary as its own process running `sync run`, its wall time and peak RSS.
//!
//! ```sh
//! cargo bench --bench import -- --users 100000 --groups 2000
//! cargo bench --bench import -- --users 10000 --groups 200 --okta-limits
//! cargo bench --bench import -- --users 100000 --groups 2000 --delta 1000 --skip-second-full
//! ```
//!
//! `--okta-limits` enforces Okta's published per-minute buckets in the fake (users 600, groups
//! 500, apps 100); the importer then spends half of each, as it does against a real org.

#[allow(dead_code)]
#[path = "../support/fake_okta.rs"]
mod fake_okta;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use fake_okta::{FakeOkta, Org, RateLimits};

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
    let users: usize = value("--users", "100000").parse().unwrap();
    let groups: usize = value("--groups", "2000").parse().unwrap();
    let okta_limits = args.iter().any(|a| a == "--okta-limits");
    // `--delta N`: after the full runs, N changes in the org, then a delta run.
    let changes: usize = value("--delta", "0").parse().unwrap();
    let only_delta = args.iter().any(|a| a == "--skip-second-full");

    let started = Instant::now();
    let mut org = Org::generate(users, groups, 1);
    let memberships: usize = org.members.values().map(|m| m.len()).sum();
    org.limits = if okta_limits {
        RateLimits { users_list: 600, groups: 500, apps: 100, other: 1200, window: Duration::from_secs(60) }
    } else {
        RateLimits {
            users_list: u32::MAX,
            groups: u32::MAX,
            apps: u32::MAX,
            other: u32::MAX,
            window: Duration::from_secs(60),
        }
    };
    let fake = FakeOkta::start(org);
    eprintln!(
        "generated {users} users, {groups} groups, {memberships} memberships in {:.1?}",
        started.elapsed()
    );

    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("import.db").display());
    let secret = "ab".repeat(32);
    let scimd = |args: &[&str]| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_scimd"));
        command
            .current_dir(dir.path())
            .env("SCIMD_SECRET_KEY", &secret)
            .env("RUST_LOG", "warn")
            .args(["--database-url", &db])
            .args(args);
        command
    };
    assert!(scimd(&["directory", "create", "acme"]).status().unwrap().success());
    // Everyone (BUILT_IN) is left out, as by default.
    let config = serde_json::json!({
        "name": "okta", "kind": "okta",
        "okta": {"org_url": fake.base_url(), "allow_insecure_http": true,
                 "auth": {"method": "api_token", "token": fake.api_token()}},
        "brake": {"max_deactivate_percent": 100}
    });
    std::fs::write(dir.path().join("okta.json"), config.to_string()).unwrap();
    assert!(scimd(&["connection", "create", "acme", "okta", "--config", "okta.json"])
        .status()
        .unwrap()
        .success());

    println!(
        "| run | users | groups | memberships | seconds | peak RSS MiB | created | updated | deactivated | unchanged | members added | requests |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    let row = |label: &str, args: &[&str]| {
        let requests_before = fake.requests().len();
        let (seconds, rss, report) = timed(scimd(args));
        let requests = fake.requests().len() - requests_before;
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
    let requests_before = fake.requests().len();
    row("first full run", &["sync", "run", "acme/okta", "--full", "--json"]);
    if okta_limits {
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
        row("second full run, no change", &["sync", "run", "acme/okta", "--full", "--json"]);
    }
    row("delta run, no change", &["sync", "run", "acme/okta", "--json"]);
    if changes > 0 {
        // A day's worth of churn: retitled and moved people, leavers, joiners, and group moves
        // (a membership change touches the group, not the user).
        fake.change(|org| {
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
        });
        let report = row(&format!("delta run, {changes} changes"), &["sync", "run", "acme/okta", "--json"]);
        assert_eq!(report["mode"], "delta", "{report}");
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
