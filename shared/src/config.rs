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

    #[test]
    fn line_col_counts_from_one() {
        assert_eq!(line_col("ab\ncd", 0), (1, 1));
        assert_eq!(line_col("ab\ncd", 4), (2, 2));
        assert_eq!(line_col("ab", 99), (1, 3));
    }
}
