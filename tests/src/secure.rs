//! Secured Kafka for the tests, checking what a managed cluster checks. tansu 0.6 serves neither
//! TLS nor SASL that a client can use (issue 14), so they are put in front of it: TLS by stunnel
//! with a test CA and broker certificate the openssl CLI makes for each test ([`Certificates`]);
//! SASL — PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 — by `tests/tools/sasl_proxy.py`, which
//! authenticates every connection against its users (SCRAM by the `scramp` package) before
//! splicing it to tansu; and the two in a chain for SASL_SSL. tansu advertises the outermost
//! port, so every connection a client makes passes them. A missing tool fails the test, naming
//! it and the set-up script.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::broker::{Broker, Storage, free_port, wait_for_port};
use crate::s3::venv_tool;
use crate::stack::Running;

/// What stands between clients and the broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Security {
    /// `security.protocol=SSL`: stunnel.
    Tls,
    /// `security.protocol=SASL_PLAINTEXT`: the SASL proxy.
    Sasl,
    /// `security.protocol=SASL_SSL`: stunnel, then the SASL proxy.
    SaslTls,
}

/// A test CA, a broker certificate it signed (for 127.0.0.1 and localhost), and another CA
/// that signed nothing the broker shows.
pub struct Certificates {
    pub ca: PathBuf,
    pub other_ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Certificates {
    /// Makes them in `dir` with the openssl CLI (EC P-256 keys, valid two days).
    pub fn generate(dir: &Path) -> Self {
        let path = |name: &str| dir.join(name);
        for (subject, name) in [("testlake test CA", "ca"), ("an unrelated CA", "other-ca")] {
            let mut ca = openssl_req(&["-x509", "-days", "2"]);
            ca.args(["-subj", &format!("/CN={subject}"), "-keyout"]).arg(path(&format!("{name}.key")));
            run(ca.arg("-out").arg(path(&format!("{name}.pem"))));
        }
        let mut request = openssl_req(&["-new", "-subj", "/CN=localhost"]);
        run(request.arg("-keyout").arg(path("broker.key")).arg("-out").arg(path("broker.csr")));
        std::fs::write(path("san.cnf"), "subjectAltName=IP:127.0.0.1,DNS:localhost\n").expect("san.cnf");
        let mut sign = Command::new("openssl");
        sign.args(["x509", "-req", "-days", "2", "-CAcreateserial", "-in"]).arg(path("broker.csr"));
        sign.arg("-CA").arg(path("ca.pem")).arg("-CAkey").arg(path("ca.key"));
        run(sign.arg("-extfile").arg(path("san.cnf")).arg("-out").arg(path("broker.pem")));
        Self { ca: path("ca.pem"), other_ca: path("other-ca.pem"), cert: path("broker.pem"), key: path("broker.key") }
    }
}

/// `openssl req` with `args` and a new EC P-256 key, unencrypted.
fn openssl_req(args: &[&str]) -> Command {
    let mut command = Command::new("openssl");
    command.arg("req").args(args).args(["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]);
    command
}

/// Runs a set-up tool to its end; panics with its output, or naming the set-up script when it
/// is missing.
fn run(command: &mut Command) {
    let program = command.get_program().to_string_lossy().into_owned();
    let out = command.output().unwrap_or_else(|e| panic!("cannot run {program} ({e}); run deploy/scripts/setup.sh"));
    assert!(out.status.success(), "{program} failed: {}", String::from_utf8_lossy(&out.stderr));
}

/// tansu behind TLS, SASL or both, on free ports, every process stopped on drop.
pub struct SecureKafka {
    /// Where clients connect (the outermost of stunnel and the proxy).
    pub port: u16,
    /// The CA that signed the broker's certificate, and another one (TLS set-ups only).
    pub certificates: Option<Certificates>,
    // Dropped in this order: the clients' side first.
    _stunnel: Option<Running>,
    _proxy: Option<Running>,
    _broker: Broker,
    _dir: tempfile::TempDir,
}

impl SecureKafka {
    /// Starts tansu and what `security` puts in front of it; the SASL proxy knows `users`
    /// (name, password). Waits until every process listens.
    pub fn start(security: Security, users: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let broker = Broker::start_behind(Storage::Memory, port);
        let (tls, sasl) = match security {
            Security::Tls => (true, false),
            Security::Sasl => (false, true),
            Security::SaslTls => (true, true),
        };
        // The proxy listens where clients connect, or behind stunnel.
        let proxy_port = match (tls, sasl) {
            (_, false) => None,
            (false, true) => Some(port),
            (true, true) => Some(free_port()),
        };
        let proxy = proxy_port.map(|listen| sasl_proxy(listen, broker.port, users));
        let certificates = tls.then(|| Certificates::generate(dir.path()));
        let stunnel = certificates.as_ref().map(|certs| {
            let upstream = proxy_port.unwrap_or(broker.port);
            stunnel(dir.path(), certs, port, upstream)
        });
        wait_for_port(port, "the secured broker");
        Self { port, certificates, _stunnel: stunnel, _proxy: proxy, _broker: broker, _dir: dir }
    }

    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

/// Where a helper process's log goes: the test's stderr with `TESTLAKE_TEST_LOG`, else nowhere.
fn helper_log() -> Stdio {
    if std::env::var_os("TESTLAKE_TEST_LOG").is_some() { Stdio::inherit() } else { Stdio::null() }
}

fn sasl_proxy(listen: u16, upstream: u16, users: &[(&str, &str)]) -> Running {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/sasl_proxy.py");
    let mut command = Command::new(venv_tool("python"));
    command.arg(script).args(["--listen", &listen.to_string(), "--upstream", &format!("127.0.0.1:{upstream}")]);
    for (name, password) in users {
        command.args(["--user", &format!("{name}:{password}")]);
    }
    let child = command.stdout(Stdio::null()).stderr(helper_log()).spawn().expect("start the SASL proxy");
    let proxy = Running(child);
    wait_for_port(listen, "the SASL proxy (tests/tools/sasl_proxy.py; scramp from deploy/scripts/setup.sh)");
    proxy
}

fn stunnel(dir: &Path, certs: &Certificates, accept: u16, connect: u16) -> Running {
    let config = dir.join("stunnel.conf");
    let text = format!(
        "foreground = yes\npid =\ndebug = {}\n[kafka]\naccept = 127.0.0.1:{accept}\nconnect = 127.0.0.1:{connect}\n\
         cert = {}\nkey = {}\n",
        if std::env::var_os("TESTLAKE_TEST_LOG").is_some() { "info" } else { "warning" },
        certs.cert.display(),
        certs.key.display()
    );
    std::fs::write(&config, text).expect("stunnel.conf");
    let child = Command::new("stunnel")
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(helper_log())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start stunnel ({e}); run deploy/scripts/setup.sh"));
    Running(child)
}
