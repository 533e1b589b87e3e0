//! `CourseStore`: every MongoDB operation the service performs, each bounded by the operation
//! timeout, timed into `db_operation_duration_seconds`, and classified into a `StoreError` the
//! API maps to a status (duplicate → 409, unreachable → 503).
//!
//! Each operation runs as a task of its own, and the request only waits for it. The driver
//! must not have an operation's future dropped half-way (its connection is then lost to the
//! pool, and under a burst of abandoned requests the pool wedges: every later operation times
//! out). A request that is cancelled (its client went away) or gives up (the operation
//! timeout) leaves its operation to finish in the background, bounded on the server by
//! `maxTimeMS` where the operation takes one.
//!
//! Writes use majority write concern and retryable writes (set on the client), so an
//! acknowledged write survives a primary failover in a replica set.

use std::future::Future;
use std::time::Duration;

use mongodb::bson::{doc, oid::ObjectId, DateTime, Document};
use mongodb::change_stream::event::{ChangeStreamEvent, ResumeToken};
use mongodb::change_stream::ChangeStream;
use mongodb::error::{ErrorKind, WriteFailure};
use mongodb::options::FullDocumentType;
use mongodb::options::{ClientOptions, IndexOptions, WriteConcern};
use mongodb::{Client, Collection, Database, IndexModel};
use tokio::time::Instant;

use crate::config::Config;
use crate::metrics::Metrics;
use crate::model::{CourseDoc, ValidCourse};
use crate::query::ListQuery;

pub const COLLECTION: &str = "courses";
const DUPLICATE_KEY: i32 = 11000;

/// Why a database operation failed, in the terms the API needs.
#[derive(Debug)]
pub enum StoreError {
    /// A unique index refused the write: which field, and the value that clashed.
    Duplicate { field: &'static str, value: String },
    /// The database could not be reached or did not answer in time.
    Unavailable(String),
    /// Anything else: a bug or an unexpected server answer.
    Other(String),
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreError::Duplicate { field, value } => write!(f, "duplicate {field} `{value}`"),
            StoreError::Unavailable(cause) => write!(f, "database unavailable: {cause}"),
            StoreError::Other(cause) => write!(f, "database error: {cause}"),
        }
    }
}

impl std::error::Error for StoreError {}

/// What an update or delete conditioned on a version found.
#[derive(Debug)]
pub enum Conditional<T> {
    Done(T),
    /// No course with that id.
    NotFound,
    /// The course exists at another version than the one the write was based on.
    VersionMismatch {
        current: i64,
    },
}

/// A collection, told apart from any other: see [`CourseStore::identity`].
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Identity {
    pub database: String,
    pub collection: String,
    pub uuid: mongodb::bson::Binary,
}

/// How often the driver checks the server (see `connect`).
pub const HEARTBEAT: Duration = Duration::from_millis(500);

/// The database said nothing for this long ([`CourseStore::unless_silent`]).
#[derive(Debug, Clone, Copy)]
pub struct Silent(pub Duration);

impl std::fmt::Display for Silent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "no answer from the database in {:?}", self.0)
    }
}

/// The longest the server holds an idle change stream's `getMore` before answering.
pub const STREAM_AWAIT: Duration = Duration::from_millis(500);

/// Builds the driver client: short server-selection and connect timeouts (a dead database is
/// a quick 503), majority writes, retryable writes and reads.
pub async fn connect(config: &Config) -> Result<Client, StoreError> {
    let mut opts = ClientOptions::parse(&config.mongodb_uri)
        .await
        .map_err(|e| StoreError::Other(format!("invalid MongoDB URI: {e}")))?;
    opts.app_name = Some("course-service".into());
    opts.server_selection_timeout = Some(config.server_selection_timeout);
    opts.connect_timeout = Some(config.connect_timeout);
    opts.retry_writes.get_or_insert(true);
    opts.retry_reads.get_or_insert(true);
    // After a step-down (NotWritablePrimary, ShutdownInProgress) the driver's one retry
    // waits for the next heartbeat to find the primary again; at the default 10 s it would
    // outlast server selection (2 s) and the write would get a 503 it did not need. 500 ms
    // is the driver's minimum: one `hello` per half second, and a retried write lands.
    opts.heartbeat_freq.get_or_insert(HEARTBEAT);
    if opts.write_concern.is_none() {
        opts.write_concern = Some(WriteConcern::majority());
    }
    Client::with_options(opts).map_err(|e| StoreError::Other(e.to_string()))
}

/// The `courses` collection and the policies around it.
#[derive(Clone)]
pub struct CourseStore {
    db: Database,
    courses: Collection<CourseDoc>,
    op_timeout: Duration,
    metrics: Metrics,
}

impl CourseStore {
    pub fn new(client: &Client, database: &str, op_timeout: Duration, metrics: Metrics) -> Self {
        // The error series of the serving path exist from the start, at 0 (`rate` and
        // `increase` then see the first error).
        for op in [
            "find", "find_one", "count", "insert", "update", "delete", "ping", "watch",
        ] {
            for kind in ["unavailable", "timeout", "other"] {
                metrics.db_errors.with_label_values(&[op, kind]);
            }
        }
        let db = client.database(database);
        CourseStore {
            courses: db.collection(COLLECTION),
            db,
            op_timeout,
            metrics,
        }
    }

    /// Creates the indexes the API relies on. Idempotent: creating an existing index with the
    /// same spec is a no-op.
    pub async fn ensure_indexes(&self) -> Result<(), StoreError> {
        let unique = |name: &str| {
            IndexOptions::builder()
                .unique(true)
                .name(name.to_string())
                .build()
        };
        let named = |name: &str| IndexOptions::builder().name(name.to_string()).build();
        let indexes = vec![
            IndexModel::builder()
                .keys(doc! { "slug": 1 })
                .options(unique("slug_unique"))
                .build(),
            IndexModel::builder()
                .keys(doc! { "title_key": 1 })
                .options(unique("title_key_unique"))
                .build(),
            IndexModel::builder()
                .keys(doc! { "tags": 1 })
                .options(named("tags"))
                .build(),
            IndexModel::builder()
                .keys(doc! { "level": 1, "created_at": -1 })
                .options(named("level_created_at"))
                .build(),
        ];
        // One index per sort the API offers, in the order it sorts (`_id` breaks ties), so a
        // sorted page is an index walk, not a sort of the collection.
        let sorts = crate::query::SORTABLE.map(|(_, field)| {
            IndexModel::builder()
                .keys(doc! { field: 1, "_id": 1 })
                .options(named(&format!("sort_{field}")))
                .build()
        });
        let mut indexes = indexes;
        indexes.extend(sorts);
        self.timed("create_indexes", |c| async move {
            c.create_indexes(indexes).await
        })
        .await
        .map(|_| ())
    }

    /// Opens a change stream on the courses collection (every insert, update, delete).
    pub async fn watch(
        &self,
    ) -> Result<
        mongodb::change_stream::ChangeStream<
            mongodb::change_stream::event::ChangeStreamEvent<mongodb::bson::Document>,
        >,
        StoreError,
    > {
        self.db
            .collection::<mongodb::bson::Document>(COLLECTION)
            .watch()
            .max_await_time(STREAM_AWAIT)
            .await
            .map_err(|e| self.classify("watch", e))
    }

    /// Opens the change stream the read model follows: every event on `courses`, updates
    /// with the document as it is now, starting after `resume` when given (a token from an
    /// earlier stream).
    pub async fn follow(
        &self,
        resume: Option<ResumeToken>,
    ) -> mongodb::error::Result<ChangeStream<ChangeStreamEvent<Document>>> {
        // The follower needs the server's error code (a resume token too old is not retried
        // like a network error), so the error is not classified.
        let stream = self
            .db
            .collection::<Document>(COLLECTION)
            .watch()
            .full_document(FullDocumentType::UpdateLookup)
            .resume_after(resume)
            .max_await_time(STREAM_AWAIT)
            .await;
        let reached = match &stream {
            Ok(_) => true,
            Err(e) => classify(e.clone()).0 != "unavailable",
        };
        self.metrics.database_up.set(i64::from(reached));
        stream
    }

    /// `fut` (a change stream's next batch), unless the database stays silent past the
    /// limit: the server answers an idle change stream's `getMore` after [`STREAM_AWAIT`], so
    /// silence longer than that plus the operation timeout means the database cannot be
    /// reached, even though no connection was refused or reset. A network partition drops
    /// packets, and TCP alone would wait a quarter of an hour to say so. The silence is
    /// counted as a timeout of `op` and marks the database down.
    pub async fn unless_silent<T>(
        &self,
        op: &'static str,
        fut: impl Future<Output = T>,
    ) -> Result<T, Silent> {
        self.unless_silent_for(op, STREAM_AWAIT + self.op_timeout, fut)
            .await
    }

    /// [`Self::unless_silent`] with a limit of the caller's: one batch of a load, which a
    /// busy server may take seconds to answer (three instances starting together at 100 000
    /// courses), and which starts the whole load again when given up on.
    pub async fn unless_silent_for<T>(
        &self,
        op: &'static str,
        limit: Duration,
        fut: impl Future<Output = T>,
    ) -> Result<T, Silent> {
        tokio::time::timeout(limit, fut).await.map_err(|_| {
            self.metrics
                .db_errors
                .with_label_values(&[op, "timeout"])
                .inc();
            self.metrics.database_up.set(0);
            Silent(limit)
        })
    }

    /// Every course, in no particular order (the read model's load: a sort would only cost
    /// the server). Not bounded by the operation timeout: a large catalogue takes what it
    /// takes.
    pub async fn scan(&self) -> Result<mongodb::Cursor<CourseDoc>, StoreError> {
        self.courses
            .find(doc! {})
            .batch_size(2000)
            .await
            .map_err(|e| self.classify("scan", e))
    }

    /// Which collection this is: its database, name and UUID (`None` while it does not
    /// exist). A read model snapshot is only used where all three match: another UUID is
    /// a collection dropped and made again, or another server's.
    pub async fn identity(&self) -> Result<Option<Identity>, StoreError> {
        let mut specs = self
            .db
            .list_collections()
            .filter(doc! { "name": COLLECTION })
            .await
            .map_err(|e| self.classify("identity", e))?;
        while specs
            .advance()
            .await
            .map_err(|e| self.classify("identity", e))?
        {
            let spec = specs
                .deserialize_current()
                .map_err(|e| self.classify("identity", e))?;
            if let (true, Some(uuid)) = (spec.name == COLLECTION, spec.info.uuid) {
                return Ok(Some(Identity {
                    database: self.db.name().to_string(),
                    collection: COLLECTION.to_string(),
                    uuid,
                }));
            }
        }
        Ok(None)
    }

    /// The server's time now (a `ping`'s `operationTime`): every write it acknowledged
    /// before is at or before it. `None` if it does not answer within the operation timeout
    /// or does not say.
    pub async fn operation_time(&self) -> Option<mongodb::bson::Timestamp> {
        let db = self.db.clone();
        let ping = tokio::spawn(async move { db.run_command(doc! { "ping": 1 }).await });
        match tokio::time::timeout(self.op_timeout, ping).await {
            Ok(Ok(Ok(reply))) => reply.get_timestamp("operationTime").ok(),
            _ => None,
        }
    }

    /// Round-trips a `ping` within `deadline`: the readiness check.
    pub async fn ping(&self, deadline: Duration) -> Result<(), StoreError> {
        let started = Instant::now();
        // A task of its own, as every operation (see the module doc).
        let db = self.db.clone();
        let ping = tokio::spawn(async move { db.run_command(doc! { "ping": 1 }).await });
        let res = tokio::time::timeout(deadline, ping).await;
        self.metrics
            .db_duration
            .with_label_values(&["ping"])
            .observe(started.elapsed().as_secs_f64());
        let result = match res {
            Ok(Ok(Ok(_))) => Ok(()),
            Ok(Ok(Err(e))) => Err(self.classify("ping", e)),
            Ok(Err(join)) => Err(StoreError::Other(format!("ping task failed: {join}"))),
            Err(_) => Err(StoreError::Unavailable(format!(
                "ping took longer than {deadline:?}"
            ))),
        };
        self.reached(&result);
        result
    }

    /// One page of the listing and the total number of matches, queried concurrently.
    pub async fn list(&self, q: &ListQuery) -> Result<(Vec<CourseDoc>, u64), StoreError> {
        let filter = q.filter();
        let (sort, skip, limit) = (q.sort.to_document(), q.skip(), i64::from(q.per_page));
        let max_time = self.op_timeout;
        let find_filter = filter.clone();
        let find = self.timed("find", move |c| async move {
            let mut cursor = c
                .find(find_filter)
                .sort(sort)
                .skip(skip)
                .limit(limit)
                .max_time(max_time)
                .await?;
            let mut items = Vec::with_capacity(usize::try_from(limit).unwrap_or(0));
            while cursor.advance().await? {
                items.push(cursor.deserialize_current()?);
            }
            Ok(items)
        });
        let count = self.timed("count", move |c| async move {
            if filter.is_empty() {
                // The collection's size, from its metadata: no scan.
                c.estimated_document_count().max_time(max_time).await
            } else {
                c.count_documents(filter).max_time(max_time).await
            }
        });
        let (items, total) = tokio::try_join!(find, count)?;
        Ok((items, total))
    }

    pub async fn get(&self, id: ObjectId) -> Result<Option<CourseDoc>, StoreError> {
        let max_time = self.op_timeout;
        self.timed("find_one", move |c| async move {
            c.find_one(doc! { "_id": id }).max_time(max_time).await
        })
        .await
    }

    /// Inserts a new course at version 1.
    pub async fn insert(&self, c: ValidCourse) -> Result<CourseDoc, StoreError> {
        let now = DateTime::now();
        let doc = stored(ObjectId::new(), c, now, now, 1);
        let inserted = doc.clone();
        self.timed(
            "insert",
            move |c| async move { c.insert_one(inserted).await },
        )
        .await?;
        Ok(doc)
    }

    /// Inserts `docs` as they are, unordered; a document whose `_id`, slug or title is
    /// already taken is skipped. Returns how many were inserted (`course-service generate`).
    pub async fn insert_new(&self, docs: Vec<CourseDoc>) -> Result<u64, StoreError> {
        let n = docs.len() as u64;
        let res = self.courses.insert_many(docs).ordered(false).await;
        match res {
            Ok(r) => Ok(r.inserted_ids.len() as u64),
            Err(e) => match e.kind.as_ref() {
                ErrorKind::InsertMany(m)
                    if m.write_concern_error.is_none()
                        && m.write_errors.as_ref().is_some_and(|errors| {
                            errors.iter().all(|w| w.code == DUPLICATE_KEY)
                        }) =>
                {
                    let skipped = m.write_errors.as_ref().map_or(0, Vec::len) as u64;
                    Ok(n - skipped)
                }
                _ => Err(self.classify("insert_many", e)),
            },
        }
    }

    /// Every course as stored, in `_id` order (`course-service export`). Not bounded by the
    /// operation timeout: a large catalogue takes what it takes.
    pub async fn all_raw(&self) -> Result<Vec<mongodb::bson::Document>, StoreError> {
        use futures_util::TryStreamExt;
        let raw = self.db.collection::<mongodb::bson::Document>(COLLECTION);
        let cursor = raw
            .find(doc! {})
            .sort(doc! { "_id": 1 })
            .await
            .map_err(|e| self.classify("export", e))?;
        cursor
            .try_collect()
            .await
            .map_err(|e| self.classify("export", e))
    }

    /// Stores `doc` as is under its `_id`, replacing what is there (`course-service
    /// import`); `true` when it was added rather than replaced.
    pub async fn put_raw(&self, doc: mongodb::bson::Document) -> Result<bool, StoreError> {
        let raw = self.db.collection::<mongodb::bson::Document>(COLLECTION);
        let id = doc.get("_id").cloned().unwrap_or(mongodb::bson::Bson::Null);
        let res = raw
            .replace_one(doc! { "_id": id }, doc)
            .upsert(true)
            .await
            .map_err(|e| self.classify("import", e))?;
        Ok(res.upserted_id.is_some())
    }

    /// Inserts `c` unless a course with its slug exists: the idempotent seed.
    /// Returns whether it was inserted.
    pub async fn insert_if_absent(&self, c: ValidCourse) -> Result<bool, StoreError> {
        let now = DateTime::now();
        let on_insert = doc! {
            "title": c.title,
            "title_key": c.title_key,
            "description": c.description,
            "instructor": c.instructor,
            "duration_minutes": c.duration_minutes,
            "level": c.level.as_str(),
            "tags": c.tags,
            "price_cents": c.price_cents,
            "created_at": now,
            "updated_at": now,
            "version": 1_i64,
        };
        let slug = c.slug;
        let res = self
            .timed("seed_upsert", move |c| async move {
                c.update_one(doc! { "slug": slug }, doc! { "$setOnInsert": on_insert })
                    .upsert(true)
                    .await
            })
            .await?;
        Ok(res.upserted_id.is_some())
    }

    /// Replaces the writable fields of `current` with `c` if the course is still at
    /// `current.version`, bumping the version, and returns the course as stored now.
    /// Conditioning the write on the version makes concurrent updates lose nothing: the second
    /// one finds the version moved and is refused. A plain conditional update (and the
    /// stored form computed here, which the condition makes exact) rather than
    /// `findAndModify`, which SecantusDB answers by scanning: 1.2-1.6 s at 100 000 courses
    /// against 4 ms.
    pub async fn update(
        &self,
        current: &CourseDoc,
        c: ValidCourse,
    ) -> Result<Conditional<CourseDoc>, StoreError> {
        let now = DateTime::now();
        let updated = stored(current.id, c, current.created_at, now, current.version + 1);
        let set = doc! {
            "title": &updated.title,
            "title_key": &updated.title_key,
            "slug": &updated.slug,
            "description": &updated.description,
            "instructor": &updated.instructor,
            "duration_minutes": updated.duration_minutes,
            "level": updated.level.as_str(),
            "tags": &updated.tags,
            "price_cents": updated.price_cents,
            "updated_at": now,
        };
        let (id, version) = (current.id, current.version);
        // Bounded by the operation timeout, as every operation (`timed`).
        let res = self
            .timed("update", move |c| async move {
                c.update_one(
                    doc! { "_id": id, "version": version },
                    doc! { "$set": set, "$inc": { "version": 1_i64 } },
                )
                .await
            })
            .await?;
        if res.matched_count == 1 {
            Ok(Conditional::Done(updated))
        } else {
            self.why_not_matched(id).await
        }
    }

    /// Deletes course `id`, only if it is at `version` when one is given.
    pub async fn delete(
        &self,
        id: ObjectId,
        version: Option<i64>,
    ) -> Result<Conditional<()>, StoreError> {
        let mut filter = doc! { "_id": id };
        if let Some(v) = version {
            filter.insert("version", v);
        }
        let res = self
            .timed("delete", move |c| async move { c.delete_one(filter).await })
            .await?;
        if res.deleted_count == 1 {
            Ok(Conditional::Done(()))
        } else {
            self.why_not_matched(id).await
        }
    }

    async fn why_not_matched<T>(&self, id: ObjectId) -> Result<Conditional<T>, StoreError> {
        Ok(match self.get(id).await? {
            None => Conditional::NotFound,
            Some(doc) => Conditional::VersionMismatch {
                current: doc.version,
            },
        })
    }

    /// Runs one operation (built by `op_future` from the collection) as a task of its own,
    /// waiting for it up to the operation timeout, recording its latency and failures. The
    /// task finishes even if this wait is abandoned (see the module doc).
    async fn timed<T, F, Fut>(&self, op: &'static str, op_future: F) -> Result<T, StoreError>
    where
        F: FnOnce(Collection<CourseDoc>) -> Fut,
        Fut: Future<Output = mongodb::error::Result<T>> + Send + 'static,
        T: Send + 'static,
    {
        let started = Instant::now();
        let task = tokio::spawn(op_future(self.courses.clone()));
        let res = tokio::time::timeout(self.op_timeout, task).await;
        self.metrics
            .db_duration
            .with_label_values(&[op])
            .observe(started.elapsed().as_secs_f64());
        let result = match res {
            Ok(Ok(Ok(v))) => Ok(v),
            Ok(Ok(Err(e))) => Err(self.classify(op, e)),
            Ok(Err(join)) => {
                self.metrics
                    .db_errors
                    .with_label_values(&[op, "other"])
                    .inc();
                Err(StoreError::Other(format!("{op} task failed: {join}")))
            }
            Err(_) => {
                self.metrics
                    .db_errors
                    .with_label_values(&[op, "timeout"])
                    .inc();
                Err(StoreError::Unavailable(format!(
                    "{op} took longer than {:?}",
                    self.op_timeout
                )))
            }
        };
        self.reached(&result);
        result
    }

    /// Mirrors whether an operation reached the database into `database_up`.
    fn reached<T>(&self, result: &Result<T, StoreError>) {
        let up = !matches!(result, Err(StoreError::Unavailable(_)));
        self.metrics.database_up.set(i64::from(up));
    }

    fn classify(&self, op: &'static str, e: mongodb::error::Error) -> StoreError {
        let (kind, err) = classify(e);
        self.metrics.db_errors.with_label_values(&[op, kind]).inc();
        err
    }
}

/// The stored form of a validated course with its bookkeeping fields.
fn stored(
    id: ObjectId,
    c: ValidCourse,
    created_at: DateTime,
    updated_at: DateTime,
    version: i64,
) -> CourseDoc {
    CourseDoc {
        id,
        title: c.title,
        title_key: c.title_key,
        slug: c.slug,
        description: c.description,
        instructor: c.instructor,
        duration_minutes: c.duration_minutes,
        level: c.level,
        tags: c.tags,
        price_cents: c.price_cents,
        created_at,
        updated_at,
        version,
    }
}

/// Server error codes that mean "not now, try again": the node is not (or no longer) the
/// primary, is shutting down, or could not reach a peer. A write refused with one of them
/// was not applied, so the client gets 503 with `Retry-After`, never a 500, whether or not
/// the server labelled it retryable.
const STATE_CHANGE_CODES: &[i32] = &[
    6,     // HostUnreachable
    7,     // HostNotFound
    89,    // NetworkTimeout
    91,    // ShutdownInProgress
    189,   // PrimarySteppedDown
    262,   // ExceededTimeLimit
    9001,  // SocketException
    10107, // NotWritablePrimary
    11600, // InterruptedAtShutdown
    11602, // InterruptedDueToReplStateChange
    13435, // NotPrimaryNoSecondaryOk
    13436, // NotPrimaryOrSecondary
];

/// Maps a driver error onto what the API needs to know, with a metric label.
fn classify(e: mongodb::error::Error) -> (&'static str, StoreError) {
    if let ErrorKind::Write(WriteFailure::WriteError(w)) = e.kind.as_ref() {
        if w.code == DUPLICATE_KEY {
            return ("duplicate", duplicate_from_message(&w.message));
        }
    }
    if let ErrorKind::Command(c) = e.kind.as_ref() {
        if c.code == DUPLICATE_KEY {
            return ("duplicate", duplicate_from_message(&c.message));
        }
    }
    if let ErrorKind::Command(c) = e.kind.as_ref() {
        if STATE_CHANGE_CODES.contains(&c.code) {
            return ("unavailable", StoreError::Unavailable(e.to_string()));
        }
    }
    match e.kind.as_ref() {
        ErrorKind::ServerSelection { .. }
        | ErrorKind::Io(_)
        | ErrorKind::ConnectionPoolCleared { .. }
        | ErrorKind::DnsResolve { .. } => ("unavailable", StoreError::Unavailable(e.to_string())),
        _ if e.contains_label("RetryableWriteError")
            || e.contains_label("TransientTransactionError") =>
        {
            ("unavailable", StoreError::Unavailable(e.to_string()))
        }
        _ => ("other", StoreError::Other(e.to_string())),
    }
}

/// Which unique index refused the write, from the server's E11000 message
/// (`... index: slug_unique dup key: { slug: "x" }`).
fn duplicate_from_message(message: &str) -> StoreError {
    let field = if message.contains("title_key") {
        "title"
    } else {
        "slug"
    };
    let value = message
        .rsplit_once(": \"")
        .and_then(|(_, rest)| rest.split_once('"'))
        .map(|(v, _)| v.to_string())
        .unwrap_or_default();
    StoreError::Duplicate { field, value }
}

/// A course id from a path segment: 24 hex digits, or `None` (the route answers 400).
pub fn parse_id(raw: &str) -> Option<ObjectId> {
    if raw.len() != 24 {
        return None;
    }
    ObjectId::parse_str(raw).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicate_message_names_field_and_value() {
        let StoreError::Duplicate { field, value } = duplicate_from_message(
            "E11000 duplicate key error collection: t.courses index: slug_unique dup key: \
             { slug: \"intro-to-rust\" }",
        ) else {
            panic!("expected duplicate")
        };
        assert_eq!((field, value.as_str()), ("slug", "intro-to-rust"));
        let StoreError::Duplicate { field, .. } = duplicate_from_message(
            "E11000 duplicate key error index: title_key_unique dup key: { title_key: \"a\" }",
        ) else {
            panic!("expected duplicate")
        };
        assert_eq!(field, "title");
    }

    #[test]
    fn ids_are_24_hex_digits() {
        assert!(parse_id("6b06c0945a4c4d02edca3612").is_some());
        assert!(parse_id("6b06c0945a4c4d02edca361").is_none());
        assert!(parse_id("zz06c0945a4c4d02edca3612").is_none());
        assert!(parse_id("").is_none());
    }
}
