//! Mistral's official Python SDK against the emulator, endpoint by endpoint (issue 19):
//! `tests/suites/python/official_sdk.py` drives the SDK (`mistralai.client`, 3.x)
//! through OCR, both classifiers, an agent, a conversation and its append, a file upload,
//! a batch job and its output, and a transcription, against one emulator; the blocking
//! client sends the same requests to another. The SDK must decode every answer (its
//! pydantic models reject a shape they do not know), and what it decoded must be what
//! the Rust client decoded, times aside.
//!
//! Needs `python3` (or `MISTRAL_TEST_PYTHON`) with the SDK installed
//! (`pip install mistralai`); without it the test says so and skips.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use mistral_core::models::{
    AgentCompletionRequest, BatchJob, BatchJobRequest, BatchRequest, BatchResult,
    ChatClassificationRequest, ChatResponse, ClassificationRequest, ClassificationResponse,
    ConversationAppendRequest, ConversationRequest, ConversationResponse, FileObject, FileUpload,
    Message, OcrDocument, OcrRequest, OcrResponse, TranscriptionRequest, TranscriptionResponse,
    batch_jsonl,
};
use mistral_emulator::{Config, Emulator};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

/// The interpreter to use, if the SDK can be imported by it.
fn python_with_sdk() -> Option<String> {
    let python = std::env::var("MISTRAL_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    let status = Command::new(&python)
        .args(["-c", "import mistralai.client"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    matches!(status, Ok(s) if s.success()).then_some(python)
}

/// Runs the SDK's script against `emu`: what it printed, parsed.
fn run_sdk(python: &str, emu: &Emulator) -> Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/official_sdk.py");
    let mut child = Command::new(python)
        .arg(&script)
        .args([emu.url().as_str(), emu.key()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the SDK's script starts");
    let deadline = Instant::now() + Duration::from_secs(90);
    let status = loop {
        if let Some(status) = child.try_wait().expect("the script's status") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the SDK's script took more than 90 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let (mut out, mut err) = (String::new(), String::new());
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(status.success(), "the SDK failed ({status}):\n{err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

/// `value` without the fields that say when (they differ from one run to the other).
fn timeless(mut value: Value) -> Value {
    fn strip(v: &mut Value) {
        match v {
            Value::Object(map) => {
                for key in ["created", "created_at", "completed_at", "started_at"] {
                    map.remove(key);
                }
                map.values_mut().for_each(strip);
            }
            Value::Array(list) => list.iter_mut().for_each(strip),
            _ => {}
        }
    }
    strip(&mut value);
    value
}

/// Whether everything in `theirs` is in `ours`, the same (`ours` may hold more: fields
/// the SDK's models drop); the path of the first difference otherwise.
fn within(theirs: &Value, ours: &Value, path: &str) -> Result<(), String> {
    match (theirs, ours) {
        (Value::Object(t), Value::Object(o)) => t.iter().try_for_each(|(key, value)| {
            let path = format!("{path}.{key}");
            match o.get(key) {
                Some(mine) => within(value, mine, &path),
                None if value.is_null() => Ok(()),
                None => Err(format!("{path}: only the SDK has {value}")),
            }
        }),
        (Value::Array(t), Value::Array(o)) if t.len() == o.len() => t
            .iter()
            .zip(o)
            .enumerate()
            .try_for_each(|(i, (t, o))| within(t, o, &format!("{path}[{i}]"))),
        _ if theirs == ours => Ok(()),
        _ => Err(format!(
            "{path}: the SDK has {theirs}, the Rust client {ours}"
        )),
    }
}

/// The SDK's view of one answer, read as the Rust type, against the Rust client's: all
/// the SDK saw, the Rust client saw the same (times aside).
fn same<T: DeserializeOwned + Serialize>(what: &str, sdk: &Value, ours: &T) {
    let theirs: T = serde_json::from_value(sdk[what].clone())
        .unwrap_or_else(|e| panic!("{what}: the SDK's dump does not decode: {e}"));
    let (theirs, ours) = (
        timeless(serde_json::to_value(&theirs).unwrap()),
        timeless(serde_json::to_value(ours).unwrap()),
    );
    assert_ne!(theirs, json!({}), "{what}: the SDK saw nothing");
    if let Err(difference) = within(&theirs, &ours, what) {
        panic!("the SDK and the Rust client differ: {difference}");
    }
}

/// A PDF of `n` pages (as the script makes it).
fn pdf(n: usize) -> Vec<u8> {
    let mut text = String::from("%PDF-1.4\n1 0 obj << /Type /Catalog /Pages 2 0 R >> endobj\n");
    text.push_str(&format!(
        "2 0 obj << /Type /Pages /Count {n} /Kids [] >> endobj\n"
    ));
    for i in 0..n {
        text.push_str(&format!(
            "{} 0 obj << /Type /Page /Parent 2 0 R >> endobj\n",
            i + 3
        ));
    }
    text.push_str("%%EOF\n");
    text.into_bytes()
}

/// A PCM WAV of `seconds` at 8 kHz, 16-bit mono (as the script makes it).
fn wav(seconds: u32) -> Vec<u8> {
    let data = 16_000 * seconds;
    let mut out = b"RIFF".to_vec();
    out.extend_from_slice(&(36 + data).to_le_bytes());
    out.extend_from_slice(b"WAVEfmt ");
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
fn the_official_python_sdk_gets_the_same_answers() {
    let Some(python) = python_with_sdk() else {
        eprintln!(
            "SKIP the_official_python_sdk_gets_the_same_answers: no python3 with Mistral's \
             SDK (pip install mistralai; or set MISTRAL_TEST_PYTHON)"
        );
        return;
    };
    let sdk = run_sdk(&python, &Emulator::start(Config::default()));

    // The same sequence from the blocking client, to an emulator of its own.
    let emu = Emulator::start(Config::default());
    let client = mistral_blocking::Client::builder()
        .api_key(emu.key())
        .base_url(emu.url())
        .build()
        .expect("a client");
    let ocr = client
        .ocr(OcrRequest::new("mistral-ocr-latest", OcrDocument::pdf(&pdf(4))).pages([0, 2]))
        .expect("ocr");
    same::<OcrResponse>("ocr", &sdk, &ocr);
    let classes = client
        .classifications(ClassificationRequest::new(
            "ft:classifier:intents",
            ["where is my parcel?", "please refund the order"],
        ))
        .expect("classifications");
    same::<ClassificationResponse>("classifications", &sdk, &classes);
    let chats = client
        .chat_classifications(ChatClassificationRequest::many(
            "ft:classifier:intents",
            vec![
                vec![
                    Message::user("hello"),
                    Message::assistant("hi, how can I help?"),
                ],
                vec![Message::user("cancel my subscription")],
            ],
        ))
        .expect("chat classifications");
    same::<ClassificationResponse>("chat_classifications", &sdk, &chats);
    let agent = client
        .agent_completion(
            AgentCompletionRequest::new("ag_0123", vec![Message::user("Bonjour")]).max_tokens(5),
        )
        .expect("agent");
    same::<ChatResponse>("agent_completion", &sdk, &agent);
    let start = client
        .start_conversation(ConversationRequest::with_model(
            "mistral-medium-latest",
            "Who wrote Candide?",
        ))
        .expect("conversation");
    same::<ConversationResponse>("conversation_start", &sdk, &start);
    let append = client
        .append_conversation(
            &start.conversation_id,
            ConversationAppendRequest::new("And Zadig?").max_tokens(4),
        )
        .expect("append");
    same::<ConversationResponse>("conversation_append", &sdk, &append);

    let lines: Vec<BatchRequest> = (0..3)
        .map(|i| {
            BatchRequest::new(
                format!("q{i}"),
                json!({"model": "mistral-small-latest", "max_tokens": 3,
                       "messages": [{"role": "user", "content": format!("question {i}")}]}),
            )
        })
        .collect();
    let file = client
        .upload_file(FileUpload::new(
            "requests.jsonl",
            batch_jsonl(&lines).unwrap(),
        ))
        .expect("upload");
    same::<FileObject>("file", &sdk, &file);
    let request = BatchJobRequest::new("/v1/chat/completions", vec![file.id.clone()])
        .model("mistral-small-latest");
    let mut job = client
        .create_batch_job(request)
        .expect("a job")
        .into_inner();
    while !job.is_done() {
        std::thread::sleep(Duration::from_millis(50));
        job = client.batch_job(&job.id).expect("a poll").into_inner();
    }
    same::<BatchJob>("batch_job", &sdk, &job);
    let output = client
        .file_content(job.output_file.as_deref().expect("an output"))
        .expect("the output");
    let ours: Vec<BatchResult> = BatchResult::parse_lines(&output)
        .into_iter()
        .map(|l| l.expect("a line"))
        .collect();
    same::<Vec<BatchResult>>("batch_output", &sdk, &ours);

    let transcription = client
        .transcription(
            TranscriptionRequest::file("voxtral-mini-latest", "memo.wav", wav(4))
                .language("fr")
                .segments(),
        )
        .expect("transcription");
    same::<TranscriptionResponse>("transcription", &sdk, &transcription);
    assert_eq!(
        transcription.segments.len(),
        2,
        "the comparison saw the segments"
    );
}
