//! The admin HTTP API of `rowsync run`, against a real daemon and real MariaDB servers: login,
//! sessions and CSRF, roles, API tokens, the login throttle, JSON errors for bad requests,
//! status, pause/resume and re-copy through the API, health and readiness, `/metrics` parsed
//! as Prometheus text, and the generated OpenAPI document.
//!
//! Run: `cargo nextest run --test admin`

mod common;

use std::time::{Duration, Instant};

use common::*;
use mysql_async::prelude::*;
use reqwest::StatusCode;
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(60);

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Api {
    base: String,
    http: reqwest::Client,
}

impl Api {
    fn new(port: u16) -> Api {
        Api {
            base: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::builder()
                .cookie_store(true)
                .build()
                .unwrap(),
        }
    }

    async fn get(&self, path: &str) -> (StatusCode, String) {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap();
        (r.status(), r.text().await.unwrap())
    }

    async fn post(
        &self,
        path: &str,
        csrf: Option<&str>,
        bearer: Option<&str>,
    ) -> (StatusCode, Value) {
        let mut req = self.http.post(format!("{}{path}", self.base));
        if let Some(c) = csrf {
            req = req.header("X-CSRF-Token", c);
        }
        if let Some(b) = bearer {
            req = req.bearer_auth(b);
        }
        let r = req.send().await.unwrap();
        let status = r.status();
        let text = r.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// Logs in; the csrf token on success.
    async fn login(&self, user: &str, password: &str) -> (StatusCode, Value) {
        let r = self
            .http
            .post(format!("{}/api/v1/login", self.base))
            .json(&json!({"user": user, "password": password}))
            .send()
            .await
            .unwrap();
        let status = r.status();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    async fn status(&self) -> Value {
        let (code, text) = self.get("/api/v1/status").await;
        assert_eq!(code, StatusCode::OK, "{text}");
        serde_json::from_str(&text).unwrap()
    }

    async fn wait_state(&self, target: &str, state: &str) -> Value {
        let deadline = Instant::now() + WAIT;
        loop {
            let s = self.status().await;
            let t = s["targets"]
                .as_array()
                .unwrap()
                .iter()
                .find(|t| t["name"] == target)
                .cloned()
                .unwrap();
            if t["state"] == state {
                return t;
            }
            assert!(Instant::now() < deadline, "{target} not {state}: {t}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_logs_in_reports_and_commands() {
    let mappings =
        "[[mappings]]\nsource = \"product.category\"\ntargets = [\"order\", \"purchase\"]\n";
    let c = Cluster::start(PRODUCT_SCHEMA, &["order", "purchase"], mappings, 7001).await;
    let port = free_port();
    let admin_hash = rowsync::admin::auth::hash_password("admin-pw").unwrap();
    let viewer_hash = rowsync::admin::auth::hash_password("viewer-pw").unwrap();
    let (token, token_hash) = rowsync::admin::auth::new_token();
    c.append_config(&format!(
        "\n[admin]\nlisten = \"127.0.0.1:{port}\"\n\n[[admin.users]]\nname = \"alice\"\nrole = \"admin\"\npassword_hash = \"{admin_hash}\"\n\n[[admin.users]]\nname = \"victor\"\nrole = \"viewer\"\npassword_hash = \"{viewer_hash}\"\n\n[[admin.tokens]]\nname = \"ci\"\nrole = \"admin\"\ntoken_hash = \"{token_hash}\"\n"
    ));
    let mut src = c.source_conn().await;
    exec(&mut src, &["INSERT INTO category VALUES (1, 'a', NULL)"]).await;
    let rowsync = c.run().await;
    rowsync.wait_log("admin API listening", WAIT).await;
    let api = Api::new(port);

    // Without login: health, readiness and metrics answer; the API does not.
    assert_eq!(api.get("/healthz").await.0, StatusCode::OK);
    let (code, body) = api.get("/api/v1/status").await;
    assert_eq!(code, StatusCode::UNAUTHORIZED, "{body}");
    assert!(serde_json::from_str::<Value>(&body).unwrap()["error"].is_string());

    // Bad requests are JSON errors; wrong passwords are refused.
    let r = api
        .http
        .post(format!("{}/api/v1/login", api.base))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(r.json::<Value>().await.unwrap()["error"].is_string());
    assert_eq!(api.login("alice", "nope").await.0, StatusCode::UNAUTHORIZED);
    let (code, login) = api.login("alice", "admin-pw").await;
    assert_eq!(code, StatusCode::OK, "{login}");
    let csrf = login["csrf_token"].as_str().unwrap().to_owned();

    // Status: both targets streaming, with a checkpoint; the source is connected.
    let order = api.wait_state("order", "streaming").await;
    assert!(order["checkpoint"]["position"].is_string(), "{order}");
    let s = api.status().await;
    assert_eq!(s["source"]["connected"], true, "{s}");
    let deadline = Instant::now() + WAIT;
    while api.get("/readyz").await.0 != StatusCode::OK {
        assert!(Instant::now() < deadline, "never ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Pause needs the CSRF token; paused, order applies nothing and is not ready.
    let (code, _) = api.post("/api/v1/targets/order/pause", None, None).await;
    assert_eq!(code, StatusCode::FORBIDDEN);
    let (code, body) = api
        .post("/api/v1/targets/order/pause", Some(&csrf), None)
        .await;
    assert_eq!(code, StatusCode::NO_CONTENT, "{body}");
    api.wait_state("order", "paused").await;
    assert_eq!(api.get("/readyz").await.0, StatusCode::SERVICE_UNAVAILABLE);
    let (code, _) = api
        .post("/api/v1/targets/order/pause", Some(&csrf), None)
        .await;
    assert_eq!(code, StatusCode::CONFLICT);
    exec(&mut src, &["INSERT INTO category VALUES (2, 'b', 1)"]).await;
    let mut purchase = c.replica_conn(1).await;
    wait_equal(&mut src, &mut purchase, "category", "id", WAIT).await;
    let mut order_db = c.replica_conn(0).await;
    let n: u64 = order_db
        .query_first("SELECT COUNT(*) FROM category")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(n, 1);

    // A token resumes without a session or CSRF token.
    let (code, _) = api
        .post("/api/v1/targets/order/resume", None, Some("wrong"))
        .await;
    assert_eq!(code, StatusCode::UNAUTHORIZED);
    let (code, body) = api
        .post("/api/v1/targets/order/resume", None, Some(&token))
        .await;
    assert_eq!(code, StatusCode::NO_CONTENT, "{body}");
    wait_equal(&mut src, &mut order_db, "category", "id", WAIT).await;

    // Re-copy through the API repairs a replica changed by hand; bad names are 4xx.
    exec(&mut order_db, &["DELETE FROM category WHERE id = 1"]).await;
    let recopy = "/api/v1/targets/order/tables/product.category/recopy";
    let (code, body) = api.post(recopy, Some(&csrf), None).await;
    assert_eq!(code, StatusCode::ACCEPTED, "{body}");
    wait_equal(&mut src, &mut order_db, "category", "id", WAIT).await;
    let (code, _) = api
        .post(
            "/api/v1/targets/order/tables/nodot/recopy",
            Some(&csrf),
            None,
        )
        .await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY);
    let (code, _) = api
        .post("/api/v1/targets/billing/pause", Some(&csrf), None)
        .await;
    assert_eq!(code, StatusCode::NOT_FOUND);
    let (code, _) = api
        .post(
            "/api/v1/targets/order/tables/product.ignored/recopy",
            Some(&csrf),
            None,
        )
        .await;
    assert_eq!(code, StatusCode::CONFLICT);

    // A viewer reads but changes nothing.
    let viewer = Api::new(port);
    let (code, login) = viewer.login("victor", "viewer-pw").await;
    assert_eq!(code, StatusCode::OK);
    let viewer_csrf = login["csrf_token"].as_str().unwrap().to_owned();
    viewer.status().await;
    let (code, body) = viewer
        .post("/api/v1/targets/order/pause", Some(&viewer_csrf), None)
        .await;
    assert_eq!(code, StatusCode::FORBIDDEN, "{body}");

    // Metrics parse as Prometheus text and carry each target's series.
    let (code, text) = api.get("/metrics").await;
    assert_eq!(code, StatusCode::OK);
    let lines = text.lines().map(|l| Ok(l.to_owned()));
    let scrape = prometheus_parse::Scrape::parse(lines).unwrap();
    for name in [
        "rowsync_target_lag_seconds",
        "rowsync_target_rows_applied_total",
        "rowsync_target_state",
        "rowsync_build_info",
    ] {
        assert!(
            scrape.samples.iter().any(|s| s.metric == name),
            "{name} missing:\n{text}"
        );
    }
    assert!(scrape
        .samples
        .iter()
        .any(|s| s.metric == "rowsync_target_state"
            && s.labels.get("target") == Some("order")
            && s.labels.get("state") == Some("streaming")));

    // The OpenAPI document names the endpoints.
    let (code, doc) = api.get("/api/v1/openapi.json").await;
    assert_eq!(code, StatusCode::OK);
    let doc: Value = serde_json::from_str(&doc).unwrap();
    for path in [
        "/api/v1/status",
        "/api/v1/login",
        "/api/v1/targets/{name}/pause",
        "/api/v1/targets/{name}/tables/{table}/recopy",
        "/metrics",
    ] {
        assert!(
            doc["paths"][path].is_object(),
            "{path} missing from the OpenAPI document"
        );
    }

    // Failed logins from one address are throttled: with the wrong password above, five.
    let throttled = Api::new(port);
    for _ in 0..4 {
        assert_eq!(
            throttled.login("alice", "bad").await.0,
            StatusCode::UNAUTHORIZED
        );
    }
    assert_eq!(
        throttled.login("alice", "admin-pw").await.0,
        StatusCode::TOO_MANY_REQUESTS
    );
    let log = rowsync.log_text();
    assert!(!log.contains("admin-pw"), "a password reached the log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_users_the_admin_api_stays_off_and_says_how() {
    let c = Cluster::order_only(7011).await;
    let port = free_port();
    c.append_config(&format!("\n[admin]\nlisten = \"127.0.0.1:{port}\"\n"));
    let rowsync = c.run().await;
    rowsync
        .wait_log("the admin API is off: no user can log in", WAIT)
        .await;
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
}
