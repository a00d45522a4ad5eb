//! The command line: clap types and dispatch.

use std::net::TcpListener;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::app;
use crate::config::{Config, Overrides};
use crate::error::{Error, Result};
use crate::scim::index::format_millis;
use crate::store::audit::Actor;
use crate::store::directories::{DeletionPolicy, Settings};
use crate::store::{admin_tokens, directories, keys, now_millis, Store};

#[derive(Debug, Parser)]
#[command(
    name = "scimd",
    version,
    about = "Multi-tenant SCIM 2.0 provisioning server and corporate directory"
)]
pub struct Cli {
    /// Database URL: sqlite://<file> or postgres://user:password@host/db [env: SCIMD_DATABASE_URL]
    #[arg(long, global = true)]
    pub database_url: Option<String>,
    /// scimd's configuration file. (Not `--config`: the pull-sync contract gives that flag to
    /// `connection create/update` for the connection JSON.)
    #[arg(
        id = "config_file",
        long = "config-file",
        global = true,
        env = "SCIMD_CONFIG",
        default_value = "config/default.toml"
    )]
    pub config: PathBuf,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server. On an empty database: migrate, create directory 'default' and print its key once.
    Serve(ServeArgs),
    /// Apply pending database migrations.
    Migrate,
    /// Manage directories (tenants).
    #[command(subcommand)]
    Directory(DirectoryCommand),
    /// Manage directory bearer keys.
    #[command(subcommand)]
    Key(KeyCommand),
    /// Manage admin tokens for the admin API (/admin/v1).
    #[command(subcommand)]
    AdminToken(AdminTokenCommand),
    /// The key that encrypts importer credentials at rest.
    #[command(subcommand)]
    SecretKey(SecretKeyCommand),
    /// Manage pull-sync connections (an Okta org or Entra tenant feeding a directory).
    #[command(subcommand)]
    Connection(ConnectionCommand),
    /// Run a connection's sync now, or show run history.
    #[command(subcommand)]
    Sync(SyncCommand),
    /// SAML sign-in of a directory's people through their IdP.
    #[command(subcommand)]
    Saml(SamlCommand),
}

#[derive(Debug, Subcommand)]
pub enum SamlCommand {
    /// Set the directory's IdP (replacing any earlier one): its SSO URL and signing certificate,
    /// or its metadata file.
    Configure {
        directory: String,
        /// The IdP's HTTP-Redirect single sign-on URL.
        #[arg(long)]
        sso_url: Option<String>,
        /// The IdP's signing certificate (PEM).
        #[arg(long)]
        certificate_file: Option<std::path::PathBuf>,
        /// The Issuer of the IdP's Responses.
        #[arg(long)]
        idp_entity_id: Option<String>,
        /// The assertion attribute matched to userName, or NameID.
        #[arg(long, default_value = crate::saml::NAME_ID)]
        user_attribute: String,
        /// Accept sign-ins started at the IdP (off by default).
        #[arg(long)]
        allow_idp_initiated: bool,
        /// IdP metadata XML, instead of --sso-url, --certificate-file and --idp-entity-id.
        #[arg(long, conflicts_with_all = ["sso_url", "certificate_file", "idp_entity_id"])]
        metadata_file: Option<std::path::PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum SyncCommand {
    /// Run a sync in the foreground (progress on stderr). Exit 0 succeeded or dry run, 3 braked, 1 failed.
    Run {
        /// <directory>/<name>
        connection: String,
        /// Read everything (the only way deletions are seen). The first run is always full.
        #[arg(long)]
        full: bool,
        /// Show the plan without writing.
        #[arg(long)]
        dry_run: bool,
        /// Apply a plan the deactivation brake stopped.
        #[arg(long)]
        confirm: bool,
        /// Print the run's report as one JSON object on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Run history: of every connection, of a directory's, or of one <directory>/<name>.
    Status {
        /// <directory> or <directory>/<name>
        scope: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum ConnectionCommand {
    /// Create a connection from a JSON config file (secrets may be given as *_file paths).
    Create {
        /// Directory slug.
        directory: String,
        /// Connection name, e.g. okta-main.
        name: String,
        /// The connection JSON (see the README).
        #[arg(long)]
        config: PathBuf,
    },
    /// Replace a connection's configuration; secrets left out keep their stored value.
    Update {
        /// <directory>/<name>
        connection: String,
        /// The whole connection JSON (see the README); secrets left out keep their stored value.
        #[arg(long)]
        config: PathBuf,
    },
    /// List a directory's connections.
    List {
        /// Directory slug.
        directory: String,
    },
    /// Show a connection's configuration (secrets only as set / rotated).
    Show {
        /// <directory>/<name>
        connection: String,
    },
    /// Delete a connection; the records it imported stay and stop being updated.
    Delete {
        /// <directory>/<name>
        connection: String,
    },
    /// Check the credentials and every permission the rules need; exit 1 with a remedy per failure.
    Verify {
        /// <directory>/<name>
        connection: String,
    },
    /// Print the link where an Entra admin signs in to connect a delegated credential
    /// ("method": "delegated"); good once, for 10 minutes. A running scimd takes the answer.
    Authorize {
        /// <directory>/<name>
        connection: String,
        /// auth or backup_auth (by default the delegated one, the primary first).
        #[arg(long)]
        credential: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum AdminTokenCommand {
    /// Issue an admin token; prints the token alone on stdout. It is not shown again.
    Issue {
        /// Who or what the token is for, e.g. "ops-console".
        #[arg(long, default_value = "")]
        name: String,
        /// Lifetime such as 90d, 12h, 30m or 2w; without it the token does not expire.
        #[arg(long, value_parser = parse_duration_millis)]
        expires_in: Option<i64>,
    },
    /// List admin tokens (never their secrets).
    List,
    /// Revoke an admin token; it stops working on the next request.
    Revoke {
        /// Token id, as shown by 'scimd admin-token list'.
        token_id: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum SecretKeyCommand {
    /// Print a new random key (64 hex digits) for SCIMD_SECRET_KEY or a key file.
    Generate,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on [env: SCIMD_BIND] [default: 127.0.0.1:8080]
    #[arg(long)]
    pub bind: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum DirectoryCommand {
    /// Create a directory.
    Create {
        /// URL-safe identifier: lower-case letters, digits, dashes.
        slug: String,
        /// Display name (defaults to the slug).
        #[arg(long)]
        name: Option<String>,
        /// What a SCIM DELETE of a user does: 'deactivate' keeps the person as deprovisioned
        /// (invisible to SCIM, kept for lookup and audit); 'delete' removes them.
        #[arg(long, value_parser = parse_deletion, default_value = "deactivate")]
        deletion: DeletionPolicy,
    },
    /// Change a directory's settings; those not given keep their value.
    Configure {
        /// Directory slug.
        slug: String,
        /// New display name.
        #[arg(long)]
        name: Option<String>,
        /// What a SCIM DELETE of a user does: 'deactivate' or 'delete'.
        #[arg(long, value_parser = parse_deletion)]
        deletion: Option<DeletionPolicy>,
        /// Largest SCIM page this directory serves (1-10000); 0 restores the server's default.
        #[arg(long)]
        max_page_size: Option<u32>,
        /// Whether the people lookup shows deactivated people (marked as such) or hides them.
        #[arg(long)]
        show_deactivated: Option<bool>,
    },
    /// List directories.
    List,
    /// Delete a directory and its keys. Refused while it holds users or groups, unless --purge.
    Delete {
        /// Directory slug.
        slug: String,
        /// Also delete the users and groups it holds.
        #[arg(long)]
        purge: bool,
    },
}

fn parse_deletion(text: &str) -> std::result::Result<DeletionPolicy, String> {
    DeletionPolicy::parse(text).map_err(|e| e.to_string())
}

#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Issue a key for a directory; prints the key alone on stdout. It is not shown again.
    Issue {
        /// Directory slug.
        directory: String,
        /// What the key is for, e.g. "okta".
        #[arg(long, default_value = "")]
        name: String,
        /// Lifetime such as 90d, 12h, 30m or 2w; without it the key does not expire.
        #[arg(long, value_parser = parse_duration_millis)]
        expires_in: Option<i64>,
    },
    /// List the keys of a directory (never their secrets).
    List {
        /// Directory slug.
        directory: String,
    },
    /// Revoke a key; it stops working on the next request.
    Revoke {
        /// Key id, as shown by 'scimd key list'.
        key_id: String,
    },
}

/// "90d" → milliseconds. Units: s, m, h, d, w.
pub fn parse_duration_millis(text: &str) -> std::result::Result<i64, String> {
    let text = text.trim();
    let unit_at = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(unit_at);
    let amount: i64 =
        number.parse().map_err(|_| format!("'{text}' is not a duration such as 90d, 12h or 30m"))?;
    let unit_millis: i64 = match unit {
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        "w" => 604_800_000,
        _ => return Err(format!("'{text}': the unit must be s, m, h, d or w (e.g. 90d)")),
    };
    if amount == 0 {
        return Err("the duration must be more than zero".into());
    }
    amount.checked_mul(unit_millis).ok_or_else(|| format!("'{text}' is too long"))
}

pub fn load_config(cli: &Cli) -> Result<Config> {
    let explicit = std::env::var_os("SCIMD_CONFIG").is_some()
        || cli.config.as_path() != std::path::Path::new("config/default.toml");
    let bind = match &cli.command {
        Command::Serve(args) => args.bind.clone(),
        _ => None,
    };
    Config::load(&cli.config, explicit, &Overrides { database_url: cli.database_url.clone(), bind })
}

/// Runs a command; the exit code is 0 unless the command says otherwise (`sync run`).
pub fn run(cli: Cli, config: Config) -> Result<std::process::ExitCode> {
    if let Command::Sync(command) = cli.command {
        let store = migrated_store(&config)?;
        return sync_command(&store, &config, command);
    }
    run_other(cli, config).map(|()| std::process::ExitCode::SUCCESS)
}

fn run_other(cli: Cli, config: Config) -> Result<()> {
    match cli.command {
        Command::Sync(_) => Ok(()),
        Command::Serve(_) => serve(config),
        Command::Migrate => {
            let store = app::open_store(&config)?;
            let applied = store.migrate()?;
            if applied.is_empty() {
                eprintln!("database is up to date");
            } else {
                eprintln!("applied {} migration(s): {}", applied.len(), applied.join(", "));
            }
            Ok(())
        }
        Command::Directory(command) => {
            let store = migrated_store(&config)?;
            directory(&store, command)
        }
        Command::Key(command) => {
            let store = migrated_store(&config)?;
            key(&store, command)
        }
        Command::AdminToken(command) => {
            let store = migrated_store(&config)?;
            admin_token(&store, command)
        }
        Command::Connection(command) => {
            let store = migrated_store(&config)?;
            connection_command(&store, &config, command)
        }
        Command::Saml(command) => {
            let store = migrated_store(&config)?;
            saml_command(&store, &config, command)
        }
        Command::SecretKey(SecretKeyCommand::Generate) => {
            println!("{}", crate::encryption::SecretKey::generate_hex());
            eprintln!(
                "set it as SCIMD_SECRET_KEY (or write it to the file secret_key_file names); keep a copy"
            );
            Ok(())
        }
    }
}

fn saml_command(store: &Store, config: &Config, command: SamlCommand) -> Result<()> {
    let SamlCommand::Configure {
        directory,
        sso_url,
        certificate_file,
        idp_entity_id,
        user_attribute,
        allow_idp_initiated,
        metadata_file,
    } = command;
    let read = |path: &std::path::Path| {
        std::fs::read_to_string(path)
            .map_err(|e| Error::Config(format!("cannot read {}: {e}", path.display())))
    };
    let settings = match metadata_file {
        Some(path) => {
            crate::saml::IdpSettings::from_metadata(&read(&path)?, user_attribute, allow_idp_initiated)?
        }
        None => crate::saml::IdpSettings {
            sso_url: sso_url.unwrap_or_default(),
            certificate_pem: match certificate_file {
                Some(path) => read(&path)?,
                None => String::new(),
            },
            idp_entity_id: idp_entity_id.unwrap_or_default(),
            user_attribute,
            allow_idp_initiated,
        },
    };
    let slug = directory.clone();
    store.write_now(move |conn, _| crate::store::saml::configure(conn, &Actor::Cli, &slug, &settings))?;
    let sp = crate::saml::SpUrls::of(&config.base_url(None), &directory);
    println!("SAML sign-in configured for directory '{directory}'");
    println!("SP entity id / metadata URL: {}", sp.entity_id);
    println!("ACS URL (HTTP-POST):         {}", sp.acs_url);
    println!("sign-in starts at:           {}", sp.login_url);
    Ok(())
}

/// The store for a one-shot command. Its readers map no part of the database (see
/// `database.sqlite_mmap_mib`): an import reads much of it once, and mapped pages would count in
/// the command's RSS without making a single pass faster.
fn migrated_store(config: &Config) -> Result<Store> {
    let mut config = config.clone();
    config.database.sqlite_mmap_mib = 0;
    let store = app::open_store(&config)?;
    store.migrate()?;
    Ok(store)
}

fn directory(store: &Store, command: DirectoryCommand) -> Result<()> {
    match command {
        DirectoryCommand::Create { slug, name, deletion } => {
            let settings = Settings {
                slug: Some(slug),
                name,
                deletion: Some(deletion),
                max_page_size: None,
                show_deactivated: None,
            };
            let created =
                store.write_now(move |conn, _| directories::insert(conn, &Actor::Cli, &settings))?;
            println!("{}", created.slug);
            eprintln!(
                "created directory '{}' (id {}); issue a key with: scimd key issue {}",
                created.slug, created.id, created.slug
            );
        }
        DirectoryCommand::Configure { slug, name, deletion, max_page_size, show_deactivated } => {
            let max_page_size = max_page_size.map(|n| if n == 0 { None } else { Some(n) });
            let settings = Settings { slug: None, name, deletion, max_page_size, show_deactivated };
            let changed = store
                .write_now(move |conn, _| directories::configure(conn, &Actor::Cli, &slug, &settings))?;
            let page = changed.max_page_size.map_or_else(|| "server default".to_string(), |n| n.to_string());
            eprintln!(
                "directory '{}': name = {}, deletion = {}, max page size = {page}, show deactivated = {}",
                changed.slug,
                changed.name,
                changed.deletion.as_str(),
                changed.show_deactivated
            );
        }
        DirectoryCommand::Delete { slug, purge } => {
            let name = slug.clone();
            let removed =
                store.write_now(move |conn, _| directories::delete(conn, &Actor::Cli, &slug, purge))?;
            eprintln!(
                "deleted directory '{name}' with its keys ({} user(s) and {} group(s) removed)",
                removed.users, removed.groups
            );
        }
        DirectoryCommand::List => {
            let all = store.read_now(|conn, _| directories::list(conn))?;
            println!("{:<24} {:<36} {:<24} {:<10} NAME", "SLUG", "ID", "CREATED", "DELETION");
            for d in all {
                println!(
                    "{:<24} {:<36} {:<24} {:<10} {}",
                    d.slug,
                    d.id,
                    format_millis(d.created_at),
                    d.deletion.as_str(),
                    d.name
                );
            }
        }
    }
    Ok(())
}

fn key(store: &Store, command: KeyCommand) -> Result<()> {
    match command {
        KeyCommand::Issue { directory, name, expires_in } => {
            let slug = directory.clone();
            let issued = store.write_now(move |conn, _| {
                let found = directories::get_by_slug(conn, &slug)?;
                let expires_at = expires_in.map(|ms| now_millis().saturating_add(ms));
                keys::issue(conn, &Actor::Cli, &found.id, &name, expires_at)
            })?;
            // The key alone on stdout, so `KEY=$(scimd key issue acme)` works.
            println!("{}", issued.token.secret);
            eprintln!("issued key {} for '{}'; it is shown only this once", issued.info.id, directory);
        }
        KeyCommand::List { directory } => {
            let all = store.read_now(|conn, _| {
                let found = directories::get_by_slug(conn, &directory)?;
                keys::list(conn, &found.id)
            })?;
            println!(
                "{:<36} {:<20} {:<24} {:<24} {:<8} NAME",
                "ID", "PREFIX", "CREATED", "EXPIRES", "STATUS"
            );
            let now = now_millis();
            for k in all {
                let status = token_status(k.revoked_at, k.expires_at, now);
                let expires = k.expires_at.map_or_else(|| "never".to_string(), format_millis);
                println!(
                    "{:<36} {:<20} {:<24} {:<24} {:<8} {}",
                    k.id,
                    k.prefix,
                    format_millis(k.created_at),
                    expires,
                    status,
                    k.name
                );
            }
        }
        KeyCommand::Revoke { key_id } => {
            let revoked = store.write_now(move |conn, _| keys::revoke(conn, &Actor::Cli, &key_id))?;
            eprintln!("revoked key {} ({})", revoked.id, revoked.prefix);
        }
    }
    Ok(())
}

/// The status word of a token or key in listings.
pub fn token_status(revoked_at: Option<i64>, expires_at: Option<i64>, now: i64) -> &'static str {
    match keys::Refusal::of(revoked_at, expires_at, now) {
        Some(keys::Refusal::Revoked) => "revoked",
        Some(_) => "expired",
        None => "active",
    }
}

fn admin_token(store: &Store, command: AdminTokenCommand) -> Result<()> {
    match command {
        AdminTokenCommand::Issue { name, expires_in } => {
            let issued = store.write_now(move |conn, _| {
                let expires_at = expires_in.map(|ms| now_millis().saturating_add(ms));
                admin_tokens::issue(conn, &Actor::Cli, &name, expires_at)
            })?;
            // The token alone on stdout, so `TOKEN=$(scimd admin-token issue)` works.
            println!("{}", issued.token.secret);
            eprintln!("issued admin token {}; it is shown only this once", issued.info.id);
        }
        AdminTokenCommand::List => {
            let all = store.read_now(|conn, _| admin_tokens::list(conn))?;
            println!(
                "{:<36} {:<26} {:<24} {:<24} {:<8} NAME",
                "ID", "PREFIX", "CREATED", "EXPIRES", "STATUS"
            );
            let now = now_millis();
            for t in all {
                let expires = t.expires_at.map_or_else(|| "never".to_string(), format_millis);
                let status = token_status(t.revoked_at, t.expires_at, now);
                println!(
                    "{:<36} {:<26} {:<24} {:<24} {:<8} {}",
                    t.id,
                    t.prefix,
                    format_millis(t.created_at),
                    expires,
                    status,
                    t.name
                );
            }
        }
        AdminTokenCommand::Revoke { token_id } => {
            let revoked =
                store.write_now(move |conn, _| admin_tokens::revoke(conn, &Actor::Cli, &token_id))?;
            eprintln!("revoked admin token {} ({})", revoked.id, revoked.prefix);
        }
    }
    Ok(())
}

/// `<directory>/<name>` split in two.
fn connection_name(text: &str) -> Result<(String, String)> {
    match text.split_once('/') {
        Some((directory, name)) if !directory.is_empty() && !name.is_empty() => {
            Ok((directory.to_string(), name.to_string()))
        }
        _ => Err(Error::InvalidValue(format!("'{text}' must be <directory>/<name>, e.g. acme/okta-main"))),
    }
}

/// Reads a `--config` file: the contract's JSON, with `*_file` secrets read relative to it.
fn read_connection_file(path: &std::path::Path, name: &str) -> Result<crate::sync::connection::Connection> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::InvalidValue(format!("cannot read {}: {e}", path.display())))?;
    let mut body: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| Error::InvalidValue(format!("{} is not JSON: {e}", path.display())))?;
    match body.get("name").and_then(serde_json::Value::as_str) {
        Some(given) if given != name => {
            return Err(Error::InvalidValue(format!(
                "connection key 'name': the file says '{given}' but the command names '{name}'"
            )))
        }
        _ => {}
    }
    if let serde_json::Value::Object(fields) = &mut body {
        fields.insert("name".into(), serde_json::Value::String(name.to_string()));
    }
    let mut parsed = crate::sync::connection::parse(body)?;
    parsed.read_secret_files(path.parent().unwrap_or(std::path::Path::new(".")))?;
    Ok(parsed)
}

fn connection_command(store: &Store, config: &Config, command: ConnectionCommand) -> Result<()> {
    if let ConnectionCommand::Verify { connection } = command {
        let (directory, name) = connection_name(&connection)?;
        let record =
            store.read_now(move |conn, _| crate::store::connections::get_by_name(conn, &directory, &name))?;
        let key = config.secret_key()?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .map_err(|e| Error::internal("starting the runtime", e))?;
        let checks = runtime.block_on(crate::sync::engine::verify(store, key.as_ref(), &record));
        let failed: Vec<&crate::sync::okta::Check> = checks.iter().filter(|c| c.remedy.is_some()).collect();
        for check in &checks {
            match &check.remedy {
                None => println!("ok: {}", check.what),
                Some(remedy) => println!("failed: {}: {remedy}", check.what),
            }
        }
        return if failed.is_empty() {
            Ok(())
        } else {
            Err(Error::Upstream(format!("{} of {} checks failed", failed.len(), checks.len())))
        };
    }
    if let ConnectionCommand::Authorize { connection, credential } = command {
        let (directory, name) = connection_name(&connection)?;
        let record =
            store.read_now(move |conn, _| crate::store::connections::get_by_name(conn, &directory, &name))?;
        let key = config.secret_key()?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Error::internal("starting the runtime", e))?;
        let link = runtime.block_on(crate::sync::consent::start(
            store,
            key.as_ref(),
            Actor::Cli,
            &record,
            credential.as_deref(),
            &config.base_url(None),
        ))?;
        println!("{}", link.url);
        eprintln!(
            "open this link within 10 minutes and sign in as an admin of the tenant to connect entra.{} of {connection} \
             (app {}). Microsoft then sends the browser to {}: that redirect URI must be registered on the app \
             (Authentication → Web), and a scimd serving this database must answer there (set public_url)",
            link.place, link.client_id, link.redirect_uri
        );
        return Ok(());
    }
    use crate::store::connections;
    match command {
        ConnectionCommand::Create { directory, name, config: file } => {
            let parsed = read_connection_file(&file, &name)?;
            let key = config.secret_key()?;
            let slug = directory.clone();
            let created = store.write_now(move |conn, _| {
                connections::create(conn, &Actor::Cli, key.as_ref(), &slug, parsed)
            })?;
            println!("{}", created.id);
            eprintln!(
                "created connection '{}' ({}); check it with: scimd connection verify {directory}/{}",
                created.config.name,
                created.config.kind.as_str(),
                created.config.name
            );
        }
        ConnectionCommand::Update { connection, config: file } => {
            let (directory, name) = connection_name(&connection)?;
            let parsed = read_connection_file(&file, &name)?;
            let key = config.secret_key()?;
            store.write_now(move |conn, _| {
                let current = connections::get_by_name(conn, &directory, &name)?;
                connections::update(conn, &Actor::Cli, key.as_ref(), &current.id, parsed)
            })?;
            eprintln!("updated connection {connection}");
        }
        ConnectionCommand::List { directory } => {
            let all = store.read_now(move |conn, _| connections::list(conn, &directory))?;
            println!("{:<36} {:<24} {:<6} {:<24} LAST FULL RUN", "ID", "NAME", "KIND", "UPDATED");
            for c in all {
                let last_full = c.last_full_at.map_or_else(|| "never".to_string(), format_millis);
                println!(
                    "{:<36} {:<24} {:<6} {:<24} {last_full}",
                    c.id,
                    c.config.name,
                    c.config.kind.as_str(),
                    format_millis(c.updated_at)
                );
            }
        }
        ConnectionCommand::Show { connection } => {
            let (directory, name) = connection_name(&connection)?;
            let found = store.read_now(move |conn, _| connections::get_by_name(conn, &directory, &name))?;
            println!(
                "{}",
                serde_json::to_string_pretty(&found.shown()).map_err(|e| Error::internal("showing", e))?
            );
        }
        ConnectionCommand::Verify { .. } | ConnectionCommand::Authorize { .. } => {}
        ConnectionCommand::Delete { connection } => {
            let (directory, name) = connection_name(&connection)?;
            store.write_now(move |conn, _| {
                let current = connections::get_by_name(conn, &directory, &name)?;
                connections::delete(conn, &Actor::Cli, &current.id)
            })?;
            eprintln!("deleted connection {connection}; the records it imported stay in the directory");
        }
    }
    Ok(())
}

fn sync_command(store: &Store, config: &Config, command: SyncCommand) -> Result<std::process::ExitCode> {
    use crate::store::{connections, sync_runs};
    match command {
        SyncCommand::Run { connection, full, dry_run, confirm, json } => {
            let (directory, name) = connection_name(&connection)?;
            let record = store.read_now(move |conn, _| connections::get_by_name(conn, &directory, &name))?;
            let key = config.secret_key()?;
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .map_err(|e| Error::internal("starting the runtime", e))?;
            let request = crate::sync::engine::RunRequest { full, dry_run, confirm, trigger: "cli" };
            let progress = |line: &str| eprintln!("{line}");
            let report = runtime.block_on(crate::sync::engine::run(
                store,
                key.as_ref(),
                &record,
                request,
                &progress,
            ))?;
            if json {
                println!("{}", report.to_json());
            } else {
                let c = &report.counts;
                eprintln!(
                    "run {} {} ({}): users +{} ~{} -{} ↑{} ={}; groups +{} ~{} stale {} ={}; members +{} -{}; {} conflict(s)",
                    report.run_id, report.status, report.mode, c.users_created, c.users_updated, c.users_deactivated,
                    c.users_reactivated, c.users_unchanged, c.groups_created, c.groups_updated, c.groups_stale,
                    c.groups_unchanged, c.members_added, c.members_removed, report.conflicts.len()
                );
                for warning in &report.warnings {
                    eprintln!("warning: {warning}");
                }
                if let Some(error) = &report.error {
                    eprintln!("error: {error}");
                }
            }
            Ok(std::process::ExitCode::from(match report.status {
                "succeeded" | "dry_run" => 0,
                "braked" => 3,
                _ => 1,
            }))
        }
        SyncCommand::Status { scope } => {
            let (runs, consents) = store.read_now(move |conn, _| {
                let targets = match scope.as_deref().map(|s| s.split_once('/')) {
                    None => {
                        let mut all = Vec::new();
                        for d in directories::list(conn)? {
                            all.extend(connections::list(conn, &d.slug)?);
                        }
                        all
                    }
                    Some(None) => connections::list(conn, scope.as_deref().unwrap_or_default())?,
                    Some(Some((directory, name))) => vec![connections::get_by_name(conn, directory, name)?],
                };
                let mut runs = Vec::new();
                let mut consents = Vec::new();
                for target in targets {
                    for run in sync_runs::list(conn, &target.id, 20)? {
                        runs.push((target.config.name.clone(), run));
                    }
                    for (place, _, state, reason) in target.consent_states() {
                        if state == crate::store::consents::NEEDS_CONSENT {
                            consents.push((target.config.name.clone(), place, reason.unwrap_or_default()));
                        }
                    }
                }
                Ok((runs, consents))
            })?;
            println!(
                "{:<20} {:<36} {:<9} {:<6} {:<10} {:<24} SUMMARY",
                "CONNECTION", "RUN", "TRIGGER", "MODE", "STATUS", "STARTED"
            );
            for (name, run) in runs {
                let report: serde_json::Value = serde_json::from_str(&run.report).unwrap_or_default();
                let count =
                    |path: &str| report.pointer(path).and_then(serde_json::Value::as_u64).unwrap_or(0);
                let warnings =
                    report.get("warnings").and_then(serde_json::Value::as_array).map_or(0, Vec::len);
                let error = report.get("error").and_then(serde_json::Value::as_str);
                let summary = format!(
                    "users {} created, {} deactivated; {warnings} warning(s){}",
                    count("/users/created"),
                    count("/users/deactivated"),
                    error.map(|e| format!("; error: {e}")).unwrap_or_default()
                );
                println!(
                    "{:<20} {:<36} {:<9} {:<6} {:<10} {:<24} {summary}",
                    name,
                    run.id,
                    run.trigger,
                    run.mode,
                    run.status,
                    format_millis(run.started_at)
                );
            }
            for (name, place, reason) in consents {
                println!("{name}: entra.{place} needs consent: {reason}");
            }
            Ok(std::process::ExitCode::SUCCESS)
        }
    }
}

/// On a database with no directory: create 'default' and print its first key, once.
fn bootstrap(store: &Store, base_url: &str) -> Result<()> {
    let issued = store.write_now(|conn, _| {
        if directories::count(conn)? > 0 {
            return Ok(None);
        }
        let created = directories::create(conn, &Actor::System, "default", "Default directory")?;
        keys::issue(conn, &Actor::System, &created.id, "first key", None).map(Some)
    });
    let issued = match issued {
        Ok(issued) => issued,
        // Another instance sharing the database bootstrapped it first.
        Err(Error::Uniqueness(_)) => None,
        Err(other) => return Err(other),
    };
    if let Some(issued) = issued {
        println!(
            "Created directory 'default'. Its key is shown only this once:\n\n  {}\n",
            issued.token.secret
        );
        println!("Try: curl -H 'Authorization: Bearer {}' {base_url}/scim/v2/Users\n", issued.token.secret);
        println!(
            "For the admin API ({base_url}/admin/v1), issue an admin token with: scimd admin-token issue\n"
        );
    }
    Ok(())
}

fn serve(config: Config) -> Result<()> {
    let store = app::open_store(&config)?;
    let applied = store.migrate()?;
    if !applied.is_empty() {
        tracing::info!(migrations = ?applied, "applied database migrations");
    }
    // Refuse to start rather than fail at the first import: stored secrets need their key.
    let secret_key = config.secret_key()?;
    store.read_now(move |conn, _| crate::store::secrets::check_key(conn, secret_key.as_ref()))?;
    let listener = TcpListener::bind(&config.bind)
        .map_err(|e| Error::Config(format!("cannot listen on {}: {e}", config.bind)))?;
    let bound = listener.local_addr().map_err(|e| Error::internal("reading the bound address", e))?;
    bootstrap(&store, &config.base_url(Some(bound)))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::internal("starting the runtime", e))?;
    let scheduler_key = config.secret_key()?;
    runtime.block_on(async move {
        app::start_maintenance(store.clone(), &config);
        // Runs connections on their schedules until the server stops.
        let _scheduler = crate::sync::scheduler::spawn(store.clone(), scheduler_key, &config.sync);
        let running = app::start(store, config.clone(), listener)?;
        tracing::info!(addr = %running.addr, database = %crate::store::conn::redact_url(&config.database_url), "scimd is serving");
        running.server.await.map_err(|e| Error::internal("server", e))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration_millis("90d"), Ok(90 * 86_400_000));
        assert_eq!(parse_duration_millis("30m"), Ok(1_800_000));
        assert!(parse_duration_millis("90").is_err());
        assert!(parse_duration_millis("0d").is_err());
        assert!(parse_duration_millis("d").is_err());
        assert!(parse_duration_millis("99999999999999w").is_err());
    }
}
