//! The read model on disk, so that an instance started again (a deploy, a restart after a
//! crash) takes up where the catalogue was instead of reading all of it from the database:
//! a full read of a large catalogue costs the database for seconds (SecantusDB stalls its
//! writers meanwhile), a snapshot costs it one `listCollections` and a change stream resumed.
//!
//! - **What.** The courses the model held and the change stream's resume token at that
//!   moment, taken between two events (by the task that applies them), so the two agree.
//! - **Used** only when it is whole (its header counts the courses that follow), of this
//!   collection (database, name and UUID: [`Identity`]), and the server still has the history
//!   after its token. The model then resumes the stream after the token, replays the events
//!   since on top and serves once caught up, as after a load. Otherwise it is loaded from the
//!   database, as without a snapshot.
//! - **Written** after the first load and then at most every `snapshot_interval` while
//!   changes flow, to a temporary file beside it that is then renamed over it: a reader sees
//!   one whole snapshot or the one before. Every instance of a fleet may share the path: any
//!   instance's snapshot of the collection is as good as its own.
//!
//! The format: BSON documents one after the other, a [`Header`] and then the courses as the
//! collection stores them.

use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use mongodb::change_stream::event::ResumeToken;
use serde::{Deserialize, Serialize};

use super::index::Held;
use crate::model::CourseDoc;
use crate::store::Identity;

/// The version of the format; another is not read.
const FORMAT: i32 = 1;

/// No course document is larger than the server's own limit.
const MAX_DOCUMENT: usize = 16 * 1024 * 1024;

#[derive(Serialize, Deserialize)]
struct Header {
    format: i32,
    of: Identity,
    token: ResumeToken,
    courses: i64,
}

/// A snapshot read back: the courses and where the change stream takes up.
pub struct Snapshot {
    pub courses: Vec<CourseDoc>,
    pub token: ResumeToken,
}

/// Writes the snapshot of `courses` at `token` to `path` (see the module doc); returns its
/// size in bytes.
pub fn write(path: &Path, of: &Identity, token: &ResumeToken, courses: &[Held]) -> io::Result<u64> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let temporary = temporary(path);
    let written = write_to(&temporary, of, token, courses)
        .and_then(|size| std::fs::rename(&temporary, path).map(|()| size));
    if written.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    written
}

fn write_to(path: &Path, of: &Identity, token: &ResumeToken, courses: &[Held]) -> io::Result<u64> {
    let mut out = BufWriter::with_capacity(1 << 20, File::create(path)?);
    let header = Header {
        format: FORMAT,
        of: of.clone(),
        token: token.clone(),
        courses: i64::try_from(courses.len()).unwrap_or(i64::MAX),
    };
    let mut size = put(&mut out, &header)?;
    for held in courses {
        size += put(&mut out, &held.doc())?;
    }
    out.into_inner().map_err(io::IntoInnerError::into_error)?;
    Ok(size)
}

fn put(out: &mut impl Write, value: &impl Serialize) -> io::Result<u64> {
    let bytes = mongodb::bson::to_vec(value).map_err(io::Error::other)?;
    out.write_all(&bytes)?;
    Ok(bytes.len() as u64)
}

/// `path` with `.<pid>.tmp` after it: one writer per process at a time.
fn temporary(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{}.tmp", std::process::id()));
    PathBuf::from(name)
}

/// Reads the snapshot at `path` if it is whole and of collection `of`; the error says why
/// not, for the log.
pub fn read(path: &Path, of: &Identity) -> Result<Snapshot, String> {
    let file = File::open(path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    let mut input = BufReader::with_capacity(1 << 20, file);
    let broken = |what: String| format!("{} is not a whole snapshot: {what}", path.display());
    let header: Header = take(&mut input)
        .map_err(|e| broken(format!("header: {e}")))?
        .ok_or_else(|| broken("empty".into()))?;
    if header.format != FORMAT {
        return Err(format!(
            "{} is in format {}, not {FORMAT}",
            path.display(),
            header.format
        ));
    }
    if header.of != *of {
        return Err(format!(
            "{} is of {}.{} {:?}, not of this collection ({}.{} {:?})",
            path.display(),
            header.of.database,
            header.of.collection,
            header.of.uuid.bytes,
            of.database,
            of.collection,
            of.uuid.bytes
        ));
    }
    let count = usize::try_from(header.courses).map_err(|_| broken("course count".into()))?;
    let mut courses = Vec::with_capacity(count.min(1 << 20));
    for n in 0..count {
        let course = take(&mut input)
            .map_err(|e| broken(format!("course {n}: {e}")))?
            .ok_or_else(|| broken(format!("{n} courses of {count}")))?;
        courses.push(course);
    }
    if input
        .fill_buf()
        .map_err(|e| broken(e.to_string()))?
        .is_empty()
    {
        Ok(Snapshot {
            courses,
            token: header.token,
        })
    } else {
        Err(broken(format!("more than the {count} courses it counts")))
    }
}

/// The next document of `input` (`None` at its end).
fn take<T: serde::de::DeserializeOwned>(input: &mut impl Read) -> Result<Option<T>, String> {
    let mut length = [0u8; 4];
    match input.read_exact(&mut length) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.to_string()),
    }
    let size = usize::try_from(i32::from_le_bytes(length)).unwrap_or(0);
    if !(5..=MAX_DOCUMENT).contains(&size) {
        return Err(format!("a document of {size} bytes"));
    }
    let mut bytes = vec![0u8; size];
    bytes[..4].copy_from_slice(&length);
    input
        .read_exact(&mut bytes[4..])
        .map_err(|e| e.to_string())?;
    mongodb::bson::from_slice(&bytes)
        .map(Some)
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::readmodel::Index;
    use mongodb::bson::{doc, spec::BinarySubtype, Binary};

    fn identity(database: &str, uuid: u8) -> Identity {
        Identity {
            database: database.into(),
            collection: "courses".into(),
            uuid: Binary {
                subtype: BinarySubtype::Uuid,
                bytes: vec![uuid; 16],
            },
        }
    }

    fn token() -> ResumeToken {
        mongodb::bson::from_document(doc! { "_data": "8263a1" }).unwrap()
    }

    fn by_id(mut docs: Vec<CourseDoc>) -> Vec<String> {
        docs.sort_by_key(|d| d.id);
        docs.iter()
            .map(|d| mongodb::bson::to_document(d).unwrap().to_string())
            .collect()
    }

    struct Scratch(PathBuf);

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn scratch(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("mc-snapshot-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    #[test]
    fn a_snapshot_reads_back_every_course_as_stored_and_its_token() {
        let dir = scratch("round-trip");
        let path = dir.0.join("nested/catalogue.snapshot");
        let docs = crate::seed::synthetic(300, 3);
        let index = Index::build(docs.clone());
        let of = identity("db", 1);
        let size = write(&path, &of, &token(), &index.held()).unwrap();
        assert_eq!(size, std::fs::metadata(&path).unwrap().len());
        let back = read(&path, &of).unwrap();
        assert_eq!(back.token, token());
        assert_eq!(by_id(back.courses), by_id(docs));
        // Nothing is left beside it.
        let beside: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(beside.len(), 1, "{beside:?}");
    }

    #[test]
    fn a_snapshot_of_another_collection_cut_short_or_grown_is_refused() {
        let dir = scratch("refused");
        let path = dir.0.join("catalogue.snapshot");
        let index = Index::build(crate::seed::synthetic(50, 4));
        write(&path, &identity("db", 1), &token(), &index.held()).unwrap();
        for other in [identity("db", 2), identity("other", 1)] {
            let why = read(&path, &other).err().expect("refused");
            assert!(why.contains("not of this collection"), "{why}");
        }
        let whole = std::fs::read(&path).unwrap();
        for cut in [0, 3, 100, whole.len() / 2, whole.len() - 1] {
            std::fs::write(&path, &whole[..cut]).unwrap();
            let why = read(&path, &identity("db", 1)).err().expect("refused");
            assert!(why.contains("not a whole snapshot"), "cut at {cut}: {why}");
        }
        let mut grown = whole.clone();
        grown.extend_from_slice(&whole[..40]);
        std::fs::write(&path, &grown).unwrap();
        let why = read(&path, &identity("db", 1)).err().expect("refused");
        assert!(why.contains("more than"), "{why}");
        let why = read(&dir.0.join("none"), &identity("db", 1))
            .err()
            .expect("refused");
        assert!(why.contains("cannot open"), "{why}");
    }
}
