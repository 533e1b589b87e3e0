//! `course-service export FILE` and `course-service import FILE`: the catalogue as MongoDB
//! Extended JSON (canonical mode), one stored document per line, in `_id` order.
//!
//! - Export writes every field as stored (ids, versions, timestamps), to a temporary file
//!   renamed over `FILE` at the end, so a failed export never leaves half a backup.
//! - Import reads and checks the whole file before writing anything: every line must be a
//!   course as stored (Extended JSON that decodes into one) that keeps every rule of the API,
//!   with no `_id`, slug or title repeated; the first problem is reported with its line, and a
//!   corrupt file writes nothing. Then each course replaces the one with its `_id` (or is
//!   added), so importing twice leaves the same catalogue, and a round trip
//!   (export, import into an empty database, export) gives the same bytes.

use std::collections::HashSet;
use std::io::Write;
use std::path::Path;

use mongodb::bson::{self, Bson, Document};

use crate::model::{CourseDoc, Draft};
use crate::store::CourseStore;

/// What an import did.
#[derive(Debug, PartialEq, Eq)]
pub struct ImportReport {
    /// Courses the file added.
    pub added: u64,
    /// Courses that were there and were replaced (unchanged ones included).
    pub replaced: u64,
}

/// Writes every course to `path`; returns how many.
pub async fn export(store: &CourseStore, path: &Path) -> Result<u64, String> {
    let docs = store.all_raw().await.map_err(|e| e.to_string())?;
    let tmp = path.with_extension("partial");
    let write = || -> std::io::Result<()> {
        let mut out = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
        for doc in &docs {
            let line = serde_json::to_string(&Bson::Document(doc.clone()).into_canonical_extjson())
                .map_err(std::io::Error::other)?;
            out.write_all(line.as_bytes())?;
            out.write_all(b"\n")?;
        }
        out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        format!("{}: cannot write: {e}", path.display())
    })?;
    Ok(docs.len() as u64)
}

/// Reads and checks the whole file: the documents, or the first problem with its line.
pub fn read(path: &Path) -> Result<Vec<Document>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
    let mut docs = Vec::new();
    let (mut ids, mut slugs, mut titles) = (HashSet::new(), HashSet::new(), HashSet::new());
    for (i, line) in text.lines().enumerate() {
        let at = |what: String| format!("{}:{}: {what}", path.display(), i + 1);
        if line.trim().is_empty() {
            continue;
        }
        let json: serde_json::Value =
            serde_json::from_str(line).map_err(|e| at(format!("not JSON: {e}")))?;
        let Ok(Bson::Document(doc)) = Bson::try_from(json) else {
            return Err(at("not an Extended JSON document".into()));
        };
        let course: CourseDoc = bson::from_document(doc.clone())
            .map_err(|e| at(format!("not a stored course: {e}")))?;
        check(&course).map_err(at)?;
        if !ids.insert(course.id) {
            return Err(at(format!("_id {} repeated", course.id)));
        }
        if !slugs.insert(course.slug.clone()) {
            return Err(at(format!("slug `{}` repeated", course.slug)));
        }
        if !titles.insert(course.title_key.clone()) {
            return Err(at(format!("title `{}` repeated", course.title)));
        }
        docs.push(doc);
    }
    Ok(docs)
}

/// The rules a stored course keeps: what the API would have accepted, already normalised.
fn check(c: &CourseDoc) -> Result<(), String> {
    let valid = Draft::from_doc(c).validate().map_err(|errors| {
        errors
            .iter()
            .map(|e| format!("{}: {}", e.field, e.message))
            .collect::<Vec<_>>()
            .join("; ")
    })?;
    if valid.title != c.title || valid.slug != c.slug || valid.tags != c.tags {
        return Err("title, slug or tags not in their stored (normalised) form".into());
    }
    if valid.title_key != c.title_key {
        return Err("title_key does not match the title".into());
    }
    if c.version < 1 {
        return Err(format!("version {} is not at least 1", c.version));
    }
    if c.updated_at < c.created_at {
        return Err("updated_at is before created_at".into());
    }
    Ok(())
}

/// Writes the checked documents: each replaces the course with its `_id`, or is added.
pub async fn import(store: &CourseStore, docs: Vec<Document>) -> Result<ImportReport, String> {
    let mut report = ImportReport {
        added: 0,
        replaced: 0,
    };
    for doc in docs {
        let added = store.put_raw(doc).await.map_err(|e| e.to_string())?;
        if added {
            report.added += 1;
        } else {
            report.replaced += 1;
        }
    }
    Ok(report)
}
