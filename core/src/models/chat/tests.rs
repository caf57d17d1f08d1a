//! The chat models against captured wire forms: requests as the API wants them,
//! responses in every form they were seen in.

use super::*;
use serde_json::{Value, json};

use crate::models::RequestSize;

#[test]
fn minimal_request_has_no_nulls() {
    let req = ChatRequest::new("mistral-small-latest", vec![Message::user("hi")]);
    assert_eq!(
        serde_json::to_string(&req).unwrap(),
        r#"{"model":"mistral-small-latest","messages":[{"role":"user","content":"hi"}]}"#
    );
    assert!(!req.is_stream());
    assert_eq!(RequestSize::max_tokens(&req), None);
}

#[test]
fn full_request_serializes_every_field() {
    let req = ChatRequest::new(
        "mistral-large-latest",
        [
            Message::system("be brief"),
            Message::user(vec![
                ContentChunk::text("what is this?"),
                ContentChunk::image_url("https://x/y.png"),
            ]),
            Message::assistant_tool_calls(vec![ToolCall::new("abcDEF123", "f", "{}")]),
            Message::tool("abcDEF123", "42"),
            Message::assistant_prefix("The answer"),
        ],
    )
    .temperature(0.5)
    .top_p(0.9)
    .max_tokens(64)
    .stream(true)
    .stop(["\n\n", "END"])
    .random_seed(7)
    .response_format(ResponseFormat::json_schema(
        "answer",
        json!({"type":"object"}),
    ))
    .tool(Tool::function(
        "f",
        "does f",
        json!({"type":"object","properties":{}}),
    ))
    .tool_choice(ToolChoice::function("f"))
    .presence_penalty(0.1)
    .frequency_penalty(0.2)
    .n(1)
    .prediction(Prediction::content("The answer is"))
    .parallel_tool_calls(false)
    .safe_prompt(true)
    .service_tier(ServiceTier::StandardOnly);

    let v = serde_json::to_value(&req).unwrap();
    assert_eq!(
        v,
        json!({
            "model": "mistral-large-latest",
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": [
                    {"type": "text", "text": "what is this?"},
                    {"type": "image_url", "image_url": "https://x/y.png"}
                ]},
                {"role": "assistant", "tool_calls": [
                    {"id": "abcDEF123", "type": "function",
                     "function": {"name": "f", "arguments": "{}"}}
                ]},
                {"role": "tool", "content": "42", "tool_call_id": "abcDEF123"},
                {"role": "assistant", "content": "The answer", "prefix": true}
            ],
            "temperature": 0.5,
            "top_p": 0.9,
            "max_tokens": 64,
            "stream": true,
            "stop": ["\n\n", "END"],
            "random_seed": 7,
            "response_format": {"type": "json_schema", "json_schema": {
                "name": "answer", "schema": {"type": "object"}, "strict": true}},
            "tools": [{"type": "function", "function": {
                "name": "f", "description": "does f",
                "parameters": {"type": "object", "properties": {}}}}],
            "tool_choice": {"type": "function", "function": {"name": "f"}},
            "presence_penalty": 0.1,
            "frequency_penalty": 0.2,
            "n": 1,
            "prediction": {"type": "content", "content": "The answer is"},
            "parallel_tool_calls": false,
            "safe_prompt": true,
            "service_tier": "standard_only"
        })
    );
    assert!(req.is_stream());
    assert_eq!(RequestSize::max_tokens(&req), Some(64));
    // Round trip.
    let back: ChatRequest = serde_json::from_value(v).unwrap();
    assert_eq!(back, req);
}

#[test]
fn prompt_chars_counts_text_input() {
    let req = ChatRequest::new(
        "m",
        vec![
            Message::system("abc"), // 3
            Message::user(vec![
                ContentChunk::text("héllo"),                // 5
                ContentChunk::image_url("https://ignored"), // 0
            ]),
            Message::assistant_tool_calls(vec![ToolCall::new("id", "fn", "{}")]), // 2+2+2
            Message::tool("id", "ok"),                                            // 2+2
        ],
    );
    assert_eq!(req.prompt_chars(), 3 + 5 + 6 + 4);
    assert_eq!(
        RequestSize::estimated_prompt_tokens(&req),
        18_u64.div_ceil(4)
    );
    let with_tool = req.tool(Tool::function("f", "d", json!({})));
    assert_eq!(with_tool.prompt_chars(), 18 + 1 + 1 + 2);
}

#[test]
fn tool_choice_forms() {
    for (mode, wire) in [
        (ToolChoiceMode::Auto, "\"auto\""),
        (ToolChoiceMode::None, "\"none\""),
        (ToolChoiceMode::Any, "\"any\""),
        (ToolChoiceMode::Required, "\"required\""),
    ] {
        let tc = ToolChoice::from(mode);
        assert_eq!(serde_json::to_string(&tc).unwrap(), wire);
        assert_eq!(serde_json::from_str::<ToolChoice>(wire).unwrap(), tc);
    }
    let named: ToolChoice =
        serde_json::from_str(r#"{"type":"function","function":{"name":"get_weather"}}"#).unwrap();
    assert_eq!(named, ToolChoice::function("get_weather"));
}

#[test]
fn response_format_forms() {
    assert_eq!(
        serde_json::to_value(ResponseFormat::Text).unwrap(),
        json!({"type":"text"})
    );
    assert_eq!(
        serde_json::to_value(ResponseFormat::JsonObject).unwrap(),
        json!({"type":"json_object"})
    );
    let rf: ResponseFormat = serde_json::from_value(json!({
        "type": "json_schema",
        "json_schema": {"name": "n", "schema_definition": {"type": "object"}, "description": "d"}
    }))
    .unwrap();
    let ResponseFormat::JsonSchema { json_schema } = rf else {
        panic!("expected json_schema");
    };
    assert_eq!(json_schema.name, "n");
    assert_eq!(json_schema.schema, json!({"type":"object"}));
    assert_eq!(json_schema.strict, None);
    assert_eq!(json_schema.description.as_deref(), Some("d"));
}

#[test]
fn content_chunks_decode_with_fallback() {
    let c: Content = serde_json::from_value(json!([
        {"type": "text", "text": "a"},
        {"type": "image_url", "image_url": {"url": "https://i", "detail": "high"}},
        {"type": "image_url", "image_url": "data:image/png;base64,AAAA"},
        {"type": "document_url", "document_url": "https://d.pdf", "document_name": "d"},
        {"type": "thinking", "thinking": [{"type": "text", "text": "hmm"}], "closed": true},
        {"type": "audio_of_the_future", "x": 1},
        {"type": "text"},
        {"no_type": true}
    ]))
    .unwrap();
    let Content::Chunks(chunks) = &c else {
        panic!("expected chunks")
    };
    assert_eq!(chunks.len(), 8);
    assert_eq!(chunks[0], ContentChunk::text("a"));
    assert_eq!(
        chunks[1],
        ContentChunk::ImageUrl {
            image_url: ImageUrl::Detailed {
                url: "https://i".into(),
                detail: Some("high".into())
            }
        }
    );
    let ContentChunk::ImageUrl { image_url } = &chunks[2] else {
        panic!("expected image")
    };
    assert_eq!(image_url.url(), "data:image/png;base64,AAAA");
    assert!(
        matches!(&chunks[3], ContentChunk::DocumentUrl { document_name: Some(n), .. } if n == "d")
    );
    assert!(
        matches!(&chunks[4], ContentChunk::Thinking { thinking, closed: Some(true) } if thinking.len() == 1)
    );
    assert_eq!(
        chunks[5],
        ContentChunk::Other(json!({"type": "audio_of_the_future", "x": 1}))
    );
    assert_eq!(chunks[6], ContentChunk::Other(json!({"type": "text"})));
    assert_eq!(chunks[7], ContentChunk::Other(json!({"no_type": true})));
    // Unknown chunks serialize back verbatim.
    assert_eq!(
        serde_json::to_value(&chunks[5]).unwrap(),
        json!({"type": "audio_of_the_future", "x": 1})
    );
    assert_eq!(c.as_text(), Some("a"));
    assert_eq!(c.text_chars(), 1 + 3);
}

#[test]
fn messages_round_trip_every_role() {
    let msgs = vec![
        Message::system("s"),
        Message::user("u"),
        Message::assistant("a"),
        Message::tool_named("abc123XYZ", "f", "r"),
    ];
    let v = serde_json::to_value(&msgs).unwrap();
    assert_eq!(
        v,
        json!([
            {"role":"system","content":"s"},
            {"role":"user","content":"u"},
            {"role":"assistant","content":"a"},
            {"role":"tool","content":"r","tool_call_id":"abc123XYZ","name":"f"}
        ])
    );
    let back: Vec<Message> = serde_json::from_value(v).unwrap();
    assert_eq!(back, msgs);
    assert_eq!(
        back.iter().map(Message::role).collect::<Vec<_>>(),
        [Role::System, Role::User, Role::Assistant, Role::Tool]
    );
}

#[test]
fn response_with_untyped_tool_calls_and_string_arguments() {
    // Captured shape: tool calls without `type`, `arguments` a JSON string, plus
    // unknown fields at every level.
    let body = r#"{
        "id": "cmpl-e5cc70bb28c444948073e77776eb30ef",
        "object": "chat.completion",
        "created": 1702256327,
        "model": "mistral-large-latest",
        "choices": [{
            "index": 0,
            "message": {
                "role": "assistant",
                "content": "",
                "tool_calls": [{
                    "id": "D681PevKs",
                    "function": {"name": "retrieve_payment_status",
                                 "arguments": "{\"transaction_id\": \"T1001\"}"}
                }],
                "prefix": false
            },
            "finish_reason": "tool_calls",
            "logprobs": null
        }],
        "usage": {"prompt_tokens": 118, "completion_tokens": 35, "total_tokens": 153},
        "some_new_field": {"x": 1}
    }"#;
    let resp: ChatResponse = serde_json::from_str(body).unwrap();
    assert_eq!(resp.model, "mistral-large-latest");
    assert_eq!(resp.created, Some(1_702_256_327));
    assert_eq!(resp.finish_reason(), Some(&FinishReason::ToolCalls));
    assert_eq!(resp.text(), Some(""));
    let calls = resp.tool_calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].id, "D681PevKs");
    assert_eq!(calls[0].kind, None);
    assert_eq!(calls[0].function.name, "retrieve_payment_status");
    let args: Value = calls[0].function.parse_arguments().unwrap();
    assert_eq!(args, json!({"transaction_id": "T1001"}));
    assert_eq!(resp.usage.as_ref().map(|u| u.total_tokens), Some(153));

    // The answer goes back into the conversation as an assistant message.
    let msg = Message::from(resp.choices[0].message.clone());
    assert_eq!(
        serde_json::to_value(&msg).unwrap(),
        json!({"role":"assistant","content":"","tool_calls":[{"id":"D681PevKs",
            "function":{"name":"retrieve_payment_status",
                        "arguments":"{\"transaction_id\": \"T1001\"}"}}]})
    );
}

#[test]
fn arguments_as_object_are_kept_as_json_text() {
    let call: ToolCall = serde_json::from_value(json!({
        "id": "abc",
        "type": "function",
        "function": {"name": "f", "arguments": {"a": 1}}
    }))
    .unwrap();
    assert_eq!(call.kind, Some(ToolType::Function));
    assert_eq!(call.function.arguments, r#"{"a":1}"#);
    let parsed: Value = call.function.parse_arguments().unwrap();
    assert_eq!(parsed, json!({"a": 1}));
}

#[test]
fn text_response_and_open_finish_reason() {
    let resp: ChatResponse = serde_json::from_value(json!({
        "id": "x", "object": "chat.completion", "created": 1, "model": "m",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "Hello!",
             "tool_calls": null}, "finish_reason": "stop"},
            {"index": 1, "message": {"role": "assistant", "content": "x"},
             "finish_reason": "brand_new_reason"}
        ],
        "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}
    }))
    .unwrap();
    assert_eq!(resp.text(), Some("Hello!"));
    assert_eq!(resp.finish_reason(), Some(&FinishReason::Stop));
    assert_eq!(
        resp.choices[1].finish_reason,
        Some(FinishReason::Other("brand_new_reason".into()))
    );
    assert!(resp.tool_calls().is_empty());
    for (s, fr) in [
        ("length", FinishReason::Length),
        ("model_length", FinishReason::ModelLength),
        ("error", FinishReason::Error),
    ] {
        assert_eq!(
            serde_json::from_value::<FinishReason>(json!(s)).unwrap(),
            fr
        );
        assert_eq!(fr.as_str(), s);
    }
    // Round trip of the whole response.
    let again: ChatResponse = serde_json::from_value(serde_json::to_value(&resp).unwrap()).unwrap();
    assert_eq!(again, resp);
}

#[test]
fn chunked_response_content_text() {
    let resp: ChatResponse = serde_json::from_value(json!({
        "id": "x", "model": "magistral-small-latest",
        "choices": [{"index": 0, "finish_reason": "stop", "message": {
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": [{"type": "text", "text": "let me think"}]},
                {"type": "text", "text": "Paris"},
                {"type": "text", "text": "."}
            ]}}]
    }))
    .unwrap();
    assert_eq!(resp.text(), Some("Paris"));
    assert_eq!(
        resp.choices[0]
            .message
            .content
            .as_ref()
            .unwrap()
            .joined_text(),
        "Paris."
    );
    assert_eq!(resp.usage, None);
    assert_eq!(resp.object, "");
}

#[test]
fn null_and_missing_response_fields_decode() {
    let resp: ChatResponse = serde_json::from_value(json!({
        "id": null, "model": "m", "created": null,
        "choices": [{"message": {"content": null}, "finish_reason": null}]
    }))
    .unwrap();
    assert_eq!(resp.id, "");
    assert_eq!(resp.created, None);
    assert_eq!(resp.choices[0].index, 0);
    assert_eq!(resp.text(), None);
    assert_eq!(resp.finish_reason(), None);
}

#[test]
fn service_tier_is_open() {
    assert_eq!(
        serde_json::to_string(&ServiceTier::Auto).unwrap(),
        r#""auto""#
    );
    assert_eq!(
        serde_json::from_str::<ServiceTier>(r#""priority""#).unwrap(),
        ServiceTier::Other("priority".into())
    );
    let req = ChatRequest::new("m", vec![]).service_tier("standard_only");
    assert_eq!(req.service_tier, Some(ServiceTier::StandardOnly));
}

#[test]
fn content_append_merges() {
    let mut c = Content::from("Hel");
    c.append(Content::from("lo"));
    assert_eq!(c, Content::from("Hello"));
    c.append(Content::Chunks(vec![ContentChunk::image_url("u")]));
    assert_eq!(
        c,
        Content::Chunks(vec![
            ContentChunk::text("Hello"),
            ContentChunk::image_url("u")
        ])
    );
    c.append(Content::from("!"));
    assert_eq!(c.joined_text(), "Hello!");
}
