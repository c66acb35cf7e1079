//! docker-compose.yml cannot run here (no Docker engine), so it is kept correct by reading:
//! the file parses, has the source/target/rowsync services, the source logs what rowsync
//! needs, the config it mounts passes rowsync's offline validation and names the compose
//! services, and the Dockerfile builds and runs the `rowsync` binary.
//!
//! Run: `cargo nextest run --test compose`

use std::path::Path;

use rowsync::config::Config;
use serde_norway::Value;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn strings(v: &Value) -> Vec<String> {
    match v {
        Value::Sequence(items) => items
            .iter()
            .filter_map(|i| i.as_str().map(str::to_owned))
            .collect(),
        Value::String(s) => s.split_whitespace().map(str::to_owned).collect(),
        _ => vec![],
    }
}

#[test]
fn compose_file_and_its_config_are_consistent() {
    let text = std::fs::read_to_string(root().join("docker-compose.yml")).unwrap();
    let doc: Value = serde_norway::from_str(&text).expect("docker-compose.yml is valid YAML");
    let services = &doc["services"];
    for name in ["product-db", "order-db", "purchase-db", "rowsync"] {
        assert!(services.get(name).is_some(), "service {name} missing");
    }

    let source_cmd = strings(&services["product-db"]["command"]);
    for flag in [
        "--log-bin=mysql-bin",
        "--binlog-format=ROW",
        "--binlog-row-image=FULL",
        "--binlog-row-metadata=FULL",
    ] {
        assert!(
            source_cmd.iter().any(|c| c == flag),
            "product-db lacks {flag}: {source_cmd:?}"
        );
    }

    // rowsync's mounted config exists in the repository and validates offline.
    let rowsync = &services["rowsync"];
    let mount = strings(&rowsync["volumes"])
        .into_iter()
        .find(|v| v.ends_with(":ro") && v.contains(".toml"))
        .expect("rowsync mounts its config");
    let mut parts = mount.split(':');
    let host = parts.next().unwrap();
    let in_container = parts.next().unwrap();
    let config = Config::load(&root().join(host)).unwrap_or_else(|e| panic!("{e}"));
    let command = strings(&rowsync["command"]);
    assert!(
        command
            .windows(2)
            .any(|w| w[0] == "--config" && w[1] == in_container),
        "{command:?}"
    );

    // Every host the config connects to is a compose service rowsync depends on.
    let depends = rowsync["depends_on"].as_mapping().expect("depends_on");
    let mut urls = vec![config.source.url.clone()];
    urls.extend(config.targets.iter().map(|t| t.url.clone()));
    for url in urls {
        let host = url::Url::parse(&url)
            .unwrap()
            .host_str()
            .unwrap()
            .to_string();
        assert!(
            services.get(&host).is_some(),
            "config host {host} is not a service"
        );
        assert!(
            depends.contains_key(Value::String(host.clone())),
            "rowsync does not wait for {host}"
        );
    }
    // The target databases and users the config expects are the ones compose creates.
    for t in &config.targets {
        let url = url::Url::parse(&t.url).unwrap();
        let env = &services[url.host_str().unwrap()]["environment"];
        assert_eq!(
            env["MARIADB_DATABASE"].as_str(),
            Some(url.path().trim_start_matches('/'))
        );
        assert_eq!(env["MARIADB_USER"].as_str(), Some(url.username()));
        assert_eq!(env["MARIADB_PASSWORD"].as_str(), url.password());
    }
    // The source's init script creates the replication user the config uses.
    let init = std::fs::read_to_string(root().join("docker/source-init.sql")).unwrap();
    let source = url::Url::parse(&config.source.url).unwrap();
    assert!(init.contains(&format!(
        "'{}'@'%' IDENTIFIED BY '{}'",
        source.username(),
        source.password().unwrap_or("")
    )));
    assert!(init.contains("REPLICATION SLAVE, BINLOG MONITOR, SELECT"));

    let dockerfile = std::fs::read_to_string(root().join("Dockerfile")).unwrap();
    assert!(dockerfile.contains("cargo build --release --locked --bin rowsync"));
    assert!(dockerfile.contains("ENTRYPOINT [\"rowsync\"]"));
    assert!(
        dockerfile.contains("COPY migrations"),
        "the state store's migrations are compiled in"
    );
    assert!(
        dockerfile.contains("COPY web-ui"),
        "the admin UI's files are compiled in"
    );

    // The admin UI listens on all interfaces inside the container, on the port compose
    // publishes, and has a user to log in with.
    assert!(
        config.admin.listen.ip().is_unspecified(),
        "{}",
        config.admin.listen
    );
    let port = config.admin.listen.port();
    assert!(
        strings(&rowsync["ports"])
            .iter()
            .any(|p| p.ends_with(&format!(":{port}"))),
        "compose does not publish the admin port {port}"
    );
    assert!(rowsync["environment"]["ROWSYNC_ADMIN__PASSWORD"].is_string());
}

#[test]
fn the_example_config_validates() {
    let config =
        Config::load(&root().join("config/rowsync.example.toml")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.targets.len(), 2);
    assert!(config.mappings.iter().any(|m| m.columns.is_some()));
}
