//! The web UI: the files of `web-ui/`, embedded in the binary at build time (no Node at build
//! or run time, nothing loaded from elsewhere), served with a Content-Security-Policy that
//! allows this origin only.

use axum::http::header;
use axum::response::IntoResponse;

const INDEX: &str = include_str!("../../web-ui/index.html");
const APP_JS: &str = include_str!("../../web-ui/app.js");
const APP_CSS: &str = include_str!("../../web-ui/app.css");

const CSP: &str = "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'";

fn page(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
}

pub async fn index() -> impl IntoResponse {
    page("text/html; charset=utf-8", INDEX)
}

pub async fn app_js() -> impl IntoResponse {
    page("text/javascript; charset=utf-8", APP_JS)
}

pub async fn app_css() -> impl IntoResponse {
    page("text/css; charset=utf-8", APP_CSS)
}
