//! Private catalog and object-store servers for the soak (`tests/soak.rs`).
//!
//! The soak crashes and restarts its PostgreSQL and its `s3s-fs`, so it
//! cannot use the shared servers other tests run against: it starts its own
//! instances here, from the binaries `scripts/test.sh` installs
//! (`SLUICE_TEST_PG_BIN`: PostgreSQL's bin directory with `initdb` and
//! `pg_ctl`; `SLUICE_S3S_FS_BIN`: the `s3s-fs` binary). Both keep their data
//! across restarts (same data directory, same port), as a real server
//! restart would.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};

/// The bin directory of PostgreSQL (`initdb`, `pg_ctl`) from
/// `SLUICE_TEST_PG_BIN`, if set and complete.
pub fn pg_bin_from_env() -> Option<PathBuf> {
    let d = PathBuf::from(std::env::var_os("SLUICE_TEST_PG_BIN")?);
    (d.join("initdb").is_file() && d.join("pg_ctl").is_file()).then_some(d)
}

/// The `s3s-fs` binary from `SLUICE_S3S_FS_BIN`, if set and present.
pub fn s3s_fs_bin_from_env() -> Option<PathBuf> {
    let p = PathBuf::from(std::env::var_os("SLUICE_S3S_FS_BIN")?);
    p.is_file().then_some(p)
}

/// Runs a blocking command off the async runtime; fails with its output
/// unless it exits 0.
async fn run(mut cmd: Command, what: &str) -> anyhow::Result<()> {
    let what = what.to_string();
    tokio::task::spawn_blocking(move || {
        let out = cmd
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("run {what}"))?;
        if !out.status.success() {
            bail!(
                "{what}: {}\n{}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    })
    .await
    .context("join a blocking command")?
}

/// A PostgreSQL cluster of its own: `initdb` into a temporary directory,
/// trust authentication on 127.0.0.1 and a private socket directory.
///
/// A crash is an immediate shutdown (every backend exits at once, no
/// checkpoint), after which PostgreSQL recovers from its own WAL. So commits
/// are synchronous, as in production: with `synchronous_commit=off` an
/// immediate shutdown loses the last commits the catalog already
/// acknowledged, and the ingester (rightly) treats an acknowledged commit as
/// durable. `fsync=off` only matters if the machine itself crashes, which
/// the soak does not simulate, and keeps the test fast.
pub struct PrivatePostgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    pub port: u16,
    /// Running as root: every server command runs as `postgres`.
    as_postgres: bool,
    running: bool,
}

impl PrivatePostgres {
    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn command(&self, tool: &str) -> Command {
        let exe = self.bin.join(tool);
        if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(exe).current_dir("/");
            c
        } else {
            Command::new(exe)
        }
    }

    /// `initdb` and start on a free port.
    pub async fn start(bin: &Path) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir().context("tempdir")?;
        // SAFETY: geteuid has no preconditions.
        let as_postgres = unsafe { libc::geteuid() } == 0;
        let mut pg = Self {
            dir,
            bin: bin.to_path_buf(),
            port: crate::free_addr().port(),
            as_postgres,
            running: false,
        };
        std::fs::create_dir_all(pg.dir.path().join("sock")).context("socket dir")?;
        if as_postgres {
            // PostgreSQL refuses to run as root; the `postgres` user must
            // reach and own its directories.
            let mut chmod = Command::new("chmod");
            chmod.arg("0755").arg(pg.dir.path());
            run(chmod, "chmod the PostgreSQL directory").await?;
            let mut chown = Command::new("chown");
            chown.arg("-R").arg("postgres:").arg(pg.dir.path());
            run(chown, "chown the PostgreSQL directory to postgres").await?;
        }
        let mut initdb = pg.command("initdb");
        initdb
            .arg("-D")
            .arg(pg.data())
            .args(["-U", "postgres", "--auth=trust", "-E", "UTF8"])
            .args(["--no-locale", "--no-sync"]);
        run(initdb, "initdb").await?;
        pg.start_again().await?;
        Ok(pg)
    }

    /// `postgres://` URL of the `postgres` database as the superuser.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Starts the (stopped) server and waits until it accepts connections.
    pub async fn start_again(&mut self) -> anyhow::Result<()> {
        let opts = format!(
            "-c listen_addresses=127.0.0.1 -p {} -k {} -c fsync=off \
             -c synchronous_commit=on -c full_page_writes=off -c max_connections=100",
            self.port,
            self.dir.path().join("sock").display()
        );
        let mut c = self.command("pg_ctl");
        c.arg("-D")
            .arg(self.data())
            .arg("-l")
            .arg(self.dir.path().join("postgres.log"))
            .args(["-w", "-t", "120", "-o", &opts, "start"]);
        run(c, "pg_ctl start")
            .await
            .map_err(|e| anyhow::anyhow!("{e:#}\nserver log:\n{}", self.log()))?;
        self.running = true;
        Ok(())
    }

    /// `pg_ctl stop -m immediate`: every backend exits at once without a
    /// checkpoint, like a crash; the next start recovers.
    pub async fn crash(&mut self) -> anyhow::Result<()> {
        let mut c = self.command("pg_ctl");
        c.arg("-D")
            .arg(self.data())
            .args(["-m", "immediate", "-w", "-t", "60", "stop"]);
        run(c, "pg_ctl stop -m immediate").await?;
        self.running = false;
        Ok(())
    }

    /// The server log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("postgres.log")).unwrap_or_default()
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        if self.running {
            let _ = self
                .command("pg_ctl")
                .arg("-D")
                .arg(self.data())
                .args(["-m", "immediate", "-w", "-t", "30", "stop"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// An `s3s-fs` server of its own on a fixed port and root directory; each
/// top-level directory of the root is a bucket.
pub struct PrivateS3 {
    pub root: tempfile::TempDir,
    bin: PathBuf,
    pub port: u16,
    pub bucket: String,
    pub access_key: String,
    pub secret_key: String,
    child: Option<Child>,
}

impl PrivateS3 {
    /// Starts a server with one bucket on a free port.
    pub async fn start(bin: &Path) -> anyhow::Result<Self> {
        let root = tempfile::tempdir().context("tempdir")?;
        let bucket = "soak".to_string();
        std::fs::create_dir_all(root.path().join(&bucket)).context("bucket directory")?;
        let mut s = Self {
            root,
            bin: bin.to_path_buf(),
            port: crate::free_addr().port(),
            bucket,
            access_key: "soak-access-key".into(),
            secret_key: "soak-secret-key".into(),
            child: None,
        };
        s.start_again().await?;
        Ok(s)
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Starts the (killed) server again on the same port and root, and
    /// waits until it accepts connections.
    pub async fn start_again(&mut self) -> anyhow::Result<()> {
        assert!(self.child.is_none(), "s3s-fs already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.root.path().with_extension("log"))
            .context("s3s-fs log file")?;
        let child = Command::new(&self.bin)
            .args(["--host", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--access-key", &self.access_key])
            .args(["--secret-key", &self.secret_key])
            .arg(self.root.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("spawn s3s-fs")?;
        self.child = Some(child);
        let addr = format!("127.0.0.1:{}", self.port);
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            if tokio::net::TcpStream::connect(&addr).await.is_ok() {
                return Ok(());
            }
            if let Some(c) = &mut self.child
                && let Some(st) = c.try_wait()?
            {
                self.child = None;
                bail!("s3s-fs exited with {st} during start-up");
            }
            if std::time::Instant::now() > deadline {
                bail!("s3s-fs not listening on {addr} after 60 s");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// `kill -9`: connections are refused until [`Self::start_again`].
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for PrivateS3 {
    fn drop(&mut self) {
        self.kill();
    }
}
