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
    let (token, token_hash) = rowsync::admin::auth::new_token();
    let port = c.enable_admin(&[
        Login::User {
            name: "alice",
            role: "admin",
            password: "admin-pw",
        },
        Login::User {
            name: "victor",
            role: "viewer",
            password: "viewer-pw",
        },
        Login::Token {
            name: "ci",
            role: "admin",
            token_hash: &token_hash,
        },
    ]);
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
    // Changes applied per table and kind, in the metrics and the status.
    let inserted = scrape.samples.iter().find(|s| {
        s.metric == "rowsync_table_changes_applied_total"
            && s.labels.get("target") == Some("purchase")
            && s.labels.get("table") == Some("product.category")
            && s.labels.get("kind") == Some("insert")
    });
    assert!(
        matches!(inserted.map(|s| &s.value), Some(prometheus_parse::Value::Counter(n)) if *n >= 1.0),
        "{text}"
    );
    let commits = scrape.samples.iter().find(|s| {
        s.metric == "rowsync_target_commit_seconds" && s.labels.get("target") == Some("purchase")
    });
    assert!(
        matches!(commits.map(|s| &s.value), Some(prometheus_parse::Value::Histogram(h)) if h.iter().any(|b| b.count >= 1.0)),
        "{text}"
    );
    assert!(
        text.contains("rowsync_source_binlog_bytes_total{target=\"purchase\"}"),
        "{text}"
    );
    // Every apply lane reports the time it was busy.
    let lanes = scrape.samples.iter().filter(|s| {
        s.metric == "rowsync_apply_lane_busy_seconds_total"
            && s.labels.get("target") == Some("purchase")
            && matches!(s.value, prometheus_parse::Value::Counter(n) if n > 0.0)
    });
    assert!(lanes.count() >= 1, "{text}");
    let purchase_view = api.wait_state("purchase", "streaming").await;
    assert!(
        purchase_view["applied"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["table"] == "product.category" && a["inserts"].as_u64() >= Some(1)),
        "{purchase_view}"
    );

    // While the source is idle, lag stays near 0: heartbeats say the target has everything.
    let idle_since = Instant::now();
    while idle_since.elapsed() < Duration::from_secs(20) {
        let (_, text) = api.get("/metrics").await;
        let scrape =
            prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).unwrap();
        let lags: Vec<_> = scrape
            .samples
            .iter()
            .filter(|s| s.metric == "rowsync_target_lag_seconds")
            .collect();
        assert_eq!(lags.len(), 2, "{text}");
        for s in lags {
            match s.value {
                prometheus_parse::Value::Gauge(v) => {
                    assert!(
                        v <= 2.0,
                        "lag grew to {v} s on an idle source after {:?}",
                        idle_since.elapsed()
                    )
                }
                ref other => panic!("{other:?}"),
            }
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }

    // The lag chart's history: samples every 2 s, kept by the daemon.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (code, lag) = api.get("/api/v1/lag").await;
    assert_eq!(code, StatusCode::OK);
    let lag: Value = serde_json::from_str(&lag).unwrap();
    assert!(
        lag.as_array()
            .unwrap()
            .iter()
            .any(|s| s["target"] == "order" && !s["points"].as_array().unwrap().is_empty()),
        "{lag}"
    );

    // The OpenAPI document names the endpoints.
    let (code, doc) = api.get("/api/v1/openapi.json").await;
    assert_eq!(code, StatusCode::OK);
    let doc: Value = serde_json::from_str(&doc).unwrap();
    for path in [
        "/api/v1/status",
        "/api/v1/login",
        "/api/v1/targets/{name}/pause",
        "/api/v1/targets/{name}/tables/{table}/recopy",
        "/api/v1/lag",
        "/metrics",
    ] {
        assert!(
            doc["paths"][path].is_object(),
            "{path} missing from the OpenAPI document"
        );
    }

    // Every 4xx is JSON: a method a path lacks, a bad query, an empty id.
    let (code, body) = api.get("/api/v1/login").await;
    assert_eq!(code, StatusCode::METHOD_NOT_ALLOWED);
    assert!(serde_json::from_str::<Value>(&body).unwrap()["error"].is_string());
    let (code, body) = api
        .send(
            reqwest::Method::POST,
            "/api/v1/mappings?dry_run=perhaps",
            &csrf,
            None,
            Some(json!({"source": "product.batch", "targets": ["order"]})),
        )
        .await;
    assert_eq!(code, StatusCode::BAD_REQUEST, "{body}");
    assert!(body["error"].is_string());
    let (code, body) = api
        .send(
            reqwest::Method::POST,
            "/api/v1/mappings?dry_run=true",
            &csrf,
            None,
            Some(json!({"id": " ", "source": "product.batch", "targets": ["order"]})),
        )
        .await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "{body}");

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
    let port = c.enable_admin(&[]);
    let rowsync = c.run().await;
    rowsync
        .wait_log("the admin API is off: no user can log in", WAIT)
        .await;
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
}

/// A cluster with the admin API on a free port and user alice (admin); returns the API logged
/// in and its CSRF token.
async fn admin_cluster(mappings: &str, server_id: u32) -> (Cluster, Rowsync, Api, String) {
    let c = Cluster::start(PRODUCT_SCHEMA, &["order", "purchase"], mappings, server_id).await;
    let port = c.enable_admin(&[Login::User {
        name: "alice",
        role: "admin",
        password: "admin-pw",
    }]);
    let rowsync = c.run().await;
    rowsync.wait_log("admin API listening", WAIT).await;
    let api = Api::new(port);
    let (code, login) = api.login("alice", "admin-pw").await;
    assert_eq!(code, StatusCode::OK, "{login}");
    let csrf = login["csrf_token"].as_str().unwrap().to_owned();
    (c, rowsync, api, csrf)
}

impl Api {
    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        csrf: &str,
        if_match: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .header("X-CSRF-Token", csrf);
        if let Some(tag) = if_match {
            req = req.header("If-Match", tag);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r = req.send().await.unwrap();
        let status = r.status();
        (status, r.json().await.unwrap_or(Value::Null))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mappings_are_edited_in_the_file_and_applied_live() {
    let mappings = "# Product categories, everywhere.\n[[mappings]]\nsource = \"product.category\"\ntargets = [\"order\", \"purchase\"]\n";
    let (c, rowsync, api, csrf) = admin_cluster(mappings, 7021).await;
    let mut src = c.source_conn().await;
    exec(
        &mut src,
        &[
            "INSERT INTO batch VALUES (1, 1, 5, '2024-01-01 00:00:00'), (1, 2, 50, '2024-01-02 00:00:00')",
        ],
    )
    .await;
    let (code, list) = api.get("/api/v1/mappings").await;
    assert_eq!(code, StatusCode::OK);
    let list: Value = serde_json::from_str(&list).unwrap();
    assert_eq!(list["writable"], true, "{list}");
    assert_eq!(list["mappings"][0]["id"], "product.category");
    let etag = list["etag"].as_str().unwrap().to_owned();

    // The editor's table list has the batch table with its key.
    let (_, tables) = api.get("/api/v1/source/tables").await;
    let tables: Value = serde_json::from_str(&tables).unwrap();
    let batch = tables
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["table"] == "product.batch")
        .unwrap();
    assert_eq!(batch["primary_key"], json!(["product_id", "batch_no"]));

    // A dry run describes and changes nothing; an invalid filter is a 422 naming the key.
    let new = json!({"source": "product.batch", "targets": ["purchase"]});
    let before = std::fs::read_to_string(&c.cfg).unwrap();
    let post = reqwest::Method::POST;
    let (code, preview) = api
        .send(
            post.clone(),
            "/api/v1/mappings?dry_run=true",
            &csrf,
            None,
            Some(new.clone()),
        )
        .await;
    assert_eq!(code, StatusCode::OK, "{preview}");
    assert_eq!(preview["applied"], false);
    assert_eq!(preview["effects"][0]["target"], "purchase");
    assert!(preview["effects"][0]["effect"]
        .as_str()
        .unwrap()
        .contains("copied online"));
    assert_eq!(std::fs::read_to_string(&c.cfg).unwrap(), before);
    let bad = json!({"source": "product.batch", "targets": ["purchase"], "where": "qty = = 1"});
    let (code, err) = api
        .send(post.clone(), "/api/v1/mappings", &csrf, None, Some(bad))
        .await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "{err}");
    assert_eq!(err["field"], "mappings[1].where", "{err}");

    // Names are checked against the source's schema.
    for (body, field, needle) in [
        (
            json!({"source": "product.batch", "targets": ["purchase"], "columns": ["product_id", "batch_no", "nope"]}),
            "columns",
            "no column `nope`",
        ),
        (
            json!({"source": "product.batch", "targets": ["purchase"], "columns": ["product_id", "qty"]}),
            "columns",
            "primary key column `batch_no`",
        ),
        (
            json!({"source": "product.batch", "targets": ["purchase"], "where": "colour = 'red'"}),
            "where",
            "column `colour`",
        ),
    ] {
        let (code, err) = api
            .send(
                reqwest::Method::POST,
                "/api/v1/mappings?dry_run=true",
                &csrf,
                None,
                Some(body),
            )
            .await;
        assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "{err}");
        assert_eq!(err["field"], field, "{err}");
        assert!(err["error"].as_str().unwrap().contains(needle), "{err}");
    }

    // Created: written into the file (comments kept, an old copy beside it), copied, streamed.
    let (code, made) = api
        .send(
            post.clone(),
            "/api/v1/mappings",
            &csrf,
            Some(&etag),
            Some(new.clone()),
        )
        .await;
    assert_eq!(code, StatusCode::CREATED, "{made}");
    let text = std::fs::read_to_string(&c.cfg).unwrap();
    assert!(
        text.contains("# Product categories, everywhere.")
            && text.contains("id = \"product.batch\""),
        "{text}"
    );
    assert!(c.cfg.with_extension("toml.bak").exists());
    let mut purchase = c.replica_conn(1).await;
    wait_equal(
        &mut src,
        &mut purchase,
        "batch",
        "product_id, batch_no",
        WAIT,
    )
    .await;

    // The old ETag is stale now.
    let (code, _) = api
        .send(
            post,
            "/api/v1/mappings",
            &csrf,
            Some(&etag),
            Some(json!({"source": "product.product", "targets": ["order"]})),
        )
        .await;
    assert_eq!(code, StatusCode::CONFLICT);

    // Changed: copied again under the new filter.
    let changed = json!({"source": "product.batch", "targets": ["purchase"], "where": "qty > 10"});
    let (code, done) = api
        .send(
            reqwest::Method::PUT,
            "/api/v1/mappings/product.batch",
            &csrf,
            None,
            Some(changed),
        )
        .await;
    assert_eq!(code, StatusCode::OK, "{done}");
    let filtered = "SELECT * FROM batch WHERE qty > 10 ORDER BY product_id, batch_no";
    let all = "SELECT * FROM batch ORDER BY product_id, batch_no";
    wait_same_rows(&mut src, filtered, &mut purchase, all, WAIT).await;

    // Deleted: it stops applying; the replica table stays.
    let (code, gone) = api
        .send(
            reqwest::Method::DELETE,
            "/api/v1/mappings/product.batch",
            &csrf,
            None,
            None,
        )
        .await;
    assert_eq!(code, StatusCode::OK, "{gone}");
    assert!(!std::fs::read_to_string(&c.cfg)
        .unwrap()
        .contains("product.batch"));
    rowsync
        .wait_log("no mapping fills this replica table", WAIT)
        .await;
    exec(
        &mut src,
        &["INSERT INTO batch VALUES (2, 1, 99, '2024-01-03 00:00:00')"],
    )
    .await;
    exec(&mut src, &["INSERT INTO category VALUES (7, 'g', NULL)"]).await;
    wait_equal(&mut src, &mut purchase, "category", "id", WAIT).await;
    let n: u64 = purchase
        .query_first("SELECT COUNT(*) FROM batch")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(n, 1, "a deleted mapping kept applying");
    let (code, _) = api
        .send(
            reqwest::Method::DELETE,
            "/api/v1/mappings/product.batch",
            &csrf,
            None,
            None,
        )
        .await;
    assert_eq!(code, StatusCode::NOT_FOUND);

    // Deleted with its replica table: the table rowsync filled goes too.
    let copy = json!({"source": "product.category", "targets": ["purchase"], "table": "cat_copy"});
    let (code, made) = api
        .send(
            reqwest::Method::POST,
            "/api/v1/mappings",
            &csrf,
            None,
            Some(copy),
        )
        .await;
    assert_eq!(code, StatusCode::CREATED, "{made}");
    let id = made["mapping"]["id"].as_str().unwrap().to_owned();
    wait_same_rows(
        &mut src,
        "SELECT * FROM category ORDER BY id",
        &mut purchase,
        "SELECT * FROM cat_copy ORDER BY id",
        WAIT,
    )
    .await;
    let (code, gone) = api
        .send(
            reqwest::Method::DELETE,
            &format!("/api/v1/mappings/{id}?drop_replica=true"),
            &csrf,
            None,
            None,
        )
        .await;
    assert_eq!(code, StatusCode::OK, "{gone}");
    assert!(
        gone["effects"]
            .to_string()
            .contains("replica table `cat_copy` dropped"),
        "{gone}"
    );
    let left: Vec<String> = purchase
        .query("SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'cat_copy'")
        .await
        .unwrap();
    assert!(left.is_empty(), "cat_copy was not dropped");

    // The audit log says who did what.
    let (_, audit) = api.get("/api/v1/audit").await;
    let audit: Value = serde_json::from_str(&audit).unwrap();
    let actions: Vec<&str> = audit
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        [
            "mapping.delete",
            "mapping.create",
            "mapping.delete",
            "mapping.update",
            "mapping.create"
        ],
        "{audit}"
    );
    assert!(audit
        .as_array()
        .unwrap()
        .iter()
        .all(|e| e["user"] == "alice"));
    assert!(!serde_json::to_string(&audit).unwrap().contains("admin-pw"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edit_goes_to_the_mappings_file_when_there_is_one() {
    let mappings = "[[mappings]]\nsource = \"product.category\"\ntargets = [\"order\"]\n";
    let c = Cluster::start(PRODUCT_SCHEMA, &["order", "purchase"], mappings, 7051).await;
    // The mappings move to their own file.
    let text = std::fs::read_to_string(&c.cfg).unwrap();
    let (head, maps) = text.split_at(text.find("[[mappings]]").unwrap());
    let maps_path = c.dir.path().join("mappings.toml");
    std::fs::write(&maps_path, format!("# Owned by the data team.\n{maps}")).unwrap();
    std::fs::write(&c.cfg, format!("mappings_file = \"mappings.toml\"\n{head}")).unwrap();
    let port = c.enable_admin(&[Login::User {
        name: "alice",
        role: "admin",
        password: "admin-pw",
    }]);
    let main_before = std::fs::read_to_string(&c.cfg).unwrap();
    let mut src = c.source_conn().await;
    exec(&mut src, &["INSERT INTO category VALUES (1, 'a', NULL)"]).await;
    let rowsync = c.run().await;
    rowsync.wait_log("admin API listening", WAIT).await;
    let api = Api::new(port);
    let (_, login) = api.login("alice", "admin-pw").await;
    let csrf = login["csrf_token"].as_str().unwrap().to_owned();

    let (code, made) = api
        .send(
            reqwest::Method::PUT,
            "/api/v1/mappings/product.category",
            &csrf,
            None,
            Some(json!({"source": "product.category", "targets": ["order", "purchase"]})),
        )
        .await;
    assert_eq!(code, StatusCode::OK, "{made}");
    assert_eq!(std::fs::read_to_string(&c.cfg).unwrap(), main_before);
    let maps = std::fs::read_to_string(&maps_path).unwrap();
    assert!(
        maps.contains("# Owned by the data team.") && maps.contains("\"purchase\""),
        "{maps}"
    );
    let mut purchase = c.replica_conn(1).await;
    wait_equal(&mut src, &mut purchase, "category", "id", WAIT).await;

    // A file that cannot be written (root ignores permissions, so: immutable) is shown
    // read-only, with the reason, and a change is refused without touching anything.
    struct Immutable<'a>(&'a std::path::Path);
    impl Drop for Immutable<'_> {
        fn drop(&mut self) {
            let _ = std::process::Command::new("chattr")
                .arg("-i")
                .arg(self.0)
                .status();
        }
    }
    let made = std::process::Command::new("chattr")
        .arg("+i")
        .arg(&maps_path)
        .status()
        .expect("chattr");
    assert!(made.success(), "this test needs chattr +i (ext4, root)");
    let _undo = Immutable(&maps_path);
    let (_, list) = api.get("/api/v1/mappings").await;
    let list: Value = serde_json::from_str(&list).unwrap();
    assert_eq!(list["writable"], false, "{list}");
    assert!(
        list["read_only_reason"]
            .as_str()
            .unwrap()
            .contains("not writable"),
        "{list}"
    );
    let before = std::fs::read_to_string(&maps_path).unwrap();
    let (code, refused) = api
        .send(
            reqwest::Method::DELETE,
            "/api/v1/mappings/product.category",
            &csrf,
            None,
            None,
        )
        .await;
    assert_eq!(code, StatusCode::CONFLICT, "{refused}");
    assert!(
        refused["error"].as_str().unwrap().contains("read-only"),
        "{refused}"
    );
    assert_eq!(std::fs::read_to_string(&maps_path).unwrap(), before);
}
