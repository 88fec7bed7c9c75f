//! Unit tests of the store's hold on its database: a database a newer
//! warden migrated is refused, saying so (both backends); on PostgreSQL a
//! server restart costs no request, a server that stays away gives a clear
//! error, and a lost connection is retried only where nothing can have
//! been committed.

use super::sql::p;
use super::tests::{Backend, TTL, complete, lease, lease_ref, new_run, postgres, register};
use super::*;

/// What opening a database at schema version `found` says, from a warden
/// that knows `known` versions.
fn too_new(name: &str, found: i64, known: i64) -> String {
    format!(
        "cannot open database {name}: the database is at schema version {found}, \
         newer than this warden ({known}); upgrade warden"
    )
}

#[test]
fn a_sqlite_database_from_a_newer_warden_is_refused_naming_both_versions() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cp.sqlite3");
    drop(Store::open(&path).unwrap());
    let db = rusqlite::Connection::open(&path).unwrap();
    let known: i64 = db
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    db.pragma_update(None, "user_version", known + 1).unwrap();
    drop(db);
    let err = Store::open(&path).unwrap_err().to_string();
    assert_eq!(err, too_new(&path.display().to_string(), known + 1, known));
}

#[test]
fn a_postgres_database_from_a_newer_warden_is_refused_naming_both_versions() {
    let dir = tempfile::tempdir().unwrap();
    let db = warden_testkit::postgres_database();
    let key = dir.path().join("cp.key");
    let store = Store::open_postgres(&db.url, 2, &key).unwrap();
    let known: i64 = store
        .with_tx(|tx| {
            let known = tx.query_one("SELECT max(version) FROM warden_migrations", p![], |r| {
                r.get(0)
            })?;
            tx.execute(
                "INSERT INTO warden_migrations (version, description, applied)
                 VALUES (?1, 'from a newer warden', 0)",
                p![known + 1_i64],
            )?;
            Ok(known)
        })
        .unwrap();
    let err = Store::open_postgres(&db.url, 2, &key)
        .unwrap_err()
        .to_string();
    assert_eq!(err, too_new(store.name(), known + 1, known));
}

/// A store with a pool of `connections` on a new database of `server`.
fn postgres_on(
    server: &warden_testkit::OwnPostgres,
    connections: usize,
) -> (Store, warden_testkit::PostgresDatabase, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let db = warden_testkit::postgres_database_at(&server.url);
    let store = Store::open_postgres(&db.url, connections, &dir.path().join("cp.key")).unwrap();
    (store, db, dir)
}

/// Takes `n` of the pool's connections at once (one inside another), so
/// that `n` are idle in it afterwards.
fn fill_pool(store: &Store, n: usize) {
    if n > 0 {
        store
            .with_conn(|_| {
                fill_pool(store, n - 1);
                Ok(())
            })
            .unwrap();
    }
}

#[test]
fn a_postgres_restart_costs_no_request() {
    let server = warden_testkit::OwnPostgres::start();
    let (store, _db, _dir) = postgres_on(&server, 4);
    register(&store, "n1", 4);
    let before = store.insert_runs(&[new_run(3)]).unwrap()[0].run_id.clone();
    // Before each request the server restarts, ending every session
    // (57P01): each idle connection is stale.
    let restart = || {
        fill_pool(&store, 4);
        server.restart();
    };

    restart();
    let run = store.get_run(None, &before).unwrap().expect("kept");
    assert_eq!(run.run_id, before);
    restart();
    let after = store.insert_runs(&[new_run(3)]).unwrap()[0].run_id.clone();
    restart();
    let leases = lease(&store, "n1", 4, TTL);
    assert_eq!(leases.len(), 2, "both runs, queued before and after");
    for l in &leases {
        restart();
        assert_eq!(
            complete(&store, &lease_ref(l), "done"),
            LeaseCheck::Recorded
        );
    }
    for id in [&before, &after] {
        assert_eq!(store.get_run(None, id).unwrap().unwrap().output, "done");
    }
}

#[test]
fn a_postgres_server_that_stays_away_is_named_and_used_again_when_back() {
    let server = warden_testkit::OwnPostgres::start();
    let (store, _db, _dir) = postgres_on(&server, 2);
    fill_pool(&store, 2);
    server.stop();
    let err = store.get_run(None, "r").unwrap_err().to_string();
    let expected = format!("cannot reach the database {} (", store.name());
    assert!(err.starts_with(&expected), "{err}");
    server.start_again();
    assert!(store.get_run(None, "r").unwrap().is_none());
}

/// A store on a new database with a table `t` whose inserts end their own
/// session (as a server shutdown would): on the first insert only if
/// `once`, at its COMMIT if `at_commit`. Then one `INSERT INTO t`, in a
/// transaction: its outcome, and how many times the transaction ran.
fn insert_ending_the_session(once: bool, at_commit: bool) -> (Backend, StoreResult<()>, usize) {
    let backend = postgres();
    let condition = if once { "nextval('ends') = 1" } else { "true" };
    let trigger = if at_commit {
        "CONSTRAINT TRIGGER end_it AFTER INSERT ON t DEFERRABLE INITIALLY DEFERRED"
    } else {
        "TRIGGER end_it AFTER INSERT ON t"
    };
    backend
        .store
        .with_tx(|tx| {
            tx.execute("CREATE TABLE t (id BIGINT)", p![])?;
            tx.execute("CREATE SEQUENCE ends", p![])?;
            tx.execute(
                &format!(
                    "CREATE FUNCTION end_session() RETURNS trigger LANGUAGE plpgsql AS $$
                     BEGIN
                         IF {condition} THEN PERFORM pg_terminate_backend(pg_backend_pid()); END IF;
                         RETURN NULL;
                     END $$"
                ),
                p![],
            )?;
            tx.execute(
                &format!("CREATE {trigger} FOR EACH ROW EXECUTE FUNCTION end_session()"),
                p![],
            )?;
            Ok(())
        })
        .unwrap();
    let mut runs = 0;
    let out = backend.store.with_tx(|tx| {
        runs += 1;
        tx.execute("INSERT INTO t VALUES (1)", p![])?;
        Ok(())
    });
    (backend, out, runs)
}

#[test]
fn a_transaction_that_lost_its_connection_before_commit_runs_again_on_a_new_one() {
    let (backend, out, runs) = insert_ending_the_session(true, false);
    out.unwrap();
    assert_eq!(runs, 2, "once on the connection that ended, once more");
    let rows: i64 = backend
        .store
        .with_conn(|c| c.query_one("SELECT count(*) FROM t", p![], |r| r.get(0)))
        .unwrap();
    assert_eq!(rows, 1);
}

#[test]
fn a_commit_whose_answer_was_lost_is_not_run_again() {
    let (_backend, out, runs) = insert_ending_the_session(false, true);
    // The session ends in COMMIT: the client sees the server's 57P01, or
    // (a race with the socket closing) only the connection closed.
    let err = out.unwrap_err().to_string();
    assert!(
        err.contains("57P01") || err.contains("connection closed"),
        "{err}"
    );
    assert_eq!(runs, 1, "whether it committed is unknown: not run again");
}

/// Replicas wake each other through LISTEN/NOTIFY, not only their 200 ms
/// poll (issue 24, item 14): a run queued through one replica's store wakes
/// a listener on another's within seconds, and a replica's own writes do
/// not wake it (it knows of them already).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_through_one_replica_wakes_the_other_s_listener() {
    async fn wait(
        wakes: &mut tokio::sync::mpsc::UnboundedReceiver<()>,
        secs: u64,
    ) -> Result<Option<()>, tokio::time::error::Elapsed> {
        tokio::time::timeout(std::time::Duration::from_secs(secs), wakes.recv()).await
    }
    let dir = tempfile::tempdir().unwrap();
    let db = warden_testkit::postgres_database();
    let open = || Store::open_postgres(&db.url, 2, &dir.path().join("cp.key")).unwrap();
    let (a, b) = (open(), std::sync::Arc::new(open()));
    let (woke, mut wakes) = tokio::sync::mpsc::unbounded_channel();
    let listening = b.clone();
    let listener = tokio::spawn(async move {
        listening
            .listen(move || {
                let _ = woke.send(());
            })
            .await;
    });
    // Once as it starts listening (whatever changed before it listened).
    assert!(wait(&mut wakes, 10).await.is_ok(), "the listener started");
    // Its own replica's write: no wake.
    b.insert_runs(&[new_run(1)]).unwrap();
    assert!(
        wait(&mut wakes, 1).await.is_err(),
        "a replica's own change woke it"
    );
    // The other replica's: a wake.
    a.insert_runs(&[new_run(1)]).unwrap();
    assert!(
        matches!(wait(&mut wakes, 10).await, Ok(Some(()))),
        "no wake from the other replica's change"
    );
    listener.abort();
}
