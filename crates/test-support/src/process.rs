//! A service binary run as a process of its own, for what an in-process service cannot show:
//! the real signal handler (SIGTERM drains, SIGKILL loses what was in flight) and the exit code.
//!
//! [`ServiceProcess::start`] runs `exe` with the given environment (its config, see
//! `platform::config`), its output in a log file, and waits until its side HTTP port answers
//! `/healthz`. [`ServiceProcess::sigterm`] / [`ServiceProcess::sigkill`] signal it;
//! [`ServiceProcess::wait`] reports how and when it ended. Dropping it kills it.

use std::{
    net::SocketAddr,
    path::PathBuf,
    process::{ExitStatus, Stdio},
    time::{Duration, Instant},
};

/// A free port on 127.0.0.1 (bound, then released: another process may take it meanwhile, which
/// a test sees as a start-up failure, never as a wrong answer).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// `127.0.0.1:<free port>`.
pub fn free_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port()))
}

/// A running service binary.
pub struct ServiceProcess {
    child: tokio::process::Child,
    pub pid: u32,
    /// stdout and stderr of the process.
    pub log: PathBuf,
    /// When the last signal was sent (see [`Self::wait`]).
    signalled: Option<Instant>,
}

/// How a [`ServiceProcess`] ended.
#[derive(Debug)]
pub struct Ended {
    pub status: ExitStatus,
    /// From the last signal to the exit.
    pub after_signal: Option<Duration>,
}

impl ServiceProcess {
    /// Starts `exe` with `env` added to this process's environment and waits (up to 20 s) until
    /// `http_addr` answers `GET /healthz` with any status. Panics, with the log, if it exits or
    /// never answers.
    pub async fn start(exe: &str, env: &[(String, String)], http_addr: SocketAddr) -> Self {
        let log = std::env::temp_dir().join(format!(
            "service-{}-{}.log",
            std::path::Path::new(exe)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            uuid::Uuid::new_v4().simple()
        ));
        let out = std::fs::File::create(&log).expect("create the service's log file");
        let err = out.try_clone().expect("clone the log file");
        let mut cmd = tokio::process::Command::new(exe);
        cmd.envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .kill_on_drop(true);
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {exe}: {e}"));
        let pid = child.id().expect("a running child has a pid");
        let started = Instant::now();
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "{exe} exited during start-up ({status}):\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            if crate::answers_http(http_addr).await {
                break;
            }
            if started.elapsed() > Duration::from_secs(20) {
                panic!(
                    "{exe} did not answer on {http_addr} within 20 s:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        Self {
            child,
            pid,
            log,
            signalled: None,
        }
    }

    /// Sends SIGTERM (what Kubernetes sends before it kills a pod).
    pub fn sigterm(&mut self) {
        self.signal("-TERM");
    }

    /// Sends SIGKILL: the process dies with whatever it had in flight.
    pub fn sigkill(&mut self) {
        self.signal("-KILL");
    }

    fn signal(&mut self, which: &str) {
        let status = std::process::Command::new("kill")
            .args([which, &self.pid.to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill {which} {} failed", self.pid);
        self.signalled = Some(Instant::now());
    }

    /// Waits (up to `within`) for the process to exit. Panics, with the log, if it does not.
    pub async fn wait(&mut self, within: Duration) -> Ended {
        match tokio::time::timeout(within, self.child.wait()).await {
            Ok(Ok(status)) => Ended {
                status,
                after_signal: self.signalled.map(|at| at.elapsed()),
            },
            Ok(Err(e)) => panic!("waiting for pid {}: {e}", self.pid),
            Err(_) => panic!(
                "pid {} still runs {within:?} later:\n{}",
                self.pid,
                self.log_text()
            ),
        }
    }

    /// Everything the process wrote so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for ServiceProcess {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        let _ = std::fs::remove_file(&self.log);
    }
}
