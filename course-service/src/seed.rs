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

// ===== generated catalogues =====

const TOPICS: &[&str] = &[
    "Rust",
    "Go",
    "Python",
    "TypeScript",
    "Kubernetes",
    "PostgreSQL",
    "MongoDB",
    "Redis",
    "Networking",
    "Linux",
    "Compilers",
    "Databases",
    "Security",
    "Machine Learning",
    "Statistics",
    "Design",
    "Cooking",
    "Photography",
    "Music Theory",
    "Crème Pâtissière",
    "Café Latte Art",
    "Distributed Systems",
    "HTTP",
    "TLS",
    "WebAssembly",
    "Algorithms",
];
const KINDS: &[&str] = &[
    "Basics",
    "in Depth",
    "for Beginners",
    "Workshop",
    "Masterclass",
    "Patterns",
    "in Production",
    "from Scratch",
    "Deep Dive",
    "Crash Course",
];
const WORDS: &[&str] = &[
    "learn",
    "build",
    "measure",
    "debug",
    "deploy",
    "the",
    "a",
    "with",
    "and",
    "of",
    "your",
    "first",
    "service",
    "server",
    "client",
    "memory",
    "latency",
    "cache",
    "index",
    "query",
    "proxy",
    "balancer",
    "thread",
    "async",
    "borrow",
    "lifetime",
    "schema",
    "replica",
    "shard",
    "étude",
    "naïve",
    "résumé",
    "garbage",
    "collector",
    "tokio",
    "kernel",
    "socket",
    "packet",
    "benchmark",
    "profile",
    "flame",
    "graph",
    "test",
    "fuzz",
    "property",
    "model",
    "stream",
];
const INSTRUCTORS: &[&str] = &[
    "Ada Lovelace",
    "Grace Hopper",
    "Niko Ferris",
    "Barbara Liskov",
    "Edsger Dijkstra",
    "Margaret Hamilton",
    "Ken Thompson",
    "Radia Perlman",
    "Donald Knuth",
    "Frances Allen",
    "José Valim",
    "Zoë Müller",
    "Léa Dubois",
    "Björn Strand",
];
const TAGS: &[&str] = &[
    "rust",
    "go",
    "python",
    "web",
    "async",
    "systems",
    "data",
    "ops",
    "security",
    "design",
    "cooking",
    "music",
    "ml",
    "networking",
    "databases",
    "cloud",
    "testing",
    "performance",
    "frontend",
    "backend",
];

/// `count` courses generated from `seed`: the same arguments give the same courses (ids,
/// titles, timestamps and all), so benchmarks and tests can compare runs. Titles and slugs
/// are unique; prices, durations and timestamps repeat on purpose, so sorts need their
/// `_id` tie-breaker; text includes accented letters, so search must fold their case.
pub fn synthetic(count: usize, seed: u64) -> Vec<crate::model::CourseDoc> {
    use mongodb::bson::{oid::ObjectId, DateTime};
    let mut rng = fastrand::Rng::with_seed(seed);
    // 2025-01-01, then about a year of creation times at minute resolution (so some tie).
    let epoch_ms: i64 = 1_735_689_600_000;
    let pick = |rng: &mut fastrand::Rng, list: &[&'static str]| list[rng.usize(..list.len())];
    (0..count)
        .map(|i| {
            let topic = pick(&mut rng, TOPICS);
            let kind = pick(&mut rng, KINDS);
            let title = format!("{topic} {kind} #{i}");
            let words = rng.usize(20..80);
            let description = (0..words)
                .map(|_| pick(&mut rng, WORDS))
                .collect::<Vec<_>>()
                .join(" ");
            let mut tags: Vec<String> = (0..rng.usize(1..=4))
                .map(|_| pick(&mut rng, TAGS).to_string())
                .collect();
            tags.sort();
            tags.dedup();
            let created = epoch_ms + 60_000 * rng.i64(0..525_600);
            let mut id = [0u8; 12];
            id[..4].copy_from_slice(&u32::try_from(created / 1000).unwrap_or(0).to_be_bytes());
            id[4..8].copy_from_slice(&(seed as u32).to_be_bytes());
            id[8..].copy_from_slice(&u32::try_from(i).unwrap_or(u32::MAX).to_be_bytes());
            let version = rng.i64(1..4);
            crate::model::CourseDoc {
                id: ObjectId::from_bytes(id),
                title_key: title.to_lowercase(),
                slug: format!("{}-{i}", crate::model::slugify(&format!("{topic} {kind}"))),
                title,
                description: format!("{topic}: {description}."),
                instructor: pick(&mut rng, INSTRUCTORS).to_string(),
                duration_minutes: 15 * rng.i64(2..=40),
                level: crate::model::Level::ALL[rng.usize(..3)],
                tags,
                price_cents: 500 * rng.i64(0..40),
                created_at: DateTime::from_millis(created),
                updated_at: DateTime::from_millis(created + 3_600_000 * (version - 1)),
                version,
            }
        })
        .collect()
}

/// Inserts generated courses in batches; courses already present (same ids, from an earlier
/// run with the same seed) are left alone. Returns how many were inserted.
pub async fn load_synthetic(
    store: &CourseStore,
    courses: Vec<crate::model::CourseDoc>,
) -> Result<u64, String> {
    store
        .ensure_indexes()
        .await
        .map_err(|e| format!("cannot create indexes: {e}"))?;
    let mut inserted = 0;
    for batch in courses.chunks(1000) {
        inserted += store
            .insert_new(batch.to_vec())
            .await
            .map_err(|e| e.to_string())?;
    }
    Ok(inserted)
}
