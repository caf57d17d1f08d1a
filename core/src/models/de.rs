//! Lenient deserialization helpers shared by the model types.

use serde::{Deserialize, Deserializer};
use serde_json::Value;

/// `null` or absent → `T::default()`; otherwise decode `T`.
pub(crate) fn null_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

/// Any JSON value → a `bool`: `true` only for JSON `true`; anything else is `false`.
pub(crate) fn lenient_bool<'de, D>(deserializer: D) -> Result<bool, D::Error>
where
    D: Deserializer<'de>,
{
    Ok(matches!(
        Value::deserialize(deserializer)?,
        Value::Bool(true)
    ))
}

/// A non-negative integer from a number (floats truncated), a string of digits, or
/// `null` (→ 0). Other shapes → 0.
pub(crate) fn lenient_u64<'de, D>(deserializer: D) -> Result<u64, D::Error>
where
    D: Deserializer<'de>,
{
    Ok(value_to_u64(&Value::deserialize(deserializer)?).unwrap_or(0))
}

/// Like [`lenient_u64`] but `None` when the value is absent, `null` or not a number.
pub(crate) fn lenient_opt_u64<'de, D>(deserializer: D) -> Result<Option<u64>, D::Error>
where
    D: Deserializer<'de>,
{
    Ok(value_to_u64(&Value::deserialize(deserializer)?))
}

/// A string, or any other JSON value rendered as compact JSON text; `null` → `None`.
pub(crate) fn opt_string_or_json<'de, D>(deserializer: D) -> Result<Option<String>, D::Error>
where
    D: Deserializer<'de>,
{
    Ok(match Value::deserialize(deserializer)? {
        Value::Null => None,
        Value::String(s) => Some(s),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        other => Some(other.to_string()),
    })
}

/// A string, or any other JSON value rendered as compact JSON text; `null` → `""`.
pub(crate) fn string_or_json<'de, D>(deserializer: D) -> Result<String, D::Error>
where
    D: Deserializer<'de>,
{
    Ok(opt_string_or_json(deserializer)?.unwrap_or_default())
}

/// A JSON value as an unsigned integer, if it is one (or a string of digits, or a
/// non-negative float, truncated).
pub(crate) fn value_to_u64(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n.as_u64().or_else(|| {
            n.as_f64()
                .filter(|f| f.is_finite() && *f >= 0.0 && *f < u64::MAX as f64)
                .map(|f| f as u64)
        }),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}
