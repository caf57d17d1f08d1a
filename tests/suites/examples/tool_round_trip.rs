//! A tool round trip: the model calls `get_weather`, the program runs it and sends the
//! result back, the model answers in text. Against an emulator started in this process
//! (or the server of `MISTRAL_BASE_URL` with `MISTRAL_API_KEY` when it is set):
//! `cargo run -p mistral-suites --example tool_round_trip`.

use mistral_blocking::{ChatRequest, Client, Message, Tool};
use serde::Deserialize;
use serde_json::json;

/// The arguments the `get_weather` tool declares.
#[derive(Debug, Deserialize)]
pub struct WeatherArgs {
    pub city: String,
    pub days: u32,
}

/// What one round trip saw: the tool's arguments, its call id, the final text.
#[derive(Debug)]
pub struct RoundTrip {
    pub args: WeatherArgs,
    pub call_id: String,
    pub answer: String,
}

/// Asks, runs the tool the model calls, sends its result back, returns the answer.
pub fn run(client: &Client) -> Result<RoundTrip, Box<dyn std::error::Error>> {
    let weather = Tool::function(
        "get_weather",
        "The forecast for a city",
        json!({
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "days": {"type": "integer", "minimum": 1, "maximum": 7},
            },
            "required": ["city", "days"],
        }),
    );
    let mut messages = vec![Message::user("What is the weather in Paris this week?")];
    let request = ChatRequest::new("mistral-small-latest", messages.clone()).tool(weather.clone());
    let reply = client.chat(request)?;
    let call = reply
        .tool_calls()
        .first()
        .cloned()
        .ok_or("the model answered without calling the tool")?;
    let args: WeatherArgs = call.function.parse_arguments()?;
    // Run the tool, then hand its result back with the call's id.
    let result = json!({"city": args.city, "forecast": vec!["sunny"; args.days as usize]});
    messages.push(Message::assistant_tool_calls(vec![call.clone()]));
    messages.push(Message::tool(call.id.clone(), result.to_string()));
    let reply = client.chat(ChatRequest::new("mistral-small-latest", messages).tool(weather))?;
    let answer = reply
        .text()
        .ok_or("no text after the tool result")?
        .to_owned();
    Ok(RoundTrip {
        args,
        call_id: call.id,
        answer,
    })
}

#[allow(dead_code)]
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let emulator = std::env::var_os("MISTRAL_BASE_URL")
        .is_none()
        .then(|| mistral_emulator::Emulator::start(mistral_emulator::Config::default()));
    let client = match &emulator {
        Some(emu) => Client::builder()
            .api_key(emu.key())
            .base_url(emu.url())
            .build()?,
        None => Client::from_env()?,
    };
    let trip = run(&client)?;
    println!("tool call {} with {:?}", trip.call_id, trip.args);
    println!("answer: {}", trip.answer);
    Ok(())
}
