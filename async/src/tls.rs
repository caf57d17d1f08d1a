//! The HTTP client this crate sends with: reqwest, with rustls on the `aws-lc-rs`
//! provider (reqwest's own, with its `rustls` feature) and the Mozilla roots of
//! `webpki-roots` — the roots ureq's `rustls` feature uses in mistral-blocking — and no
//! redirects.
//!
//! reqwest is built with its `rustls` feature, which brings a provider, so a program's own
//! `reqwest::Client::new()` works beside this crate (cargo unifies reqwest's features
//! across the program: `rustls-no-provider` made it panic). No process-wide default
//! provider is ever installed.

use std::sync::Arc;

use mistral_core::Error;
use mistral_core::request::DEFAULT_CONNECT_TIMEOUT;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

/// A [`reqwest::ClientBuilder`] set up as this crate sets up its own client: redirects
/// never followed ([`reqwest::redirect::Policy::none`]), TLS through rustls on `aws-lc-rs`
/// trusting the [webpki-roots](https://docs.rs/webpki-roots) (Mozilla's) roots, a
/// [`DEFAULT_CONNECT_TIMEOUT`] connect timeout. Add a proxy, pool settings and the like,
/// build it and hand it to [`ClientBuilder::http_client`](crate::ClientBuilder::http_client).
///
/// The TLS settings are a rustls config given whole to reqwest, so reqwest's own root
/// and certificate settings (`tls_certs_merge`, `add_root_certificate`,
/// `tls_danger_*`) do not apply to it: for roots of your own use
/// [`http_client_builder_with_roots`]. Setting another redirect policy on it makes
/// `build` refuse the client.
///
/// ```no_run
/// use mistral_async::Client;
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let http = mistral_async::http_client_builder()
///     .proxy(reqwest::Proxy::https("http://proxy.internal:3128")?)
///     .build()?;
/// let client = Client::builder().api_key("sk-my-key").http_client(http).build()?;
/// # drop(client);
/// # Ok(())
/// # }
/// ```
pub fn http_client_builder() -> reqwest::ClientBuilder {
    let roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    with_roots(roots)
}

/// [`http_client_builder`] trusting the certificates of `pem` (one or more
/// `-----BEGIN CERTIFICATE-----` blocks, e.g. a private CA's) as well as the webpki roots.
/// A `pem` without a certificate, or with one that does not parse, is an
/// [`Error::Config`].
///
/// ```no_run
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let pem = std::fs::read("/etc/ssl/private-ca.pem")?;
/// let http = mistral_async::http_client_builder_with_roots(&pem)?.build()?;
/// let client = mistral_async::Client::builder().api_key("sk-my-key").http_client(http).build()?;
/// # drop(client);
/// # Ok(())
/// # }
/// ```
pub fn http_client_builder_with_roots(pem: &[u8]) -> Result<reqwest::ClientBuilder, Error> {
    let mut roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    let mut added = 0;
    for cert in CertificateDer::pem_slice_iter(pem) {
        let cert = cert.map_err(|e| Error::Config(format!("a root certificate: {e}")))?;
        roots
            .add(cert)
            .map_err(|e| Error::Config(format!("a root certificate: {e}")))?;
        added += 1;
    }
    if added == 0 {
        return Err(Error::Config(
            "no `BEGIN CERTIFICATE` block in the root certificates".into(),
        ));
    }
    Ok(with_roots(roots))
}

fn with_roots(roots: rustls::RootCertStore) -> reqwest::ClientBuilder {
    let builder = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(DEFAULT_CONNECT_TIMEOUT);
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    match rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
    {
        Ok(config) => {
            let mut config = config.with_root_certificates(roots).with_no_client_auth();
            config.alpn_protocols = alpn();
            builder.tls_backend_preconfigured(config)
        }
        // Not reached: aws-lc-rs has every safe default version and suite.
        Err(_) => builder,
    }
}

/// The protocols offered in the TLS handshake: HTTP/1.1, the only one reqwest speaks
/// with this crate's features.
fn alpn() -> Vec<Vec<u8>> {
    vec![b"http/1.1".to_vec()]
}
