//! Process-wide TLS set-up: one crypto provider for every HTTP client (reqwest and octocrab
//! are built without a default one), installed once by whichever client is made first.

use std::sync::Once;

/// Installs the ring provider as the process default, once.
pub(crate) fn init() {
    static ONCE: Once = Once::new();
    // An error means another provider is installed already, which serves as well.
    ONCE.call_once(|| drop(rustls::crypto::ring::default_provider().install_default()));
}
