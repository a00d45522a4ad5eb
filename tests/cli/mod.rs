//! The `scimd` binary as an operator uses it.

use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

fn scimd(dir: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_scimd"));
    command
        .current_dir(dir)
        .env_remove("SCIMD_DATABASE_URL")
        .env_remove("SCIMD_BIND")
        .env_remove("SCIMD_CONFIG");
    command
}

fn run(command: &mut Command) -> Output {
    let output = command.output().unwrap();
    assert!(output.status.success(), "{:?}: {}", command, String::from_utf8_lossy(&output.stderr));
    output
}

fn stdout(output: &Output) -> String {
    String::from_utf8(output.stdout.clone()).unwrap()
}

fn is_key(text: &str) -> bool {
    text.len() == 70 && text.starts_with("scimd_") && text[6..].bytes().all(|b| b.is_ascii_hexdigit())
}

#[test]
fn key_issue_prints_the_key_alone_and_listing_never_shows_it() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("cli.db").display());
    run(scimd(dir.path()).args(["--database-url", &db, "directory", "create", "acme", "--name", "Acme Inc"]));
    let issued = run(scimd(dir.path()).args([
        "--database-url",
        &db,
        "key",
        "issue",
        "acme",
        "--name",
        "okta",
        "--expires-in",
        "90d",
    ]));
    let key = stdout(&issued);
    assert!(key.ends_with('\n') && key.lines().count() == 1, "stdout must be the key alone: {key:?}");
    let key = key.trim();
    assert!(is_key(key), "{key}");

    let listed = stdout(&run(scimd(dir.path()).args(["--database-url", &db, "key", "list", "acme"])));
    assert!(!listed.contains(key), "the secret must never be listed");
    assert!(listed.contains(&key[..18]), "the public prefix identifies the key:\n{listed}");
    assert!(listed.contains("okta") && listed.contains("active"), "{listed}");

    let key_id = listed.lines().nth(1).unwrap().split_whitespace().next().unwrap().to_string();
    run(scimd(dir.path()).args(["--database-url", &db, "key", "revoke", &key_id]));
    let listed = stdout(&run(scimd(dir.path()).args(["--database-url", &db, "key", "list", "acme"])));
    assert!(listed.contains("revoked"), "{listed}");

    let directories = stdout(&run(scimd(dir.path()).args(["--database-url", &db, "directory", "list"])));
    assert!(directories.contains("acme") && directories.contains("Acme Inc"), "{directories}");
}

#[test]
fn operator_mistakes_get_clear_messages() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("cli.db").display());
    let cases: [(&[&str], &str); 5] = [
        (&["key", "issue", "nope"], "no directory with slug 'nope'"),
        (&["directory", "create", "Bad Slug"], "is not valid"),
        (&["key", "issue", "acme", "--expires-in", "soon"], "not a duration"),
        (&["key", "revoke", "missing-id"], "no key with id 'missing-id'"),
        (&["--database-url", "mysql://x", "directory", "list"], "expected sqlite://"),
    ];
    run(scimd(dir.path()).args(["--database-url", &db, "directory", "create", "acme"]));
    for (args, expected) in cases {
        let mut command = scimd(dir.path());
        if !args.contains(&"--database-url") {
            command.args(["--database-url", &db]);
        }
        let output = command.args(args).output().unwrap();
        assert!(!output.status.success(), "{args:?} should fail");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
        assert!(output.stdout.is_empty(), "{args:?} printed to stdout");
    }
    let output = scimd(dir.path())
        .args(["--database-url", &db, "--config-file", "missing.toml", "directory", "list"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&output.stderr).contains("missing.toml does not exist"));
}

#[test]
fn settings_layer_file_then_environment_then_flags() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("scimd.toml"), "database_url = \"sqlite://from-file.db\"\n").unwrap();
    let with_file = |command: &mut Command| {
        command.args(["--config-file", "scimd.toml", "directory", "list"]);
    };
    let mut command = scimd(dir.path());
    with_file(&mut command);
    run(&mut command);
    assert!(dir.path().join("from-file.db").exists());

    let mut command = scimd(dir.path());
    with_file(command.env("SCIMD_DATABASE_URL", "sqlite://from-env.db"));
    run(&mut command);
    assert!(dir.path().join("from-env.db").exists());

    let mut command = scimd(dir.path());
    with_file(
        command
            .env("SCIMD_DATABASE_URL", "sqlite://from-env.db")
            .args(["--database-url", "sqlite://from-flag.db"]),
    );
    run(&mut command);
    assert!(dir.path().join("from-flag.db").exists());
}

struct Serving(Child);

impl Drop for Serving {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Starts `scimd serve`, waits until /healthz answers, and returns what it printed so far
/// (the bootstrap lines come before the server listens) and its address; stops it on drop.
fn serve(dir: &Path, db: &str) -> (Serving, String, String) {
    let bind = format!("127.0.0.1:{}", free_port());
    let mut child = scimd(dir)
        .args(["--database-url", db, "serve", "--bind", &bind])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let printed = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let sink = printed.clone();
    let mut out = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        let mut buffer = [0u8; 1024];
        while let Ok(n) = out.read(&mut buffer) {
            if n == 0 {
                break;
            }
            sink.lock().unwrap().push_str(&String::from_utf8_lossy(&buffer[..n]));
        }
    });
    let serving = Serving(child);
    wait_until_healthy(&bind);
    let printed = printed.lock().unwrap().clone();
    (serving, printed, bind)
}

/// Waits for a starting `scimd serve` on `bind` to answer `/healthz`.
fn wait_until_healthy(bind: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while http_get_status(bind, "/healthz", None) != Some(200) {
        assert!(Instant::now() < deadline, "scimd serve did not become healthy");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A minimal HTTP/1.0 GET, enough for a probe without an async runtime.
fn http_get_status(host: &str, path: &str, bearer: Option<&str>) -> Option<u16> {
    let auth = bearer.map(|key| format!("Authorization: Bearer {key}"));
    http_get(host, path, auth.as_deref()).map(|(status, _)| status)
}

/// A minimal HTTP/1.0 GET with one extra header line: the status and the body.
fn http_get(host: &str, path: &str, header: Option<&str>) -> Option<(u16, String)> {
    use std::io::Write;
    let mut stream = std::net::TcpStream::connect(host).ok()?;
    let header = header.map(|line| format!("{line}\r\n")).unwrap_or_default();
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {host}\r\n{header}\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.split_whitespace().nth(1)?.parse().ok()?;
    let body = response.split_once("\r\n\r\n").map(|(_, body)| body.to_string()).unwrap_or_default();
    Some((status, body))
}

#[test]
fn first_serve_on_an_empty_database_prints_a_working_key_once() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("first.db").display());
    let (server, first, bind) = serve(dir.path(), &db);
    let key = first
        .split_whitespace()
        .find(|w| is_key(w.trim_matches('\'')))
        .map(|w| w.trim_matches('\'').to_string());
    let key = key.unwrap_or_else(|| panic!("no key printed:\n{first}"));
    assert!(
        first.contains(&format!("curl -H 'Authorization: Bearer {key}' http://{bind}/scim/v2/Users")),
        "{first}"
    );
    assert_eq!(http_get_status(&bind, "/scim/v2/Users", Some(&key)), Some(200));
    drop(server);

    let (_server, second, bind) = serve(dir.path(), &db);
    assert!(!second.contains("scimd_"), "the key must never be printed again:\n{second}");
    assert_eq!(http_get_status(&bind, "/scim/v2/Users", Some(&key)), Some(200), "the first key still works");
}

#[test]
fn serve_stops_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("stop.db").display());
    let (mut server, printed, bind) = serve(dir.path(), &db);
    let key = printed.split_whitespace().find(|w| is_key(w)).unwrap().to_string();
    let pid = server.0.id().to_string();
    let status = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    let exit = loop {
        if let Some(exit) = server.0.try_wait().unwrap() {
            break exit;
        }
        assert!(Instant::now() < deadline, "scimd did not stop within 20 s of SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(exit.success(), "SIGTERM is a normal stop: {exit:?}");
    assert_eq!(http_get_status(&bind, "/healthz", None), None, "nothing listens any more");
    // What was committed before the stop is there after a restart.
    let (_again, _, bind) = serve(dir.path(), &db);
    assert_eq!(http_get_status(&bind, "/scim/v2/Users", Some(&key)), Some(200));
}

fn is_admin_token(text: &str) -> bool {
    text.len() == 76 && text.starts_with("scimd_admin_") && text[12..].bytes().all(|b| b.is_ascii_hexdigit())
}

#[test]
fn an_admin_token_is_printed_alone_opens_the_admin_api_and_can_be_revoked() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("admin.db").display());
    let issued =
        run(scimd(dir.path()).args(["--database-url", &db, "admin-token", "issue", "--name", "ops"]));
    let token = stdout(&issued);
    assert!(token.ends_with('\n') && token.lines().count() == 1, "stdout must be the token alone: {token:?}");
    let token = token.trim().to_string();
    assert!(is_admin_token(&token), "{token}");
    let listed = stdout(&run(scimd(dir.path()).args(["--database-url", &db, "admin-token", "list"])));
    assert!(!listed.contains(&token) && listed.contains(&token[..24]) && listed.contains("ops"), "{listed}");

    let (_server, _, bind) = serve(dir.path(), &db);
    assert_eq!(http_get_status(&bind, "/admin/v1/directories", Some(&token)), Some(200));
    assert_eq!(http_get_status(&bind, "/admin/v1/directories", None), Some(401));
    let id = listed.lines().nth(1).unwrap().split_whitespace().next().unwrap().to_string();
    run(scimd(dir.path()).args(["--database-url", &db, "admin-token", "revoke", &id]));
    assert_eq!(http_get_status(&bind, "/admin/v1/directories", Some(&token)), Some(401), "revoked at once");
}

#[test]
fn a_directory_holding_users_is_deleted_only_with_purge() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("purge.db").display());
    run(scimd(dir.path()).args(["--database-url", &db, "directory", "create", "acme"]));
    run(scimd(dir.path()).args([
        "--database-url",
        &db,
        "directory",
        "configure",
        "acme",
        "--max-page-size",
        "50",
    ]));
    let store =
        scimd::app::open_store(&scimd::config::Config { database_url: db.clone(), ..Default::default() })
            .unwrap();
    store
        .write_now(|conn, registry| {
            let acme = scimd::store::directories::get_by_slug(conn, "acme")?;
            let user = serde_json::json!({"userName": "held@example.com"});
            let user = user.as_object().unwrap().clone();
            scimd::store::users::insert(conn, registry, &acme.id, &scimd::store::audit::Actor::Cli, user)?;
            Ok(())
        })
        .unwrap();
    drop(store);
    let refused =
        scimd(dir.path()).args(["--database-url", &db, "directory", "delete", "acme"]).output().unwrap();
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("1 user(s)") && stderr.contains("--purge"), "{stderr}");
    let purged =
        run(scimd(dir.path()).args(["--database-url", &db, "directory", "delete", "acme", "--purge"]));
    assert!(String::from_utf8_lossy(&purged.stderr).contains("1 user(s)"));
    let listed = stdout(&run(scimd(dir.path()).args(["--database-url", &db, "directory", "list"])));
    assert!(!listed.contains("acme"), "{listed}");
}

/// Alice (active) and Dave (deactivated) in directory `acme`, and a lookup session of Alice's
/// opened straight through the store, as the ACS would: the session cookie (`name=value`).
fn lookup_people_and_session(db: &str) -> String {
    use scimd::store::{audit::Actor, directories, saml, users};
    let store =
        scimd::app::open_store(&scimd::config::Config { database_url: db.to_string(), ..Default::default() })
            .unwrap();
    store
        .write_now(|conn, registry| {
            let acme = directories::get_by_slug(conn, "acme")?;
            for (user_name, display_name, active) in
                [("alice@example.com", "Alice Liddell", true), ("dave@example.com", "Dave Gone", false)]
            {
                let body = serde_json::json!({
                    "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
                    "userName": user_name, "displayName": display_name, "active": active,
                });
                let user = scimd::scim::resource::normalize(&registry.user, &body)?;
                users::insert(conn, registry, &acme.id, &Actor::Cli, user)?;
            }
            let key = scimd::saml::CookieKey::new(&saml::cookie_key(conn)?);
            let session_id = format!("cli-test-{}", uuid::Uuid::new_v4().simple());
            let expires_at = scimd::store::now_millis() + 3_600_000;
            let login = scimd::saml::VerifiedLogin {
                assertion_id: format!("_cli{}", uuid::Uuid::new_v4().simple()),
                subject: "alice@example.com".into(),
                in_response_to: None,
                valid_until: chrono::Utc::now() + chrono::Duration::minutes(5),
            };
            let new = saml::NewSession {
                id_hash: scimd::token::hash(&session_id),
                csrf_token: "cli-test".into(),
                expires_at,
            };
            saml::complete_sign_in(conn, &acme.id, &login, &new)?.unwrap();
            let name = scimd::http::saml::session_cookie(&acme.id);
            Ok(format!("{name}={}", key.seal("session", &session_id, expires_at)))
        })
        .unwrap()
}

#[test]
fn directory_configure_show_deactivated_hides_deactivated_people_from_the_lookup() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("lookup.db").display());
    run(scimd(dir.path()).args(["--database-url", &db, "directory", "create", "acme"]));
    let cookie = lookup_people_and_session(&db);
    let (_server, _, bind) = serve(dir.path(), &db);
    let search = |q: &str| -> serde_json::Value {
        let cookie = format!("Cookie: {cookie}");
        let (status, body) = http_get(&bind, &format!("/d/acme/api/people?q={q}"), Some(&cookie)).unwrap();
        assert_eq!(status, 200, "{body}");
        serde_json::from_str(&body).unwrap()
    };
    let configure = |show: &str| {
        let args = ["--database-url", &db, "directory", "configure", "acme", "--show-deactivated", show];
        String::from_utf8_lossy(&run(scimd(dir.path()).args(args)).stderr).to_string()
    };
    // Shown, marked, by default.
    assert_eq!(search("dave")["items"][0]["active"], false);

    let told = configure("false");
    assert!(told.contains("show deactivated = false"), "{told}");
    assert_eq!(search("dave")["items"], serde_json::json!([]));
    assert_eq!(search("alice")["items"][0]["userName"], "alice@example.com");

    let told = configure("true");
    assert!(told.contains("show deactivated = true"), "{told}");
    assert_eq!(search("dave")["items"][0]["userName"], "dave@example.com");

    // Anything but true or false is refused, and changes nothing.
    let refused = scimd(dir.path())
        .args(["--database-url", &db, "directory", "configure", "acme", "--show-deactivated", "no"])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--show-deactivated"));
    assert_eq!(search("dave")["items"][0]["active"], false);
}

#[test]
fn serve_refuses_to_start_with_stored_secrets_and_no_key_or_the_wrong_key() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("secrets.db").display());
    run(scimd(dir.path()).args(["--database-url", &db, "directory", "create", "acme"]));
    let key_hex = stdout(&run(scimd(dir.path()).args(["secret-key", "generate"]))).trim().to_string();
    assert_eq!(key_hex.len(), 64);
    let key = scimd::encryption::SecretKey::from_hex(&key_hex).unwrap();
    let store =
        scimd::app::open_store(&scimd::config::Config { database_url: db.clone(), ..Default::default() })
            .unwrap();
    store
        .write_now(move |conn, _| {
            let acme = scimd::store::directories::get_by_slug(conn, "acme")?;
            scimd::store::secrets::put(conn, &key, &acme.id, "conn-1", "api_token", b"SSWS-token")?;
            Ok(())
        })
        .unwrap();
    drop(store);

    let serve_with = |secret: Option<&str>| {
        let mut command = scimd(dir.path());
        command.env_remove("SCIMD_SECRET_KEY").args([
            "--database-url",
            &db,
            "serve",
            "--bind",
            "127.0.0.1:0",
        ]);
        if let Some(secret) = secret {
            command.env("SCIMD_SECRET_KEY", secret);
        }
        command.output().unwrap()
    };
    let without = serve_with(None);
    assert!(!without.status.success());
    let stderr = String::from_utf8_lossy(&without.stderr);
    assert!(
        stderr.contains("1 encrypted importer secret(s)") && stderr.contains("SCIMD_SECRET_KEY"),
        "{stderr}"
    );
    let wrong = serve_with(Some(&"ab".repeat(32)));
    assert!(!wrong.status.success());
    assert!(String::from_utf8_lossy(&wrong.stderr).contains("does not open"));
    let malformed = serve_with(Some("short"));
    assert!(String::from_utf8_lossy(&malformed.stderr).contains("64 hex digits"));

    // With the right key it serves.
    let bind = format!("127.0.0.1:{}", free_port());
    let child = scimd(dir.path())
        .env("SCIMD_SECRET_KEY", &key_hex)
        .args(["--database-url", &db, "serve", "--bind", &bind])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _serving = Serving(child);
    let deadline = Instant::now() + Duration::from_secs(30);
    while http_get_status(&bind, "/healthz", None) != Some(200) {
        assert!(Instant::now() < deadline, "scimd serve did not start with the right key");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn connections_are_managed_from_config_files_with_secret_files() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("conn.db").display());
    let key = stdout(&run(scimd(dir.path()).args(["secret-key", "generate"]))).trim().to_string();
    run(scimd(dir.path()).args(["--database-url", &db, "directory", "create", "acme"]));
    std::fs::write(dir.path().join("okta-token"), "00SecretFromAFile\n").unwrap();
    std::fs::write(
        dir.path().join("okta.json"),
        r#"{"name": "okta-main", "kind": "okta",
            "okta": {"org_url": "https://acme.okta.com", "auth": {"method": "api_token", "token_file": "okta-token"}},
            "rules": {"group_prefixes": ["eng-"]}}"#,
    )
    .unwrap();
    let with_key = |command: &mut Command| {
        command.env("SCIMD_SECRET_KEY", &key).args(["--database-url", &db]);
    };
    let mut create = scimd(dir.path());
    with_key(&mut create);
    create.args(["connection", "create", "acme", "okta-main", "--config", "okta.json"]);
    run(&mut create);

    let mut show = scimd(dir.path());
    with_key(&mut show);
    let shown = stdout(&run(show.args(["connection", "show", "acme/okta-main"])));
    assert!(!shown.contains("00SecretFromAFile"), "{shown}");
    let shown: serde_json::Value = serde_json::from_str(&shown).unwrap();
    assert_eq!(shown["okta"]["auth"]["token"]["set"], true);
    assert_eq!(shown["rules"]["group_prefixes"], serde_json::json!(["eng-"]));

    // A bad config exits 2 and names the key.
    std::fs::write(
        dir.path().join("bad.json"),
        r#"{"kind": "okta", "okta": {"org_url": "https://acme.okta.com", "auth": {"method": "api_token", "token": "x"}},
            "rules": {"username_source": "nickname"}}"#,
    )
    .unwrap();
    let mut bad = scimd(dir.path());
    with_key(&mut bad);
    let output =
        bad.args(["connection", "create", "acme", "second", "--config", "bad.json"]).output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("rules.username_source"));

    let mut list = scimd(dir.path());
    with_key(&mut list);
    let listed = stdout(&run(list.args(["connection", "list", "acme"])));
    assert!(listed.contains("okta-main") && !listed.contains("second"), "{listed}");

    let mut delete = scimd(dir.path());
    with_key(&mut delete);
    run(delete.args(["connection", "delete", "acme/okta-main"]));
    let mut list = scimd(dir.path());
    with_key(&mut list);
    assert!(!stdout(&run(list.args(["connection", "list", "acme"]))).contains("okta-main"));
}

#[test]
fn an_entra_admin_gets_an_authorize_link_and_status_says_the_connection_needs_consent() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("consent.db").display());
    let key = stdout(&run(scimd(dir.path()).args(["secret-key", "generate"]))).trim().to_string();
    run(scimd(dir.path()).args(["--database-url", &db, "directory", "create", "acme"]));
    std::fs::write(dir.path().join("entra-secret"), "Zx8Q~secret-value\n").unwrap();
    std::fs::write(
        dir.path().join("entra.json"),
        r#"{"name": "entra-main", "kind": "entra",
            "entra": {"tenant": "contoso.onmicrosoft.com",
                      "auth": {"method": "delegated", "client_id": "6c1e2f3a-4b5d-4e6f-8a7b-9c0d1e2f3a4b",
                               "client_secret_file": "entra-secret"}}}"#,
    )
    .unwrap();
    let operator = |args: &[&str]| {
        let mut command = scimd(dir.path());
        command
            .env("SCIMD_SECRET_KEY", &key)
            .env("SCIMD_PUBLIC_URL", "https://scimd.example")
            .args(["--database-url", &db])
            .args(args);
        command
    };
    run(&mut operator(&["connection", "create", "acme", "entra-main", "--config", "entra.json"]));

    let output = run(&mut operator(&["connection", "authorize", "acme/entra-main"]));
    let link = stdout(&output);
    assert_eq!(link.lines().count(), 1, "stdout is the link alone: {link:?}");
    let link = url::Url::parse(link.trim()).unwrap();
    assert_eq!(
        format!("{}://{}{}", link.scheme(), link.host_str().unwrap(), link.path()),
        "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/authorize"
    );
    let query: std::collections::BTreeMap<String, String> = link.query_pairs().into_owned().collect();
    assert_eq!(query["redirect_uri"], "https://scimd.example/admin/v1/entra/callback");
    assert_eq!(query["client_id"], "6c1e2f3a-4b5d-4e6f-8a7b-9c0d1e2f3a4b");
    assert_eq!(query["scope"], "offline_access User.Read.All GroupMember.Read.All");
    let told = String::from_utf8_lossy(&output.stderr);
    assert!(
        told.contains("https://scimd.example/admin/v1/entra/callback") && told.contains("10 minutes"),
        "{told}"
    );

    let shown = stdout(&run(&mut operator(&["connection", "show", "acme/entra-main"])));
    assert!(!shown.contains("Zx8Q~secret-value"), "{shown}");
    let shown: serde_json::Value = serde_json::from_str(&shown).unwrap();
    assert_eq!(shown["consent"]["state"], "needs_consent", "{shown}");
    let status = stdout(&run(&mut operator(&["sync", "status", "acme/entra-main"])));
    assert!(status.contains("entra-main: entra.auth needs consent: no admin has connected"), "{status}");
}

/// A minimal HTTP/1.0 form POST: the status.
fn http_post_form(host: &str, path: &str, form: &[(&str, &str)]) -> Option<u16> {
    use std::io::Write;
    let body: String = url::form_urlencoded::Serializer::new(String::new()).extend_pairs(form).finish();
    let mut stream = std::net::TcpStream::connect(host).ok()?;
    write!(
        stream,
        "POST {path} HTTP/1.0\r\nHost: {host}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    response.split_whitespace().nth(1)?.parse().ok()
}

/// A forged SAML Response is refused without libxmlsec printing raw `func=...` lines on the
/// server's stderr (outside its log and its JSON format): its reports go to the log, at debug.
#[test]
fn libxmlsec_reports_go_to_the_log_not_raw_to_stderr() {
    use crate::support::test_idp::TestIdp;
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("saml.db").display());
    run(scimd(dir.path()).args(["--database-url", &db, "directory", "create", "acme"]));
    let idp = TestIdp::new("https://idp.example.test/metadata");
    std::fs::write(dir.path().join("idp.pem"), &idp.cert_pem).unwrap();
    run(scimd(dir.path()).args([
        "--database-url",
        &db,
        "saml",
        "configure",
        "acme",
        "--sso-url",
        &idp.sso_url,
        "--certificate-file",
        "idp.pem",
        "--idp-entity-id",
        &idp.entity_id,
        "--allow-idp-initiated",
    ]));
    let bind = format!("127.0.0.1:{}", free_port());
    let mut child = scimd(dir.path())
        .env("RUST_LOG", "scimd=debug")
        .args(["--database-url", &db, "serve", "--bind", &bind])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = err.read_to_string(&mut text);
        text
    });
    let server = Serving(child);
    wait_until_healthy(&bind);
    let spec = idp.spec(&format!("http://{bind}"), "acme", "alice@example.com", None);
    let signed = idp.response_xml(&spec);
    let forged = signed.replace("alice@example.com", "mallory@example.com");
    assert_ne!(forged, signed);
    // The first verification initialises libxmlsec; the second runs after.
    for _ in 0..2 {
        let status = http_post_form(&bind, "/saml/acme/acs", &[("SAMLResponse", &TestIdp::encode(&forged))]);
        assert_eq!(status, Some(403));
    }
    drop(server);
    let stderr = reader.join().unwrap();
    assert!(!stderr.contains("func=xmlSec"), "{stderr}");
    assert!(stderr.contains("libxmlsec refused"), "{stderr}");
}
