//! Which store a limiter uses, as the `MISTRAL_LIMITER` environment variable spells it.
//!
//! | value | store |
//! |---|---|
//! | unset, empty, `local` | in-process (`mistral_limiter::LocalLimiter`, the default) |
//! | `none`, `off` | no limiter ([`super::NoLimiter`]) |
//! | `file` | a state file shared by the processes of one host, in the user's runtime or cache directory |
//! | `file:/path/to/state` | the same, at that path (a directory: a file named for the budget inside it) |
//! | `redis://…`, `rediss://…`, `redis+unix://…`, `unix://…` | Redis, shared by many hosts |
//! | `redis+cluster://host:port,host:port,…`, `rediss+cluster://…` | a Redis Cluster, by some of its nodes |
//! | `redis://host:port,redis://host:port,…` | the same: a list of node URLs, the form the `redis` crate's cluster client takes |
//!
//! Keywords are case-insensitive; surrounding whitespace is ignored.
//!
//! Any form may end with `?budget=<id>` (`local?budget=acme`, `file?budget=acme`,
//! `file:/run/mistral/?budget=acme`, `redis://cache:6379/?budget=acme`): the callers of
//! every key that name the same [`BudgetId`] (at the same base URL) share one budget, as
//! the keys of one organisation share Mistral's limits. Without it each key has its own.
//! A Redis URL may also carry `ca=<path to a PEM file>` (see [`RedisOptions`]); every
//! other query parameter is left in the URL for the Redis client.

use std::fmt;
use std::path::PathBuf;

use crate::error::Error;

/// The environment variable that selects the store.
pub const ENV_VAR: &str = "MISTRAL_LIMITER";

/// A limiter store, parsed from [`ENV_VAR`].
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum LimiterSpec {
    /// In-process (the default).
    Local,
    /// No limiter.
    None,
    /// A state file: at this path, or (`None`) in the default directory.
    File(Option<PathBuf>),
    /// Redis at this URL: one server, or a Redis Cluster (`redis+cluster://a:7000,b:7001`
    /// or a comma-separated list of node URLs).
    Redis(String),
}

impl LimiterSpec {
    /// The spec of the variable's value (`None`: unset).
    pub fn from_env_value(value: Option<&str>) -> Result<Self, Error> {
        value.map_or(Ok(LimiterSpec::Local), Self::parse)
    }

    /// Parses a spec, ignoring a `budget=` parameter (see [`LimiterSpec::parse_with_budget`]).
    /// The error names the accepted forms; it does not repeat the value (a mistyped Redis
    /// URL may hold a password).
    pub fn parse(text: &str) -> Result<Self, Error> {
        Self::parse_with_budget(text).map(|(spec, _)| spec)
    }

    /// Parses a spec and the budget id its `?budget=` parameter names, if any.
    pub fn parse_with_budget(text: &str) -> Result<(Self, Option<BudgetId>), Error> {
        let (text, budget) = split_budget(text.trim())?;
        Ok((Self::parse_store(&text)?, budget))
    }

    fn parse_store(text: &str) -> Result<Self, Error> {
        let text = text.trim();
        let lower = text.to_ascii_lowercase();
        match lower.as_str() {
            "" | "local" => return Ok(LimiterSpec::Local),
            "none" | "off" => return Ok(LimiterSpec::None),
            "file" => return Ok(LimiterSpec::File(None)),
            _ => {}
        }
        if lower.starts_with("file:") {
            let path = text["file:".len()..].trim();
            let path = path.strip_prefix("//").unwrap_or(path);
            if path.is_empty() {
                return Ok(LimiterSpec::File(None));
            }
            return Ok(LimiterSpec::File(Some(PathBuf::from(path))));
        }
        let redis = [
            "redis://",
            "rediss://",
            "redis+unix://",
            "unix://",
            "redis+cluster://",
            "rediss+cluster://",
        ];
        if redis
            .iter()
            .any(|scheme| lower.starts_with(scheme) && lower.len() > scheme.len())
        {
            return Ok(LimiterSpec::Redis(text.to_owned()));
        }
        Err(Error::Config(format!(
            "{ENV_VAR} is not understood: expected `local`, `none`, `file`, \
             `file:/path/to/state`, a `redis://host:port` URL or a \
             `redis+cluster://host:port,host:port` URL"
        )))
    }
}

/// Takes the `budget=` parameter out of `text`'s query (the part after its last `?`),
/// leaving the other parameters (and no `?` when none is left).
fn split_budget(text: &str) -> Result<(String, Option<BudgetId>), Error> {
    let Some(q) = text.rfind('?') else {
        return Ok((text.to_owned(), None));
    };
    let (head, query) = (&text[..q], &text[q + 1..]);
    let (fragment_start, fragment) = match query.find('#') {
        Some(h) => (h, &query[h..]),
        None => (query.len(), ""),
    };
    let mut budget = None;
    let mut kept = Vec::new();
    for pair in query[..fragment_start].split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some((name, value)) if name.eq_ignore_ascii_case("budget") => {
                if budget.is_some() {
                    return Err(Error::Config(format!("{ENV_VAR} names `budget=` twice")));
                }
                budget = Some(BudgetId::new(value)?);
            }
            _ => kept.push(pair),
        }
    }
    let mut rest = head.to_owned();
    if !kept.is_empty() {
        rest.push('?');
        rest.push_str(&kept.join("&"));
    }
    rest.push_str(fragment);
    Ok((rest, budget))
}

/// The name of a budget shared by several API keys (of one organisation): clients given
/// the same id (and base URL) share one limiter's budgets whatever their key, in-process,
/// through a state file or through Redis. The id is not secret, but stores still name
/// files and keys after a hash of it (with the base URL), never after the id itself.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct BudgetId(String);

impl BudgetId {
    /// Longest id accepted.
    pub const MAX_LEN: usize = 64;

    /// Checks `id`: 1 to [`BudgetId::MAX_LEN`] ASCII letters, digits, `.`, `_`, `-` or
    /// `:`. The error does not repeat the text (it may be a key pasted by mistake).
    pub fn new(id: impl AsRef<str>) -> Result<Self, Error> {
        let id = id.as_ref();
        let ok = !id.is_empty()
            && id.len() <= Self::MAX_LEN
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b':'));
        if ok {
            Ok(Self(id.to_owned()))
        } else {
            Err(Error::Config(format!(
                "a budget id must be 1 to {} ASCII letters, digits, `.`, `_`, `-` or `:` \
                 (got {} characters)",
                Self::MAX_LEN,
                id.chars().count()
            )))
        }
    }

    /// The id.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// What a store hashes to name this budget at `base_url` (trailing `/` ignored):
    /// `"budget\n" + base_url + "\n" + id`. Distinct from the preimage of a key's own
    /// budget, so an id can never name another key's budget.
    pub fn preimage(&self, base_url: &str) -> String {
        format!("budget\n{}\n{}", base_url.trim_end_matches('/'), self.0)
    }
}

impl fmt::Debug for BudgetId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("BudgetId").field(&self.0).finish()
    }
}

impl fmt::Display for BudgetId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What the stores take out of a Redis URL of [`ENV_VAR`] before handing it to the Redis
/// client: `ca=<path>` (a PEM file of the certificate authorities a `rediss://` server's
/// certificate is checked against, instead of the system's; URL-escaped `%20`, `%3F`,
/// `%26` and `%25` are decoded).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RedisOptions {
    /// The URL left for the Redis client.
    pub url: String,
    /// The CA file, when given.
    pub ca_file: Option<PathBuf>,
}

impl RedisOptions {
    /// Splits `url`'s `ca=` parameter off (the error does not repeat the URL).
    pub fn parse(url: &str) -> Result<Self, Error> {
        let Some(q) = url.find('?') else {
            return Ok(Self {
                url: url.to_owned(),
                ca_file: None,
            });
        };
        let (head, query) = (&url[..q], &url[q + 1..]);
        let mut ca_file = None;
        let mut kept = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            match pair.split_once('=') {
                Some((name, value)) if name.eq_ignore_ascii_case("ca") => {
                    if value.is_empty() || ca_file.is_some() {
                        return Err(Error::Config(
                            "the limiter's Redis URL needs one non-empty `ca=<path>`".to_owned(),
                        ));
                    }
                    let path = value
                        .replace("%20", " ")
                        .replace("%3F", "?")
                        .replace("%26", "&")
                        .replace("%25", "%");
                    ca_file = Some(PathBuf::from(path));
                }
                _ => kept.push(pair),
            }
        }
        let mut rest = head.to_owned();
        if !kept.is_empty() {
            rest.push('?');
            rest.push_str(&kept.join("&"));
        }
        Ok(Self { url: rest, ca_file })
    }
}

/// Prints a Redis URL without its password.
impl fmt::Debug for LimiterSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LimiterSpec::Local => f.write_str("Local"),
            LimiterSpec::None => f.write_str("None"),
            LimiterSpec::File(path) => f.debug_tuple("File").field(path).finish(),
            LimiterSpec::Redis(url) => f.debug_tuple("Redis").field(&redact_url(url)).finish(),
        }
    }
}

pub use crate::redact::redact_url;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_documented_form_parses() {
        let p = |s: &str| LimiterSpec::parse(s).unwrap();
        assert_eq!(
            LimiterSpec::from_env_value(None).unwrap(),
            LimiterSpec::Local
        );
        assert_eq!(p(""), LimiterSpec::Local);
        assert_eq!(p("  LOCAL "), LimiterSpec::Local);
        assert_eq!(p("none"), LimiterSpec::None);
        assert_eq!(p("Off"), LimiterSpec::None);
        assert_eq!(p("file"), LimiterSpec::File(None));
        assert_eq!(p("file:"), LimiterSpec::File(None));
        assert_eq!(
            p("file:/run/x/state"),
            LimiterSpec::File(Some("/run/x/state".into()))
        );
        assert_eq!(
            p("FILE:///tmp/a b"),
            LimiterSpec::File(Some("/tmp/a b".into()))
        );
        assert_eq!(
            p("file:rel/dir/"),
            LimiterSpec::File(Some("rel/dir/".into()))
        );
        assert_eq!(
            p("redis://127.0.0.1:6379/0"),
            LimiterSpec::Redis("redis://127.0.0.1:6379/0".into())
        );
        assert_eq!(
            p("rediss://:pw@cache.internal:6380"),
            LimiterSpec::Redis("rediss://:pw@cache.internal:6380".into())
        );
        assert_eq!(
            p("redis+unix:///run/redis.sock"),
            LimiterSpec::Redis("redis+unix:///run/redis.sock".into())
        );
        assert_eq!(
            p("Redis+Cluster://a:7000,b:7001"),
            LimiterSpec::Redis("Redis+Cluster://a:7000,b:7001".into())
        );
        assert_eq!(
            p("rediss+cluster://u:pw@a:7000/"),
            LimiterSpec::Redis("rediss+cluster://u:pw@a:7000/".into())
        );
        assert_eq!(
            p("redis://a:7000,redis://b:7001"),
            LimiterSpec::Redis("redis://a:7000,redis://b:7001".into())
        );
    }

    #[test]
    fn anything_else_is_a_config_error_that_does_not_echo_the_value() {
        for bad in [
            "redis",
            "redis://",
            "memcached://x",
            "fil",
            "local2",
            "redis:pw@host",
            "redis+cluster://",
        ] {
            match LimiterSpec::parse(bad) {
                Err(Error::Config(message)) => {
                    assert!(message.contains("MISTRAL_LIMITER"), "{message}");
                    assert!(!message.contains("pw@host"), "{message}");
                }
                other => panic!("{bad}: {other:?}"),
            }
        }
    }

    #[test]
    fn a_budget_id_is_taken_from_any_form() {
        let p = |s: &str| LimiterSpec::parse_with_budget(s).unwrap();
        let acme = Some(BudgetId::new("acme").unwrap());
        assert_eq!(p("local?budget=acme"), (LimiterSpec::Local, acme.clone()));
        assert_eq!(p("?budget=acme"), (LimiterSpec::Local, acme.clone()));
        assert_eq!(
            p("file?budget=acme"),
            (LimiterSpec::File(None), acme.clone())
        );
        assert_eq!(
            p("file:/run/m/?budget=acme"),
            (LimiterSpec::File(Some("/run/m/".into())), acme.clone())
        );
        assert_eq!(
            p("redis://h:6379/0?budget=acme"),
            (LimiterSpec::Redis("redis://h:6379/0".into()), acme.clone())
        );
        assert_eq!(
            p("rediss://h/?protocol=resp3&budget=acme&ca=/etc/ca.pem#x"),
            (
                LimiterSpec::Redis("rediss://h/?protocol=resp3&ca=/etc/ca.pem#x".into()),
                acme.clone()
            )
        );
        assert_eq!(
            p("redis://h/"),
            (LimiterSpec::Redis("redis://h/".into()), None)
        );
        assert_eq!(
            p("redis+cluster://a:1,b:2/?budget=acme&ca=/c.pem"),
            (
                LimiterSpec::Redis("redis+cluster://a:1,b:2/?ca=/c.pem".into()),
                acme.clone()
            )
        );
        assert_eq!(
            LimiterSpec::parse("file?budget=acme").unwrap(),
            LimiterSpec::File(None)
        );
        for bad in [
            "local?budget=",
            "file?budget=a/b",
            "redis://h/?budget=x&budget=y",
            "local?budget=sk-secret value",
        ] {
            match LimiterSpec::parse_with_budget(bad) {
                Err(Error::Config(message)) => assert!(!message.contains("secret"), "{message}"),
                other => panic!("{bad}: {other:?}"),
            }
        }
        assert!(BudgetId::new("a".repeat(65)).is_err());
        assert_ne!(
            BudgetId::new("acme").unwrap().preimage("https://x/"),
            BudgetId::new("acme").unwrap().preimage("https://y")
        );
        assert_eq!(
            BudgetId::new("acme").unwrap().preimage("https://x/"),
            BudgetId::new("acme").unwrap().preimage("https://x")
        );
    }

    #[test]
    fn redis_options_take_the_ca_file_out_of_the_url() {
        let o = RedisOptions::parse("rediss://h:1/0?ca=/etc/my%20ca.pem&protocol=resp3").unwrap();
        assert_eq!(o.url, "rediss://h:1/0?protocol=resp3");
        assert_eq!(o.ca_file, Some(PathBuf::from("/etc/my ca.pem")));
        let o = RedisOptions::parse("rediss://h:1/0?ca=/a.pem").unwrap();
        assert_eq!(o.url, "rediss://h:1/0");
        assert_eq!(RedisOptions::parse("redis://h").unwrap().ca_file, None);
        assert!(RedisOptions::parse("rediss://h/?ca=").is_err());
        assert!(RedisOptions::parse("rediss://h/?ca=/a&ca=/b").is_err());
    }

    #[test]
    fn debug_and_redaction_hide_passwords() {
        let spec = LimiterSpec::parse("redis://user:secret@host:6379/1").unwrap();
        let shown = format!("{spec:?}");
        assert!(!shown.contains("secret"), "{shown}");
        assert!(shown.contains("host:6379/1"), "{shown}");
        assert_eq!(redact_url("redis://h:1"), "redis://h:1");
        assert_eq!(redact_url("redis://:p@h:1/0"), "redis://***@h:1/0");
        assert_eq!(redact_url("redis://h:1/x@y"), "redis://h:1/x@y");
        assert_eq!(redact_url("no scheme"), "no scheme");
    }
}
