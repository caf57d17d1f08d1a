//! Responses: a reply under construction, and the canned ones (the 401 of each era, the
//! error bodies, the replies of replacing faults, the model list).

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderName, HeaderValue};
use http::{Response, StatusCode};
use serde_json::{Value, json};

use super::body::Body;
use super::shared::DRAW_ID;
use crate::config::{Config, Era, Fault};
use crate::rng::hex32;

/// A response under construction.
pub(super) struct Reply {
    pub(super) status: u16,
    pub(super) headers: Vec<(String, String)>,
    pub(super) content_type: &'static str,
    pub(super) body: Body,
}

impl Reply {
    pub(super) fn json(status: u16, value: &Value) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            content_type: "application/json",
            body: Body::full(value.to_string()),
        }
    }

    pub(super) fn text(status: u16, content_type: &'static str, text: &'static str) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            content_type,
            body: Body::full(Bytes::from_static(text.as_bytes())),
        }
    }

    pub(super) fn header(mut self, name: &str, value: String) -> Reply {
        self.headers.push((name.to_string(), value));
        self
    }

    pub(super) fn into_response(self, correlation_id: &str) -> Response<Body> {
        let mut response = Response::new(self.body);
        *response.status_mut() =
            StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static(self.content_type));
        if !correlation_id.is_empty()
            && let Ok(v) = HeaderValue::from_str(correlation_id)
        {
            headers.insert(HeaderName::from_static("mistral-correlation-id"), v);
        }
        for (name, value) in self.headers {
            if let (Ok(n), Ok(v)) = (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_str(&value),
            ) {
                headers.append(n, v);
            }
        }
        response
    }
}

pub(super) fn unauthorized(era: Era, seed: u64, seq: u64) -> Reply {
    match era {
        Era::Early2025 | Era::Mid2025 => Reply::json(
            401,
            &json!({"message": "Unauthorized", "request_id": hex32(seed ^ DRAW_ID, seq)}),
        )
        .header("www-authenticate", "Key".into()),
        Era::Late2025 | Era::Y2026 => Reply::json(401, &json!({"detail": "Unauthorized"})),
    }
}

pub(super) fn error_body(message: &str, kind: &str, code: Option<&str>) -> Value {
    json!({"object": "error", "message": message, "type": kind, "param": null, "code": code})
}

pub(super) fn capacity_body(legacy: bool) -> Value {
    if legacy {
        error_body(
            "Service tier capacity exceeded for this model.",
            "invalid_request_error",
            None,
        )
    } else {
        error_body(
            "Service tier capacity exceeded for this model.",
            "service_tier_capacity_exceeded",
            Some("3505"),
        )
    }
}

pub(super) fn code_1300() -> Value {
    json!({"object": "error", "message": "Rate limit exceeded", "type": "rate_limited",
           "param": null, "code": "1300", "raw_status_code": 429})
}

/// A proxy's OpenAI-style 429 ([`crate::RateLimitBody::Proxy`]), with the wait in its
/// body when known.
pub(super) fn proxy_429(retry_after_secs: Option<u64>) -> Value {
    let mut error = json!({"message": "Rate limit exceeded", "type": "rate_limit_error",
                           "param": null, "code": "429"});
    if let Some(secs) = retry_after_secs {
        error["retry_after"] = json!(secs);
    }
    json!({ "error": error })
}

/// The event a stream's error fault ends it with ([`Fault::StreamError`],
/// [`Fault::StreamErrorEvent`]); `None` for the other faults.
pub(super) fn stream_error_event(fault: Fault) -> Option<Bytes> {
    let event = match fault {
        Fault::StreamError(_) => format!(
            "data: {}\n\n",
            json!({"error": {"message": "Rate limit exceeded", "type": "rate_limit_error",
                             "code": 429, "retry_after": 1}})
        ),
        Fault::StreamErrorEvent(_) => format!("event: error\ndata: {}\n\n", code_1300()),
        _ => return None,
    };
    Some(Bytes::from(event))
}

/// The reply of a replacing fault; `None` for the kinds that answer nothing (`Reset`,
/// `Close`, `Hang`: the routes kill or hold the connection). The modifying kinds, which
/// never replace a reply, get a 500.
pub(super) fn fault_reply(config: &Config, fault: Fault, seq: u64) -> Option<Reply> {
    let reply = match fault {
        Fault::Reset | Fault::Close | Fault::Hang => return None,
        Fault::Http500 => Reply::json(
            500,
            &error_body(
                "Service unavailable.",
                "internal_server_error",
                Some("1000"),
            ),
        ),
        Fault::Http502Html => Reply::text(
            502,
            "text/html",
            "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>cloudflare</center>\r\n</body>\r\n</html>\r\n",
        ),
        Fault::Http503 => Reply::text(
            503,
            "text/plain",
            "upstream connect error or disconnect/reset before headers. reset reason: connection failure",
        ),
        Fault::Http504 => Reply::text(
            504,
            "text/html",
            "<html><body><h1>504 Gateway Time-out</h1>\nThe server didn't respond in time.\n</body></html>\n",
        ),
        Fault::MalformedJson => Reply::text(
            200,
            "application/json",
            "{\"id\":\"0123456789abcdef\",\"object\":\"chat.completion\",\"created\":1700000000,\"model\":\"mistral-small-latest\",\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":\"the wi",
        ),
        Fault::Status401 => unauthorized(config.era, config.seed, seq),
        Fault::Status400 => Reply::json(
            400,
            &error_body(
                "Expected last role User or Tool (or Assistant with prefix True) for serving but got assistant",
                "invalid_request_message_order",
                Some("3230"),
            ),
        ),
        Fault::Status403 => Reply::json(
            403,
            &json!({"object": "error", "message": "Model not available for this account.",
                    "type": "forbidden", "param": null, "code": "1913", "raw_status_code": 403}),
        ),
        Fault::Status404 => Reply::json(
            404,
            &json!({"message": "no Route matched with those values"}),
        ),
        Fault::Status422 => Reply::json(
            422,
            &json!({"object": "error",
                    "message": {"detail": [{"type": "extra_forbidden", "loc": ["body", "unexpected"],
                                            "msg": "Extra inputs are not permitted", "input": true}]},
                    "type": "invalid_request_error", "param": null, "code": null,
                    "raw_status_code": 422}),
        ),
        Fault::Ambiguous429 => {
            Reply::json(429, &json!({"message": "Requests rate limit exceeded"}))
        }
        Fault::Bare1300 => Reply::json(
            429,
            &json!({"object": "error", "message": "Rate limit exceeded", "type": "rate_limited",
                    "param": null, "code": "1300", "raw_status_code": 429}),
        ),
        Fault::Capacity => Reply::json(429, &capacity_body(config.capacity_legacy_body)),
        Fault::Proxy429 => Reply::json(429, &proxy_429(Some(1))),
        Fault::SpendingCap => Reply::json(
            429,
            &json!({"error": {"message": "Budget has been exceeded! Current cost: 10.02, Max budget: 10.0",
                              "type": "budget_exceeded", "param": null, "code": "429"}}),
        ),
        Fault::DelayMs(_)
        | Fault::StallAfter(_)
        | Fault::CutAfter(_)
        | Fault::StreamError(_)
        | Fault::StreamErrorEvent(_) => Reply::json(
            500,
            &error_body(
                "Service unavailable.",
                "internal_server_error",
                Some("1000"),
            ),
        ),
    };
    Some(reply)
}

pub(super) fn models_list(config: &Config) -> Value {
    let mut ids: Vec<String> = config.models.keys().cloned().collect();
    if ids.is_empty() {
        ids = [
            "mistral-small-latest",
            "mistral-medium-latest",
            "mistral-large-latest",
            "codestral-latest",
            "mistral-embed",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
    }
    let data: Vec<Value> = ids
        .iter()
        .map(|id| {
            json!({
                "id": id, "object": "model", "created": 1_700_000_000u64, "owned_by": "mistralai",
                "capabilities": {"completion_chat": true, "completion_fim": id.contains("codestral"),
                                 "function_calling": true, "fine_tuning": false, "vision": false,
                                 "classification": false},
                "name": id, "description": "Emulated model", "max_context_length": 32768,
                "aliases": [], "deprecation": null, "default_model_temperature": 0.3, "type": "base",
            })
        })
        .collect();
    json!({"object": "list", "data": data})
}
