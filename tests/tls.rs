//! TLS to the source and to a target, with certificates made by openssl for a local MariaDB:
//! both servers require secure transport and a client certificate (REQUIRE X509), and rowsync
//! verifies the server certificate against the CA and the host (verify = "full").
//!
//! Run: `cargo nextest run --test tls`

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate, in `dir`.
fn make_certs(dir: &Path) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca-key.pem",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=rowsync test CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
    );
    for (name, usage, san) in [
        (
            "server",
            "serverAuth",
            "subjectAltName=IP:127.0.0.1,DNS:localhost",
        ),
        ("client", "clientAuth", "subjectAltName=DNS:rowsync"),
    ] {
        openssl(
            dir,
            &[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                &format!("{name}-key.pem"),
                "-out",
                &format!("{name}.csr"),
                "-subj",
                &format!("/CN={name}"),
            ],
        );
        std::fs::write(dir.join(format!("{name}.ext")), format!("{san}\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage={usage}\n")).unwrap();
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &format!("{name}.csr"),
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca-key.pem",
                "-CAcreateserial",
                "-out",
                &format!("{name}-cert.pem"),
                "-days",
                "2",
                "-extfile",
                &format!("{name}.ext"),
            ],
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_and_target_over_verified_tls() {
    let certs = tempfile::tempdir().unwrap();
    make_certs(certs.path());
    let p = |f: &str| certs.path().join(f).display().to_string();
    let ssl = [
        format!("--ssl-ca={}", p("ca.pem")),
        format!("--ssl-cert={}", p("server-cert.pem")),
        format!("--ssl-key={}", p("server-key.pem")),
        "--require-secure-transport=ON".to_string(),
    ];
    let ssl: Vec<&str> = ssl.iter().map(String::as_str).collect();
    let source = Server::start_with(Role::Source, &ssl);
    let target = Server::start_with(Role::Target, &ssl);
    // The harness's own sessions connect over the socket-less TCP path without TLS, which the
    // servers now refuse; set up through a TLS-capable client.
    let setup = |server: &Server, sql: &str| {
        let out = Command::new("mariadb")
            .args([
                "-h127.0.0.1",
                &format!("-P{}", server.port),
                "-uroot",
                "--ssl",
                &format!("--ssl-ca={}", p("ca.pem")),
                "-e",
                sql,
            ])
            .output()
            .expect("mariadb client");
        assert!(
            out.status.success(),
            "{sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let user =
        "CREATE USER 'tls'@'%' IDENTIFIED BY 'pw' REQUIRE X509; GRANT ALL ON *.* TO 'tls'@'%';";
    setup(&source, &format!("{user} {}", PRODUCT_SCHEMA.join("; ")));
    setup(&target, &format!("{user} CREATE DATABASE order_db;"));

    let tls = format!(
        "ca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\nverify = \"full\"\n",
        p("ca.pem"),
        p("client-cert.pem"),
        p("client-key.pem")
    );
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(
        dir.path(),
        &format!(
            "[source]\nurl = \"mysql://tls:pw@127.0.0.1:{}/\"\nserver_id = 5001\nheartbeat_secs = 1\n\n[source.tls]\n{tls}\n[[targets]]\nname = \"order\"\nurl = \"mysql://tls:pw@127.0.0.1:{}/order_db\"\n\n[targets.tls]\n{tls}\n[[mappings]]\nsource = \"product.category\"\ntargets = [\"order\"]\n",
            source.port, target.port
        ),
    );
    let (code, out) = rowsync_cmd(&["check", "--config", cfg.to_str().unwrap()]);
    assert!(out.contains("target `order` is reachable"), "{out}");
    assert!(out.contains("source is "), "{out}");
    let _ = code; // sync_binlog=0 in tests is only a warning; other findings are asserted above.

    let rowsync = Rowsync::start(&cfg);
    // Wait until the stream is open (the harness cannot query the TLS-only target directly).
    rowsync
        .wait_log("binlog stream open", Duration::from_secs(60))
        .await;
    setup(
        &source,
        "INSERT INTO product.category VALUES (1, 'over tls', NULL), (2, 'x', 1)",
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let out = Command::new("mariadb")
            .args([
                "-h127.0.0.1",
                &format!("-P{}", target.port),
                "-uroot",
                "--ssl",
                &format!("--ssl-ca={}", p("ca.pem")),
                "-N",
                "-e",
                "SELECT GROUP_CONCAT(name ORDER BY id) FROM order_db.category",
            ])
            .output()
            .unwrap();
        if String::from_utf8_lossy(&out.stdout).trim() == "over tls,x" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no rows over TLS; log:\n{}",
            rowsync.log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // Verification is real: a CA that did not sign the server certificate is refused.
    let other = tempfile::tempdir().unwrap();
    make_certs(other.path());
    let wrong_ca = std::fs::read_to_string(&cfg).unwrap().replace(
        &p("ca.pem"),
        &other.path().join("ca.pem").display().to_string(),
    );
    let cfg2 = dir.path().join("wrong-ca.toml");
    std::fs::write(&cfg2, wrong_ca).unwrap();
    let (code, out) = rowsync_cmd(&["check", "--config", cfg2.to_str().unwrap()]);
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("source is unreachable"), "{out}");
}
