//! The operator console at `/ui/` (Vault's `ui = true`): a few pages of
//! plain HTML, CSS and JavaScript modules, embedded in the binary so the
//! server needs no files, no CDN and no network at run time, and building
//! it needs no Node toolchain.
//!
//! The console is a client of the public `/v1/` API on the same origin,
//! like any other: it holds the token in the tab's session storage and
//! nothing here sees it. What this module adds is the page itself and the
//! headers that keep it from being abused: a Content-Security-Policy that
//! allows only this origin's scripts and styles (no inline script, no
//! `eval`, Trusted Types so no string ever becomes HTML), framing denied,
//! no referrer, no caching.
//!
//! `/` and `/ui` redirect to `/ui/`; every `/ui/...` path that is not an
//! asset answers the page, whose script routes on the path (as Vault's
//! `/ui/vault/...` pages).

use axum::Router;
use axum::body::Body;
use axum::extract::Path;
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;

/// The policy every console response carries. `connect-src 'self'` keeps
/// every API call on this origin; `form-action 'none'` means a form can
/// never submit itself (and put a key in a URL) if its script failed.
pub(crate) const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; \
    script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; \
    base-uri 'none'; form-action 'none'; frame-ancestors 'none'; \
    require-trusted-types-for 'script'; trusted-types 'none'";

/// One embedded file, served at `/ui/<path>`.
struct Asset {
    path: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

macro_rules! asset {
    ($path:literal, $content_type:expr) => {
        Asset {
            path: $path,
            content_type: $content_type,
            body: include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/ui/", $path)),
        }
    };
}

const JS: &str = "text/javascript; charset=utf-8";

/// Every file under `examples/ui/` (a test checks none is missing).
const ASSETS: &[Asset] = &[
    asset!("index.html", "text/html; charset=utf-8"),
    asset!("assets/console.css", "text/css; charset=utf-8"),
    asset!("assets/favicon.svg", "image/svg+xml"),
    asset!("assets/app.js", JS),
    asset!("assets/api.js", JS),
    asset!("assets/dom.js", JS),
    asset!("assets/validate.js", JS),
    asset!("assets/pages/init.js", JS),
    asset!("assets/pages/unseal.js", JS),
    asset!("assets/pages/auth.js", JS),
    asset!("assets/pages/cluster.js", JS),
    asset!("assets/pages/secrets.js", JS),
];

/// Adds the console's routes in front of the API router when `enabled`.
pub(crate) fn with_console(api: Router, enabled: bool) -> Router {
    if !enabled {
        return api;
    }
    Router::new()
        .route("/", get(to_console))
        .route("/ui", get(to_console))
        .route("/ui/", get(page))
        .route("/ui/{*path}", get(asset_or_page))
        .merge(api)
}

async fn to_console() -> Response {
    // 307, as Vault answers `/` when its UI is on.
    Redirect::temporary("/ui/").into_response()
}

async fn page() -> Response {
    serve(find("index.html"))
}

async fn asset_or_page(Path(path): Path<String>) -> Response {
    if path.starts_with("assets/") {
        serve(find(&path))
    } else {
        serve(find("index.html"))
    }
}

fn find(path: &str) -> Option<&'static Asset> {
    ASSETS.iter().find(|a| a.path == path)
}

fn serve(asset: Option<&'static Asset>) -> Response {
    let mut response = match asset {
        Some(asset) => {
            let mut r = Response::new(Body::from(asset.body));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(asset.content_type),
            );
            r
        }
        None => {
            let mut r = Response::new(Body::from("not found\n"));
            *r.status_mut() = StatusCode::NOT_FOUND;
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            );
            r
        }
    };
    let headers = response.headers_mut();
    for (name, value) in [
        (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::CACHE_CONTROL, "no-store"),
        (
            HeaderName::from_static("cross-origin-opener-policy"),
            "same-origin",
        ),
        (
            HeaderName::from_static("cross-origin-resource-policy"),
            "same-origin",
        ),
        (
            HeaderName::from_static("permissions-policy"),
            "camera=(), microphone=(), geolocation=(), payment=(), usb=()",
        ),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::{Method, Request};
    use tower::ServiceExt as _;

    fn app() -> Router {
        let api = Router::new().fallback(|| async { (StatusCode::IM_A_TEAPOT, "api") });
        with_console(api, true)
    }

    async fn get_path(app: Router, method: Method, path: &str) -> Response {
        let request = Request::builder()
            .method(method)
            .uri(path)
            .body(Body::empty())
            .unwrap();
        app.oneshot(request).await.unwrap()
    }

    fn files_under(dir: &std::path::Path, prefix: &str, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            let name = format!("{prefix}{}", entry.file_name().to_string_lossy());
            if entry.file_type().unwrap().is_dir() {
                files_under(&entry.path(), &format!("{name}/"), out);
            } else {
                out.push(name);
            }
        }
    }

    #[test]
    fn every_file_in_the_ui_folder_is_embedded() {
        let mut files = Vec::new();
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("ui");
        files_under(&root, "", &mut files);
        files.sort();
        let mut embedded: Vec<String> = ASSETS.iter().map(|a| a.path.to_owned()).collect();
        embedded.sort();
        assert_eq!(files, embedded);
    }

    #[test]
    fn no_page_has_inline_script_or_style() {
        for asset in ASSETS.iter().filter(|a| a.path.ends_with(".html")) {
            let html = std::str::from_utf8(asset.body).unwrap();
            for tag in html
                .split('<')
                .skip(1)
                .map(|t| t.split('>').next().unwrap())
            {
                if tag.starts_with("script") {
                    assert!(tag.contains(" src="), "inline script in {}", asset.path);
                }
                assert!(!tag.starts_with("style"), "inline style in {}", asset.path);
                for attr in tag.split_whitespace().skip(1) {
                    let name = attr.split('=').next().unwrap();
                    assert!(
                        name != "style" && !name.starts_with("on"),
                        "{name} attribute in {}",
                        asset.path
                    );
                }
            }
        }
    }

    #[tokio::test]
    async fn root_and_bare_ui_redirect_to_the_console() {
        for path in ["/", "/ui"] {
            let r = get_path(app(), Method::GET, path).await;
            assert_eq!(r.status(), StatusCode::TEMPORARY_REDIRECT);
            assert_eq!(r.headers()[header::LOCATION], "/ui/");
        }
    }

    #[tokio::test]
    async fn pages_and_assets_carry_the_security_headers() {
        for path in [
            "/ui/",
            "/ui/vault/unseal",
            "/ui/assets/app.js",
            "/ui/assets/nope.js",
        ] {
            let r = get_path(app(), Method::GET, path).await;
            let h = r.headers();
            assert_eq!(h[header::CONTENT_SECURITY_POLICY], CONTENT_SECURITY_POLICY);
            assert_eq!(h[header::X_FRAME_OPTIONS], "DENY");
            assert_eq!(h[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
            assert_eq!(h[header::REFERRER_POLICY], "no-referrer");
            assert_eq!(h[header::CACHE_CONTROL], "no-store");
        }
    }

    #[tokio::test]
    async fn console_paths_answer_the_page_and_assets_their_type() {
        let r = get_path(app(), Method::GET, "/ui/vault/secrets/kv/show/a").await;
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(
            r.headers()[header::CONTENT_TYPE],
            "text/html; charset=utf-8"
        );
        let r = get_path(app(), Method::HEAD, "/ui/assets/console.css").await;
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()[header::CONTENT_TYPE], "text/css; charset=utf-8");
        let r = get_path(app(), Method::GET, "/ui/assets/../index.html").await;
        assert_ne!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let r = get_path(app(), Method::GET, "/ui/assets/missing.js").await;
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
    }

    #[tokio::test]
    async fn the_api_is_untouched_and_the_console_can_be_off() {
        let r = get_path(app(), Method::GET, "/v1/sys/health").await;
        assert_eq!(r.status(), StatusCode::IM_A_TEAPOT);
        let off = with_console(
            Router::new().fallback(|| async { StatusCode::NOT_FOUND }),
            false,
        );
        let r = get_path(off, Method::GET, "/ui/").await;
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
    }
}
