//! The input file: one request per line in the format of Mistral's Batch API,
//! `{"custom_id": "…", "body": {…}}`, optionally with `"endpoint"` (or `"url"`) and
//! `"model"` beside the body. Read as a stream, one line at a time.

use std::collections::HashSet;
use std::fs::File;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::io::{self, BufRead, BufReader, Read};
use std::path::Path;

use mistral_async::mistral_core::request::estimate_tokens;
use serde_json::{Map, Value};

/// Longest line accepted (a longer one is an invalid line, not memory exhaustion).
pub const MAX_LINE_BYTES: usize = 16 << 20;

/// The endpoints a batch may call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Endpoint {
    /// `/v1/chat/completions`.
    Chat,
    /// `/v1/fim/completions`.
    Fim,
    /// `/v1/embeddings`.
    Embeddings,
}

impl Endpoint {
    /// Parses a path (`/v1/chat/completions`) or a short name (`chat`, `fim`,
    /// `embeddings`).
    pub fn parse(text: &str) -> Option<Endpoint> {
        Some(match text.trim() {
            "/v1/chat/completions" | "v1/chat/completions" | "chat" => Endpoint::Chat,
            "/v1/fim/completions" | "v1/fim/completions" | "fim" => Endpoint::Fim,
            "/v1/embeddings" | "v1/embeddings" | "embeddings" | "embed" => Endpoint::Embeddings,
            _ => return None,
        })
    }

    /// The path under the base URL.
    pub fn path(self) -> &'static str {
        match self {
            Endpoint::Chat => "/v1/chat/completions",
            Endpoint::Fim => "/v1/fim/completions",
            Endpoint::Embeddings => "/v1/embeddings",
        }
    }

    fn guess(body: &Map<String, Value>) -> Option<Endpoint> {
        if body.contains_key("messages") {
            Some(Endpoint::Chat)
        } else if body.contains_key("prompt") {
            Some(Endpoint::Fim)
        } else if body.contains_key("input") {
            Some(Endpoint::Embeddings)
        } else {
            None
        }
    }
}

/// What the command line says about lines that do not say it themselves.
#[derive(Clone, Debug, Default)]
pub struct Defaults {
    /// `--endpoint`.
    pub endpoint: Option<Endpoint>,
    /// `--model`.
    pub model: Option<String>,
}

/// One valid request of the input.
#[derive(Clone, Debug)]
pub struct Job {
    /// The line's `custom_id`.
    pub custom_id: String,
    /// Where it goes.
    pub endpoint: Endpoint,
    /// The model (the rate-limit budget).
    pub model: String,
    /// The body to send, with `model` set and `stream` removed.
    pub body: Value,
    /// Tokens the request is expected to use (the limiter's estimate).
    pub estimate: u64,
}

/// Why a line is not a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LineError {
    /// 1-based line number.
    pub line: u64,
    /// The reason, in words.
    pub reason: String,
}

impl std::fmt::Display for LineError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}: {}", self.line, self.reason)
    }
}

/// A 128-bit fingerprint of a `custom_id`: sets of these stay small whatever the ids'
/// length (two SipHash runs with different prefixes; a collision needs ~2^64 ids).
pub fn fingerprint(custom_id: &str) -> u128 {
    let half = |salt: u8| {
        let mut h = DefaultHasher::new();
        salt.hash(&mut h);
        custom_id.hash(&mut h);
        h.finish()
    };
    (u128::from(half(1)) << 64) | u128::from(half(2))
}

/// `true` when `custom_id` belongs to `shard` ((K-1, N): by a hash of the id).
pub fn in_shard(shard: Option<(u64, u64)>, custom_id: &str) -> bool {
    shard.is_none_or(|(k, n)| (fingerprint(custom_id) % u128::from(n)) as u64 == k)
}

/// Parses one line (without its newline). `Ok(None)` for a blank line.
pub fn parse_line(
    line_no: u64,
    bytes: &[u8],
    defaults: &Defaults,
) -> Result<Option<Job>, LineError> {
    let err = |reason: String| LineError {
        line: line_no,
        reason,
    };
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let value: Value = serde_json::from_slice(bytes).map_err(|e| err(format!("not JSON: {e}")))?;
    let Value::Object(mut object) = value else {
        return Err(err("not a JSON object".into()));
    };
    let custom_id = match object.remove("custom_id") {
        Some(Value::String(s)) if !s.is_empty() => s,
        Some(Value::String(_)) => return Err(err("custom_id is empty".into())),
        Some(other) => {
            return Err(err(format!(
                "custom_id must be a string, not {}",
                kind_of(&other)
            )));
        }
        None => return Err(err("no custom_id".into())),
    };
    let mut body = match object.remove("body") {
        Some(Value::Object(body)) => body,
        Some(other) => {
            return Err(err(format!(
                "body must be an object, not {} (custom_id {custom_id:?})",
                kind_of(&other)
            )));
        }
        None => return Err(err(format!("no body (custom_id {custom_id:?})"))),
    };
    let named_endpoint = match object.remove("endpoint").or_else(|| object.remove("url")) {
        Some(Value::String(s)) => Some(Endpoint::parse(&s).ok_or_else(|| {
            err(format!(
                "unknown endpoint {s:?} (chat, fim or embeddings, or their /v1/ paths)"
            ))
        })?),
        Some(other) => {
            return Err(err(format!(
                "endpoint must be a string, not {}",
                kind_of(&other)
            )));
        }
        None => None,
    };
    let endpoint = named_endpoint
        .or(defaults.endpoint)
        .or_else(|| Endpoint::guess(&body))
        .ok_or_else(|| {
            err(format!(
                "no endpoint: give --endpoint, an \"endpoint\" field, or a body with messages, prompt or input (custom_id {custom_id:?})"
            ))
        })?;
    let line_model = match object.remove("model") {
        Some(Value::String(s)) => Some(s),
        Some(other) => {
            return Err(err(format!(
                "model must be a string, not {}",
                kind_of(&other)
            )));
        }
        None => None,
    };
    let model = match body.get("model") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        Some(Value::String(_)) | None => line_model
            .or_else(|| defaults.model.clone())
            .ok_or_else(|| {
                err(format!(
                    "no model: give --model, a \"model\" field or body.model (custom_id {custom_id:?})"
                ))
            })?,
        Some(other) => {
            return Err(err(format!(
                "body.model must be a string, not {}",
                kind_of(other)
            )));
        }
    };
    body.insert("model".into(), Value::String(model.clone()));
    // A batch reads whole responses: a stream flag would only change the wire format.
    body.remove("stream");
    let estimate = check_body(endpoint, &body)
        .map_err(|reason| err(format!("{reason} (custom_id {custom_id:?})")))?;
    Ok(Some(Job {
        custom_id,
        endpoint,
        model,
        body: Value::Object(body),
        estimate,
    }))
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Checks what the endpoint needs and returns the token estimate.
fn check_body(endpoint: Endpoint, body: &Map<String, Value>) -> Result<u64, String> {
    let max_tokens = match body.get("max_tokens") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => Some(
            n.as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .ok_or("max_tokens must be a non-negative integer")?,
        ),
        Some(_) => return Err("max_tokens must be a non-negative integer".into()),
    };
    match endpoint {
        Endpoint::Chat => {
            let messages = match body.get("messages") {
                Some(Value::Array(m)) if !m.is_empty() => m,
                Some(Value::Array(_)) => return Err("body.messages is empty".into()),
                Some(_) => return Err("body.messages must be an array".into()),
                None => return Err("a chat request needs body.messages".into()),
            };
            let mut chars = 0;
            for (i, message) in messages.iter().enumerate() {
                let Some(message) = message.as_object() else {
                    return Err(format!("body.messages[{i}] must be an object"));
                };
                if !message.get("role").is_some_and(Value::is_string) {
                    return Err(format!("body.messages[{i}] has no role"));
                }
                chars += match message.get("content") {
                    Some(Value::String(s)) => s.chars().count(),
                    Some(Value::Array(chunks)) => chunks
                        .iter()
                        .map(|c| {
                            c.get("text")
                                .and_then(Value::as_str)
                                .map_or(4, |t| t.chars().count())
                        })
                        .sum(),
                    _ => 0,
                };
            }
            Ok(estimate_tokens(chars, max_tokens))
        }
        Endpoint::Fim => {
            let Some(prompt) = body.get("prompt").and_then(Value::as_str) else {
                return Err("a FIM request needs a string body.prompt".into());
            };
            let suffix = body.get("suffix").and_then(Value::as_str).unwrap_or("");
            Ok(estimate_tokens(
                prompt.chars().count() + suffix.chars().count(),
                max_tokens,
            ))
        }
        Endpoint::Embeddings => {
            let chars = match body.get("input") {
                Some(Value::String(s)) => s.chars().count(),
                Some(Value::Array(items)) if !items.is_empty() => {
                    let mut chars = 0;
                    for item in items {
                        chars += item
                            .as_str()
                            .ok_or("body.input must be a string or an array of strings")?
                            .chars()
                            .count();
                    }
                    chars
                }
                Some(Value::Array(_)) => return Err("body.input is empty".into()),
                Some(_) => return Err("body.input must be a string or an array of strings".into()),
                None => return Err("an embeddings request needs body.input".into()),
            };
            Ok(estimate_tokens(chars, Some(0)))
        }
    }
}

/// Reads `path` line by line: calls `each` with the line number and the line (without
/// its newline) until the end or the first `Err` of `each`. Memory holds one line.
pub fn for_each_line(
    path: &Path,
    mut each: impl FnMut(u64, Result<&[u8], LineError>) -> io::Result<bool>,
) -> io::Result<()> {
    let file = File::open(path)?;
    let mut reader = BufReader::with_capacity(1 << 16, file);
    let mut buf = Vec::with_capacity(1 << 12);
    let mut line_no = 0u64;
    loop {
        buf.clear();
        line_no += 1;
        let n = (&mut reader)
            .take(MAX_LINE_BYTES as u64 + 1)
            .read_until(b'\n', &mut buf)?;
        if n == 0 {
            return Ok(());
        }
        if buf.last() != Some(&b'\n') && buf.len() > MAX_LINE_BYTES {
            // Skip the rest of the over-long line.
            let mut rest = Vec::new();
            loop {
                rest.clear();
                let m = (&mut reader).take(1 << 20).read_until(b'\n', &mut rest)?;
                if m == 0 || rest.last() == Some(&b'\n') {
                    break;
                }
            }
            let error = LineError {
                line: line_no,
                reason: format!("longer than {} MiB", MAX_LINE_BYTES >> 20),
            };
            if !each(line_no, Err(error))? {
                return Ok(());
            }
            continue;
        }
        let line = buf.strip_suffix(b"\n").unwrap_or(&buf);
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if !each(line_no, Ok(line))? {
            return Ok(());
        }
    }
}

/// What a validation pass over the whole input found.
#[derive(Debug, Default)]
pub struct Scan {
    /// Valid requests.
    pub valid: u64,
    /// Invalid lines (the first [`Scan::MAX_KEPT`] are kept in `errors`).
    pub invalid: u64,
    /// The first invalid lines.
    pub errors: Vec<LineError>,
    /// Line numbers of the invalid lines (to skip them with `--skip-invalid`).
    pub invalid_lines: HashSet<u64>,
    /// Valid requests of the shard that the output already answers.
    pub already_done: u64,
    /// Valid requests of the shard still to send.
    pub todo: u64,
    /// Their estimated tokens.
    pub todo_tokens: u64,
    /// Per (model, endpoint), of the requests to send: requests and estimated tokens.
    pub per_budget: std::collections::BTreeMap<(String, Endpoint), (u64, u64)>,
    /// Lines read (the run reads no further: lines appended later are the next run's).
    pub lines: u64,
}

impl Scan {
    /// Invalid lines whose reasons are kept.
    pub const MAX_KEPT: usize = 20;
}

/// A set of `custom_id` fingerprints: a sorted vector, 16 bytes per id (a hash set
/// takes two to three times that).
#[derive(Debug, Default, Clone)]
pub struct Fingerprints {
    sorted: Vec<u128>,
}

impl Fingerprints {
    /// The set of `fingerprints` (in any order, repeats allowed).
    pub fn from_unsorted(mut fingerprints: Vec<u128>) -> Fingerprints {
        fingerprints.sort_unstable();
        fingerprints.dedup();
        fingerprints.shrink_to_fit();
        Fingerprints {
            sorted: fingerprints,
        }
    }

    /// `true` when `fingerprint` is in the set.
    pub fn contains(&self, fingerprint: &u128) -> bool {
        self.sorted.binary_search(fingerprint).is_ok()
    }

    /// Ids in the set.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.sorted.len()
    }
}

impl Scan {
    /// Counts `job` (`sign` 1) or takes it back (`sign` -1, a duplicate found later).
    fn count(&mut self, job: &Job, shard: Option<(u64, u64)>, done: &Fingerprints, add: bool) {
        let step = |n: &mut u64, by: u64| {
            *n = if add { *n + by } else { n.saturating_sub(by) };
        };
        step(&mut self.valid, 1);
        if !in_shard(shard, &job.custom_id) {
            return;
        }
        if done.contains(&fingerprint(&job.custom_id)) {
            step(&mut self.already_done, 1);
            return;
        }
        step(&mut self.todo, 1);
        step(&mut self.todo_tokens, job.estimate);
        let entry = self
            .per_budget
            .entry((job.model.clone(), job.endpoint))
            .or_default();
        step(&mut entry.0, 1);
        step(&mut entry.1, job.estimate);
        if entry.0 == 0 {
            self.per_budget.remove(&(job.model.clone(), job.endpoint));
        }
    }

    fn refuse(&mut self, error: LineError) {
        self.invalid += 1;
        self.invalid_lines.insert(error.line);
        if self.errors.len() < Scan::MAX_KEPT {
            self.errors.push(error);
        }
    }
}

/// Validates every line of `path` before anything is sent: JSON, fields, endpoint,
/// model, and that no `custom_id` appears twice (the later line is the invalid one).
///
/// Requests of `shard` whose `custom_id` is in `done` count as already done; the
/// others are this run's work (`todo`, and `per_budget` counts only them).
///
/// Memory: 8 bytes per line (a 64-bit fingerprint of its `custom_id`). Lines whose
/// fingerprints collide are read again and their ids compared, so only real duplicates
/// are refused.
pub fn scan(
    path: &Path,
    defaults: &Defaults,
    shard: Option<(u64, u64)>,
    done: &Fingerprints,
) -> io::Result<Scan> {
    let mut scan = Scan::default();
    let mut short: Vec<u64> = Vec::new();
    for_each_line(path, |line_no, line| {
        scan.lines = line_no;
        match line.and_then(|bytes| parse_line(line_no, bytes, defaults)) {
            Ok(Some(job)) => {
                short.push(fingerprint(&job.custom_id) as u64);
                scan.count(&job, shard, done, true);
            }
            Ok(None) => {}
            Err(error) => scan.refuse(error),
        }
        Ok(true)
    })?;
    short.sort_unstable();
    let suspects: HashSet<u64> = short
        .windows(2)
        .filter(|pair| pair[0] == pair[1])
        .map(|pair| pair[0])
        .collect();
    drop(short);
    if !suspects.is_empty() {
        // Second pass over the few lines whose fingerprints collide.
        let mut first: std::collections::HashMap<String, u64> = std::collections::HashMap::new();
        let lines = scan.lines;
        for_each_line(path, |line_no, line| {
            if line_no > lines {
                return Ok(false);
            }
            let Ok(Ok(Some(job))) = line.map(|bytes| parse_line(line_no, bytes, defaults)) else {
                return Ok(true);
            };
            if !suspects.contains(&(fingerprint(&job.custom_id) as u64)) {
                return Ok(true);
            }
            match first.get(&job.custom_id) {
                Some(&first_line) => {
                    scan.count(&job, shard, done, false);
                    scan.refuse(LineError {
                        line: line_no,
                        reason: format!(
                            "duplicate custom_id {:?} (first on line {first_line})",
                            job.custom_id
                        ),
                    });
                }
                None => {
                    first.insert(job.custom_id, line_no);
                }
            }
            Ok(true)
        })?;
        scan.errors.sort_by_key(|e| e.line);
    }
    Ok(scan)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Option<Job>, LineError> {
        parse_line(7, text.as_bytes(), &Defaults::default())
    }

    #[test]
    fn a_chat_line_gets_its_model_and_an_estimate() {
        let job = parse(r#"{"custom_id":"a","body":{"model":"m","messages":[{"role":"user","content":"12345678"}],"max_tokens":10,"stream":true}}"#)
            .unwrap()
            .unwrap();
        assert_eq!(job.endpoint, Endpoint::Chat);
        assert_eq!(job.model, "m");
        assert_eq!(job.estimate, 2 + 10);
        assert!(job.body.get("stream").is_none());
    }

    #[test]
    fn defaults_fill_in_endpoint_and_model() {
        let defaults = Defaults {
            endpoint: Some(Endpoint::Embeddings),
            model: Some("mistral-embed".into()),
        };
        let job = parse_line(
            1,
            br#"{"custom_id":"e","body":{"input":["abcd","efgh"]}}"#,
            &defaults,
        )
        .unwrap()
        .unwrap();
        assert_eq!(job.endpoint, Endpoint::Embeddings);
        assert_eq!(job.body["model"], "mistral-embed");
        assert_eq!(job.estimate, 2);
    }

    #[test]
    fn bad_lines_say_why_with_their_number() {
        for (text, why) in [
            ("{", "not JSON"),
            ("[1]", "not a JSON object"),
            (r#"{"body":{}}"#, "no custom_id"),
            (r#"{"custom_id":3,"body":{}}"#, "custom_id must be a string"),
            (r#"{"custom_id":"x","body":{"messages":[]}}"#, "no model"),
            (
                r#"{"custom_id":"x","body":{"model":"m","messages":[]}}"#,
                "body.messages is empty",
            ),
            (
                r#"{"custom_id":"x","body":{"model":"m","prompt":1}}"#,
                "string body.prompt",
            ),
            (
                r#"{"custom_id":"x","endpoint":"/v1/ocr","body":{}}"#,
                "unknown endpoint",
            ),
            (
                r#"{"custom_id":"x","body":{"model":"m","input":"a","max_tokens":-1}}"#,
                "max_tokens",
            ),
        ] {
            let error = parse(text).unwrap_err();
            assert_eq!(error.line, 7);
            assert!(error.reason.contains(why), "{text}: {}", error.reason);
        }
        assert!(parse("   ").unwrap().is_none());
    }

    #[test]
    fn duplicates_are_found_and_the_later_line_refused() {
        let dir = std::env::temp_dir().join(format!("mistral-cli-scan-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("in.jsonl");
        let line = |id: &str| {
            format!("{{\"custom_id\":\"{id}\",\"body\":{{\"model\":\"m\",\"input\":\"abcd\"}}}}\n")
        };
        let text: String = ["a", "b", "a", "c", "b", "a"]
            .iter()
            .map(|id| line(id))
            .collect();
        std::fs::write(&path, text).unwrap();
        let scan = scan(&path, &Defaults::default(), None, &Fingerprints::default()).unwrap();
        assert_eq!((scan.valid, scan.invalid, scan.todo), (3, 3, 3));
        let reasons: Vec<String> = scan.errors.iter().map(ToString::to_string).collect();
        assert_eq!(
            reasons,
            [
                "line 3: duplicate custom_id \"a\" (first on line 1)",
                "line 5: duplicate custom_id \"b\" (first on line 2)",
                "line 6: duplicate custom_id \"a\" (first on line 1)",
            ]
        );
        assert_eq!(scan.per_budget.values().next(), Some(&(3, 3)));
        let done = Fingerprints::from_unsorted(vec![fingerprint("c"), fingerprint("c")]);
        assert_eq!(done.len(), 1);
        assert!(done.contains(&fingerprint("c")) && !done.contains(&fingerprint("a")));
    }

    #[test]
    fn fingerprints_differ_for_different_ids() {
        assert_ne!(fingerprint("a"), fingerprint("b"));
        assert_eq!(fingerprint("a"), fingerprint("a"));
    }
}
