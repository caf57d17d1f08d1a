//! Both clients' TLS against a real rustls server on loopback with a certificate from a
//! private CA: by default both refuse it the same way (the webpki roots do not hold that
//! CA; a TLS error, nothing answered), and each accepts it once given the CA as a root
//! through your own HTTP client (`ureq::Agent` with `RootCerts`, or
//! `mistral_async::http_client_builder_with_roots`).

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use mistral_core::{Error, RetryPolicy, TransportKind};

const BODY: &str = r#"{"object":"list","data":[{"id":"mistral-small-latest","object":"model"}]}"#;

struct TlsServer {
    url: String,
    ca_pem: String,
    /// Requests read and answered (a handshake that failed reads none).
    answered: Arc<AtomicUsize>,
}

/// A server for `127.0.0.1` whose certificate a fresh private CA signed; it answers every
/// request with a model list.
fn tls_server() -> TlsServer {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "tls test CA");
    ca_params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign];
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
        )
        .unwrap();
    let config = Arc::new(config);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("https://{}", listener.local_addr().unwrap());
    let answered = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&answered);
    std::thread::spawn(move || {
        for tcp in listener.incoming() {
            let Ok(tcp) = tcp else { continue };
            let (config, count) = (Arc::clone(&config), Arc::clone(&count));
            std::thread::spawn(move || {
                let conn = rustls::ServerConnection::new(config).unwrap();
                let mut tls = rustls::StreamOwned::new(conn, tcp);
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    match tls.read(&mut byte) {
                        Ok(1) => head.push(byte[0]),
                        _ => return, // a refused handshake ends here
                    }
                }
                let response = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
                     connection: close\r\n\r\n{BODY}",
                    BODY.len()
                );
                // Counted before the answer is written: once a client has read it, the
                // count is already there (counted after, a fast client could look first).
                count.fetch_add(1, Ordering::SeqCst);
                let _ = tls.write_all(response.as_bytes());
                tls.conn.send_close_notify();
                let _ = tls.flush();
            });
        }
    });
    TlsServer {
        url,
        ca_pem: ca_cert.pem(),
        answered,
    }
}

fn is_tls_error(error: &Error) -> bool {
    matches!(
        error,
        Error::Transport {
            kind: TransportKind::Tls,
            ..
        }
    )
}

#[test]
fn by_default_both_clients_refuse_a_private_ca_alike() {
    let server = tls_server();
    let blocking = mistral_blocking::Client::builder()
        .api_key("sk-tls-test")
        .base_url(&server.url)
        .retry_policy(RetryPolicy::no_retries())
        .build()
        .unwrap();
    let error = blocking.list_models().unwrap_err();
    assert!(is_tls_error(&error), "{error:?}");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let asynchronous = mistral_async::Client::builder()
        .api_key("sk-tls-test")
        .base_url(&server.url)
        .retry_policy(RetryPolicy::no_retries())
        .build()
        .unwrap();
    let error = runtime.block_on(asynchronous.list_models()).unwrap_err();
    assert!(is_tls_error(&error), "{error:?}");
    assert_eq!(server.answered.load(Ordering::SeqCst), 0);
}

#[test]
fn a_ureq_agent_with_the_ca_as_root_is_served() {
    let server = tls_server();
    let ca = ureq::tls::Certificate::from_pem(server.ca_pem.as_bytes())
        .unwrap()
        .to_owned();
    let tls = ureq::tls::TlsConfig::builder()
        .root_certs(ureq::tls::RootCerts::from(vec![ca]))
        .build();
    let agent = ureq::Agent::config_builder()
        .tls_config(tls)
        .build()
        .new_agent();
    let client = mistral_blocking::Client::builder()
        .api_key("sk-tls-test")
        .base_url(&server.url)
        .agent(agent)
        .build()
        .unwrap();
    let models = client.list_models().unwrap().into_inner();
    assert_eq!(models.data[0].id, "mistral-small-latest");
    assert_eq!(server.answered.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_reqwest_client_with_the_ca_as_root_is_served() {
    let server = tls_server();
    let http = mistral_async::http_client_builder_with_roots(server.ca_pem.as_bytes())
        .unwrap()
        .build()
        .unwrap();
    let client = mistral_async::Client::builder()
        .api_key("sk-tls-test")
        .base_url(&server.url)
        .http_client(http)
        .build()
        .unwrap();
    let models = client.list_models().await.unwrap().into_inner();
    assert_eq!(models.data[0].id, "mistral-small-latest");
    assert_eq!(server.answered.load(Ordering::SeqCst), 1);
    let none = mistral_async::http_client_builder_with_roots(b"not a certificate").unwrap_err();
    assert!(matches!(none, Error::Config(_)), "{none:?}");
}
