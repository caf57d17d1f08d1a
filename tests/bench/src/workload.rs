//! The requests a run sends, and the ideal time to send them under given limits.

use std::time::Duration;

use mistral_core::models::{ChatRequest, Message};
use serde::{Deserialize, Serialize};

/// Completion tokens every benchmark request asks for. The emulator answers with
/// `min(max_tokens, 16)` completion tokens, so asking for 16 makes the client's token
/// estimate (`⌈prompt chars ÷ 4⌉ + max_tokens`) exact.
pub const MAX_TOKENS: u32 = 16;

/// A run of requests of one size, sent in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Phase {
    /// How many requests.
    pub count: usize,
    /// Characters of each request's one user message.
    pub prompt_chars: usize,
}

impl Phase {
    /// Tokens the emulator charges for one request of this phase
    /// (`⌈chars ÷ 4⌉ + max_tokens`).
    pub fn tokens_per_request(&self) -> u64 {
        (self.prompt_chars as u64).div_ceil(4).max(1) + u64::from(MAX_TOKENS)
    }
}

/// Request and token rates a run is held to (per second; `None`: no such limit).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Rates {
    /// Requests per second.
    pub requests: Option<f64>,
    /// Tokens per second.
    pub tokens: Option<f64>,
}

/// The requests of a run: phases sent one after the other, all for one model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Workload {
    /// The model every request names (the budget they share).
    pub model: String,
    /// The phases, in order.
    pub phases: Vec<Phase>,
}

impl Workload {
    /// `count` requests of `prompt_chars` characters.
    pub fn uniform(model: &str, count: usize, prompt_chars: usize) -> Workload {
        Workload {
            model: model.to_owned(),
            phases: vec![Phase {
                count,
                prompt_chars,
            }],
        }
    }

    /// Number of requests.
    pub fn len(&self) -> usize {
        self.phases.iter().map(|p| p.count).sum()
    }

    /// `true` when there is no request at all.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Tokens charged for the whole workload.
    pub fn tokens(&self) -> u64 {
        self.phases
            .iter()
            .map(|p| p.count as u64 * p.tokens_per_request())
            .sum()
    }

    /// The same workload with about `count` requests in total, phases kept in
    /// proportion (each at least 1 when it had any).
    pub fn scaled_to(&self, count: usize) -> Workload {
        let total = self.len().max(1);
        let phases = self
            .phases
            .iter()
            .map(|p| Phase {
                count: if p.count == 0 {
                    0
                } else {
                    ((p.count * count) as f64 / total as f64).round().max(1.0) as usize
                },
                prompt_chars: p.prompt_chars,
            })
            .collect();
        Workload {
            model: self.model.clone(),
            phases,
        }
    }

    /// Prompt size of request `index`.
    pub fn prompt_chars(&self, index: usize) -> usize {
        let mut left = index;
        for p in &self.phases {
            if left < p.count {
                return p.prompt_chars;
            }
            left -= p.count;
        }
        self.phases.last().map_or(16, |p| p.prompt_chars)
    }

    /// Request `index`: one user message of exactly [`Workload::prompt_chars`]
    /// characters, `max_tokens` [`MAX_TOKENS`].
    pub fn request(&self, index: usize) -> ChatRequest {
        let text = prompt(index, self.prompt_chars(index));
        ChatRequest::new(self.model.as_str(), vec![Message::user(text)]).max_tokens(MAX_TOKENS)
    }

    /// The shortest time the workload can take at `rates`: each phase at the rate of the
    /// limit that binds it (`max(count ÷ request rate, tokens ÷ token rate)`), summed
    /// over the phases. The server's initial burst is not counted (a client that paces
    /// does not spend it; one that bursts can beat this by about one window's worth).
    pub fn ideal(&self, rates: Rates) -> Duration {
        let secs: f64 = self
            .phases
            .iter()
            .map(|p| {
                let by_requests = rates.requests.map_or(0.0, |r| p.count as f64 / r);
                let by_tokens = rates.tokens.map_or(0.0, |r| {
                    (p.count as u64 * p.tokens_per_request()) as f64 / r
                });
                by_requests.max(by_tokens)
            })
            .sum();
        Duration::from_secs_f64(secs)
    }

    /// The ideal time of the first `done` requests (for a run cut short).
    pub fn ideal_of_first(&self, done: usize, rates: Rates) -> Duration {
        let mut left = done;
        let phases = self
            .phases
            .iter()
            .map(|p| {
                let count = p.count.min(left);
                left -= count;
                Phase { count, ..*p }
            })
            .collect();
        Workload {
            model: self.model.clone(),
            phases,
        }
        .ideal(rates)
    }
}

/// A prompt of exactly `chars` characters that names request `index`.
pub fn prompt(index: usize, chars: usize) -> String {
    let head = format!("Request {index}: summarise ");
    let filler = "the rate limits of a shared budget ";
    let mut text: String = head
        .chars()
        .chain(filler.chars().cycle())
        .take(chars)
        .collect();
    if text.is_empty() {
        text.push('?');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn two_phases() -> Workload {
        Workload {
            model: "m".into(),
            phases: vec![
                Phase {
                    count: 1500,
                    prompt_chars: 40,
                },
                Phase {
                    count: 500,
                    prompt_chars: 480,
                },
            ],
        }
    }

    #[test]
    fn ideal_takes_the_binding_limit_of_each_phase() {
        let w = two_phases();
        assert_eq!(w.phases[0].tokens_per_request(), 26);
        assert_eq!(w.phases[1].tokens_per_request(), 136);
        let rates = Rates {
            requests: Some(100.0),
            tokens: Some(10_000.0),
        };
        // 1500 ÷ 100 = 15 s by requests; 500 × 136 ÷ 10,000 = 6.8 s by tokens.
        let ideal = w.ideal(rates).as_secs_f64();
        assert!((ideal - 21.8).abs() < 1e-9, "{ideal}");
        let first = w.ideal_of_first(1600, rates).as_secs_f64();
        assert!((first - (15.0 + 100.0 * 136.0 / 10_000.0)).abs() < 1e-9);
    }

    #[test]
    fn scaling_keeps_proportions() {
        let w = two_phases().scaled_to(400);
        assert_eq!(w.len(), 400);
        assert_eq!(w.phases[0].count, 300);
        assert_eq!(w.prompt_chars(299), 40);
        assert_eq!(w.prompt_chars(300), 480);
    }

    #[test]
    fn prompts_have_the_exact_size() {
        for chars in [1, 5, 40, 480] {
            assert_eq!(prompt(1234, chars).chars().count(), chars);
        }
        let r = two_phases().request(1999);
        assert_eq!(r.prompt_chars(), 480);
    }
}
