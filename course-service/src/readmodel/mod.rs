//! The read model: the whole catalogue in this instance's memory, indexed for every listing
//! query, kept current by the MongoDB change stream. While it follows the stream, every read
//! (`GET /api/courses`, `GET /api/courses/{id}`) is answered from it and a write costs the
//! readers one index update, not a recompute.
//!
//! - **Load.** The change stream is opened *first*, then every course is read (and indexed as
//!   it arrives, on a blocking thread); the events that arrive during the read are replayed on
//!   top, in order. Reads are served from the model only once it is caught up: the stream
//!   has nothing more to give, or has delivered an event at or after the server's time when
//!   it was opened (while writes keep coming, the first never happens). So no answer mixes
//!   old and new, and `/readyz` says ready only from then on.
//! - **Follow.** Each event is applied in stream order: inserts, replaces and updates carry the
//!   document (`fullDocument: updateLookup`), deletes the `_id`. The stream's resume token is
//!   kept after every batch.
//! - **Gaps.** A broken stream is reopened after the last token, so no event is missed. If the
//!   server no longer has that history (`ChangeStreamHistoryLost`, an invalid token), or the
//!   collection was dropped or renamed, the model is loaded again from scratch.
//! - **While not following** (loading, stream broken) reads go to the database through the
//!   cache, as with the model disabled; if the database is unreachable too, the model's
//!   content is served as stale for the cache's stale window, without asking the database
//!   again until the model follows again.
//! - **Read your writes.** A write waits (boundedly) until this instance's model shows it, so
//!   the writer's next read through the same instance sees it; the other instances see it as
//!   soon as their stream delivers the event.
//!
//! - **Snapshots** (`snapshot`, when `[read_model] snapshot` is set). The model is written to
//!   disk with its resume token now and then; an instance started again reads it and resumes
//!   the stream after the token instead of reading the catalogue from the database. A snapshot
//!   of another collection, a broken one, or one whose history the server no longer has is
//!   passed over for a load.
//!
//! - **Suggestions.** A search that finds nothing gets another that finds courses, its
//!   misspelt words replaced by the catalogue's closest ones (`suggest`): a hint beside the
//!   listing, which itself stays the database's answer.
//!
//! The database stays the source of truth; `course-service/tests/readmodel.rs` checks that
//! every query is answered the same from both, after restarts, missed events and concurrent
//! writes.

mod index;
mod snapshot;
mod suggest;

pub use self::index::{Index, Page, Suggestion};

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard};
use std::time::Duration;

use mongodb::bson::{oid::ObjectId, Document, Timestamp};
use mongodb::change_stream::event::{ChangeStreamEvent, OperationType, ResumeToken};
use mongodb::change_stream::ChangeStream;
use mongodb::error::ErrorKind;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::cache::{Backoff, CatalogCache};
use crate::config::Snapshots;
use crate::metrics::Metrics;
use crate::model::{Course, CourseDoc};
use crate::query::ListQuery;
use crate::store::{CourseStore, Identity, Silent};

/// The longest a load waits for one batch before it gives up and starts again. Far above
/// a change stream's bound: a server busy with several loads at once takes seconds per batch
/// (5.5 s was exceeded by three instances starting together at 100 000 courses on
/// SecantusDB, and each load given up on was started again from nothing), and a partition is
/// noticed sooner by the driver's heartbeat anyway.
const LOAD_SILENCE: Duration = Duration::from_secs(30);

/// Documents handed at a time to the thread building the index during a load.
const LOAD_BATCH: usize = 1024;

/// How long a write waits for this instance's model to show it before answering anyway.
pub const SHOW_WRITE_WITHIN: Duration = Duration::from_secs(2);

/// Server error codes after which a change stream cannot be resumed: the history after the
/// token is gone, or the token is not one this server can use.
const RELOAD_CODES: &[i32] = &[
    260, // InvalidResumeToken
    280, // ChangeStreamFatalError
    286, // ChangeStreamHistoryLost
];

#[derive(Clone)]
pub struct ReadModel {
    shared: Arc<Shared>,
}

struct Shared {
    enabled: bool,
    index: RwLock<Index>,
    /// Counts changes applied (a load counts as one); writers wait on it.
    applied: watch::Sender<u64>,
    /// The model is caught up with the change stream: reads are answered from it.
    following: AtomicBool,
    /// When it stopped following (`None` while it follows or before the first load).
    lost_at: Mutex<Option<Instant>>,
    /// It has been loaded at least once (its content can be served as stale).
    loaded: AtomicBool,
    /// It has followed the change stream at least once: readiness.
    followed: AtomicBool,
    /// The start is over: the model followed for the first time, or its first attempt to
    /// load failed (see [`ReadModel::started`]).
    started: watch::Sender<bool>,
    /// A read found the database unreachable while the model was not following: until the
    /// model follows again, reads are answered from it as stale without asking the database
    /// again (each asking would cost the server-selection timeout).
    unreachable: AtomicBool,
    /// Where the model is kept on disk (`snapshot`), if anywhere.
    snapshots: Option<Snapshots>,
    /// Counts the changes a snapshot would hold that the one on disk may not: a load from the
    /// database and every event applied.
    changes: AtomicU64,
    metrics: Metrics,
}

/// Why a stream stopped being followed.
enum Ended {
    /// The model must be loaded again (`reason` is the metric label).
    Reload(&'static str),
    /// A broken stream: reopen it after the last token.
    Broken(mongodb::error::Error),
    /// The database said nothing for too long (a partition): reopen it after the last token.
    Silent(Silent),
}

impl ReadModel {
    pub fn new(enabled: bool, snapshots: Option<Snapshots>, metrics: &Metrics) -> ReadModel {
        ReadModel {
            shared: Arc::new(Shared {
                enabled,
                index: RwLock::new(Index::default()),
                applied: watch::channel(0).0,
                following: AtomicBool::new(false),
                lost_at: Mutex::new(None),
                loaded: AtomicBool::new(false),
                followed: AtomicBool::new(false),
                started: watch::channel(false).0,
                unreachable: AtomicBool::new(false),
                snapshots,
                changes: AtomicU64::new(0),
                metrics: metrics.clone(),
            }),
        }
    }

    pub fn is_enabled(&self) -> bool {
        self.shared.enabled
    }

    /// Has answered reads at least once (or is disabled): what readiness waits for. Not
    /// just loaded: a model loaded from a snapshot still replays the events since, and its
    /// instance accepts connections only once it follows (`server`), so a reload that
    /// drained the old instance on "loaded" would leave connections waiting meanwhile.
    pub fn has_followed(&self) -> bool {
        !self.shared.enabled || self.shared.followed.load(Ordering::Acquire)
    }

    /// Resolves when a starting instance should take traffic: once its model answers reads,
    /// or once its first attempt to load has failed (the database is unreachable or too
    /// slow: the instance then serves what it can without the model, as before it had one),
    /// or after `wait`. At once when the model is disabled.
    pub async fn started(&self, wait: Duration) {
        if !self.shared.enabled {
            return;
        }
        let mut started = self.shared.started.subscribe();
        let _ = tokio::time::timeout(wait, started.wait_for(|s| *s)).await;
    }

    /// The first attempt is over, whichever way (see [`ReadModel::started`]).
    fn start_over(&self) {
        self.shared
            .started
            .send_if_modified(|s| !std::mem::replace(s, true));
    }

    /// Reads are being answered from the model.
    pub fn is_following(&self) -> bool {
        self.shared.following.load(Ordering::Acquire)
    }

    fn read(&self) -> RwLockReadGuard<'_, Index> {
        // A panic while holding the lock cannot leave the index half-updated in a way that
        // matters more than losing reads altogether: keep serving.
        self.shared
            .index
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Index> {
        self.shared
            .index
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The page `q` asks for, when the model follows the database.
    pub fn list(&self, q: &ListQuery) -> Option<Page> {
        self.is_following().then(|| self.read().list(q))
    }

    /// Course `id` (`Some(None)`: there is none), when the model follows the database.
    pub fn get(&self, id: &ObjectId) -> Option<Option<Arc<Course>>> {
        self.is_following().then(|| self.read().get(id))
    }

    /// Whether the model may stand in for an unreachable database: it was loaded, and lost
    /// its stream less than `window` ago.
    fn servable_stale(&self, window: Duration) -> bool {
        if !self.shared.loaded.load(Ordering::Acquire) {
            return false;
        }
        let lost_at = *self
            .shared
            .lost_at
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        lost_at.is_none_or(|at| at.elapsed() <= window)
    }

    /// A read found the database unreachable: until the model follows again (its follower
    /// keeps trying), [`ReadModel::presumed_unreachable`] says so.
    pub fn database_unreachable(&self) {
        if !self.is_following() {
            self.shared.unreachable.store(true, Ordering::Release);
        }
    }

    /// The database was found unreachable and the model has not followed since: answer from
    /// the model (stale) rather than wait for the database again.
    pub fn presumed_unreachable(&self) -> bool {
        self.shared.unreachable.load(Ordering::Acquire) && !self.is_following()
    }

    /// [`ReadModel::list`] from the model however current, within the stale `window`.
    pub fn list_stale(&self, q: &ListQuery, window: Duration) -> Option<Page> {
        self.servable_stale(window).then(|| self.read().list(q))
    }

    /// [`ReadModel::get`] from the model however current, within the stale `window`.
    pub fn get_stale(&self, id: &ObjectId, window: Duration) -> Option<Option<Arc<Course>>> {
        self.servable_stale(window).then(|| self.read().get(id))
    }

    /// Waits until the model shows course `id` at `version` or later (`None`: shows it
    /// deleted), for at most [`SHOW_WRITE_WITHIN`]. Returns at once when not following.
    pub async fn show_write(&self, id: ObjectId, version: Option<i64>) {
        let shown = |index: &Index| match (index.get(&id), version) {
            (Some(course), Some(v)) => course.version >= v,
            (None, None) => true,
            _ => false,
        };
        let mut applied = self.shared.applied.subscribe();
        let _ = tokio::time::timeout(SHOW_WRITE_WITHIN, async {
            loop {
                if !self.is_following() || shown(&self.read()) {
                    return;
                }
                if applied.changed().await.is_err() {
                    return;
                }
            }
        })
        .await;
    }

    fn set_following(&self, following: bool, cache: &CatalogCache) {
        let was = self.shared.following.swap(following, Ordering::AcqRel);
        if following {
            self.shared.unreachable.store(false, Ordering::Release);
            self.shared.followed.store(true, Ordering::Release);
            self.start_over();
        }
        self.shared
            .metrics
            .model_following
            .set(i64::from(following));
        *self
            .shared
            .lost_at
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = (!following).then(Instant::now);
        if cache.follows_change_stream() {
            cache.set_watching(following);
        }
        if was != following {
            if following {
                tracing::info!(courses = self.read().len(), "read model following changes");
            } else {
                tracing::warn!("read model stopped following; reads go to the database");
            }
        }
        // Wake writers waiting on a model that no longer follows.
        self.shared.applied.send_modify(|n| *n += 1);
    }

    /// Loads the model (from its snapshot on disk when there is a usable one, else from the
    /// database) and follows the change stream for as long as the process lives.
    pub async fn follow(self, store: CourseStore, cache: CatalogCache) {
        if !self.shared.enabled {
            return;
        }
        let mut resume: Option<ResumeToken> = None;
        let mut reason = "start";
        let mut backoff = Backoff::new();
        // Put in place once the stream opens after its token (the server still has the
        // history since), so the model never holds what it cannot bring up to date.
        let mut restored = self.restore(&store).await;
        if let Some((_, token, _)) = &restored {
            resume = Some(token.clone());
        }
        let mut saver = self.shared.snapshots.clone().map(Saver::new);
        loop {
            let opened = store
                .unless_silent("watch", store.follow(resume.clone()))
                .await;
            let mut stream = match opened {
                Ok(Ok(stream)) => stream,
                Err(silent) => {
                    backoff.report(&silent, "cannot open the change stream");
                    self.start_over();
                    backoff.wait().await;
                    continue;
                }
                Ok(Err(e))
                    if restored.is_some() && matches!(e.kind.as_ref(), ErrorKind::Command(_)) =>
                {
                    // The server refused the snapshot's token (its history is gone, or the
                    // token is not one it knows): load from the database at once.
                    tracing::warn!(error = %e, "cannot resume the change stream from the snapshot; loading the catalogue from the database");
                    restored = None;
                    resume = None;
                    continue;
                }
                Ok(Err(e)) => {
                    if resume.is_some() && needs_reload(&e) {
                        tracing::warn!(error = %e, "cannot resume the change stream; loading the catalogue again");
                        resume = None;
                        restored = None;
                        reason = "history_lost";
                    } else {
                        backoff.report(&e, "cannot open the change stream");
                    }
                    self.start_over();
                    backoff.wait().await;
                    continue;
                }
            };
            if let Some((index, _, started)) = restored.take() {
                self.install(index, "snapshot", started);
            } else if resume.is_none() {
                // The stream is open before the catalogue is read: whatever is written during
                // the read is replayed from it afterwards.
                if let Err(e) = self.load(&store, reason).await {
                    backoff.report(&e, "cannot load the catalogue");
                    self.start_over();
                    backoff.wait().await;
                    continue;
                }
                resume = stream.resume_token();
            }
            backoff.reset();
            // Where the stream must reach for the model to be current (`apply_stream`).
            let now = store.operation_time().await;
            let ended = self
                .apply_stream(
                    &store,
                    &mut stream,
                    &mut resume,
                    &cache,
                    now,
                    saver.as_mut(),
                )
                .await;
            self.set_following(false, &cache);
            match ended {
                Ended::Reload(why) => {
                    tracing::warn!(
                        reason = why,
                        "change stream history unusable; loading the catalogue again"
                    );
                    resume = None;
                    reason = why;
                    if let Some(saver) = saver.as_mut() {
                        // The collection may have been dropped and made again.
                        saver.of = None;
                    }
                }
                Ended::Broken(e) => {
                    tracing::warn!(error = %e, "change stream broke; resuming after the last event")
                }
                Ended::Silent(silent) => {
                    tracing::warn!(
                        %silent,
                        "the change stream went silent; reads leave the model until it is back"
                    );
                }
            }
            backoff.wait().await;
        }
    }

    /// The snapshot on disk, read and indexed, if there is one of this collection: with the
    /// token to resume after, and when reading it began.
    async fn restore(&self, store: &CourseStore) -> Option<(Index, ResumeToken, Instant)> {
        let path = self.shared.snapshots.as_ref()?.path.clone();
        let started = Instant::now();
        let of = match store.unless_silent("identity", store.identity()).await {
            Ok(Ok(Some(of))) => of,
            // No collection yet: nothing to take up.
            Ok(Ok(None)) => return None,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cannot tell which collection this is; not using the snapshot");
                return None;
            }
            Err(silent) => {
                tracing::warn!(%silent, "cannot tell which collection this is; not using the snapshot");
                return None;
            }
        };
        let read = tokio::task::spawn_blocking(move || {
            snapshot::read(&path, &of).map(|s| (Index::build(s.courses), s.token, started))
        })
        .await;
        match read {
            Ok(Ok(restored)) => {
                tracing::info!(courses = restored.0.len(), took = ?started.elapsed(), "read model snapshot read");
                Some(restored)
            }
            Ok(Err(why)) => {
                tracing::info!(%why, "not starting from a snapshot; loading the catalogue from the database");
                None
            }
            Err(e) => {
                tracing::warn!(error = %e, "reading the snapshot failed; loading the catalogue from the database");
                None
            }
        }
    }

    /// Reads every course into a new index and puts it in place of the old one.
    async fn load(&self, store: &CourseStore, reason: &'static str) -> Result<(), String> {
        let started = Instant::now();
        // Indexed as they are read: the index is built on a blocking thread from the documents
        // this task reads, so the load takes about as long as the slower of the two, not their
        // sum. (If the read fails, the channel closes, the partial index is dropped.)
        let (batches, mut received) = tokio::sync::mpsc::channel::<Vec<CourseDoc>>(4);
        let build = tokio::task::spawn_blocking(move || {
            Index::build(std::iter::from_fn(|| received.blocking_recv()).flatten())
        });
        // However long the whole load takes, each batch comes before the database is silent
        // for too long.
        let mut cursor = store
            .unless_silent_for("scan", LOAD_SILENCE, store.scan())
            .await
            .map_err(|silent| silent.to_string())?
            .map_err(|e| e.to_string())?;
        let mut skipped = 0usize;
        let mut batch = Vec::with_capacity(LOAD_BATCH);
        loop {
            let more = store
                .unless_silent_for("scan", LOAD_SILENCE, cursor.advance())
                .await
                .map_err(|silent| silent.to_string())?
                .map_err(|e| e.to_string())?;
            if more {
                match cursor.deserialize_current() {
                    Ok(doc) => batch.push(doc),
                    Err(_) => skipped += 1,
                }
            }
            if batch.len() == LOAD_BATCH || (!more && !batch.is_empty()) {
                let full = std::mem::replace(&mut batch, Vec::with_capacity(LOAD_BATCH));
                batches
                    .send(full)
                    .await
                    .map_err(|_| "building the index failed".to_string())?;
            }
            if !more {
                break;
            }
        }
        drop(batches);
        let read_in = started.elapsed();
        let index = build
            .await
            .map_err(|e| format!("building the index failed: {e}"))?;
        // What indexing took beyond the read.
        let indexed_in = started.elapsed() - read_in;
        if skipped > 0 {
            tracing::warn!(
                skipped,
                "documents that are not courses were left out of the read model"
            );
        }
        tracing::debug!(?read_in, ?indexed_in, "read model read and indexed");
        self.shared.changes.fetch_add(1, Ordering::AcqRel);
        self.install(index, reason, started);
        Ok(())
    }

    /// Puts a loaded `index` in place of the old one (`reason`: the metric label).
    fn install(&self, index: Index, reason: &'static str, started: Instant) {
        let courses = index.len();
        *self.write() = index;
        self.shared.loaded.store(true, Ordering::Release);
        self.shared.applied.send_modify(|n| *n += 1);
        let m = &self.shared.metrics;
        m.model_courses
            .set(i64::try_from(courses).unwrap_or(i64::MAX));
        m.model_loads.with_label_values(&[reason]).inc();
        m.model_load_seconds.set(started.elapsed().as_secs_f64());
        tracing::info!(courses, took = ?started.elapsed(), reason, "read model loaded");
    }

    /// Applies events until the stream ends; follows (serves reads) once caught up: once the
    /// stream has nothing more to give, or once it delivers an event at or after `now` (the
    /// server's time when the stream was opened: every write acknowledged before it has been
    /// applied). Waiting for an empty batch alone never ends while writes keep coming, which
    /// a stream resumed from a snapshot, with events to replay, meets at once.
    async fn apply_stream(
        &self,
        store: &CourseStore,
        stream: &mut ChangeStream<ChangeStreamEvent<Document>>,
        resume: &mut Option<ResumeToken>,
        cache: &CatalogCache,
        now: Option<Timestamp>,
        mut saver: Option<&mut Saver>,
    ) -> Ended {
        loop {
            let next = match store.unless_silent("watch", stream.next_if_any()).await {
                Ok(next) => next,
                Err(silent) => return Ended::Silent(silent),
            };
            let caught_up = match next {
                Ok(Some(event)) => {
                    let at = event.cluster_time;
                    if let Err(why) = self.apply(event) {
                        return Ended::Reload(why);
                    }
                    *resume = stream.resume_token();
                    if cache.follows_change_stream() {
                        cache.invalidate().await;
                    }
                    at.zip(now).is_some_and(|(at, now)| at >= now)
                }
                Ok(None) => {
                    *resume = stream.resume_token();
                    true
                }
                Err(e) if needs_reload(&e) => return Ended::Reload("history_lost"),
                Err(e) => return Ended::Broken(e),
            };
            if caught_up && !self.is_following() {
                if cache.follows_change_stream() {
                    // Anything the cache holds may predate what the model now shows.
                    cache.invalidate().await;
                }
                self.set_following(true, cache);
            }
            // Between two events: the model is exactly what the token says.
            if let (Some(saver), Some(token)) = (saver.as_deref_mut(), resume.as_ref()) {
                if self.is_following() {
                    saver.save_if_due(self, store, token).await;
                }
            }
        }
    }

    /// Applies one change event; `Err` names why the model must be loaded again instead.
    fn apply(&self, event: ChangeStreamEvent<Document>) -> Result<(), &'static str> {
        let id = event
            .document_key
            .as_ref()
            .and_then(|k| k.get_object_id("_id").ok());
        let kind = match &event.operation_type {
            OperationType::Insert => "insert",
            OperationType::Update => "update",
            OperationType::Replace => "replace",
            OperationType::Delete => "delete",
            OperationType::Drop
            | OperationType::DropDatabase
            | OperationType::Rename
            | OperationType::Invalidate => return Err("invalidated"),
            _ => return Ok(()),
        };
        {
            let mut index = self.write();
            match (kind, event.full_document) {
                ("delete", _) | (_, None) => {
                    // Deleted, or (an update's lookup) deleted since: a delete event follows.
                    if let Some(id) = id {
                        index.remove(&id);
                    }
                }
                (_, Some(raw)) => match mongodb::bson::from_document::<CourseDoc>(raw) {
                    Ok(doc) => index.upsert(doc),
                    Err(e) => {
                        tracing::warn!(?id, error = %e, "a changed document is not a course; left out of the read model");
                        if let Some(id) = id {
                            index.remove(&id);
                        }
                    }
                },
            }
            let m = &self.shared.metrics;
            m.model_courses
                .set(i64::try_from(index.len()).unwrap_or(i64::MAX));
            m.model_events.with_label_values(&[kind]).inc();
        }
        self.shared.changes.fetch_add(1, Ordering::AcqRel);
        self.shared.applied.send_modify(|n| *n += 1);
        Ok(())
    }
}

/// Writes the model to disk now and then (`snapshot`), from the task that applies the events.
struct Saver {
    snapshots: Snapshots,
    /// When the last snapshot was begun (`None`: none yet by this process).
    last: Option<Instant>,
    /// [`Shared::changes`] at the last snapshot.
    saved: u64,
    /// The collection, asked once (again after a reload).
    of: Option<Identity>,
    writing: Option<tokio::task::JoinHandle<()>>,
}

impl Saver {
    fn new(snapshots: Snapshots) -> Saver {
        Saver {
            snapshots,
            last: None,
            saved: 0,
            of: None,
            writing: None,
        }
    }

    /// Begins a snapshot of `model` at `token` if it changed since the last one, the last
    /// is `interval` old and done.
    async fn save_if_due(&mut self, model: &ReadModel, store: &CourseStore, token: &ResumeToken) {
        let changes = model.shared.changes.load(Ordering::Acquire);
        let due = changes != self.saved
            && self
                .last
                .is_none_or(|at| at.elapsed() >= self.snapshots.interval)
            && self.writing.as_ref().is_none_or(|w| w.is_finished());
        if !due {
            return;
        }
        // Tried at most once an interval, whether it is written or not.
        self.last = Some(Instant::now());
        if self.of.is_none() {
            self.of = match store.unless_silent("identity", store.identity()).await {
                Ok(Ok(of)) => of,
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "cannot tell which collection this is; no snapshot");
                    None
                }
                Err(silent) => {
                    tracing::warn!(%silent, "cannot tell which collection this is; no snapshot");
                    None
                }
            };
        }
        let Some(of) = self.of.clone() else {
            model
                .shared
                .metrics
                .model_snapshots
                .with_label_values(&["failed"])
                .inc();
            return;
        };
        // A pointer copy per course under the lock; the documents are made and written on a
        // blocking thread.
        let courses = model.read().held();
        self.saved = changes;
        let (path, token) = (self.snapshots.path.clone(), token.clone());
        let results = model.shared.metrics.model_snapshots.clone();
        self.writing = Some(tokio::task::spawn_blocking(move || {
            let started = std::time::Instant::now();
            let written = snapshot::write(&path, &of, &token, &courses);
            let result = if written.is_ok() { "written" } else { "failed" };
            results.with_label_values(&[result]).inc();
            match written {
                Ok(bytes) => tracing::info!(
                    path = %path.display(),
                    courses = courses.len(),
                    bytes,
                    took = ?started.elapsed(),
                    "read model snapshot written"
                ),
                Err(e) => tracing::warn!(
                    path = %path.display(),
                    error = %e,
                    "cannot write the read model snapshot"
                ),
            }
        }));
    }
}

/// Whether a change stream error means its history cannot be resumed.
fn needs_reload(e: &mongodb::error::Error) -> bool {
    matches!(e.kind.as_ref(), ErrorKind::Command(c) if RELOAD_CODES.contains(&c.code))
        || e.contains_label("NonResumableChangeStreamError")
}
