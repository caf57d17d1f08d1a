//! What the command knows of a model's budget: the limits the server announces (one
//! tiny probe request) and what the limiter's shared store has learned. `mistral batch
//! run` (its estimates) and `mistral limits` both read it here.

use mistral_async::mistral_limiter::BudgetState;
use mistral_async::mistral_limiter::store::codec;
use mistral_async::mistral_limiter::store::redis::RedisTarget;
use mistral_async::mistral_limiter::store::{redis_key, state_file_path};
use mistral_async::stores::LimiterSpec;
use mistral_async::{ApiKey, ApiRequest, Error, RateLimits, Reply};
use serde_json::{Value, json};

use crate::Connection;
use crate::input::Endpoint;

/// One tiny request to `model` (at most one token generated), for the limits its answer
/// announces.
pub(crate) async fn probe(
    conn: &Connection,
    endpoint: Endpoint,
    model: &str,
) -> Result<Reply<Value>, Error> {
    let request = ApiRequest::post_json(endpoint.path(), &probe_body(endpoint, model))?
        .for_model(model.to_owned(), 8);
    conn.client.send(request).await
}

fn probe_body(endpoint: Endpoint, model: &str) -> Value {
    match endpoint {
        Endpoint::Chat => {
            json!({"model": model, "messages": [{"role": "user", "content": "ping"}], "max_tokens": 1})
        }
        Endpoint::Fim => json!({"model": model, "prompt": "a", "max_tokens": 1}),
        Endpoint::Embeddings => json!({"model": model, "input": "ping"}),
    }
}

/// The limits of one response, in words.
pub fn describe_limits(limits: &RateLimits) -> String {
    if limits.quotas.is_empty() {
        return "no limits announced".into();
    }
    limits
        .quotas
        .iter()
        .map(|q| {
            let mut s = format!(
                "{} per {}: {}",
                q.bucket,
                q.window,
                q.limit.map_or("?".into(), |l| l.to_string())
            );
            if let Some(r) = q.remaining {
                s.push_str(&format!(" ({r} left)"));
            }
            s
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The shared store `MISTRAL_LIMITER` names, to read what the fleet has learned.
pub(crate) enum Store {
    /// The state file, read without its lock (nothing is written).
    File(std::path::PathBuf),
    Redis {
        client: Box<RedisClient>,
        /// The store id its keys are named after.
        id: String,
        url: String,
    },
}

/// One Redis server, or a Redis Cluster (one per command run, boxed in [`Store`]).
#[allow(clippy::large_enum_variant)]
pub(crate) enum RedisClient {
    Single(redis::Client),
    Cluster(redis::cluster::ClusterClient),
}

/// How long a read of the store may take to connect, and to be answered.
const REDIS_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

impl Store {
    pub(crate) fn name(&self) -> String {
        match self {
            Store::File(path) => path.display().to_string(),
            Store::Redis { url, .. } => url.clone(),
        }
    }

    /// Requests and tokens per second `model`'s budget has learned (at the full limit).
    pub(crate) fn rates(&self, model: &str) -> Option<(Option<f64>, Option<f64>)> {
        let state = self.budget(model).ok()??;
        let per_sec = |us: f64| (us > 0.0).then(|| 1e6 / us);
        let rates = (per_sec(state.req_us), per_sec(state.tok_us));
        (rates != (None, None)).then_some(rates)
    }

    /// `model`'s budget as the store holds it (read only, nothing reserved).
    pub(crate) fn budget(&self, model: &str) -> Result<Option<BudgetState>, String> {
        match self {
            Store::File(path) => {
                // Read without the lock: a write in progress may show a torn file, so a
                // file that does not decode is read again a few times.
                let mut last = String::new();
                for _ in 0..5 {
                    let bytes = match std::fs::read(path) {
                        Ok(bytes) => bytes,
                        // No file yet: no process has spent this budget.
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                        Err(e) => return Err(format!("{}: {e}", path.display())),
                    };
                    match codec::decode(&bytes) {
                        Ok(mut states) => return Ok(states.remove(model)),
                        Err(e) => last = e.to_string(),
                    }
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
                Err(format!("the state file does not decode: {last}"))
            }
            Store::Redis { client, id, .. } => {
                let get = redis::cmd("GET").arg(redis_key(id, model)).clone();
                let value: Option<Vec<u8>> = match client.as_ref() {
                    RedisClient::Single(client) => {
                        let mut conn = client
                            .get_connection_with_timeout(REDIS_TIMEOUT)
                            .map_err(|e| e.to_string())?;
                        get.query(&mut conn)
                    }
                    // Sent to the master of the key's slot (redirects followed).
                    RedisClient::Cluster(client) => {
                        let mut conn = client.get_connection().map_err(|e| e.to_string())?;
                        get.query(&mut conn)
                    }
                }
                .map_err(|e| e.to_string())?;
                match value {
                    None => Ok(None),
                    Some(bytes) => codec::decode_value(&bytes, model)
                        .map(Some)
                        .map_err(|e| format!("the budget does not decode: {e}")),
                }
            }
        }
    }
}

pub(crate) fn store_of(conn: &Connection) -> Option<Result<Store, String>> {
    let value = std::env::var("MISTRAL_LIMITER").ok()?;
    let (spec, budget) = LimiterSpec::parse_with_budget(&value).ok()?;
    let key = match ApiKey::new(conn.key.as_str()) {
        Ok(k) => k,
        Err(e) => return Some(Err(e.to_string())),
    };
    // The budget the clients spend: the budget id's when named, else the key's own.
    let id = mistral_async::stores::scope_store_id(&conn.base_url, &key, budget.as_ref());
    let path = match spec {
        LimiterSpec::File(path) => path,
        LimiterSpec::Redis(url) => {
            // The same key names as the Redis store (its budgets' prefix), the same URL
            // forms (one server, or a cluster's nodes), and the URL without a password
            // for display.
            let target = match RedisTarget::parse(&url) {
                Ok(target) => target,
                Err(e) => return Some(Err(e.to_string())),
            };
            let shown = target.shown.clone();
            mistral_async::stores::install_tls_provider();
            let root_cert = match &target.ca_file {
                None => None,
                Some(ca) => match std::fs::read(ca) {
                    Ok(root_cert) => Some(root_cert),
                    Err(e) => return Some(Err(format!("cannot read {}: {e}", ca.display()))),
                },
            };
            let certificates = |root_cert| redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(root_cert),
            };
            let client = match root_cert {
                _ if target.is_cluster() => {
                    let mut builder =
                        redis::cluster::ClusterClientBuilder::new(target.cluster_nodes.clone())
                            .connection_timeout(REDIS_TIMEOUT)
                            .response_timeout(REDIS_TIMEOUT);
                    if let Some(root_cert) = root_cert {
                        builder = builder.certs(certificates(root_cert));
                    }
                    builder.build().map(RedisClient::Cluster)
                }
                None => redis::Client::open(target.url.as_str()).map(RedisClient::Single),
                Some(root_cert) => {
                    redis::Client::build_with_tls(target.url.as_str(), certificates(root_cert))
                        .map(RedisClient::Single)
                }
            };
            return Some(
                client
                    .map(|client| Store::Redis {
                        client: Box::new(client),
                        id: id.clone(),
                        url: shown,
                    })
                    .map_err(|e| format!("bad Redis URL: {e}")),
            );
        }
        _ => return None,
    };
    Some(Ok(Store::File(state_file_path(
        path.as_deref(),
        &id,
        |p| p.is_dir(),
    ))))
}
