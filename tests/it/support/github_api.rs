//! A local server that answers as GitHub's packages API does, for the one client we
//! cannot point at GitHub here: container package versions of an organization, paginated
//! with `Link` (per_page, page), `x-ratelimit-*` headers, one 429 with `retry-after` on the
//! second page, a 403 for a token without the packages scopes, and DELETE recorded.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::AsyncWriteExt as _;
use tokio::net::TcpStream;

use super::http::{read_request, serve_loopback};

/// The good token.
pub const TOKEN: &str = "ghp_test_token_with_packages_scope";

/// A running fake API; stops with its runtime.
pub struct GithubApi {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// Version ids deleted, in order.
    pub deleted: Arc<Mutex<Vec<u64>>>,
    _runtime: tokio::runtime::Runtime,
}

/// The fake package: `versions` versions of `org/package`, version i has digest
/// sha256(i), tag `t{i}` (the newest `tagged_newest` carry the tags given instead), and was
/// created `i` minutes before 2026-01-01.
#[derive(Clone)]
pub struct Package {
    /// Owner (an organization).
    pub org: String,
    /// Package name.
    pub name: String,
    /// How many versions.
    pub versions: u64,
    /// Tags for the first (newest) versions.
    pub tags: Vec<Vec<String>>,
    /// Digests for the first (newest) versions, instead of sha256(i).
    pub digests: Vec<String>,
}

impl GithubApi {
    /// Serves `package`.
    pub fn start(package: Package) -> GithubApi {
        let deleted: Arc<Mutex<Vec<u64>>> = Arc::default();
        let throttled = Arc::new(AtomicBool::new(false));
        let (d, package) = (deleted.clone(), Arc::new(package));
        let (runtime, addr) = serve_loopback(move |client, me| {
            let (d, p, t) = (d.clone(), package.clone(), throttled.clone());
            async move { serve(client, &format!("http://{me}"), &p, &d, &t).await }
        });
        GithubApi { url: format!("http://{addr}"), deleted, _runtime: runtime }
    }
}

fn digest(i: u64) -> String {
    use sha2::Digest as _;
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(i.to_string().as_bytes())))
}

fn created(i: u64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_767_225_600 - i * 60);
    humantime::format_rfc3339_seconds(t).to_string()
}

async fn serve(mut client: TcpStream, url: &str, p: &Package, deleted: &Mutex<Vec<u64>>, throttled: &AtomicBool) -> std::io::Result<()> {
    loop {
        let Some((head, _body)) = read_request(&mut client).await? else { return Ok(()) };
        let first = head.lines().next().unwrap_or_default().to_owned();
        let mut parts = first.split_whitespace();
        let method = parts.next().unwrap_or_default().to_owned();
        let target = parts.next().unwrap_or_default().to_owned();
        let authorized = head.lines().any(|l| l.to_ascii_lowercase().starts_with("authorization:") && l.contains(TOKEN));
        let base = format!("/orgs/{}/packages/container/{}/versions", p.org, p.name);
        let (status, extra, body) = if !authorized {
            (
                "403 Forbidden",
                String::new(),
                r#"{"message":"You need at least read:packages scope to list packages.","documentation_url":"https://docs.github.com/rest/packages/packages#list-package-versions-for-a-package-owned-by-an-organization","status":"403"}"#.to_owned(),
            )
        } else if method == "GET" && target.starts_with(&base) {
            let query = target.split('?').nth(1).unwrap_or("");
            let param = |k: &str| query.split('&').find_map(|kv| kv.strip_prefix(&format!("{k}="))).and_then(|v| v.parse::<u64>().ok());
            let per_page = param("per_page").unwrap_or(30).min(100);
            let page = param("page").unwrap_or(1);
            if page == 2 && !throttled.swap(true, Ordering::Relaxed) {
                (
                    "429 Too Many Requests",
                    "retry-after: 1\r\nx-ratelimit-remaining: 0\r\n".to_owned(),
                    r#"{"message":"You have exceeded a secondary rate limit."}"#.to_owned(),
                )
            } else {
                let pages = p.versions.div_ceil(per_page).max(1);
                let start = (page - 1) * per_page;
                let items: Vec<String> = (start..(start + per_page).min(p.versions))
                    .map(|i| {
                        let tags = p.tags.get(i as usize).cloned().unwrap_or_else(|| vec![format!("t{i}")]);
                        let tags = tags.iter().map(|t| format!("\"{t}\"")).collect::<Vec<_>>().join(",");
                        let id = i + 1;
                        format!(
                            r#"{{"id":{id},"name":"{}","url":"{url}/orgs/{o}/packages/container/{n}/versions/{id}","package_html_url":"https://github.com/orgs/{o}/packages/container/package/{n}","created_at":"{c}","updated_at":"{c}","html_url":"https://github.com/orgs/{o}/packages/container/{n}/{id}","metadata":{{"package_type":"container","container":{{"tags":[{tags}]}}}}}}"#,
                            p.digests.get(i as usize).cloned().unwrap_or_else(|| digest(i)),
                            o = p.org,
                            n = p.name,
                            c = created(i)
                        )
                    })
                    .collect();
                let mut links = Vec::new();
                if page < pages {
                    links.push(format!("<{url}{base}?per_page={per_page}&page={}>; rel=\"next\"", page + 1));
                    links.push(format!("<{url}{base}?per_page={per_page}&page={pages}>; rel=\"last\""));
                }
                if page > 1 {
                    links.push(format!("<{url}{base}?per_page={per_page}&page=1>; rel=\"first\""));
                }
                let link = if links.is_empty() { String::new() } else { format!("link: {}\r\n", links.join(", ")) };
                (
                    "200 OK",
                    format!("{link}x-ratelimit-limit: 5000\r\nx-ratelimit-remaining: 4999\r\nx-ratelimit-reset: 1999999999\r\n"),
                    format!("[{}]", items.join(",")),
                )
            }
        } else if method == "DELETE" && target.starts_with(&format!("{base}/")) {
            let id: u64 = target.rsplit('/').next().and_then(|s| s.parse().ok()).unwrap_or(0);
            deleted.lock().unwrap().push(id);
            ("204 No Content", String::new(), String::new())
        } else {
            ("404 Not Found", String::new(), r#"{"message":"Not Found"}"#.to_owned())
        };
        let answer = format!(
            "HTTP/1.1 {status}\r\ncontent-type: application/json; charset=utf-8\r\n{extra}content-length: {}\r\n\r\n{body}",
            body.len()
        );
        client.write_all(answer.as_bytes()).await?;
    }
}
