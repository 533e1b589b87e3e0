//! Typo tolerance: the words of the catalogue, and the closest of them to a word no course
//! has.
//!
//! A search is a substring match, the same from the read model and from the database, so
//! `pyhton` finds nothing. A search that finds nothing gets a *suggestion* instead: each of
//! its words that no course contains is replaced by the catalogue's closest word, within
//! Elasticsearch's `AUTO` fuzziness ([`max_edits`]), and the suggestion is offered only if
//! it finds courses. The distance is the optimal string alignment distance: inserting,
//! deleting or substituting a character, or swapping two adjacent ones, is one edit (a
//! swap is the commonest typo, and plain Levenshtein counts it as two). Ties go to the word
//! more often used, then to the first in byte order, so a suggestion never depends on
//! hashing order.

use std::cmp::Reverse;
use std::collections::HashMap;

/// Every word of the catalogue's searchable text, with how often it occurs. Numbers are
/// left out: a mistyped number is no typo to correct (`2023` is not "meant" as `2024`), and
/// catalogues number their courses, which would make most words numbers.
#[derive(Default)]
pub struct Vocabulary {
    /// foldhash, not SipHash: a load of 100 000 courses counts some six million words.
    counts: HashMap<Box<str>, u32, foldhash::fast::RandomState>,
}

/// The words of `text` with their byte offsets: maximal runs of alphanumeric characters.
pub fn words(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(move |w| (w.as_ptr() as usize - text.as_ptr() as usize, w))
}

/// How many edits a word of this many characters may be from its correction: none up to
/// two characters (every short word is a few edits from many others), one up to five, two
/// beyond (Elasticsearch's and Lucene's `AUTO`).
pub fn max_edits(chars: usize) -> usize {
    match chars {
        0..=2 => 0,
        3..=5 => 1,
        _ => 2,
    }
}

impl Vocabulary {
    /// Counts the words of `text` in.
    pub fn add(&mut self, text: &str) {
        for word in Self::counted(text) {
            match self.counts.get_mut(word) {
                Some(n) => *n += 1,
                None => {
                    self.counts.insert(word.into(), 1);
                }
            }
        }
    }

    /// Counts the words of `text` (added before) out; a word no text has any more is gone.
    pub fn remove(&mut self, text: &str) {
        for word in Self::counted(text) {
            if let Some(n) = self.counts.get_mut(word) {
                *n -= 1;
                if *n == 0 {
                    self.counts.remove(word);
                }
            }
        }
    }

    /// The words of `text` this counts: all but numbers.
    fn counted(text: &str) -> impl Iterator<Item = &str> {
        words(text)
            .map(|(_, word)| word)
            .filter(|word| !is_number(word))
    }

    pub fn contains(&self, word: &str) -> bool {
        self.counts.contains_key(word)
    }

    /// The catalogue word closest to `word` within [`max_edits`], if any.
    pub fn closest(&self, word: &str) -> Option<&str> {
        let typed: Vec<char> = word.chars().collect();
        let max = max_edits(typed.len());
        if max == 0 || is_number(word) {
            return None;
        }
        let mut candidate = Vec::new();
        let mut best: Option<(usize, Reverse<u32>, &str)> = None;
        for (known, &count) in &self.counts {
            // A character is at most four bytes: a cheap bound before counting characters.
            if known.len() + 4 * max < word.len() || word.len() + 4 * max < known.len() {
                continue;
            }
            candidate.clear();
            candidate.extend(known.chars());
            let bound = best.map_or(max, |(d, _, _)| d);
            let Some(d) = distance(&typed, &candidate, bound) else {
                continue;
            };
            let rank = (d, Reverse(count), &**known);
            if best.is_none_or(|b| rank < b) {
                best = Some(rank);
            }
        }
        best.map(|(_, _, known)| known)
    }
}

fn is_number(word: &str) -> bool {
    word.bytes().all(|b| b.is_ascii_digit())
}

/// The optimal string alignment distance between `a` and `b`, if it is at most `max`.
/// Row by row, stopping as soon as a whole row exceeds `max` (no later row can be smaller).
fn distance(a: &[char], b: &[char], max: usize) -> Option<usize> {
    if a.len().abs_diff(b.len()) > max {
        return None;
    }
    let n = b.len();
    let mut two_back = vec![0; n + 1];
    let mut previous: Vec<usize> = (0..=n).collect();
    let mut row = vec![0; n + 1];
    for i in 1..=a.len() {
        row[0] = i;
        let mut smallest = i;
        for j in 1..=n {
            let substitution = previous[j - 1] + usize::from(a[i - 1] != b[j - 1]);
            let mut d = substitution.min(previous[j] + 1).min(row[j - 1] + 1);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                d = d.min(two_back[j - 2] + 1);
            }
            row[j] = d;
            smallest = smallest.min(d);
        }
        if smallest > max {
            return None;
        }
        std::mem::swap(&mut two_back, &mut previous);
        std::mem::swap(&mut previous, &mut row);
    }
    (previous[n] <= max).then_some(previous[n])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(a: &str, b: &str) -> Option<usize> {
        let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
        distance(&a, &b, 3)
    }

    #[test]
    fn one_edit_of_each_kind_and_a_swap_is_one() {
        assert_eq!(d("rust", "rust"), Some(0));
        assert_eq!(d("rst", "rust"), Some(1), "insertion");
        assert_eq!(d("ruust", "rust"), Some(1), "deletion");
        assert_eq!(d("rast", "rust"), Some(1), "substitution");
        assert_eq!(d("pyhton", "python"), Some(1), "adjacent swap");
        assert_eq!(d("kubernetse", "kubernetes"), Some(1), "swap at the end");
        assert_eq!(d("écolé", "école"), Some(1), "characters, not bytes");
        assert_eq!(d("", "abc"), Some(3));
        assert_eq!(d("javascript", "typescript"), None, "beyond the bound");
    }

    #[test]
    fn words_are_alphanumeric_runs_with_their_offsets() {
        let found: Vec<(usize, &str)> = words("c++ & rust-lang, 2024\u{1}é").collect();
        assert_eq!(
            found,
            [(0, "c"), (6, "rust"), (11, "lang"), (17, "2024"), (22, "é")]
        );
    }

    #[test]
    fn the_closest_word_wins_then_the_commoner_then_the_first() {
        let mut v = Vocabulary::default();
        v.add("python pythons pyramid");
        v.add("python rust rest");
        assert_eq!(v.closest("pyhton"), Some("python"));
        assert_eq!(v.closest("pythn"), Some("python"), "one edit beats two");
        // `rist` is one edit from both `rust` and `rest`, used as often: byte order decides.
        assert_eq!(v.closest("rist"), Some("rest"));
        v.add("rust");
        assert_eq!(v.closest("rist"), Some("rust"), "now the commoner");
        assert_eq!(v.closest("zz"), None, "two characters are never corrected");
        assert_eq!(v.closest("zebra"), None, "nothing within one edit");
        v.add("course 2024");
        assert!(!v.contains("2024"), "numbers are not words to correct to");
        assert_eq!(v.closest("2025"), None);
        assert_eq!(v.closest("cuorse"), Some("course"));
    }

    #[test]
    fn a_word_no_text_has_any_more_is_gone() {
        let mut v = Vocabulary::default();
        v.add("rust and rust");
        v.add("go");
        v.remove("rust and rust");
        assert!(!v.contains("rust"));
        assert!(v.contains("go"));
        assert_eq!(v.closest("rost"), None);
    }
}
