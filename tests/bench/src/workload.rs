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
    /// Requests of every size instead ([`Varied`]): prompts of 200 to 3,200 characters,
    /// `max_tokens` unset on every other one, answers the client cannot know in advance.
    #[serde(default)]
    pub varied: bool,
}

/// What the emulator answers a varied request with: completions of about
/// [`Varied::COMPLETION`] tokens, varied by [`Varied::SPREAD`] by a hash of the prompt.
#[derive(Debug)]
pub struct Varied;

impl Varied {
    /// The emulator's `completion_tokens` for a varied workload.
    pub const COMPLETION: u32 = 110;
    /// The emulator's `completion_spread` for a varied workload (40 to 154 tokens).
    pub const SPREAD: f64 = 0.4;
    /// `max_tokens` of the varied requests that set it.
    pub const MAX_TOKENS: u32 = 300;
}

impl Phase {
    /// Tokens the emulator charges for one request of this phase
    /// (`⌈chars ÷ 4⌉ + max_tokens`); for a varied phase, its mean.
    pub fn tokens_per_request(&self) -> u64 {
        if self.varied {
            return 1700 / 4 + u64::from(Varied::COMPLETION);
        }
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
                varied: false,
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
        (0..self.len()).map(|i| self.tokens_of(i)).sum()
    }

    /// The phase of request `index`.
    fn phase_of(&self, index: usize) -> Option<&Phase> {
        let mut left = index;
        for p in &self.phases {
            if left < p.count {
                return Some(p);
            }
            left -= p.count;
        }
        self.phases.last()
    }

    /// Tokens the emulator charges for request `index` (its prompt's `⌈chars ÷ 4⌉` and
    /// its completion).
    pub fn tokens_of(&self, index: usize) -> u64 {
        let Some(phase) = self.phase_of(index) else {
            return 1;
        };
        if !phase.varied {
            return phase.tokens_per_request();
        }
        let chars = self.prompt_chars(index);
        let text = prompt(index, chars);
        let natural =
            mistral_emulator::natural_completion(&text, Varied::COMPLETION, Varied::SPREAD);
        let max = self.max_tokens_of(index).map_or(u64::MAX, u64::from);
        (chars as u64).div_ceil(4).max(1) + natural.min(max)
    }

    /// `max_tokens` of request `index`.
    pub fn max_tokens_of(&self, index: usize) -> Option<u32> {
        match self.phase_of(index) {
            Some(p) if p.varied => (index % 2 == 1).then_some(Varied::MAX_TOKENS),
            _ => Some(MAX_TOKENS),
        }
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
                ..*p
            })
            .collect();
        Workload {
            model: self.model.clone(),
            phases,
        }
    }

    /// Prompt size of request `index` (of a varied phase: 200 to 3,200 characters, by a
    /// hash of the index).
    pub fn prompt_chars(&self, index: usize) -> usize {
        match self.phase_of(index) {
            Some(p) if p.varied => {
                let h = (index as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40;
                200 + (h % 3_001) as usize
            }
            Some(p) => p.prompt_chars,
            None => 16,
        }
    }

    /// Request `index`: one user message of exactly [`Workload::prompt_chars`]
    /// characters, `max_tokens` [`Workload::max_tokens_of`].
    pub fn request(&self, index: usize) -> ChatRequest {
        let text = prompt(index, self.prompt_chars(index));
        let request = ChatRequest::new(self.model.as_str(), vec![Message::user(text)]);
        match self.max_tokens_of(index) {
            Some(max) => request.max_tokens(max),
            None => request,
        }
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
                    varied: false,
                },
                Phase {
                    count: 500,
                    prompt_chars: 480,
                    varied: false,
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
