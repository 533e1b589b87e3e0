//! `GET /api/courses` parameters: parsed strictly, normalised into one canonical form, and
//! turned into a MongoDB filter in which user text can only ever be a literal.
//!
//! The canonical form (`ListQuery::canonical`) fixes parameter order and fills defaults, so
//! `?page=1&q=rust` and `?q=rust` are the same query: the paging links use it, and the cache
//! keys will.

use mongodb::bson::{doc, Document, Regex};
use serde::Deserialize;

use crate::model::{FieldError, Level};

pub const DEFAULT_PER_PAGE: u32 = 20;
/// The hard cap on page size: larger pages cost the database and the wire for little gain.
pub const MAX_PER_PAGE: u32 = 100;
/// A page number past this is a crawl or a bug; skip-based paging would scan that far.
pub const MAX_PAGE: u32 = 10_000;
pub const Q_MAX: usize = 100;

/// A sort the API accepts: `field` ascending, `-field` descending.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sort {
    /// The public name (`title`, `created_at`, `price`, `duration`).
    pub key: &'static str,
    /// The stored field it orders by.
    pub field: &'static str,
    pub descending: bool,
}

/// The whitelist: public sort name → stored field. The read model keeps one ordered index per
/// entry, in this order ([`Sort::position`]), and the database one index per entry.
pub const SORTABLE: [(&str, &str); 5] = [
    ("title", "title_key"),
    ("created_at", "created_at"),
    ("updated_at", "updated_at"),
    ("price", "price_cents"),
    ("duration", "duration_minutes"),
];

pub const DEFAULT_SORT: &str = "-created_at";

impl Sort {
    pub fn parse(s: &str) -> Option<Sort> {
        let (descending, name) = match s.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, s),
        };
        SORTABLE
            .iter()
            .find(|(key, _)| *key == name)
            .map(|(key, field)| Sort {
                key,
                field,
                descending,
            })
    }

    /// Where this sort's field is in [`SORTABLE`].
    pub fn position(self) -> usize {
        SORTABLE
            .iter()
            .position(|(key, _)| *key == self.key)
            .expect("a Sort is only built from SORTABLE")
    }

    /// The MongoDB sort document, with `_id` as tie-breaker so pages never overlap.
    pub fn to_document(self) -> Document {
        let dir = if self.descending { -1 } else { 1 };
        doc! { self.field: dir, "_id": dir }
    }

    fn as_param(self) -> String {
        if self.descending {
            format!("-{}", self.key)
        } else {
            self.key.to_string()
        }
    }
}

/// The raw query string, exactly as sent; unknown parameters are errors.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawParams {
    q: Option<String>,
    tag: Option<String>,
    level: Option<String>,
    sort: Option<String>,
    page: Option<String>,
    per_page: Option<String>,
}

/// A validated, normalised listing query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListQuery {
    /// Case-insensitive substring of title, description or instructor.
    pub q: Option<String>,
    /// Exact tag (tags are stored lower-case).
    pub tag: Option<String>,
    pub level: Option<Level>,
    pub sort: Sort,
    /// 1-based.
    pub page: u32,
    pub per_page: u32,
}

impl Default for ListQuery {
    fn default() -> Self {
        ListQuery {
            q: None,
            tag: None,
            level: None,
            sort: Sort::parse(DEFAULT_SORT).expect("default sort is whitelisted"),
            page: 1,
            per_page: DEFAULT_PER_PAGE,
        }
    }
}

/// Why a query string was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum QueryError {
    /// Not a well-formed query string, or an unknown/duplicate parameter.
    Malformed(String),
    /// Well-formed, but a value is out of range.
    Invalid(Vec<FieldError>),
}

impl ListQuery {
    /// Parses `raw` (the part after `?`, possibly empty).
    pub fn parse(raw: &str) -> Result<ListQuery, QueryError> {
        let p: RawParams = serde_urlencoded::from_str(raw).map_err(|e| {
            QueryError::Malformed(format!(
                "{e}; allowed parameters: q, tag, level, sort, page, per_page"
            ))
        })?;
        // Text with control characters (a NUL, say) is no search anyone typed, and some of
        // them cannot reach the database at all: refused as malformed, naming the parameter.
        for (name, value) in [
            ("q", &p.q),
            ("tag", &p.tag),
            ("level", &p.level),
            ("sort", &p.sort),
        ] {
            if let Some(c) = value
                .as_deref()
                .and_then(|v| v.chars().find(|c| c.is_control()))
            {
                return Err(QueryError::Malformed(format!(
                    "`{name}` contains the control character U+{:04X}; send printable text",
                    u32::from(c)
                )));
            }
        }
        let mut errors = Vec::new();
        let mut query = ListQuery {
            q: p.q.map(|q| q.trim().to_string()).filter(|q| !q.is_empty()),
            ..ListQuery::default()
        };
        if let Some(q) = &query.q {
            if q.chars().count() > Q_MAX {
                errors.push(FieldError {
                    field: "q",
                    message: format!("search text must be at most {Q_MAX} characters"),
                });
            }
        }
        query.tag = p
            .tag
            .map(|t| {
                t.split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" ")
                    .to_lowercase()
            })
            .filter(|t| !t.is_empty());
        if let Some(level) = p.level.as_deref().map(str::trim).filter(|l| !l.is_empty()) {
            match Level::parse(&level.to_lowercase()) {
                Some(l) => query.level = Some(l),
                None => errors.push(FieldError {
                    field: "level",
                    message: format!(
                        "`{level}` is not a level; use beginner, intermediate or advanced"
                    ),
                }),
            }
        }
        if let Some(sort) = p.sort.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
            match Sort::parse(sort) {
                Some(s) => query.sort = s,
                None => errors.push(FieldError {
                    field: "sort",
                    message: format!(
                        "`{sort}` is not sortable; use one of {}, each optionally prefixed \
                         with - for descending",
                        SORTABLE.map(|(k, _)| k).join(", ")
                    ),
                }),
            }
        }
        if let Some(page) = p.page {
            match page.trim().parse::<u32>() {
                Ok(n) if (1..=MAX_PAGE).contains(&n) => query.page = n,
                _ => errors.push(FieldError {
                    field: "page",
                    message: format!("must be a whole number from 1 to {MAX_PAGE}"),
                }),
            }
        }
        if let Some(per_page) = p.per_page {
            match per_page.trim().parse::<u32>() {
                Ok(n) if (1..=MAX_PER_PAGE).contains(&n) => query.per_page = n,
                _ => errors.push(FieldError {
                    field: "per_page",
                    message: format!("must be a whole number from 1 to {MAX_PER_PAGE}"),
                }),
            }
        }
        if errors.is_empty() {
            Ok(query)
        } else {
            Err(QueryError::Invalid(errors))
        }
    }

    /// The canonical query string: fixed order, defaults filled in.
    pub fn canonical(&self) -> String {
        self.with_page(self.page)
    }

    /// The canonical query string for another page of the same listing.
    pub fn with_page(&self, page: u32) -> String {
        let mut pairs: Vec<(&str, String)> = Vec::with_capacity(6);
        if let Some(q) = &self.q {
            pairs.push(("q", q.clone()));
        }
        if let Some(tag) = &self.tag {
            pairs.push(("tag", tag.clone()));
        }
        if let Some(level) = self.level {
            pairs.push(("level", level.as_str().to_string()));
        }
        pairs.push(("sort", self.sort.as_param()));
        pairs.push(("page", page.to_string()));
        pairs.push(("per_page", self.per_page.to_string()));
        serde_urlencoded::to_string(pairs).expect("string pairs always encode")
    }

    /// The MongoDB filter. Search text is escaped, so `.*` or `$where` are matched literally.
    pub fn filter(&self) -> Document {
        let mut clauses = Vec::new();
        if let Some(q) = &self.q {
            let pattern = Regex {
                pattern: regex_escape(q),
                options: "i".into(),
            };
            clauses.push(doc! { "$or": [
                { "title": pattern.clone() },
                { "description": pattern.clone() },
                { "instructor": pattern },
            ]});
        }
        if let Some(tag) = &self.tag {
            // `$eq` keeps the value a literal even if it looks like an operator document.
            clauses.push(doc! { "tags": { "$eq": tag } });
        }
        if let Some(level) = self.level {
            clauses.push(doc! { "level": level.as_str() });
        }
        match clauses.len() {
            0 => Document::new(),
            1 => clauses.pop().expect("one clause"),
            _ => doc! { "$and": clauses },
        }
    }

    /// Documents to skip for this page.
    pub fn skip(&self) -> u64 {
        u64::from(self.page - 1) * u64::from(self.per_page)
    }
}

/// Escapes every regex metacharacter so `s` matches itself and nothing else.
pub fn regex_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 2);
    for c in s.chars() {
        if "\\^$.|?*+()[]{}".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_fill_in_and_order_does_not_matter() {
        let a = ListQuery::parse("page=1&q=rust&per_page=20").unwrap();
        let b = ListQuery::parse("q=%20rust%20").unwrap();
        assert_eq!(a, b);
        assert_eq!(a.canonical(), "q=rust&sort=-created_at&page=1&per_page=20");
    }

    #[test]
    fn canonical_round_trips() {
        let q =
            ListQuery::parse("q=c%2B%2B+%26+go&tag=Web&level=Advanced&sort=price&page=3").unwrap();
        assert_eq!(q.q.as_deref(), Some("c++ & go"));
        assert_eq!(q.tag.as_deref(), Some("web"));
        assert_eq!(ListQuery::parse(&q.canonical()).unwrap(), q);
    }

    #[test]
    fn unknown_and_duplicate_parameters_are_malformed() {
        assert!(matches!(
            ListQuery::parse("colour=red"),
            Err(QueryError::Malformed(m)) if m.contains("colour")
        ));
        assert!(matches!(
            ListQuery::parse("q=a&q=b"),
            Err(QueryError::Malformed(_))
        ));
    }

    #[test]
    fn out_of_range_values_are_all_reported() {
        let Err(QueryError::Invalid(errs)) =
            ListQuery::parse("per_page=101&page=0&sort=password&level=expert")
        else {
            panic!("expected invalid");
        };
        let fields: Vec<_> = errs.iter().map(|e| e.field).collect();
        assert_eq!(fields, vec!["level", "sort", "page", "per_page"]);
    }

    #[test]
    fn control_characters_are_malformed_and_named() {
        for raw in ["q=%00", "q=a%0Ab", "tag=x%1F", "sort=%7F"] {
            let Err(QueryError::Malformed(m)) = ListQuery::parse(raw) else {
                panic!("{raw} accepted");
            };
            assert!(m.contains("control character"), "{m}");
        }
        // Printable non-ASCII is search text like any other.
        assert!(ListQuery::parse("q=caf%C3%A9").is_ok());
    }

    #[test]
    fn search_text_is_a_literal() {
        let q = ListQuery::parse("q=.*%24where").unwrap();
        let filter = q.filter();
        let text = filter.to_string();
        assert!(text.contains(r"\.\*\$where"), "{text}");
        assert_eq!(regex_escape("a+b(c)"), r"a\+b\(c\)");
    }

    #[test]
    fn skip_is_page_times_size() {
        let q = ListQuery::parse("page=3&per_page=7").unwrap();
        assert_eq!(q.skip(), 14);
    }

    // The property of `fuzz/fuzz_targets/list_query.rs`, on stable in every test run.
    proptest::proptest! {
        #[test]
        fn an_accepted_query_has_a_stable_canonical_form(
            raw in "((q|tag|level|sort|page|per_page|x)=([a-z0-9%+-]|title|price|-created_at|beginner){0,6}&?){0,6}",
        ) {
            if let Ok(query) = ListQuery::parse(&raw) {
                let canonical = query.canonical();
                let again = ListQuery::parse(&canonical);
                proptest::prop_assert!(again.is_ok(), "{} -> {}", raw, canonical);
                proptest::prop_assert_eq!(again.unwrap().canonical(), canonical);
            }
        }
    }
}
