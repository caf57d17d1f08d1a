//! The emulator's endpoints, bodies, auth and validation, seen over raw HTTP.

mod common;

use common::{CHAT, chat, post_chat};
use mistral_emulator::raw_http::{self, Connection};
use mistral_emulator::{Config, Emulator, Era, Limits, Outcome};
use serde_json::json;

#[test]
fn chat_completion_is_served_with_usage_and_headers() {
    let emu = Emulator::start(Config::default());
    let r = post_chat(&emu.url(), emu.key(), "mistral-small-latest");
    assert_eq!(r.status, 200, "{}", r.text());
    let body = r.json().expect("json");
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["model"], "mistral-small-latest");
    assert_eq!(body["choices"][0]["message"]["role"], "assistant");
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    // "hello": ceil(5/4) = 2 prompt tokens; 16 completion tokens by default; no
    // `service_tier` asked: the standard tier served it.
    assert_eq!(
        body["usage"],
        json!({"prompt_tokens": 2, "completion_tokens": 16, "total_tokens": 18,
               "service_tier": "standard"})
    );
    let content = body["choices"][0]["message"]["content"]
        .as_str()
        .unwrap_or("");
    assert_eq!(content.split(' ').count(), 16);
    assert!(r.header("mistral-correlation-id").is_some());
    assert_eq!(r.header("x-ratelimit-limit-req-minute"), Some("300"));
    assert_eq!(r.header("x-ratelimit-remaining-req-minute"), Some("299"));
    assert_eq!(r.header("x-ratelimit-tokens-query-cost"), Some("18"));
    // Deterministic content, unique correlation ids.
    let again = post_chat(&emu.url(), emu.key(), "mistral-small-latest");
    assert_eq!(again.json().unwrap()["choices"], body["choices"]);
    assert_ne!(
        again.header("mistral-correlation-id"),
        r.header("mistral-correlation-id")
    );
    let log = emu.log();
    assert_eq!((log.total(), log.admitted()), (2, 2));
    assert_eq!(log.tokens_charged("mistral-small-latest"), 36);
    assert!(log.entries().iter().all(|e| {
        e.key_hash
            .as_deref()
            .is_some_and(|h| !h.contains("test-key"))
    }));
}

#[test]
fn max_tokens_caps_the_completion() {
    let emu = Emulator::start(Config::default());
    let mut body = chat("m", "hello");
    body["max_tokens"] = json!(3);
    let r = raw_http::post(&emu.url(), Some(emu.key()), CHAT, &body).unwrap();
    let v = r.json().unwrap();
    assert_eq!(v["usage"]["completion_tokens"], 3);
    assert_eq!(v["choices"][0]["finish_reason"], "length");
}

#[test]
fn every_documented_chat_field_is_accepted() {
    let emu = Emulator::start(Config::default());
    let body = json!({
        "model": "m",
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": [{"type": "text", "text": "hi"}, {"type": "image_url", "image_url": "https://x"}]},
            {"role": "assistant", "content": null, "tool_calls": [{"id": "abcdefghi", "function": {"name": "f", "arguments": "{}"}}]},
            {"role": "tool", "content": "42", "tool_call_id": "abcdefghi"}
        ],
        "temperature": 0.2, "top_p": 0.9, "max_tokens": 8, "stream": false, "stop": ["\n"],
        "random_seed": 7, "response_format": {"type": "json_object"},
        "tools": [{"type": "function", "function": {"name": "f", "description": "d", "parameters": {}}}],
        "tool_choice": "auto", "presence_penalty": 0.0, "frequency_penalty": 0.0, "n": 1,
        "prediction": {"type": "content", "content": ""}, "parallel_tool_calls": true,
        "safe_prompt": false, "service_tier": "auto"
    });
    let r = raw_http::post(&emu.url(), Some(emu.key()), CHAT, &body).unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
}

#[test]
fn unknown_field_missing_field_null_and_bad_json_are_422() {
    let emu = Emulator::start(Config::default());
    let url = emu.url();
    let key = Some(emu.key());
    let mut body = chat("m", "hi");
    body["temprature"] = json!(0.5);
    let r = raw_http::post(&url, key, CHAT, &body).unwrap();
    assert_eq!(r.status, 422);
    assert_eq!(
        r.json().unwrap(),
        json!({"detail": [{"type": "extra_forbidden", "loc": ["body", "temprature"],
                           "msg": "Extra inputs are not permitted", "input": 0.5}]})
    );
    let r = raw_http::post(&url, key, CHAT, &json!({"messages": []})).unwrap();
    assert_eq!(r.status, 422);
    let v = r.json().unwrap();
    assert_eq!(v["detail"][0]["type"], "missing");
    assert_eq!(v["detail"][0]["loc"], json!(["body", "model"]));
    let r = raw_http::post(&url, key, CHAT, &json!({"model": "m"})).unwrap();
    assert_eq!(
        r.json().unwrap()["detail"][0]["loc"],
        json!(["body", "messages"])
    );
    let mut body = chat("m", "hi");
    body["stream"] = json!(null);
    let r = raw_http::post(&url, key, CHAT, &body).unwrap();
    assert_eq!(r.status, 422);
    assert_eq!(r.json().unwrap()["detail"][0]["type"], "bool_type");
    let auth = format!("Bearer {}", emu.key());
    let r = raw_http::request(
        &url,
        "POST",
        CHAT,
        &[("authorization", &auth)],
        b"{\"model\": ",
    )
    .unwrap();
    assert_eq!(r.status, 422);
    assert_eq!(r.json().unwrap()["detail"][0]["type"], "json_invalid");
    let r = raw_http::request(&url, "POST", CHAT, &[("authorization", &auth)], b"").unwrap();
    assert_eq!(r.status, 422);
    let log = emu.log();
    assert_eq!(log.admitted(), 0);
    assert!(log.entries().iter().all(|e| e.outcome == Outcome::Invalid));
}

#[test]
fn unauthorized_in_each_era() {
    let emu = Emulator::start(Config::default());
    for key in [None, Some("wrong-key")] {
        let r = raw_http::post(&emu.url(), key, CHAT, &chat("m", "hi")).unwrap();
        assert_eq!(r.status, 401);
        assert_eq!(r.json().unwrap(), json!({"detail": "Unauthorized"}));
        assert!(r.header("www-authenticate").is_none());
        assert!(r.headers_with_prefix("x-ratelimit").is_empty());
    }
    let emu = Emulator::start(Config {
        era: Era::Early2025,
        ..Config::default()
    });
    let r = raw_http::post(&emu.url(), Some("nope"), CHAT, &chat("m", "hi")).unwrap();
    assert_eq!(r.status, 401);
    let v = r.json().unwrap();
    assert_eq!(v["message"], "Unauthorized");
    assert_eq!(v["request_id"].as_str().map(str::len), Some(32));
    assert_eq!(r.header("www-authenticate"), Some("Key"));
    let r = raw_http::get(&emu.url(), None, "/v1/models").unwrap();
    assert_eq!(r.status, 401);
    assert_eq!(emu.log().count_status(401), 2);
}

#[test]
fn several_keys_are_accepted() {
    let emu = Emulator::start(Config {
        keys: vec!["k1".into(), "k2".into()],
        ..Config::default()
    });
    assert_eq!(emu.key(), "k1");
    assert_eq!(post_chat(&emu.url(), "k2", "m").status, 200);
    let log = emu.log();
    let hashes: Vec<_> = log.entries().iter().map(|e| e.key_hash.clone()).collect();
    assert_eq!(hashes.len(), 1);
    assert!(
        hashes[0]
            .as_deref()
            .is_some_and(|h| h.len() == 16 && h != "k2")
    );
}

#[test]
fn streaming_shape_ends_with_done() {
    let emu = Emulator::start(Config::default());
    let mut body = chat("m", "hello there");
    body["stream"] = json!(true);
    let r = raw_http::post(&emu.url(), Some(emu.key()), CHAT, &body).unwrap();
    assert_eq!(r.status, 200);
    assert!(r.complete);
    assert!(
        r.header("content-type")
            .unwrap_or("")
            .starts_with("text/event-stream")
    );
    assert_eq!(r.header("x-ratelimit-remaining-req-minute"), Some("299"));
    assert!(r.text().ends_with("data: [DONE]\n\n"));
    let data = r.sse_data();
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<serde_json::Value> = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).expect("chunk json"))
        .collect();
    assert_eq!(chunks.len(), 1 + 16);
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let mut text = String::new();
    for (i, c) in chunks.iter().enumerate() {
        assert_eq!(c["object"], "chat.completion.chunk");
        assert!(c["p"].is_string());
        assert_eq!(c["choices"][0]["index"], 0);
        text.push_str(c["choices"][0]["delta"]["content"].as_str().unwrap_or(""));
        let last = i + 1 == chunks.len();
        assert_eq!(c["choices"][0]["finish_reason"].is_null(), !last);
        assert_eq!(c.get("usage").is_some(), last);
    }
    let last = chunks.last().unwrap();
    assert_eq!(last["choices"][0]["finish_reason"], "stop");
    assert_eq!(last["usage"]["total_tokens"], 3 + 16);
    // The streamed text is the plain completion's text.
    body["stream"] = json!(false);
    let plain = raw_http::post(&emu.url(), Some(emu.key()), CHAT, &body).unwrap();
    assert_eq!(
        plain.json().unwrap()["choices"][0]["message"]["content"],
        text.as_str()
    );
}

#[test]
fn fim_embeddings_moderations_and_models() {
    let emu = Emulator::start(Config {
        embedding_dim: 8,
        ..Config::default()
    });
    let url = emu.url();
    let key = Some(emu.key());
    let r = raw_http::post(
        &url,
        key,
        "/v1/fim/completions",
        &json!({"model": "codestral-latest", "prompt": "def f(", "suffix": "return 1"}),
    )
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json().unwrap();
    assert_eq!(v["usage"]["prompt_tokens"], 4);
    assert!(v["choices"][0]["message"]["content"].is_string());
    assert!(r.header("x-ratelimit-limit-tokens-minute").is_some());

    let r = raw_http::post(
        &url,
        key,
        "/v1/embeddings",
        &json!({"model": "mistral-embed", "input": ["one", "two"]}),
    )
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json().unwrap();
    assert_eq!(v["data"].as_array().map(Vec::len), Some(2));
    assert_eq!(v["data"][1]["index"], 1);
    assert_eq!(v["data"][0]["object"], "embedding");
    assert_eq!(v["data"][0]["embedding"].as_array().map(Vec::len), Some(8));
    assert_eq!(v["usage"]["prompt_tokens"], 2);
    assert!(r.header("x-ratelimit-remaining-req-minute").is_some());
    let r2 = raw_http::post(
        &url,
        key,
        "/v1/embeddings",
        &json!({"model": "mistral-embed", "input": "one", "output_dimension": 4}),
    )
    .unwrap();
    let v2 = r2.json().unwrap();
    assert_eq!(v2["data"][0]["embedding"].as_array().map(Vec::len), Some(4));
    let r3 = raw_http::post(
        &url,
        key,
        "/v1/embeddings",
        &json!({"model": "mistral-embed", "input": "one"}),
    )
    .unwrap();
    assert_eq!(
        r3.json().unwrap()["data"][0]["embedding"],
        v["data"][0]["embedding"]
    );

    let r = raw_http::post(
        &url,
        key,
        "/v1/moderations",
        &json!({"model": "mistral-moderation-latest", "input": ["x"]}),
    )
    .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.json().unwrap()["results"][0]["categories"]["pii"], false);

    let r = raw_http::get(&url, key, "/v1/models").unwrap();
    assert_eq!(r.status, 200);
    let v = r.json().unwrap();
    assert_eq!(v["object"], "list");
    assert!(!v["data"].as_array().unwrap().is_empty());
    assert!(
        r.headers_with_prefix("x-ratelimit").is_empty(),
        "{:?}",
        r.headers
    );
    assert!(r.header("mistral-correlation-id").is_some());

    let r = raw_http::get(&url, key, "/v1/nothing").unwrap();
    assert_eq!(r.status, 404);
    assert_eq!(
        r.json().unwrap()["message"],
        "no Route matched with those values"
    );
}

#[test]
fn strict_models_reject_unknown_models_with_1500() {
    let emu = Emulator::start(
        Config {
            strict_models: true,
            ..Config::default()
        }
        .model("known", Limits::new(Some(10), None)),
    );
    assert_eq!(post_chat(&emu.url(), emu.key(), "known").status, 200);
    let r = post_chat(&emu.url(), emu.key(), "bad model");
    assert_eq!(r.status, 400);
    let v = r.json().unwrap();
    assert_eq!(v["code"], "1500");
    assert_eq!(v["message"], "Invalid model: bad model");
}

#[test]
fn keep_alive_connection_serves_many_requests() {
    let emu = Emulator::start(Config::default());
    let mut conn = Connection::open(&emu.url()).unwrap();
    for _ in 0..20 {
        let r = conn.post(Some(emu.key()), CHAT, &chat("m", "hi")).unwrap();
        assert_eq!(r.status, 200);
    }
    assert_eq!(emu.log().total(), 20);
}

#[test]
fn the_log_is_capped_and_says_so() {
    let emu = Emulator::start(Config {
        max_log_entries: 3,
        ..Config::default()
    });
    let mut conn = Connection::open(&emu.url()).unwrap();
    for _ in 0..5 {
        assert_eq!(
            conn.post(Some(emu.key()), CHAT, &chat("m", "hi"))
                .unwrap()
                .status,
            200
        );
    }
    let log = emu.log();
    assert_eq!((log.entries().len(), log.dropped()), (3, 2));
    let summary = raw_http::get(&emu.url(), None, "/_emulator/summary").unwrap();
    assert_eq!(summary.json().unwrap()["dropped"], 2);
    assert!(summary.header("mistral-correlation-id").is_none());
    // Inspection requests are not numbered: request 5 is the next one.
    assert_eq!(emu.requests_received(), 5);
}

fn weather_tool() -> serde_json::Value {
    json!({"type": "function", "function": {
        "name": "get_weather",
        "description": "forecast",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "days": {"type": "integer", "minimum": 1, "maximum": 7},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                "tags": {"type": "array", "items": {"type": "string"}, "minItems": 2},
            },
            "required": ["city", "days"],
        },
    }})
}

#[test]
fn a_request_with_tools_gets_a_tool_call_as_mistral_sends_it() {
    let emu = Emulator::start(Config::default());
    let mut body = chat("m", "weather in Paris?");
    body["tools"] = json!([weather_tool()]);
    let r = raw_http::post(&emu.url(), Some(emu.key()), CHAT, &body).unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json().unwrap();
    assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");
    let call = &v["choices"][0]["message"]["tool_calls"][0];
    assert!(call.get("type").is_none(), "{call}");
    let id = call["id"].as_str().unwrap();
    assert_eq!(id.len(), 9);
    assert!(id.chars().all(|c| c.is_ascii_alphanumeric()), "{id}");
    assert_eq!(call["function"]["name"], "get_weather");
    let text = call["function"]["arguments"]
        .as_str()
        .expect("a JSON string");
    let args: serde_json::Value = serde_json::from_str(text).unwrap();
    assert!(
        args["city"].as_str().is_some_and(|c| !c.is_empty()),
        "{args}"
    );
    let days = args["days"].as_i64().unwrap();
    assert!((1..=7).contains(&days), "{args}");
    assert!(["celsius", "fahrenheit"].contains(&args["unit"].as_str().unwrap()));
    assert!(args["tags"].as_array().unwrap().len() >= 2);
    // After the tool's result the model answers in text; with `none` it never calls.
    body["messages"] = json!([
        {"role": "user", "content": "weather in Paris?"},
        {"role": "assistant", "content": null, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": id, "content": "{\"sunny\":true}"},
    ]);
    let v = raw_http::post(&emu.url(), Some(emu.key()), CHAT, &body)
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(v["choices"][0]["finish_reason"], "stop", "{v}");
    assert!(
        v["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .len()
            > 3
    );
    let mut off = chat("m", "weather?");
    off["tools"] = json!([weather_tool()]);
    off["tool_choice"] = json!("none");
    let v = raw_http::post(&emu.url(), Some(emu.key()), CHAT, &off)
        .unwrap()
        .json()
        .unwrap();
    assert!(v["choices"][0]["message"]["tool_calls"].is_null(), "{v}");
}

#[test]
fn a_streamed_tool_call_arrives_whole_in_one_delta() {
    let emu = Emulator::start(Config::default());
    let mut body = chat("m", "weather?");
    body["tools"] = json!([weather_tool()]);
    body["stream"] = json!(true);
    let r = raw_http::post(&emu.url(), Some(emu.key()), CHAT, &body).unwrap();
    let text = r.text();
    let deltas: Vec<serde_json::Value> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    let with_calls: Vec<_> = deltas
        .iter()
        .filter(|d| !d["choices"][0]["delta"]["tool_calls"].is_null())
        .collect();
    assert_eq!(with_calls.len(), 1, "{text}");
    let call = &with_calls[0]["choices"][0]["delta"]["tool_calls"][0];
    let args: serde_json::Value =
        serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
    assert!(args["days"].is_i64());
    assert_eq!(with_calls[0]["choices"][0]["finish_reason"], "tool_calls");
    assert!(text.trim_end().ends_with("data: [DONE]"));
}

#[test]
fn json_mode_answers_valid_json_and_json_schema_an_instance_of_the_schema() {
    let emu = Emulator::start(Config::default());
    let mut body = chat("m", "give me json");
    body["response_format"] = json!({"type": "json_object"});
    let v = raw_http::post(&emu.url(), Some(emu.key()), CHAT, &body)
        .unwrap()
        .json()
        .unwrap();
    let content = v["choices"][0]["message"]["content"].as_str().unwrap();
    let parsed: serde_json::Value = serde_json::from_str(content).expect(content);
    assert!(parsed.is_object());
    body["response_format"] = json!({"type": "json_schema", "json_schema": {
    "name": "person", "strict": true, "schema": {
        "type": "object",
        "properties": {
            "name": {"type": "string", "minLength": 8},
            "age": {"type": "integer", "minimum": 18, "maximum": 30},
            "admin": {"type": "boolean"},
            "nick": {"type": ["string", "null"]},
            "kind": {"const": "human"},
        },
        "required": ["name", "age", "admin"],
    }}});
    let v = raw_http::post(&emu.url(), Some(emu.key()), CHAT, &body)
        .unwrap()
        .json()
        .unwrap();
    let content = v["choices"][0]["message"]["content"].as_str().unwrap();
    let p: serde_json::Value = serde_json::from_str(content).expect(content);
    assert!(p["name"].as_str().unwrap().chars().count() >= 8, "{p}");
    assert!((18..=30).contains(&p["age"].as_i64().unwrap()), "{p}");
    assert!(p["admin"].is_boolean());
    assert!(p["nick"].is_string());
    assert_eq!(p["kind"], "human");
}
