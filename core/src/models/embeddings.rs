//! `POST /v1/embeddings`.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::input::TextInput;
use super::usage::Usage;
use super::{RequestSize, de};

open_enum! {
    /// `output_dtype`: numeric type of the returned vectors.
    pub enum OutputDtype {
        /// `float`
        Float => "float",
        /// `int8`
        Int8 => "int8",
        /// `uint8`
        Uint8 => "uint8",
        /// `binary`
        Binary => "binary",
        /// `ubinary`
        Ubinary => "ubinary",
    }
}

open_enum! {
    /// `encoding_format`: how the vectors are encoded in the JSON.
    pub enum EncodingFormat {
        /// `float`: JSON arrays of numbers.
        Float => "float",
        /// `base64`: base64 strings (kept raw in [`EmbeddingData::embedding_base64`]).
        Base64 => "base64",
    }
}

/// The body of `POST /v1/embeddings`. Unset options are omitted from the JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EmbeddingRequest {
    /// Model id, e.g. `mistral-embed`.
    pub model: String,
    /// Text(s) to embed.
    pub input: TextInput,
    /// Vector dimension (models that support it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_dimension: Option<u32>,
    /// Numeric type of the vectors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_dtype: Option<OutputDtype>,
    /// Encoding of the vectors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoding_format: Option<EncodingFormat>,
}

impl EmbeddingRequest {
    /// A request embedding `input` (a string, or a list of strings) with `model`.
    pub fn new(model: impl Into<String>, input: impl Into<TextInput>) -> Self {
        Self {
            model: model.into(),
            input: input.into(),
            output_dimension: None,
            output_dtype: None,
            encoding_format: None,
        }
    }

    /// Sets `output_dimension`.
    pub fn output_dimension(mut self, dimension: u32) -> Self {
        self.output_dimension = Some(dimension);
        self
    }

    /// Sets `output_dtype`.
    pub fn output_dtype(mut self, dtype: impl Into<OutputDtype>) -> Self {
        self.output_dtype = Some(dtype.into());
        self
    }

    /// Sets `encoding_format`.
    pub fn encoding_format(mut self, format: impl Into<EncodingFormat>) -> Self {
        self.encoding_format = Some(format.into());
        self
    }

    /// Total characters of the input text(s).
    pub fn prompt_chars(&self) -> usize {
        self.input.chars()
    }
}

impl RequestSize for EmbeddingRequest {
    fn prompt_chars(&self) -> usize {
        EmbeddingRequest::prompt_chars(self)
    }

    /// Embeddings generate no tokens: always `None`.
    fn max_tokens(&self) -> Option<u32> {
        None
    }
}

/// The embeddings response: `{id, object, model, usage, data[…]}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EmbeddingResponse {
    /// Response id.
    #[serde(default, deserialize_with = "de::null_default")]
    pub id: String,
    /// `list`.
    #[serde(default, deserialize_with = "de::null_default")]
    pub object: String,
    /// The model used.
    #[serde(default, deserialize_with = "de::null_default")]
    pub model: String,
    /// Token usage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    /// One vector per input, in input order (see [`EmbeddingData::index`]).
    #[serde(default, deserialize_with = "de::null_default")]
    pub data: Vec<EmbeddingData>,
}

impl EmbeddingResponse {
    /// The vectors ordered by `index`.
    pub fn vectors(&self) -> Vec<&[f32]> {
        let mut data: Vec<&EmbeddingData> = self.data.iter().collect();
        data.sort_by_key(|d| d.index);
        data.into_iter().map(|d| d.embedding.as_slice()).collect()
    }
}

/// One vector: `{object:"embedding", embedding:[f32], index}`.
///
/// With `encoding_format: base64` the server sends a string instead of an array: it is
/// kept in [`embedding_base64`](Self::embedding_base64) and `embedding` stays empty.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(from = "RawEmbeddingData")]
pub struct EmbeddingData {
    /// `embedding`.
    pub object: String,
    /// The vector.
    pub embedding: Vec<f32>,
    /// The vector as sent with `encoding_format: base64`, undecoded.
    pub embedding_base64: Option<String>,
    /// Position of the input this vector embeds.
    pub index: u32,
}

/// Wire form of [`EmbeddingData`].
#[derive(Deserialize)]
struct RawEmbeddingData {
    #[serde(default, deserialize_with = "de::null_default")]
    object: String,
    #[serde(default)]
    embedding: Value,
    #[serde(default, deserialize_with = "de::null_default")]
    index: u32,
}

impl From<RawEmbeddingData> for EmbeddingData {
    fn from(raw: RawEmbeddingData) -> Self {
        let (embedding, embedding_base64) = match raw.embedding {
            Value::Array(items) => (
                items
                    .iter()
                    .map(|v| v.as_f64().unwrap_or(f64::NAN) as f32)
                    .collect(),
                None,
            ),
            Value::String(s) => (Vec::new(), Some(s)),
            _ => (Vec::new(), None),
        };
        Self {
            object: raw.object,
            embedding,
            embedding_base64,
            index: raw.index,
        }
    }
}

impl Serialize for EmbeddingData {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = serializer.serialize_struct("EmbeddingData", 3)?;
        st.serialize_field("object", &self.object)?;
        match &self.embedding_base64 {
            Some(b64) if self.embedding.is_empty() => st.serialize_field("embedding", b64)?,
            _ => st.serialize_field("embedding", &self.embedding)?,
        }
        st.serialize_field("index", &self.index)?;
        st.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn minimal_request_has_no_nulls() {
        let req = EmbeddingRequest::new("mistral-embed", "hello");
        assert_eq!(
            serde_json::to_string(&req).unwrap(),
            r#"{"model":"mistral-embed","input":"hello"}"#
        );
        assert_eq!(req.prompt_chars(), 5);
        assert_eq!(RequestSize::max_tokens(&req), None);
        assert!(!RequestSize::is_stream(&req));
    }

    #[test]
    fn full_request_round_trips() {
        let req = EmbeddingRequest::new("codestral-embed", ["a", "bc"])
            .output_dimension(256)
            .output_dtype(OutputDtype::Int8)
            .encoding_format("float");
        let v = serde_json::to_value(&req).unwrap();
        assert_eq!(
            v,
            json!({"model":"codestral-embed","input":["a","bc"],"output_dimension":256,
                   "output_dtype":"int8","encoding_format":"float"})
        );
        assert_eq!(serde_json::from_value::<EmbeddingRequest>(v).unwrap(), req);
        assert_eq!(req.prompt_chars(), 3);
    }

    #[test]
    fn response_decodes() {
        let resp: EmbeddingResponse = serde_json::from_value(json!({
            "id": "emb-1", "object": "list", "model": "mistral-embed",
            "usage": {"prompt_tokens": 6, "total_tokens": 6, "completion_tokens": 0},
            "data": [
                {"object": "embedding", "embedding": [0.5, -1.25, 3], "index": 1},
                {"object": "embedding", "embedding": [0.0, 0.25, 1], "index": 0}
            ],
            "unknown": true
        }))
        .unwrap();
        assert_eq!(resp.data.len(), 2);
        assert_eq!(resp.data[0].embedding, vec![0.5, -1.25, 3.0]);
        assert_eq!(
            resp.vectors(),
            vec![&[0.0, 0.25, 1.0][..], &[0.5, -1.25, 3.0][..]]
        );
        assert_eq!(resp.usage.as_ref().unwrap().prompt_tokens, 6);
        let back: EmbeddingResponse =
            serde_json::from_value(serde_json::to_value(&resp).unwrap()).unwrap();
        assert_eq!(back, resp);
    }

    #[test]
    fn base64_vectors_are_kept_raw() {
        let d: EmbeddingData = serde_json::from_value(json!({
            "object": "embedding", "embedding": "AACAPw==", "index": 0
        }))
        .unwrap();
        assert!(d.embedding.is_empty());
        assert_eq!(d.embedding_base64.as_deref(), Some("AACAPw=="));
        assert_eq!(
            serde_json::to_value(&d).unwrap(),
            json!({"object": "embedding", "embedding": "AACAPw==", "index": 0})
        );
    }
}
