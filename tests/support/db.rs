//! Throwaway PostgreSQL cluster for integration tests.
//!
//! `pg_cluster()` starts one private cluster per test process on first use
//! (initdb into a temp dir, trust auth, loopback only, durability off) and
//! tests carve out their own databases with `create_database`, typically by
//! cloning a migrated template, which is much faster than migrating each one.
//!
//! Only std and `tempfile` are used: the server is driven through the
//! `initdb`, `pg_ctl` and `psql` binaries of the local PostgreSQL install.

// Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

use std::fs;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::thread;
use std::time::Duration;

/// OS user that owns and runs the cluster when the tests run as root.
const PG_OS_USER: &str = "postgres";
/// PostgreSQL silently truncates longer identifiers (NAMEDATALEN - 1).
const MAX_IDENTIFIER_LEN: usize = 63;
const CLONE_RETRIES: u32 = 50;
const CLONE_RETRY_DELAY: Duration = Duration::from_millis(100);
const START_ATTEMPTS: u32 = 3;

/// A running cluster, owned by this test process.
pub struct PgCluster {
    port: u16,
    psql: String,
}

/// Whether the cluster keeps PostgreSQL's durable defaults (fsync, synchronous commit). Tests
/// turn durability off for speed; the load bench turns it on, since its figures claim durable
/// writes. Takes effect only before the cluster first starts.
static DURABLE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

pub fn keep_durable_defaults() {
    DURABLE.store(true, std::sync::atomic::Ordering::SeqCst);
}

/// The cluster shared by every test in this process, started on first call.
/// A startup failure is cached too, so every test reports the same error
/// instead of retrying initdb.
pub fn pg_cluster() -> Result<&'static PgCluster, String> {
    static CLUSTER: OnceLock<Result<PgCluster, String>> = OnceLock::new();
    CLUSTER.get_or_init(PgCluster::start).as_ref().map_err(Clone::clone)
}

/// A database name unique within this machine for the lifetime of the test
/// process: `<prefix>_<pid>_<n>`. The prefix is lowercased and any character
/// outside `[a-z0-9_]` becomes `_`, so a test name can be passed as is.
pub fn unique_database_name(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let prefix: String = prefix
        .chars()
        .map(|c| c.to_ascii_lowercase())
        .map(|c| if is_identifier_char(c) { c } else { '_' })
        .take(32) // "_<pid>_<u64>" still fits in MAX_IDENTIFIER_LEN
        .collect();
    format!("{prefix}_{}_{n}", std::process::id())
}

impl PgCluster {
    /// `postgres://postgres@127.0.0.1:<port>`, without a database name.
    pub fn base_url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}", self.port)
    }

    /// Creates database `name` (optionally cloned from `template`) and returns
    /// its URL. Both names must match `[a-z0-9_]+`.
    ///
    /// Cloning fails while any session is connected to the template, e.g. a
    /// pool that is still closing its connections, so that error is retried
    /// for a few seconds.
    pub fn create_database(&self, name: &str, template: Option<&str>) -> Result<String, String> {
        validate_identifier(name)?;
        let sql = match template {
            Some(template) => {
                validate_identifier(template)?;
                format!("CREATE DATABASE \"{name}\" TEMPLATE \"{template}\"")
            }
            None => format!("CREATE DATABASE \"{name}\""),
        };
        let mut attempt = 1;
        loop {
            match self.psql(&sql) {
                Ok(_) => return Ok(format!("{}/{name}", self.base_url())),
                Err(e) if attempt < CLONE_RETRIES && e.contains("is being accessed by other users") => {
                    attempt += 1;
                    thread::sleep(CLONE_RETRY_DELAY);
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Runs one SQL command against the `postgres` maintenance database.
    fn psql(&self, sql: &str) -> Result<Output, String> {
        let port = self.port.to_string();
        let args = [
            "-X", // ignore ~/.psqlrc
            "-q",
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-U",
            "postgres",
            "-d",
            "postgres",
            "-v",
            "ON_ERROR_STOP=1",
            "-c",
            sql,
        ];
        run(&self.psql, &args.map(String::from))
    }

    fn start() -> Result<PgCluster, String> {
        let bin_dir = find_bin_dir()?;
        let initdb = path_string(&bin_dir.join("initdb"))?;
        let pg_ctl = path_string(&bin_dir.join("pg_ctl"))?;
        // Prefer the psql matching the server (Debian's /usr/bin/psql is a wrapper).
        let psql = Some(bin_dir.join("psql"))
            .filter(|p| p.is_file())
            .or_else(|| find_on_path("psql"))
            .ok_or("psql not found next to initdb nor on PATH")?;
        let psql = path_string(&psql)?;

        let run_as = RunAs::detect()?;
        // As root the server runs as `postgres`, which must be able to reach
        // the data dir: /tmp is world-traversable whatever TMPDIR says.
        let parent = match run_as {
            RunAs::CurrentUser => std::env::temp_dir(),
            RunAs::Runuser | RunAs::Su => PathBuf::from("/tmp"),
        };
        // Kept rather than dropped: the watchdog deletes it, and after a
        // failed start the server log inside must survive for inspection.
        let dir = tempfile::Builder::new()
            .prefix("scimd-pg-")
            .tempdir_in(&parent)
            .map_err(|e| format!("cannot create a temp dir in {}: {e}", parent.display()))?
            .keep();
        let dir = path_string(&dir)?;
        if run_as != RunAs::CurrentUser {
            run("chown", &["-R".into(), PG_OS_USER.into(), dir.clone()])?;
        }

        // Spawned before anything can be left running, so that every exit
        // path of this process (including a failure below) is cleaned up.
        spawn_watchdog(run_as, &pg_ctl, &dir)?;

        let (program, args) = run_as.wrap(
            &initdb,
            &[
                "-D",
                &dir,
                "-U",
                "postgres",
                "--auth=trust",
                "--encoding=UTF8",
                // C locale also keeps server messages in English, which the
                // clone retry in create_database matches on.
                "--locale=C",
                "--no-sync", // throwaway data: saves ~0.5 s
            ],
        );
        run(&program, &args)?;

        let log = format!("{dir}/log");
        let mut attempt = 1;
        loop {
            let port = free_port()?;
            let log_offset = fs::metadata(&log).map(|m| m.len()).unwrap_or(0);
            match start_server(run_as, &pg_ctl, &dir, &log, port) {
                Ok(()) => return Ok(PgCluster { port, psql }),
                // The port picked by free_port() can be taken by someone else
                // before the server binds it.
                Err(_)
                    if attempt < START_ATTEMPTS
                        && log_since(&log, log_offset).contains("Address already in use") =>
                {
                    attempt += 1;
                }
                Err(e) => {
                    return Err(format!(
                        "{e}\nserver log {log} (deleted when the test process exits); it ends with:\n{}",
                        log_tail(&log, 20)
                    ))
                }
            }
        }
    }
}

fn start_server(run_as: RunAs, pg_ctl: &str, dir: &str, log: &str, port: u16) -> Result<(), String> {
    // pg_ctl passes -o through a shell, hence the quoting.
    let speed = if DURABLE.load(std::sync::atomic::Ordering::SeqCst) {
        "-c shared_buffers=128MB"
    } else {
        "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c shared_buffers=64MB"
    };
    let options = format!(
        "-p {port} -k {} -c listen_addresses=127.0.0.1 -c max_connections=300 {speed}",
        shell_quote(dir)
    );
    let (program, args) = run_as.wrap(pg_ctl, &["-D", dir, "-o", &options, "-l", log, "-w", "start"]);
    run(&program, &args).map(drop)
}

/// Stops the cluster and deletes its directory once this process is gone.
///
/// A watchdog rather than a Drop/atexit hook: statics are never dropped, and
/// nothing in-process runs on SIGKILL or abort. The shell polls the test
/// process with `kill -0` and then runs `pg_ctl -m immediate stop; rm -rf`.
/// It runs as the current user (a `postgres`-owned watchdog could not signal
/// a root test process, and `kill -0` would report it dead at once) and in
/// its own process group, so a Ctrl-C aimed at `cargo test` does not kill it.
fn spawn_watchdog(run_as: RunAs, pg_ctl: &str, dir: &str) -> Result<(), String> {
    const SCRIPT: &str = r#"pid=$1 dir=$2; shift 2
while kill -0 "$pid" 2>/dev/null; do sleep 1; done
"$@" >/dev/null 2>&1
rm -rf "$dir""#;
    let (stop_program, stop_args) = run_as.wrap(pg_ctl, &["-D", dir, "-m", "immediate", "stop"]);
    Command::new("sh")
        .args(["-c", SCRIPT, "scimd-pg-watchdog"])
        .arg(std::process::id().to_string())
        .arg(dir)
        .arg(stop_program)
        .args(stop_args)
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .map(drop) // not waited for: it outlives this process by design
        .map_err(|e| format!("cannot spawn the cluster watchdog (sh): {e}"))
}

/// How PostgreSQL commands are run: PostgreSQL refuses to run as root.
#[derive(Clone, Copy, PartialEq, Eq)]
enum RunAs {
    CurrentUser,
    Runuser,
    Su,
}

impl RunAs {
    fn detect() -> Result<RunAs, String> {
        if effective_uid()? != 0 {
            return Ok(RunAs::CurrentUser);
        }
        ensure_pg_os_user()?;
        if find_on_path("runuser").is_some() {
            Ok(RunAs::Runuser)
        } else if find_on_path("su").is_some() {
            Ok(RunAs::Su)
        } else {
            Err("running as root, but neither runuser nor su is available to run PostgreSQL as the postgres user".into())
        }
    }

    /// The program and arguments that run `program args` as the right user.
    fn wrap(self, program: &str, args: &[&str]) -> (String, Vec<String>) {
        let args = args.iter().map(|a| a.to_string());
        match self {
            RunAs::CurrentUser => (program.into(), args.collect()),
            RunAs::Runuser => (
                "runuser".into(),
                ["-u", PG_OS_USER, "--", program].map(String::from).into_iter().chain(args).collect(),
            ),
            RunAs::Su => {
                let line = std::iter::once(program.to_string())
                    .chain(args)
                    .map(|a| shell_quote(&a))
                    .collect::<Vec<_>>()
                    .join(" ");
                ("su".into(), vec![PG_OS_USER.into(), "-s".into(), "/bin/sh".into(), "-c".into(), line])
            }
        }
    }
}

fn effective_uid() -> Result<u32, String> {
    // "Uid:\t<real>\t<effective>\t<saved>\t<fs>"
    let from_proc = fs::read_to_string("/proc/self/status").ok().and_then(|status| {
        let line = status.lines().find(|l| l.starts_with("Uid:"))?;
        line.split_whitespace().nth(2)?.parse().ok()
    });
    if let Some(uid) = from_proc {
        return Ok(uid);
    }
    let out = run("id", &["-u".into()])?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.trim().parse().map_err(|e| format!("cannot parse the output of `id -u` ({:?}): {e}", text.trim()))
}

fn ensure_pg_os_user() -> Result<(), String> {
    let exists = || {
        Command::new("id")
            .arg(PG_OS_USER)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if exists() {
        return Ok(());
    }
    let created =
        run("useradd", &["--system", "--no-create-home", "--shell", "/bin/sh", PG_OS_USER].map(String::from));
    // Another test process may have created it concurrently.
    match created {
        _ if exists() => Ok(()),
        Ok(_) => Err(format!("useradd succeeded but the `{PG_OS_USER}` user still does not exist")),
        Err(e) => Err(format!(
            "running as root, so PostgreSQL must run as the `{PG_OS_USER}` OS user, which does not exist \
             and could not be created ({e}); create it with `useradd --system {PG_OS_USER}`"
        )),
    }
}

/// Directory holding initdb and pg_ctl: from PATH first, else the highest
/// version under /usr/lib/postgresql (Debian/Ubuntu keep them off PATH).
fn find_bin_dir() -> Result<PathBuf, String> {
    let has_tools = |dir: &Path| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file();
    if let Some(initdb) = find_on_path("initdb") {
        // Resolve symlinks (e.g. /usr/local/bin/initdb) to reach the real bin
        // dir, which also holds the matching psql.
        let real = fs::canonicalize(&initdb).ok();
        for dir in [real.as_deref(), Some(initdb.as_path())].into_iter().flatten().filter_map(Path::parent) {
            if has_tools(dir) {
                return Ok(dir.to_path_buf());
            }
        }
    }
    let root = Path::new("/usr/lib/postgresql");
    let mut versions: Vec<(Vec<u32>, PathBuf)> = fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name();
            let version: Option<Vec<u32>> = name.to_str()?.split('.').map(|p| p.parse().ok()).collect();
            Some((version?, entry.path().join("bin")))
        })
        .filter(|(_, bin)| has_tools(bin))
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin).ok_or_else(|| {
        "PostgreSQL not found: need initdb and pg_ctl on PATH or under /usr/lib/postgresql/<version>/bin \
         (Debian: apt-get install postgresql)"
            .to_string()
    })
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join(name)).find(|p| p.is_file())
}

fn free_port() -> Result<u16, String> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .map_err(|e| format!("cannot find a free TCP port on 127.0.0.1: {e}"))
}

/// Runs a command to completion; any failure becomes an error naming the
/// command and carrying its stderr (or stdout if stderr is empty).
fn run(program: &str, args: &[String]) -> Result<Output, String> {
    let shown = std::iter::once(program)
        .chain(args.iter().map(String::as_str))
        .map(|a| if a.contains(' ') { shell_quote(a) } else { a.to_string() })
        .collect::<Vec<_>>()
        .join(" ");
    let out = Command::new(program)
        .args(args)
        // The test's cwd may not be readable by the postgres user.
        .current_dir("/")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run `{shown}`: {e}"))?;
    if out.status.success() {
        return Ok(out);
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let detail = if stderr.trim().is_empty() { String::from_utf8_lossy(&out.stdout) } else { stderr };
    Err(format!("`{shown}` failed ({}): {}", out.status, detail.trim()))
}

fn validate_identifier(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_IDENTIFIER_LEN || !name.chars().all(is_identifier_char) {
        return Err(format!(
            "invalid database name {name:?}: expected 1 to {MAX_IDENTIFIER_LEN} characters of [a-z0-9_]"
        ));
    }
    Ok(())
}

fn is_identifier_char(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

fn log_since(log: &str, offset: u64) -> String {
    let text = fs::read(log).unwrap_or_default();
    let start = usize::try_from(offset).unwrap_or(usize::MAX).min(text.len());
    String::from_utf8_lossy(&text[start..]).into_owned()
}

fn log_tail(log: &str, lines: usize) -> String {
    match fs::read(log) {
        Ok(text) => {
            let text = String::from_utf8_lossy(&text);
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Err(e) => format!("(cannot read it: {e})"),
    }
}

fn path_string(path: &Path) -> Result<String, String> {
    path.to_str().map(str::to_string).ok_or_else(|| format!("path is not valid UTF-8: {}", path.display()))
}
