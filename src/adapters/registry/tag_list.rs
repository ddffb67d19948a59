//! Tag lists, following `Link` pagination.

use reqwest::{Method, StatusCode};

use super::auth::Scope;
use super::error::{ErrorKind, RegistryError};
use super::transport::{Request, header, read_capped};
use super::{Registry, Stats, TAGS_LIMIT};

impl Registry {
    /// Every tag of `repository`, following `Link` pagination (`n` per page).
    pub async fn list_tags(&self, registry: &str, repository: &str, page: usize, stats: &Stats) -> Result<Vec<String>, RegistryError> {
        let base = self.base_url(registry);
        let mut url = format!("{base}/v2/{repository}/tags/list?n={page}");
        let mut tags = Vec::new();
        let doing = format!("listing the tags of `{repository}`");
        loop {
            let req = Request::new(registry, Method::GET, url.clone(), vec![Scope::pull(repository)], doing.clone())
                .expect(&[StatusCode::NOT_FOUND]);
            let resp = self.send(req, stats).await?;
            if resp.status() == StatusCode::NOT_FOUND {
                return Ok(tags);
            }
            if !resp.status().is_success() {
                return Err(self.status_error(resp.status(), &doing, resp).await);
            }
            let next = header(resp.headers(), "link").and_then(|l| next_link(&l));
            let what = format!("reading the tags of `{repository}`");
            let bytes = read_capped(resp, TAGS_LIMIT, &what).await?;
            let body: serde_json::Value =
                serde_json::from_slice(&bytes).map_err(|e| RegistryError::new(ErrorKind::Protocol, format!("{what}: {e}")))?;
            tags.extend(body["tags"].as_array().into_iter().flatten().filter_map(|t| t.as_str().map(str::to_owned)));
            match next {
                Some(n) if n.starts_with("http") => url = n,
                Some(n) => url = format!("{base}{n}"),
                None => return Ok(tags),
            }
        }
    }
}

/// The `rel="next"` target of a `Link` header.
pub fn next_link(link: &str) -> Option<String> {
    link.split(',').find(|part| part.contains("rel=\"next\"") || part.contains("rel=next")).and_then(|part| {
        let start = part.find('<')? + 1;
        let end = part.find('>')?;
        Some(part[start..end].to_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_pagination() {
        assert_eq!(next_link(r#"</v2/a/tags/list?last=x&n=2>; rel="next""#), Some("/v2/a/tags/list?last=x&n=2".into()));
        assert_eq!(
            next_link(r#"<https://api.github.com/x?page=2>; rel="next", <https://api.github.com/x?page=9>; rel="last""#),
            Some("https://api.github.com/x?page=2".into())
        );
        assert_eq!(next_link(r#"<https://x?page=1>; rel="prev""#), None);
    }
}
