//! `POST /v1/audio/transcriptions`: audio (uploaded in a multipart form, by URL, or an
//! uploaded file's id) transcribed to text, with segments when asked.
//!
//! # Its cost
//!
//! A transcription spends its model's token budget: the audio counts as prompt tokens
//! (about [`AUDIO_TOKENS_PER_SECOND`]) and the transcript as completion (about
//! [`TRANSCRIPT_TOKENS_PER_SECOND`]), as the usage of Mistral's documented answer shows
//! (203 s of audio: 3,264 tokens in all, 635 of them the transcript). The estimate is
//! made from the audio's length: a WAV file's own header, else its size at
//! [`COMPRESSED_BYTES_PER_SECOND`] (128 kbit/s), else (by URL or file id)
//! [`TranscriptionRequest::expected_seconds`] or [`DEFAULT_AUDIO_SECONDS`]; the answer's
//! `usage.total_tokens` corrects it. A transcript's length teaches the budget nothing
//! about chat completions: its usage corrects the charge, never the learned completion
//! length ([`crate::request::CostUnit::AudioTokens`]).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::de;
use super::usage::Usage;
use crate::multipart::Form;

/// Prompt tokens a second of audio is assumed to cost.
pub const AUDIO_TOKENS_PER_SECOND: u64 = 13;
/// Completion tokens a second of audio is assumed to produce.
pub const TRANSCRIPT_TOKENS_PER_SECOND: u64 = 4;
/// Bytes a second of compressed audio is assumed to take (128 kbit/s).
pub const COMPRESSED_BYTES_PER_SECOND: u64 = 16_000;
/// Seconds assumed for audio whose length the request does not tell.
pub const DEFAULT_AUDIO_SECONDS: u64 = 60;

/// Where the audio comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AudioSource {
    /// Uploaded with the request.
    File {
        /// The file's name (its extension tells the format).
        name: String,
        /// Its bytes.
        content: bytes::Bytes,
    },
    /// Fetched by Mistral from a URL.
    Url(String),
    /// A file uploaded with `POST /v1/files` (purpose `audio`).
    FileId(String),
}

/// The body of `POST /v1/audio/transcriptions` (sent as a multipart form).
///
/// ```
/// use mistral_core::models::TranscriptionRequest;
///
/// let request = TranscriptionRequest::url("voxtral-mini-latest", "https://example.com/talk.mp3")
///     .language("en")
///     .expected_seconds(120);
/// assert_eq!(request.estimated_seconds(), 120);
/// assert_eq!(request.estimated_tokens(), 120 * (13 + 4));
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct TranscriptionRequest {
    /// Model id, e.g. `voxtral-mini-latest`.
    pub model: String,
    /// The audio.
    pub audio: AudioSource,
    /// The audio's language (`en`, `fr`…), when known: it helps.
    pub language: Option<String>,
    /// Sampling temperature.
    pub temperature: Option<f64>,
    /// Tell the speakers apart (`speaker_id` in the segments).
    pub diarize: Option<bool>,
    /// Words the transcript should favour (names, jargon).
    pub context_bias: Vec<String>,
    /// `segment` and/or `word` timestamps.
    pub timestamp_granularities: Vec<String>,
    /// The audio's expected length in seconds (never sent): the estimate for audio whose
    /// length the request does not tell.
    pub expected_seconds: Option<u64>,
}

impl TranscriptionRequest {
    fn new(model: impl Into<String>, audio: AudioSource) -> Self {
        Self {
            model: model.into(),
            audio,
            language: None,
            temperature: None,
            diarize: None,
            context_bias: Vec::new(),
            timestamp_granularities: Vec::new(),
            expected_seconds: None,
        }
    }

    /// A transcription of `content`, uploaded as a file named `name` (`talk.mp3`).
    pub fn file(
        model: impl Into<String>,
        name: impl Into<String>,
        content: impl Into<bytes::Bytes>,
    ) -> Self {
        Self::new(
            model,
            AudioSource::File {
                name: name.into(),
                content: content.into(),
            },
        )
    }

    /// A transcription of the audio at `url`.
    pub fn url(model: impl Into<String>, url: impl Into<String>) -> Self {
        Self::new(model, AudioSource::Url(url.into()))
    }

    /// A transcription of a file uploaded with `POST /v1/files`.
    pub fn file_id(model: impl Into<String>, file_id: impl Into<String>) -> Self {
        Self::new(model, AudioSource::FileId(file_id.into()))
    }

    /// Sets `language`.
    pub fn language(mut self, language: impl Into<String>) -> Self {
        self.language = Some(language.into());
        self
    }

    /// Asks for segment timestamps (`timestamp_granularities: segment`).
    pub fn segments(mut self) -> Self {
        self.timestamp_granularities.push("segment".into());
        self
    }

    /// Sets the audio's expected length (never sent).
    pub fn expected_seconds(mut self, seconds: u64) -> Self {
        self.expected_seconds = Some(seconds);
        self
    }

    /// The audio's length in seconds as far as the request tells (see the module docs),
    /// at least 1.
    pub fn estimated_seconds(&self) -> u64 {
        let known = match &self.audio {
            AudioSource::File { content, .. } => {
                Some(wav_seconds(content).unwrap_or_else(|| {
                    (content.len() as u64).div_ceil(COMPRESSED_BYTES_PER_SECOND)
                }))
            }
            _ => None,
        };
        known
            .or(self.expected_seconds)
            .unwrap_or(DEFAULT_AUDIO_SECONDS)
            .max(1)
    }

    /// The tokens the call is expected to cost: the audio and its transcript.
    pub fn estimated_tokens(&self) -> u64 {
        self.estimated_seconds()
            .saturating_mul(AUDIO_TOKENS_PER_SECOND + TRANSCRIPT_TOKENS_PER_SECOND)
    }

    /// The multipart form sent: `model`, the audio (`file`, `file_url` or `file_id`),
    /// then the options set (a list as one field per item, booleans as `true`/`false`).
    pub fn form(&self) -> Form {
        let mut form = Form::new().text("model", self.model.clone());
        form = match &self.audio {
            AudioSource::File { name, content } => {
                form.file("file", name.clone(), audio_type(name), content.clone())
            }
            AudioSource::Url(url) => form.text("file_url", url.clone()),
            AudioSource::FileId(id) => form.text("file_id", id.clone()),
        };
        if let Some(language) = &self.language {
            form = form.text("language", language.clone());
        }
        if let Some(temperature) = self.temperature {
            form = form.text("temperature", temperature.to_string());
        }
        if let Some(diarize) = self.diarize {
            form = form.text("diarize", diarize.to_string());
        }
        for word in &self.context_bias {
            form = form.text("context_bias", word.clone());
        }
        for granularity in &self.timestamp_granularities {
            form = form.text("timestamp_granularities", granularity.clone());
        }
        form
    }
}

/// The media type of an audio file by its extension.
fn audio_type(name: &str) -> &'static str {
    let extension = name.rsplit('.').next().unwrap_or("").to_ascii_lowercase();
    match extension.as_str() {
        "mp3" => "audio/mpeg",
        "wav" => "audio/wav",
        "flac" => "audio/flac",
        "ogg" | "oga" | "opus" => "audio/ogg",
        "m4a" | "mp4" => "audio/mp4",
        "webm" => "audio/webm",
        _ => "application/octet-stream",
    }
}

/// A WAV file's length in seconds, from its `fmt ` chunk's byte rate and its `data`
/// chunk's size (rounded up); `None` for anything else.
pub fn wav_seconds(bytes: &[u8]) -> Option<u64> {
    if bytes.len() < 12 || &bytes[..4] != b"RIFF" || &bytes[8..12] != b"WAVE" {
        return None;
    }
    let mut at = 12;
    let mut byte_rate = None;
    while at + 8 <= bytes.len() {
        let id = &bytes[at..at + 4];
        let size = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().ok()?) as usize;
        let body = at + 8;
        if id == b"fmt " && size >= 12 && body + 12 <= bytes.len() {
            byte_rate = Some(u32::from_le_bytes(
                bytes[body + 8..body + 12].try_into().ok()?,
            ));
        }
        if id == b"data" {
            let rate = u64::from(byte_rate.filter(|r| *r > 0)?);
            return Some((size as u64).div_ceil(rate));
        }
        at = body.checked_add(size)?.checked_add(size % 2)?;
    }
    None
}

/// The answer: `{model, text, language, segments, usage}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TranscriptionResponse {
    /// The model that transcribed.
    #[serde(default, deserialize_with = "de::null_default")]
    pub model: String,
    /// The transcript.
    #[serde(default, deserialize_with = "de::null_default")]
    pub text: String,
    /// The audio's language, as given or detected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
    /// Timed segments, when asked for.
    #[serde(default, deserialize_with = "de::null_default")]
    pub segments: Vec<TranscriptionSegment>,
    /// Tokens used (`prompt_audio_seconds` in its `extra`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    /// Any other field, verbatim.
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

impl TranscriptionResponse {
    /// The seconds of audio the server counted (`usage.prompt_audio_seconds`).
    pub fn audio_seconds(&self) -> Option<u64> {
        self.usage
            .as_ref()?
            .extra
            .get("prompt_audio_seconds")
            .and_then(de::value_to_u64)
    }
}

/// A timed piece of the transcript.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TranscriptionSegment {
    /// Its text.
    #[serde(default, deserialize_with = "de::null_default")]
    pub text: String,
    /// Start, seconds.
    #[serde(default)]
    pub start: f64,
    /// End, seconds.
    #[serde(default)]
    pub end: f64,
    /// The speaker, when diarized.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub speaker_id: Option<String>,
    /// Any other field (`type`, `score`…), verbatim.
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A PCM WAV of `seconds` at 8 kHz, 16-bit mono (16,000 bytes a second).
    pub(crate) fn wav(seconds: u32) -> Vec<u8> {
        let data = 16_000 * seconds;
        let mut out = Vec::new();
        out.extend_from_slice(b"RIFF");
        out.extend_from_slice(&(36 + data).to_le_bytes());
        out.extend_from_slice(b"WAVEfmt ");
        out.extend_from_slice(&16u32.to_le_bytes());
        out.extend_from_slice(&1u16.to_le_bytes()); // PCM
        out.extend_from_slice(&1u16.to_le_bytes()); // mono
        out.extend_from_slice(&8_000u32.to_le_bytes());
        out.extend_from_slice(&16_000u32.to_le_bytes()); // byte rate
        out.extend_from_slice(&2u16.to_le_bytes());
        out.extend_from_slice(&16u16.to_le_bytes());
        out.extend_from_slice(b"data");
        out.extend_from_slice(&data.to_le_bytes());
        out.resize(out.len() + data as usize, 0);
        out
    }

    #[test]
    fn the_audio_s_length_is_read_or_assumed() {
        assert_eq!(wav_seconds(&wav(3)), Some(3));
        assert_eq!(wav_seconds(b"RIFF\0\0\0\0WAVE"), None);
        assert_eq!(wav_seconds(b"ID3 mp3 bytes"), None);
        let file = TranscriptionRequest::file("m", "a.wav", wav(7));
        assert_eq!(file.estimated_seconds(), 7);
        assert_eq!(file.estimated_tokens(), 7 * 17);
        let mp3 = TranscriptionRequest::file("m", "a.mp3", vec![0u8; 40_000]);
        assert_eq!(mp3.estimated_seconds(), 3, "40 kB at 16 kB/s");
        let url = TranscriptionRequest::url("m", "https://x/a.mp3");
        assert_eq!(url.estimated_seconds(), DEFAULT_AUDIO_SECONDS);
        assert_eq!(url.expected_seconds(9).estimated_seconds(), 9);
    }

    #[test]
    fn the_form_holds_what_is_set() {
        let mut request =
            TranscriptionRequest::file("voxtral-mini-latest", "a.mp3", b"ID3".to_vec())
                .language("fr")
                .segments();
        request.diarize = Some(true);
        request.context_bias = vec!["Mistral".into(), "Voxtral".into()];
        let (_, body) = request.form().finish();
        let text = String::from_utf8_lossy(&body);
        for part in [
            "name=\"model\"\r\n\r\nvoxtral-mini-latest\r\n",
            "name=\"file\"; filename=\"a.mp3\"\r\nContent-Type: audio/mpeg\r\n\r\nID3\r\n",
            "name=\"language\"\r\n\r\nfr\r\n",
            "name=\"diarize\"\r\n\r\ntrue\r\n",
            "name=\"context_bias\"\r\n\r\nMistral\r\n",
            "name=\"context_bias\"\r\n\r\nVoxtral\r\n",
            "name=\"timestamp_granularities\"\r\n\r\nsegment\r\n",
        ] {
            assert!(text.contains(part), "{part:?} in {text}");
        }
        let (_, by_url) = TranscriptionRequest::url("m", "https://x/a.mp3")
            .form()
            .finish();
        assert!(
            String::from_utf8_lossy(&by_url).contains("name=\"file_url\"\r\n\r\nhttps://x/a.mp3")
        );
    }

    #[test]
    fn the_documented_answer_decodes() {
        let r: TranscriptionResponse = serde_json::from_value(json!({
            "model": "voxtral-mini-2507",
            "text": "This week, I traveled to Chicago.",
            "language": "en",
            "segments": [{"type": "transcription_segment", "text": "This week,", "start": 0.0,
                          "end": 1.2, "score": null, "speaker_id": "speaker_1"}],
            "usage": {"prompt_audio_seconds": 203, "prompt_tokens": 4, "total_tokens": 3264,
                      "completion_tokens": 635},
        }))
        .unwrap();
        assert_eq!(r.audio_seconds(), Some(203));
        assert_eq!(r.segments[0].speaker_id.as_deref(), Some("speaker_1"));
        assert_eq!(r.segments[0].extra["type"], "transcription_segment");
        assert_eq!(r.usage.as_ref().unwrap().total_tokens, 3264);
    }
}
