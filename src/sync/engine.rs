//! One sync run of a connection: read the source into the stage, plan, check the brake, apply
//! in batches through the repository, record the run. Memory holds one page or one batch at a
//! time, never the directory.
//!
//! A run that fails while reading applies nothing. Applying goes batch by batch, each batch one
//! transaction: a run cut short (even by `kill -9`) leaves every batch whole, and the next run
//! converges, since each decision compares the source with what is stored.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Arc;

use futures_util::future::BoxFuture;
use futures_util::StreamExt;
use serde_json::{json, Value};

use super::connection::{refresh_token_name, Connection, EntraAuth, Kind, OktaAuth};
use super::graph::{self, GraphClient};
use super::okta::{self, Caps, OktaClient};
use super::plan::{self, Current, Decision, Facts, UserRules};
use super::rules::{self, GroupRef};
use super::source::MappedUser;
use super::source::SourceStatus;
use crate::encryption::SecretKey;
use crate::error::{Error, Result};
use crate::ids::{DirectoryId, UserId};
use crate::scim::members::MemberChanges;
use crate::scim::resource::{self, Stored};
use crate::scim::schema::{Registry, GROUP_SCHEMA};
use crate::store::audit::Actor;
use crate::store::connections::ConnectionRecord;
use crate::store::sync_runs::{self, StagedGroup, StagedUser};
use crate::store::{consents, groups, secrets, source_mirror, users, Store};

/// Users planned or applied per transaction.
const BATCH: i64 = 500;
/// Okta's page size for users and groups (its maximum for users).
const PAGE: usize = 200;
/// Batches of users applied in one transaction. Each commit writes every page its batches
/// touched, and the value index's pages are touched all over, so fewer, larger commits write
/// less: 10 instead of 4 took a 100k import from 84.7 to 75.1 s (BENCHMARKS.md). Only one
/// batch's users are held at a time, whatever this is.
const BATCHES_PER_COMMIT: usize = 10;
/// Groups whose members are read at once: Okta advises at most 2-4 requests in flight per org.
const MEMBER_READS_IN_FLIGHT: usize = 4;
/// Users staged per transaction while a run reads (see [`Stager`]): a mapped user holds its
/// whole resource, so this bounds the memory of two transactions' worth (one buffered, one being
/// written). At 2,000 an Entra import of 100k users peaked at 206 MiB RSS.
const STAGE_USERS: usize = 1_000;
/// Membership rows staged per transaction while a run reads (small rows).
const STAGE_MEMBERS: usize = 20_000;
/// Users asked for by id in one request (`id eq "…" or …`): keeps the URL near 2 KB.
const AFFECTED_PER_REQUEST: usize = 40;

/// How a run was asked for.
#[derive(Debug, Clone)]
pub struct RunRequest {
    pub full: bool,
    pub dry_run: bool,
    /// Apply a plan the brake stopped.
    pub confirm: bool,
    /// `cli`, `api` or `schedule`.
    pub trigger: &'static str,
}

/// The run output of the contract (`sync-rules.md` §2).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counts {
    pub users_created: u64,
    pub users_updated: u64,
    pub users_deactivated: u64,
    pub users_reactivated: u64,
    pub users_unchanged: u64,
    pub groups_created: u64,
    pub groups_updated: u64,
    pub groups_stale: u64,
    pub groups_unchanged: u64,
    pub members_added: u64,
    pub members_removed: u64,
}

#[derive(Debug, Clone)]
pub struct Report {
    pub run_id: String,
    pub status: &'static str,
    pub mode: &'static str,
    pub counts: Counts,
    pub conflicts: Vec<Value>,
    pub warnings: Vec<String>,
    pub error: Option<String>,
}

impl Report {
    pub fn to_json(&self) -> Value {
        let c = &self.counts;
        json!({
            "run_id": self.run_id, "status": self.status, "mode": self.mode,
            "users": {"created": c.users_created, "updated": c.users_updated, "deactivated": c.users_deactivated,
                      "reactivated": c.users_reactivated, "unchanged": c.users_unchanged},
            "groups": {"created": c.groups_created, "updated": c.groups_updated, "stale": c.groups_stale,
                       "unchanged": c.groups_unchanged},
            "memberships": {"added": c.members_added, "removed": c.members_removed},
            "conflicts": self.conflicts, "warnings": self.warnings, "error": self.error,
        })
    }
}

/// Progress for the CLI (pages and users read); silent elsewhere.
pub type Progress = dyn Fn(&str) + Send + Sync;

/// A run that is recorded (`running`) and not yet executed: its id can be handed out first.
#[derive(Debug)]
pub struct Started {
    pub run_id: String,
    request: RunRequest,
    mode: Mode,
    warnings: Vec<String>,
}

/// What a run reads.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Mode {
    /// Everything: the only way to see records deleted in the source.
    Full,
    /// What changed since `since` (Okta's clock, `lastUpdated` format, overlap already applied).
    Delta { since: String },
    /// What changed since the last successful run, by the deltaLinks Graph gave it.
    EntraDelta(graph::DeltaLinks),
}

impl Mode {
    fn name(&self) -> &'static str {
        match self {
            Mode::Full => "full",
            Mode::Delta { .. } | Mode::EntraDelta(_) => "delta",
        }
    }
}

/// How far a delta run reaches back before where the last successful run began reading: covers
/// clock skew and writes in flight in Okta when that run read (`okta-api.md` §8).
const DELTA_OVERLAP_SECS: i64 = 5 * 60;

/// Okta's timestamp format (`2026-03-01T08:00:00.000Z`), which `lastUpdated gt` compares with.
fn okta_timestamp(seconds: i64) -> Option<String> {
    chrono::DateTime::from_timestamp(seconds, 0).map(|t| t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
}

/// Where a delta run starts: the stored watermark less the overlap.
fn delta_since(watermark: &str) -> Option<String> {
    let at = chrono::DateTime::parse_from_rfc3339(watermark).ok()?;
    okta_timestamp(at.timestamp() - DELTA_OVERLAP_SECS)
}

/// Records a new run of `connection`. A run is delta unless asked to be full, except the first
/// run of a connection, the first after its settings changed, and runs limited to an app's
/// assignments: those read everything. The run takes the connection's lease (see
/// `store::sync_leases`): while another run holds it, `Conflict` naming that run.
pub async fn start(store: &Store, connection: &ConnectionRecord, request: RunRequest) -> Result<Started> {
    start_when(store, connection, request, |_, _| Ok(true))
        .await?
        .ok_or_else(|| Error::Internal("a run wanted unconditionally was not started".into()))
}

/// Runs a connection once: [`start`], then [`Started::execute`].
pub async fn run(
    store: &Store,
    key: Option<&SecretKey>,
    connection: &ConnectionRecord,
    request: RunRequest,
    progress: &Progress,
) -> Result<Report> {
    start(store, connection, request).await?.execute(store, key, connection, progress).await
}

impl Started {
    /// Executes the run. It is recorded whatever happens: an error of the source or of the rules
    /// ends it `failed` with the error in its report.
    pub async fn execute(
        self,
        store: &Store,
        key: Option<&SecretKey>,
        connection: &ConnectionRecord,
        progress: &Progress,
    ) -> Result<Report> {
        let began = std::time::Instant::now();
        let connection_id = connection.id.clone();
        let run_id = self.run_id.clone();
        let mut run = Run {
            store,
            connection,
            run_id: run_id.clone(),
            actor: Actor::Importer { connection: connection_id.clone(), run: run_id.clone() },
            counts: Counts::default(),
            conflicts: Vec::new(),
            warnings: self.warnings,
            changed_batches: None,
            planned_unchanged: 0,
            mode: self.mode.clone(),
            watermark: None,
            groups_of_new_users: HashSet::new(),
            removed_users: BTreeSet::new(),
            stager: Stager::new(store, &run_id, &connection_id),
        };
        // The lease is renewed while the run works; a run that lost it stops (between two
        // transactions: whatever it applied is whole).
        let outcome = tokio::select! {
            outcome = run.execute(key, &self.request, progress) => outcome,
            lost = store.hold_sync_lease(connection_id.clone(), run_id.clone()) => Err(lost),
        };
        let (status, error) = match &outcome {
            Ok(status) => (*status, None),
            Err(error) => ("failed", Some(error.to_string())),
        };
        // An Entra delta run whose links expired read the whole tenant instead.
        let mode = run.mode.name();
        let report = Report {
            run_id: run_id.clone(),
            status,
            mode,
            counts: run.counts.clone(),
            conflicts: run.conflicts.clone(),
            warnings: run.warnings.clone(),
            error,
        };
        let body = report.to_json();
        let lost_body = report.clone().lost_lease().to_json();
        let succeeded = status == "succeeded";
        let full = run.mode == Mode::Full;
        let watermark = run.watermark.clone();
        let id = connection_id.clone();
        let held = store
            .write(move |conn, _| {
                // A run whose lease was taken over is not the connection's last good run, whatever
                // it reached: the run holding the lease now is.
                let held = crate::store::sync_leases::holds(conn, &id, &run_id)?;
                let succeeded = succeeded && held;
                // The mirror and the delta position move with the run that read them, in one
                // transaction with its end: a run cut short leaves both as the last good run saw them.
                if succeeded {
                    source_mirror::advance(conn, &id, &run_id, full, watermark.as_deref())?;
                }
                let (status, body) = if held { (status, body) } else { ("failed", lost_body) };
                sync_runs::finish(conn, &run_id, status, mode, &body, full && succeeded)?;
                crate::store::sync_leases::release(conn, &id, &run_id)?;
                Ok(held)
            })
            .await?;
        let report = if held { report } else { report.lost_lease() };
        let status = report.status;
        let kind = match connection.config.kind {
            Kind::Okta => "okta",
            Kind::Entra => "entra",
        };
        crate::metrics::global().observe_sync_run(kind, mode, status, began.elapsed().as_secs_f64());
        tracing::info!(
            connection = %connection_id, run = %report.run_id, status, mode,
            created = report.counts.users_created, updated = report.counts.users_updated,
            deactivated = report.counts.users_deactivated, reactivated = report.counts.users_reactivated,
            unchanged = report.counts.users_unchanged, conflicts = report.conflicts.len(),
            "sync run finished"
        );
        Ok(report)
    }
}

/// `connection verify`: builds the client from the stored credentials and runs its checks. A
/// connection that cannot even build a client (no key, no token) fails as one check.
pub async fn verify(
    store: &Store,
    key: Option<&SecretKey>,
    connection: &ConnectionRecord,
) -> Vec<okta::Check> {
    let unopened = |error: Error| {
        vec![okta::Check {
            what: "open the connection's credentials".into(),
            remedy: Some(error.to_string()),
        }]
    };
    match connection.config.kind {
        Kind::Okta => match okta_client(store, key, connection).await {
            Ok(client) => client.verify(connection.config.rules.app_id.as_deref()).await,
            Err(error) => unopened(error),
        },
        // Groups are always read: the rules import them unless prefixes leave all out.
        Kind::Entra => match graph_client(store, key, connection).await {
            Ok(client) => client.verify(true).await,
            Err(error) => unopened(error),
        },
    }
}

struct Run<'a> {
    store: &'a Store,
    connection: &'a ConnectionRecord,
    run_id: String,
    actor: Actor,
    counts: Counts,
    conflicts: Vec<Value>,
    warnings: Vec<String>,
    /// From the plan pass: where each batch with changes starts, and how many of its users
    /// were unchanged then. `None` when the run was not planned: applying visits every batch.
    changed_batches: Option<Vec<(Option<String>, u64)>>,
    planned_unchanged: u64,
    mode: Mode,
    /// Where the next delta run starts: Okta's clock when this run began reading.
    watermark: Option<String>,
    /// Delta runs: groups it did not re-read that hold users it will create (see
    /// `source_mirror::groups_of_new_users`).
    groups_of_new_users: HashSet<String>,
    /// Entra delta runs: users the source reports removed (`@removed`), by source id.
    removed_users: BTreeSet<String>,
    /// Writes what the run reads into the stage.
    stager: Stager,
}

/// Stages what a run reads in large transactions, one in flight while reading goes on. Each
/// commit rewrites every stage index page it touched, and a commit per page or per group
/// touched the same pages again and again; meanwhile the next page is fetched.
struct Stager {
    store: Store,
    run_id: String,
    connection_id: String,
    users: Vec<MappedUser>,
    /// (group, member users, nested groups), by source id.
    members: Vec<(String, Vec<String>, Vec<String>)>,
    member_rows: usize,
    in_flight: Option<tokio::task::JoinHandle<Result<()>>>,
}

impl Stager {
    fn new(store: &Store, run_id: &str, connection_id: &str) -> Stager {
        Stager {
            store: store.clone(),
            run_id: run_id.to_string(),
            connection_id: connection_id.to_string(),
            users: Vec::new(),
            members: Vec::new(),
            member_rows: 0,
            in_flight: None,
        }
    }

    async fn users(&mut self, users: Vec<MappedUser>) -> Result<()> {
        self.users.extend(users);
        self.flush_when_full().await
    }

    async fn members(&mut self, group: String, members: Vec<String>, subgroups: Vec<String>) -> Result<()> {
        self.member_rows += members.len() + subgroups.len() + 1;
        self.members.push((group, members, subgroups));
        self.flush_when_full().await
    }

    async fn flush_when_full(&mut self) -> Result<()> {
        if self.users.len() >= STAGE_USERS || self.member_rows >= STAGE_MEMBERS {
            self.flush().await?;
        }
        Ok(())
    }

    /// Hands what is buffered to the writer, once the previous write is done.
    async fn flush(&mut self) -> Result<()> {
        self.settle().await?;
        if self.users.is_empty() && self.members.is_empty() {
            return Ok(());
        }
        let (users, members) = (std::mem::take(&mut self.users), std::mem::take(&mut self.members));
        self.member_rows = 0;
        let (store, run, connection) = (self.store.clone(), self.run_id.clone(), self.connection_id.clone());
        self.in_flight = Some(tokio::spawn(async move {
            store
                .write_bulk(move |conn, _| {
                    sync_runs::stage_users(conn, &run, &connection, &users)?;
                    for (group, users, subgroups) in &members {
                        sync_runs::stage_members(conn, &run, group, users)?;
                        sync_runs::stage_subgroups(conn, &run, group, subgroups)?;
                    }
                    Ok(())
                })
                .await
        }));
        Ok(())
    }

    /// Waits for the write in flight.
    async fn settle(&mut self) -> Result<()> {
        match self.in_flight.take() {
            Some(write) => write.await.map_err(|e| Error::internal("staging what a run read", e))?,
            None => Ok(()),
        }
    }

    /// Writes everything buffered and waits for it: the stage then holds all that was read.
    async fn finish(&mut self) -> Result<()> {
        self.flush().await?;
        self.settle().await
    }

    /// Takes members out of a staged group, after all staged before (a delta round reports a
    /// member removed after it reported it added; rare, so written at once).
    async fn unstage_members(&mut self, group: String, members: Vec<String>) -> Result<()> {
        self.finish().await?;
        let run = self.run_id.clone();
        self.store.write_bulk(move |conn, _| sync_runs::unstage_members(conn, &run, &group, &members)).await
    }
}

/// The Okta client of a connection, with its API token or service-app key opened by the server
/// key.
async fn okta_client(
    store: &Store,
    key: Option<&SecretKey>,
    connection: &ConnectionRecord,
) -> Result<OktaClient> {
    use super::okta_auth;
    let settings = &connection.config;
    let okta = settings
        .okta
        .as_ref()
        .ok_or_else(|| Error::Upstream("this connection has no okta settings".into()))?;
    let (secret_name, what) = match &okta.auth {
        OktaAuth::ApiToken { .. } => ("okta.auth.token", "API token"),
        OktaAuth::PrivateKeyJwt { .. } => ("okta.auth.private_key_pem", "private key"),
    };
    let secret = reveal(store, key, connection, secret_name.to_string(), what).await?;
    let credentials = match &okta.auth {
        OktaAuth::ApiToken { .. } => okta_auth::Credentials::ApiToken(secret),
        OktaAuth::PrivateKeyJwt { client_id, key_id, .. } => {
            okta_auth::Credentials::ServiceApp(okta_auth::ServiceApp {
                client_id: client_id.clone(),
                key_id: key_id.clone(),
                private_key_pem: secret,
                read_apps: settings.rules.app_id.is_some(),
            })
        }
    };
    let share = f64::from(okta.rate_limit_percent) / 100.0;
    OktaClient::with_credentials(&okta.org_url, credentials, share, Caps::default())
}

/// A connection's secret, opened with the server's key.
pub(super) async fn reveal(
    store: &Store,
    key: Option<&SecretKey>,
    connection: &ConnectionRecord,
    secret_name: String,
    what: &str,
) -> Result<String> {
    find_secret(store, key, connection, secret_name, what)
        .await?
        .ok_or_else(|| Error::Upstream(format!("the connection's {what} is not set")))
}

/// A connection's secret, opened with the server's key, if it is set.
async fn find_secret(
    store: &Store,
    key: Option<&SecretKey>,
    connection: &ConnectionRecord,
    secret_name: String,
    what: &str,
) -> Result<Option<String>> {
    let key = key.cloned().ok_or_else(|| {
        Error::Upstream(format!(
            "this server has no secret key (SCIMD_SECRET_KEY), so it cannot open the connection's {what}"
        ))
    })?;
    let owner = connection.id.clone();
    let secret = store.read(move |conn, _| secrets::reveal(conn, &key, &owner, &secret_name)).await?;
    secret
        .map(|s| String::from_utf8(s).map_err(|_| Error::Upstream(format!("the stored {what} is not text"))))
        .transpose()
}

/// Where a delegated credential's new refresh tokens go, and word that one stopped working:
/// the connection's sealed secret and its consent standing (see `store::consents`).
struct ConsentKeeper {
    store: Store,
    key: SecretKey,
    connection: String,
}

impl graph::TokenKeeper for ConsentKeeper {
    fn keep(&self, place: &'static str, refresh_token: String) -> BoxFuture<'static, Result<()>> {
        let (store, key, id) = (self.store.clone(), self.key.clone(), self.connection.clone());
        Box::pin(async move {
            store
                .write(move |conn, _| consents::keep_refresh_token(conn, &key, &id, place, &refresh_token))
                .await
        })
    }

    fn lost(&self, place: &'static str, remedy: String) -> BoxFuture<'static, Result<()>> {
        let (store, id) = (self.store.clone(), self.connection.clone());
        Box::pin(async move {
            store.write(move |conn, _| consents::mark_needs_consent(conn, &id, place, &remedy)).await
        })
    }
}

/// How an admin connects a connection's delegated credential again, for remedies.
pub fn reconnect_hint(connection: &ConnectionRecord) -> String {
    format!(
        ": open {} with an admin token (or run 'scimd connection authorize <directory>/{}') and sign in \
         to Microsoft",
        connection.authorize_path(),
        connection.config.name
    )
}

/// The Graph client of an Entra connection, with its primary and backup credentials opened.
async fn graph_client(
    store: &Store,
    key: Option<&SecretKey>,
    connection: &ConnectionRecord,
) -> Result<GraphClient> {
    let entra = connection
        .config
        .entra
        .as_ref()
        .ok_or_else(|| Error::Upstream("this connection has no entra settings".into()))?;
    let secret_of = |place: &str, auth: &EntraAuth| match auth {
        EntraAuth::ClientSecret { .. } | EntraAuth::Delegated { .. } => {
            (format!("{place}.client_secret"), "client secret")
        }
        EntraAuth::Certificate { .. } => (format!("{place}.private_key_pem"), "private key"),
    };
    let (name, what) = secret_of("entra.auth", &entra.auth);
    let primary = reveal(store, key, connection, name, what).await?;
    let backup = match &entra.backup_auth {
        Some(auth) => {
            let (name, what) = secret_of("entra.backup_auth", auth);
            Some(reveal(store, key, connection, name, &format!("backup {what}")).await?)
        }
        None => None,
    };
    let client =
        GraphClient::new(entra, graph::GraphCredentials { primary, backup }, graph::Limits::default())?;
    let delegated = connection.config.delegated();
    if delegated.is_empty() {
        return Ok(client);
    }
    let mut delegation = graph::Delegation { reconnect: reconnect_hint(connection), ..Default::default() };
    for (place, _) in delegated {
        let name = refresh_token_name(place).to_string();
        let token = find_secret(store, key, connection, name, "refresh token").await?;
        match place {
            "auth" => delegation.primary = token,
            _ => delegation.backup = token,
        }
    }
    delegation.keeper = key.map(|key| {
        Arc::new(ConsentKeeper { store: store.clone(), key: key.clone(), connection: connection.id.clone() })
            as Arc<dyn graph::TokenKeeper>
    });
    Ok(client.with_delegation(delegation))
}

fn config(connection: &ConnectionRecord) -> &Connection {
    &connection.config
}

impl Run<'_> {
    async fn execute(
        &mut self,
        key: Option<&SecretKey>,
        request: &RunRequest,
        progress: &Progress,
    ) -> Result<&'static str> {
        let phase = std::time::Instant::now();
        // Reading only stages: the connection's active users stay as they are until applying.
        let active = {
            let id = self.connection.id.clone();
            self.store.read(move |conn, _| sync_runs::active_owned(conn, &id)).await?
        };
        let active = u64::try_from(active).unwrap_or(0);
        match config(self.connection).kind {
            Kind::Okta => {
                let client = okta_client(self.store, key, self.connection).await?;
                let read = self.read_source(&client, progress).await;
                // Whatever happened, nothing of this run is left being written.
                self.stager.finish().await.and(read)?;
            }
            Kind::Entra => {
                let client = graph_client(self.store, key, self.connection).await?;
                // The tenant has at least the users the connection holds active; a full read
                // learns its size (see `read_entra`).
                client.know_tenant_size(active);
                let mut read = match self.mode.clone() {
                    Mode::EntraDelta(links) => self.read_entra_delta(&client, links, progress).await,
                    _ => self.read_entra(&client, progress).await,
                };
                read = self.stager.finish().await.and(read);
                if matches!(&read, Err(error) if graph::is_delta_expired(error)) {
                    // Graph keeps delta state for 7 days, and may reset it: start over with a
                    // full read, which also gives the next delta run fresh links.
                    if let Err(error) = &read {
                        self.warnings.push(format!("{error}; this run read the whole tenant instead"));
                    }
                    let run = self.run_id.clone();
                    self.store.write_bulk(move |conn, _| sync_runs::clear_stage(conn, &run)).await?;
                    self.mode = Mode::Full;
                    self.removed_users.clear();
                    self.groups_of_new_users.clear();
                    read = self.read_entra(&client, progress).await;
                    read = self.stager.finish().await.and(read);
                }
                // Said even when the run fails: the admin must mend the primary credential.
                self.warnings.extend(client.fallback_used());
                read?;
            }
        }
        progress(&format!("read the source in {:.1?}", phase.elapsed()));
        // A connection with no active users (its first run) can deactivate no one, so nothing
        // can trip the brake: the run applies in one pass, without planning first (a 100k first
        // import spent 4-5 s planning).
        if request.dry_run || active > 0 {
            // Plan without writing: counts for a dry run and for the brake.
            let phase = std::time::Instant::now();
            let planned = self.users_pass(false).await?;
            progress(&format!("planned users in {:.1?}", phase.elapsed()));
            self.counts = planned;
        }
        let deactivations = self.counts.users_deactivated;
        let max = config(self.connection).brake.max_deactivate_percent;
        if request.dry_run {
            self.groups_pass(false).await?;
            return Ok("dry_run");
        }
        if plan::brakes(deactivations, active, max) && !request.confirm {
            self.warnings.push(format!(
                "the run would deactivate {deactivations} of {active} active users, more than {max} %; nothing was \
                 applied: check the source, then run again with --confirm"
            ));
            tracing::warn!(connection = %self.connection.id, deactivations, active, "sync brake tripped");
            return Ok("braked");
        }
        let phase = std::time::Instant::now();
        self.counts = self.users_pass(true).await?;
        progress(&format!("applied users in {:.1?}", phase.elapsed()));
        let phase = std::time::Instant::now();
        self.groups_pass(true).await?;
        progress(&format!("applied groups in {:.1?}", phase.elapsed()));
        Ok("succeeded")
    }

    /// Reads users, groups and the memberships the rules need into the stage. A delta run reads
    /// what changed, then the users whose memberships of the groups the rules name changed, then
    /// completes the stage from the connection's mirror.
    async fn read_source(&mut self, client: &OktaClient, progress: &Progress) -> Result<()> {
        let settings = config(self.connection).clone();
        let app_users = match &settings.rules.app_id {
            Some(app) => Some(self.app_user_ids(client, app).await?),
            None => None,
        };
        let (user_listings, group_listing) = match &self.mode {
            // The bare list leaves DEPROVISIONED users out; the filter brings them. (Entra's
            // delta mode is never chosen for an Okta connection.)
            Mode::Full | Mode::EntraDelta(_) => (
                vec![
                    format!("/api/v1/users?limit={PAGE}"),
                    format!("/api/v1/users?limit={PAGE}&filter={}", urlencode("status eq \"DEPROVISIONED\"")),
                ],
                format!("/api/v1/groups?limit={PAGE}"),
            ),
            // `filter` (not `search`) reads current data, and brings every status.
            Mode::Delta { since } => (
                vec![format!(
                    "/api/v1/users?limit={PAGE}&filter={}",
                    urlencode(&format!("lastUpdated gt \"{since}\""))
                )],
                format!(
                    "/api/v1/groups?limit={PAGE}&filter={}",
                    urlencode(&format!("lastUpdated gt \"{since}\" or lastMembershipUpdated gt \"{since}\""))
                ),
            ),
        };
        let mut read = 0usize;
        for listing in user_listings {
            let mut pager = client.pager(&listing);
            while let Some(items) = pager.next_page().await? {
                read += items.len();
                self.stage_user_page(&items, app_users.as_ref()).await?;
                progress(&format!("users read: {read}"));
            }
        }
        let mut groups = Vec::new();
        client
            .for_each_page(&group_listing, |items| {
                groups.extend(items.iter().filter_map(staged_group));
                Ok(())
            })
            .await?;
        progress(&format!("groups read: {}", groups.len()));
        let app_groups = match &settings.rules.app_id {
            Some(app) => Some(self.app_group_ids(client, app).await?),
            None => None,
        };
        let types = settings.group_types();
        if self.mode == Mode::Full {
            // A delta run sees only changed groups, so only a full run can tell a name is unknown.
            self.warn_unknown_groups(&settings, &groups);
        }
        let judged = |id: &str, name: &str| named_by_rules(&settings, id, name);
        // Members are read for the groups the rules import or name, a few groups at a time.
        for group in &mut groups {
            group.imported = rules::okta_group_selected(
                &group.group_type,
                &group.name,
                &types,
                &settings.rules.group_prefixes,
            ) && app_groups.as_ref().is_none_or(|ids| ids.contains(&group.source_id));
            group.members_read = group.imported || judged(&group.source_id, &group.name);
        }
        let wanted: Vec<String> =
            groups.iter().filter(|g| g.members_read).map(|g| g.source_id.clone()).collect();
        let mut listings = futures_util::stream::iter(wanted)
            .map(|group| read_members(client, group))
            .buffered(MEMBER_READS_IN_FLIGHT);
        let mut affected = BTreeSet::new();
        for group in &groups {
            let members = if group.members_read {
                listings
                    .next()
                    .await
                    .ok_or_else(|| Error::Internal("a group's members went unread".into()))??
            } else {
                BTreeSet::new()
            };
            if let Mode::Delta { .. } = self.mode {
                self.note_affected(group, &members, &mut affected).await?;
            }
            if group.members_read {
                self.stager
                    .members(group.source_id.clone(), members.into_iter().collect(), Vec::new())
                    .await?;
            }
        }
        self.stager.finish().await?;
        let run = self.run_id.clone();
        self.store.write_bulk(move |conn, _| sync_runs::stage_groups(conn, &run, &groups)).await?;
        if let Mode::Delta { .. } = self.mode {
            affected.extend(self.last_conflicts().await?);
            self.stage_affected_users(client, affected, progress).await?;
            self.complete_delta_stage().await?;
        }
        self.watermark = client.first_answer_at().and_then(okta_timestamp);
        Ok(())
    }

    /// The users the last successful run reported in conflict (see `sync_runs::last_conflicts`).
    async fn last_conflicts(&self) -> Result<Vec<String>> {
        let connection = self.connection.id.clone();
        self.store.read(move |conn, _| sync_runs::last_conflicts(conn, &connection)).await
    }

    /// Ends a delta run's reading: the stage is completed from the mirror (see
    /// `source_mirror::complete_stage`), and the groups of the users it will create noted.
    async fn complete_delta_stage(&mut self) -> Result<()> {
        self.stager.finish().await?;
        let (connection, run) = (self.connection.id.clone(), self.run_id.clone());
        self.groups_of_new_users = self
            .store
            .write_bulk(move |conn, _| {
                source_mirror::complete_stage(conn, &connection, &run)?;
                source_mirror::groups_of_new_users(conn, &connection, &run)
            })
            .await?;
        Ok(())
    }

    /// Adds to `affected` the users whose standing under the allow/deny rules may have changed
    /// without their own record changing (so without the source reporting them): joiners and
    /// leavers of a group the rules name, and every member of one renamed into or out of the
    /// rules. `members` is what the group holds now (none for a group gone from the source).
    async fn note_affected(
        &self,
        group: &StagedGroup,
        members: &BTreeSet<String>,
        affected: &mut BTreeSet<String>,
    ) -> Result<()> {
        let settings = config(self.connection);
        let judged = |id: &str, name: &str| named_by_rules(settings, id, name);
        let (connection, source) = (self.connection.id.clone(), group.source_id.clone());
        let before = self
            .store
            .read(move |conn, _| {
                let Some((name, members_read)) = source_mirror::find_group(conn, &connection, &source)?
                else {
                    return Ok(None);
                };
                let members = if members_read {
                    source_mirror::members(conn, &connection, &source)?
                } else {
                    BTreeSet::new()
                };
                Ok(Some((name, members)))
            })
            .await?;
        let (old_name, old_members) = before.unwrap_or_default();
        let judged_now = judged(&group.source_id, &group.name);
        let judged_before = !old_name.is_empty() && judged(&group.source_id, &old_name);
        if judged_now || judged_before {
            if old_name != group.name || judged_now != judged_before {
                affected.extend(old_members.union(members).cloned());
            } else {
                affected.extend(old_members.symmetric_difference(members).cloned());
            }
        }
        Ok(())
    }

    /// Maps a page of Okta users and stages those the rules read.
    async fn stage_user_page(&mut self, items: &[Value], app_users: Option<&HashSet<String>>) -> Result<()> {
        let settings = config(self.connection);
        let username_source = settings.username_source();
        let mapped: Vec<MappedUser> = items
            .iter()
            .filter_map(|u| okta::map_user(u, username_source))
            .filter(|u| app_users.is_none_or(|ids| ids.contains(&u.source_id)))
            .filter(|u| !(settings.skip_staged() && u.status == SourceStatus::Staged))
            .collect();
        self.stage_mapped(mapped).await
    }

    async fn stage_mapped(&mut self, mapped: Vec<MappedUser>) -> Result<()> {
        self.stager.users(mapped).await
    }

    /// Warns of each group the allow/deny rules name that is not among `groups` (all the
    /// source's groups, so full runs only).
    fn warn_unknown_groups(&mut self, settings: &Connection, groups: &[StagedGroup]) {
        let refs: Vec<GroupRef<'_>> =
            groups.iter().map(|g| GroupRef { id: &g.source_id, name: &g.name }).collect();
        let source = source_name(settings.kind);
        for list in [&settings.rules.allowed_users_groups, &settings.rules.denied_users_groups] {
            for unknown in rules::unknown_group_names(list, &refs) {
                self.warnings
                    .push(format!("group '{unknown}' named in the rules does not exist in {source}"));
            }
        }
    }

    /// Reads and stages an Entra tenant in full: users, groups, and the members (through nested
    /// groups) of the groups the rules import or name. It first asks Graph for a users delta
    /// link "from now", so the next delta run sees every change made from the start of this
    /// read; the groups delta round that reads the groups ends with the groups' link.
    ///
    /// Users and groups are read at once: the users listing waits on the network and on Graph's
    /// budget, and the groups round, one page at a time, fills those waits.
    async fn read_entra(&mut self, client: &GraphClient, progress: &Progress) -> Result<()> {
        let settings = config(self.connection).clone();
        let username_source = settings.username_source().to_string();
        let users_link = client.latest_delta_link(&graph::users_delta_path(&username_source)).await?;
        let mut member_stager = Stager::new(self.store, &self.run_id, &self.connection.id);
        let read = tokio::try_join!(
            read_entra_users(client, &username_source, &mut self.stager, progress),
            read_entra_groups(client, &settings, &self.run_id, &mut member_stager, progress),
        );
        // Whatever happened, no write of the members is left in flight.
        let staged = match &read {
            Ok(_) => member_stager.finish().await,
            Err(_) => member_stager.settle().await,
        };
        let ((), (groups, groups_link)) = read?;
        staged?;
        self.warn_unknown_groups(&settings, &groups);
        let run = self.run_id.clone();
        self.store.write_bulk(move |conn, _| sync_runs::stage_groups(conn, &run, &groups)).await?;
        self.watermark = Some(delta_state(&graph::DeltaLinks { users: users_link, groups: groups_link })?);
        Ok(())
    }

    /// Reads what changed in an Entra tenant since the last successful run, by its deltaLinks:
    /// changed and removed users, changed and removed groups. Groups are read again in full (their
    /// members through nested groups) when they changed or a group nested in them did; users a
    /// membership change alone affects are read by id; the rest comes from the mirror.
    async fn read_entra_delta(
        &mut self,
        client: &GraphClient,
        links: graph::DeltaLinks,
        progress: &Progress,
    ) -> Result<()> {
        let settings = config(self.connection).clone();
        let username_source = settings.username_source().to_string();
        let mut pager = client.pager(&links.users);
        let mut read = 0usize;
        while let Some(items) = pager.next_page().await? {
            read += items.len();
            // A round may report a user twice (Graph replays); the last report wins.
            let mut mapped = Vec::new();
            let mut reported = Vec::new();
            for item in &items {
                let Some(id) = item.get("id").and_then(Value::as_str) else { continue };
                reported.push(id.to_string());
                if item.get("@removed").is_some() {
                    self.removed_users.insert(id.to_string());
                    mapped.retain(|u: &MappedUser| u.source_id != id);
                } else if let Some(user) = graph::map_user(item, &username_source) {
                    self.removed_users.remove(id);
                    mapped.retain(|u: &MappedUser| u.source_id != id);
                    mapped.push(user);
                }
            }
            self.name_managers(client, &mut mapped).await?;
            let (run, connection) = (self.run_id.clone(), self.connection.id.clone());
            self.store
                .write_bulk(move |conn, _| {
                    let refs: Vec<&str> = reported.iter().map(String::as_str).collect();
                    sync_runs::unstage_users(conn, &run, &refs)?;
                    sync_runs::stage_users(conn, &run, &connection, &mapped)
                })
                .await?;
            progress(&format!("changed users read: {read}"));
        }
        let users_link = pager.delta_link().map(str::to_string).ok_or_else(|| {
            Error::Upstream("Microsoft Graph ended a users delta round without a deltaLink".into())
        })?;
        // Changed groups, by id: a big group's members@delta spans pages, each repeating it.
        let mut changed: HashMap<String, Option<StagedGroup>> = HashMap::new();
        let groups_link = client
            .read_delta(&links.groups, |items| {
                for group in items {
                    let Some(id) = group.get("id").and_then(Value::as_str) else { continue };
                    let staged = if group.get("@removed").is_some() {
                        None
                    } else {
                        entra_staged_group(&settings, group)
                    };
                    changed.insert(id.to_string(), staged);
                }
                Ok(())
            })
            .await?;
        progress(&format!("changed groups read: {}", changed.len()));
        // A group gone from the tenant is staged as read, with nothing selected: its imported
        // group turns stale and the mirror forgets its members.
        let ids: Vec<String> = changed.keys().cloned().collect();
        let connection = self.connection.id.clone();
        let (nesting, gone) = self
            .store
            .read(move |conn, _| {
                let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
                let nesting = source_mirror::groups_nesting(conn, &connection, &refs)?;
                let mut gone = Vec::new();
                for id in &ids {
                    if let Some((name, _)) = source_mirror::find_group(conn, &connection, id)? {
                        gone.push((id.clone(), name));
                    }
                }
                Ok((nesting, gone))
            })
            .await?;
        // Groups a changed group is nested in: their members changed too, unreported.
        let mut groups: BTreeMap<String, StagedGroup> =
            nesting.into_iter().map(|group| (group.source_id.clone(), group)).collect();
        for (id, name) in gone {
            if let Some(None) = changed.get(&id) {
                let group = StagedGroup {
                    source_id: id.clone(),
                    name,
                    group_type: String::new(),
                    changed: true,
                    members_read: false,
                    imported: false,
                };
                groups.insert(id, group);
            }
        }
        for (id, group) in changed {
            if let Some(group) = group {
                groups.insert(id, group);
            }
        }
        let groups: Vec<StagedGroup> = groups.into_values().collect();
        let mut affected = BTreeSet::new();
        self.stage_entra_groups(client, groups, &mut affected).await?;
        affected.extend(self.last_conflicts().await?);
        self.stage_affected_entra_users(client, affected, progress).await?;
        self.complete_delta_stage().await?;
        self.watermark = Some(delta_state(&graph::DeltaLinks { users: users_link, groups: groups_link })?);
        Ok(())
    }

    /// Stages the Entra groups a delta run read, with the members (and nested groups) of those
    /// the rules import or name, read a few groups at a time; notes in `affected` the users whose
    /// standing under the rules a membership change alone may have changed.
    async fn stage_entra_groups(
        &mut self,
        client: &GraphClient,
        groups: Vec<StagedGroup>,
        affected: &mut BTreeSet<String>,
    ) -> Result<()> {
        let wanted: Vec<String> =
            groups.iter().filter(|g| g.members_read).map(|g| g.source_id.clone()).collect();
        let mut listings = futures_util::stream::iter(wanted)
            .map(|group| async move {
                let nested = read_entra_nested(client, &group).await;
                (group, nested)
            })
            .buffered(MEMBER_READS_IN_FLIGHT);
        let mut read = HashMap::new();
        while let Some((group, nested)) = listings.next().await {
            let (members, subgroups) = nested?;
            self.stager.members(group.clone(), members.iter().cloned().collect(), subgroups).await?;
            read.insert(group, members);
        }
        let none = BTreeSet::new();
        for group in &groups {
            self.note_affected(group, read.get(&group.source_id).unwrap_or(&none), affected).await?;
        }
        self.stager.finish().await?;
        let run = self.run_id.clone();
        self.store.write_bulk(move |conn, _| sync_runs::stage_groups(conn, &run, &groups)).await
    }

    /// Gives the managers a delta round names by id alone their displayName: from the user the
    /// connection owns, else from Graph (15 a request); as a listing's `$expand` would.
    async fn name_managers(&self, client: &GraphClient, users: &mut [MappedUser]) -> Result<()> {
        let unnamed: BTreeSet<String> =
            users.iter().filter_map(|u| u.unnamed_manager().map(str::to_string)).collect();
        if unnamed.is_empty() {
            return Ok(());
        }
        let (connection, ids) = (self.connection.id.clone(), unnamed.iter().cloned().collect::<Vec<_>>());
        let mut names = self
            .store
            .read(move |conn, _| {
                let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
                sync_runs::owned_display_names(conn, &connection, &refs)
            })
            .await?;
        let missing: Vec<String> = unnamed.into_iter().filter(|id| !names.contains_key(id)).collect();
        for chunk in missing.chunks(graph::IDS_PER_FILTER) {
            client
                .for_each_page(&graph::names_by_id_path(chunk), |items| {
                    for user in items {
                        if let (Some(id), Some(name)) = (
                            user.get("id").and_then(Value::as_str),
                            user.get("displayName").and_then(Value::as_str),
                        ) {
                            names.insert(id.to_string(), name.to_string());
                        }
                    }
                    Ok(())
                })
                .await?;
        }
        for user in users.iter_mut() {
            if let Some(name) = user.unnamed_manager().and_then(|id| names.get(id)).cloned() {
                user.name_manager(&name);
            }
        }
        Ok(())
    }

    /// Reads by id (15 a request) and stages the users a delta run must decide again though
    /// their records did not change; a user deleted since is not found and stays as it is.
    async fn stage_affected_entra_users(
        &mut self,
        client: &GraphClient,
        affected: BTreeSet<String>,
        progress: &Progress,
    ) -> Result<()> {
        let wanted = self.not_staged(affected).await?;
        let username_source = config(self.connection).username_source().to_string();
        for chunk in wanted.chunks(graph::IDS_PER_FILTER) {
            let mut pager = client.pager(&graph::users_by_id_path(&username_source, chunk));
            while let Some(items) = pager.next_page().await? {
                self.stage_mapped(
                    items.iter().filter_map(|u| graph::map_user(u, &username_source)).collect(),
                )
                .await?;
            }
        }
        if !wanted.is_empty() {
            progress(&format!("users read again for a membership change: {}", wanted.len()));
        }
        Ok(())
    }

    /// The users among `ids` this run has not staged, nor reported removed.
    async fn not_staged(&mut self, ids: BTreeSet<String>) -> Result<Vec<String>> {
        self.stager.finish().await?;
        let removed = self.removed_users.clone();
        let (run, ids) =
            (self.run_id.clone(), ids.into_iter().filter(|id| !removed.contains(id)).collect::<Vec<_>>());
        self.store
            .read(move |conn, _| {
                let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
                let staged = sync_runs::staged_ids(conn, &run, &refs)?;
                Ok(ids.iter().filter(|id| !staged.contains_key(*id)).cloned().collect())
            })
            .await
    }

    /// Reads and stages the users a delta run must decide again though their records did not
    /// change (see [`Self::read_source`]), by id, a few dozen per request.
    async fn stage_affected_users(
        &mut self,
        client: &OktaClient,
        affected: BTreeSet<String>,
        progress: &Progress,
    ) -> Result<()> {
        let wanted = self.not_staged(affected).await?;
        for chunk in wanted.chunks(AFFECTED_PER_REQUEST) {
            let filter = chunk.iter().map(|id| format!("id eq \"{id}\"")).collect::<Vec<_>>().join(" or ");
            let mut pager =
                client.pager(&format!("/api/v1/users?limit={PAGE}&filter={}", urlencode(&filter)));
            while let Some(items) = pager.next_page().await? {
                self.stage_user_page(&items, None).await?;
            }
        }
        if !wanted.is_empty() {
            progress(&format!("users read again for a membership change: {}", wanted.len()));
        }
        Ok(())
    }

    async fn app_user_ids(&self, client: &OktaClient, app: &str) -> Result<HashSet<String>> {
        let mut ids = HashSet::new();
        client
            .for_each_page(&format!("/api/v1/apps/{app}/users?limit=500"), |items| {
                ids.extend(
                    items.iter().filter_map(|u| u.get("id").and_then(Value::as_str).map(str::to_string)),
                );
                Ok(())
            })
            .await?;
        Ok(ids)
    }

    async fn app_group_ids(&self, client: &OktaClient, app: &str) -> Result<HashSet<String>> {
        let mut ids = HashSet::new();
        client
            .for_each_page(&format!("/api/v1/apps/{app}/groups?limit=200"), |items| {
                ids.extend(
                    items.iter().filter_map(|g| g.get("id").and_then(Value::as_str).map(str::to_string)),
                );
                Ok(())
            })
            .await?;
        Ok(ids)
    }

    /// One pass over the staged users, then over the owned users the source no longer has:
    /// counts what would change, and with `apply` changes it, a batch per transaction.
    async fn users_pass(&mut self, apply: bool) -> Result<Counts> {
        let mut counts = Counts::default();
        let settings = config(self.connection).clone();
        let user_rules = user_rules(&settings);
        let losers = {
            let run = self.run_id.clone();
            self.store.read(move |conn, _| sync_runs::collision_losers(conn, &run)).await?
        };
        // The plan pass walks every batch and notes where those with changes start; the apply
        // pass revisits only those, so a run with nothing to change reads the stage once.
        let context = BatchContext {
            run: self.run_id.clone(),
            connection: self.connection.id.clone(),
            directory: self.connection.directory_id.clone(),
            rules: user_rules,
            losers,
            source: source_name(settings.kind),
        };
        if apply {
            self.apply_users(&context, &mut counts).await?;
        } else {
            self.plan_users(&context, &mut counts).await?;
        }
        if apply {
            // Batches without changes were not revisited: their users count as the plan saw them.
            let revisited: u64 = self.changed_batches.iter().flatten().map(|(_, unchanged)| unchanged).sum();
            counts.users_unchanged += self.planned_unchanged.saturating_sub(revisited);
        } else {
            self.planned_unchanged = counts.users_unchanged;
        }
        // Only a full run lists everything, so only a full run can tell who vanished.
        if self.mode == Mode::Full {
            counts.users_deactivated += self.vanished_pass(apply).await?;
        }
        counts.users_deactivated += self.removed_pass(apply).await?;
        Ok(counts)
    }

    /// The plan pass: walks every staged batch, counts what would change, and notes where the
    /// batches with creates or updates start, for the apply pass to revisit.
    async fn plan_users(&mut self, context: &BatchContext, counts: &mut Counts) -> Result<()> {
        let mut changed_batches = Vec::new();
        let mut after: Option<Option<String>> = Some(None);
        while let Some(cursor) = after.take() {
            let (context, start) = (context.clone(), cursor.clone());
            let (last, outcome) = self
                .store
                .read(move |conn, registry| {
                    let decided = decide_next_batch(conn, registry, &context, start.as_deref())?;
                    Ok((decided.last, decided.outcome))
                })
                .await?;
            tally(counts, &outcome);
            self.conflicts.extend(outcome.conflicts.iter().cloned());
            self.warnings.extend(outcome.warnings.iter().cloned());
            if outcome
                .decisions
                .iter()
                .any(|(_, d, _)| matches!(d, Decision::Create(_) | Decision::Update(_)))
            {
                let unchanged =
                    outcome.decisions.iter().filter(|(_, d, _)| *d == Decision::Unchanged).count();
                changed_batches.push((cursor, unchanged as u64));
            }
            after = last.map(Some);
        }
        self.changed_batches = Some(changed_batches);
        Ok(())
    }

    /// The apply pass: revisits the batches the plan found changes in, a few per transaction,
    /// each decided again against what is stored just before it is applied (a rename earlier in
    /// the run may have freed the userName a later user takes). A run that was not planned
    /// decides and applies every batch in turn.
    ///
    /// Deciding the next transaction's batches on a reader while the writer applied these was
    /// tried: no gain beyond the run-to-run spread, and 27 MiB more peak RSS (BENCHMARKS.md).
    async fn apply_users(&mut self, context: &BatchContext, counts: &mut Counts) -> Result<()> {
        let mut visits: VecDeque<Visit> = match &self.changed_batches {
            Some(changed) => {
                let starts: Vec<Option<String>> = changed.iter().map(|(start, _)| start.clone()).collect();
                starts.chunks(BATCHES_PER_COMMIT).map(|group| Visit::Planned(group.to_vec())).collect()
            }
            None => VecDeque::from([Visit::From(None)]),
        };
        while let Some(visit) = visits.pop_front() {
            let (context, actor) = (context.clone(), self.actor.clone());
            // Counted as each batch is applied, and the batch dropped: a transaction holds one
            // batch's users, not all of its batches'.
            let mut group_counts = counts.clone();
            let (group_counts, new_conflicts, rest) = self
                .store
                .write_bulk(move |conn, registry| {
                    let mut new_conflicts = Vec::new();
                    let (mut cursors, chained) = match visit {
                        Visit::Planned(starts) => (VecDeque::from(starts), false),
                        Visit::From(start) => (VecDeque::from([start]), true),
                    };
                    let mut rest = None;
                    let mut applied = 0;
                    while let Some(cursor) = cursors.pop_front() {
                        let decided = decide_next_batch(conn, registry, &context, cursor.as_deref())?;
                        let mut outcome = decided.outcome;
                        let planned_conflicts = if chained { 0 } else { outcome.conflicts.len() };
                        let (directory, connection) = (&context.directory, &context.connection);
                        apply_batch(conn, registry, directory, connection, &actor, &mut outcome)?;
                        tally(&mut group_counts, &outcome);
                        // The plan pass reported the rest; only what applying found is new.
                        new_conflicts.extend(outcome.conflicts.into_iter().skip(planned_conflicts));
                        applied += 1;
                        // Unplanned, the batch after this one follows, while the stage lasts.
                        if chained && outcome.decisions.len() as i64 == BATCH {
                            if applied < BATCHES_PER_COMMIT {
                                cursors.push_back(decided.last);
                            } else {
                                rest = Some(Visit::From(decided.last));
                            }
                        }
                    }
                    Ok((group_counts, new_conflicts, rest))
                })
                .await?;
            *counts = group_counts;
            self.conflicts.extend(new_conflicts);
            visits.extend(rest);
        }
        Ok(())
    }

    /// Owned users an Entra delta round reported removed (soft- or hard-deleted): inactive,
    /// never deleted, their data kept (rule 1). Counts those still active, and with `apply`
    /// deactivates them, a batch per transaction.
    async fn removed_pass(&self, apply: bool) -> Result<u64> {
        let removed: Vec<String> = self.removed_users.iter().cloned().collect();
        let mut deactivated = 0;
        for chunk in removed.chunks(BATCH as usize) {
            let (connection, directory, actor, chunk) = (
                self.connection.id.clone(),
                self.connection.directory_id.clone(),
                self.actor.clone(),
                chunk.to_vec(),
            );
            let batch = move |conn: &mut crate::store::DbConn, registry: &Registry| {
                let sources: Vec<&str> = chunk.iter().map(String::as_str).collect();
                let owned: Vec<String> =
                    sync_runs::owned_ids(conn, &connection, &sources)?.into_values().collect();
                let ids: Vec<&str> = owned.iter().map(String::as_str).collect();
                let active: Vec<String> = users::stored_resources(conn, &directory, &ids)?
                    .into_iter()
                    .filter(|(_, stored)| stored.get("active").and_then(Value::as_bool).unwrap_or(true))
                    .map(|(id, _)| id)
                    .collect();
                if apply {
                    for id in &active {
                        deactivate(conn, registry, &directory, &actor, id)?;
                    }
                }
                Ok(active.len() as u64)
            };
            deactivated +=
                if apply { self.store.write_bulk(batch).await? } else { self.store.read(batch).await? };
        }
        Ok(deactivated)
    }

    /// Owned users the source no longer lists: inactive, never deleted (rule 1). Counts them,
    /// and with `apply` deactivates them, a batch per transaction.
    async fn vanished_pass(&self, apply: bool) -> Result<u64> {
        let mut deactivated = 0;
        let mut after: Option<String> = None;
        loop {
            let (run, connection, directory, actor) = (
                self.run_id.clone(),
                self.connection.id.clone(),
                self.connection.directory_id.clone(),
                self.actor.clone(),
            );
            let cursor = after.clone();
            let batch = move |conn: &mut crate::store::DbConn, registry: &Registry| {
                let ids = sync_runs::vanished_active(conn, &connection, &run, cursor.as_deref(), BATCH)?;
                if apply {
                    for id in &ids {
                        deactivate(conn, registry, &directory, &actor, id)?;
                    }
                }
                Ok(ids)
            };
            // Applying deactivates what it reads, so the next read starts over; a plan pages on.
            let ids =
                if apply { self.store.write_bulk(batch).await? } else { self.store.read(batch).await? };
            deactivated += ids.len() as u64;
            if ids.is_empty() || (ids.len() as i64) < BATCH {
                break;
            }
            if !apply {
                after = ids.last().cloned();
            }
        }
        Ok(deactivated)
    }

    /// Imported groups: created or renamed, members set to the imported users among the
    /// source's; owned groups the source no longer has, or the rules no longer select, are
    /// stale (kept with their members). A delta run visits the groups it read and those a user
    /// it creates belongs to, taking the members of the latter from the mirror.
    async fn groups_pass(&mut self, apply: bool) -> Result<()> {
        let settings = config(self.connection).clone();
        let (run, connection, directory, actor) = (
            self.run_id.clone(),
            self.connection.id.clone(),
            self.connection.directory_id.clone(),
            self.actor.clone(),
        );
        let full = self.mode == Mode::Full;
        let groups_of_new_users = self.groups_of_new_users.clone();
        let user_rules = user_rules(&settings);
        let work = move |conn: &mut crate::store::DbConn,
                         registry: &Registry|
              -> Result<(Counts, Vec<Value>)> {
            let mut counts = Counts::default();
            let mut conflicts = Vec::new();
            let staged = sync_runs::staged_groups(conn, &run)?;
            let losers = if apply { HashMap::new() } else { sync_runs::collision_losers(conn, &run)? };
            let touched = &groups_of_new_users;
            let mut selected = BTreeSet::new();
            for group in staged {
                if !group.imported {
                    continue;
                }
                selected.insert(group.source_id.clone());
                if !(full || group.changed || touched.contains(&group.source_id)) {
                    continue;
                }
                let member_sources = if group.changed {
                    sync_runs::staged_member_ids(conn, &run, &group.source_id)?
                } else {
                    source_mirror::members(conn, &connection, &group.source_id)?
                };
                let wanted: Vec<&str> = member_sources.iter().map(String::as_str).collect();
                // Applying, the users pass has created whom it could: members are what exists. A
                // dry run counts the members applying would give.
                let member_ids: BTreeSet<String> = if apply {
                    sync_runs::owned_ids(conn, &connection, &wanted)?
                } else {
                    planned_ids(conn, &run, &connection, &directory, &wanted, &user_rules, &losers)?
                }
                .into_values()
                .collect();
                let body = json!({"schemas": [GROUP_SCHEMA], "displayName": group.name, "externalId": group.source_id});
                let desired = resource::normalize(&registry.group, &body)?;
                match groups::find_owned(conn, &connection, &group.source_id)? {
                    None => {
                        counts.groups_created += 1;
                        counts.members_added += member_ids.len() as u64;
                        if apply {
                            let created = sync_runs::import_group(
                                conn,
                                &directory,
                                &actor,
                                &connection,
                                &group.source_id,
                                desired,
                                member_ids,
                            );
                            if let Err(Error::Uniqueness(_)) = created {
                                counts.groups_created -= 1;
                                conflicts
                                    .push(json!({"displayName": group.name, "source_id": group.source_id,
                                    "held_by": "another group of the directory"}));
                            } else {
                                created?;
                            }
                        }
                    }
                    Some(id) => {
                        let current = groups::get(conn, &directory, &id, true)?;
                        let have: BTreeSet<String> =
                            current.members.unwrap_or_default().into_iter().map(|m| m.user_id).collect();
                        let changes = MemberChanges {
                            clear: false,
                            add: member_ids.difference(&have).cloned().collect(),
                            remove: have.difference(&member_ids).cloned().collect(),
                        };
                        counts.members_added += changes.add.len() as u64;
                        counts.members_removed += changes.remove.len() as u64;
                        if current.resource == desired && changes.add.is_empty() && changes.remove.is_empty()
                        {
                            counts.groups_unchanged += 1;
                            continue;
                        }
                        counts.groups_updated += 1;
                        if apply {
                            let desired = desired.clone();
                            groups::modify(
                                conn,
                                &directory,
                                &actor,
                                &id,
                                None,
                                move |_| Ok(desired),
                                &changes,
                                false,
                            )?;
                        }
                    }
                }
            }
            let stale = groups::owned_source_ids(conn, &connection)?
                .into_iter()
                .filter(|s| !selected.contains(s))
                .count();
            counts.groups_stale = stale as u64;
            Ok((counts, conflicts))
        };
        let (counts, conflicts) =
            if apply { self.store.write_bulk(work).await? } else { self.store.read(work).await? };
        self.counts.groups_created = counts.groups_created;
        self.counts.groups_updated = counts.groups_updated;
        self.counts.groups_unchanged = counts.groups_unchanged;
        self.counts.groups_stale = counts.groups_stale;
        self.counts.members_added = counts.members_added;
        self.counts.members_removed = counts.members_removed;
        self.conflicts.extend(conflicts);
        Ok(())
    }
}

/// Sets an owned user inactive, keeping everything else it holds.
fn deactivate(
    conn: &mut crate::store::DbConn,
    registry: &Registry,
    directory: &DirectoryId,
    actor: &Actor,
    id: &str,
) -> Result<()> {
    users::modify(conn, registry, directory, actor, id, None, |current| {
        let mut next = current.clone();
        next.insert("active".into(), Value::Bool(false));
        Ok(next)
    })?;
    Ok(())
}

/// The rules of a connection that decide about users.
fn user_rules(settings: &Connection) -> UserRules {
    UserRules {
        email_domains: settings.rules.email_domains.clone(),
        include_subdomains: settings.rules.include_subdomains,
        allowed_groups: settings.rules.allowed_users_groups.clone(),
        denied_groups: settings.rules.denied_users_groups.clone(),
        skip_staged: settings.skip_staged(),
    }
}

/// The Okta ids of a group's members.
async fn read_members(client: &OktaClient, group: String) -> Result<BTreeSet<String>> {
    let mut members = BTreeSet::new();
    client
        .for_each_page(&format!("/api/v1/groups/{group}/users?limit={PAGE}"), |items| {
            members
                .extend(items.iter().filter_map(|u| u.get("id").and_then(Value::as_str).map(str::to_string)));
            Ok(())
        })
        .await?;
    Ok(members)
}

fn urlencode(text: &str) -> String {
    percent_encoding::utf8_percent_encode(text, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// Lists an Entra tenant's users and stages them. The tenant has at least the users listed so
/// far: six pages (of 100, Graph's cap with `$expand`) already tell a tenant of more than 500,
/// whose budget is the largest.
async fn read_entra_users(
    client: &GraphClient,
    username_source: &str,
    stager: &mut Stager,
    progress: &Progress,
) -> Result<()> {
    let mut pager = client.pager(&graph::users_path(username_source));
    let mut read = 0usize;
    while let Some(items) = pager.next_page().await? {
        read += items.len();
        client.know_tenant_size(read as u64);
        stager.users(items.iter().filter_map(|u| graph::map_user(u, username_source)).collect()).await?;
        progress(&format!("users read: {read}"));
    }
    Ok(())
}

/// Lists an Entra tenant's groups with their members by the groups delta query's initial round,
/// stages every group's direct members, then flattens nested groups in the stage and keeps the
/// members of the groups the rules import or name (see `sync_runs::flatten_staged_nesting`).
/// Returns the groups, for the caller to stage, and the round's deltaLink, where the next delta
/// run starts.
///
/// The round costs 1 resource unit a page. Listing each group's transitive members instead
/// cost 4 a group: about 4,000 of the 6,000 a 100k tenant's full read spent, which Graph's
/// budget spread over later windows (graph-api.md §6, §8.2).
async fn read_entra_groups(
    client: &GraphClient,
    settings: &Connection,
    run_id: &str,
    stager: &mut Stager,
    progress: &Progress,
) -> Result<(Vec<StagedGroup>, String)> {
    // By id: a big group's members span pages, each repeating the group; the last report wins.
    let mut groups: BTreeMap<String, Option<StagedGroup>> = BTreeMap::new();
    let mut pager = client.pager(&graph::groups_delta_path());
    while let Some(items) = pager.next_page().await? {
        for item in &items {
            let Some(id) = item.get("id").and_then(Value::as_str) else { continue };
            if item.get("@removed").is_some() {
                groups.insert(id.to_string(), None);
                continue;
            }
            match entra_staged_group(settings, item) {
                Some(group) => {
                    groups.insert(id.to_string(), Some(group));
                }
                // A page that repeats a group without its name keeps what an earlier page said.
                None => {
                    groups.entry(id.to_string()).or_insert(None);
                }
            }
            // Each member's last report wins: added (with its kind) or removed (`None`).
            let mut reported: HashMap<String, Option<Option<graph::MemberKind>>> = HashMap::new();
            for member in item.get("members@delta").and_then(Value::as_array).into_iter().flatten() {
                let Some(member_id) = member.get("id").and_then(Value::as_str) else { continue };
                let added = member.get("@removed").is_none().then(|| graph::member_kind(member));
                reported.insert(member_id.to_string(), added);
            }
            let (mut users, mut subgroups, mut removed) = (Vec::new(), Vec::new(), Vec::new());
            for (member_id, added) in reported {
                match added {
                    Some(Some(graph::MemberKind::User)) => users.push(member_id),
                    Some(Some(graph::MemberKind::Group)) => subgroups.push(member_id),
                    Some(None) => {}
                    None => removed.push(member_id),
                }
            }
            if !users.is_empty() || !subgroups.is_empty() {
                stager.members(id.to_string(), users, subgroups).await?;
            }
            if !removed.is_empty() {
                stager.unstage_members(id.to_string(), removed).await?;
            }
        }
    }
    let link = pager.delta_link().map(str::to_string).ok_or_else(|| {
        Error::Upstream("Microsoft Graph ended a groups delta round without a deltaLink".into())
    })?;
    stager.finish().await?;
    // Groups gone by the round's end, and those whose members nothing needs but flattening.
    let unread: Vec<String> = groups
        .iter()
        .filter(|(_, group)| group.as_ref().is_none_or(|g| !g.members_read))
        .map(|(id, _)| id.clone())
        .collect();
    let run = run_id.to_string();
    stager
        .store
        .write_bulk(move |conn, _| {
            let unread: Vec<&str> = unread.iter().map(String::as_str).collect();
            sync_runs::flatten_staged_nesting(conn, &run, &unread)
        })
        .await?;
    let groups: Vec<StagedGroup> = groups.into_values().flatten().collect();
    progress(&format!("groups read: {}", groups.len()));
    Ok((groups, link))
}

/// The users reachable from an Entra group through nested groups, and the groups nested in it
/// (at any depth); none for a group deleted since it was listed.
async fn read_entra_nested(client: &GraphClient, group: &str) -> Result<(BTreeSet<String>, Vec<String>)> {
    let (mut users, mut groups) = (BTreeSet::new(), Vec::new());
    let read = client
        .for_each_page(&graph::group_nested_path(group), |items| {
            for item in items {
                let Some(id) = item.get("id").and_then(Value::as_str) else { continue };
                match graph::member_kind(item) {
                    Some(graph::MemberKind::User) => {
                        users.insert(id.to_string());
                    }
                    Some(graph::MemberKind::Group) => groups.push(id.to_string()),
                    None => {}
                }
            }
            Ok(())
        })
        .await;
    match read {
        Ok(_) => {
            groups.sort();
            groups.dedup();
            Ok((users, groups))
        }
        Err(Error::NotFound(_)) => Ok((BTreeSet::new(), Vec::new())),
        Err(other) => Err(other),
    }
}

/// A group of a Graph listing or delta round as the engine stages it, judged by the rules
/// (rule 6); `None` without an id or a name.
fn entra_staged_group(settings: &Connection, group: &Value) -> Option<StagedGroup> {
    let id = group.get("id").and_then(Value::as_str)?;
    let name = group.get("displayName").and_then(Value::as_str)?;
    let rules = &settings.rules;
    let imported = graph::group_selected(
        group,
        &rules.group_prefixes,
        rules.import_security_groups.unwrap_or(false),
        rules.import_groups_without_email.unwrap_or(false),
    );
    Some(StagedGroup {
        source_id: id.to_string(),
        name: name.to_string(),
        group_type: entra_group_type(group).to_string(),
        changed: true,
        members_read: imported || named_by_rules(settings, id, name),
        imported,
    })
}

/// An Entra connection's delta state: its deltaLinks as JSON.
fn delta_state(links: &graph::DeltaLinks) -> Result<String> {
    serde_json::to_string(links).map_err(|e| Error::internal("recording the delta links", e))
}

/// An Entra group's kind, as Entra's admin center names it (shown nowhere yet; staged for
/// the record).
fn entra_group_type(group: &Value) -> &'static str {
    let unified = group
        .get("groupTypes")
        .and_then(Value::as_array)
        .is_some_and(|types| types.iter().any(|t| t.as_str() == Some("Unified")));
    let flag = |key: &str| group.get(key).and_then(Value::as_bool) == Some(true);
    match (unified, flag("securityEnabled"), flag("mailEnabled")) {
        (true, _, _) => "Microsoft365",
        (false, true, true) => "MailEnabledSecurity",
        (false, true, false) => "Security",
        (false, false, _) => "Distribution",
    }
}

/// Whether the allow/deny rules name a group (by id, or by name case-insensitively).
fn named_by_rules(settings: &Connection, id: &str, name: &str) -> bool {
    let reference = GroupRef { id, name };
    [&settings.rules.allowed_users_groups, &settings.rules.denied_users_groups]
        .iter()
        .any(|list| list.iter().any(|n| rules::names_group(n, &reference)))
}

/// The source's name in messages.
fn source_name(kind: Kind) -> &'static str {
    match kind {
        Kind::Okta => "Okta",
        Kind::Entra => "Entra ID",
    }
}

fn staged_group(group: &Value) -> Option<StagedGroup> {
    Some(StagedGroup {
        source_id: group.get("id")?.as_str()?.to_string(),
        name: group.get("profile")?.get("name")?.as_str()?.to_string(),
        group_type: group.get("type").and_then(Value::as_str).unwrap_or("OKTA_GROUP").to_string(),
        changed: true,
        members_read: false,
        imported: false,
    })
}

/// What one batch decided.
#[derive(Debug, Default)]
struct BatchOutcome {
    /// (scimd id, decision, whether the user was active before, for counting re/deactivations)
    decisions: Vec<(StagedUser, Decision, Option<bool>)>,
    conflicts: Vec<Value>,
    warnings: Vec<String>,
}

/// What deciding a batch of staged users needs besides the database.
#[derive(Clone)]
struct BatchContext {
    run: String,
    connection: String,
    directory: DirectoryId,
    rules: UserRules,
    losers: HashMap<String, String>,
    source: &'static str,
}

/// A batch of staged users decided: the decisions, and the source id it ends at.
struct Decided {
    last: Option<String>,
    outcome: BatchOutcome,
}

/// The batches one transaction of the apply pass visits: those the plan listed (each by the
/// source id it starts after), or, for a run that was not planned, the batches from one on.
enum Visit {
    Planned(Vec<Option<String>>),
    From(Option<String>),
}

/// Decides the batch of [`BATCH`] staged users after source id `after` (from the start when
/// `None`).
fn decide_next_batch(
    conn: &mut crate::store::DbConn,
    registry: &Registry,
    context: &BatchContext,
    after: Option<&str>,
) -> Result<Decided> {
    let staged = sync_runs::staged_users(conn, &context.run, after, BATCH)?;
    let last = staged.last().map(|s| s.user.source_id.clone());
    Ok(Decided { last, outcome: decide_batch(conn, registry, context, staged)? })
}

fn decide_batch(
    conn: &mut crate::store::DbConn,
    registry: &Registry,
    context: &BatchContext,
    staged: Vec<StagedUser>,
) -> Result<BatchOutcome> {
    let BatchContext { run, connection, directory, rules, losers, source } = context;
    let mut outcome = BatchOutcome::default();
    let sources: Vec<&str> = staged.iter().map(|s| s.user.source_id.as_str()).collect();
    let memberships = sync_runs::groups_of(conn, run, &sources)?;
    let folded: Vec<String> =
        staged.iter().filter_map(|s| s.user.user_name.as_deref().map(crate::scim::index::fold)).collect();
    let holders = sync_runs::name_holders(conn, &directory.0, &folded)?;
    // Managers are linked by the id their user has (or will have) in this run.
    let manager_sources: Vec<&str> =
        staged.iter().filter_map(|s| s.user.manager_source_id.as_deref()).collect();
    let managers = planned_ids(conn, run, connection, directory, &manager_sources, rules, losers)?;
    let normalized = |body: &Value| resource::normalize(&registry.user, body).ok();
    let ids: Vec<&str> = staged.iter().map(|s| s.user_id.as_str()).collect();
    let mut stored = users::stored_resources(conn, directory, &ids)?;
    for mut item in staged {
        let user = &item.user;
        let owned = stored.remove(&item.user_id);
        let was_active = owned.as_ref().map(|r| r.get("active").and_then(Value::as_bool).unwrap_or(true));
        let groups: Vec<GroupRef<'_>> = memberships
            .get(&user.source_id)
            .map(|list| list.iter().map(|(id, name)| GroupRef { id, name }).collect())
            .unwrap_or_default();
        let held_by = match (losers.get(&user.source_id), user.user_name.as_deref()) {
            (Some(winner), _) => Some(format!("{source} user {winner} (older)")),
            (None, Some(name)) => match holders.get(&crate::scim::index::fold(name)) {
                Some((holder, _)) if *holder == item.user_id => None,
                Some((_, Some(other))) if other == connection => {
                    Some("another user of this connection".to_string())
                }
                Some((_, Some(other))) => Some(format!("connection {other}")),
                Some((_, None)) => Some("a user provisioned by SCIM push".to_string()),
                None => None,
            },
            (None, None) => None,
        };
        let facts = Facts {
            status: user.status,
            user_name: user.user_name.as_deref(),
            primary_email: &user.primary_email,
            groups: &groups,
            mapped: &user.resource,
            manager_id: user.manager_source_id.as_deref().and_then(|m| managers.get(m)).map(String::as_str),
            name_held_by: held_by.as_deref(),
        };
        let current = match owned {
            Some(stored) => Current::Owned(stored),
            None => Current::New,
        };
        let decision = plan::decide(&facts, &current, rules, &normalized);
        match &decision {
            Decision::Conflict { user_name, held_by } => outcome.conflicts.push(json!({
                "userName": user_name, "source_id": user.source_id, "held_by": held_by
            })),
            Decision::Skip { warning: Some(warning) } => {
                outcome.warnings.push(format!("{source} user {} {warning}", user.source_id))
            }
            _ => {}
        }
        // The mapped resource is not needed past deciding (a create or update carries the
        // desired body), and a transaction's batches hold thousands of decisions.
        item.user.resource = Stored::default();
        outcome.decisions.push((item, decision, was_active));
    }
    Ok(outcome)
}

/// The scimd ids of the users among `sources` that the connection owns or that this run
/// creates, by source id: what a manager or a group member links to. A user the rules leave out
/// links nothing, never an id that exists nowhere; one a delta run did not read keeps its id. A
/// dry run counts members this way, as applying would make them.
fn planned_ids(
    conn: &mut crate::store::DbConn,
    run: &str,
    connection: &str,
    directory: &DirectoryId,
    sources: &[&str],
    rules: &UserRules,
    losers: &HashMap<String, String>,
) -> Result<HashMap<String, String>> {
    let mut ids = sync_runs::owned_ids(conn, connection, sources)?;
    let staged: Vec<(String, sync_runs::StagedFacts)> = sync_runs::staged_facts(conn, run, sources)?
        .into_iter()
        .filter(|(_, facts)| !ids.contains_key(&facts.source_id))
        .collect();
    let folded: Vec<String> = staged
        .iter()
        .filter_map(|(_, facts)| facts.user_name.as_deref().map(crate::scim::index::fold))
        .collect();
    let holders = sync_runs::name_holders(conn, &directory.0, &folded)?;
    for (user_id, facts) in staged {
        let held = losers.contains_key(&facts.source_id)
            || facts
                .user_name
                .as_deref()
                .and_then(|name| holders.get(&crate::scim::index::fold(name)))
                .is_some_and(|(holder, _)| *holder != user_id);
        if plan::creates(facts.status, facts.user_name.as_deref(), &facts.primary_email, held, rules) {
            ids.insert(facts.source_id, user_id);
        }
    }
    Ok(ids)
}

/// Applies a batch's decisions: its creates in one go, then its updates. A userName taken
/// between plan and apply (by SCIM push, say) fails that user alone, as a conflict.
fn apply_batch(
    conn: &mut crate::store::DbConn,
    registry: &Registry,
    directory: &DirectoryId,
    connection: &str,
    actor: &Actor,
    outcome: &mut BatchOutcome,
) -> Result<()> {
    let mut creates = Vec::new();
    for (item, decision, _) in &outcome.decisions {
        if let Decision::Create(body) = decision {
            creates.push(users::NewUser::new(
                UserId(item.user_id.clone()),
                resource::normalize(&registry.user, body)?,
                Some((connection.to_string(), item.user.source_id.clone())),
            ));
        }
    }
    let mut taken: HashSet<String> = HashSet::new();
    for chunk in creates.chunks(users::MAX_NEW_USERS) {
        let failed = sync_runs::import_users(conn, registry, directory, actor, chunk)?;
        taken.extend(failed.into_iter().map(|(source, _)| source));
    }
    for (item, decision, _) in outcome.decisions.iter_mut() {
        let written = match &*decision {
            Decision::Create(_) if taken.contains(&item.user.source_id) => {
                Err(Error::Uniqueness("taken during this run".into()))
            }
            Decision::Update(body) => {
                let stored: Stored = resource::normalize(&registry.user, body)?;
                sync_runs::update_imported_user(conn, registry, directory, actor, &item.user_id, stored)
            }
            Decision::Create(_) | Decision::Unchanged | Decision::Skip { .. } | Decision::Conflict { .. } => {
                Ok(())
            }
        };
        match written {
            Ok(()) => {}
            Err(Error::Uniqueness(_)) => {
                let user_name = item.user.user_name.clone().unwrap_or_default();
                outcome.conflicts.push(json!({"userName": user_name, "source_id": item.user.source_id,
                    "held_by": "a record that took the userName during this run"}));
                *decision = Decision::Conflict { user_name, held_by: "taken during this run".into() };
            }
            Err(other) => return Err(other),
        }
    }
    Ok(())
}

fn tally(counts: &mut Counts, outcome: &BatchOutcome) {
    for (_, decision, was_active) in &outcome.decisions {
        match decision {
            Decision::Create(_) => counts.users_created += 1,
            Decision::Update(body) => {
                let now_active = body.get("active").and_then(Value::as_bool).unwrap_or(true);
                match (was_active, now_active) {
                    (Some(true), false) => counts.users_deactivated += 1,
                    (Some(false), true) => counts.users_reactivated += 1,
                    _ => counts.users_updated += 1,
                }
            }
            Decision::Unchanged => counts.users_unchanged += 1,
            Decision::Skip { .. } | Decision::Conflict { .. } => {}
        }
    }
}

/// [`start`], if `wanted` says so once the run holds the connection's lease: judged in the
/// transaction that takes the lease, it sees every run that ended before (the scheduler asks
/// there whether the run is still due, so that two instances never both run it). It is given
/// the id of the run, recorded in that transaction, to leave out. When it says no, nothing is
/// recorded and `None` is returned.
pub async fn start_when<F>(
    store: &Store,
    connection: &ConnectionRecord,
    request: RunRequest,
    wanted: F,
) -> Result<Option<Started>>
where
    F: FnOnce(&mut crate::store::DbConn, &str) -> Result<bool> + Send + 'static,
{
    use crate::store::sync_leases;
    let connection_id = connection.id.clone();
    let last_success = {
        let id = connection_id.clone();
        store.read(move |conn, _| sync_runs::last_success_started(conn, &id)).await?
    };
    let mut warnings = Vec::new();
    let mode = match (request.full, last_success, connection.delta_state.as_deref()) {
        (true, _, _) | (false, None, _) | (false, _, None) => Mode::Full,
        (false, Some(at), _) if connection.updated_at > at => {
            warnings.push(
                "the connection's settings changed since its last successful run, so this run read the whole source"
                    .to_string(),
            );
            Mode::Full
        }
        (false, Some(_), Some(stored)) if connection.config.kind == Kind::Entra => {
            match serde_json::from_str::<graph::DeltaLinks>(stored) {
                Ok(links) => Mode::EntraDelta(links),
                Err(_) => {
                    warnings.push(
                        "the stored Entra delta links are unreadable; this run read the whole tenant"
                            .to_string(),
                    );
                    Mode::Full
                }
            }
        }
        (false, Some(_), Some(_)) if connection.config.rules.app_id.is_some() => {
            warnings.push(
                "a connection limited to an app's assignments reads the whole source on every run: Okta offers no \
                 change listing for app assignments"
                    .to_string(),
            );
            Mode::Full
        }
        (false, Some(_), Some(watermark)) => {
            match delta_since(watermark) {
                Some(since) => Mode::Delta { since },
                None => {
                    warnings.push(format!("the stored delta position '{watermark}' is unreadable; this run read the whole source"));
                    Mode::Full
                }
            }
        }
    };
    let terms = store.sync_lease().clone();
    let connection_name = connection.config.name.clone();
    let (trigger, dry_run, name) = (request.trigger, request.dry_run, mode.name());
    let id = connection_id.clone();
    let begun = store
        .write(move |conn, _| {
            let run_id = sync_runs::start(conn, &id, trigger, name, dry_run)?;
            let now = crate::store::now_millis();
            let abandoned = sync_leases::acquire(conn, &id, &connection_name, &run_id, &terms, now)?;
            if !wanted(conn, &run_id)? {
                sync_leases::withdraw(conn, &id, &run_id)?;
                return Ok((None, abandoned));
            }
            Ok((Some(run_id), abandoned))
        })
        .await?;
    let (run_id, abandoned) = begun;
    if let Some(abandoned) = abandoned {
        tracing::warn!(
            connection = %connection_id, abandoned = %abandoned,
            "took over the lease of a run whose instance stopped; that run is marked failed"
        );
    }
    Ok(run_id.map(|run_id| Started { run_id, request, mode, warnings }))
}

impl Report {
    /// The report of a run that lost its connection's lease (see `Store::hold_sync_lease`): it
    /// failed, whatever it had reached.
    fn lost_lease(mut self) -> Report {
        self.status = "failed";
        self.error = Some(
            "this run lost its lease on the connection (its instance did not renew it in time) and another run \
             took the connection over; this run's outcome was not recorded as the connection's last good run"
                .to_string(),
        );
        self
    }
}
