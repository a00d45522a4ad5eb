//! Several instances starting at once on one new database, as a rollout behind a load balancer
//! starts them.

use scimd::app;
use scimd::config::Config;

use crate::support::{empty_database, Backend};

/// Each instance migrates under one lock: every migration is applied exactly once, by whichever
/// instance came first, and no instance fails to start.
fn instances_starting_together_migrate_once(backend: Backend) {
    let (url, _dir) = empty_database(backend);
    let config = Config { database_url: url, ..Config::default() };
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(4));
    let instances: Vec<_> = (0..4)
        .map(|_| {
            let (config, barrier) = (config.clone(), barrier.clone());
            std::thread::spawn(move || {
                let store = app::open_store(&config).map_err(|e| e.to_string())?;
                barrier.wait();
                store.migrate().map_err(|e| e.to_string())
            })
        })
        .collect();
    let mut applied: Vec<String> = Vec::new();
    for instance in instances {
        match instance.join().unwrap() {
            Ok(names) => applied.extend(names),
            Err(e) => panic!("an instance failed to migrate: {e}"),
        }
    }
    let store = app::open_store(&config).unwrap();
    assert_eq!(store.migrate().unwrap(), Vec::<String>::new(), "nothing is left pending");
    let mut once = applied.clone();
    once.sort();
    once.dedup();
    assert_eq!(once.len(), applied.len(), "a migration was applied twice: {applied:?}");
    assert!(!applied.is_empty());
}

#[test]
fn instances_starting_together_migrate_a_new_sqlite_database_once() {
    instances_starting_together_migrate_once(Backend::Sqlite);
}

#[test]
fn instances_starting_together_migrate_a_new_postgres_database_once() {
    instances_starting_together_migrate_once(Backend::Postgres);
}
