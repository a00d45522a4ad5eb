//! The scheduler and the connection leases: several instances on one database run each
//! scheduled run once; a run refuses a second one while it holds its connection's lease; an
//! instance that dies mid-run (even by `kill -9`) leaves a consistent directory, its lease lapses,
//! its run ends `failed`, and the next run converges to what a clean import gives.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use diesel::prelude::*;
use reqwest::Method;
use serde_json::{json, Value};

use crate::support::fake_okta::{FakeOkta, Org};
use crate::support::snapshot::{assert_same, snapshot};
use crate::support::{on_both_backends, TestServer};
use scimd::config::Config;
use scimd::error::Error;
use scimd::store::audit::Actor;
use scimd::store::connections::{self, ConnectionRecord};
use scimd::store::sync_leases::{self, LeaseRow, LeaseTerms};
use scimd::store::sync_runs::{self, RunRow};
use scimd::store::{now_millis, schema};
use scimd::sync::engine::{self, RunRequest};

on_both_backends!(
    two_instances_run_a_due_connection_exactly_once,
    concurrent_starts_on_two_instances_make_one_run,
    sync_now_while_a_run_holds_the_lease_is_refused_with_409,
    a_crashed_instances_lease_lapses_and_the_next_run_takes_over,
    a_run_killed_mid_flight_leaves_the_directory_consistent_and_the_next_run_converges,
);

/// Six users, eng-all and offboarding groups.
fn small_org() -> Org {
    let mut org = Org::empty();
    org.add_group(Org::group("00gengall000000000698", "eng-all"));
    org.add_group(Org::group("00goffboard00000000698", "offboarding"));
    for (id, login, status) in [
        ("00ulead00000000000698", "lena.lead@acme.example", "ACTIVE"),
        ("00ueng000000000000698", "erik.eng@acme.example", "ACTIVE"),
        ("00uops000000000000698", "olga.ops@acme.example", "ACTIVE"),
        ("00ususp00000000000698", "sam.susp@acme.example", "SUSPENDED"),
        ("00ustag00000000000698", "stan.staged@acme.example", "STAGED"),
        ("00uoutsider0000000698", "otto@elsewhere.example", "ACTIVE"),
    ] {
        org.add_user(Org::user(id, login, status));
    }
    for user in ["00ulead00000000000698", "00ueng000000000000698", "00ususp00000000000698"] {
        org.add_member("00gengall000000000698", user);
    }
    org.add_member("00goffboard00000000698", "00uops000000000000698");
    org
}

fn connection_body(fake: &FakeOkta, scheduled: bool) -> Value {
    json!({
        "name": "okta-main", "kind": "okta",
        "okta": {"org_url": fake.base_url(), "allow_insecure_http": true,
                 "auth": {"method": "api_token", "token": fake.api_token()}},
        "rules": {"denied_users_groups": ["offboarding"]},
        "schedule": {"enabled": scheduled, "delta_every": "2h", "full_every": "24h"},
        "brake": {"max_deactivate_percent": 100}
    })
}

fn connect(server: &TestServer, fake: &FakeOkta, directory: &str, scheduled: bool) -> ConnectionRecord {
    server.connect(directory, connection_body(fake, scheduled))
}

/// An instance whose scheduler goes round every second.
fn scheduled(config: &mut Config) {
    config.sync.scheduler = true;
    config.sync.scheduler_tick_secs = 1;
}

fn full() -> RunRequest {
    RunRequest { full: true, dry_run: false, confirm: false, trigger: "cli" }
}

/// The connection's runs, newest first.
fn runs(server: &TestServer, connection_id: &str) -> Vec<RunRow> {
    let id = connection_id.to_string();
    server.store.read_now(move |conn, _| sync_runs::list(conn, &id, 100)).unwrap()
}

fn run_row(server: &TestServer, connection_id: &str, run_id: &str) -> RunRow {
    runs(server, connection_id).into_iter().find(|r| r.id == run_id).unwrap()
}

fn lease(server: &TestServer, connection_id: &str) -> Option<LeaseRow> {
    let id = connection_id.to_string();
    server.store.read_now(move |conn, _| sync_leases::find(conn, &id)).unwrap()
}

fn report(run: &RunRow) -> Value {
    serde_json::from_str(&run.report).unwrap()
}

/// Waits (a minute at most) until `check` gives a value.
async fn wait_until<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(found) = check() {
            return found;
        }
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn rounds(instance: &TestServer) -> u64 {
    instance.scheduler.as_ref().expect("the instance runs the scheduler").rounds()
}

async fn two_instances_run_a_due_connection_exactly_once(server: TestServer) {
    let fake = FakeOkta::start(small_org());
    // Slow enough that a round of the other instance falls inside the run.
    fake.set_latency(Duration::from_millis(100));
    let connection = connect(&server, &fake, "acme", true);
    // Two instances start their schedulers together; both find the connection due at once.
    let one = server.join(scheduled);
    let two = server.join(scheduled);
    let run = wait_until("the scheduled run succeeded", || {
        runs(&server, &connection.id).into_iter().find(|r| r.status == "succeeded")
    })
    .await;
    assert_eq!((run.trigger.as_str(), run.mode.as_str()), ("schedule", "full"), "{run:?}");
    // Both go round twice more (the connection is not due again for 2 h): neither runs it again.
    let (a, b) = (rounds(&one), rounds(&two));
    wait_until("both schedulers went round twice more", || {
        (rounds(&one) >= a + 2 && rounds(&two) >= b + 2).then_some(())
    })
    .await;
    let all = runs(&server, &connection.id);
    assert_eq!(all.len(), 1, "one run, by one instance: {all:#?}");
    let listings = fake.requests().iter().filter(|r| r.path_and_query == "/api/v1/users?limit=200").count();
    assert_eq!(listings, 1, "Okta's users were listed by one run only");
    assert!(lease(&server, &connection.id).is_none(), "the lease is given back when the run ends");
    let users = server.get("/scim/v2/Users?count=100").await;
    assert_eq!(users.body["totalResults"], 6, "{}", users.body);
    drop((one, two));
}

async fn concurrent_starts_on_two_instances_make_one_run(server: TestServer) {
    let fake = FakeOkta::start(small_org());
    let other = server.join(|_| {});
    let connection = connect(&server, &fake, "acme", false);
    let mut attempts = tokio::task::JoinSet::new();
    for i in 0..8 {
        let store = if i % 2 == 0 { server.store.clone() } else { other.store.clone() };
        let connection = connection.clone();
        attempts.spawn(async move { engine::start(&store, &connection, full()).await });
    }
    let (mut started, mut refused) = (Vec::new(), Vec::new());
    for attempt in attempts.join_all().await {
        match attempt {
            Ok(run) => started.push(run),
            Err(Error::Conflict(detail)) => refused.push(detail),
            Err(other) => panic!("{other}"),
        }
    }
    assert_eq!(started.len(), 1, "one run starts; refused: {refused:#?}");
    let winner = started.pop().unwrap();
    for detail in &refused {
        assert!(detail.contains(&winner.run_id) && detail.contains("already syncing"), "{detail}");
    }
    assert_eq!(runs(&server, &connection.id).len(), 1, "refused runs leave no trace");
    let held = lease(&server, &connection.id).unwrap();
    assert_eq!(held.run_id, winner.run_id);

    let key = server.config.secret_key().unwrap();
    let report = winner.execute(&server.store, key.as_ref(), &connection, &|_| {}).await.unwrap();
    assert_eq!(report.status, "succeeded", "{report:?}");
    assert!(lease(&server, &connection.id).is_none());
    // Free again: the other instance runs it.
    let report = engine::run(&other.store, key.as_ref(), &connection, full(), &|_| {}).await.unwrap();
    assert_eq!(report.status, "succeeded", "{report:?}");
    assert_eq!(runs(&server, &connection.id).len(), 2);
    drop(other);
}

async fn sync_now_while_a_run_holds_the_lease_is_refused_with_409(server: TestServer) {
    let fake = FakeOkta::start(small_org());
    // Every Okta request takes 200 ms: the run is still reading when Sync now is pressed again.
    fake.set_latency(Duration::from_millis(200));
    let connection = connect(&server, &fake, "acme", false);
    let path = format!("/admin/v1/connections/{}/sync", connection.id);
    let first = server.admin(Method::POST, &path, Some(json!({"mode": "full"}))).await;
    assert_eq!(first.status, 202, "{}", first.body);
    let run_id = first.body["run_id"].as_str().unwrap().to_string();

    let again = server.admin(Method::POST, &path, Some(json!({"mode": "delta"}))).await;
    let detail = again.assert_admin_error(409);
    assert!(detail.contains("already syncing") && detail.contains(&run_id), "{detail}");
    let held = lease(&server, &connection.id).expect("the first run holds the lease");
    assert_eq!(held.run_id, run_id);
    let since = scimd::scim::index::format_millis(held.acquired_at);
    assert!(detail.contains(&since), "says since when ({since}): {detail}");
    // Another instance refuses it too: the lease is in the database.
    let other = server.join(|_| {});
    let key = server.config.secret_key().unwrap();
    let refused = engine::run(&other.store, key.as_ref(), &connection, full(), &|_| {}).await.unwrap_err();
    assert!(matches!(&refused, Error::Conflict(d) if d.contains(&run_id)), "{refused}");

    wait_until("the first run ended", || {
        (run_row(&server, &connection.id, &run_id).status != "running").then_some(())
    })
    .await;
    assert_eq!(run_row(&server, &connection.id, &run_id).status, "succeeded");
    let third = server.admin(Method::POST, &path, Some(json!({"mode": "delta"}))).await;
    assert_eq!(third.status, 202, "the lease was given back: {}", third.body);
    let third_id = third.body["run_id"].as_str().unwrap().to_string();
    wait_until("the next run ended", || {
        (run_row(&server, &connection.id, &third_id).status != "running").then_some(())
    })
    .await;
    let history =
        server.admin(Method::GET, &format!("/admin/v1/connections/{}/runs", connection.id), None).await;
    let statuses: Vec<&str> =
        history.body["items"].as_array().unwrap().iter().map(|r| r["status"].as_str().unwrap()).collect();
    assert_eq!(statuses, ["succeeded", "succeeded"], "refused runs leave no trace");
    drop(other);
}

async fn a_crashed_instances_lease_lapses_and_the_next_run_takes_over(server: TestServer) {
    let fake = FakeOkta::start(small_org());
    let (_, mirror_key) = server.second_directory("mirror");
    // What an instance killed mid-run leaves: its run `running` and its lease, which it no longer
    // renews. Made with the connection, so that no scheduler sees one without the other.
    let config = scimd::sync::connection::parse(connection_body(&fake, true)).unwrap();
    let key = server.config.secret_key().unwrap();
    let crashed = LeaseTerms { holder: "crashed-host pid 4242 #deadbeef".into(), ttl_ms: 3_000 };
    let (connection, crashed_run, crashed_lease) = server
        .store
        .write_now(move |conn, _| {
            let connection = connections::create(conn, &Actor::Cli, key.as_ref(), "acme", config)?;
            let run = sync_runs::start(conn, &connection.id, "cli", "full", false)?;
            sync_leases::acquire(conn, &connection.id, "okta-main", &run, &crashed, now_millis())?;
            let lease = sync_leases::find(conn, &connection.id)?.unwrap();
            Ok((connection, run, lease))
        })
        .unwrap();
    // While the lease holds, nobody else runs the connection.
    let key = server.config.secret_key().unwrap();
    let refused = engine::run(&server.store, key.as_ref(), &connection, full(), &|_| {}).await.unwrap_err();
    let Error::Conflict(detail) = refused else { panic!("{refused}") };
    assert!(detail.contains(&crashed_run) && detail.contains("crashed-host pid 4242"), "{detail}");

    let instance = server.join(scheduled);
    let taken_over = wait_until("a scheduled run succeeded", || {
        runs(&server, &connection.id).into_iter().find(|r| r.status == "succeeded")
    })
    .await;
    assert_eq!(taken_over.trigger, "schedule");
    assert!(
        taken_over.started_at >= crashed_lease.expires_at,
        "taken over only once the lease lapsed: {taken_over:?} {crashed_lease:?}"
    );
    let abandoned = run_row(&server, &connection.id, &crashed_run);
    assert_eq!(abandoned.status, "failed", "{abandoned:?}");
    assert!(abandoned.finished_at.is_some());
    let error = report(&abandoned)["error"].as_str().unwrap().to_string();
    assert!(
        error.contains("crashed-host pid 4242") && error.contains("stopped") && error.contains("next run"),
        "{error}"
    );
    assert!(runs(&server, &connection.id).iter().all(|r| r.status != "running"));
    assert!(lease(&server, &connection.id).is_none());
    drop(instance);

    // The directory is what a clean import gives.
    let mirror = connect(&server, &fake, "mirror", false);
    let clean = engine::run(&server.store, key.as_ref(), &mirror, full(), &|_| {}).await.unwrap();
    assert_eq!(clean.status, "succeeded", "{clean:?}");
    assert_same(
        &snapshot(&server, &server.key).await,
        &snapshot(&server, &mirror_key).await,
        "recovered vs clean import",
    );
}

fn scimd(dir: &Path, server: &TestServer) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_scimd"));
    command
        .current_dir(dir)
        .env_remove("SCIMD_DATABASE_URL")
        .env_remove("SCIMD_CONFIG")
        .env("SCIMD_SECRET_KEY", &server.config.secret_key.0)
        // A killed run's lease lapses 5 s after its last renewal (renewed every 1.7 s).
        .env("SCIMD_SYNC__LEASE_TTL_SECS", "5")
        .args(["--database-url", &server.config.database_url]);
    command
}

/// Starts `scimd sync run acme/okta-main --full` and kills it (SIGKILL) as soon as it reports
/// `marker` on stderr.
fn kill_at(dir: &Path, server: &TestServer, marker: &str) {
    let mut child = scimd(dir, server)
        .args(["sync", "run", "acme/okta-main", "--full"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (mut seen, mut reached) = (String::new(), false);
    for line in BufReader::new(stderr).lines().map_while(Result::ok) {
        seen.push_str(&line);
        seen.push('\n');
        if line.contains(marker) {
            reached = child.kill().is_ok();
            break;
        }
    }
    let status = child.wait().unwrap();
    assert!(reached, "the run ended ({status}) before '{marker}': {seen}");
}

async fn a_run_killed_mid_flight_leaves_the_directory_consistent_and_the_next_run_converges(
    server: TestServer,
) {
    let fake = FakeOkta::start(Org::generate(1200, 16, 11));
    fake.set_latency(Duration::from_millis(30));
    let (_, mirror_key) = server.second_directory("mirror");
    let connection = connect(&server, &fake, "acme", false);
    let dir = tempfile::tempdir().unwrap();
    let running = || runs(&server, &connection.id).into_iter().find(|r| r.status == "running");

    // Killed while reading the source: its run stays `running`, its lease holds until it lapses.
    kill_at(dir.path(), &server, "users read: 400");
    let first = running().expect("the killed run is still marked running");
    let refused = scimd(dir.path(), &server).args(["sync", "run", "acme/okta-main"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("already syncing") && stderr.contains(&first.id), "{stderr}");
    assert_consistent(&server, &connection).await;
    wait_for_lapse(&server, &connection).await;

    // Killed while applying (users written, groups not yet): the next run took the lease over
    // and ended the first one.
    kill_at(dir.path(), &server, "applied users");
    let second = running().expect("the killed run is still marked running");
    assert_ne!(second.id, first.id);
    let first = run_row(&server, &connection.id, &first.id);
    assert_eq!(first.status, "failed");
    assert!(report(&first)["error"].as_str().unwrap().contains("stopped"), "{first:?}");
    assert_consistent(&server, &connection).await;
    wait_for_lapse(&server, &connection).await;

    let finished =
        scimd(dir.path(), &server).args(["sync", "run", "acme/okta-main", "--json"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&finished.stderr);
    assert_eq!(finished.status.code(), Some(0), "{stderr}");
    let outcome: Value = serde_json::from_slice(&finished.stdout).unwrap();
    assert_eq!((outcome["status"].as_str(), outcome["mode"].as_str()), (Some("succeeded"), Some("full")));
    assert_eq!(run_row(&server, &connection.id, &second.id).status, "failed");
    assert!(running().is_none());
    assert!(lease(&server, &connection.id).is_none());
    assert_consistent(&server, &connection).await;

    let mirror = connect(&server, &fake, "mirror", false);
    let key = server.config.secret_key().unwrap();
    fake.set_latency(Duration::ZERO);
    let clean = engine::run(&server.store, key.as_ref(), &mirror, full(), &|_| {}).await.unwrap();
    assert_eq!(clean.status, "succeeded", "{clean:?}");
    let (recovered, clean) = (snapshot(&server, &server.key).await, snapshot(&server, &mirror_key).await);
    assert!(recovered.len() > 1000, "{}", recovered.len());
    assert_same(&recovered, &clean, "recovered vs clean import");
}

/// Waits until the connection's lease (of a killed run) has lapsed.
async fn wait_for_lapse(server: &TestServer, connection: &ConnectionRecord) {
    wait_until("the killed run's lease lapsed", || {
        lease(server, &connection.id).is_none_or(|l| l.expires_at < now_millis()).then_some(())
    })
    .await;
}

/// What holds whatever point a run stopped at: every record reads whole over SCIM, every group
/// member is a user of the directory, and only a running run has anything staged.
async fn assert_consistent(server: &TestServer, connection: &ConnectionRecord) {
    let records = snapshot(server, &server.key).await;
    for (okta_id, record) in &records {
        assert!(record["schemas"].is_array(), "{okta_id}: {record}");
        for member in record.get("members").and_then(Value::as_array).into_iter().flatten() {
            let user = member["value"].as_str().unwrap_or_default();
            assert!(records.contains_key(user), "group {okta_id} has a member outside the directory");
        }
    }
    let running: Vec<String> =
        runs(server, &connection.id).into_iter().filter(|r| r.status == "running").map(|r| r.id).collect();
    let staged: Vec<String> = server
        .store
        .read_now(|conn, _| {
            use schema::sync_stage_users as stage;
            Ok(stage::table.select(stage::run_id).distinct().load::<String>(conn)?)
        })
        .unwrap();
    assert!(staged.iter().all(|run| running.contains(run)), "stage of ended runs left: {staged:?}");
}
