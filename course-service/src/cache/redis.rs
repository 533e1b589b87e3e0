//! The Redis tier: entries shared by every instance, and the catalogue generation spread by
//! pub/sub.
//!
//! - Keys: `mc:{database}:{generation}|{key}`, each with the TTL (`SET … PX`), so entries of
//!   an old generation simply expire.
//! - The generation lives in Redis (`mc:{database}:generation`); a write bumps it and
//!   publishes the new value in one script, so no instance can see the bump without the
//!   message being on its way. The key starts at the current Unix time in milliseconds, so a
//!   Redis that restarts empty still hands out numbers above every one used before.
//! - Every call is bounded by `timeout`: a slow or dead Redis costs a request at most that
//!   long, and only until the follower notices the outage and the cache is bypassed.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use redis::aio::{ConnectionManager, ConnectionManagerConfig, PubSub};
use redis::{AsyncCommands, Client, RedisError, Script};
use tokio::sync::Notify;

use super::Cached;

/// `[cache]` settings of the Redis backend.
#[derive(Debug, Clone)]
pub struct RedisSettings {
    /// The parsed `REDIS_URL` (no connection is made until the service starts).
    pub client: Client,
    /// Upper bound on each Redis call.
    pub timeout: Duration,
    /// Entries of the in-process tier in front of Redis; 0 turns it off.
    pub local_max_entries: u64,
    /// Prefix of every key and of the channel: `mc:{database}`.
    pub namespace: String,
}

/// Bumps the generation and publishes it, atomically.
const BUMP: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then redis.call('SET', KEYS[1], ARGV[1]) end
local g = redis.call('INCR', KEYS[1])
redis.call('PUBLISH', ARGV[2], string.format('%d', g))
return g
";

pub(super) struct RedisTier {
    client: Client,
    conn: ConnectionManager,
    timeout: Duration,
    ttl: Duration,
    namespace: String,
    /// `{namespace}:generation`: the key and the channel.
    generation_key: String,
    bump: Script,
    /// A call failed and the failure was logged; cleared by the next success.
    failing: AtomicBool,
    /// Asks the follower to drop its subscription and start over (a bump failed).
    pub(super) resubscribe: Notify,
}

/// Why a Redis call did not answer.
#[derive(Debug)]
pub(super) enum TierError {
    Redis(RedisError),
    Timeout(Duration),
    Corrupt,
}

impl std::fmt::Display for TierError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TierError::Redis(e) => write!(f, "{e}"),
            TierError::Timeout(d) => write!(f, "no answer within {d:?}"),
            TierError::Corrupt => f.write_str("a cached value is not in our format"),
        }
    }
}

impl RedisTier {
    pub(super) fn new(settings: &RedisSettings, ttl: Duration) -> Result<RedisTier, RedisError> {
        // Few, quick reconnection attempts: while Redis is away the follower bypasses the
        // cache, so nothing should wait on a long reconnect schedule.
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(settings.timeout))
            .set_response_timeout(Some(settings.timeout))
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_millis(500));
        let conn = ConnectionManager::new_lazy_with_config(settings.client.clone(), config)?;
        Ok(RedisTier {
            client: settings.client.clone(),
            conn,
            timeout: settings.timeout,
            ttl,
            generation_key: format!("{}:generation", settings.namespace),
            namespace: settings.namespace.clone(),
            bump: Script::new(BUMP),
            failing: AtomicBool::new(false),
            resubscribe: Notify::new(),
        })
    }

    fn key(&self, versioned: &str) -> String {
        format!("{}:{versioned}", self.namespace)
    }

    async fn bounded<T>(
        &self,
        call: impl std::future::Future<Output = Result<T, RedisError>>,
    ) -> Result<T, TierError> {
        let result = match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(TierError::Redis(e)),
            Err(_) => Err(TierError::Timeout(self.timeout)),
        };
        match &result {
            Ok(_) => {
                if self.failing.swap(false, Ordering::AcqRel) {
                    tracing::info!("redis cache answering again");
                }
            }
            Err(e) => {
                if !self.failing.swap(true, Ordering::AcqRel) {
                    tracing::warn!(error = %e, "redis cache unavailable; serving from the database until it is back");
                }
            }
        }
        result
    }

    /// The entry under `versioned` (`{generation}|{key}`), if Redis has it.
    pub(super) async fn get(&self, versioned: &str) -> Result<Option<Cached>, TierError> {
        let mut conn = self.conn.clone();
        let key = self.key(versioned);
        let raw: Option<Vec<u8>> = self.bounded(conn.get(&key)).await?;
        raw.map(|v| decode(Bytes::from(v)).ok_or(TierError::Corrupt))
            .transpose()
    }

    /// Stores `cached` under `versioned` with the TTL.
    pub(super) async fn put(&self, versioned: &str, cached: &Cached) -> Result<(), TierError> {
        let mut conn = self.conn.clone();
        let key = self.key(versioned);
        let ttl_ms = u64::try_from(self.ttl.as_millis()).unwrap_or(u64::MAX);
        self.bounded(conn.pset_ex::<_, _, ()>(&key, encode(cached), ttl_ms))
            .await
    }

    /// Bumps the shared generation and publishes it; returns the new value.
    pub(super) async fn bump(&self) -> Result<u64, TierError> {
        let mut conn = self.conn.clone();
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let mut invocation = self.bump.key(&self.generation_key);
        invocation.arg(now_ms).arg(&self.generation_key);
        self.bounded(invocation.invoke_async(&mut conn)).await
    }

    /// A fresh subscription to the generation channel (its own connection, as pub/sub needs).
    pub(super) async fn subscribe(&self) -> Result<PubSub, TierError> {
        let connect = async {
            let mut pubsub = self.client.get_async_pubsub().await?;
            pubsub.subscribe(&self.generation_key).await?;
            Ok(pubsub)
        };
        match tokio::time::timeout(self.timeout * 4, connect).await {
            Ok(r) => r.map_err(TierError::Redis),
            Err(_) => Err(TierError::Timeout(self.timeout * 4)),
        }
    }

    pub(super) fn timeout(&self) -> Duration {
        self.timeout
    }
}

/// `etag \n body`: an entity tag never contains a newline.
fn encode(cached: &Cached) -> Vec<u8> {
    let mut out = Vec::with_capacity(cached.etag.len() + 1 + cached.body.len());
    out.extend_from_slice(cached.etag.as_bytes());
    out.push(b'\n');
    out.extend_from_slice(&cached.body);
    out
}

fn decode(raw: Bytes) -> Option<Cached> {
    let split = raw.iter().position(|&b| b == b'\n')?;
    let etag = std::str::from_utf8(&raw[..split]).ok()?.to_string();
    Some(Cached {
        etag,
        body: raw.slice(split + 1..),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_and_garbage_is_refused() {
        let c = Cached::hashed(Bytes::from_static(b"{\"a\":\"x\ny\"}"));
        let back = decode(Bytes::from(encode(&c))).unwrap();
        assert_eq!(
            (back.etag.as_str(), &back.body[..]),
            (c.etag.as_str(), &c.body[..])
        );
        assert!(decode(Bytes::from_static(b"no separator")).is_none());
        assert!(decode(Bytes::from_static(b"\xff\xfe\n{}")).is_none());
    }
}
