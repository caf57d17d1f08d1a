//! `POST /v1/audio/transcriptions`: a multipart form, validated, costed and answered.
//!
//! # Rule (the emulator's own)
//!
//! - The form holds `model` and exactly one of `file` (a file part), `file_url`,
//!   `file_id`; `language` (two letters), `temperature`, `diarize` (`true`/`false`),
//!   `context_bias` and `timestamp_granularities` (`segment`, `word`; repeated fields)
//!   may follow; `stream` must be `false`. Anything else is a 422.
//! - The audio's length: a WAV file's samples (its `data` size over its byte rate), any
//!   other upload ⌈bytes / 16,000⌉ s, a file uploaded to `/v1/files` the same from its
//!   bytes, a URL [`crate::Config::audio_seconds`].
//! - Usage, as Mistral's documented answer has it: `prompt_tokens` 4,
//!   `completion_tokens` 3 a second (the transcript, one word each),
//!   `prompt_audio_seconds` the length, and `total_tokens` their sum plus 13 a second of
//!   audio. The cost charged to the token limit is `total_tokens`.

use serde_json::{Value, json};

use super::api::{self, Invalid};
use super::batch::{Batches, boundary_of, multipart};
use super::rng::fnv1a;

/// A validated transcription.
#[derive(Clone, Debug)]
pub(crate) struct Job {
    pub model: String,
    pub seconds: u64,
    pub language: Option<String>,
    pub segments: bool,
    pub diarize: bool,
    pub seed: u64,
}

impl Job {
    pub(crate) fn prompt_tokens(&self) -> u64 {
        4
    }

    pub(crate) fn completion_tokens(&self) -> u64 {
        3 * self.seconds
    }

    pub(crate) fn total_tokens(&self) -> u64 {
        self.prompt_tokens() + self.completion_tokens() + 13 * self.seconds
    }
}

fn error(loc: &str, kind: &str, msg: &str, model: Option<String>) -> Invalid {
    Invalid {
        status: 422,
        body: json!({"detail": [{"type": kind, "loc": ["body", loc], "msg": msg, "input": null}]}),
        model,
    }
}

/// A WAV file's length: its `data` chunk over its byte rate, rounded up.
fn wav_seconds(bytes: &[u8]) -> Option<u64> {
    if bytes.get(..4)? != b"RIFF" || bytes.get(8..12)? != b"WAVE" {
        return None;
    }
    let u32_at = |at: usize| -> Option<u64> {
        let b = bytes.get(at..at + 4)?;
        Some(u64::from(u32::from_le_bytes([b[0], b[1], b[2], b[3]])))
    };
    let (mut at, mut rate) = (12usize, None);
    while at + 8 <= bytes.len() {
        let size = u32_at(at + 4)?;
        match bytes.get(at..at + 4)? {
            b"fmt " => rate = u32_at(at + 16),
            b"data" => return Some(size.div_ceil(rate.filter(|r| *r > 0)?)),
            _ => {}
        }
        at += 8 + usize::try_from(size + size % 2).ok()?;
    }
    None
}

fn bytes_seconds(bytes: &[u8]) -> u64 {
    wav_seconds(bytes).unwrap_or((bytes.len() as u64).div_ceil(16_000))
}

/// Validates a transcription form; `url_seconds` is the length of audio by URL.
pub(crate) fn parse(
    content_type: Option<&str>,
    body: &[u8],
    url_seconds: u64,
    files: &Batches,
) -> Result<Job, Invalid> {
    let Some(boundary) = content_type.and_then(boundary_of) else {
        return Err(error(
            "file",
            "value_error",
            "Expected multipart/form-data",
            None,
        ));
    };
    let (mut model, mut seconds, mut sources) = (None, None, 0);
    let (mut language, mut segments, mut diarize) = (None, false, false);
    // The same audio, the same transcript, whoever sends it (multipart boundaries
    // differ from client to client).
    let mut seed = 0;
    for part in multipart(body, &boundary) {
        let text = String::from_utf8_lossy(part.data).trim().to_string();
        match part.name.as_deref().unwrap_or("") {
            "model" => model = Some(text),
            "file" if part.filename.is_some() => {
                sources += 1;
                seed = fnv1a(part.data);
                seconds = Some(bytes_seconds(part.data));
            }
            "file_url" => {
                sources += 1;
                seed = fnv1a(text.as_bytes());
                seconds = Some(url_seconds);
            }
            "file_id" => {
                sources += 1;
                seed = fnv1a(text.as_bytes());
                let Some(content) = files.content(&text) else {
                    return Err(error("file_id", "value_error", "No such file", model));
                };
                seconds = Some(bytes_seconds(&content));
            }
            "language" => {
                if text.len() != 2 || !text.chars().all(|c| c.is_ascii_alphanumeric()) {
                    return Err(error(
                        "language",
                        "string_pattern_mismatch",
                        "String should match pattern '^\\w{2}$'",
                        model,
                    ));
                }
                language = Some(text);
            }
            "temperature" if text.parse::<f64>().is_ok() => {}
            "diarize" | "stream" if matches!(text.as_str(), "true" | "false") => {
                let on = text == "true";
                if part.name.as_deref() == Some("stream") && on {
                    return Err(error(
                        "stream",
                        "literal_error",
                        "Input should be False",
                        model,
                    ));
                }
                diarize |= on && part.name.as_deref() == Some("diarize");
            }
            "context_bias" => {}
            "timestamp_granularities" if matches!(text.as_str(), "segment" | "word") => {
                segments = true;
            }
            name => {
                let msg = format!("Unexpected or invalid field {name:?}");
                return Err(error(name, "extra_forbidden", &msg, model));
            }
        }
    }
    let Some(model) = model else {
        return Err(error("model", "missing", "Field required", None));
    };
    if sources != 1 {
        let msg = "Exactly one of file, file_url and file_id should be given";
        return Err(error("file", "value_error", msg, Some(model)));
    }
    Ok(Job {
        seconds: seconds.unwrap_or(url_seconds).max(1),
        model,
        language,
        segments,
        diarize,
        seed,
    })
}

/// The answer: the transcript (one word per completion token), its segments when asked
/// (ten words each, spread over the audio), the usage.
pub(crate) fn response(job: &Job) -> Value {
    let words: Vec<String> = api::sentence(job.seed, job.completion_tokens() as usize)
        .split(' ')
        .map(str::to_string)
        .collect();
    let per_word = job.seconds as f64 / words.len().max(1) as f64;
    let segments: Vec<Value> = match job.segments {
        false => Vec::new(),
        true => words
            .chunks(10)
            .enumerate()
            .map(|(i, chunk)| {
                let start = (i * 10) as f64 * per_word;
                let end = start + chunk.len() as f64 * per_word;
                json!({
                    "type": "transcription_segment",
                    "text": chunk.join(" "),
                    "start": (start * 100.0).round() / 100.0,
                    "end": (end * 100.0).round() / 100.0,
                    "score": null,
                    "speaker_id": job.diarize.then(|| format!("speaker_{}", i % 2 + 1)),
                })
            })
            .collect(),
    };
    json!({
        "model": job.model,
        "text": words.join(" "),
        "language": job.language.clone().unwrap_or_else(|| "en".into()),
        "segments": segments,
        "usage": {
            "prompt_audio_seconds": job.seconds,
            "prompt_tokens": job.prompt_tokens(),
            "total_tokens": job.total_tokens(),
            "completion_tokens": job.completion_tokens(),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(parts: &[(&str, Option<&str>, &[u8])]) -> (String, Vec<u8>) {
        let mut body = Vec::new();
        for (name, file, data) in parts {
            body.extend_from_slice(b"--B\r\nContent-Disposition: form-data; name=\"");
            body.extend_from_slice(name.as_bytes());
            body.push(b'"');
            if let Some(file) = file {
                body.extend_from_slice(format!("; filename=\"{file}\"").as_bytes());
            }
            body.extend_from_slice(b"\r\n\r\n");
            body.extend_from_slice(data);
            body.extend_from_slice(b"\r\n");
        }
        body.extend_from_slice(b"--B--\r\n");
        ("multipart/form-data; boundary=B".into(), body)
    }

    fn wav(seconds: u32) -> Vec<u8> {
        let data = 16_000 * seconds;
        let mut out = b"RIFF\0\0\0\0WAVEfmt ".to_vec();
        out.extend_from_slice(&16u32.to_le_bytes());
        out.extend_from_slice(&[1, 0, 1, 0]);
        out.extend_from_slice(&8_000u32.to_le_bytes());
        out.extend_from_slice(&16_000u32.to_le_bytes());
        out.extend_from_slice(&[2, 0, 16, 0]);
        out.extend_from_slice(b"data");
        out.extend_from_slice(&data.to_le_bytes());
        out.resize(out.len() + data as usize, 0);
        out
    }

    #[test]
    fn usage_follows_the_audio_s_length() {
        let files = Batches::default();
        let audio = wav(5);
        let (kind, body) = form(&[
            ("model", None, b"voxtral-mini-latest"),
            ("file", Some("a.wav"), &audio),
            ("timestamp_granularities", None, b"segment"),
        ]);
        let job = parse(Some(&kind), &body, 30, &files).unwrap();
        assert_eq!(job.seconds, 5);
        let answer = response(&job);
        assert_eq!(answer["usage"]["total_tokens"], 4 + 15 + 65);
        assert_eq!(answer["text"].as_str().unwrap().split(' ').count(), 15);
        assert_eq!(answer["segments"].as_array().unwrap().len(), 2);
        let (kind, body) = form(&[
            ("model", None, b"m"),
            ("file_url", None, b"https://x/a.mp3"),
        ]);
        assert_eq!(parse(Some(&kind), &body, 30, &files).unwrap().seconds, 30);
    }

    #[test]
    fn bad_forms_are_422() {
        let files = Batches::default();
        for parts in [
            vec![("file_url", None, b"https://x".as_slice())],
            vec![("model", None, b"m".as_slice())],
            vec![
                ("model", None, b"m"),
                ("file_url", None, b"u"),
                ("file_id", None, b"f"),
            ],
            vec![
                ("model", None, b"m"),
                ("file_url", None, b"u"),
                ("language", None, b"eng"),
            ],
            vec![
                ("model", None, b"m"),
                ("file_url", None, b"u"),
                ("stream", None, b"true"),
            ],
            vec![
                ("model", None, b"m"),
                ("file_url", None, b"u"),
                ("extra", None, b"1"),
            ],
            vec![("model", None, b"m"), ("file_id", None, b"nope")],
        ] {
            let (kind, body) = form(&parts);
            assert_eq!(
                parse(Some(&kind), &body, 30, &files).unwrap_err().status,
                422
            );
        }
        assert_eq!(parse(None, b"{}", 30, &files).unwrap_err().status, 422);
    }
}
