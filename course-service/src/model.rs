//! The course: how it is stored, how it is shown, and the rules a write must satisfy.
//!
//! Input types (`CourseInput`, `CoursePatch`) are read from a request's JSON field by field
//! ([`FromJson`]): a missing, mistyped or unknown field is reported with all the others, and
//! with every rule the well-typed fields break (`validate` checks every rule and reports
//! *all* broken ones at once), so one bad field never hides the rest and a bad request
//! never reaches the database.

use mongodb::bson::{oid::ObjectId, DateTime};
use serde::{Deserialize, Serialize};

pub const TITLE_MAX: usize = 120;
pub const SLUG_MAX: usize = 120;
pub const DESCRIPTION_MAX: usize = 5000;
pub const INSTRUCTOR_MAX: usize = 100;
pub const DURATION_MIN: i64 = 1;
pub const DURATION_MAX: i64 = 10_000;
pub const TAGS_MAX: usize = 10;
pub const TAG_MAX: usize = 30;
/// A million dollars: far above any course, low enough to catch a unit mistake.
pub const PRICE_MAX_CENTS: i64 = 100_000_000;

/// Difficulty of a course.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Beginner,
    Intermediate,
    Advanced,
}

impl Level {
    pub const ALL: [Level; 3] = [Level::Beginner, Level::Intermediate, Level::Advanced];

    pub fn as_str(self) -> &'static str {
        match self {
            Level::Beginner => "beginner",
            Level::Intermediate => "intermediate",
            Level::Advanced => "advanced",
        }
    }

    pub fn parse(s: &str) -> Option<Level> {
        Level::ALL.into_iter().find(|l| l.as_str() == s)
    }
}

/// A course as stored in the `courses` collection.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CourseDoc {
    #[serde(rename = "_id")]
    pub id: ObjectId,
    pub title: String,
    /// Lower-cased, whitespace-collapsed title: its unique index makes titles unique
    /// regardless of case.
    pub title_key: String,
    pub slug: String,
    pub description: String,
    pub instructor: String,
    pub duration_minutes: i64,
    pub level: Level,
    pub tags: Vec<String>,
    pub price_cents: i64,
    pub created_at: DateTime,
    pub updated_at: DateTime,
    /// Bumped on every update; the `If-Match` precondition compares against it.
    pub version: i64,
}

/// A course as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Course {
    /// 24 hexadecimal digits.
    pub id: String,
    pub title: String,
    pub slug: String,
    pub description: String,
    pub instructor: String,
    pub duration_minutes: i64,
    pub level: Level,
    pub tags: Vec<String>,
    pub price_cents: i64,
    /// RFC 3339, UTC.
    pub created_at: String,
    pub updated_at: String,
    pub version: i64,
}

impl From<CourseDoc> for Course {
    fn from(d: CourseDoc) -> Self {
        Course {
            id: d.id.to_hex(),
            title: d.title,
            slug: d.slug,
            description: d.description,
            instructor: d.instructor,
            duration_minutes: d.duration_minutes,
            level: d.level,
            tags: d.tags,
            price_cents: d.price_cents,
            created_at: rfc3339(d.created_at),
            updated_at: rfc3339(d.updated_at),
            version: d.version,
        }
    }
}

fn rfc3339(t: DateTime) -> String {
    t.try_to_rfc3339_string()
        .unwrap_or_else(|_| t.timestamp_millis().to_string())
}

impl Course {
    /// The strong entity tag of this representation: it changes with every update.
    pub fn etag(&self) -> String {
        etag_for_version(self.version)
    }
}

/// `"v{version}"`, the ETag for a course at `version`.
pub fn etag_for_version(version: i64) -> String {
    format!("\"v{version}\"")
}

/// The body of `POST /api/courses` and `PUT /api/courses/{id}`.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CourseInput {
    /// Unique whatever its case; no control characters.
    #[schema(
        min_length = 1,
        max_length = 120,
        pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]*\\S[^\\u0000-\\u001f\\u007f-\\u009f]*$"
    )]
    pub title: String,
    /// Derived from the title on create when absent; kept as is on PUT when absent.
    #[serde(default)]
    #[schema(pattern = "^[a-z0-9]+(-[a-z0-9]+)*$", max_length = 120)]
    pub slug: Option<String>,
    #[serde(default)]
    #[schema(max_length = 5000)]
    pub description: String,
    #[schema(
        min_length = 1,
        max_length = 100,
        pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]*\\S[^\\u0000-\\u001f\\u007f-\\u009f]*$"
    )]
    pub instructor: String,
    #[schema(minimum = 1, maximum = 10000)]
    pub duration_minutes: i64,
    pub level: Level,
    /// Stored lower-case, without repeats.
    #[serde(default)]
    #[schema(max_items = 10)]
    pub tags: Vec<String>,
    #[serde(default)]
    #[schema(minimum = 0, maximum = 100000000)]
    pub price_cents: i64,
}

/// The body of `PATCH /api/courses/{id}`: every field optional.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CoursePatch {
    #[schema(min_length = 1, max_length = 120)]
    pub title: Option<String>,
    #[schema(pattern = "^[a-z0-9]+(-[a-z0-9]+)*$", max_length = 120)]
    pub slug: Option<String>,
    #[schema(max_length = 5000)]
    pub description: Option<String>,
    #[schema(min_length = 1, max_length = 100)]
    pub instructor: Option<String>,
    #[schema(minimum = 1, maximum = 10000)]
    pub duration_minutes: Option<i64>,
    pub level: Option<Level>,
    #[schema(max_items = 10)]
    pub tags: Option<Vec<String>>,
    #[schema(minimum = 0, maximum = 100000000)]
    pub price_cents: Option<i64>,
}

// ===== reading request bodies =====

/// A type read from a request's JSON body, with every problem reported at once.
pub trait FromJson: Sized {
    fn from_json(value: serde_json::Value) -> Result<Self, Vec<FieldError>>;
}

/// A JSON object read field by field. Each getter takes its field out of the object; a field
/// of the wrong type is an error naming the type wanted; `finish` reports what is left over
/// (unknown fields). `null` counts as absent.
pub struct JsonFields {
    map: serde_json::Map<String, serde_json::Value>,
    errors: Vec<FieldError>,
    /// Fields that were missing or mistyped: rules about them would only repeat the error.
    failed: Vec<&'static str>,
}

impl JsonFields {
    pub fn new(value: serde_json::Value) -> Result<JsonFields, Vec<FieldError>> {
        match value {
            serde_json::Value::Object(map) => Ok(JsonFields {
                map,
                errors: Vec::new(),
                failed: Vec::new(),
            }),
            other => Err(vec![FieldError {
                field: "body",
                message: format!("must be a JSON object, not {}", json_kind(&other)),
            }]),
        }
    }

    fn take(&mut self, name: &'static str) -> Option<serde_json::Value> {
        self.map.remove(name).filter(|v| !v.is_null())
    }

    fn wrong(&mut self, field: &'static str, wanted: &str, got: &serde_json::Value) {
        self.failed.push(field);
        self.errors.push(FieldError {
            field,
            message: format!("must be {wanted}, not {}", json_kind(got)),
        });
    }

    pub fn string(&mut self, field: &'static str) -> Option<String> {
        match self.take(field)? {
            serde_json::Value::String(s) => Some(s),
            other => {
                self.wrong(field, "a string", &other);
                None
            }
        }
    }

    pub fn integer(&mut self, field: &'static str) -> Option<i64> {
        let value = self.take(field)?;
        match value.as_i64() {
            Some(n) => Some(n),
            None => {
                self.wrong(field, "a whole number", &value);
                None
            }
        }
    }

    pub fn strings(&mut self, field: &'static str) -> Option<Vec<String>> {
        let value = self.take(field)?;
        let list = value.as_array().and_then(|items| {
            items
                .iter()
                .map(|i| i.as_str().map(str::to_string))
                .collect::<Option<Vec<String>>>()
        });
        if list.is_none() {
            self.wrong(field, "a list of strings", &value);
        }
        list
    }

    pub fn level(&mut self, field: &'static str) -> Option<Level> {
        let value = self.take(field)?;
        let level = value.as_str().and_then(Level::parse);
        if level.is_none() {
            self.failed.push(field);
            let shown = match value.as_str() {
                Some(s) => format!("`{s}`"),
                None => json_kind(&value).to_string(),
            };
            self.errors.push(FieldError {
                field,
                message: format!("{shown} is not a level; use beginner, intermediate or advanced"),
            });
        }
        level
    }

    /// `value`, or an error when the field was absent (and not already reported).
    pub fn require<T>(&mut self, field: &'static str, value: Option<T>) -> Option<T> {
        if value.is_none() && !self.failed.contains(&field) {
            self.failed.push(field);
            self.errors.push(FieldError {
                field,
                message: "is required".into(),
            });
        }
        value
    }

    /// Every problem so far plus one per unknown field; `Ok` when there are none.
    pub fn finish(mut self, allowed: &str) -> Result<(), (Vec<FieldError>, Vec<&'static str>)> {
        let mut unknown: Vec<&String> = self.map.keys().collect();
        unknown.sort();
        for name in unknown {
            self.errors.push(FieldError {
                field: "body",
                message: format!("unknown field `{name}`; the fields are {allowed}"),
            });
        }
        if self.errors.is_empty() {
            Ok(())
        } else {
            Err((self.errors, self.failed))
        }
    }
}

fn json_kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(n) if n.is_f64() => "a fractional number",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "a list",
        serde_json::Value::Object(_) => "an object",
    }
}

const COURSE_FIELDS: &str =
    "title, slug, description, instructor, duration_minutes, level, tags, price_cents";

impl FromJson for CourseInput {
    /// Reads a create or replace body. When fields are missing, mistyped or unknown, the
    /// rules the other fields break are reported too (checked with neutral stand-ins for
    /// the broken ones, whose own errors are not repeated).
    fn from_json(value: serde_json::Value) -> Result<CourseInput, Vec<FieldError>> {
        let mut f = JsonFields::new(value)?;
        let title = f.string("title");
        let title = f.require("title", title);
        let slug = f.string("slug");
        let description = f.string("description");
        let instructor = f.string("instructor");
        let instructor = f.require("instructor", instructor);
        let duration_minutes = f.integer("duration_minutes");
        let duration_minutes = f.require("duration_minutes", duration_minutes);
        let level = f.level("level");
        let level = f.require("level", level);
        let tags = f.strings("tags");
        let price_cents = f.integer("price_cents");
        let input = CourseInput {
            title: title.unwrap_or_default(),
            slug,
            description: description.unwrap_or_default(),
            instructor: instructor.unwrap_or_default(),
            duration_minutes: duration_minutes.unwrap_or(DURATION_MIN),
            level: level.unwrap_or(Level::Beginner),
            tags: tags.unwrap_or_default(),
            price_cents: price_cents.unwrap_or(0),
        };
        let (mut errors, failed) = match f.finish(COURSE_FIELDS) {
            Ok(()) => return Ok(input),
            Err(found) => found,
        };
        let slug_given = input.slug.is_some();
        if let Err(rules) = Draft::from(input).validate() {
            // A derived slug is only as good as the title it came from.
            let derived_from_broken_title = !slug_given && failed.contains(&"title");
            errors.extend(rules.into_iter().filter(|e| {
                let repeats = failed.contains(&e.field);
                let derived = e.field == "slug" && derived_from_broken_title;
                !(repeats || derived)
            }));
        }
        Err(errors)
    }
}

impl FromJson for CoursePatch {
    fn from_json(value: serde_json::Value) -> Result<CoursePatch, Vec<FieldError>> {
        let mut f = JsonFields::new(value)?;
        let patch = CoursePatch {
            title: f.string("title"),
            slug: f.string("slug"),
            description: f.string("description"),
            instructor: f.string("instructor"),
            duration_minutes: f.integer("duration_minutes"),
            level: f.level("level"),
            tags: f.strings("tags"),
            price_cents: f.integer("price_cents"),
        };
        f.finish(COURSE_FIELDS).map_err(|(errors, _)| errors)?;
        Ok(patch)
    }
}

/// The writable fields of a course after validation and normalisation.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidCourse {
    pub title: String,
    pub title_key: String,
    pub slug: String,
    pub description: String,
    pub instructor: String,
    pub duration_minutes: i64,
    pub level: Level,
    pub tags: Vec<String>,
    pub price_cents: i64,
}

/// One broken rule: which field, and what a person should do about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct FieldError {
    pub field: &'static str,
    pub message: String,
}

/// The fields a write can set, before validation.
#[derive(Debug, Clone)]
pub struct Draft {
    pub title: String,
    pub slug: Option<String>,
    pub description: String,
    pub instructor: String,
    pub duration_minutes: i64,
    pub level: Level,
    pub tags: Vec<String>,
    pub price_cents: i64,
}

impl From<CourseInput> for Draft {
    fn from(i: CourseInput) -> Self {
        Draft {
            title: i.title,
            slug: i.slug,
            description: i.description,
            instructor: i.instructor,
            duration_minutes: i.duration_minutes,
            level: i.level,
            tags: i.tags,
            price_cents: i.price_cents,
        }
    }
}

impl Draft {
    /// The current state of a stored course, to apply a PATCH or PUT onto.
    pub fn from_doc(d: &CourseDoc) -> Self {
        Draft {
            title: d.title.clone(),
            slug: Some(d.slug.clone()),
            description: d.description.clone(),
            instructor: d.instructor.clone(),
            duration_minutes: d.duration_minutes,
            level: d.level,
            tags: d.tags.clone(),
            price_cents: d.price_cents,
        }
    }

    /// Overwrites the fields the patch names.
    pub fn apply(mut self, p: CoursePatch) -> Self {
        if let Some(v) = p.title {
            self.title = v;
        }
        if let Some(v) = p.slug {
            self.slug = Some(v);
        }
        if let Some(v) = p.description {
            self.description = v;
        }
        if let Some(v) = p.instructor {
            self.instructor = v;
        }
        if let Some(v) = p.duration_minutes {
            self.duration_minutes = v;
        }
        if let Some(v) = p.level {
            self.level = v;
        }
        if let Some(v) = p.tags {
            self.tags = v;
        }
        if let Some(v) = p.price_cents {
            self.price_cents = v;
        }
        self
    }

    /// Checks every rule, normalises (trims, lower-cases tags, derives the slug), and returns
    /// either a course ready to store or every broken rule.
    pub fn validate(self) -> Result<ValidCourse, Vec<FieldError>> {
        let mut errors = Vec::new();
        let mut err =
            |field: &'static str, message: String| errors.push(FieldError { field, message });

        let title = collapse_spaces(&self.title);
        let title_len = title.chars().count();
        if title_len == 0 || title_len > TITLE_MAX {
            err(
                "title",
                format!("must be 1 to {TITLE_MAX} characters (got {title_len})"),
            );
        }
        if has_control(&title) {
            err("title", "must not contain control characters".into());
        }

        let slug = match self.slug.as_deref().map(str::trim) {
            Some(s) => s.to_string(),
            None => slugify(&title),
        };
        if !is_slug(&slug) {
            err(
                "slug",
                format!(
                    "`{slug}` must be 1 to {SLUG_MAX} lower-case letters, digits and single \
                     hyphens, e.g. `intro-to-rust`"
                ),
            );
        }

        let description = self.description.trim().to_string();
        let desc_len = description.chars().count();
        if desc_len > DESCRIPTION_MAX {
            err(
                "description",
                format!("must be at most {DESCRIPTION_MAX} characters (got {desc_len})"),
            );
        }

        let instructor = collapse_spaces(&self.instructor);
        let instr_len = instructor.chars().count();
        if instr_len == 0 || instr_len > INSTRUCTOR_MAX {
            err(
                "instructor",
                format!("must be 1 to {INSTRUCTOR_MAX} characters (got {instr_len})"),
            );
        }
        if has_control(&instructor) {
            err("instructor", "must not contain control characters".into());
        }

        if !(DURATION_MIN..=DURATION_MAX).contains(&self.duration_minutes) {
            err(
                "duration_minutes",
                format!(
                    "must be between {DURATION_MIN} and {DURATION_MAX} (got {})",
                    self.duration_minutes
                ),
            );
        }

        let mut tags: Vec<String> = Vec::with_capacity(self.tags.len());
        for raw in &self.tags {
            let tag = collapse_spaces(raw).to_lowercase();
            let n = tag.chars().count();
            if n == 0 || n > TAG_MAX || has_control(&tag) {
                err(
                    "tags",
                    format!("each tag must be 1 to {TAG_MAX} printable characters (got `{raw}`)"),
                );
            } else if !tags.contains(&tag) {
                tags.push(tag);
            }
        }
        if tags.len() > TAGS_MAX {
            err(
                "tags",
                format!("at most {TAGS_MAX} tags (got {})", tags.len()),
            );
        }

        if !(0..=PRICE_MAX_CENTS).contains(&self.price_cents) {
            err(
                "price_cents",
                format!(
                    "must be between 0 and {PRICE_MAX_CENTS} cents (got {})",
                    self.price_cents
                ),
            );
        }

        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(ValidCourse {
            title_key: title.to_lowercase(),
            title,
            slug,
            description,
            instructor,
            duration_minutes: self.duration_minutes,
            level: self.level,
            tags,
            price_cents: self.price_cents,
        })
    }
}

fn collapse_spaces(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn has_control(s: &str) -> bool {
    s.chars().any(char::is_control)
}

/// `Intro to Rust: Ownership!` → `intro-to-rust-ownership`. Non-ASCII letters are dropped;
/// a title with none left gives an empty slug, which validation then reports.
pub fn slugify(title: &str) -> String {
    let mut slug = String::with_capacity(title.len());
    for c in title.chars() {
        if c.is_ascii_alphanumeric() {
            slug.push(c.to_ascii_lowercase());
        } else if !slug.is_empty() && !slug.ends_with('-') {
            slug.push('-');
        }
    }
    while slug.ends_with('-') {
        slug.pop();
    }
    if slug.len() > SLUG_MAX {
        slug.truncate(SLUG_MAX);
        while slug.ends_with('-') {
            slug.pop();
        }
    }
    slug
}

fn is_slug(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= SLUG_MAX
        && !s.starts_with('-')
        && !s.ends_with('-')
        && !s.contains("--")
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn draft() -> Draft {
        Draft {
            title: "  Intro   to Rust ".into(),
            slug: None,
            description: "Ownership and borrowing.".into(),
            instructor: "Ada Lovelace".into(),
            duration_minutes: 90,
            level: Level::Beginner,
            tags: vec!["Rust".into(), "rust".into(), " systems ".into()],
            price_cents: 1999,
        }
    }

    #[test]
    fn one_bad_field_does_not_hide_the_others() {
        let body = serde_json::json!({
            "title": "x".repeat(200),
            "instructor": 7,
            "duration_minutes": 0,
            "level": "expert",
            "tags": "rust",
            "colour": "red",
        });
        let errors = CourseInput::from_json(body).unwrap_err();
        let fields: Vec<&str> = errors.iter().map(|e| e.field).collect();
        assert_eq!(
            fields,
            [
                "instructor",
                "level",
                "tags",
                "body",
                "title",
                "duration_minutes"
            ],
            "{errors:#?}"
        );
        assert!(
            errors[1].message.contains("`expert` is not a level"),
            "{errors:#?}"
        );
        assert!(
            errors[3].message.contains("unknown field `colour`"),
            "{errors:#?}"
        );

        // Missing fields are named once, without rules about their stand-ins.
        let errors = CourseInput::from_json(serde_json::json!({})).unwrap_err();
        let fields: Vec<&str> = errors.iter().map(|e| e.field).collect();
        assert_eq!(fields, ["title", "instructor", "duration_minutes", "level"]);
        assert!(errors.iter().all(|e| e.message == "is required"));

        assert_eq!(
            CourseInput::from_json(serde_json::json!([1])).unwrap_err()[0].field,
            "body"
        );
        let ok = serde_json::json!({
            "title": "Intro", "instructor": "Ada", "duration_minutes": 5, "level": "advanced",
            "price_cents": null,
        });
        assert_eq!(CourseInput::from_json(ok).unwrap().level, Level::Advanced);

        let errors = CoursePatch::from_json(serde_json::json!({
            "price_cents": 1.5, "level": 3, "nope": 1
        }))
        .unwrap_err();
        let fields: Vec<&str> = errors.iter().map(|e| e.field).collect();
        assert_eq!(fields, ["level", "price_cents", "body"]);
    }

    #[test]
    fn normalises_title_tags_and_derives_slug() {
        let v = draft().validate().unwrap();
        assert_eq!(v.title, "Intro to Rust");
        assert_eq!(v.title_key, "intro to rust");
        assert_eq!(v.slug, "intro-to-rust");
        assert_eq!(v.tags, vec!["rust", "systems"]);
    }

    #[test]
    fn reports_every_broken_rule() {
        let mut d = draft();
        d.title = "x".repeat(121);
        d.duration_minutes = 0;
        d.price_cents = -1;
        d.tags = (0..11).map(|i| format!("t{i}")).collect();
        d.instructor = " ".into();
        let fields: Vec<_> = d
            .validate()
            .unwrap_err()
            .into_iter()
            .map(|e| e.field)
            .collect();
        assert_eq!(
            fields,
            vec![
                "title",
                "instructor",
                "duration_minutes",
                "tags",
                "price_cents"
            ]
        );
    }

    #[test]
    fn bounds_are_inclusive() {
        let mut d = draft();
        d.title = "é".repeat(TITLE_MAX);
        d.slug = Some("a".into());
        d.duration_minutes = DURATION_MAX;
        d.description = "d".repeat(DESCRIPTION_MAX);
        d.tags = (0..TAGS_MAX)
            .map(|i| format!("{i}{}", "t".repeat(28)))
            .collect();
        d.price_cents = 0;
        assert!(d.validate().is_ok());
    }

    #[test]
    fn bad_slugs_are_refused() {
        for bad in ["", "Upper", "a--b", "-a", "a-", "a b", "a_b", "ü"] {
            let mut d = draft();
            d.slug = Some(bad.into());
            let errs = d.validate().unwrap_err();
            assert_eq!(errs[0].field, "slug", "{bad:?}");
        }
    }

    #[test]
    fn slugify_handles_punctuation_and_unicode() {
        assert_eq!(slugify("C++ & Rust: 2024!"), "c-rust-2024");
        assert_eq!(slugify("Ünïcode"), "n-code");
        assert_eq!(slugify("日本語"), "");
        assert_eq!(slugify(&"ab ".repeat(100)).len(), SLUG_MAX - 1);
    }

    #[test]
    fn patch_overwrites_only_named_fields() {
        let v = draft()
            .apply(CoursePatch {
                price_cents: Some(0),
                ..CoursePatch::default()
            })
            .validate()
            .unwrap();
        assert_eq!(v.price_cents, 0);
        assert_eq!(v.title, "Intro to Rust");
    }

    #[test]
    fn unknown_fields_are_rejected_by_the_parser() {
        let err = serde_json::from_str::<CoursePatch>(r#"{"titel":"x"}"#).unwrap_err();
        assert!(err.to_string().contains("titel"), "{err}");
    }
}
