//! The people search of the lookup page (issue 9: "answers in under 50 ms at 100 k users"),
//! against the real release server: seeds a directory of N people with varied names, titles,
//! departments, phones and manager links through the store, opens a browser session directly
//! in the store (as a SAML sign-in would), starts `scimd serve` on that database, and measures
//! `GET /d/{directory}/api/people?q=` for several query shapes over keep-alive HTTP.
//!
//! ```sh
//! cargo bench --bench lookup -- --backend sqlite --users 100000 --requests 400 --concurrency 1,8
//! ```
//! `--only 'maria ga,ma&cursor=*'` measures only those queries. Under `cargo test` (no `--bench`
//! argument) it does nothing.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)] // a bench stops loudly

#[path = "../support/db.rs"]
mod db;
#[path = "server.rs"]
mod server;

use std::time::Instant;

use serde_json::{json, Value};

use scimd::app;
use scimd::config::Config;
use scimd::ids::{DirectoryId, UserId};
use scimd::saml::{CookieKey, VerifiedLogin};
use scimd::scim::resource;
use scimd::store::audit::Actor;
use scimd::store::saml::{self, NewSession};
use scimd::store::users::{self, NewUser};
use scimd::store::{directories, Store};
use server::{percentile, serve};

const GIVEN: &[&str] = &[
    "Maria", "James", "Wei", "Fatima", "Olga", "Juan", "Aiko", "Liam", "Noah", "Emma", "Sofia", "Mateo",
    "Amara", "Yusuf", "Ingrid", "Pierre", "Chloe", "Ravi", "Priya", "Kofi", "Mei", "Lars", "Anna", "Marco",
    "Sara", "David", "Elena", "Omar", "Hana", "Tomas", "Nadia", "Felix", "Zoe", "Ivan", "Leila", "Hugo",
    "Ines", "Arjun", "Mia", "Oscar",
];
const FAMILY: &[&str] = &[
    "Garcia",
    "Smith",
    "Zhang",
    "Khan",
    "Ivanova",
    "Martinez",
    "Tanaka",
    "Murphy",
    "Nguyen",
    "Schmidt",
    "Rossi",
    "Silva",
    "Okafor",
    "Yilmaz",
    "Larsen",
    "Dubois",
    "Moreau",
    "Patel",
    "Sharma",
    "Mensah",
    "Chen",
    "Berg",
    "Novak",
    "Bianchi",
    "Costa",
    "Cohen",
    "Popescu",
    "Haddad",
    "Kim",
    "Horvat",
    "Farouk",
    "Weber",
    "Jensen",
    "Petrov",
    "Rahman",
    "Lopez",
    "Ferreira",
    "Gupta",
    "Wright",
    "Anderson",
    "Kowalski",
    "Sato",
    "Ali",
    "Brown",
    "Johansson",
    "Muller",
    "Hoffmann",
    "Lee",
    "Park",
    "Walker",
];
const TITLES: &[&str] = &[
    "Engineer",
    "Senior Engineer",
    "Staff Engineer",
    "Engineering Manager",
    "Director",
    "Designer",
    "Analyst",
    "Accountant",
    "Recruiter",
    "Sales Representative",
    "Account Executive",
    "Support Specialist",
    "Product Manager",
    "Data Scientist",
    "Nurse",
    "Technician",
    "Counsel",
    "Office Manager",
];
const DEPARTMENTS: &[&str] = &[
    "Engineering",
    "Research",
    "Sales",
    "Marketing",
    "Finance",
    "Legal",
    "Support",
    "Operations",
    "Design",
    "People",
    "Security",
    "Facilities",
];

struct Options {
    backend: String,
    sizes: Vec<u64>,
    requests: usize,
    concurrency: Vec<usize>,
    /// Only the query shapes whose text is one of these (all when empty).
    only: Vec<String>,
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
            .unwrap_or_else(|| default.into())
    };
    Some(Options {
        backend: value("--backend", "sqlite"),
        sizes: value("--users", "100000").split(',').map(|s| s.parse().unwrap()).collect(),
        requests: value("--requests", "400").parse().unwrap(),
        concurrency: value("--concurrency", "1,8").split(',').map(|s| s.parse().unwrap()).collect(),
        only: value("--only", "").split(',').filter(|s| !s.is_empty()).map(str::to_string).collect(),
    })
}

/// Person `n`: names, title and department cycle through the lists at different strides, so
/// prefixes select anything from one person to a tenth of the directory. Everyone but the first
/// reports to person `n / 8`; one in twenty is deactivated.
fn person(n: u64, ids: &[UserId]) -> Value {
    let pick = |list: &[&'static str], stride: u64| list[((n / stride) % list.len() as u64) as usize];
    let (given, family) = (pick(GIVEN, 1), pick(FAMILY, 7));
    let mut body = json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User", "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"],
        "userName": format!("{}.{}{n}@bench.example", given.to_lowercase(), family.to_lowercase()),
        "displayName": format!("{given} {family}"),
        "name": {"givenName": given, "familyName": family},
        "title": pick(TITLES, 3),
        "active": n % 20 != 19,
        "emails": [{"value": format!("{}.{}{n}@bench.example", given.to_lowercase(), family.to_lowercase()), "type": "work", "primary": true}],
        "phoneNumbers": [{"value": format!("+1 555 {n:07}"), "type": "work"}],
        "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {"department": pick(DEPARTMENTS, 11)}
    });
    if n > 0 {
        body["urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"]["manager"] =
            json!({"value": ids[(n / 8) as usize].0});
    }
    body
}

fn seed(store: &Store, url: &str, directory: &DirectoryId, count: u64) {
    let started = Instant::now();
    let ids: Vec<UserId> = (0..count).map(|_| UserId::generate()).collect();
    for chunk in (0..count).collect::<Vec<_>>().chunks(users::MAX_NEW_USERS) {
        let batch: Vec<NewUser> = chunk
            .iter()
            .map(|&n| {
                let stored = resource::normalize(&store.registry().user, &person(n, &ids)).unwrap();
                NewUser::new(ids[n as usize].clone(), stored, None)
            })
            .collect();
        let directory = directory.clone();
        store
            .write_now(move |conn, registry| {
                users::insert_many(conn, registry, &directory, &Actor::Cli, &batch)
            })
            .unwrap();
    }
    if store.backend() == scimd::store::Backend::Postgres {
        // The steady state a live server reaches once autovacuum has run on the new rows (it
        // does after bulk inserts): statistics, and a visibility map that lets the search's
        // index-only scans skip the table. Outside a transaction, as VACUUM requires.
        use diesel::{connection::SimpleConnection, Connection};
        let mut conn = diesel::PgConnection::establish(url).unwrap();
        for table in ["users", "user_values"] {
            conn.batch_execute(&format!("VACUUM ANALYZE {table}")).unwrap();
        }
    }
    eprintln!("seeded {count} people in {:.1} s", started.elapsed().as_secs_f64());
}

/// Signs person 0 in, straight through the store: the session cookie (`name=value`).
fn session(store: &Store, directory: &DirectoryId) -> String {
    let directory = directory.clone();
    store
        .write_now(move |conn, _| {
            let key = CookieKey::new(&saml::cookie_key(conn)?);
            let session_id = format!("bench-session-{}", uuid::Uuid::new_v4().simple());
            let expires_at = scimd::store::now_millis() + 3_600_000;
            let login = VerifiedLogin {
                assertion_id: format!("_bench{}", uuid::Uuid::new_v4().simple()),
                subject: "maria.garcia0@bench.example".into(),
                in_response_to: None,
                valid_until: chrono::Utc::now() + chrono::Duration::minutes(5),
            };
            let new = NewSession {
                id_hash: scimd::token::hash(&session_id),
                csrf_token: "bench".into(),
                expires_at,
            };
            saml::complete_sign_in(conn, &directory, &login, &new)?.map_err(|r| {
                scimd::error::Error::Internal(format!("bench sign-in refused: {}", r.message()))
            })?;
            let name = scimd::http::saml::session_cookie(&directory);
            Ok(format!("{name}={}", key.seal("session", &session_id, expires_at)))
        })
        .unwrap()
}

/// The query shapes measured: what people type into the search box.
const QUERIES: &[(&str, &str)] = &[
    ("1 letter", "m"),
    ("2 letters", "ma"),
    ("given name", "maria"),
    ("given + family prefix", "maria ga"),
    ("family name", "okafor"),
    ("e-mail", "james.garcia1"),
    ("title", "director"),
    ("department", "engin"),
    ("phone", "+1 555 00012"),
    ("no match", "zzzz"),
    ("next page of 'ma'", "ma&cursor=*"),
];

async fn drive(
    base: &str,
    cookie: &str,
    query: &str,
    requests: usize,
    concurrency: usize,
) -> (Vec<u32>, u64, usize) {
    let mut query = query.to_string();
    if let Some(prefix) = query.strip_suffix("&cursor=*") {
        // The second page: the cursor the first one returned.
        let client = reqwest::Client::new();
        let first: Value = client
            .get(format!("{base}/d/bench/api/people"))
            .query(&[("q", prefix)])
            .header("cookie", cookie)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        query = format!("{prefix}&cursor={}", first["next"].as_str().unwrap());
    }
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (base, cookie, query) = (base.to_string(), cookie.to_string(), query.clone());
        let share = requests / concurrency;
        tasks.push(tokio::spawn(async move {
            let client = reqwest::Client::builder().pool_max_idle_per_host(1).build().unwrap();
            let (mut latencies, mut errors, mut found) = (Vec::with_capacity(share), 0u64, 0usize);
            let (q, cursor) =
                query.split_once("&cursor=").map_or((query.as_str(), None), |(q, c)| (q, Some(c)));
            for _ in 0..share {
                let mut request = client.get(format!("{base}/d/bench/api/people")).query(&[("q", q)]);
                if let Some(cursor) = cursor {
                    request = request.query(&[("cursor", cursor)]);
                }
                let sent = Instant::now();
                let answer = request.header("cookie", cookie.as_str()).send().await;
                match answer {
                    Ok(response) if response.status().is_success() => {
                        let body: Value = response.json().await.unwrap_or_default();
                        found = body["items"].as_array().map_or(0, Vec::len);
                    }
                    _ => errors += 1,
                }
                latencies.push(sent.elapsed().as_micros().min(u32::MAX as u128) as u32);
            }
            (latencies, errors, found)
        }));
    }
    let (mut all, mut errors, mut found) = (Vec::new(), 0, 0);
    for task in tasks {
        let (latencies, e, f) = task.await.unwrap();
        all.extend(latencies);
        errors += e;
        found = f;
    }
    all.sort_unstable();
    (all, errors, found)
}

fn main() {
    let Some(options) = options() else {
        eprintln!("lookup bench: run it with `cargo bench --bench lookup` (see the file's header)");
        return;
    };
    let args: Vec<String> = std::env::args().collect();
    let value_of = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let dir = tempfile::tempdir().unwrap();
    println!("| backend | people | query | q | concurrency | shown | p50 ms | p99 ms | errors |");
    println!("|---|---|---|---|---|---|---|---|---|");
    for &size in &options.sizes {
        let url = match options.backend.as_str() {
            "sqlite" => format!("sqlite://{}", dir.path().join(format!("lookup-{size}.db")).display()),
            // `--backend url --database-url URL`: an existing database (for EXPLAIN afterwards).
            "url" => value_of("--database-url").expect("--database-url URL"),
            "postgres" => {
                db::keep_durable_defaults();
                let cluster = db::pg_cluster().unwrap();
                cluster.create_database(&db::unique_database_name(&format!("lookup_{size}")), None).unwrap()
            }
            other => panic!("unknown backend {other}: use sqlite or postgres"),
        };
        let store = app::open_store(&Config { database_url: url.clone(), ..Config::default() }).unwrap();
        store.migrate().unwrap();
        let directory = store
            .write_now(|conn, _| Ok(directories::create(conn, &Actor::Cli, "bench", "Bench")?.id))
            .unwrap();
        seed(&store, &url, &directory, size);
        let cookie = session(&store, &directory);
        drop(store);
        let (server, base) = serve(&url);
        let chosen =
            QUERIES.iter().filter(|(_, q)| options.only.is_empty() || options.only.iter().any(|o| o == q));
        for (shape, query) in chosen {
            for &concurrency in &options.concurrency {
                // Warm up: the first requests open connections and fill caches.
                runtime.block_on(drive(&base, &cookie, query, 20, 1));
                let (latencies, errors, found) =
                    runtime.block_on(drive(&base, &cookie, query, options.requests, concurrency));
                println!(
                    "| {} | {size} | {shape} | `{}` | {concurrency} | {found} | {:.2} | {:.2} | {errors} |",
                    options.backend,
                    query.replace("&cursor=*", ""),
                    percentile(&latencies, 0.50),
                    percentile(&latencies, 0.99),
                );
            }
        }
        drop(server);
    }
}
