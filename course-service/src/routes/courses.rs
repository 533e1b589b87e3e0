//! `/api/courses` and `/api/courses/{id}`: list, read, create, replace, patch, delete.
//!
//! Extractors have already checked auth, content type, size and JSON shape; handlers
//! validate the course rules, talk to the store, and shape the answer.

use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use mongodb::bson::oid::ObjectId;
use serde::Serialize;

use crate::app::AppState;
use crate::cache::{Cached, LoadError, Source};
use crate::error::{ApiError, Problem};
use crate::extract::{AdminAuth, IfMatch, JsonBody};
use crate::model::{Course, CourseDoc, CourseInput, CoursePatch, Draft, Level};
use crate::query::{ListQuery, QueryError};
use crate::readmodel::{Page, Suggestion};
use crate::store::{parse_id, Conditional, StoreError};
use bytes::Bytes;
use std::sync::Arc;

/// The refusals every write can answer, documented once for the OpenAPI document.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)] // a type for the document only; handlers answer with `ApiError`
enum WriteAuthRefusals {
    #[response(
        status = 401,
        description = "No bearer token",
        content_type = "application/problem+json"
    )]
    NoToken(Problem<'static>),
    #[response(
        status = 403,
        description = "A wrong token, or writes are disabled on this server",
        content_type = "application/problem+json"
    )]
    Forbidden(Problem<'static>),
}

/// The refusal of any operation that needs the database.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)]
enum DatabaseRefusal {
    #[response(
        status = 503,
        description = "The database is unreachable",
        content_type = "application/problem+json"
    )]
    Unavailable(Problem<'static>),
}

/// The refusals of a write to one existing course.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)]
enum OneCourseRefusals {
    #[response(
        status = 404,
        description = "No such course",
        content_type = "application/problem+json"
    )]
    NotFound(Problem<'static>),
    #[response(
        status = 412,
        description = "If-Match does not match the current version",
        content_type = "application/problem+json"
    )]
    Stale(Problem<'static>),
}

/// The refusals of a course body.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)]
enum BodyRefusals {
    #[response(
        status = 413,
        description = "A body over the size limit",
        content_type = "application/problem+json"
    )]
    TooLarge(Problem<'static>),
    #[response(
        status = 415,
        description = "A body that is not `application/json`",
        content_type = "application/problem+json"
    )]
    NotJson(Problem<'static>),
    #[response(
        status = 422,
        description = "The course breaks a rule; every broken rule is listed",
        content_type = "application/problem+json"
    )]
    Invalid(Problem<'static>),
}

const COLLECTION_PATH: &str = "/api/courses";

/// A page of the listing.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Listing<T> {
    pub items: Vec<T>,
    /// Courses matching the filters, over all pages.
    pub total: u64,
    pub page: u32,
    pub per_page: u32,
    /// Number of pages (at least 1, so `last` is always a valid page).
    pub pages: u64,
    pub links: Links,
    /// For a search that finds nothing: a search that finds courses, its misspelt words
    /// replaced by the catalogue's closest ones. Offered by the read model only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub suggestion: Option<SuggestedSearch>,
}

/// A search to try instead.
#[derive(Serialize, utoipa::ToSchema)]
pub struct SuggestedSearch {
    /// The search text (lower-cased).
    pub q: String,
    /// Courses it finds, with the same filters.
    pub total: u64,
    /// Its first page, in canonical parameter order.
    pub link: String,
}

/// Relative links to the neighbouring pages, in canonical parameter order.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Links {
    #[serde(rename = "self")]
    pub this: String,
    pub first: String,
    pub last: String,
    pub prev: Option<String>,
    pub next: Option<String>,
}

impl<T: Serialize> Listing<T> {
    fn new(
        query: &ListQuery,
        items: Vec<T>,
        total: u64,
        suggestion: Option<&Suggestion>,
    ) -> Listing<T> {
        let pages = total.div_ceil(u64::from(query.per_page)).max(1);
        let last = u32::try_from(pages).unwrap_or(u32::MAX);
        let link = |page: u32| format!("{COLLECTION_PATH}?{}", query.with_page(page));
        let links = Links {
            this: link(query.page),
            first: link(1),
            last: link(last),
            prev: (query.page > 1).then(|| link((query.page - 1).min(last))),
            next: (query.page < last).then(|| link(query.page + 1)),
        };
        let suggestion = suggestion.map(|s| {
            let instead = ListQuery {
                q: Some(s.q.clone()),
                page: 1,
                ..query.clone()
            };
            SuggestedSearch {
                q: s.q.clone(),
                total: s.total,
                link: format!("{COLLECTION_PATH}?{}", instead.canonical()),
            }
        });
        Listing {
            items,
            total,
            page: query.page,
            per_page: query.per_page,
            pages,
            links,
            suggestion,
        }
    }

    /// The JSON body, tagged with a hash of its bytes.
    fn render(&self) -> Result<Cached, StoreError> {
        let body = serde_json::to_vec(self).map_err(|e| StoreError::Other(e.to_string()))?;
        Ok(Cached::hashed(Bytes::from(body)))
    }
}

/// A page of the read model as the listing body.
fn render_page(query: &ListQuery, page: &Page) -> Result<Cached, ApiError> {
    let items: Vec<&Course> = page.items.iter().map(|c| &**c).collect();
    Listing::new(query, items, page.total, page.suggestion.as_ref())
        .render()
        .map_err(|e| ApiError::Internal(e.to_string()))
}

/// A course of the read model as the item body, or 404.
fn render_course(id: &str, found: Option<Arc<Course>>) -> Result<Cached, ApiError> {
    let course = found.ok_or_else(|| not_found(id))?;
    let body = serde_json::to_vec(&*course).map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(Cached {
        etag: course.etag(),
        body: Bytes::from(body),
    })
}

#[utoipa::path(
    get,
    path = "/api/courses",
    tag = "courses",
    summary = "List courses: filter, search, sort, page",
    params(
        ("q" = Option<String>, Query, max_length = 100,
            description = "Case-insensitive substring of the title, description or instructor"),
        ("tag" = Option<String>, Query, max_length = 30, description = "Courses with this tag"),
        ("level" = Option<Level>, Query, description = "Courses of this level"),
        ("sort" = Option<String>, Query,
            pattern = "^-?(title|created_at|updated_at|price|duration)$",
            description = "A field, descending with a leading `-`; default `-created_at`"),
        ("page" = Option<u32>, Query, minimum = 1, maximum = 10000,
            description = "1-based page number; default 1"),
        ("per_page" = Option<u32>, Query, minimum = 1, maximum = 100,
            description = "Courses per page; default 20"),
        ("If-None-Match" = Option<String>, Header,
            description = "An ETag of this listing: 304 if it is still current"),
    ),
    responses(
        (status = 200, description = "A page of courses", body = Listing<Course>,
            headers(
                ("ETag" = String, description = "Tag of this page's bytes"),
                ("X-Cache" = String, description = "MODEL, HIT, MISS, BYPASS or STALE: how the answer was obtained"),
            )),
        (status = 304, description = "The ETag in If-None-Match is still current"),
        (status = 400, description = "A malformed query string or an unknown parameter",
            body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A parameter out of range", body = Problem,
            content_type = "application/problem+json"),
        (status = 503, description = "The database is unreachable and nothing cached can stand in",
            body = Problem, content_type = "application/problem+json"),
    ),
)]
/// `GET /api/courses`: from the read model while it follows the database, else through the
/// cache (keyed by the canonical query).
pub async fn list(
    State(state): State<AppState>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let query = ListQuery::parse(raw.as_deref().unwrap_or("")).map_err(|e| match e {
        QueryError::Malformed(m) => ApiError::BadRequest(format!("bad query string: {m}")),
        QueryError::Invalid(errors) => ApiError::Validation(errors),
    })?;
    if let Some(page) = state.model.list(&query) {
        let body = render_page(&query, &page)?;
        return Ok(cached_response(&headers, &body, Source::Model));
    }
    if state.model.presumed_unreachable() {
        if let Some(page) = state.model.list_stale(&query, state.stale_window) {
            let body = render_page(&query, &page)?;
            return Ok(cached_response(&headers, &body, Source::Stale));
        }
    }
    let key = format!("list|{}", query.canonical());
    let store = state.store.clone();
    let db_query = query.clone();
    let loaded = state
        .cache
        .get_or_load(&key, || async move {
            let (docs, total) = store.list(&db_query).await?;
            let items = docs.into_iter().map(Course::from).collect();
            Ok(Listing::new(&db_query, items, total, None).render()?)
        })
        .await;
    match loaded {
        Ok((cached, source)) => Ok(cached_response(&headers, &cached, source)),
        Err(e) => match (
            unreachable(&e, &state),
            state.model.list_stale(&query, state.stale_window),
        ) {
            (true, Some(page)) => {
                let body = render_page(&query, &page)?;
                Ok(cached_response(&headers, &body, Source::Stale))
            }
            _ => Err(load_error(&e, "")),
        },
    }
}

/// The database could not be reached: the last known catalogue may stand in (and will,
/// without asking again, until the read model follows again).
fn unreachable(e: &LoadError, state: &AppState) -> bool {
    let unreachable = matches!(e, LoadError::Store(StoreError::Unavailable(_)));
    if unreachable {
        state.model.database_unreachable();
    }
    unreachable
}

#[utoipa::path(
    get,
    path = "/api/courses/{id}",
    tag = "courses",
    summary = "One course",
    params(
        ("id" = String, Path, pattern = "^[0-9a-f]{24}$",
            description = "The course id (24 hexadecimal digits)"),
        ("If-None-Match" = Option<String>, Header,
            description = "An ETag of this course: 304 if it is still current"),
    ),
    responses(
        (status = 200, description = "The course", body = Course,
            headers(
                ("ETag" = String, description = "The course's version, `\"v{version}\"`"),
                ("X-Cache" = String, description = "How the answer was obtained"),
            )),
        (status = 304, description = "The ETag in If-None-Match is still current"),
        (status = 400, description = "Not a course id (24 hexadecimal digits)", body = Problem,
            content_type = "application/problem+json"),
        (status = 404, description = "No such course", body = Problem,
            content_type = "application/problem+json"),
        DatabaseRefusal,
    ),
)]
/// `GET /api/courses/{id}`: from the read model while it follows the database, else through
/// the cache.
pub async fn get_one(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let oid = course_id(&id)?;
    if let Some(found) = state.model.get(&oid) {
        let body = render_course(&id, found)?;
        return Ok(cached_response(&headers, &body, Source::Model));
    }
    if state.model.presumed_unreachable() {
        if let Some(found) = state.model.get_stale(&oid, state.stale_window) {
            let body = render_course(&id, found)?;
            return Ok(cached_response(&headers, &body, Source::Stale));
        }
    }
    let store = state.store.clone();
    let loaded = state
        .cache
        .get_or_load(&format!("course|{oid}"), || async move {
            let doc = store.get(oid).await?.ok_or(LoadError::NotFound)?;
            let course = Course::from(doc);
            let body = serde_json::to_vec(&course)
                .map_err(|e| LoadError::Store(StoreError::Other(e.to_string())))?;
            Ok(Cached {
                etag: course.etag(),
                body: Bytes::from(body),
            })
        })
        .await;
    match loaded {
        Ok((cached, source)) => Ok(cached_response(&headers, &cached, source)),
        Err(e) => match (
            unreachable(&e, &state),
            state.model.get_stale(&oid, state.stale_window),
        ) {
            (true, Some(found)) => {
                let body = render_course(&id, found)?;
                Ok(cached_response(&headers, &body, Source::Stale))
            }
            _ => Err(load_error(&e, &id)),
        },
    }
}

/// Readers may keep a copy but must revalidate it (a 304 is cheap): the catalogue changes
/// when an admin says so, not on a schedule.
const CACHE_CONTROL: &str = "no-cache";

/// 200 with the cached body, or 304 when `If-None-Match` names its tag; `X-Cache` says how
/// it was obtained, and a stale answer carries a `Warning`.
fn cached_response(headers: &HeaderMap, cached: &Cached, source: Source) -> Response {
    let mut res = if if_none_match(headers, &cached.etag) {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        let mut res = cached.body.clone().into_response();
        res.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        res
    };
    let h = res.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&cached.etag) {
        h.insert(header::ETAG, v);
    }
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(CACHE_CONTROL),
    );
    h.insert("x-cache", HeaderValue::from_static(source.as_str()));
    if source == Source::Stale {
        h.insert(
            header::WARNING,
            HeaderValue::from_static("110 - \"Response is Stale\""),
        );
    }
    res
}

fn load_error(e: &LoadError, id: &str) -> ApiError {
    match e {
        LoadError::NotFound => not_found(id),
        LoadError::Store(StoreError::Unavailable(c)) => ApiError::Unavailable(c.clone()),
        LoadError::Store(StoreError::Other(c)) => ApiError::Internal(c.clone()),
        LoadError::Store(StoreError::Duplicate { field, value }) => {
            ApiError::Internal(format!("unexpected duplicate {field} `{value}` on a read"))
        }
    }
}

/// `POST /api/courses`: adds a course.
#[utoipa::path(
    post,
    path = "/api/courses",
    tag = "courses",
    summary = "Add a course",
    request_body(content = CourseInput, content_type = "application/json"),
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Created", body = Course,
            headers(
                ("Location" = String, description = "The new course's URL"),
                ("ETag" = String, description = "Its version"),
            )),
        (status = 400, description = "A body that is not JSON", body = Problem,
            content_type = "application/problem+json"),
        (status = 409, description = "Another course has this slug or title", body = Problem,
            content_type = "application/problem+json"),
        WriteAuthRefusals,
        DatabaseRefusal,
        BodyRefusals,
    ),
)]
pub async fn create(
    State(state): State<AppState>,
    _: AdminAuth,
    JsonBody(input): JsonBody<CourseInput>,
) -> Result<Response, ApiError> {
    let valid = Draft::from(input)
        .validate()
        .map_err(ApiError::Validation)?;
    let doc = state.store.insert(valid).await?;
    state.cache.invalidate().await;
    state.model.show_write(doc.id, Some(doc.version)).await;
    let course = Course::from(doc);
    tracing::info!(id = %course.id, slug = %course.slug, "course created");
    let location = format!("{COLLECTION_PATH}/{}", course.id);
    let mut res = with_etag(StatusCode::CREATED, course);
    if let Ok(v) = HeaderValue::from_str(&location) {
        res.headers_mut().insert(header::LOCATION, v);
    }
    Ok(res)
}

#[utoipa::path(
    put,
    path = "/api/courses/{id}",
    tag = "courses",
    summary = "Replace a course",
    params(
        ("id" = String, Path, pattern = "^[0-9a-f]{24}$",
            description = "The course id (24 hexadecimal digits)"),
        ("If-Match" = Option<String>, Header,
            description = "The ETag the change is based on: 412 if the course has moved on since"),
    ),
    request_body(content = CourseInput, content_type = "application/json"),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Updated", body = Course,
            headers(("ETag" = String, description = "Its new version"))),
        (status = 400, description = "Not a course id (24 hexadecimal digits), or a body that is not JSON",
            body = Problem,
            content_type = "application/problem+json"),
        (status = 409, description = "Another course has this slug or title, or a concurrent update won",
            body = Problem, content_type = "application/problem+json"),
        WriteAuthRefusals,
        OneCourseRefusals,
        DatabaseRefusal,
        BodyRefusals,
    ),
)]
/// `PUT`: replaces every writable field; a missing `slug` keeps the current one, so renaming
/// a course does not break links to it.
pub async fn replace(
    State(state): State<AppState>,
    _: AdminAuth,
    Path(id): Path<String>,
    if_match: IfMatch,
    JsonBody(input): JsonBody<CourseInput>,
) -> Result<Response, ApiError> {
    update(&state, &id, if_match, |current| {
        let mut draft = Draft::from(input);
        if draft.slug.is_none() {
            draft.slug = Some(current.slug.clone());
        }
        draft
    })
    .await
}

#[utoipa::path(
    patch,
    path = "/api/courses/{id}",
    tag = "courses",
    summary = "Change some fields of a course",
    params(
        ("id" = String, Path, pattern = "^[0-9a-f]{24}$",
            description = "The course id (24 hexadecimal digits)"),
        ("If-Match" = Option<String>, Header,
            description = "The ETag the change is based on: 412 if the course has moved on since"),
    ),
    request_body(content = CoursePatch, content_type = "application/json"),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Updated", body = Course,
            headers(("ETag" = String, description = "Its new version"))),
        (status = 400, description = "Not a course id (24 hexadecimal digits), or a body that is not JSON",
            body = Problem,
            content_type = "application/problem+json"),
        (status = 409, description = "Another course has this slug or title, or a concurrent update won",
            body = Problem, content_type = "application/problem+json"),
        WriteAuthRefusals,
        OneCourseRefusals,
        DatabaseRefusal,
        BodyRefusals,
    ),
)]
/// `PATCH`: changes only the fields present in the body.
pub async fn patch(
    State(state): State<AppState>,
    _: AdminAuth,
    Path(id): Path<String>,
    if_match: IfMatch,
    JsonBody(patch): JsonBody<CoursePatch>,
) -> Result<Response, ApiError> {
    update(&state, &id, if_match, |current| {
        Draft::from_doc(current).apply(patch)
    })
    .await
}

/// Read, check the precondition, validate the new state, then write conditioned on the
/// version read: a concurrent writer in between makes this write fail rather than be lost.
async fn update(
    state: &AppState,
    id: &str,
    if_match: IfMatch,
    change: impl FnOnce(&CourseDoc) -> Draft,
) -> Result<Response, ApiError> {
    let oid = course_id(id)?;
    let current = state.store.get(oid).await?.ok_or_else(|| not_found(id))?;
    if !if_match.matches(current.version) {
        return Err(version_moved(current.version));
    }
    let valid = change(&current).validate().map_err(ApiError::Validation)?;
    match state.store.update(&current, valid).await? {
        Conditional::Done(doc) => {
            state.cache.invalidate().await;
            state.model.show_write(oid, Some(doc.version)).await;
            let course = Course::from(doc);
            tracing::info!(id = %course.id, version = course.version, "course updated");
            Ok(with_etag(StatusCode::OK, course))
        }
        Conditional::NotFound => Err(not_found(id)),
        Conditional::VersionMismatch { current } => Err(match if_match {
            IfMatch::None => ApiError::Conflict(
                "the course was changed by someone else while this update ran; reload it and \
                 try again"
                    .into(),
            ),
            _ => version_moved(current),
        }),
    }
}

/// `DELETE /api/courses/{id}`.
#[utoipa::path(
    delete,
    path = "/api/courses/{id}",
    tag = "courses",
    summary = "Delete a course",
    params(
        ("id" = String, Path, pattern = "^[0-9a-f]{24}$",
            description = "The course id (24 hexadecimal digits)"),
        ("If-Match" = Option<String>, Header,
            description = "The ETag the change is based on: 412 if the course has moved on since"),
    ),
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, description = "Not a course id (24 hexadecimal digits)", body = Problem,
            content_type = "application/problem+json"),
        WriteAuthRefusals,
        OneCourseRefusals,
        DatabaseRefusal,
    ),
)]
pub async fn delete(
    State(state): State<AppState>,
    _: AdminAuth,
    Path(id): Path<String>,
    if_match: IfMatch,
) -> Result<Response, ApiError> {
    let oid = course_id(&id)?;
    let version = match &if_match {
        IfMatch::Versions(_) => {
            let current = state.store.get(oid).await?.ok_or_else(|| not_found(&id))?;
            if !if_match.matches(current.version) {
                return Err(version_moved(current.version));
            }
            Some(current.version)
        }
        IfMatch::None | IfMatch::Any => None,
    };
    match state.store.delete(oid, version).await? {
        Conditional::Done(()) => {
            state.cache.invalidate().await;
            state.model.show_write(oid, None).await;
            tracing::info!(%id, "course deleted");
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        Conditional::NotFound => Err(not_found(&id)),
        Conditional::VersionMismatch { current } => Err(version_moved(current)),
    }
}

fn course_id(raw: &str) -> Result<ObjectId, ApiError> {
    parse_id(raw).ok_or_else(|| {
        ApiError::BadRequest(format!(
            "`{raw}` is not a course id: ids are 24 hexadecimal digits, as returned in `id`"
        ))
    })
}

fn not_found(id: &str) -> ApiError {
    ApiError::NotFound(format!(
        "no course with id `{id}`; it may have been deleted"
    ))
}

fn version_moved(current: i64) -> ApiError {
    ApiError::PreconditionFailed(format!(
        "the course is now at version {current} (ETag \"v{current}\"), not the one in \
         If-Match; GET it again, reapply your change and resend"
    ))
}

/// Whether `If-None-Match` lists `etag` (weak comparison, RFC 9110 §13.1.2) or is `*`.
pub(crate) fn if_none_match(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .any(|tag| tag == "*" || tag.trim_start_matches("W/") == etag)
}

fn with_etag(status: StatusCode, course: Course) -> Response {
    let mut res = (status, Json(&course)).into_response();
    set_etag(&mut res, &course);
    res
}

fn set_etag(res: &mut Response, course: &Course) {
    if let Ok(v) = HeaderValue::from_str(&course.etag()) {
        res.headers_mut().insert(header::ETAG, v);
    }
}
