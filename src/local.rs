//! Throwaway local MariaDB servers, started from the installed binaries in a directory of
//! their own on a free port: what `rowsync demo` runs on, and what the tests run against.
//!
//! Durability is relaxed (`innodb_flush_log_at_trx_commit=2`, `sync_binlog=0`): these servers
//! hold demo and test data only.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The local servers cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    #[error("MariaDB server binaries not found ({0}); install them with: sudo apt-get install mariadb-server")]
    Missing(&'static str),
    #[error("{what} failed: {detail}")]
    Failed { what: String, detail: String },
}

fn failed(what: impl Into<String>, detail: impl ToString) -> LocalError {
    LocalError::Failed {
        what: what.into(),
        detail: detail.to_string(),
    }
}

/// The installed MariaDB programs.
#[derive(Debug, Clone)]
pub struct Binaries {
    pub mariadbd: PathBuf,
    pub install_db: PathBuf,
}

fn find(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs = std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/bin", "/usr/local/bin", "/usr/local/sbin"].map(PathBuf::from));
    dirs.flat_map(|d| names.iter().map(move |n| d.join(n)))
        .find(|p| p.is_file())
}

impl Binaries {
    pub fn find() -> Result<Binaries, LocalError> {
        Ok(Binaries {
            mariadbd: find(&["mariadbd", "mysqld"]).ok_or(LocalError::Missing("mariadbd"))?,
            install_db: find(&["mariadb-install-db", "mysql_install_db"])
                .ok_or(LocalError::Missing("mariadb-install-db"))?,
        })
    }
}

/// Whether this process runs as root (mariadbd then needs `--user=root`).
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

/// A private temporary directory for one server: mariadbd deletes every `#sql*` file in its
/// tmpdir when it starts, so servers sharing `/tmp` break each other's bootstrap.
fn private_tmpdir(path: PathBuf) -> Result<String, LocalError> {
    std::fs::create_dir_all(&path)
        .map_err(|e| failed(format!("creating {}", path.display()), e))?;
    Ok(format!("--tmpdir={}", path.display()))
}

/// Creates an empty datadir at `dir` (root@127.0.0.1 with an empty password).
pub fn install(bins: &Binaries, dir: &Path) -> Result<(), LocalError> {
    let mut tmp = dir.as_os_str().to_owned();
    tmp.push(".install-tmp");
    let tmp = PathBuf::from(tmp);
    let mut cmd = Command::new(&bins.install_db);
    cmd.arg("--no-defaults")
        .arg(format!("--datadir={}", dir.display()))
        .arg(private_tmpdir(tmp.clone())?)
        .arg("--auth-root-authentication-method=normal")
        .arg("--skip-test-db")
        .arg("--innodb-log-file-size=16M")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if is_root() {
        cmd.arg("--user=root");
    }
    let out = cmd.output().map_err(|e| failed("mariadb-install-db", e))?;
    let _ = std::fs::remove_dir_all(&tmp);
    if !out.status.success() {
        return Err(failed(
            "mariadb-install-db",
            String::from_utf8_lossy(&out.stderr),
        ));
    }
    Ok(())
}

/// A port nobody listens on right now.
pub fn free_port() -> Result<u16, LocalError> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| failed("finding a free port", e))
}

/// What a server is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Binary logging on: ROW format, FULL row image and metadata.
    Source,
    Target,
}

/// A running local server.
pub struct LocalServer {
    pub port: u16,
    pub server_id: u32,
    run_dir: PathBuf,
    mariadbd: PathBuf,
    args: Vec<String>,
    child: Option<Child>,
}

impl LocalServer {
    /// Starts a server on `datadir`, keeping its socket, pid and log in `run_dir`.
    pub fn start(
        bins: &Binaries,
        datadir: &Path,
        run_dir: &Path,
        role: Role,
        server_id: u32,
        extra: &[&str],
    ) -> Result<LocalServer, LocalError> {
        let port = free_port()?;
        let mut args = vec![
            "--no-defaults".to_string(),
            format!("--datadir={}", datadir.display()),
            format!("--port={port}"),
            "--bind-address=127.0.0.1".into(),
            format!("--socket={}", run_dir.join("mysqld.sock").display()),
            format!("--pid-file={}", run_dir.join("mysqld.pid").display()),
            format!("--log-error={}", run_dir.join("error.log").display()),
            private_tmpdir(run_dir.join("tmp"))?,
            format!("--server-id={server_id}"),
            "--skip-name-resolve".into(),
            "--innodb-buffer-pool-size=64M".into(),
            "--innodb-flush-log-at-trx-commit=2".into(),
            "--sync-binlog=0".into(),
            "--max-connections=200".into(),
            "--performance-schema=OFF".into(),
            "--character-set-server=utf8mb4".into(),
            "--collation-server=utf8mb4_general_ci".into(),
        ];
        if role == Role::Source {
            args.extend([
                "--log-bin=mysql-bin".to_string(),
                "--binlog-format=ROW".into(),
                "--binlog-row-metadata=FULL".into(),
                "--binlog-row-image=FULL".into(),
            ]);
        }
        if is_root() {
            args.push("--user=root".into());
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut server = LocalServer {
            port,
            server_id,
            run_dir: run_dir.to_owned(),
            mariadbd: bins.mariadbd.clone(),
            args,
            child: None,
        };
        server.spawn()?;
        Ok(server)
    }

    fn spawn(&mut self) -> Result<(), LocalError> {
        let child = Command::new(&self.mariadbd)
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| failed("starting mariadbd", e))?;
        self.child = Some(child);
        self.wait_ready()
    }

    /// Ready once the server sends its handshake on the TCP port.
    fn wait_ready(&mut self) -> Result<(), LocalError> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let ready = std::net::TcpStream::connect(("127.0.0.1", self.port))
                .and_then(|mut s| {
                    s.set_read_timeout(Some(Duration::from_secs(2)))?;
                    let mut buf = [0u8; 8];
                    s.read_exact(&mut buf)
                })
                .is_ok();
            if ready {
                return Ok(());
            }
            let exited = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
                .is_some();
            if exited || Instant::now() > deadline {
                return Err(failed(
                    format!("mariadbd on port {}", self.port),
                    std::fs::read_to_string(self.run_dir.join("error.log")).unwrap_or_default(),
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `mysql://root@127.0.0.1:PORT/db`
    pub fn url(&self, db: &str) -> String {
        format!("mysql://root@127.0.0.1:{}/{}", self.port, db)
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Stops the server: SIGTERM and a wait (SIGKILL when `hard`).
    pub fn stop(&mut self, hard: bool) {
        if let Some(mut child) = self.child.take() {
            let sig = if hard { "-KILL" } else { "-TERM" };
            let _ = Command::new("kill")
                .arg(sig)
                .arg(child.id().to_string())
                .status();
            let _ = child.wait();
        }
    }

    /// Starts a stopped server again on the same data and port.
    pub fn resume(&mut self) -> Result<(), LocalError> {
        if self.child.is_none() {
            self.spawn()?;
        }
        Ok(())
    }
}

impl Drop for LocalServer {
    fn drop(&mut self) {
        self.stop(true);
    }
}
