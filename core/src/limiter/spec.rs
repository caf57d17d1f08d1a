//! Which store a limiter uses, as the `MISTRAL_LIMITER` environment variable spells it.
//!
//! | value | store |
//! |---|---|
//! | unset, empty, `local` | in-process ([`super::LocalLimiter`], the default) |
//! | `none`, `off` | no limiter ([`super::NoLimiter`]) |
//! | `file` | a state file shared by the processes of one host, in the user's runtime or cache directory |
//! | `file:/path/to/state` | the same, at that path (a directory: a file named for the budget inside it) |
//! | `redis://…`, `rediss://…`, `redis+unix://…`, `unix://…` | Redis, shared by many hosts |
//!
//! Keywords are case-insensitive; surrounding whitespace is ignored.

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
    /// Redis at this URL.
    Redis(String),
}

impl LimiterSpec {
    /// The spec of the variable's value (`None`: unset).
    pub fn from_env_value(value: Option<&str>) -> Result<Self, Error> {
        value.map_or(Ok(LimiterSpec::Local), Self::parse)
    }

    /// Parses a spec. The error names the accepted forms; it does not repeat the value
    /// (a mistyped Redis URL may hold a password).
    pub fn parse(text: &str) -> Result<Self, Error> {
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
        let redis = ["redis://", "rediss://", "redis+unix://", "unix://"];
        if redis
            .iter()
            .any(|scheme| lower.starts_with(scheme) && lower.len() > scheme.len())
        {
            return Ok(LimiterSpec::Redis(text.to_owned()));
        }
        Err(Error::Config(format!(
            "{ENV_VAR} is not understood: expected `local`, `none`, `file`, \
             `file:/path/to/state` or a `redis://host:port` URL"
        )))
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
