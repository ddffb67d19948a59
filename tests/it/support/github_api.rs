//! A local server that answers as GitHub's packages API does, for the one client we cannot
//! point at GitHub here: container package versions of an organization, newest first,
//! paginated with `Link` (`per_page`, `page`; `first`/`prev`/`next`/`last`), deletions by id
//! that later pages reflect, and GitHub's limits with GitHub's own headers and error bodies:
//! the hourly budget (`x-ratelimit-limit|remaining|used|reset|resource`, 403 with
//! `x-ratelimit-remaining: 0` once spent), the secondary limit (900 points a minute per
//! endpoint, a DELETE 5, a GET 1; at most 100 requests in flight; 403 "You have exceeded a
//! secondary rate limit" with `retry-after`), chosen list pages answering 500 once, and a
//! 403 for a token without the packages scopes. Its clock runs `scale` times faster, as the
//! binary's does under `SPLIT_BUILD_CLOCK_SCALE` (seconds since the epoch times the scale).

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use tokio::io::AsyncWriteExt as _;
use tokio::net::TcpStream;

use super::http::{read_request, serve_loopback};

/// The variable that scales the binary's clock (`adapters::clock`).
pub const SCALE_VAR: &str = "SPLIT_BUILD_CLOCK_SCALE";

/// The good token.
pub const TOKEN: &str = "ghp_test_token_with_packages_scope";

/// GitHub's body for a spent hourly budget.
const PRIMARY_BODY: &str = r#"{"message":"API rate limit exceeded for installation ID 4711. If you reach out to GitHub Support for help, please include the request ID 0400:3F1A:1C2B3D:4E5F60:65A1B2C3 and timestamp 2026-12-01 03:17:00 UTC.","documentation_url":"https://docs.github.com/rest/overview/rate-limits-for-the-rest-api","status":"403"}"#;
/// GitHub's body for the secondary limit.
const SECONDARY_BODY: &str = r#"{"message":"You have exceeded a secondary rate limit. Please wait a few minutes before you try again. If you reach out to GitHub Support for help, please include the request ID 0400:3F1A:1C2B3D:4E5F61:65A1B2C4.","documentation_url":"https://docs.github.com/free-pro-team@latest/rest/overview/rate-limits-for-the-rest-api#about-secondary-rate-limits","status":"403"}"#;

/// The fake package: `versions` versions of `org/package`, version i has digest
/// sha256(i), tag `t{i}` (the newest `tags` carry the tags given instead), and was
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

/// GitHub's limits as the double keeps them.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Requests an hour (`GITHUB_TOKEN`: 1,000; a personal token: 5,000); None: no limit.
    pub hourly: Option<u64>,
    /// Secondary points a minute per endpoint (GitHub: 900).
    pub points_per_minute: u32,
    /// Requests in flight (GitHub: 100).
    pub in_flight: usize,
    /// The clock runs this many times faster than the real one.
    pub scale: f64,
    /// Every n-th request is refused with a secondary-limit 403 and `retry-after: 60`
    /// (GitHub may answer so under load whatever a client does).
    pub secondary_every: Option<u64>,
    /// List pages that answer 500 the first time they are asked for.
    pub failing_pages: &'static [u64],
    /// The second list page answers 429 with `retry-after: 1` once.
    pub throttle_page_two: bool,
}

impl Limits {
    /// No limits, the real clock, one 429 on the second page (as the old double did).
    pub const OPEN: Limits = Limits {
        hourly: None,
        points_per_minute: u32::MAX,
        in_flight: usize::MAX,
        scale: 1.0,
        secondary_every: None,
        failing_pages: &[],
        throttle_page_two: true,
    };

    /// A workflow's `GITHUB_TOKEN` (1,000 requests an hour), GitHub's secondary limits, some
    /// failing pages, on a clock `scale` times faster.
    pub fn github_token(scale: f64) -> Limits {
        Limits {
            hourly: Some(1000),
            points_per_minute: 900,
            in_flight: 100,
            scale,
            secondary_every: Some(997),
            failing_pages: &[3, 17, 40],
            throttle_page_two: false,
        }
    }

    /// A personal token (5,000 requests an hour), otherwise as [`Limits::github_token`].
    pub fn personal_token(scale: f64) -> Limits {
        Limits { hourly: Some(5000), ..Limits::github_token(scale) }
    }
}

/// What the double saw.
#[derive(Default, Debug)]
pub struct Seen {
    /// Version ids deleted, in order.
    pub deleted: Vec<u64>,
    /// When the first deletion arrived.
    pub first_delete: Option<Instant>,
    /// Requests answered, in all.
    pub requests: u64,
    /// 403s for a spent hourly budget.
    pub primary_refused: u64,
    /// 403s for the secondary limit.
    pub secondary_refused: u64,
    /// 500s served.
    pub server_errors: u64,
    /// The most requests in flight at once.
    pub max_in_flight: usize,
}

struct State {
    /// Live versions (index i: the i-th newest at the start), ascending.
    live: Vec<u64>,
    window_start: f64,
    used: u64,
    /// Secondary points: (when, points, endpoint is DELETE).
    points: std::collections::VecDeque<(f64, u32, bool)>,
    failed_pages: BTreeSet<u64>,
    throttled: bool,
    seen: Seen,
}

/// A running fake API; stops with its runtime.
pub struct GithubApi {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// Version ids deleted, in order.
    pub deleted: Arc<Mutex<Vec<u64>>>,
    state: Arc<Mutex<State>>,
    _runtime: tokio::runtime::Runtime,
}

impl GithubApi {
    /// Serves `package` without limits on the real clock.
    pub fn start(package: Package) -> GithubApi {
        GithubApi::with_limits(package, Limits::OPEN)
    }

    /// Serves `package` under `limits`.
    pub fn with_limits(package: Package, limits: Limits) -> GithubApi {
        let state = Arc::new(Mutex::new(State {
            live: (0..package.versions).collect(),
            window_start: f64::NEG_INFINITY,
            used: 0,
            points: Default::default(),
            failed_pages: BTreeSet::new(),
            throttled: false,
            seen: Seen::default(),
        }));
        let deleted: Arc<Mutex<Vec<u64>>> = Arc::default();
        let in_flight = Arc::new(AtomicUsize::new(0));
        let (s, d, package) = (state.clone(), deleted.clone(), Arc::new(package));
        let (runtime, addr) = serve_loopback(move |client, me| {
            let (s, d, p, f) = (s.clone(), d.clone(), package.clone(), in_flight.clone());
            async move { serve(client, &format!("http://{me}"), &p, &limits, &s, &d, &f).await }
        });
        GithubApi { url: format!("http://{addr}"), deleted, state, _runtime: runtime }
    }

    /// A day passes between scheduled runs: the hourly and secondary windows are fresh.
    pub fn next_day(&self) {
        let mut s = self.state.lock().unwrap();
        s.window_start = f64::NEG_INFINITY;
        s.used = 0;
        s.points.clear();
    }

    /// Versions still there.
    pub fn live(&self) -> usize {
        self.state.lock().unwrap().live.len()
    }

    /// What it saw so far (the deletions are taken out).
    pub fn seen(&self) -> Seen {
        std::mem::take(&mut self.state.lock().unwrap().seen)
    }
}

fn digest(i: u64) -> String {
    use sha2::Digest as _;
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(i.to_string().as_bytes())))
}

fn created(i: u64) -> String {
    let t = UNIX_EPOCH + std::time::Duration::from_secs(1_767_225_600 - i * 60);
    humantime::format_rfc3339_seconds(t).to_string()
}

/// The double's clock: real seconds since the epoch times the scale.
fn now(scale: f64) -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs_f64() * scale
}

struct Answer {
    status: &'static str,
    headers: String,
    body: String,
}

impl Answer {
    fn new(status: &'static str, body: &str) -> Answer {
        Answer { status, headers: String::new(), body: body.to_owned() }
    }
}

async fn serve(
    mut client: TcpStream,
    url: &str,
    p: &Package,
    limits: &Limits,
    state: &Mutex<State>,
    deleted: &Mutex<Vec<u64>>,
    in_flight: &AtomicUsize,
) -> std::io::Result<()> {
    loop {
        let Some((head, _body)) = read_request(&mut client).await? else { return Ok(()) };
        let flying = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        let answer = answer(&head, url, p, limits, state, deleted, flying);
        in_flight.fetch_sub(1, Ordering::SeqCst);
        let text = format!(
            "HTTP/1.1 {}\r\ncontent-type: application/json; charset=utf-8\r\nx-github-api-version-selected: 2022-11-28\r\n{}content-length: {}\r\n\r\n{}",
            answer.status,
            answer.headers,
            answer.body.len(),
            answer.body
        );
        client.write_all(text.as_bytes()).await?;
    }
}

fn answer(head: &str, url: &str, p: &Package, limits: &Limits, state: &Mutex<State>, deleted: &Mutex<Vec<u64>>, flying: usize) -> Answer {
    let first = head.lines().next().unwrap_or_default().to_owned();
    let mut parts = first.split_whitespace();
    let method = parts.next().unwrap_or_default().to_owned();
    let target = parts.next().unwrap_or_default().to_owned();
    let authorized = head.lines().any(|l| l.to_ascii_lowercase().starts_with("authorization:") && l.contains(TOKEN));
    let base = format!("/orgs/{}/packages/container/{}/versions", p.org, p.name);
    let mut s = state.lock().unwrap();
    s.seen.requests += 1;
    s.seen.max_in_flight = s.seen.max_in_flight.max(flying);
    if !authorized {
        return Answer::new(
            "403 Forbidden",
            r#"{"message":"You need at least read:packages scope to list packages.","documentation_url":"https://docs.github.com/rest/packages/packages#list-package-versions-for-a-package-owned-by-an-organization","status":"403"}"#,
        );
    }
    // The hourly budget: a window opens with the first request after the last one ended.
    let t = now(limits.scale);
    let mut rate = String::new();
    if let Some(limit) = limits.hourly {
        if t >= s.window_start + 3600.0 {
            s.window_start = t;
            s.used = 0;
        }
        let reset = (s.window_start + 3600.0).ceil() as u64;
        if s.used >= limit {
            s.seen.primary_refused += 1;
            let headers = format!(
                "x-ratelimit-limit: {limit}\r\nx-ratelimit-remaining: 0\r\nx-ratelimit-used: {limit}\r\nx-ratelimit-reset: {reset}\r\nx-ratelimit-resource: core\r\n"
            );
            return Answer { status: "403 Forbidden", headers, body: PRIMARY_BODY.to_owned() };
        }
        s.used += 1;
        rate = format!(
            "x-ratelimit-limit: {limit}\r\nx-ratelimit-remaining: {}\r\nx-ratelimit-used: {}\r\nx-ratelimit-reset: {reset}\r\nx-ratelimit-resource: core\r\n",
            limit - s.used,
            s.used
        );
    } else {
        rate.push_str("x-ratelimit-limit: 5000\r\nx-ratelimit-remaining: 4999\r\nx-ratelimit-used: 1\r\nx-ratelimit-reset: 1999999999\r\nx-ratelimit-resource: core\r\n");
    }
    // The secondary limit: points of the last minute per endpoint, requests in flight.
    let is_delete = method == "DELETE";
    while s.points.front().is_some_and(|(w, _, _)| *w <= t - 60.0) {
        s.points.pop_front();
    }
    let cost = if is_delete { 5 } else { 1 };
    let used: u32 = s.points.iter().filter(|(_, _, d)| *d == is_delete).map(|(_, p, _)| p).sum();
    let unlucky = limits.secondary_every.is_some_and(|n| s.seen.requests.is_multiple_of(n));
    if used + cost > limits.points_per_minute || flying > limits.in_flight || unlucky {
        s.seen.secondary_refused += 1;
        return Answer { status: "403 Forbidden", headers: format!("retry-after: 60\r\n{rate}"), body: SECONDARY_BODY.to_owned() };
    }
    s.points.push_back((t, cost, is_delete));

    if method == "GET" && target.starts_with(&base) {
        let query = target.split('?').nth(1).unwrap_or("");
        let param = |k: &str| query.split('&').find_map(|kv| kv.strip_prefix(&format!("{k}="))).and_then(|v| v.parse::<u64>().ok());
        let per_page = param("per_page").unwrap_or(30).min(100);
        let page = param("page").unwrap_or(1).max(1);
        if limits.throttle_page_two && page == 2 && !s.throttled {
            s.throttled = true;
            return Answer {
                status: "429 Too Many Requests",
                headers: format!("retry-after: 1\r\n{rate}"),
                body: SECONDARY_BODY.to_owned(),
            };
        }
        if limits.failing_pages.contains(&page) && s.failed_pages.insert(page) {
            s.seen.server_errors += 1;
            return Answer { status: "500 Internal Server Error", headers: rate, body: r#"{"message":"Server Error"}"#.to_owned() };
        }
        let total = s.live.len() as u64;
        let pages = total.div_ceil(per_page).max(1);
        let start = ((page - 1) * per_page).min(total) as usize;
        let end = (start + per_page as usize).min(total as usize);
        let items: Vec<String> = s.live[start..end]
            .iter()
            .map(|&i| {
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
        let link = |n: u64, rel: &str| format!("<{url}{base}?per_page={per_page}&page={n}>; rel=\"{rel}\"");
        let mut links = Vec::new();
        if page > 1 {
            links.push(link(page - 1, "prev"));
        }
        if page < pages {
            links.push(link(page + 1, "next"));
            links.push(link(pages, "last"));
        }
        if page > 1 {
            links.push(link(1, "first"));
        }
        let link = if links.is_empty() { String::new() } else { format!("link: {}\r\n", links.join(", ")) };
        Answer { status: "200 OK", headers: format!("{link}{rate}"), body: format!("[{}]", items.join(",")) }
    } else if method == "DELETE" && target.starts_with(&format!("{base}/")) {
        let id: u64 = target.rsplit('/').next().and_then(|s| s.parse().ok()).unwrap_or(0);
        match id.checked_sub(1).map(|i| s.live.binary_search(&i)) {
            Some(Ok(at)) => {
                s.live.remove(at);
                s.seen.deleted.push(id);
                s.seen.first_delete.get_or_insert_with(Instant::now);
                deleted.lock().unwrap().push(id);
                Answer { status: "204 No Content", headers: rate, body: String::new() }
            }
            _ => Answer {
                status: "404 Not Found",
                headers: rate,
                body: r#"{"message":"Not Found","documentation_url":"https://docs.github.com/rest/packages/packages#delete-package-version-for-an-organization","status":"404"}"#.to_owned(),
            },
        }
    } else if method == "GET" && target.contains("/commits") {
        // Three commits newest first, in GitHub's shape (octocrab reads every field).
        let repo = target.trim_start_matches("/repos/").split("/commits").next().unwrap_or_default().to_owned();
        let shas: Vec<String> = (0..3u32)
            .map(|i| {
                let sha = format!("{:040x}", 3 - i);
                let who = r#"{"name":"Dev","email":"dev@example.com","date":"2026-01-01T00:00:00Z"}"#;
                format!(
                    r#"{{"sha":"{sha}","node_id":"C_{i}","url":"{url}/repos/{repo}/commits/{sha}","html_url":"https://github.com/{repo}/commit/{sha}","comments_url":"{url}/repos/{repo}/commits/{sha}/comments","commit":{{"url":"{url}/repos/{repo}/git/commits/{sha}","author":{who},"committer":{who},"message":"commit {i}","comment_count":0,"tree":{{"sha":"{sha}","url":"{url}/repos/{repo}/git/trees/{sha}"}}}},"author":null,"committer":null,"parents":[]}}"#
                )
            })
            .collect();
        Answer { status: "200 OK", headers: rate, body: format!("[{}]", shas.join(",")) }
    } else {
        Answer {
            status: "404 Not Found",
            headers: rate,
            body: r#"{"message":"Package not found.","documentation_url":"https://docs.github.com/rest/packages/packages#list-package-versions-for-a-package-owned-by-an-organization","status":"404"}"#.to_owned(),
        }
    }
}
