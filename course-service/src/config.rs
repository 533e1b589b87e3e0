//! course-service configuration: `configs/course-service.toml`, then environment overrides
//! (`MONGODB_URI`, `REDIS_URL`, `MC_ADMIN_TOKEN`, `MC_LISTEN`), then `--listen`. Validated once at start-up;
//! a bad value stops the process with an error naming the file and field.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use shared::config::ConfigError;

use crate::cache::{Backend, CacheSettings, RedisSettings};

/// Where an instance listens when nothing says otherwise.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9001";
/// A local single-node server, as `scripts/up` starts it.
pub const DEFAULT_MONGODB_URI: &str = "mongodb://127.0.0.1:27017/?directConnection=true";
pub const DEFAULT_DATABASE: &str = "microcourses";
/// How long the driver looks for a usable server before an operation fails. Short, so a dead
/// database turns into a quick 503 instead of a request hanging for the driver's 30 s default.
pub const DEFAULT_SERVER_SELECTION_TIMEOUT: Duration = Duration::from_secs(2);
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Upper bound on any one database operation, retries included.
pub const DEFAULT_OPERATION_TIMEOUT: Duration = Duration::from_secs(5);
/// Deadline of the `/readyz` database ping: shorter than a proxy's probe timeout.
pub const DEFAULT_READY_TIMEOUT: Duration = Duration::from_millis(800);
/// A course is at most ~6 KB of JSON; 64 KiB leaves room and stops abuse early.
pub const DEFAULT_MAX_BODY_BYTES: usize = 64 * 1024;
/// Upper bound on a whole request inside the service.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a draining instance waits for in-flight requests after SIGTERM.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(20);

/// The file as written; every field has a default.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FileConfig {
    pub listen: Option<String>,
    pub mongodb: MongoSection,
    pub http: HttpSection,
    pub cache: CacheSection,
    pub read_model: ReadModelSection,
}

/// `[read_model]`: the catalogue held in memory and answering reads (`readmodel`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReadModelSection {
    /// `false` answers every read from the database through the cache: for a catalogue too
    /// large for an instance's memory.
    pub enabled: bool,
    /// The longest a starting instance keeps its public port from taking traffic while it
    /// loads the catalogue (`server`); `0s` takes traffic at once.
    #[serde(with = "humantime_serde")]
    pub startup_wait: Duration,
    /// Where the model is kept on disk, so an instance started again resumes the change
    /// stream from it instead of reading the whole catalogue (`readmodel::snapshot`); a
    /// relative path is from the working directory. Unset: no snapshot.
    pub snapshot: Option<PathBuf>,
    /// The least time between two snapshots while changes flow.
    #[serde(with = "humantime_serde")]
    pub snapshot_interval: Duration,
}

/// A catalogue of 100 000 courses loads in about 5 s, three instances at once in about 15.
pub const DEFAULT_STARTUP_WAIT: Duration = Duration::from_secs(30);

impl Default for ReadModelSection {
    fn default() -> Self {
        ReadModelSection {
            enabled: true,
            startup_wait: DEFAULT_STARTUP_WAIT,
            snapshot: None,
            snapshot_interval: Duration::from_secs(60),
        }
    }
}

/// `[cache]`: the catalogue cache.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheSection {
    /// `false` sends every read to the database (a baseline, or a debugging switch).
    pub enabled: bool,
    /// `memory` or `redis`; unset: `redis` when a Redis URL is given, else `memory`.
    pub backend: Option<BackendName>,
    /// The Redis server (`REDIS_URL` overrides it).
    pub redis_url: Option<String>,
    /// Upper bound on each Redis call; past it the request goes to the database.
    #[serde(with = "humantime_serde")]
    pub redis_timeout: Duration,
    /// Redis backend: entries kept in process in front of Redis (0: none).
    pub local_max_entries: u64,
    /// Safety net if an invalidation is lost.
    #[serde(with = "humantime_serde")]
    pub ttl: Duration,
    pub max_entries: u64,
    /// Bytes of cached answers kept; the least recently used go first past it.
    pub max_bytes: u64,
    /// How long the last good answer may be served while the database is down.
    #[serde(with = "humantime_serde")]
    pub stale_window: Duration,
}

impl Default for CacheSection {
    fn default() -> Self {
        CacheSection {
            enabled: true,
            backend: None,
            redis_url: None,
            redis_timeout: DEFAULT_REDIS_TIMEOUT,
            local_max_entries: DEFAULT_LOCAL_ENTRIES,
            ttl: DEFAULT_CACHE_TTL,
            max_entries: DEFAULT_CACHE_ENTRIES,
            max_bytes: DEFAULT_CACHE_BYTES,
            stale_window: DEFAULT_STALE_WINDOW,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendName {
    Memory,
    Redis,
}

/// A Redis on the same network answers in well under a millisecond; 250 ms means it is sick.
pub const DEFAULT_REDIS_TIMEOUT: Duration = Duration::from_millis(250);
/// The in-process tier in front of Redis: the hottest listings, without a network hop.
pub const DEFAULT_LOCAL_ENTRIES: u64 = 1_000;

/// A TTL-only cache is stale for up to this long; ours is invalidated on write, and this is
/// only the safety net.
pub const DEFAULT_CACHE_TTL: Duration = Duration::from_secs(60);
/// Distinct listings and courses kept: queries beyond this are evicted least-recently-used.
pub const DEFAULT_CACHE_ENTRIES: u64 = 10_000;
/// 64 MiB: ten thousand listings of 6 KiB.
pub const DEFAULT_CACHE_BYTES: u64 = 64 * 1024 * 1024;
/// A listing of 100 courses of 5000-character descriptions is about 600 KiB.
pub const MIN_CACHE_BYTES: u64 = 1024 * 1024;
/// Serving a stale catalogue beats an error for a while, not forever.
pub const DEFAULT_STALE_WINDOW: Duration = Duration::from_secs(300);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MongoSection {
    pub uri: String,
    pub database: String,
    #[serde(with = "humantime_serde")]
    pub server_selection_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub operation_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub ready_timeout: Duration,
}

impl Default for MongoSection {
    fn default() -> Self {
        MongoSection {
            uri: DEFAULT_MONGODB_URI.into(),
            database: DEFAULT_DATABASE.into(),
            server_selection_timeout: DEFAULT_SERVER_SELECTION_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            operation_timeout: DEFAULT_OPERATION_TIMEOUT,
            ready_timeout: DEFAULT_READY_TIMEOUT,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpSection {
    pub max_body_bytes: usize,
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
}

impl Default for HttpSection {
    fn default() -> Self {
        HttpSection {
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
        }
    }
}

/// The validated configuration the service runs with.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address the HTTP server binds.
    pub listen: SocketAddr,
    /// MongoDB connection string (a replica set or Atlas in production).
    pub mongodb_uri: String,
    /// Database holding the `courses` collection.
    pub database: String,
    pub server_selection_timeout: Duration,
    pub connect_timeout: Duration,
    pub operation_timeout: Duration,
    pub ready_timeout: Duration,
    /// Largest accepted request body; larger gets 413.
    pub max_body_bytes: usize,
    pub request_timeout: Duration,
    pub shutdown_grace: Duration,
    /// Bearer token required for writes; `None` refuses every write.
    pub admin_token: Option<String>,
    pub cache: CacheSettings,
    /// Reads are answered from an in-memory read model of the catalogue.
    pub read_model: bool,
    /// See [`ReadModelSection::startup_wait`].
    pub startup_wait: Duration,
    /// See [`ReadModelSection::snapshot`].
    pub snapshot: Option<Snapshots>,
}

/// Where and how often the read model is written to disk.
#[derive(Debug, Clone)]
pub struct Snapshots {
    pub path: PathBuf,
    pub interval: Duration,
}

/// The environment variables the service reads, captured once so tests can pass their own.
#[derive(Debug, Default, Clone)]
pub struct Env {
    pub mongodb_uri: Option<String>,
    pub admin_token: Option<String>,
    pub listen: Option<String>,
    pub redis_url: Option<String>,
}

impl Env {
    /// Reads `MONGODB_URI`, `MC_ADMIN_TOKEN`, `MC_LISTEN` and `REDIS_URL` (empty counts as
    /// unset).
    pub fn from_process() -> Self {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        Env {
            mongodb_uri: var("MONGODB_URI"),
            admin_token: var("MC_ADMIN_TOKEN"),
            listen: var("MC_LISTEN"),
            redis_url: var("REDIS_URL"),
        }
    }
}

/// The shortest admin token accepted: shorter ones are guessable.
pub const MIN_ADMIN_TOKEN_LEN: usize = 16;

impl Config {
    /// Loads `path` (if given), applies `env` and the `--listen` flag, and validates the result.
    pub fn load(
        path: Option<&Path>,
        env: &Env,
        listen_flag: Option<&str>,
    ) -> Result<Config, ConfigError> {
        let (file, origin): (FileConfig, &Path) = match path {
            Some(p) => (shared::config::load(p)?, p),
            None => (FileConfig::default(), Path::new("<defaults>")),
        };
        Config::resolve(file, origin, env, listen_flag)
    }

    /// Applies overrides to a parsed file and validates every field.
    pub fn resolve(
        file: FileConfig,
        origin: &Path,
        env: &Env,
        listen_flag: Option<&str>,
    ) -> Result<Config, ConfigError> {
        let (listen_src, listen_text) = match (listen_flag, &env.listen, &file.listen) {
            (Some(flag), _, _) => ("--listen", flag.to_string()),
            (None, Some(var), _) => ("MC_LISTEN", var.clone()),
            (None, None, Some(f)) => ("listen", f.clone()),
            (None, None, None) => ("listen", DEFAULT_LISTEN.to_string()),
        };
        let listen: SocketAddr = listen_text.parse().map_err(|e| {
            ConfigError::field(
                origin,
                listen_src,
                format!("`{listen_text}` is not an IP:port address ({e})"),
            )
        })?;

        let (uri_src, mongodb_uri) = match &env.mongodb_uri {
            Some(uri) => ("MONGODB_URI", uri.clone()),
            None => ("mongodb.uri", file.mongodb.uri.clone()),
        };
        if !(mongodb_uri.starts_with("mongodb://") || mongodb_uri.starts_with("mongodb+srv://")) {
            return Err(ConfigError::field(
                origin,
                uri_src,
                "must start with mongodb:// or mongodb+srv://",
            ));
        }
        let database = file.mongodb.database.trim().to_string();
        if database.is_empty() || database.contains(['/', '\\', '.', ' ', '"', '$']) {
            return Err(ConfigError::field(
                origin,
                "mongodb.database",
                format!("`{database}` is not a valid database name"),
            ));
        }
        let positive = |field: &str, d: Duration| positive(origin, field, d);
        let m = &file.mongodb;
        let h = &file.http;
        if h.max_body_bytes == 0 {
            return Err(ConfigError::field(
                origin,
                "http.max_body_bytes",
                "must be greater than 0",
            ));
        }
        let admin_token = env.admin_token.clone();
        if let Some(token) = &admin_token {
            if token.len() < MIN_ADMIN_TOKEN_LEN {
                return Err(ConfigError::field(
                    origin,
                    "MC_ADMIN_TOKEN",
                    format!("must be at least {MIN_ADMIN_TOKEN_LEN} characters"),
                ));
            }
        }
        Ok(Config {
            listen,
            mongodb_uri,
            server_selection_timeout: positive(
                "mongodb.server_selection_timeout",
                m.server_selection_timeout,
            )?,
            connect_timeout: positive("mongodb.connect_timeout", m.connect_timeout)?,
            operation_timeout: positive("mongodb.operation_timeout", m.operation_timeout)?,
            ready_timeout: positive("mongodb.ready_timeout", m.ready_timeout)?,
            max_body_bytes: h.max_body_bytes,
            request_timeout: positive("http.request_timeout", h.request_timeout)?,
            shutdown_grace: positive("http.shutdown_grace", h.shutdown_grace)?,
            admin_token,
            cache: cache_settings(&file.cache, origin, env, &database)?,
            read_model: file.read_model.enabled,
            startup_wait: file.read_model.startup_wait,
            snapshot: match &file.read_model.snapshot {
                Some(path) if path.as_os_str().is_empty() => {
                    return Err(ConfigError::field(
                        origin,
                        "read_model.snapshot",
                        "is empty; leave it out for no snapshot",
                    ))
                }
                Some(path) => Some(Snapshots {
                    path: path.clone(),
                    interval: positive(
                        "read_model.snapshot_interval",
                        file.read_model.snapshot_interval,
                    )?,
                }),
                None => None,
            },
            database,
        })
    }
}

fn positive(origin: &Path, field: &str, d: Duration) -> Result<Duration, ConfigError> {
    if d.is_zero() {
        Err(ConfigError::field(origin, field, "must be greater than 0"))
    } else {
        Ok(d)
    }
}

/// `[cache]` and `REDIS_URL`, validated (the URL is parsed, not connected to).
fn cache_settings(
    c: &CacheSection,
    origin: &Path,
    env: &Env,
    database: &str,
) -> Result<CacheSettings, ConfigError> {
    let positive = |field: &str, d: Duration| positive(origin, field, d);
    if c.max_entries == 0 {
        return Err(ConfigError::field(
            origin,
            "cache.max_entries",
            "must be at least 1",
        ));
    }
    let url = match (&env.redis_url, &c.redis_url) {
        (Some(url), _) => Some(("REDIS_URL", url)),
        (None, Some(url)) => Some(("cache.redis_url", url)),
        (None, None) => None,
    };
    let backend = match (c.backend, url) {
        (Some(BackendName::Memory), _) | (None, None) => Backend::Memory,
        (Some(BackendName::Redis), None) => {
            return Err(ConfigError::field(
                origin,
                "cache.backend",
                "is `redis` but no server is given: set REDIS_URL (or cache.redis_url), e.g. redis://127.0.0.1:6379",
            ))
        }
        (Some(BackendName::Redis) | None, Some((field, url))) => {
            let client = redis::Client::open(url.as_str()).map_err(|e| {
                ConfigError::field(
                    origin,
                    field,
                    format!("is not a usable Redis URL ({e}); expected redis://[:password@]host:port[/db]"),
                )
            })?;
            Backend::Redis(Box::new(RedisSettings {
                client,
                timeout: positive("cache.redis_timeout", c.redis_timeout)?,
                local_max_entries: c.local_max_entries,
                namespace: format!("mc:{database}"),
            }))
        }
    };
    Ok(CacheSettings {
        enabled: c.enabled,
        backend,
        ttl: positive("cache.ttl", c.ttl)?,
        max_entries: c.max_entries,
        max_bytes: if c.max_bytes < MIN_CACHE_BYTES {
            return Err(ConfigError::field(
                origin,
                "cache.max_bytes",
                format!("must be at least {MIN_CACHE_BYTES} (one large listing)"),
            ));
        } else {
            c.max_bytes
        },
        stale_window: c.stale_window,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_configuration_reference_documents_every_key_and_no_other() {
        let doc = include_str!("../../docs/configuration.md");
        let keys = shared::config::keys::<FileConfig>();
        assert!(keys.len() > 15, "{keys:?}");
        shared::config::check_reference(doc, "course-service.toml", &keys).unwrap();
    }

    fn parse(text: &str) -> Result<Config, ConfigError> {
        let path = Path::new("course-service.toml");
        let file = shared::config::parse(path, text)?;
        Config::resolve(file, path, &Env::default(), None)
    }

    #[test]
    fn defaults_are_valid() {
        let c = parse("").unwrap();
        assert_eq!(c.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(c.operation_timeout, DEFAULT_OPERATION_TIMEOUT);
        assert!(c.admin_token.is_none());
    }

    #[test]
    fn a_snapshot_is_a_path_and_its_interval_more_than_nothing() {
        let c = parse("[read_model]\nsnapshot = \"data/catalogue.snapshot\"\n").unwrap();
        let snapshots = c.snapshot.expect("a snapshot");
        assert_eq!(snapshots.path, PathBuf::from("data/catalogue.snapshot"));
        assert_eq!(snapshots.interval, Duration::from_secs(60));
        assert!(parse("").unwrap().snapshot.is_none());
        let e = parse("[read_model]\nsnapshot = \"\"\n").unwrap_err();
        assert!(e.to_string().contains("read_model.snapshot"), "{e}");
        let e = parse("[read_model]\nsnapshot = \"s\"\nsnapshot_interval = \"0s\"\n").unwrap_err();
        assert!(
            e.to_string().contains("read_model.snapshot_interval"),
            "{e}"
        );
    }

    #[test]
    fn durations_are_strings() {
        let c = parse("[mongodb]\noperation_timeout = \"250ms\"\n").unwrap();
        assert_eq!(c.operation_timeout, Duration::from_millis(250));
    }

    #[test]
    fn bad_listen_names_the_field() {
        let err = parse("listen = \"nowhere\"\n").unwrap_err().to_string();
        assert!(err.contains("`listen`") && err.contains("nowhere"), "{err}");
    }

    #[test]
    fn unknown_key_is_an_error_with_position() {
        let err = parse("[http]\nmax_body = 3\n").unwrap_err();
        assert_eq!(err.position, Some((2, 1)));
        assert!(err.message.contains("max_body"), "{}", err.message);
    }

    #[test]
    fn zero_duration_is_refused() {
        let err = parse("[mongodb]\nready_timeout = \"0s\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("mongodb.ready_timeout"), "{err}");
    }

    #[test]
    fn env_overrides_file_and_flag_overrides_env() {
        let path = Path::new("f.toml");
        let file: FileConfig = shared::config::parse(path, "listen = \"127.0.0.1:1\"\n").unwrap();
        let env = Env {
            mongodb_uri: Some("mongodb://db.example:27017".into()),
            admin_token: Some("0123456789abcdef".into()),
            listen: Some("127.0.0.1:2".into()),
            redis_url: None,
        };
        let c = Config::resolve(file, path, &env, Some("127.0.0.1:3")).unwrap();
        assert_eq!(c.listen.port(), 3);
        assert_eq!(c.mongodb_uri, "mongodb://db.example:27017");
        assert_eq!(c.admin_token.as_deref(), Some("0123456789abcdef"));
    }

    #[test]
    fn short_token_is_refused() {
        let env = Env {
            admin_token: Some("short".into()),
            ..Env::default()
        };
        let err = Config::resolve(FileConfig::default(), Path::new("f"), &env, None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("MC_ADMIN_TOKEN"), "{err}");
    }

    #[test]
    fn redis_url_selects_redis_unless_memory_is_asked_for() {
        let env = Env {
            redis_url: Some("redis://127.0.0.1:6390".into()),
            ..Env::default()
        };
        let path = Path::new("f.toml");
        let resolve = |text: &str| {
            let file = shared::config::parse(path, text).unwrap();
            Config::resolve(file, path, &env, None)
        };
        let c = resolve("[mongodb]\ndatabase = \"shop\"\n").unwrap();
        let Backend::Redis(r) = &c.cache.backend else {
            panic!("REDIS_URL must select Redis: {:?}", c.cache.backend)
        };
        assert_eq!(r.namespace, "mc:shop");
        assert_eq!(r.local_max_entries, DEFAULT_LOCAL_ENTRIES);
        let c = resolve("[cache]\nbackend = \"memory\"\n").unwrap();
        assert!(matches!(c.cache.backend, Backend::Memory));
    }

    #[test]
    fn redis_without_a_url_or_with_a_bad_one_is_refused() {
        let err = parse("[cache]\nbackend = \"redis\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("cache.backend") && err.contains("REDIS_URL"),
            "{err}"
        );
        let err = parse("[cache]\nredis_url = \"http://x\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("cache.redis_url") && err.contains("redis://"),
            "{err}"
        );
        let err = parse("[cache]\nbackend = \"disk\"\n").unwrap_err();
        assert_eq!(err.position.map(|p| p.0), Some(2), "{err}");
    }
}
