//! Registry credentials, from where users keep them: `--registry-username` /
//! `--registry-password`, the docker config (`$DOCKER_CONFIG/config.json` or
//! `~/.docker/config.json`, `auths` as `docker login` and `docker/login-action` write
//! them, or through credential helpers: `credsStore`, `credHelpers`, identity tokens), and
//! `GITHUB_TOKEN` for ghcr.io. Each host's credential is resolved once per process and kept:
//! a helper (`docker-credential-*`, which may take a good part of a second) runs at most once
//! per host, on a blocking thread, never on the async ones.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

use base64::Engine as _;

use crate::cli::RegistryOpts;
use crate::core::secret::Secret;

/// One host's credential, resolved at most once.
type Resolved = Arc<OnceLock<Option<Credential>>>;

/// A user name and password (or token) for one registry.
#[derive(Clone, Debug)]
pub struct Credential {
    /// User name.
    pub username: String,
    /// Password or token.
    pub password: Secret,
    /// The password is an identity token (a refresh token the token service exchanges, as
    /// `docker login` stores for some registries), not a password for Basic.
    pub identity_token: bool,
}

impl Credential {
    /// A user name and password.
    pub fn basic(username: &str, password: Secret) -> Credential {
        Credential { username: username.to_owned(), password, identity_token: false }
    }
}

/// Where credentials come from, read once per process.
#[derive(Clone, Debug, Default)]
pub struct Credentials {
    flag: Option<Credential>,
    /// The one host the flag credentials belong to: the spec's registry.
    flag_host: Option<String>,
    docker_config: Option<String>,
    github_token: Option<Secret>,
    /// The GitHub container registry the GitHub token is for.
    github_registry: String,
    /// Each host's credential once resolved (shared by clones): one cell per host, so a
    /// helper running for one host holds up no other.
    resolved: Arc<Mutex<HashMap<String, Resolved>>>,
}

/// The GitHub container registry: ghcr.io, or `containers.<host>` on GitHub Enterprise (the
/// runner's `GITHUB_SERVER_URL` names the host).
pub(crate) fn github_registry_of(server_url: Option<&str>) -> String {
    let host = server_url.and_then(|u| u.split("://").nth(1)).map(|rest| rest.split('/').next().unwrap_or(rest).to_ascii_lowercase());
    match host.as_deref() {
        None | Some("" | "github.com") => "ghcr.io".to_owned(),
        Some(h) => format!("containers.{h}"),
    }
}

impl Credentials {
    /// Reads the flags, the docker config file and `GITHUB_TOKEN`.
    pub(crate) fn load(opts: &RegistryOpts) -> Credentials {
        let flag =
            opts.registry_password.as_ref().map(|p| Credential::basic(opts.registry_username.as_deref().unwrap_or("token"), p.clone()));
        let env = Credentials::from_env();
        Credentials {
            flag,
            github_token: opts.github_token.clone().filter(|t| !t.expose().is_empty()).or(env.github_token.clone()),
            github_registry: opts.github_registry.as_deref().map_or(env.github_registry.clone(), normalise_host),
            ..env
        }
    }

    /// The docker config file and `GITHUB_TOKEN`, without flags.
    pub(crate) fn from_env() -> Credentials {
        let dir = std::env::var_os("DOCKER_CONFIG")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".docker")));
        let docker_config = dir.and_then(|d| std::fs::read_to_string(d.join("config.json")).ok());
        let github_token = std::env::var("GITHUB_TOKEN").ok().filter(|t| !t.is_empty()).map(|t| Secret::new(&t));
        let github_registry = github_registry_of(std::env::var("GITHUB_SERVER_URL").ok().as_deref());
        Credentials { flag: None, flag_host: None, docker_config, github_token, github_registry, resolved: Arc::default() }
    }

    /// What a refusal by `host` should tell the user: what was sent, and what to set.
    pub fn login_hint(&self, host: &str) -> String {
        let who = if self.for_host(host).is_some() { "with the given credentials" } else { "anonymously" };
        let what = if normalise_host(host) == self.github_registry {
            "set the action's `github-token` input (its default, `${{ github.token }}`, needs `permissions: packages: write` to push) or pass --github-token / --registry-password"
        } else {
            "log in with docker/login-action (with DOCKER_CONFIG shared with the action) or pass --registry-username/--registry-password"
        };
        format!("asked {who}: {what}")
    }

    /// The same credentials with the flag credentials bound to `host` (the spec's registry):
    /// they are sent to no other host.
    pub(crate) fn flags_for(mut self, host: &str) -> Credentials {
        self.flag_host = Some(normalise_host(host));
        // What was resolved before the flags were bound no longer holds.
        self.resolved = Arc::default();
        self
    }

    /// Credentials from these sources only (tests, and callers that already hold them).
    pub fn new(flag: Option<Credential>, docker_config: Option<String>, github_token: Option<Secret>) -> Credentials {
        Credentials { flag, flag_host: None, docker_config, github_token, github_registry: "ghcr.io".into(), resolved: Arc::default() }
    }

    /// Every secret in every form it may travel or be echoed in (the password or token, the
    /// base64 of `user:password`, the `Basic ...` header value), for masking in Actions logs
    /// and cutting out of registry answers.
    pub fn secrets(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut add = |user: &str, password: &str| {
            if password.is_empty() {
                return;
            }
            let pair = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
            out.extend([password.to_owned(), format!("Basic {pair}"), pair]);
        };
        if let Some(c) = &self.flag {
            add(&c.username, c.password.expose());
        }
        if let Some(t) = &self.github_token {
            add(GITHUB_TOKEN_USER, t.expose());
        }
        for c in self.docker_config.as_deref().map(docker_config_entries).unwrap_or_default() {
            add(&c.username, c.password.expose());
        }
        out.extend(self.docker_config.as_deref().map(identity_tokens).unwrap_or_default());
        out.sort();
        out.dedup();
        out
    }

    /// The token for GitHub's API (packages, commits): the password flag, else
    /// `GITHUB_TOKEN`.
    pub fn github_api_token(&self) -> Option<Secret> {
        self.flag.as_ref().map(|c| c.password.clone()).or_else(|| self.github_token.clone())
    }

    /// The credential for `host`, resolved once per process: the first call for a host
    /// resolves it on a blocking thread (a credential helper may run), later calls read it.
    pub async fn resolve(&self, host: &str) -> Option<Credential> {
        let cell = self.cell(host);
        if let Some(known) = cell.get() {
            return known.clone();
        }
        let (this, owned) = (self.clone(), host.to_owned());
        tokio::task::spawn_blocking(move || cell.get_or_init(|| this.lookup(&owned)).clone()).await.ok().flatten()
    }

    fn cell(&self, host: &str) -> Resolved {
        match self.resolved.lock() {
            Ok(mut r) => r.entry(normalise_host(host)).or_default().clone(),
            Err(_) => Arc::default(),
        }
    }

    /// The credential for `host` (`ghcr.io`, `127.0.0.1:5000`, `docker.io`), in order:
    /// the flags, the docker config, `GITHUB_TOKEN` (ghcr.io only); resolved once per host
    /// and process, then read from memory. Blocking: a credential helper may run (async
    /// code calls [`Credentials::resolve`]).
    pub fn for_host(&self, host: &str) -> Option<Credential> {
        self.cell(host).get_or_init(|| self.lookup(host)).clone()
    }

    /// Where the credential for `host` comes from, asked anew.
    fn lookup(&self, host: &str) -> Option<Credential> {
        if let Some(c) = self.flag.as_ref().filter(|_| self.flag_host.as_deref() == Some(normalise_host(host).as_str())) {
            return Some(c.clone());
        }
        if let Some(c) = self.docker_config.as_deref().and_then(|text| from_docker_config(text, host)) {
            return Some(c);
        }
        if let Some(c) = self.docker_config.as_deref().filter(|text| needs_the_cli_resolver(text)).and_then(|_| from_helpers(host)) {
            return Some(c);
        }
        if normalise_host(host) == self.github_registry {
            return self.github_token.as_ref().map(|t| Credential::basic(GITHUB_TOKEN_USER, t.clone()));
        }
        None
    }
}

/// The user name GitHub's registry takes with a token.
const GITHUB_TOKEN_USER: &str = "x-access-token";

/// Every entry of a docker config's `auths`, for masking.
fn docker_config_entries(text: &str) -> Vec<Credential> {
    let Ok(doc) = serde_json::from_str::<serde_json::Value>(text) else { return Vec::new() };
    let Some(auths) = doc.get("auths").and_then(|a| a.as_object()) else { return Vec::new() };
    auths.keys().filter_map(|k| from_docker_config(text, k)).collect()
}

/// Whether the docker config stores credentials the `auths` entries do not hold: credential
/// helpers (`credsStore`, `credHelpers`) or identity tokens.
fn needs_the_cli_resolver(text: &str) -> bool {
    serde_json::from_str::<serde_json::Value>(text)
        .is_ok_and(|doc| doc.get("credsStore").is_some() || doc.get("credHelpers").is_some() || !identity_tokens(text).is_empty())
}

/// Every identity token of a docker config, for masking.
fn identity_tokens(text: &str) -> Vec<String> {
    let Ok(doc) = serde_json::from_str::<serde_json::Value>(text) else { return Vec::new() };
    let Some(auths) = doc.get("auths").and_then(|a| a.as_object()) else { return Vec::new() };
    auths.values().filter_map(|e| e.get("identitytoken")?.as_str().map(str::to_owned)).filter(|t| !t.is_empty()).collect()
}

/// The credential the docker CLI would use for `host` through its helpers or an identity
/// token (`docker_credential` runs `docker-credential-*` as the CLI does).
fn from_helpers(host: &str) -> Option<Credential> {
    let server = if normalise_host(host) == "docker.io" { "https://index.docker.io/v1/" } else { host };
    match docker_credential::get_credential(server) {
        Ok(docker_credential::DockerCredential::UsernamePassword(user, password)) => Some(Credential::basic(&user, Secret::new(&password))),
        Ok(docker_credential::DockerCredential::IdentityToken(token)) => {
            Some(Credential { username: "<token>".into(), password: Secret::new(&token), identity_token: true })
        }
        Err(e) => {
            tracing::debug!("no credential for {host} from the docker config's helpers: {e}");
            None
        }
    }
}

/// The docker config's entry for `host`: keys may carry a scheme and a path
/// (`https://index.docker.io/v1/` is Docker Hub); values hold `auth` (base64 of
/// `user:password`) or `username` and `password`.
pub fn from_docker_config(text: &str, host: &str) -> Option<Credential> {
    let doc: serde_json::Value = serde_json::from_str(text).ok()?;
    let auths = doc.get("auths")?.as_object()?;
    let want = normalise_host(host);
    let (_, entry) = auths.iter().find(|(k, _)| normalise_host(k) == want)?;
    // An identity token is for the token service's refresh flow, not Basic: the helpers'
    // resolver handles it.
    if entry.get("identitytoken").and_then(|t| t.as_str()).is_some_and(|t| !t.is_empty()) {
        return None;
    }
    if let Some(auth) = entry.get("auth").and_then(|a| a.as_str()).filter(|a| !a.is_empty()) {
        let decoded = base64::engine::general_purpose::STANDARD.decode(auth.trim()).ok()?;
        let text = String::from_utf8(decoded).ok()?;
        let (user, password) = text.split_once(':')?;
        return Some(Credential::basic(user, Secret::new(password)));
    }
    let user = entry.get("username")?.as_str()?;
    let password = entry.get("password")?.as_str()?;
    Some(Credential::basic(user, Secret::new(password)))
}

pub(crate) fn normalise_host(key: &str) -> String {
    let k = key.trim();
    let k = k.strip_prefix("https://").or_else(|| k.strip_prefix("http://")).unwrap_or(k);
    let host = k.split('/').next().unwrap_or(k);
    match host {
        "index.docker.io" | "registry-1.docker.io" | "docker.io" => "docker.io".to_owned(),
        other => other.to_ascii_lowercase(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    #[test]
    fn docker_config_entries_as_login_action_writes_them() {
        let text = format!(
            r#"{{"auths": {{"ghcr.io": {{"auth": "{}"}}, "https://index.docker.io/v1/": {{"auth": "{}"}}, "127.0.0.1:5000": {{"username": "u", "password": "p"}}}}}}"#,
            b64("octo:ghp_secret"),
            b64("hub:pw:with:colons")
        );
        let c = from_docker_config(&text, "ghcr.io").unwrap();
        assert_eq!((c.username.as_str(), c.password.expose()), ("octo", "ghp_secret"));
        let c = from_docker_config(&text, "docker.io").unwrap();
        assert_eq!((c.username.as_str(), c.password.expose()), ("hub", "pw:with:colons"));
        let c = from_docker_config(&text, "127.0.0.1:5000").unwrap();
        assert_eq!(c.username, "u");
        assert!(from_docker_config(&text, "quay.io").is_none());
        assert!(from_docker_config("not json", "ghcr.io").is_none());
    }

    #[test]
    fn flags_then_config_then_github_token() {
        let config = format!(r#"{{"auths": {{"ghcr.io": {{"auth": "{}"}}}}}}"#, b64("cfg:cfgpw"));
        let token = Some(Secret::new("gh-token"));
        let flag = Some(Credential::basic("flag", Secret::new("flagpw")));
        assert_eq!(
            Credentials::new(flag.clone(), Some(config.clone()), token.clone()).flags_for("ghcr.io").for_host("ghcr.io").unwrap().username,
            "flag"
        );
        // Flag credentials belong to the spec's registry: docker.io's token service never sees them.
        assert!(Credentials::new(flag.clone(), None, None).flags_for("ghcr.io").for_host("docker.io").is_none());
        assert!(Credentials::new(flag, None, None).for_host("ghcr.io").is_none(), "unbound flags go nowhere");
        assert_eq!(Credentials::new(None, Some(config), token.clone()).for_host("ghcr.io").unwrap().username, "cfg");
        let c = Credentials::new(None, None, token.clone()).for_host("ghcr.io").unwrap();
        assert_eq!(c.password.expose(), "gh-token");
        assert!(Credentials::new(None, None, token).for_host("quay.io").is_none());
    }

    #[test]
    fn every_form_of_every_secret_is_listed() {
        let config = format!(r#"{{"auths": {{"q.io": {{"auth": "{}"}}}}}}"#, b64("cfg:cfgpw"));
        let flag = Some(Credential::basic("u", Secret::new("flagpw")));
        let s = Credentials::new(flag, Some(config), Some(Secret::new("ghtok"))).secrets();
        for want in [
            "flagpw",
            &b64("u:flagpw"),
            &format!("Basic {}", b64("u:flagpw")),
            "ghtok",
            &b64("x-access-token:ghtok"),
            "cfgpw",
            &b64("cfg:cfgpw"),
        ] {
            assert!(s.iter().any(|x| x == want), "{want} missing from {} secrets", s.len());
        }
    }

    #[test]
    fn the_github_token_is_for_the_github_container_registry_only() {
        assert_eq!(github_registry_of(None), "ghcr.io");
        assert_eq!(github_registry_of(Some("https://github.com")), "ghcr.io");
        assert_eq!(github_registry_of(Some("https://ghe.example.com/")), "containers.ghe.example.com");
        let c = Credentials::new(None, None, Some(Secret::new("t")));
        assert!(c.for_host("ghcr.io").is_some());
        assert!(c.for_host("docker.io").is_none() && c.for_host("quay.io").is_none());
        let ghe = Credentials { github_registry: "containers.ghe.example.com".into(), resolved: Arc::default(), ..c };
        assert!(ghe.for_host("containers.ghe.example.com").is_some() && ghe.for_host("ghcr.io").is_none());
    }

    #[test]
    fn identity_tokens_are_left_to_the_cli_resolver_and_masked() {
        let text = r#"{"auths": {"r.example": {"auth": "dTo=", "identitytoken": "idtok-123"}}}"#;
        assert!(from_docker_config(text, "r.example").is_none(), "not a Basic password");
        assert!(needs_the_cli_resolver(text));
        assert!(!needs_the_cli_resolver(r#"{"auths": {"r.example": {"auth": "dTpw"}}}"#));
        assert!(needs_the_cli_resolver(r#"{"credsStore": "desktop"}"#));
        let c = Credentials::new(None, Some(text.into()), None);
        assert!(c.secrets().contains(&"idtok-123".to_owned()));
    }

    #[test]
    fn secrets_do_not_print() {
        let c = Credential::basic("u", Secret::new("hunter2"));
        assert!(!format!("{c:?}").contains("hunter2"));
    }
}
