//! Throwaway servers a test starts itself, for what the machine's shared PostgreSQL and Redis
//! must not be made to do: TLS with a certificate the test made, or being stopped mid-test.
//!
//! - [`TestCerts::make`]: a CA, a server certificate for `localhost` signed by it, and an unrelated
//!   CA (for the "wrong CA" case), made with the `openssl` command.
//! - [`ThrowawayPostgres::start`]: a cluster of its own (initdb/pg_ctl of the machine's PostgreSQL,
//!   as user `postgres` when run as root) under a temporary folder, on a free port, `ssl = on` and
//!   a `pg_hba.conf` that accepts only TLS; [`ThrowawayPostgres::stop`] is a crash-like stop.
//! - [`ThrowawayRedis::start`]: `redis-server` on a free TLS port only.
//!
//! Each is removed (stopped, its folder deleted) when dropped.

use std::{
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

/// A fresh temporary folder (deleted by its owner's `Drop`).
fn temp_dir(what: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("{what}-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("create a temporary folder");
    dir
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

fn run(cmd: &mut Command) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// Certificates made for one test.
pub struct TestCerts {
    pub dir: PathBuf,
    /// The CA that signed the server's certificate.
    pub ca: PathBuf,
    /// A CA that signed nothing here: configuring it must fail.
    pub other_ca: PathBuf,
    /// Valid for `localhost` only (so `127.0.0.1` is the wrong host name).
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
}

impl TestCerts {
    pub fn make(dir: &Path) -> Self {
        let p = |name: &str| dir.join(name);
        let ca = |name: &str| {
            run(Command::new("openssl")
                .args(["req", "-x509", "-newkey", "ec"])
                .args([
                    "-pkeyopt",
                    "ec_paramgen_curve:prime256v1",
                    "-nodes",
                    "-days",
                    "2",
                    "-subj",
                    &format!("/CN={name}"),
                    "-addext",
                    "basicConstraints=critical,CA:TRUE",
                    "-addext",
                    "keyUsage=critical,keyCertSign,cRLSign",
                    "-keyout",
                ])
                .arg(p(&format!("{name}.key")))
                .arg("-out")
                .arg(p(&format!("{name}.crt"))));
        };
        ca("test-ca");
        ca("other-ca");
        run(Command::new("openssl")
            .args([
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
            ])
            .args(["-nodes", "-subj", "/CN=localhost", "-keyout"])
            .arg(p("server.key"))
            .arg("-out")
            .arg(p("server.csr")));
        std::fs::write(
            p("server.ext"),
            "subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\n\
             keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
        )
        .expect("write the extensions file");
        run(Command::new("openssl")
            .args(["x509", "-req", "-days", "2", "-in"])
            .arg(p("server.csr"))
            .arg("-CA")
            .arg(p("test-ca.crt"))
            .arg("-CAkey")
            .arg(p("test-ca.key"))
            .args(["-CAcreateserial", "-extfile"])
            .arg(p("server.ext"))
            .arg("-out")
            .arg(p("server.crt")));
        Self {
            dir: dir.to_owned(),
            ca: p("test-ca.crt"),
            other_ca: p("other-ca.crt"),
            server_cert: p("server.crt"),
            server_key: p("server.key"),
        }
    }
}

/// A PostgreSQL cluster of the test's own that accepts only TLS connections.
pub struct ThrowawayPostgres {
    pub dir: PathBuf,
    pub port: u16,
    pub certs: TestCerts,
    as_postgres: bool,
}

impl ThrowawayPostgres {
    /// initdb, configure TLS, start (a few seconds). Blocking.
    pub fn start() -> Self {
        let dir = temp_dir("throwaway-pg");
        let certs = TestCerts::make(&dir);
        let data = dir.join("data");
        let as_postgres = is_root();
        let pg = Self {
            dir,
            port: free_port(),
            certs,
            as_postgres,
        };
        if as_postgres {
            run(Command::new("chown").arg("-R").arg("postgres").arg(&pg.dir));
        }
        pg.pg(&format!(
            "initdb -D {} -A trust -U postgres --no-sync",
            data.display()
        ));
        let conf = format!(
            "\nport = {}\nlisten_addresses = 'localhost'\nunix_socket_directories = '{}'\n\
             ssl = on\nssl_cert_file = '{}'\nssl_key_file = '{}'\nfsync = off\n",
            pg.port,
            pg.dir.display(),
            pg.certs.server_cert.display(),
            pg.certs.server_key.display(),
        );
        let conf_path = data.join("postgresql.conf");
        let mut text = std::fs::read_to_string(&conf_path).expect("read postgresql.conf");
        text.push_str(&conf);
        std::fs::write(&conf_path, text).expect("write postgresql.conf");
        // TLS only: a plaintext client is refused ("no pg_hba.conf entry ... no encryption")
        std::fs::write(
            data.join("pg_hba.conf"),
            "local all all trust\nhostssl all all 127.0.0.1/32 trust\nhostssl all all ::1/128 trust\n",
        )
        .expect("write pg_hba.conf");
        pg.start_again();
        pg
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn pg(&self, command: &str) {
        let bin = Command::new("pg_config")
            .arg("--bindir")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_default();
        let line = format!("{bin}/{command}");
        if self.as_postgres {
            run(Command::new("su").args(["postgres", "-c", &line]));
        } else {
            run(Command::new("sh").args(["-c", &line]));
        }
    }

    /// Starts (again, after [`Self::stop`]) and waits until it accepts connections.
    pub fn start_again(&self) {
        self.pg(&format!(
            "pg_ctl -D {} -l {}/log -w -t 30 start",
            self.data().display(),
            self.dir.display()
        ));
    }

    /// A crash-like stop (`-m immediate`): connections drop at once.
    pub fn stop(&self) {
        self.pg(&format!(
            "pg_ctl -D {} -m immediate -w stop",
            self.data().display()
        ));
    }

    /// `postgres://postgres@HOST:PORT/postgres` with `query` appended (e.g. `sslmode=verify-full`).
    pub fn url(&self, host: &str, query: &str) -> String {
        let query = if query.is_empty() {
            String::new()
        } else {
            format!("?{query}")
        };
        format!("postgres://postgres@{host}:{}/postgres{query}", self.port)
    }
}

impl Drop for ThrowawayPostgres {
    fn drop(&mut self) {
        let line = format!(
            "$(pg_config --bindir)/pg_ctl -D {} -m immediate stop",
            self.data().display()
        );
        let mut cmd = if self.as_postgres {
            let mut c = Command::new("su");
            c.args(["postgres", "-c", &line]);
            c
        } else {
            let mut c = Command::new("sh");
            c.args(["-c", &line]);
            c
        };
        let _ = cmd.stdout(Stdio::null()).stderr(Stdio::null()).status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A `redis-server` of the test's own listening only on a TLS port.
pub struct ThrowawayRedis {
    pub port: u16,
    pub certs: TestCerts,
    dir: PathBuf,
    child: Child,
}

impl ThrowawayRedis {
    /// Starts it and waits until the port accepts connections. Blocking.
    pub fn start() -> Self {
        let dir = temp_dir("throwaway-redis");
        let certs = TestCerts::make(&dir);
        let port = free_port();
        let child = Command::new("redis-server")
            .args(["--port", "0", "--tls-port", &port.to_string()])
            .arg("--tls-cert-file")
            .arg(&certs.server_cert)
            .arg("--tls-key-file")
            .arg(&certs.server_key)
            .arg("--tls-ca-cert-file")
            .arg(&certs.ca)
            .args([
                "--tls-auth-clients",
                "no",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .args(["--bind", "127.0.0.1", "--dir"])
            .arg(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "redis-server did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Self {
            port,
            certs,
            dir,
            child,
        }
    }

    /// `rediss://HOST:PORT`.
    pub fn url(&self, host: &str) -> String {
        format!("rediss://{host}:{}", self.port)
    }
}

impl Drop for ThrowawayRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
