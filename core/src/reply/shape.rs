//! One pass over a 2xx body: is it JSON, what is it at the top, what is its required
//! field, and what `usage` (and its `service_tier`) does it report. Nothing is built: strings are looked at where
//! they lie, numbers are read, the rest is checked and skipped.
//!
//! Every value goes through `deserialize_any`, as a [`serde_json::Value`] would: the
//! same parser checks the same things (escapes, numbers in range, nesting depth; UTF-8
//! once for the whole body), so a body this pass takes is one `Value` takes, and the
//! other way round.

use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

use crate::action::TokenUsage;

/// What a JSON value is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Null,
    Boolean,
    Number,
    String,
    List,
    Object,
}

impl Kind {
    /// As `check_success_body` names it.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Kind::Null => "null",
            Kind::Boolean => "boolean",
            Kind::Number => "number",
            Kind::String => "string",
            Kind::List => "list",
            Kind::Object => "object",
        }
    }
}

/// What the pass found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Shape {
    /// The document's kind.
    pub(crate) top: Kind,
    /// The required field's kind, when the document is an object that has it (the last
    /// one, when it is there twice, as a `Value` keeps it).
    pub(crate) field: Option<Kind>,
    /// The `usage` with a `total_tokens`, as `usage_of` reads it.
    pub(crate) usage: Option<TokenUsage>,
    /// `usage.service_tier` when there is a usage, as `service_tier_of` reads it.
    pub(crate) tier: Option<String>,
}

impl Shape {
    /// Reads `body` (a whole JSON document, nothing after it but whitespace). `None` for
    /// a body that is not UTF-8 (JSON is), which this pass leaves to the reference.
    pub(crate) fn of(body: &[u8], required: Option<&str>) -> Option<Shape> {
        // Checked once here, the text is then read as `str`: the parser no longer checks
        // each string's UTF-8 on its own (what a `Value` from bytes does).
        let text = std::str::from_utf8(body).ok()?;
        let mut de = serde_json::Deserializer::from_str(text);
        let shape = Top { required }.deserialize(&mut de).ok()?;
        de.end().ok()?;
        Some(shape)
    }
}

/// The document.
struct Top<'a> {
    required: Option<&'a str>,
}

impl<'de> DeserializeSeed<'de> for Top<'_> {
    type Value = Shape;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Shape, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Top<'_> {
    type Value = Shape;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Shape, A::Error> {
        let mut field = None;
        // `usage_of` reads the body as `{usage: Option<Raw>}`: a second `usage` is an
        // error there (no usage), a `usage` that is not one too.
        let (mut usage, mut seen) = (Usage::Absent, false);
        while let Some(key) = map.next_key_seed(Key {
            required: self.required,
        })? {
            match key {
                KeyIs::Required => field = Some(map.next_value_seed(Any)?),
                KeyIs::Usage => {
                    let read = map.next_value_seed(UsageSeed)?;
                    usage = if seen { Usage::Invalid } else { read };
                    seen = true;
                }
                KeyIs::Other => {
                    map.next_value_seed(Any)?;
                }
            }
        }
        let (usage, tier) = usage.into_usage();
        Ok(Shape {
            top: Kind::Object,
            field,
            usage,
            tier,
        })
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Shape, A::Error> {
        // `usage_of`'s struct also reads `[usage]`: one element, the usage.
        let mut count = 0usize;
        let mut usage = Usage::Absent;
        if let Some(first) = seq.next_element_seed(UsageSeed)? {
            count = 1;
            usage = first;
        }
        while seq.next_element_seed(Any)?.is_some() {
            count += 1;
        }
        let (usage, tier) = match count {
            1 => usage.into_usage(),
            _ => (None, None),
        };
        Ok(Shape {
            top: Kind::List,
            field: None,
            usage,
            tier,
        })
    }

    fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<Shape, E> {
        Ok(scalar(Kind::Boolean))
    }
    fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<Shape, E> {
        Ok(scalar(Kind::Number))
    }
    fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<Shape, E> {
        Ok(scalar(Kind::Number))
    }
    fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<Shape, E> {
        Ok(scalar(Kind::Number))
    }
    fn visit_str<E: serde::de::Error>(self, _: &str) -> Result<Shape, E> {
        Ok(scalar(Kind::String))
    }
    fn visit_unit<E: serde::de::Error>(self) -> Result<Shape, E> {
        Ok(scalar(Kind::Null))
    }
}

fn scalar(top: Kind) -> Shape {
    Shape {
        top,
        field: None,
        usage: None,
        tier: None,
    }
}

/// What a key of the document is.
enum KeyIs {
    Required,
    Usage,
    Other,
}

struct Key<'a> {
    required: Option<&'a str>,
}

impl<'de> DeserializeSeed<'de> for Key<'_> {
    type Value = KeyIs;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<KeyIs, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Key<'_> {
    type Value = KeyIs;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a key")
    }

    fn visit_str<E: serde::de::Error>(self, key: &str) -> Result<KeyIs, E> {
        Ok(if Some(key) == self.required {
            KeyIs::Required
        } else if key == "usage" {
            KeyIs::Usage
        } else {
            KeyIs::Other
        })
    }
}

/// Any value, checked and skipped: its kind.
struct Any;

impl<'de> DeserializeSeed<'de> for Any {
    type Value = Kind;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Kind, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Any {
    type Value = Kind;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Kind, A::Error> {
        while map.next_key_seed(Any)?.is_some() {
            map.next_value_seed(Any)?;
        }
        Ok(Kind::Object)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Kind, A::Error> {
        while seq.next_element_seed(Any)?.is_some() {}
        Ok(Kind::List)
    }
    fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<Kind, E> {
        Ok(Kind::Boolean)
    }
    fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<Kind, E> {
        Ok(Kind::Number)
    }
    fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<Kind, E> {
        Ok(Kind::Number)
    }
    fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<Kind, E> {
        Ok(Kind::Number)
    }
    fn visit_str<E: serde::de::Error>(self, _: &str) -> Result<Kind, E> {
        Ok(Kind::String)
    }
    fn visit_unit<E: serde::de::Error>(self) -> Result<Kind, E> {
        Ok(Kind::Null)
    }
}

/// A `usage` value as `usage_of`'s `Option<Raw>` reads it: `null` is none; an object
/// (or a list of three) of `prompt_tokens`, `completion_tokens` and `total_tokens`, each
/// a non-negative integer or `null`, unknown keys ignored, none twice; anything else
/// makes the whole read fail (no usage), never the pass. Beside the counts, its
/// `service_tier` as `service_tier_of` reads it (a string, once; in a list, never).
enum Usage {
    Absent,
    Invalid,
    Read([Option<u64>; 3], Option<String>),
}

impl Usage {
    /// The usage, and its tier when there is one.
    fn into_usage(self) -> (Option<TokenUsage>, Option<String>) {
        let Usage::Read([prompt, completion, Some(total)], tier) = self else {
            return (None, None);
        };
        let usage = TokenUsage {
            prompt_tokens: prompt.unwrap_or(0),
            completion_tokens: completion.unwrap_or(0),
            total_tokens: total,
        };
        (Some(usage), tier.map(crate::reply::bounded_tier))
    }
}

struct UsageSeed;

impl<'de> DeserializeSeed<'de> for UsageSeed {
    type Value = Usage;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Usage, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for UsageSeed {
    type Value = Usage;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<Usage, E> {
        Ok(Usage::Absent)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Usage, A::Error> {
        let mut counts: [Option<Option<u64>>; 3] = [None; 3];
        let mut valid = true;
        // `None`: not there; `Some(None)`: unreadable (twice, or not a string or null).
        let mut tier: Option<Option<Option<String>>> = None;
        while let Some(key) = map.next_key_seed(UsageKey)? {
            let Some(i) = key else {
                map.next_value_seed(Any)?;
                continue;
            };
            if i == TIER {
                let read = map.next_value_seed(Leaf::Other)?.text();
                tier = match tier {
                    None => Some(read),
                    Some(_) => Some(None),
                };
                continue;
            }
            let count = map.next_value_seed(Leaf::Other)?.count();
            if counts[i].is_some() {
                valid = false;
            }
            match count {
                Some(count) => counts[i] = Some(count),
                None => valid = false,
            }
        }
        Ok(match valid {
            true => Usage::Read(counts.map(Option::flatten), tier.flatten().flatten()),
            false => Usage::Invalid,
        })
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Usage, A::Error> {
        let mut counts = [None; 3];
        let mut n = 0usize;
        let mut valid = true;
        while let Some(count) = seq.next_element_seed(Leaf::Other)?.map(Leaf::count) {
            match (count, counts.get_mut(n)) {
                (Some(count), Some(slot)) => *slot = count,
                _ => valid = false,
            }
            n += 1;
        }
        // (Read as a list, the tier's struct takes a count for its tier: never one.)
        Ok(match valid && n == 3 {
            true => Usage::Read(counts, None),
            false => Usage::Invalid,
        })
    }

    fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<Usage, E> {
        Ok(Usage::Invalid)
    }
    fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<Usage, E> {
        Ok(Usage::Invalid)
    }
    fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<Usage, E> {
        Ok(Usage::Invalid)
    }
    fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<Usage, E> {
        Ok(Usage::Invalid)
    }
    fn visit_str<E: serde::de::Error>(self, _: &str) -> Result<Usage, E> {
        Ok(Usage::Invalid)
    }
}

/// [`UsageKey`]'s index for `service_tier`.
const TIER: usize = 3;

/// Which count a key of `usage` names, or [`TIER`] (`None`: another key, ignored).
struct UsageKey;

impl<'de> DeserializeSeed<'de> for UsageKey {
    type Value = Option<usize>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Option<usize>, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for UsageKey {
    type Value = Option<usize>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a key")
    }

    fn visit_str<E: serde::de::Error>(self, key: &str) -> Result<Option<usize>, E> {
        Ok([
            "prompt_tokens",
            "completion_tokens",
            "total_tokens",
            "service_tier",
        ]
        .iter()
        .position(|k| *k == key))
    }
}

/// A value of `usage`, checked and read as far as a count or a tier needs it.
enum Leaf {
    Null,
    /// A non-negative integer.
    Count(u64),
    Text(String),
    /// Anything else: a negative or fractional number, a boolean, a list, an object.
    Other,
}

impl Leaf {
    /// As `Option<u64>` reads it: `Some(None)` for `null`, `Some(Some(n))` for a count,
    /// `None` for anything else.
    fn count(self) -> Option<Option<u64>> {
        match self {
            Leaf::Null => Some(None),
            Leaf::Count(n) => Some(Some(n)),
            Leaf::Text(_) | Leaf::Other => None,
        }
    }

    /// As `Option<String>` reads it: `Some(None)` for `null`, `Some(Some(s))` for a
    /// string, `None` for anything else.
    fn text(self) -> Option<Option<String>> {
        match self {
            Leaf::Null => Some(None),
            Leaf::Text(s) => Some(Some(s)),
            Leaf::Count(_) | Leaf::Other => None,
        }
    }
}

/// Any `Leaf` is the seed that reads one (`Leaf::Other` by custom; its own value is not read).
impl<'de> DeserializeSeed<'de> for Leaf {
    type Value = Leaf;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Leaf, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Leaf {
    type Value = Leaf;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<Leaf, E> {
        Ok(Leaf::Null)
    }
    fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<Leaf, E> {
        Ok(Leaf::Count(n))
    }
    fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<Leaf, E> {
        // serde_json hands non-negative integers to `visit_u64`; this is a negative one.
        Ok(u64::try_from(n).map_or(Leaf::Other, Leaf::Count))
    }
    fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<Leaf, E> {
        Ok(Leaf::Other)
    }
    fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<Leaf, E> {
        Ok(Leaf::Other)
    }
    fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Leaf, E> {
        Ok(Leaf::Text(s.to_owned()))
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Leaf, A::Error> {
        Any.visit_map(map)?;
        Ok(Leaf::Other)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Leaf, A::Error> {
        Any.visit_seq(seq)?;
        Ok(Leaf::Other)
    }
}
