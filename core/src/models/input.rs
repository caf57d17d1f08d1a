//! Text input of the embeddings and moderations endpoints: a string or a list of strings.

use serde::{Deserialize, Serialize};

/// `input`: one string or an array of strings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TextInput {
    /// A single string.
    One(String),
    /// A batch of strings.
    Many(Vec<String>),
}

impl TextInput {
    /// The inputs as a list of string slices (one element for [`TextInput::One`]).
    pub fn texts(&self) -> Vec<&str> {
        match self {
            Self::One(s) => vec![s.as_str()],
            Self::Many(v) => v.iter().map(String::as_str).collect(),
        }
    }

    /// Number of inputs (1 for [`TextInput::One`]).
    pub fn len(&self) -> usize {
        match self {
            Self::One(_) => 1,
            Self::Many(v) => v.len(),
        }
    }

    /// `true` for an empty batch.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Total characters of all inputs.
    pub fn chars(&self) -> usize {
        match self {
            Self::One(s) => super::char_count(s),
            Self::Many(v) => v.iter().map(|s| super::char_count(s)).sum(),
        }
    }
}

impl From<&str> for TextInput {
    fn from(s: &str) -> Self {
        Self::One(s.to_owned())
    }
}

impl From<String> for TextInput {
    fn from(s: String) -> Self {
        Self::One(s)
    }
}

impl From<Vec<String>> for TextInput {
    fn from(v: Vec<String>) -> Self {
        Self::Many(v)
    }
}

impl From<Vec<&str>> for TextInput {
    fn from(v: Vec<&str>) -> Self {
        Self::Many(v.into_iter().map(str::to_owned).collect())
    }
}

impl<const N: usize> From<[&str; N]> for TextInput {
    fn from(v: [&str; N]) -> Self {
        Self::Many(v.into_iter().map(str::to_owned).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn string_or_array() {
        assert_eq!(
            serde_json::to_string(&TextInput::from("a")).unwrap(),
            r#""a""#
        );
        assert_eq!(
            serde_json::to_string(&TextInput::from(["a", "bé"])).unwrap(),
            r#"["a","bé"]"#
        );
        let many: TextInput = serde_json::from_str(r#"["x","yz"]"#).unwrap();
        assert_eq!(many.texts(), vec!["x", "yz"]);
        assert_eq!(many.chars(), 3);
        assert_eq!(TextInput::from("bé").chars(), 2);
        assert!(TextInput::Many(vec![]).is_empty());
    }
}
