//! What both clients' builders collect and check, so that a driver's builder only adds
//! its HTTP library.

use std::sync::Arc;
use std::time::Duration;

use crate::error::Error;
use crate::key::{ApiKey, KeyError};
use crate::limiter::spec::{BudgetId, ENV_VAR, LimiterSpec};
use crate::limiter::{LIMITS_VAR, Limiter, LimiterConfig, LimitsError, parse_limits};
use crate::policy::RetryPolicy;
use crate::request::{DEFAULT_BASE_URL, Target};

/// A client's settings, as its builder collects them. Errors (a malformed key, a bad
/// limiter spec) are kept and reported by [`Settings::resolve`], never at a request.
///
/// `L` is the limiter interface of the client: [`Limiter`] (synchronous) for the
/// blocking client, an async one for the async client.
#[derive(Debug)]
pub struct Settings<L: ?Sized = dyn Limiter> {
    /// The API key, as validated when it was given.
    pub key: Option<Result<ApiKey, KeyError>>,
    /// The base URL (default [`DEFAULT_BASE_URL`]).
    pub base_url: Option<String>,
    /// How calls retry.
    pub policy: RetryPolicy,
    /// Overrides the policy's attempt timeout.
    pub attempt_timeout: Option<Duration>,
    /// Overrides the policy's priority class.
    pub priority: Option<crate::Priority>,
    /// Connect timeout, overriding the policy's (default [`crate::request::DEFAULT_CONNECT_TIMEOUT`]).
    pub connect_timeout: Option<Duration>,
    /// The `User-Agent` header.
    pub user_agent: Option<String>,
    /// Allows the key over plain HTTP to a non-loopback host.
    pub allow_insecure_http: bool,
    /// The limiter, when given.
    pub limiter: Option<Arc<L>>,
    /// The limiter's store named by `MISTRAL_LIMITER`, when read from the environment.
    pub limiter_spec: Option<Result<LimiterSpec, Error>>,
    /// The budget shared by several keys (`budget_id`, or `MISTRAL_LIMITER`'s `?budget=`).
    pub budget_id: Option<Result<BudgetId, Error>>,
    /// Configured limits (`limits`, or `MISTRAL_LIMITS`).
    pub limits: Option<Result<LimiterConfig, LimitsError>>,
    /// Base of the per-call jitter seeds.
    pub seed: Option<u64>,
}

/// Settings checked and completed: what a driver builds its client from.
#[derive(Debug)]
pub struct Resolved<L: ?Sized = dyn Limiter> {
    /// Where requests go and as whom.
    pub target: Target,
    /// How calls retry (attempt timeout applied).
    pub policy: RetryPolicy,
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// The limiter, when given to the builder.
    pub limiter: Option<Arc<L>>,
    /// The store `MISTRAL_LIMITER` names, when set.
    pub limiter_spec: Option<LimiterSpec>,
    /// The budget shared by several keys, when named (else each key has its own).
    pub budget_id: Option<BudgetId>,
    /// Configured limits (empty: learn every model's from the server).
    pub limits: LimiterConfig,
    /// Base of the jitter seeds, when set.
    pub seed: Option<u64>,
}

impl<L: ?Sized> Default for Settings<L> {
    fn default() -> Self {
        Self {
            key: None,
            base_url: None,
            policy: RetryPolicy::default(),
            attempt_timeout: None,
            priority: None,
            connect_timeout: None,
            user_agent: None,
            allow_insecure_http: false,
            limiter: None,
            limiter_spec: None,
            budget_id: None,
            limits: None,
            seed: None,
        }
    }
}

impl<L: ?Sized> Clone for Settings<L> {
    fn clone(&self) -> Self {
        Self {
            key: self.key.clone(),
            base_url: self.base_url.clone(),
            policy: self.policy.clone(),
            attempt_timeout: self.attempt_timeout,
            priority: self.priority,
            connect_timeout: self.connect_timeout,
            user_agent: self.user_agent.clone(),
            allow_insecure_http: self.allow_insecure_http,
            limiter: self.limiter.clone(),
            limiter_spec: self.limiter_spec.clone(),
            budget_id: self.budget_id.clone(),
            limits: self.limits.clone(),
            seed: self.seed,
        }
    }
}

impl<L: ?Sized> Settings<L> {
    /// Settings from the environment, read through `var`: the key from
    /// `MISTRAL_API_KEY`, the base URL from `MISTRAL_BASE_URL` (when not empty), the
    /// limiter's store and budget id from `MISTRAL_LIMITER` and limits from
    /// `MISTRAL_LIMITS` ([`crate::limiter::limits_text`]).
    pub fn from_env_vars(var: impl Fn(&str) -> Option<String>) -> Self {
        let mut settings = Self {
            key: var("MISTRAL_API_KEY").map(ApiKey::new),
            base_url: var("MISTRAL_BASE_URL").filter(|url| !url.is_empty()),
            limits: var(LIMITS_VAR).map(|text| parse_limits(&text)),
            ..Self::default()
        };
        settings.read_limiter_env(var);
        settings
    }

    /// Takes the limiter's store from `MISTRAL_LIMITER`, read through `var`, when it is
    /// set (unset: nothing changes), and its `?budget=` unless a budget id is set already
    /// (an id given in code wins over the environment's, whatever the order). A value
    /// that does not parse is kept as an error for [`Settings::resolve`]. The store
    /// replaces a limiter given before.
    pub fn read_limiter_env(&mut self, var: impl Fn(&str) -> Option<String>) {
        let Some(text) = var(ENV_VAR) else {
            return;
        };
        self.limiter = None;
        match LimiterSpec::parse_with_budget(&text) {
            Ok((spec, budget)) => {
                self.limiter_spec = Some(Ok(spec));
                if self.budget_id.is_none() {
                    self.budget_id = budget.map(Ok);
                }
            }
            Err(e) => self.limiter_spec = Some(Err(e)),
        }
    }

    /// Settings from this process's environment (see [`Settings::from_env_vars`]).
    pub fn from_env() -> Self {
        Self::from_env_vars(|name| std::env::var_os(name).map(|v| v.to_string_lossy().into_owned()))
    }

    /// Checks everything: the key (missing or malformed), the base URL (plain HTTP to a
    /// remote host), the user agent, the limiter spec, the budget id, the limits.
    pub fn resolve(self) -> Result<Resolved<L>, Error> {
        let key = self.key.unwrap_or(Err(KeyError::Missing))?;
        let base_url = self.base_url.as_deref().unwrap_or(DEFAULT_BASE_URL);
        let mut target = Target::new(base_url, key, self.allow_insecure_http)?;
        if let Some(user_agent) = &self.user_agent {
            target = target.with_user_agent(user_agent)?;
        }
        let mut policy = self.policy;
        policy.attempt_timeout = self.attempt_timeout.or(policy.attempt_timeout);
        if let Some(priority) = self.priority {
            policy.priority = priority;
        }
        if let Some(connect) = self.connect_timeout {
            policy.connect_timeout = connect;
        }
        Ok(Resolved {
            target,
            connect_timeout: policy.connect_timeout,
            policy,
            limiter: self.limiter,
            limiter_spec: self.limiter_spec.transpose()?,
            budget_id: self.budget_id.transpose()?,
            limits: self.limits.transpose()?.unwrap_or_default(),
            seed: self.seed,
        })
    }
}

/// The builder setters both clients share: each sets one field of the builder's
/// `settings: Settings` and hands the builder back. An implementation detail of the two
/// clients, not API: it may change in any release.
#[doc(hidden)]
#[macro_export]
macro_rules! builder_setters {
    () => {
        $crate::builder_setters!(dyn $crate::Limiter);
    };
    ($limiter:ty) => {
        /// The API key (validated now, reported by `build`).
        pub fn api_key(mut self, key: impl Into<String>) -> Self {
            self.settings.key = Some($crate::ApiKey::new(key));
            self
        }
        /// The base URL (default `https://api.mistral.ai`): the API's root, under which
        /// requests go to `/v1/…`. A final `/v1` (the OpenAI convention,
        /// `https://api.mistral.ai/v1`) is accepted and dropped. Plain `http://` is
        /// accepted only for loopback hosts unless `allow_insecure_http` is set.
        pub fn base_url(mut self, url: impl Into<String>) -> Self {
            self.settings.base_url = Some(url.into());
            self
        }
        /// How calls retry (default `RetryPolicy::default()`).
        pub fn retry_policy(mut self, policy: $crate::RetryPolicy) -> Self {
            self.settings.policy = policy;
            self
        }
        /// Timeout of one HTTP attempt, overriding the policy's `attempt_timeout`: to the
        /// end of the body, or to the head of a stream.
        pub fn attempt_timeout(mut self, timeout: ::std::time::Duration) -> Self {
            self.settings.attempt_timeout = Some(timeout);
            self
        }
        /// The priority class of this client's calls in the shared budget (default
        /// `Priority::Default`; per call: `CallOptions::priority`). When callers queue,
        /// a higher class is served first; a lower one keeps its reserved share.
        pub fn priority(mut self, priority: $crate::Priority) -> Self {
            self.settings.priority = Some(priority);
            self
        }
        /// Timeout for making a connection (default 10 s).
        pub fn connect_timeout(mut self, timeout: ::std::time::Duration) -> Self {
            self.settings.connect_timeout = Some(timeout);
            self
        }
        /// The `User-Agent` header (printable ASCII; checked by `build`).
        pub fn user_agent(mut self, user_agent: impl Into<String>) -> Self {
            self.settings.user_agent = Some(user_agent.into());
            self
        }
        /// Allows sending the key over plain HTTP to a non-loopback host (default `false`).
        pub fn allow_insecure_http(mut self, allow: bool) -> Self {
            self.settings.allow_insecure_http = allow;
            self
        }
        /// The limiter every call consults before each attempt (default: the store
        /// `MISTRAL_LIMITER` names when built from the environment, else the process-wide
        /// `LocalLimiter` of this base URL and key, or of the `budget_id`, shared by every
        /// client built for them). Share one limiter between clients that spend the same
        /// budget. A limiter given here ignores `budget_id` and `limits`. Of `limiter`,
        /// `shared_limiter`, `file_limiter` and `limiter_from_env`, the last one called wins.
        pub fn limiter(mut self, limiter: ::std::sync::Arc<$limiter>) -> Self {
            self.settings.limiter = Some(limiter);
            self.settings.limiter_spec = None;
            self
        }
        /// The limiter's store, made by `build` for this builder's own base URL and key
        /// (or `budget_id`) and `limits`, as `MISTRAL_LIMITER` would name it:
        /// `LimiterSpec::File(Some(dir_or_file))` for the processes of one host,
        /// `LimiterSpec::Redis(url)` for a fleet (cargo feature `redis`; without it `build`
        /// fails with `Error::Config`), `LimiterSpec::Local`, `LimiterSpec::None`. A
        /// store that cannot be opened fails `build`. Replaces a limiter given before.
        pub fn shared_limiter(mut self, store: $crate::limiter::LimiterSpec) -> Self {
            self.settings.limiter = None;
            self.settings.limiter_spec = Some(Ok(store));
            self
        }
        /// A state-file limiter shared by the processes of one host: `path` is the state
        /// file, or a directory (existing, or ending in `/`) that holds one file per
        /// budget, named from a hash of the base URL and the key or budget id. The same
        /// as `shared_limiter(LimiterSpec::File(Some(path)))`.
        pub fn file_limiter(self, path: impl Into<::std::path::PathBuf>) -> Self {
            self.shared_limiter($crate::limiter::LimiterSpec::File(Some(path.into())))
        }
        /// Takes the limiter's store (and its `?budget=`, unless `budget_id` is set) from
        /// `MISTRAL_LIMITER` when it is set; when unset, nothing changes. A value that
        /// does not parse fails `build`. `Client::builder()` reads no environment variable
        /// unless told to by this; `ClientBuilder::from_env()` already does it.
        pub fn limiter_from_env(mut self) -> Self {
            self.settings.read_limiter_env(|name| {
                ::std::env::var_os(name).map(|v| v.to_string_lossy().into_owned())
            });
            self
        }
        /// Names the budget this client spends, shared with every client (of any key, in
        /// any process using the same store) given the same id and base URL: the keys of
        /// one organisation share Mistral's limits. Overrides `MISTRAL_LIMITER`'s
        /// `?budget=`. Without one, each key has a budget of its own. Checked by `build`
        /// (1 to 64 ASCII letters, digits, `.`, `_`, `-`, `:`).
        pub fn budget_id(mut self, id: impl AsRef<str>) -> Self {
            // Set over the environment's, whatever the order (see `read_limiter_env`).
            self.settings.budget_id = Some($crate::limiter::BudgetId::new(id));
            self
        }
        /// Limits to pace at (per model, and for every other model), never replaced by
        /// what the server announces. Overrides `MISTRAL_LIMITS`. Default: none, every
        /// model's limits are learned from the server. In-process, clients of one budget
        /// share a limiter only when they configure the same limits.
        pub fn limits(mut self, limits: $crate::LimiterConfig) -> Self {
            self.settings.limits = Some(Ok(limits));
            self
        }
        /// Base of the per-call jitter seeds, for reproducible schedules in tests
        /// (default: random).
        pub fn seed(mut self, seed: u64) -> Self {
            self.settings.seed = Some(seed);
            self
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::DEFAULT_CONNECT_TIMEOUT;

    #[test]
    fn settings_resolve_with_defaults_and_report_errors() {
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                vars.iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, v)| v.to_string())
            }
        };
        let r = Settings::<dyn Limiter>::from_env_vars(env(&[("MISTRAL_API_KEY", "k")]))
            .resolve()
            .unwrap();
        assert_eq!(r.target.base_url(), DEFAULT_BASE_URL);
        assert_eq!(r.connect_timeout, DEFAULT_CONNECT_TIMEOUT);
        assert!(r.limiter_spec.is_none());
        let missing = Settings::<dyn Limiter>::from_env_vars(env(&[]))
            .resolve()
            .unwrap_err();
        assert_eq!(missing.to_string(), KeyError::Missing.to_string());
        let bad =
            Settings::<dyn Limiter>::from_env_vars(env(&[("MISTRAL_API_KEY", "k\n")])).resolve();
        assert!(matches!(bad, Err(Error::Key(KeyError::Whitespace { .. }))));
        let remote = Settings::<dyn Limiter>::from_env_vars(env(&[
            ("MISTRAL_API_KEY", "k"),
            ("MISTRAL_BASE_URL", "http://example.com"),
        ]))
        .resolve();
        assert!(matches!(remote, Err(Error::Config(_))));
        let file = Settings::<dyn Limiter>::from_env_vars(env(&[
            ("MISTRAL_API_KEY", "k"),
            ("MISTRAL_LIMITER", "file"),
        ]))
        .resolve()
        .unwrap();
        assert_eq!(file.limiter_spec, Some(LimiterSpec::File(None)));
        let typo = Settings::<dyn Limiter>::from_env_vars(env(&[
            ("MISTRAL_API_KEY", "k"),
            ("MISTRAL_LIMITER", "fiel"),
        ]))
        .resolve();
        assert!(matches!(typo, Err(Error::Config(_))));
        let empty_url = Settings::<dyn Limiter>::from_env_vars(env(&[
            ("MISTRAL_API_KEY", "k"),
            ("MISTRAL_BASE_URL", ""),
        ]))
        .resolve()
        .unwrap();
        assert_eq!(empty_url.target.base_url(), DEFAULT_BASE_URL);
    }

    #[test]
    fn the_limiter_env_fills_only_what_code_left_unset() {
        let env = |name: &str| (name == ENV_VAR).then(|| "file:/tmp/x?budget=env".to_owned());
        let mut coded: Settings = Settings {
            budget_id: Some(BudgetId::new("code")),
            ..Settings::default()
        };
        coded.read_limiter_env(env);
        assert_eq!(
            coded.limiter_spec.unwrap().unwrap(),
            LimiterSpec::File(Some("/tmp/x".into()))
        );
        assert_eq!(
            coded.budget_id.unwrap().unwrap(),
            BudgetId::new("code").unwrap()
        );
        let mut plain: Settings = Settings::default();
        plain.read_limiter_env(env);
        assert_eq!(
            plain.budget_id.unwrap().unwrap(),
            BudgetId::new("env").unwrap()
        );
        let mut unset: Settings = Settings {
            limiter: Some(Arc::new(crate::NoLimiter)),
            ..Settings::default()
        };
        unset.read_limiter_env(|_| None);
        assert!(unset.limiter.is_some() && unset.limiter_spec.is_none());
        let mut bad: Settings = Settings::default();
        bad.read_limiter_env(|_| Some("fiel".into()));
        assert!(matches!(bad.limiter_spec, Some(Err(Error::Config(_)))));
    }

    #[test]
    fn the_environment_names_a_budget_id_and_limits() {
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                vars.iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, v)| v.to_string())
            }
        };
        let r = Settings::<dyn Limiter>::from_env_vars(env(&[
            ("MISTRAL_API_KEY", "k"),
            ("MISTRAL_LIMITER", "redis://h:6379/?budget=acme"),
            ("MISTRAL_LIMITS", "m=300/60s,500000t/60s;*=60/60s"),
        ]))
        .resolve()
        .unwrap();
        assert_eq!(r.budget_id, Some(BudgetId::new("acme").unwrap()));
        assert_eq!(
            r.limiter_spec,
            Some(LimiterSpec::Redis("redis://h:6379/".into()))
        );
        assert_eq!(
            r.limits.limits_for("m"),
            Some(
                crate::Limits::requests(300, Duration::from_secs(60))
                    .with_tokens(500_000, Duration::from_secs(60))
            )
        );
        assert!(r.limits.default.is_some());
        let none = Settings::<dyn Limiter>::from_env_vars(env(&[("MISTRAL_API_KEY", "k")]))
            .resolve()
            .unwrap();
        assert_eq!(none.budget_id, None);
        assert_eq!(none.limits, LimiterConfig::default());
        let bad = Settings::<dyn Limiter>::from_env_vars(env(&[
            ("MISTRAL_API_KEY", "k"),
            ("MISTRAL_LIMITS", "m=300"),
        ]))
        .resolve()
        .unwrap_err();
        assert!(
            matches!(&bad, Error::Limits(e) if matches!(**e, LimitsError::BadLimit { entry: 1, .. })),
            "{bad:?}"
        );
        let bad_id = Settings::<dyn Limiter>::from_env_vars(env(&[
            ("MISTRAL_API_KEY", "k"),
            ("MISTRAL_LIMITER", "local?budget=a b"),
        ]))
        .resolve();
        assert!(matches!(bad_id, Err(Error::Config(_))));
    }
}
