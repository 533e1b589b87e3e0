//! `CatalogCache`: cache-aside for the listing (per canonical query) and single courses,
//! fresh on every instance within milliseconds of a write.
//!
//! - Every key carries the catalogue *generation*. A bump makes every cached entry
//!   unreachable at once; the TTL is the safety net if a bump were missed, and bounded size
//!   evicts the rest.
//! - Two backends spread the generation differently:
//!   - `memory` (moka, per instance): a counter bumped by this instance's writes and by every
//!     event of a MongoDB change stream on `courses`, so writes through other instances count;
//!   - `redis` (shared; `cache/redis.rs`): a counter in Redis, bumped by the writing instance and
//!     published to every instance over pub/sub; an optional in-process tier sits in front.
//! - Until the follower (change stream or subscription) is established, and whenever it breaks
//!   until it is back, the cache is bypassed: this instance could not hear about writes, so it
//!   does not trust what it holds. A Redis call that fails falls through to the database.
//! - Concurrent misses for one key run one database query per instance (moka's
//!   `try_get_with`).
//! - When the database is unreachable, the last good answer for a key is served for a
//!   bounded stale window, marked as stale; after that, the error stands (503).

mod redis;

pub use self::redis::RedisSettings;

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use prometheus::IntCounter;

use self::redis::RedisTier;
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
    /// Answered from the read model (`readmodel`), which follows every write.
    Model,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Hit => "HIT",
            Source::Miss => "MISS",
            Source::Bypass => "BYPASS",
            Source::Stale => "STALE",
            Source::Model => "MODEL",
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

/// Where entries live.
#[derive(Debug, Clone)]
pub enum Backend {
    /// Per instance, moka.
    Memory,
    /// Shared by every instance.
    Redis(Box<RedisSettings>),
}

impl Backend {
    /// The `backend` label of the cache metrics.
    pub fn name(&self) -> &'static str {
        match self {
            Backend::Memory => "memory",
            Backend::Redis(_) => "redis",
        }
    }
}

/// `[cache]` settings.
#[derive(Debug, Clone)]
pub struct CacheSettings {
    /// Off: every read goes to the database (answers say `X-Cache: BYPASS`).
    pub enabled: bool,
    pub backend: Backend,
    /// Safety net if an invalidation is lost.
    pub ttl: Duration,
    pub max_entries: u64,
    /// Bytes of cached bodies kept (per store: entries, last good answers).
    pub max_bytes: u64,
    /// How long the last good answer may be served while the database is down.
    pub stale_window: Duration,
}

/// A generation as a gauge value (Redis generations start at the clock in ms: well within).
fn gauge_value(generation: u64) -> i64 {
    i64::try_from(generation).unwrap_or(i64::MAX)
}

/// A moka store bounded both ways: each entry weighs its bytes, but never less than
/// `max_bytes / max_entries`, so the byte budget also caps the count at `max_entries`.
fn bounded(
    max_entries: u64,
    max_bytes: u64,
    ttl: Duration,
) -> moka::future::Cache<String, Arc<Cached>> {
    let floor = (max_bytes / max_entries.max(1)).max(1);
    moka::future::Cache::builder()
        .max_capacity(if max_entries == 0 { 0 } else { max_bytes })
        .weigher(move |key: &String, value: &Arc<Cached>| {
            let size = (key.len() + value.etag.len() + value.body.len()) as u64;
            u32::try_from(size.max(floor)).unwrap_or(u32::MAX)
        })
        .time_to_live(ttl)
        .build()
}

#[derive(Clone)]
pub struct CatalogCache {
    inner: Arc<Inner>,
}

struct Inner {
    enabled: bool,
    /// The memory backend's entries, or the in-process tier in front of Redis.
    entries: moka::future::Cache<String, Arc<Cached>>,
    redis: Option<RedisTier>,
    last_good: moka::future::Cache<String, Arc<Cached>>,
    generation: AtomicU64,
    /// The follower is live: cached entries can be trusted.
    watching: AtomicBool,
    hits: IntCounter,
    /// Redis backend: hits of the in-process tier (`hits` counts Redis's own).
    local_hits: IntCounter,
    misses: IntCounter,
    invalidations: IntCounter,
    generation_gauge: prometheus::IntGauge,
    stale: IntCounter,
    bypasses: IntCounter,
    errors: IntCounter,
    /// `cache_following`: mirrors `watching`.
    following: prometheus::IntGauge,
}

/// Where a lookup found its value (an `AtomicU8`: the loader runs inside moka).
const IN_TIER: u8 = 0;
const IN_REDIS: u8 = 1;
const IN_DATABASE: u8 = 2;

impl CatalogCache {
    /// Builds the cache; no connection is made yet (the follower makes them).
    pub fn new(settings: &CacheSettings, metrics: &Metrics) -> Result<CatalogCache, String> {
        let backend = settings.backend.name();
        let counter = |event: &str| metrics.cache_events.with_label_values(&[backend, event]);
        if settings.enabled {
            metrics.register_cache_following();
        }
        let (redis, entries) = match &settings.backend {
            Backend::Memory => (None, settings.max_entries),
            Backend::Redis(r) => (
                Some(
                    RedisTier::new(r, settings.ttl)
                        .map_err(|e| format!("cannot set up the Redis client: {e}"))?,
                ),
                r.local_max_entries,
            ),
        };
        Ok(CatalogCache {
            inner: Arc::new(Inner {
                enabled: settings.enabled,
                entries: bounded(entries, settings.max_bytes, settings.ttl),
                redis,
                last_good: bounded(
                    settings.max_entries,
                    settings.max_bytes,
                    settings.stale_window,
                ),
                generation: AtomicU64::new(0),
                watching: AtomicBool::new(false),
                hits: counter("hit"),
                local_hits: counter("local_hit"),
                misses: counter("miss"),
                invalidations: counter("invalidation"),
                generation_gauge: metrics.cache_generation.clone(),
                stale: counter("stale"),
                bypasses: counter("bypass"),
                errors: counter("error"),
                following: metrics.cache_following.clone(),
            }),
        })
    }

    /// Makes every cached entry unreachable, on every instance: a write happened. With Redis
    /// the bump is shared and published before this returns; if it cannot be, this instance
    /// bypasses its cache until its follower has reconnected and bumped again.
    pub async fn invalidate(&self) {
        let inner = &self.inner;
        match &inner.redis {
            None => {
                let generation = inner.generation.fetch_add(1, Ordering::AcqRel) + 1;
                inner.invalidations.inc();
                inner.generation_gauge.set(gauge_value(generation));
            }
            Some(redis) => match redis.bump().await {
                Ok(generation) => self.advance_to(generation),
                Err(_) => {
                    inner.errors.inc();
                    self.set_watching(false);
                    redis.resubscribe.notify_one();
                }
            },
        }
    }

    /// Moves to a generation heard from Redis (never backwards: messages and bump answers
    /// may arrive in either order).
    fn advance_to(&self, generation: u64) {
        if self
            .inner
            .generation
            .fetch_max(generation, Ordering::AcqRel)
            < generation
        {
            self.inner.invalidations.inc();
        }
        let current = self.inner.generation.load(Ordering::Acquire);
        self.inner.generation_gauge.set(gauge_value(current));
    }

    /// Whether this cache learns of writes from the MongoDB change stream (the memory
    /// backend); the read model's follower then drives it.
    pub(crate) fn follows_change_stream(&self) -> bool {
        self.inner.enabled && self.inner.redis.is_none()
    }

    pub(crate) fn set_watching(&self, live: bool) {
        self.inner.watching.store(live, Ordering::Release);
        self.inner.following.set(i64::from(live));
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
        let versioned = format!("{}|{key}", inner.generation.load(Ordering::Acquire));
        let found = AtomicU8::new(IN_TIER);
        let result = inner
            .entries
            .try_get_with_by_ref(&versioned, async {
                if let Some(redis) = &inner.redis {
                    match redis.get(&versioned).await {
                        Ok(Some(c)) => {
                            found.store(IN_REDIS, Ordering::Relaxed);
                            return Ok(Arc::new(c));
                        }
                        Ok(None) => {}
                        Err(_) => inner.errors.inc(),
                    }
                }
                found.store(IN_DATABASE, Ordering::Relaxed);
                let c = load().await?;
                if let Some(redis) = &inner.redis {
                    if redis.put(&versioned, &c).await.is_err() {
                        inner.errors.inc();
                    }
                }
                Ok(Arc::new(c))
            })
            .await;
        let found = found.load(Ordering::Relaxed);
        match result {
            Ok(c) => {
                let source = match found {
                    IN_TIER if inner.redis.is_some() => {
                        inner.local_hits.inc();
                        Source::Hit
                    }
                    IN_TIER | IN_REDIS => {
                        inner.hits.inc();
                        Source::Hit
                    }
                    _ => {
                        inner.misses.inc();
                        Source::Miss
                    }
                };
                if found != IN_TIER {
                    inner.last_good.insert(key.to_string(), c.clone()).await;
                }
                Ok((c, source))
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

    /// Follows catalogue changes for as long as the process lives (the change stream for the
    /// memory backend, the Redis subscription for the Redis one). While the follower is down
    /// the cache is bypassed; it is re-established with back-off. With `read_model`, the read
    /// model follows the change stream and drives the memory backend itself.
    pub async fn follow_changes(self, store: CourseStore, read_model: bool) {
        if !self.inner.enabled {
            tracing::info!("catalogue cache disabled ([cache] enabled = false)");
        } else if self.inner.redis.is_some() {
            self.follow_redis().await
        } else if !read_model {
            self.follow_change_stream(store).await
        }
    }

    async fn follow_change_stream(self, store: CourseStore) {
        let mut backoff = Backoff::new();
        loop {
            let opened = match store.unless_silent("watch", store.watch()).await {
                Ok(opened) => opened,
                Err(silent) => {
                    backoff.report(&silent, "cannot follow catalogue changes");
                    backoff.wait().await;
                    continue;
                }
            };
            match opened {
                Ok(mut stream) => {
                    // Anything cached before the stream was open may have missed a write.
                    self.invalidate().await;
                    self.set_watching(true);
                    tracing::info!("following catalogue changes; cache enabled");
                    backoff.reset();
                    loop {
                        let next = store.unless_silent("watch", stream.next_if_any()).await;
                        match next {
                            Ok(Ok(Some(_))) => self.invalidate().await,
                            Ok(Ok(None)) => {}
                            Ok(Err(e)) => {
                                tracing::warn!(error = %e, "change stream broke; cache bypassed until it is back");
                                break;
                            }
                            Err(silent) => {
                                tracing::warn!(%silent, "the change stream went silent; cache bypassed until it is back");
                                break;
                            }
                        }
                    }
                    self.set_watching(false);
                }
                Err(e) => backoff.report(&e, "cannot follow catalogue changes"),
            }
            backoff.wait().await;
        }
    }

    async fn follow_redis(self) {
        let Some(redis) = &self.inner.redis else {
            return;
        };
        let mut backoff = Backoff::new();
        loop {
            match redis.subscribe().await {
                Ok(pubsub) => {
                    let (mut sink, mut messages) = pubsub.split();
                    // Subscribed first, then bumped: whatever was cached while this instance
                    // was not listening (or could not publish its own write) is now
                    // unreachable everywhere, and no later bump can be missed.
                    match redis.bump().await {
                        Ok(generation) => {
                            self.advance_to(generation);
                            self.set_watching(true);
                            tracing::info!(
                                "following catalogue changes through Redis; cache enabled"
                            );
                            backoff.reset();
                            let why = self.listen(redis, &mut sink, &mut messages).await;
                            self.set_watching(false);
                            tracing::warn!("{why}; cache bypassed until it is back");
                        }
                        Err(e) => {
                            backoff.report(&e, "cannot bump the catalogue generation in Redis")
                        }
                    }
                }
                Err(e) => backoff.report(&e, "cannot subscribe to catalogue changes in Redis"),
            }
            backoff.wait().await;
        }
    }

    /// Applies published generations until the subscription breaks; says why it ended.
    async fn listen(
        &self,
        redis: &RedisTier,
        sink: &mut ::redis::aio::PubSubSink,
        messages: &mut ::redis::aio::PubSubStream,
    ) -> &'static str {
        use futures_util::StreamExt;
        // A Redis that hangs (rather than closing the connection) is noticed by the ping.
        let mut ping = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                msg = messages.next() => match msg {
                    Some(msg) => match msg.get_payload::<u64>() {
                        Ok(generation) => self.advance_to(generation),
                        Err(e) => tracing::warn!(error = %e, "ignoring a malformed generation message"),
                    },
                    None => return "the Redis subscription closed",
                },
                _ = ping.tick() => {
                    let pong = tokio::time::timeout(redis.timeout(), sink.ping::<()>()).await;
                    if !matches!(pong, Ok(Ok(()))) {
                        return "Redis stopped answering pings";
                    }
                }
                _ = redis.resubscribe.notified() => return "a generation bump failed",
            }
        }
    }
}

/// Re-establishing a follower: 100 ms doubling to 5 s; a failure is logged once per outage.
pub(crate) struct Backoff {
    delay: Duration,
    reported: bool,
}

impl Backoff {
    pub(crate) fn new() -> Backoff {
        Backoff {
            delay: Duration::from_millis(100),
            reported: false,
        }
    }

    pub(crate) fn reset(&mut self) {
        *self = Backoff::new();
    }

    pub(crate) fn report(&mut self, error: &dyn std::fmt::Display, what: &str) {
        if !self.reported {
            tracing::warn!(error = %error, "{what}; retrying (meanwhile reads bypass it)");
            self.reported = true;
        }
    }

    pub(crate) async fn wait(&mut self) {
        tokio::time::sleep(self.delay).await;
        self.delay = (self.delay * 2).min(Duration::from_secs(5));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn filled(
        cache: &moka::future::Cache<String, Arc<Cached>>,
        n: usize,
        size: usize,
    ) -> u64 {
        for i in 0..n {
            let body = Bytes::from(vec![b'x'; size]);
            cache
                .insert(format!("k{i}"), Arc::new(Cached::hashed(body)))
                .await;
        }
        cache.run_pending_tasks().await;
        cache.entry_count()
    }

    #[tokio::test]
    async fn stores_are_bounded_by_entries_and_by_bytes() {
        let ttl = Duration::from_secs(60);
        // Small entries: the count bound holds.
        let count = filled(&bounded(10, 1000, ttl), 50, 1).await;
        assert!((1..=10).contains(&count), "{count} entries");
        // Large entries: the byte bound holds first.
        let cache = bounded(10, 1000, ttl);
        let count = filled(&cache, 5, 400).await;
        assert!((1..=2).contains(&count), "{count} entries");
        assert!(cache.weighted_size() <= 1000);
        // No tier at all.
        assert_eq!(filled(&bounded(0, 1000, ttl), 5, 1).await, 0);
    }
}
