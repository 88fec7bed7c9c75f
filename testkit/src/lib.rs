//! Real servers for Warden's tests, from the system's packages: PostgreSQL
//! (Debian's `postgresql`) and Redis (`redis-server`), on loopback.
//!
//! `scripts/test.sh` starts one of each for the whole test run and names
//! them in `WARDEN_TEST_POSTGRES` / `WARDEN_TEST_REDIS`; a test binary run
//! on its own (plain `cargo test`) starts its own, in a temp dir, stopped
//! (and removed) once the process has exited. Each test gets a database of its own
//! ([`postgres_database`]) or a key prefix of its own ([`redis`]). A test
//! that restarts or stops PostgreSQL starts a server of its own
//! ([`OwnPostgres`]).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// A free TCP port on 127.0.0.1 (free when asked).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// Runs `f` on a thread of its own: the synchronous PostgreSQL client
/// cannot run on an async runtime's thread, and tests call this from both.
fn off_runtime<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(f)
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p))
    })
}

/// A unique name for this process's `n`th database or key prefix.
fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{prefix}_{}_{}_{nanos}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Starts `cmd`, a server whose files are in `dir`, with a watchdog that
/// stops it (SIGQUIT: PostgreSQL's immediate shutdown; Redis quits too) and
/// removes `dir` once this process is gone, however it ended.
fn spawn_owned(mut cmd: Command, dir: &Path) {
    let child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
    let cleanup = format!(
        "kill -QUIT {child}; sleep 2; kill -KILL {child} 2>/dev/null; rm -rf '{dir}'",
        child = child.id(),
        dir = dir.display()
    );
    keep(child);
    after_exit(&cleanup, None);
}

/// Runs the shell commands `cleanup` (as `user`) once this process is gone,
/// however it ended.
fn after_exit(cleanup: &str, user: Option<(u32, u32)>) {
    let script = format!(
        "while [ -d /proc/{parent} ]; do sleep 0.5; done; {cleanup}",
        parent = std::process::id()
    );
    let mut watchdog = Command::new("sh");
    watchdog
        .args(["-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    as_user(&mut watchdog, user);
    keep(watchdog.spawn().expect("sh starts"));
}

/// Keeps `child`, which outlives this process's use of it, never waited for.
fn keep(child: std::process::Child) {
    static CHILDREN: std::sync::Mutex<Vec<std::process::Child>> = std::sync::Mutex::new(Vec::new());
    CHILDREN.lock().unwrap().push(child);
}

/// The `postgres` system user's (uid, gid), when running as root
/// (PostgreSQL refuses to run as root).
fn postgres_user() -> Option<(u32, u32)> {
    use std::os::unix::fs::MetadataExt;
    let me = std::fs::metadata("/proc/self")
        .map(|m| m.uid())
        .unwrap_or(0);
    if me != 0 {
        return None;
    }
    let id = |flag: &str| -> u32 {
        let out = Command::new("id")
            .args([flag, "postgres"])
            .output()
            .expect("id runs");
        assert!(
            out.status.success(),
            "running as root, PostgreSQL needs the `postgres` user: `apt-get install -y postgresql`"
        );
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .expect("a number")
    };
    Some((id("-u"), id("-g")))
}

/// The directory holding `initdb` and `postgres`.
fn postgres_bin() -> PathBuf {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|p| p.join("postgres").exists())
        .collect();
    found.sort_by_key(|p| {
        p.parent()
            .and_then(|v| v.file_name())
            .and_then(|v| v.to_str())
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0)
    });
    found.pop().unwrap_or_else(|| {
        panic!("PostgreSQL's server binaries: `apt-get install -y postgresql` (.ci/run does this)")
    })
}

fn as_user(cmd: &mut Command, user: Option<(u32, u32)>) {
    use std::os::unix::process::CommandExt;
    if let Some((uid, gid)) = user {
        cmd.uid(uid).gid(gid);
    }
}

/// Starts a PostgreSQL server in a new temp dir; returns its admin URL.
fn start_postgres() -> String {
    // A test server: its data is thrown away.
    start_postgres_server(&["fsync=off"])
}

/// Starts a PostgreSQL server of this process's own with `settings`
/// (`name=value`), stopped when the process has exited; returns its admin
/// URL (for [`postgres_database_at`]).
pub fn start_postgres_server(settings: &[&str]) -> String {
    let cluster = PostgresCluster::init();
    let log = std::fs::File::create(cluster.log()).expect("a log file");
    let mut server = Command::new(cluster.bin.join("postgres"));
    server
        .arg("-D")
        .arg(cluster.data())
        .args(["-p", &cluster.port.to_string(), "-k"])
        .arg(&cluster.dir)
        .args([
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            "max_connections=300",
        ])
        .args(settings.iter().flat_map(|s| ["-c", s]))
        .stdout(Stdio::null())
        .stderr(log);
    as_user(&mut server, cluster.user);
    spawn_owned(server, &cluster.dir);
    wait_for_postgres(&cluster.url(), &cluster.log());
    cluster.url()
}

/// A new PostgreSQL data directory (`initdb`) in a temp dir, and a free
/// port for its server.
struct PostgresCluster {
    bin: PathBuf,
    /// The `postgres` user's (uid, gid) when running as root.
    user: Option<(u32, u32)>,
    /// The temp dir: `data/`, the log, the socket.
    dir: PathBuf,
    port: u16,
}

impl PostgresCluster {
    fn init() -> PostgresCluster {
        let bin = postgres_bin();
        let user = postgres_user();
        let dir = tempfile::Builder::new()
            .prefix("warden-pg-")
            .tempdir()
            .expect("a temp dir")
            .keep();
        if let Some((uid, gid)) = user {
            std::os::unix::fs::chown(&dir, Some(uid), Some(gid)).expect("chown the temp dir");
        }
        let mut initdb = Command::new(bin.join("initdb"));
        initdb
            .args([
                "--auth=trust",
                "--username=postgres",
                "--encoding=UTF8",
                "--no-sync",
                "-D",
            ])
            .arg(dir.join("data"))
            .stdout(Stdio::null());
        as_user(&mut initdb, user);
        let out = initdb.output().expect("initdb runs");
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        PostgresCluster {
            bin,
            user,
            dir,
            port: free_port(),
        }
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn log(&self) -> PathBuf {
        self.dir.join("postgres.log")
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

/// A PostgreSQL server of one test's own, run by `pg_ctl`, which the test
/// may restart or stop (the run's shared server must stay up for the other
/// tests). Stopped and removed when dropped, or once the process has exited.
pub struct OwnPostgres {
    /// Its admin URL (`postgres://postgres@127.0.0.1:PORT/postgres`).
    pub url: String,
    cluster: PostgresCluster,
}

impl OwnPostgres {
    /// Makes and starts the server.
    pub fn start() -> OwnPostgres {
        let cluster = PostgresCluster::init();
        let pg_ctl = cluster.bin.join("pg_ctl");
        after_exit(
            &format!(
                "'{}' -D '{}' -m immediate stop; rm -rf '{}'",
                pg_ctl.display(),
                cluster.data().display(),
                cluster.dir.display()
            ),
            cluster.user,
        );
        let server = OwnPostgres {
            url: cluster.url(),
            cluster,
        };
        server.pg_ctl("start");
        server
    }

    /// `pg_ctl restart -m fast`: the server ends every session
    /// (`57P01 admin_shutdown`) and comes back; returns once it accepts
    /// connections again.
    pub fn restart(&self) {
        self.pg_ctl("restart");
    }

    /// `pg_ctl stop -m fast`.
    pub fn stop(&self) {
        self.pg_ctl("stop");
    }

    /// `pg_ctl start`, after [`OwnPostgres::stop`].
    pub fn start_again(&self) {
        self.pg_ctl("start");
    }

    fn pg_ctl(&self, action: &str) {
        let c = &self.cluster;
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            c.port,
            c.dir.display()
        );
        let mut cmd = Command::new(c.bin.join("pg_ctl"));
        cmd.arg("-D")
            .arg(c.data())
            .arg("-l")
            .arg(c.log())
            .args(["-w", "-m", "fast", "-o", &options, action])
            .stdout(Stdio::null());
        as_user(&mut cmd, c.user);
        let out = cmd.output().expect("pg_ctl runs");
        assert!(
            out.status.success(),
            "pg_ctl {action} failed: {}{}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(c.log()).unwrap_or_default()
        );
        if action != "stop" {
            wait_for_postgres(&self.url, &c.log());
        }
    }
}

impl Drop for OwnPostgres {
    fn drop(&mut self) {
        let c = &self.cluster;
        let mut cmd = Command::new(c.bin.join("pg_ctl"));
        cmd.arg("-D")
            .arg(c.data())
            .args(["-m", "immediate", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        as_user(&mut cmd, c.user);
        let _ = cmd.status();
        let _ = std::fs::remove_dir_all(&c.dir);
    }
}

fn wait_for_postgres(url: &str, log: &Path) {
    let start = Instant::now();
    loop {
        let connected = off_runtime(|| postgres::Client::connect(url, postgres::NoTls).is_ok());
        if connected {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "PostgreSQL did not start: {}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The PostgreSQL server of this test run (admin URL).
fn postgres_server() -> &'static str {
    static SERVER: OnceLock<String> = OnceLock::new();
    SERVER.get_or_init(|| match std::env::var("WARDEN_TEST_POSTGRES") {
        Ok(url) if !url.is_empty() => url,
        _ => start_postgres(),
    })
}

/// A new, empty database on the test run's PostgreSQL server, dropped
/// when this is.
pub struct PostgresDatabase {
    /// `postgres://...` of the database.
    pub url: String,
    name: String,
    admin: String,
}

/// A database of this test's own.
pub fn postgres_database() -> PostgresDatabase {
    postgres_database_at(postgres_server())
}

/// A new database on the server at `admin` (its admin URL).
pub fn postgres_database_at(admin: &str) -> PostgresDatabase {
    let name = unique("warden");
    admin_sql(admin, &format!("CREATE DATABASE {name}")).unwrap_or_else(|e| panic!("{e}"));
    let base = admin.rsplit_once('/').map_or(admin, |(base, _)| base);
    PostgresDatabase {
        url: format!("{base}/{name}"),
        name,
        admin: admin.to_string(),
    }
}

impl PostgresDatabase {
    /// Drops the database now, closing every connection to it: whatever
    /// uses it finds it gone.
    pub fn drop_now(&self) {
        self.drop_database().unwrap_or_else(|e| panic!("{e}"));
    }

    fn drop_database(&self) -> Result<(), String> {
        let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        admin_sql(&self.admin, &sql)
    }
}

impl Drop for PostgresDatabase {
    fn drop(&mut self) {
        let _ = self.drop_database();
    }
}

/// Runs `sql` on the server at `admin` (its admin URL), on a connection of
/// its own.
fn admin_sql(admin: &str, sql: &str) -> Result<(), String> {
    off_runtime(|| {
        let mut client = postgres::Client::connect(admin, postgres::NoTls)
            .map_err(|e| format!("cannot reach the test PostgreSQL at {admin}: {e}"))?;
        client.batch_execute(sql).map_err(|e| format!("{sql}: {e}"))
    })
}

/// Starts a Redis server in a new temp dir; returns its URL.
fn start_redis() -> String {
    let dir = tempfile::Builder::new()
        .prefix("warden-redis-")
        .tempdir()
        .expect("a temp dir")
        .keep();
    let port = free_port();
    let mut server = Command::new("redis-server");
    server
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
        ])
        .args(["--appendonly", "no", "--dir"])
        .arg(&dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    spawn_owned(server, &dir);
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "redis-server did not start (`apt-get install -y redis-server`; .ci/run does this)"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    format!("redis://127.0.0.1:{port}")
}

/// The Redis server of this test run, and a key prefix of this test's own.
pub struct Redis {
    /// `redis://127.0.0.1:PORT`
    pub url: String,
    /// Unique to this test: every key it makes starts with it.
    pub prefix: String,
}

/// The test run's Redis, with a fresh key prefix.
pub fn redis() -> Redis {
    static SERVER: OnceLock<String> = OnceLock::new();
    let url = SERVER.get_or_init(|| match std::env::var("WARDEN_TEST_REDIS") {
        Ok(url) if !url.is_empty() => url,
        _ => start_redis(),
    });
    Redis {
        url: url.clone(),
        prefix: format!("{}:", unique("test")),
    }
}
