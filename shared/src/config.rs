//! Loading TOML configuration files into typed structs.
//!
//! Both binaries parse their files once, at the edge, into structs with `deny_unknown_fields`;
//! the rest of the code never sees raw strings. Errors carry the file path and the line, column
//! and field that are wrong, so an operator can fix the file without guessing.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

/// A configuration file that could not be read, parsed or validated.
#[derive(Debug)]
pub struct ConfigError {
    /// The file at fault.
    pub file: PathBuf,
    /// 1-based line and column of the offending text, when known.
    pub position: Option<(usize, usize)>,
    /// What is wrong, naming the field.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.position {
            Some((line, col)) => {
                write!(f, "{}:{line}:{col}: {}", self.file.display(), self.message)
            }
            None => write!(f, "{}: {}", self.file.display(), self.message),
        }
    }
}

impl std::error::Error for ConfigError {}

impl ConfigError {
    /// An error about a field's value found after parsing (no position known).
    pub fn field(file: &Path, field: &str, message: impl fmt::Display) -> Self {
        ConfigError {
            file: file.to_path_buf(),
            position: None,
            message: format!("field `{field}`: {message}"),
        }
    }
}

/// Reads and parses `path` as TOML into `T`.
pub fn load<T: DeserializeOwned>(path: &Path) -> Result<T, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        file: path.to_path_buf(),
        position: None,
        message: format!("cannot read file: {e}"),
    })?;
    parse(path, &text)
}

/// Parses `text` (the contents of `path`) as TOML into `T`.
pub fn parse<T: DeserializeOwned>(path: &Path, text: &str) -> Result<T, ConfigError> {
    toml::from_str(text).map_err(|e| {
        let position = e.span().map(|span| line_col(text, span.start));
        ConfigError {
            file: path.to_path_buf(),
            position,
            message: e.message().trim_end().to_string(),
        }
    })
}

/// 1-based line and column of byte `offset` in `text`.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let col = before.rfind('\n').map_or(before.chars().count(), |nl| {
        before[nl + 1..].chars().count()
    }) + 1;
    (line, col)
}

/// Every key a configuration type accepts, as dotted paths (`listen.http`; an array of
/// tables is `route[]`, a map of named tables `pool.NAME`), found by asking the type itself:
/// each table is given an unknown key, and `deny_unknown_fields` answers with the keys it
/// expects. Each of those is then tried as a table, an array of tables and a map of tables;
/// what is none of them is a key. The configuration reference test compares this with
/// `docs/configuration.md`, so neither can gain a key the other lacks.
pub fn keys<T: DeserializeOwned>() -> Vec<String> {
    let mut out = Vec::new();
    walk::<T>(&mut Vec::new(), &mut out);
    out
}

/// One step of a key path: a table's name, and whether it is an array of tables.
type Step = (String, bool);

const PROBE: &str = "__probe__";

fn walk<T: DeserializeOwned>(path: &mut Vec<Step>, out: &mut Vec<String>) {
    let Some(fields) = expected_fields::<T>(path) else {
        return;
    };
    for field in fields {
        if path.len() > 8 {
            break;
        }
        let shapes: [&[Step]; 3] = [
            &[(field.clone(), false)],
            &[(field.clone(), true)],
            &[(field.clone(), false), ("NAME".to_string(), false)],
        ];
        let table = shapes.iter().find(|steps| {
            let mut probe = path.clone();
            probe.extend(steps.iter().cloned());
            expected_fields::<T>(&probe).is_some()
        });
        match table {
            Some(steps) => {
                let depth = path.len();
                path.extend(steps.iter().cloned());
                walk::<T>(path, out);
                path.truncate(depth);
            }
            None => {
                let mut key: Vec<String> = path.iter().map(display).collect();
                key.push(field);
                out.push(key.join("."));
            }
        }
    }
}

fn display((name, array): &Step) -> String {
    if *array {
        format!("{name}[]")
    } else {
        name.clone()
    }
}

/// The keys the table at `path` expects, if it is a table that refuses unknown keys.
fn expected_fields<T: DeserializeOwned>(path: &[Step]) -> Option<Vec<String>> {
    let mut text = String::new();
    for i in 0..path.len() {
        let name: Vec<&str> = path[..=i].iter().map(|s| s.0.as_str()).collect();
        let name = name.join(".");
        if path[i].1 {
            text.push_str(&format!("[[{name}]]\n"));
        } else if i == path.len() - 1 {
            text.push_str(&format!("[{name}]\n"));
        }
    }
    text.push_str(&format!("{PROBE} = 1\n"));
    let message = toml::from_str::<T>(&text).err()?.message().to_string();
    let rest = message.strip_prefix(&format!("unknown field `{PROBE}`"))?;
    Some(
        rest.split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_string)
            .collect(),
    )
}

/// The keys a Markdown reference documents under the heading that names `file`: the first
/// `code` of each table row (`| `listen.http` | … |`), `[]` and all.
pub fn documented_keys(markdown: &str, file: &str) -> Vec<String> {
    let mut keys = Vec::new();
    let mut inside = false;
    for line in markdown.lines() {
        if let Some(heading) = line.strip_prefix("## ") {
            inside = heading.contains(&format!("`{file}`"));
        } else if inside {
            if let Some(cell) = line.strip_prefix("| `") {
                if let Some(end) = cell.find('`') {
                    keys.push(cell[..end].to_string());
                }
            }
        }
    }
    keys
}

/// Whether the reference `markdown` documents exactly `keys` for `file`; if not, what is
/// missing from it and what it has that the code does not.
pub fn check_reference(markdown: &str, file: &str, keys: &[String]) -> Result<(), String> {
    let documented = documented_keys(markdown, file);
    let missing: Vec<&String> = keys.iter().filter(|k| !documented.contains(k)).collect();
    let extra: Vec<&String> = documented.iter().filter(|k| !keys.contains(k)).collect();
    if missing.is_empty() && extra.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "docs/configuration.md, `{file}`: keys in the code but not in the reference: \
             {missing:?}; keys in the reference but not in the code: {extra:?}"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Sample {
        name: String,
        port: u16,
    }

    #[test]
    fn unknown_field_names_file_line_column_and_field() {
        let text = "name = \"x\"\nport = 1\ncolour = \"red\"\n";
        let err = parse::<Sample>(Path::new("conf/sample.toml"), text).unwrap_err();
        assert_eq!(err.position, Some((3, 1)));
        let shown = err.to_string();
        assert!(shown.starts_with("conf/sample.toml:3:1: "), "{shown}");
        assert!(shown.contains("colour"), "{shown}");
    }

    #[test]
    fn wrong_type_points_at_the_value() {
        let text = "name = \"x\"\nport = 99999\n";
        let err = parse::<Sample>(Path::new("s.toml"), text).unwrap_err();
        assert_eq!(err.position.map(|p| p.0), Some(2));
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Nested {
        top: Option<String>,
        section: Sample,
        #[serde(default)]
        list: Vec<Sample>,
        #[serde(default)]
        named: std::collections::BTreeMap<String, Sample>,
        #[serde(default)]
        numbers: Vec<u32>,
    }

    #[test]
    fn keys_are_found_in_tables_arrays_and_maps_of_tables() {
        assert_eq!(
            keys::<Nested>(),
            [
                "top",
                "section.name",
                "section.port",
                "list[].name",
                "list[].port",
                "named.NAME.name",
                "named.NAME.port",
                "numbers",
            ]
        );
    }

    #[test]
    fn documented_keys_are_the_first_code_of_each_row_under_the_files_heading() {
        let doc = "# Reference\n## `a.toml`\n| key | type |\n|---|---|\n| `x.y` | int |\n\
                   | `list[].z` | string |\n## `b.toml`\n| `other` | bool |\n";
        assert_eq!(documented_keys(doc, "a.toml"), ["x.y", "list[].z"]);
        assert_eq!(documented_keys(doc, "b.toml"), ["other"]);
    }

    #[test]
    fn a_reference_must_match_the_keys_both_ways() {
        let doc = "## `a.toml`\n| `x` | int |\n| `y` | int |\n";
        let keys = |k: &[&str]| k.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(check_reference(doc, "a.toml", &keys(&["x", "y"])).is_ok());
        let missing = check_reference(doc, "a.toml", &keys(&["x", "y", "z"])).unwrap_err();
        assert!(
            missing.contains("not in the reference: [\"z\"]"),
            "{missing}"
        );
        let extra = check_reference(doc, "a.toml", &keys(&["x"])).unwrap_err();
        assert!(extra.contains("not in the code: [\"y\"]"), "{extra}");
    }

    #[test]
    fn line_col_counts_from_one() {
        assert_eq!(line_col("ab\ncd", 0), (1, 1));
        assert_eq!(line_col("ab\ncd", 4), (2, 2));
        assert_eq!(line_col("ab", 99), (1, 3));
    }
}
