//! The secrets a client holds or was given (credential forms, tokens it fetched), cut out of
//! any text a registry sends back before that text reaches an error message.

/// Every secret of one client and its clones.
#[derive(Debug, Default)]
pub(crate) struct Secrets(std::sync::Mutex<Vec<String>>);

impl Secrets {
    /// These secrets.
    pub(crate) fn new(secrets: Vec<String>) -> Secrets {
        Secrets(std::sync::Mutex::new(secrets))
    }

    /// One more secret (a token fetched).
    pub(crate) fn add(&self, secret: &str) {
        if let Ok(mut s) = self.0.lock() {
            s.push(secret.to_owned());
        }
    }

    /// `text` with every secret replaced by `***`.
    pub(crate) fn redact(&self, text: &str) -> String {
        let secrets = self.0.lock().map(|s| s.clone()).unwrap_or_default();
        secrets.iter().filter(|s| s.len() >= 4).fold(text.to_owned(), |t, s| t.replace(s.as_str(), "***"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_cut_out() {
        let s = Secrets::new(vec!["hunter22".into(), "abc".into()]);
        s.add("tok-123456");
        assert_eq!(s.redact("pw hunter22 token tok-123456 abc"), "pw *** token *** abc", "short strings are not secrets to cut");
    }
}
