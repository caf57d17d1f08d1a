//! The endpoints beyond chat, FIM, embeddings, models and moderations, from both clients
//! against the emulator over loopback: each round trip decodes the emulator's answer
//! (fields this client does not know kept in `extra`), goes through the shared limiter
//! and the retries, and is logged by the emulator as what it was sent.

use std::sync::Arc;
use std::time::{Duration, Instant};

use mistral_core::models::{
    AgentCompletionRequest, BatchJob, BatchJobRequest, BatchRequest, BatchResult, BatchStatus,
    ChatClassificationRequest, ChatResponse, ClassificationRequest, ClassificationResponse,
    ConversationAppendRequest, ConversationEntry, ConversationRequest, ConversationResponse,
    FilePurpose, FileUpload, Message, OcrDocument, OcrRequest, OcrResponse, TranscriptionRequest,
    TranscriptionResponse, batch_jsonl,
};
use mistral_core::{Bucket, Error, NoLimiter, Reply, Stats};
use mistral_emulator::{Config, Emulator, Limits, Outcome};

const OCR: &str = "mistral-ocr-latest";

/// A PDF of `n` pages as a minimal writer makes it (uncompressed objects).
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

fn blocking(emu: &Emulator, shared: bool) -> mistral_blocking::Client {
    let builder = mistral_blocking::Client::builder()
        .api_key(emu.key())
        .base_url(emu.url());
    let builder = match shared {
        true => builder,
        false => builder.limiter(Arc::new(NoLimiter)),
    };
    builder.build().expect("a blocking client")
}

fn asynchronous(emu: &Emulator, shared: bool) -> mistral_async::Client {
    let builder = mistral_async::Client::builder()
        .api_key(emu.key())
        .base_url(emu.url());
    let builder = match shared {
        true => builder,
        false => builder.limiter(Arc::new(NoLimiter)),
    };
    builder.build().expect("an async client")
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime")
}

/// What each client got: its name and the call's result.
type Outcomes = Vec<(&'static str, Result<Reply<OcrResponse>, Error>)>;

/// Runs `requests` through each client (each request once per client, in order) and
/// hands back the replies, blocking's first.
fn ocr_both(emu: &Emulator, shared: bool, requests: &[OcrRequest]) -> Outcomes {
    ocr_both_with_stats(emu, shared, requests).0
}

/// [`ocr_both`], and each client's statistics after its calls (blocking's, async's).
fn ocr_both_with_stats(
    emu: &Emulator,
    shared: bool,
    requests: &[OcrRequest],
) -> (Outcomes, [Stats; 2]) {
    let client = blocking(emu, shared);
    let mut out: Vec<_> = requests
        .iter()
        .map(|r| ("blocking", client.ocr(r)))
        .collect();
    let blocking_stats = client.stats();
    let async_stats = runtime().block_on(async {
        let client = asynchronous(emu, shared);
        for r in requests {
            out.push(("async", client.ocr(r).await));
        }
        client.stats()
    });
    (out, [blocking_stats, async_stats])
}

/// An inline PDF, a selection of its pages and an image: the answer's pages, their
/// dimensions and images, `pages_processed`, the page limit's headers, and a field this
/// client does not know (`confidence_scores`) kept in `extra`.
#[test]
fn ocr_round_trips_from_both_clients() {
    let emu = Emulator::start(Config::default());
    let requests = [
        OcrRequest::new(OCR, OcrDocument::pdf(&pdf(4))).pages([0, 2]),
        OcrRequest::new(OCR, OcrDocument::image("image/png", b"\x89PNG\r\n\x1a\n"))
            .include_image_base64(true),
        OcrRequest::new(OCR, OcrDocument::url("https://example.com/report.pdf")),
    ];
    let replies = ocr_both(&emu, true, &requests);
    assert_eq!(replies.len(), 6);
    for (i, (driver, reply)) in replies.into_iter().enumerate() {
        let reply = reply.unwrap_or_else(|e| panic!("{driver} request {i}: {e}"));
        let expected: &[u64] = match i % 3 {
            0 => &[0, 2],
            1 => &[0],
            // A document by URL: the emulator's `document_pages` (3).
            _ => &[0, 1, 2],
        };
        let indexes: Vec<u64> = reply.pages.iter().map(|p| p.index).collect();
        assert_eq!(indexes, expected, "{driver} request {i}");
        assert_eq!(reply.pages_processed(), expected.len() as u64, "{driver}");
        let usage = reply.usage_info.as_ref().expect("usage_info");
        assert_eq!(usage.pages_processed, expected.len() as u64);
        assert_eq!(reply.model, OCR);
        for page in &reply.pages {
            assert!(
                page.markdown
                    .starts_with(&format!("# Page {}", page.index + 1))
            );
            let dimensions = page.dimensions.expect("dimensions");
            assert!(dimensions.width > 0 && dimensions.height > 0 && dimensions.dpi > 0);
            assert!(
                page.extra.contains_key("confidence_scores"),
                "{driver}: an unknown field is kept: {:?}",
                page.extra
            );
        }
        if i % 3 == 1 {
            let image = &reply.pages[0].images[0];
            assert_eq!(image.id, "img-0.jpeg");
            assert!(image.bottom_right_x > image.top_left_x);
            let bytes = image
                .image_base64
                .as_deref()
                .expect("image_base64 asked for");
            assert!(bytes.starts_with("data:image/jpeg;base64,"), "{bytes}");
            assert_eq!(usage.doc_size_bytes, Some(8));
        }
        // The page budget's headers, read as such (not as tokens).
        let pages = reply.limits.pages().expect("the ocr-pages headers");
        assert_eq!(pages.bucket, Bucket::Pages);
        assert_eq!(pages.limit, Some(500_000));
        assert_eq!(reply.limits.page_cost, Some(expected.len() as u64));
        assert_eq!(reply.limits.tokens(), None);
    }
    let log = emu.log();
    let served: Vec<(String, u64)> = log
        .entries()
        .iter()
        .map(|e| {
            assert_eq!(e.outcome, Outcome::Served, "{e:?}");
            (e.path.clone(), e.tokens)
        })
        .collect();
    let charged = |pages| ("/v1/ocr".to_string(), pages);
    assert_eq!(
        served,
        [2, 1, 3, 2, 1, 3].map(charged).to_vec(),
        "each request charged its pages"
    );
}

/// A request the emulator refuses as invalid (a page selection past the document's
/// end) is a typed error with the server's message, not retried.
#[test]
fn an_invalid_ocr_request_is_a_typed_error() {
    let emu = Emulator::start(Config::default());
    let request = OcrRequest::new(OCR, OcrDocument::pdf(&pdf(2))).pages([5]);
    for (driver, reply) in ocr_both(&emu, true, &[request]) {
        match reply {
            Err(Error::BadRequest { response, .. }) => {
                assert_eq!(response.status.map(|s| s.as_u16()), Some(422))
            }
            other => panic!("{driver}: expected a 422, got {other:?}"),
        }
    }
    assert_eq!(
        emu.log().total(),
        2,
        "one attempt each: a 422 is not retried"
    );
}

/// The OCR page budget: 6 pages per second, requests of 3 pages. Without a shared
/// limiter every call's own retries wait the spent window out (the 429 names the page
/// bucket): nothing is lost. With the client's limiter, which learns the page limit from
/// the headers and charges each call its estimated pages, the calls are paced instead.
#[test]
fn a_429_on_the_page_budget_is_waited_out() {
    let config = || {
        Config {
            window_secs: 1.0,
            ..Config::default()
        }
        .model(
            OCR,
            Limits {
                pages: Some(6),
                ..Limits::new(None, None)
            },
        )
    };
    // Three pages each, as the request tells (`pages`).
    let requests: Vec<OcrRequest> = (0..5)
        .map(|_| OcrRequest::new(OCR, OcrDocument::url("https://example.com/a.pdf")).pages("0-2"))
        .collect();

    for shared in [false, true] {
        let emu = Emulator::start(config());
        let started = Instant::now();
        let (replies, stats) = ocr_both_with_stats(&emu, shared, &requests);
        let elapsed = started.elapsed();
        for (driver, reply) in &replies {
            let reply = reply
                .as_ref()
                .unwrap_or_else(|e| panic!("{driver} (shared limiter: {shared}): {e}"));
            assert_eq!(reply.pages_processed(), 3);
        }
        let log = emu.log();
        let refusals = log.count_429();
        // Each client counted what it went through: 5 calls, their 429s as spent windows
        // (the page bucket said so), every one retried.
        let counted: u64 = stats.iter().map(|s| s.rate_limited.window).sum();
        assert_eq!(counted as usize, refusals, "{stats:?}");
        for s in &stats {
            assert_eq!((s.calls, s.successes, s.failures), (5, 5, 0), "{s:?}");
            assert_eq!(s.attempts, 5 + s.rate_limited.window, "{s:?}");
        }
        assert!(log.violations().is_empty(), "{:?}", log.violations());
        assert_eq!(
            log.tokens_charged(OCR),
            30,
            "every page of the ten calls, once"
        );
        // 30 pages at 6 a second, 6 of them at once: about 4 s (a little less: the
        // server admits a call while a page is left and charges its 3 after, and a
        // refusal's body now says exactly when to come back: 3.80 s seen).
        assert!(
            elapsed >= Duration::from_millis(3_500),
            "shared {shared}: {elapsed:?}"
        );
        if shared {
            // The limiter paces by pages: at most the first contact's refusal(s).
            assert!(refusals <= 2, "paced by the shared budget: {refusals} 429s");
        } else {
            assert!(refusals >= 1, "the calls alone must have met the limit");
        }
        for e in log.entries().iter().filter(|e| e.status == 429) {
            assert_eq!(e.path, "/v1/ocr");
        }
        eprintln!("shared limiter {shared}: 10 calls in {elapsed:?}, {refusals} 429s");
    }
}

/// Both classification endpoints from both clients: one result per input (per chat),
/// each target's scores (the emulator's `intent` sums to 1), the usage charged to the
/// model's token budget as the emulator counted it.
#[test]
fn classifiers_round_trip_from_both_clients() {
    const MODEL: &str = "ft:classifier:intents";
    let emu = Emulator::start(Config::default());
    let texts = ["where is my parcel?", "please refund the order"];
    let chats = vec![
        vec![
            Message::user("hello"),
            Message::assistant("hi, how can I help?"),
        ],
        vec![Message::user("cancel my subscription")],
    ];
    let check = |driver: &str, reply: &ClassificationResponse, expected_tokens: u64| {
        assert_eq!(reply.model, MODEL, "{driver}");
        assert_eq!(reply.results.len(), 2, "{driver}: one result per input");
        for result in &reply.results {
            let intent = &result["intent"];
            let sum: f64 = intent.scores.values().sum();
            assert!((sum - 1.0).abs() < 1e-3, "{driver}: {:?}", intent.scores);
            assert!(intent.top().is_some());
            assert!(
                result.contains_key("language"),
                "{driver}: every target kept"
            );
        }
        let usage = reply.usage.as_ref().expect("usage");
        assert_eq!(usage.prompt_tokens, expected_tokens, "{driver}");
        assert_eq!(usage.completion_tokens, 0);
    };
    // ⌈19/4⌉ + ⌈23/4⌉; the chats: ⌈5/4⌉ + ⌈19/4⌉ and ⌈22/4⌉.
    let (text_tokens, chat_tokens) = (5 + 6, 2 + 5 + 6);
    let client = blocking(&emu, true);
    let reply = client
        .classifications(ClassificationRequest::new(MODEL, texts))
        .expect("blocking classifications");
    check("blocking", &reply, text_tokens);
    let reply = client
        .chat_classifications(ChatClassificationRequest::many(MODEL, chats.clone()))
        .expect("blocking chat classifications");
    check("blocking", &reply, chat_tokens);
    runtime().block_on(async {
        let client = asynchronous(&emu, true);
        let reply = client
            .classifications(ClassificationRequest::new(MODEL, texts))
            .await
            .expect("async classifications");
        check("async", &reply, text_tokens);
        let reply = client
            .chat_classifications(ChatClassificationRequest::many(MODEL, chats))
            .await
            .expect("async chat classifications");
        check("async", &reply, chat_tokens);
    });
    let log: Vec<(String, u64)> = emu
        .log()
        .entries()
        .iter()
        .map(|e| (e.path.clone(), e.tokens))
        .collect();
    let text = ("/v1/classifications".to_string(), text_tokens);
    let chat = ("/v1/chat/classifications".to_string(), chat_tokens);
    assert_eq!(log, vec![text.clone(), chat.clone(), text, chat]);
}

/// `/v1/agents/completions` from both clients, whole and streamed: the chat shape,
/// charged by the emulator to the agent's model, the budget the request names.
#[test]
fn agent_completions_round_trip_from_both_clients() {
    let emu = Emulator::start(Config::default());
    let agent_model = emu.config().agent_model.clone();
    let request = AgentCompletionRequest::new("ag_0123", vec![Message::user("Bonjour")])
        .max_tokens(5)
        .budget(agent_model.clone());
    let check = |driver: &str, reply: &ChatResponse| {
        let text = reply.text().unwrap_or_default();
        assert_eq!(text.split_whitespace().count(), 5, "{driver}: {text:?}");
        assert_eq!(reply.model, agent_model, "{driver}");
        let usage = reply.usage.as_ref().expect("usage");
        assert_eq!((usage.prompt_tokens, usage.completion_tokens), (2, 5));
    };
    let client = blocking(&emu, true);
    let whole = client.agent_completion(&request).expect("blocking agent");
    assert!(whole.ticket().is_some(), "admitted by the shared budget");
    check("blocking", &whole);
    let streamed = client
        .agent_completion_stream(&request)
        .expect("blocking agent stream")
        .collect_response()
        .expect("the stream's whole answer");
    check("blocking stream", &streamed);
    assert_eq!(streamed.text(), whole.text(), "the same seeded answer");
    runtime().block_on(async {
        let client = asynchronous(&emu, true);
        let whole = client
            .agent_completion(&request)
            .await
            .expect("async agent");
        check("async", &whole);
        let streamed = client
            .agent_completion_stream(&request)
            .await
            .expect("async agent stream")
            .collect_response()
            .await
            .expect("the stream's whole answer");
        check("async stream", &streamed);
    });
    let log = emu.log();
    for e in log.entries() {
        assert_eq!(e.path, "/v1/agents/completions");
        assert_eq!(e.model.as_deref(), Some(agent_model.as_str()));
        assert_eq!(e.outcome, Outcome::Served);
    }
    let streams: Vec<bool> = log.entries().iter().map(|e| e.stream).collect();
    assert_eq!(streams, [false, true, false, true]);
}

/// A conversation started and appended to twice from each client: the same id
/// throughout, the usage the emulator charges (an append pays for the history), the
/// answer's fields this client does not know kept, and an unknown conversation a 404
/// that is not retried.
#[test]
fn conversations_round_trip_from_both_clients() {
    const MODEL: &str = "mistral-medium-latest";
    let emu = Emulator::start(Config::default());
    // Start: ⌈18/4⌉ = 5 prompt tokens, 16 completion (history 21). First append:
    // 21 + ⌈10/4⌉ = 24 prompt, 4 completion (history 28). Second: 28 + 1, 16.
    let expected = [(5, 16), (24, 4), (29, 16)];
    let start = ConversationRequest::with_model(MODEL, "Who wrote Candide?");
    let appends = [
        ConversationAppendRequest::new("And Zadig?").max_tokens(4),
        ConversationAppendRequest::new(vec![ConversationEntry::user("Ok")]).budget(MODEL),
    ];
    let check = |driver: &str, turn: usize, reply: &ConversationResponse, id: &str| {
        assert_eq!(reply.conversation_id, id, "{driver} turn {turn}");
        assert_eq!(reply.object, "conversation.response");
        let usage = reply.usage.as_ref().expect("usage");
        assert_eq!(
            (usage.prompt_tokens, usage.completion_tokens),
            expected[turn],
            "{driver} turn {turn}"
        );
        assert!(usage.extra.contains_key("connector_tokens"), "{driver}");
        assert!(reply.extra.contains_key("guardrails"), "{driver}");
        let output = &reply.outputs[0];
        assert!(output.is_output_message());
        assert_eq!(
            output.extra.get("object"),
            Some(&serde_json::json!("entry"))
        );
        assert_eq!(reply.model(), Some(MODEL));
        let words = reply.text().unwrap_or_default().split_whitespace().count();
        assert_eq!(words as u64, expected[turn].1, "{driver} turn {turn}");
    };
    let client = blocking(&emu, true);
    let first = client.start_conversation(&start).expect("blocking start");
    assert!(first.conversation_id.starts_with("conv_"));
    check("blocking", 0, &first, &first.conversation_id.clone());
    for (i, append) in appends.iter().enumerate() {
        let reply = client
            .append_conversation(&first.conversation_id, append)
            .expect("blocking append");
        check("blocking", i + 1, &reply, &first.conversation_id);
    }
    let missing = client.append_conversation("conv_unknown", &appends[0]);
    assert!(
        matches!(missing, Err(Error::NotFound { .. })),
        "{missing:?}"
    );
    let async_id = runtime().block_on(async {
        let client = asynchronous(&emu, true);
        let first = client
            .start_conversation(&start)
            .await
            .expect("async start");
        check("async", 0, &first, &first.conversation_id.clone());
        for (i, append) in appends.iter().enumerate() {
            let reply = client
                .append_conversation(&first.conversation_id, append)
                .await
                .expect("async append");
            check("async", i + 1, &reply, &first.conversation_id);
        }
        let missing = client
            .append_conversation("conv_unknown", &appends[0])
            .await;
        assert!(
            matches!(missing, Err(Error::NotFound { .. })),
            "{missing:?}"
        );
        first.into_inner().conversation_id
    });
    assert_ne!(async_id, first.conversation_id, "two conversations");
    let log = emu.log();
    let charged: Vec<(u16, u64)> = log.entries().iter().map(|e| (e.status, e.tokens)).collect();
    let turn = [(200, 21), (200, 28), (200, 45), (404, 0)];
    assert_eq!(
        charged,
        [turn, turn].concat(),
        "one attempt each, a 404 not retried"
    );
}

/// What `mistral batch --via batch-api` does, from code, through each client: upload a
/// JSONL (3 good lines, 1 the endpoint refuses), create a job, poll it to its end,
/// download the output and error files; then a job cancelled while it runs.
#[test]
fn batch_jobs_round_trip_from_both_clients() {
    let emu = Emulator::start(Config::default());
    let chat = |text: &str| {
        serde_json::json!({"model": "mistral-small-latest", "max_tokens": 3,
                           "messages": [{"role": "user", "content": text}]})
    };
    let mut lines: Vec<BatchRequest> = (0..3)
        .map(|i| BatchRequest::new(format!("q{i}"), chat(&format!("question {i}"))))
        .collect();
    lines.push(BatchRequest::new("bad", serde_json::json!({"model": "m"})));
    let jsonl = batch_jsonl(&lines).expect("jsonl");
    let many = batch_jsonl(
        &(0..600)
            .map(|i| BatchRequest::new(format!("m{i}"), chat("x")))
            .collect::<Vec<_>>(),
    )
    .expect("jsonl");
    let check_outputs = |driver: &str, job: &BatchJob, output: &[u8], errors: &[u8]| {
        assert_eq!(job.status, BatchStatus::Success, "{driver}");
        assert_eq!(
            (
                job.total_requests,
                job.succeeded_requests,
                job.failed_requests
            ),
            (4, 3, 1),
            "{driver}"
        );
        assert!(
            job.extra.contains_key("metadata"),
            "{driver}: {:?}",
            job.extra
        );
        let good: Vec<BatchResult> = BatchResult::parse_lines(output)
            .into_iter()
            .map(|l| l.expect("an output line"))
            .collect();
        let mut ids: Vec<&str> = good.iter().filter_map(|l| l.custom_id.as_deref()).collect();
        ids.sort_unstable();
        assert_eq!(ids, ["q0", "q1", "q2"], "{driver}");
        for line in &good {
            assert!(line.is_success(), "{driver}: {line:?}");
            let body: ChatResponse =
                serde_json::from_value(line.response.as_ref().unwrap().body.clone())
                    .expect("a chat answer");
            assert_eq!(body.usage.as_ref().unwrap().completion_tokens, 3);
        }
        let bad = BatchResult::parse_lines(errors);
        assert_eq!(bad.len(), 1, "{driver}");
        let bad = bad[0].as_ref().expect("an error line");
        assert_eq!(bad.custom_id.as_deref(), Some("bad"));
        assert!(!bad.is_success());
        assert_eq!(bad.response.as_ref().unwrap().status_code, 422);
    };
    let poll_every = Duration::from_millis(50);

    let client = blocking(&emu, true);
    let file = client
        .upload_file(FileUpload::new("requests.jsonl", jsonl.clone()))
        .expect("blocking upload");
    assert_eq!((file.bytes, file.num_lines), (jsonl.len() as u64, Some(4)));
    assert_eq!(file.purpose, "batch");
    assert!(file.extra.contains_key("source"), "{:?}", file.extra);
    assert_eq!(client.file(&file.id).expect("the file").id, file.id);
    let request = BatchJobRequest::new("/v1/chat/completions", vec![file.id.clone()])
        .model("mistral-small-latest")
        .metadata("run", "blocking");
    let mut job = client
        .create_batch_job(&request)
        .expect("a job")
        .into_inner();
    assert_eq!(job.status, BatchStatus::Queued);
    while !job.is_done() {
        std::thread::sleep(poll_every);
        job = client.batch_job(&job.id).expect("a poll").into_inner();
    }
    let output = client
        .file_content(job.output_file.as_deref().expect("an output file"))
        .expect("the output");
    let errors = client
        .file_content(job.error_file.as_deref().expect("an error file"))
        .expect("the errors");
    check_outputs("blocking", &job, &output, &errors);
    let big = client
        .upload_file(FileUpload::new("many.jsonl", many.clone()))
        .expect("upload");
    let job = client
        .create_batch_job(BatchJobRequest::new(
            "/v1/chat/completions",
            vec![big.id.clone()],
        ))
        .expect("a job");
    let cancelled = client.cancel_batch_job(&job.id).expect("cancel");
    // `cancelled.status` is the HTTP status (`Reply`'s own field): the job's is the value's.
    assert_eq!(cancelled.value.status, BatchStatus::CancellationRequested);
    let mut job = cancelled.into_inner();
    while !job.is_done() {
        std::thread::sleep(poll_every);
        job = client.batch_job(&job.id).expect("a poll").into_inner();
    }
    assert_eq!(job.status, BatchStatus::Cancelled);
    assert!(job.succeeded_requests < 600, "stopped early: {job:?}");
    let missing = client.batch_job("no-such-job");
    assert!(
        matches!(missing, Err(Error::NotFound { .. })),
        "{missing:?}"
    );

    runtime().block_on(async {
        let client = asynchronous(&emu, true);
        let file = client
            .upload_file(FileUpload::new("requests.jsonl", jsonl.clone()))
            .await
            .expect("async upload");
        let request = BatchJobRequest::new("/v1/chat/completions", vec![file.id.clone()])
            .model("mistral-small-latest")
            .metadata("run", "async");
        let mut job = client
            .create_batch_job(request)
            .await
            .expect("a job")
            .into_inner();
        while !job.is_done() {
            tokio::time::sleep(poll_every).await;
            job = client
                .batch_job(&job.id)
                .await
                .expect("a poll")
                .into_inner();
        }
        let output = client
            .file_content(job.output_file.as_deref().expect("an output file"))
            .await
            .expect("the output");
        let errors = client
            .file_content(job.error_file.as_deref().expect("an error file"))
            .await
            .expect("the errors");
        check_outputs("async", &job, &output, &errors);
        let big = client
            .upload_file(FileUpload::new("many.jsonl", many.clone()))
            .await
            .expect("upload");
        let job = client
            .create_batch_job(BatchJobRequest::new(
                "/v1/chat/completions",
                vec![big.id.clone()],
            ))
            .await
            .expect("a job");
        let mut job = client
            .cancel_batch_job(&job.id)
            .await
            .expect("cancel")
            .into_inner();
        while !job.is_done() {
            tokio::time::sleep(poll_every).await;
            job = client
                .batch_job(&job.id)
                .await
                .expect("a poll")
                .into_inner();
        }
        assert_eq!(job.status, BatchStatus::Cancelled);
    });
    // Every call reached the emulator once: none was under a model's budget, none retried.
    let log = emu.log();
    assert!(
        log.entries()
            .iter()
            .all(|e| e.status != 429 && e.model.is_none())
    );
}

/// A PCM WAV of `seconds` at 8 kHz, 16-bit mono (16,000 bytes a second).
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

/// Transcriptions from both clients: an uploaded WAV (a multipart form) with segments,
/// audio by URL, and audio uploaded first to `/v1/files`; the usage the emulator charges
/// (its rule: 4 + 3/s + 13/s), `prompt_audio_seconds` kept; a bad language a 422.
#[test]
fn transcriptions_round_trip_from_both_clients() {
    const MODEL: &str = "voxtral-mini-latest";
    let emu = Emulator::start(Config::default());
    let audio = wav(4);
    let requests = |file_id: &str| {
        [
            TranscriptionRequest::file(MODEL, "memo.wav", audio.clone())
                .language("fr")
                .segments(),
            TranscriptionRequest::url(MODEL, "https://example.com/talk.mp3"),
            TranscriptionRequest::file_id(MODEL, file_id),
        ]
    };
    // (seconds, words, segments, total tokens)
    let expected = [
        (4, 12, 2, 4 + 12 + 52),
        (30, 90, 0, 4 + 90 + 390),
        (4, 12, 0, 68),
    ];
    let check = |driver: &str, i: usize, reply: &TranscriptionResponse| {
        let (seconds, words, segments, total) = expected[i];
        assert_eq!(reply.model, MODEL, "{driver} {i}");
        assert_eq!(reply.text.split_whitespace().count(), words, "{driver} {i}");
        assert_eq!(reply.segments.len(), segments, "{driver} {i}");
        assert_eq!(reply.audio_seconds(), Some(seconds), "{driver} {i}");
        assert_eq!(reply.usage.as_ref().unwrap().total_tokens, total);
        if i == 0 {
            assert_eq!(reply.language.as_deref(), Some("fr"));
            let last = reply.segments.last().unwrap();
            assert!(last.end <= 4.0 && last.start < last.end, "{last:?}");
            assert_eq!(last.extra["type"], "transcription_segment");
        }
    };
    let upload = FileUpload::new("memo.wav", audio.clone()).purpose(FilePurpose::Audio);
    let bad = TranscriptionRequest::url(MODEL, "https://example.com/a.mp3").language("french");

    let client = blocking(&emu, true);
    let file = client.upload_file(upload.clone()).expect("blocking upload");
    for (i, request) in requests(&file.id).into_iter().enumerate() {
        let reply = client
            .transcription(request)
            .expect("blocking transcription");
        check("blocking", i, &reply);
    }
    let refused = client.transcription(bad.clone());
    assert!(
        matches!(refused, Err(Error::BadRequest { .. })),
        "{refused:?}"
    );
    runtime().block_on(async {
        let client = asynchronous(&emu, true);
        let file = client.upload_file(upload).await.expect("async upload");
        for (i, request) in requests(&file.id).into_iter().enumerate() {
            let reply = client
                .transcription(request)
                .await
                .expect("async transcription");
            check("async", i, &reply);
        }
        let refused = client.transcription(bad).await;
        assert!(
            matches!(refused, Err(Error::BadRequest { .. })),
            "{refused:?}"
        );
    });
    let charged: Vec<u64> = emu
        .log()
        .entries()
        .iter()
        .filter(|e| e.path == "/v1/audio/transcriptions")
        .map(|e| e.tokens)
        .collect();
    assert_eq!(charged, [68, 484, 68, 0, 68, 484, 68, 0]);
}
