//! `CatalogCache`: cache-aside for the listing (per canonical query) and single courses,
//! fresh on every instance within milliseconds of a write.
//!
//! - Every key carries the catalogue *generation*, a counter bumped by every write this
//!   instance makes and by every event of a MongoDB change stream on `courses` (so writes
//!   through other instances count too). A bump makes every cached entry unreachable at
//!   once; the TTL is the safety net if an event were lost, and bounded size evicts the rest.
//! - Until the change stream is established (and whenever it breaks, until it is back), the
//!   cache is bypassed: this instance could not hear about writes, so it does not trust what
//!   it holds.
//! - Concurrent misses for one key run one database query (moka's `try_get_with`).
//! - When the database is unreachable, the last good answer for a key is served for a
//!   bounded stale window, marked as stale; after that, the error stands (503).

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use prometheus::IntCounter;

use crate::metrics::Metrics;
use crate::store::{CourseStore, StoreError};

/// A cached answer: the JSON body and its strong entity tag.
#[derive(Debug)]
pub struct Cached {
    pub body: Bytes,
    pub etag: String,
}

impl Cached {
    /// Tags a body with a hash of its bytes: the same body gets the same tag on every
    /// instance (they run the same binary).
    pub fn hashed(body: Bytes) -> Cached {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        body.hash(&mut h);
        Cached {
            etag: format!("\"l{:016x}\"", h.finish()),
            body,
        }
    }
}

/// How an answer was obtained, for the `X-Cache` header and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Hit,
    Miss,
    /// The cache was bypassed (change stream down).
    Bypass,
    /// The database is unreachable: the last good answer, past its freshness.
    Stale,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Hit => "HIT",
            Source::Miss => "MISS",
            Source::Bypass => "BYPASS",
            Source::Stale => "STALE",
        }
    }
}

/// Why a load failed.
#[derive(Debug)]
pub enum LoadError {
    /// No such course (not cached: a create may follow at any moment).
    NotFound,
    Store(StoreError),
}

impl From<StoreError> for LoadError {
    fn from(e: StoreError) -> Self {
        LoadError::Store(e)
    }
}

/// `[cache]` settings.
#[derive(Debug, Clone)]
pub struct CacheSettings {
    /// Safety net if an invalidation is lost.
    pub ttl: Duration,
    pub max_entries: u64,
    /// How long the last good answer may be served while the database is down.
    pub stale_window: Duration,
}

#[derive(Clone)]
pub struct CatalogCache {
    inner: Arc<Inner>,
}

struct Inner {
    entries: moka::future::Cache<String, Arc<Cached>>,
    last_good: moka::future::Cache<String, Arc<Cached>>,
    generation: AtomicU64,
    /// The change stream is live: cached entries can be trusted.
    watching: AtomicBool,
    hits: IntCounter,
    misses: IntCounter,
    invalidations: IntCounter,
    stale: IntCounter,
    bypasses: IntCounter,
}

impl CatalogCache {
    pub fn new(settings: &CacheSettings, metrics: &Metrics) -> CatalogCache {
        let counter = |event: &str| metrics.cache_events.with_label_values(&["memory", event]);
        CatalogCache {
            inner: Arc::new(Inner {
                entries: moka::future::Cache::builder()
                    .max_capacity(settings.max_entries)
                    .time_to_live(settings.ttl)
                    .build(),
                last_good: moka::future::Cache::builder()
                    .max_capacity(settings.max_entries)
                    .time_to_live(settings.stale_window)
                    .build(),
                generation: AtomicU64::new(0),
                watching: AtomicBool::new(false),
                hits: counter("hit"),
                misses: counter("miss"),
                invalidations: counter("invalidation"),
                stale: counter("stale"),
                bypasses: counter("bypass"),
            }),
        }
    }

    /// Makes every cached entry unreachable (a write happened somewhere).
    pub fn invalidate(&self) {
        self.inner.generation.fetch_add(1, Ordering::AcqRel);
        self.inner.invalidations.inc();
    }

    fn set_watching(&self, live: bool) {
        self.inner.watching.store(live, Ordering::Release);
    }

    /// The cached answer for `key`, or `load`'s (run once however many ask at once).
    pub async fn get_or_load<F, Fut>(
        &self,
        key: &str,
        load: F,
    ) -> Result<(Arc<Cached>, Source), Arc<LoadError>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Cached, LoadError>>,
    {
        let inner = &self.inner;
        if !inner.watching.load(Ordering::Acquire) {
            inner.bypasses.inc();
            return match load().await {
                Ok(c) => {
                    let c = Arc::new(c);
                    inner.last_good.insert(key.to_string(), c.clone()).await;
                    Ok((c, Source::Bypass))
                }
                Err(e) => self.stale_or(key, Arc::new(e)).await,
            };
        }
        let generation = inner.generation.load(Ordering::Acquire);
        let loaded = AtomicBool::new(false);
        let result = inner
            .entries
            .try_get_with(format!("{generation}|{key}"), async {
                loaded.store(true, Ordering::Relaxed);
                load().await.map(Arc::new)
            })
            .await;
        match result {
            Ok(c) if loaded.load(Ordering::Relaxed) => {
                inner.misses.inc();
                inner.last_good.insert(key.to_string(), c.clone()).await;
                Ok((c, Source::Miss))
            }
            Ok(c) => {
                inner.hits.inc();
                Ok((c, Source::Hit))
            }
            Err(e) => self.stale_or(key, e).await,
        }
    }

    /// The last good answer when the database is unreachable, else the error.
    async fn stale_or(
        &self,
        key: &str,
        e: Arc<LoadError>,
    ) -> Result<(Arc<Cached>, Source), Arc<LoadError>> {
        if let LoadError::Store(StoreError::Unavailable(_)) = &*e {
            if let Some(c) = self.inner.last_good.get(key).await {
                self.inner.stale.inc();
                return Ok((c, Source::Stale));
            }
        }
        Err(e)
    }

    /// Follows the change stream for as long as the process lives: each event invalidates;
    /// while the stream is down the cache is bypassed, and it is re-opened with back-off.
    pub async fn follow_changes(self, store: CourseStore) {
        let mut backoff = Duration::from_millis(100);
        let mut reported = false;
        loop {
            match store.watch().await {
                Ok(mut stream) => {
                    // Anything cached before the stream was open may have missed a write.
                    self.invalidate();
                    self.set_watching(true);
                    tracing::info!("following catalogue changes; cache enabled");
                    backoff = Duration::from_millis(100);
                    reported = false;
                    loop {
                        match stream.next_if_any().await {
                            Ok(Some(_)) => self.invalidate(),
                            Ok(None) => {}
                            Err(e) => {
                                tracing::warn!(error = %e, "change stream broke; cache bypassed until it is back");
                                break;
                            }
                        }
                    }
                    self.set_watching(false);
                }
                Err(e) => {
                    if !reported {
                        tracing::warn!(error = %e, "cannot follow catalogue changes; cache bypassed, retrying");
                        reported = true;
                    }
                }
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }
}
