//! `course-service seed FILE`: loads a JSON array of courses, idempotently.
//!
//! Every course is validated before anything is written, so a bad file changes nothing.
//! Courses are matched by slug: running the seed twice inserts nothing the second time and
//! never overwrites a course an admin has edited since.

use std::path::Path;

use crate::model::{CourseInput, Draft, ValidCourse};
use crate::store::CourseStore;

/// What a seed run did.
#[derive(Debug, PartialEq, Eq)]
pub struct SeedReport {
    pub inserted: usize,
    pub already_present: usize,
}

/// Reads and validates the whole file; every problem is reported, with the course's index.
pub fn read(path: &Path) -> Result<Vec<ValidCourse>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
    let inputs: Vec<CourseInput> = serde_json::from_str(&text).map_err(|e| {
        format!(
            "{}: line {}, column {}: {e}",
            path.display(),
            e.line(),
            e.column()
        )
    })?;
    let mut courses = Vec::with_capacity(inputs.len());
    let mut problems = Vec::new();
    for (i, input) in inputs.into_iter().enumerate() {
        let title = input.title.clone();
        match Draft::from(input).validate() {
            Ok(c) => {
                if courses.iter().any(|o: &ValidCourse| o.slug == c.slug) {
                    problems.push(format!("course #{i} `{title}`: slug `{}` repeated", c.slug));
                }
                courses.push(c);
            }
            Err(errors) => {
                for e in errors {
                    problems.push(format!("course #{i} `{title}`: {}: {}", e.field, e.message));
                }
            }
        }
    }
    if problems.is_empty() {
        Ok(courses)
    } else {
        Err(format!(
            "{}: nothing was loaded:\n  {}",
            path.display(),
            problems.join("\n  ")
        ))
    }
}

/// Inserts each course whose slug is not in the catalogue yet.
pub async fn load(store: &CourseStore, courses: Vec<ValidCourse>) -> Result<SeedReport, String> {
    store
        .ensure_indexes()
        .await
        .map_err(|e| format!("cannot create indexes: {e}"))?;
    let mut report = SeedReport {
        inserted: 0,
        already_present: 0,
    };
    for c in courses {
        let slug = c.slug.clone();
        match store.insert_if_absent(c).await {
            Ok(true) => report.inserted += 1,
            Ok(false) => report.already_present += 1,
            Err(e) => return Err(format!("course `{slug}`: {e}")),
        }
    }
    Ok(report)
}
