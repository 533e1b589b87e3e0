//! The read model's data: every course, and the indexes a listing query walks.
//!
//! - Each course sits in a *slot* (a small integer, reused after a delete), so sets of courses
//!   are compressed bitmaps ([`RoaringBitmap`]) and filters are bitmap intersections.
//! - One ordered set per sortable field holds `(value, _id, slot)`: the database's order
//!   (`{field: dir, _id: dir}`, byte-wise strings), walked forwards or backwards.
//! - `tag` and `level` are bitmaps per value.
//! - `q` (case-insensitive substring of title, description or instructor, the database's
//!   escaped `$regex` with option `i`) uses a trigram index: a course can only contain the
//!   lower-cased search text if it contains each of its three-byte windows, so the postings of
//!   those windows, intersected, are the candidates, and each candidate is then checked
//!   exactly. Every text ends with a separator, so each occurrence of a one- or two-byte
//!   search starts some window: its matches are exactly the union of the windows it begins.
//!
//! The matches of the last [`SEARCHES_KEPT`] search texts are kept, and every change updates
//! them (one substring check per kept text), so a repeated search costs a lookup even while
//! writes flow.
//!
//! A search that finds nothing is answered with a suggestion when one finds courses: its
//! words no course has, replaced by the closest words of the catalogue's [`Vocabulary`]
//! (`super::suggest`).
//!
//! A page is then either a walk of the ordered set (skipping courses the filter drops), or,
//! when the filter keeps few courses, a partial sort of just those: whichever touches fewer.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::{Arc, Mutex};

use memchr::memmem;
use mongodb::bson::oid::ObjectId;
use roaring::RoaringBitmap;

use super::suggest::{words, Vocabulary};
use crate::model::{Course, CourseDoc, Level};
use crate::query::{ListQuery, SORTABLE};

/// A filter keeping at most 1/`SELECTIVE` of the catalogue is sorted rather than walked.
const SELECTIVE: u64 = 16;

/// Stop intersecting trigram postings once this few candidates are left: checking them is
/// cheaper than more intersections.
const FEW_CANDIDATES: u64 = 64;

/// Search texts whose matches are kept up to date.
const SEARCHES_KEPT: usize = 512;

/// Separates the searchable fields in [`Entry::text`]: a control character, which a search
/// never contains (the query parser refuses them), so no match can span two fields.
const FIELD_SEPARATOR: char = '\u{1}';

/// A value a listing sorts by.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Key {
    Int(i64),
    Text(Arc<str>),
}

/// The sort key of `doc` for the stored field `field` (one of [`SORTABLE`]'s).
fn key(doc: &CourseDoc, field: &str) -> Key {
    match field {
        "title_key" => Key::Text(Arc::from(doc.title_key.as_str())),
        "created_at" => Key::Int(doc.created_at.timestamp_millis()),
        "updated_at" => Key::Int(doc.updated_at.timestamp_millis()),
        "price_cents" => Key::Int(doc.price_cents),
        "duration_minutes" => Key::Int(doc.duration_minutes),
        other => unreachable!("sortable field `{other}` has no key in the read model"),
    }
}

struct Entry {
    id: ObjectId,
    course: Arc<Course>,
    /// One per [`SORTABLE`] entry, in its order.
    keys: [Key; SORTABLE.len()],
    level: Level,
    /// Lower-cased title, description and instructor, each followed by [`FIELD_SEPARATOR`].
    text: Box<str>,
}

impl Entry {
    fn new(doc: CourseDoc) -> Entry {
        let keys = SORTABLE.map(|(_, field)| key(&doc, field));
        let mut text = String::with_capacity(
            doc.title.len() + doc.description.len() + doc.instructor.len() + 3,
        );
        for field in [&doc.title, &doc.description, &doc.instructor] {
            text.push_str(&field.to_lowercase());
            text.push(FIELD_SEPARATOR);
        }
        let text = text.into_boxed_str();
        Entry {
            id: doc.id,
            level: doc.level,
            keys,
            text,
            course: Arc::new(Course::from(doc)),
        }
    }
}

/// The value of sort `field` in `keys`.
fn key_of<'k>(keys: &'k [Key; SORTABLE.len()], field: &str) -> &'k Key {
    let at = SORTABLE
        .iter()
        .position(|(_, f)| *f == field)
        .expect("a sortable field");
    &keys[at]
}

/// A course as the index holds it, shared rather than copied: what a snapshot of the model
/// is taken from ([`Index::held`]) and turned back into the stored document off the lock.
pub struct Held {
    id: ObjectId,
    course: Arc<Course>,
    title_key: Arc<str>,
    created_at: i64,
    updated_at: i64,
}

impl Held {
    /// The document the database holds for this course (the index keeps every field of it:
    /// the dates, to the millisecond the database stores, in the sort keys).
    pub fn doc(&self) -> CourseDoc {
        use mongodb::bson::DateTime;
        let c = &*self.course;
        CourseDoc {
            id: self.id,
            title: c.title.clone(),
            title_key: self.title_key.to_string(),
            slug: c.slug.clone(),
            description: c.description.clone(),
            instructor: c.instructor.clone(),
            duration_minutes: c.duration_minutes,
            level: c.level,
            tags: c.tags.clone(),
            price_cents: c.price_cents,
            created_at: DateTime::from_millis(self.created_at),
            updated_at: DateTime::from_millis(self.updated_at),
            version: c.version,
        }
    }
}

/// Hashes a trigram with one multiplication, for [`Index::build`]'s tens of millions of
/// lookups (SipHash took most of the build). The product's high half, which every key bit
/// reaches, is rotated down to where the table picks its bucket.
#[derive(Default)]
struct GramHasher(u64);

impl Hasher for GramHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) | u64::from(b);
        }
    }

    fn finish(&self) -> u64 {
        self.0.wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(32)
    }
}

/// The distinct three-byte windows of `text`, sorted.
fn trigrams(text: &str) -> Vec<[u8; 3]> {
    let mut grams: Vec<[u8; 3]> = text
        .as_bytes()
        .windows(3)
        .map(|w| [w[0], w[1], w[2]])
        .collect();
    grams.sort_unstable();
    grams.dedup();
    grams
}

fn level_slot(level: Level) -> usize {
    Level::ALL
        .iter()
        .position(|l| *l == level)
        .expect("Level::ALL lists every level")
}

/// One page of a listing and the number of matches over all pages.
#[derive(Debug)]
pub struct Page {
    pub items: Vec<Arc<Course>>,
    pub total: u64,
    /// For a search that finds nothing: another one that finds courses.
    pub suggestion: Option<Suggestion>,
}

/// A search text to try instead, and how many courses it finds (with the same filters).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Suggestion {
    pub q: String,
    pub total: u64,
}

/// Every course, indexed for the listing queries. Not synchronised: the read model holds it
/// behind a lock.
#[derive(Default)]
pub struct Index {
    slots: Vec<Option<Entry>>,
    free: Vec<u32>,
    by_id: HashMap<ObjectId, u32>,
    orders: [BTreeSet<(Key, ObjectId, u32)>; SORTABLE.len()],
    tags: HashMap<String, RoaringBitmap>,
    levels: [RoaringBitmap; Level::ALL.len()],
    /// Ordered, so the windows a short search begins are one range.
    grams: BTreeMap<[u8; 3], RoaringBitmap>,
    /// The words of every course's text, for suggestions.
    words: Vocabulary,
    all: RoaringBitmap,
    /// Behind a mutex: reads (which hold the index shared) fill it.
    searches: Mutex<Searches>,
}

/// The matches of recent search texts (lower-cased), oldest first in `order`, and the
/// corrections found for recent searches that matched nothing (until the next change).
#[derive(Default)]
struct Searches {
    results: HashMap<Box<str>, (memmem::Finder<'static>, Arc<RoaringBitmap>)>,
    order: VecDeque<Box<str>>,
    corrections: HashMap<Box<str>, Option<String>>,
}

impl Searches {
    fn get(&self, needle: &str) -> Option<Arc<RoaringBitmap>> {
        self.results.get(needle).map(|(_, found)| found.clone())
    }

    fn keep(&mut self, needle: &str, found: Arc<RoaringBitmap>) {
        if self.results.contains_key(needle) {
            return;
        }
        if self.order.len() >= SEARCHES_KEPT {
            if let Some(oldest) = self.order.pop_front() {
                self.results.remove(&oldest);
            }
        }
        let finder = memmem::Finder::new(needle.as_bytes()).into_owned();
        self.results.insert(needle.into(), (finder, found));
        self.order.push_back(needle.into());
    }

    /// The course in `slot` now has `text` (`None`: it is gone).
    fn changed(&mut self, slot: u32, text: Option<&str>) {
        // The catalogue's words may have changed: corrections are worked out again.
        self.corrections.clear();
        for (finder, found) in self.results.values_mut() {
            let matches = text.is_some_and(|t| finder.find(t.as_bytes()).is_some());
            if matches != found.contains(slot) {
                let found = Arc::make_mut(found);
                if matches {
                    found.insert(slot);
                } else {
                    found.remove(slot);
                }
            }
        }
    }
}

impl Index {
    pub fn build(docs: impl IntoIterator<Item = CourseDoc>) -> Index {
        let mut index = Index::default();
        // Postings gathered as sorted lists first: building each bitmap in one go is many
        // times faster than inserting slot by slot into a map of bitmaps.
        let mut grams: HashMap<[u8; 3], Vec<u32>, BuildHasherDefault<GramHasher>> =
            HashMap::default();
        // A course met again (the scan can meet a course updated meanwhile twice): applied
        // once the postings are in place, so its first version's windows are taken out too.
        let mut again = Vec::new();
        for doc in docs {
            if index.by_id.contains_key(&doc.id) {
                again.push(doc);
                continue;
            }
            let slot = u32::try_from(index.slots.len()).expect("fewer than 2^32 courses");
            index.slots.push(None);
            let entry = Entry::new(doc);
            for w in entry.text.as_bytes().windows(3) {
                let posting = grams.entry([w[0], w[1], w[2]]).or_default();
                // Slots ascend, so a window this text repeats finds its slot last.
                if posting.last() != Some(&slot) {
                    posting.push(slot);
                }
            }
            index.link(slot, entry, false);
        }
        for (gram, slots) in grams {
            let posting = RoaringBitmap::from_sorted_iter(slots).expect("slots ascend");
            match index.grams.get_mut(&gram) {
                Some(existing) => *existing |= posting,
                None => {
                    index.grams.insert(gram, posting);
                }
            }
        }
        for doc in again {
            index.upsert(doc);
        }
        index
    }

    /// Every course, as [`Held`]: a pointer copy each, so a snapshot holds the lock briefly.
    pub fn held(&self) -> Vec<Held> {
        let int = |keys: &[Key; SORTABLE.len()], field: &str| match key_of(keys, field) {
            Key::Int(v) => *v,
            Key::Text(_) => unreachable!("`{field}` is an integer key"),
        };
        self.slots
            .iter()
            .flatten()
            .map(|e| Held {
                id: e.id,
                course: e.course.clone(),
                title_key: match key_of(&e.keys, "title_key") {
                    Key::Text(t) => t.clone(),
                    Key::Int(_) => unreachable!("`title_key` is a text key"),
                },
                created_at: int(&e.keys, "created_at"),
                updated_at: int(&e.keys, "updated_at"),
            })
            .collect()
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    pub fn get(&self, id: &ObjectId) -> Option<Arc<Course>> {
        self.by_id
            .get(id)
            .map(|&slot| self.entry(slot).course.clone())
    }

    /// Adds `doc`, or replaces the course with its `_id`.
    pub fn upsert(&mut self, doc: CourseDoc) {
        let slot = match self.by_id.get(&doc.id) {
            Some(&slot) => {
                self.unlink(slot);
                slot
            }
            None => self.free.pop().unwrap_or_else(|| {
                self.slots.push(None);
                u32::try_from(self.slots.len() - 1).expect("fewer than 2^32 courses")
            }),
        };
        self.link(slot, Entry::new(doc), true);
    }

    /// Puts `entry` in `slot` and in every index (the trigram postings when `grams`).
    fn link(&mut self, slot: u32, entry: Entry, grams: bool) {
        for (order, key) in self.orders.iter_mut().zip(&entry.keys) {
            order.insert((key.clone(), entry.id, slot));
        }
        for tag in &entry.course.tags {
            self.tags.entry(tag.clone()).or_default().insert(slot);
        }
        self.levels[level_slot(entry.level)].insert(slot);
        self.words.add(&entry.text);
        if grams {
            for gram in trigrams(&entry.text) {
                self.grams.entry(gram).or_default().insert(slot);
            }
        }
        self.all.insert(slot);
        self.searches
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .changed(slot, Some(&entry.text));
        self.by_id.insert(entry.id, slot);
        self.slots[slot as usize] = Some(entry);
    }

    /// Removes the course with `id`, if there is one.
    pub fn remove(&mut self, id: &ObjectId) {
        if let Some(slot) = self.by_id.remove(id) {
            self.unlink(slot);
            self.free.push(slot);
        }
    }

    /// Takes the entry in `slot` out of every index (the slot itself stays allocated).
    fn unlink(&mut self, slot: u32) {
        let Some(entry) = self.slots[slot as usize].take() else {
            return;
        };
        for (order, key) in self.orders.iter_mut().zip(entry.keys) {
            order.remove(&(key, entry.id, slot));
        }
        for tag in &entry.course.tags {
            remove_from(&mut self.tags, tag.as_str(), slot);
        }
        self.levels[level_slot(entry.level)].remove(slot);
        self.words.remove(&entry.text);
        for gram in trigrams(&entry.text) {
            if let Some(set) = self.grams.get_mut(&gram) {
                set.remove(slot);
                if set.is_empty() {
                    self.grams.remove(&gram);
                }
            }
        }
        self.all.remove(slot);
        self.searches
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .changed(slot, None);
    }

    fn entry(&self, slot: u32) -> &Entry {
        self.slots[slot as usize]
            .as_ref()
            .expect("every indexed slot holds an entry")
    }

    /// The page `q` asks for, in the order the database would give it.
    pub fn list(&self, q: &ListQuery) -> Page {
        let matches = self.matching(q);
        let total = matches.as_ref().map_or(self.all.len(), RoaringBitmap::len);
        let (skip, take) = (q.skip(), q.per_page as usize);
        if skip >= total {
            return Page {
                items: Vec::new(),
                total,
                suggestion: (total == 0).then(|| self.suggest(q)).flatten(),
            };
        }
        let skip = usize::try_from(skip).unwrap_or(usize::MAX);
        let (position, descending) = (q.sort.position(), q.sort.descending);
        let slots: Vec<u32> = match &matches {
            None => self
                .walk(position, descending)
                .skip(skip)
                .take(take)
                .collect(),
            Some(m) if m.len() * SELECTIVE <= self.all.len() => {
                self.sort_few(m, position, descending, skip, take)
            }
            Some(m) => self
                .walk(position, descending)
                .filter(|slot| m.contains(*slot))
                .skip(skip)
                .take(take)
                .collect(),
        };
        Page {
            items: slots
                .into_iter()
                .map(|slot| self.entry(slot).course.clone())
                .collect(),
            total,
            suggestion: None,
        }
    }

    /// For `q`'s search text, another that finds courses with `q`'s filters, if there is
    /// one (see `super::suggest`).
    fn suggest(&self, q: &ListQuery) -> Option<Suggestion> {
        let needle = q.q.as_deref()?.to_lowercase();
        let searches = || {
            self.searches
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
        };
        let kept = searches().corrections.get(needle.as_str()).cloned();
        let corrected = match kept {
            Some(corrected) => corrected?,
            None => {
                let corrected = self.correct(&needle);
                let mut searches = searches();
                if searches.corrections.len() >= SEARCHES_KEPT {
                    searches.corrections.clear();
                }
                searches
                    .corrections
                    .insert(needle.into(), corrected.clone());
                corrected?
            }
        };
        let instead = ListQuery {
            q: Some(corrected),
            ..q.clone()
        };
        let total = self.matching(&instead).map_or(0, |m| m.len());
        (total > 0).then(|| Suggestion {
            q: instead.q.unwrap_or_default(),
            total,
        })
    }

    /// `needle` with each word no course contains replaced by the catalogue's closest word;
    /// `None` when no word was replaced.
    fn correct(&self, needle: &str) -> Option<String> {
        let mut corrected = String::with_capacity(needle.len());
        let mut copied = 0;
        for (at, word) in words(needle) {
            // A word of the catalogue, or part of one (a word still being typed), stands.
            if self.words.contains(word) || !self.find(word).is_empty() {
                continue;
            }
            if let Some(closest) = self.words.closest(word) {
                corrected.push_str(&needle[copied..at]);
                corrected.push_str(closest);
                copied = at + word.len();
            }
        }
        if copied == 0 {
            return None;
        }
        corrected.push_str(&needle[copied..]);
        Some(corrected)
    }

    /// Slots in the order of sort `position`.
    fn walk(&self, position: usize, descending: bool) -> Box<dyn Iterator<Item = u32> + '_> {
        let order = self.orders[position].iter().map(|(_, _, slot)| *slot);
        if descending {
            Box::new(order.rev())
        } else {
            Box::new(order)
        }
    }

    /// The `skip..skip + take` slice of `matches` in sort order, without sorting all of them.
    fn sort_few(
        &self,
        matches: &RoaringBitmap,
        position: usize,
        descending: bool,
        skip: usize,
        take: usize,
    ) -> Vec<u32> {
        let mut found: Vec<(&Key, ObjectId, u32)> = matches
            .iter()
            .map(|slot| {
                let e = self.entry(slot);
                (&e.keys[position], e.id, slot)
            })
            .collect();
        let order = |a: &(&Key, ObjectId, u32), b: &(&Key, ObjectId, u32)| {
            let ascending = a.0.cmp(b.0).then(a.1.cmp(&b.1));
            if descending {
                ascending.reverse()
            } else {
                ascending
            }
        };
        let end = skip.saturating_add(take).min(found.len());
        if end < found.len() {
            found.select_nth_unstable_by(end, order);
            found.truncate(end);
        }
        found.sort_unstable_by(order);
        found[skip..].iter().map(|(_, _, slot)| *slot).collect()
    }

    /// The slots matching every filter of `q`; `None` when it has none.
    fn matching(&self, q: &ListQuery) -> Option<RoaringBitmap> {
        let mut sets: Vec<&RoaringBitmap> = Vec::new();
        let empty = RoaringBitmap::new();
        if let Some(tag) = &q.tag {
            sets.push(self.tags.get(tag).unwrap_or(&empty));
        }
        if let Some(level) = q.level {
            sets.push(&self.levels[level_slot(level)]);
        }
        sets.sort_by_key(|s| s.len());
        let mut found: Option<RoaringBitmap> = None;
        for set in sets {
            found = Some(match found {
                None => set.clone(),
                Some(f) => f & set,
            });
        }
        match &q.q {
            Some(text) => Some(self.search(text, found)),
            None => found,
        }
    }

    /// The slots (among `within`, if given) whose text contains `text`, ignoring case.
    fn search(&self, text: &str, within: Option<RoaringBitmap>) -> RoaringBitmap {
        let needle = text.to_lowercase();
        let searches = || {
            self.searches
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
        };
        let kept = searches().get(&needle);
        let found = match kept {
            Some(found) => found,
            None => {
                let found = Arc::new(self.find(&needle));
                searches().keep(&needle, found.clone());
                found
            }
        };
        match within {
            Some(w) => w & &*found,
            None => (*found).clone(),
        }
    }

    /// The slots whose text contains `needle` (lower-cased), from the postings.
    fn find(&self, needle: &str) -> RoaringBitmap {
        if needle.len() < 3 {
            return self.starting(needle.as_bytes());
        }
        let mut postings = Vec::new();
        for gram in trigrams(needle) {
            match self.grams.get(&gram) {
                Some(p) => postings.push(p),
                // A window no course has: nothing can match.
                None => return RoaringBitmap::new(),
            }
        }
        postings.sort_by_key(|p| p.len());
        let mut candidates: Option<RoaringBitmap> = None;
        for posting in postings {
            if candidates
                .as_ref()
                .is_some_and(|c| c.len() <= FEW_CANDIDATES)
            {
                break;
            }
            candidates = Some(match candidates {
                None => posting.clone(),
                Some(c) => c & posting,
            });
        }
        let finder = memmem::Finder::new(needle.as_bytes());
        candidates
            .unwrap_or_default()
            .iter()
            .filter(|slot| finder.find(self.entry(*slot).text.as_bytes()).is_some())
            .collect()
    }

    /// The slots having a window that begins with `prefix` (one or two bytes).
    fn starting(&self, prefix: &[u8]) -> RoaringBitmap {
        let mut low = [0u8; 3];
        low[..prefix.len()].copy_from_slice(prefix);
        let mut high = [u8::MAX; 3];
        high[..prefix.len()].copy_from_slice(prefix);
        let mut found = RoaringBitmap::new();
        for (_, posting) in self.grams.range(low..=high) {
            found |= posting;
        }
        found
    }
}

/// Removes `slot` from the bitmap under `key`, and the bitmap once it is empty.
fn remove_from<K, Q>(map: &mut HashMap<K, RoaringBitmap>, key: &Q, slot: u32)
where
    K: std::borrow::Borrow<Q> + std::hash::Hash + Eq,
    Q: std::hash::Hash + Eq + ?Sized,
{
    if let Some(set) = map.get_mut(key) {
        set.remove(slot);
        if set.is_empty() {
            map.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mongodb::bson::DateTime;

    fn doc(n: u8, title: &str, tags: &[&str], level: Level, price: i64) -> CourseDoc {
        CourseDoc {
            id: ObjectId::from_bytes([n; 12]),
            title: title.into(),
            title_key: title.to_lowercase(),
            slug: title.to_lowercase().replace(' ', "-"),
            description: format!("All about {title}."),
            instructor: "Ada Lovelace".into(),
            duration_minutes: 60,
            level,
            tags: tags.iter().map(|t| t.to_string()).collect(),
            price_cents: price,
            created_at: DateTime::from_millis(1_000 * i64::from(n)),
            updated_at: DateTime::from_millis(1_000 * i64::from(n)),
            version: 1,
        }
    }

    fn titles(page: &Page) -> Vec<&str> {
        page.items.iter().map(|c| c.title.as_str()).collect()
    }

    fn list(index: &Index, raw: &str) -> Page {
        index.list(&ListQuery::parse(raw).unwrap())
    }

    fn sample() -> Index {
        Index::build([
            doc(1, "Rust Basics", &["rust"], Level::Beginner, 500),
            doc(2, "Async Rust", &["rust", "async"], Level::Advanced, 900),
            doc(3, "Go Tour", &["go"], Level::Beginner, 500),
            doc(4, "Crème Brûlée", &["cooking"], Level::Intermediate, 100),
        ])
    }

    #[test]
    fn sorts_walk_the_database_order_with_id_as_tie_breaker() {
        let index = sample();
        assert_eq!(
            titles(&list(&index, "")),
            ["Crème Brûlée", "Go Tour", "Async Rust", "Rust Basics"]
        );
        // Equal prices: `_id` breaks the tie, in the same direction.
        assert_eq!(
            titles(&list(&index, "sort=price")),
            ["Crème Brûlée", "Rust Basics", "Go Tour", "Async Rust"]
        );
        assert_eq!(
            titles(&list(&index, "sort=-price")),
            ["Async Rust", "Go Tour", "Rust Basics", "Crème Brûlée"]
        );
        let page = list(&index, "sort=title&per_page=2&page=2");
        assert_eq!(
            (titles(&page), page.total),
            (vec!["Go Tour", "Rust Basics"], 4)
        );
    }

    #[test]
    fn filters_intersect_and_search_ignores_case() {
        let index = sample();
        assert_eq!(
            titles(&list(&index, "tag=rust&level=advanced")),
            ["Async Rust"]
        );
        assert_eq!(list(&index, "tag=nope").total, 0);
        assert_eq!(titles(&list(&index, "q=CR%C3%88ME")), ["Crème Brûlée"]);
        // Shorter than a window: the windows they begin, at the end of a field too.
        assert_eq!(list(&index, "q=go").total, 1);
        assert_eq!(list(&index, "q=ce").total, 4, "Lovelace, at the end");
        assert_eq!(list(&index, "q=%C3%A9").total, 1, "é is two bytes");
        assert_eq!(list(&index, "q=z").total, 0);
        // A match may not span two fields.
        assert_eq!(list(&index, "q=tour%20all").total, 0);
        // Instructor and description are searched too.
        assert_eq!(list(&index, "q=lovelace").total, 4);
        assert_eq!(list(&index, "q=about%20go").total, 1);
    }

    #[test]
    fn updates_and_deletes_leave_no_trace_in_any_index() {
        let mut index = sample();
        let mut renamed = doc(2, "Tokio Deep Dive", &["async"], Level::Intermediate, 1);
        renamed.version = 2;
        index.upsert(renamed);
        assert_eq!(list(&index, "tag=rust").total, 1);
        assert_eq!(list(&index, "q=async%20rust").total, 0);
        assert_eq!(list(&index, "level=advanced").total, 0);
        assert_eq!(
            titles(&list(&index, "sort=price&per_page=1")),
            ["Tokio Deep Dive"]
        );
        index.remove(&ObjectId::from_bytes([2; 12]));
        index.remove(&ObjectId::from_bytes([2; 12]));
        assert_eq!((index.len(), list(&index, "tag=async").total), (3, 0));
        assert!(
            !index.tags.contains_key("async"),
            "empty postings are dropped"
        );
        // The freed slot is reused by the next course, with nothing of the old one.
        index.upsert(doc(9, "Zig", &["zig"], Level::Beginner, 5));
        assert_eq!(index.slots.len(), 4);
        assert_eq!(titles(&list(&index, "q=zig")), ["Zig"]);
        assert_eq!(list(&index, "q=tokio").total, 0);
    }

    #[test]
    fn kept_search_results_follow_every_change() {
        let mut index = sample();
        assert_eq!(list(&index, "q=rust").total, 2);
        assert_eq!(list(&index, "q=ru").total, 2);
        index.upsert(doc(5, "Rust in Production", &[], Level::Advanced, 1));
        let mut renamed = doc(1, "Zig Basics", &["zig"], Level::Beginner, 500);
        renamed.version = 2;
        index.upsert(renamed);
        index.remove(&ObjectId::from_bytes([2; 12]));
        for q in ["q=rust", "q=ru"] {
            assert_eq!(titles(&list(&index, q)), ["Rust in Production"], "{q}");
        }
        // Within other filters too.
        assert_eq!(list(&index, "q=rust&level=beginner").total, 0);
        assert_eq!(
            index.searches.lock().unwrap().results.len(),
            2,
            "both texts kept"
        );
    }

    #[test]
    fn a_built_index_holds_what_one_filled_course_by_course_does() {
        // Texts that repeat their windows ("ana", "aaa"), and a course given twice (the load
        // meets it again when it was updated during the scan): nothing of its first version
        // may stay, or a short search, answered from the postings alone, finds it.
        let docs = || {
            let mut again = doc(1, "Banana Bread Basics", &["baking"], Level::Beginner, 9);
            again.version = 2;
            [
                doc(1, "Fizz Banana Banana", &["baking"], Level::Beginner, 5),
                doc(2, "Aaaa Aaaa", &["a"], Level::Advanced, 7),
                doc(3, "Crème Brûlée", &["cooking"], Level::Intermediate, 100),
                again,
            ]
        };
        let built = Index::build(docs());
        let mut filled = Index::default();
        for d in docs() {
            filled.upsert(d);
        }
        assert_eq!(built.grams, filled.grams);
        assert_eq!(built.tags, filled.tags);
        assert_eq!(built.len(), 3);
        assert_eq!(titles(&list(&built, "q=banana")), ["Banana Bread Basics"]);
        assert_eq!(list(&built, "q=aaa").total, 1);
        assert_eq!(list(&built, "q=zz").total, 0);
    }

    fn suggested(index: &Index, raw: &str) -> Option<(String, u64)> {
        list(index, raw).suggestion.map(|s| (s.q, s.total))
    }

    #[test]
    fn a_search_that_finds_nothing_suggests_one_that_does() {
        let mut index = sample();
        // A swap, a missing letter, an extra one, a wrong one; other case; accents.
        assert_eq!(suggested(&index, "q=Rsut"), Some(("rust".into(), 2)));
        assert_eq!(suggested(&index, "q=basis"), Some(("basics".into(), 1)));
        assert_eq!(
            suggested(&index, "q=asyncc+rust"),
            Some(("async rust".into(), 1))
        );
        assert_eq!(suggested(&index, "q=creme"), Some(("crème".into(), 1)));
        // Only the misspelt word changes; the filters stay and count.
        assert_eq!(
            suggested(&index, "q=rust+basicz&level=beginner"),
            Some(("rust basics".into(), 1))
        );
        assert_eq!(
            suggested(&index, "q=rsut&tag=go"),
            None,
            "no Go course has rust"
        );
        // A search that finds courses, or part of a word, gets none; nor does gibberish, or
        // a word of two letters.
        assert_eq!(suggested(&index, "q=rust"), None);
        assert_eq!(suggested(&index, "q=bas"), None);
        assert_eq!(suggested(&index, "q=qwxz"), None);
        assert_eq!(suggested(&index, "q=gx"), None);
        // Every word exists, the phrase does not: no word to correct.
        assert_eq!(suggested(&index, "q=go+rust"), None);
        // The vocabulary follows changes, and so do corrections already worked out.
        assert_eq!(suggested(&index, "q=tuor"), Some(("tour".into(), 1)));
        index.remove(&ObjectId::from_bytes([3; 12]));
        assert_eq!(suggested(&index, "q=tuor"), None);
        index.upsert(doc(5, "Tour de Rust", &["rust"], Level::Beginner, 100));
        assert_eq!(suggested(&index, "q=tuor"), Some(("tour".into(), 1)));
    }

    #[test]
    fn past_the_last_page_is_empty_with_the_total() {
        let page = list(&sample(), "page=3&per_page=2");
        assert_eq!((page.items.len(), page.total), (0, 4));
    }
}
