//! The Redis store's script: [`BudgetState::reserve`] and [`BudgetState::apply`] in Lua,
//! and the pure halves of a call to it (arguments in, reply out). The connection and the
//! `EVALSHA` live in the driver crate.
//!
//! One script, one key per budget (a hash of [`BudgetState::FIELDS`]), one round trip
//! per operation. The script reads Redis `TIME`, so every host of a fleet shares one
//! clock; tests pass a fixed time instead (`now_override`). Every number is an integer of
//! at most [`super::budget::MAX_EXACT`], so a Lua double holds it exactly and the script
//! computes what the Rust code computes, field for field (see the `budget` module docs).
//!
//! ```
//! use mistral_core::limiter::budget::{BudgetState, Seed};
//! use mistral_core::limiter::lua;
//!
//! use mistral_core::limiter::budget::Reserve;
//!
//! let args = lua::reserve_args(Some(1_000), 86_400, Seed::default(), &Reserve::new(50));
//! assert_eq!(args[0], "reserve");
//! // The script answers [kind, value, the 47 fields, the ticket's lane, shift, slot]:
//! let mut reply = vec![0, 0];
//! reply.extend(BudgetState::new(1_000, None).to_fields().map(|v| v as i64));
//! reply.extend([1, 0, 1_000]);
//! let reply = lua::decode_reply(&reply).unwrap();
//! assert_eq!(reply.state.seen_us, 1_000);
//! ```

use super::budget::{Block, BudgetState, Decision, MAX_EXACT, ReportOp, Reserve, Seed};
use crate::action::Ticket;

/// The script's text (`budget.lua`).
pub const SCRIPT: &str = include_str!("budget.lua");

/// The `op` argument of a reservation.
pub const OP_RESERVE: &str = "reserve";
/// The `op` argument of a report.
pub const OP_REPORT: &str = "report";

fn num(v: u64) -> String {
    v.min(MAX_EXACT).to_string()
}

fn common(op: &str, now_override: Option<u64>, ttl_secs: u64, seed: Seed) -> Vec<String> {
    vec![
        op.to_owned(),
        now_override.map(num).unwrap_or_default(),
        num(ttl_secs),
        num(u64::from(seed.configured)),
        num(seed.req_base_ns),
        num(seed.tok_base_ns),
    ]
}

/// `ARGV` of a reservation: tokens, retry (0/1), within µs, confirm (0/1), the confirmed
/// epoch, the lane, the lane's reserved share (ppm), the confirmed booking's lane and
/// shift. `seed` makes the budget when the hash does not exist yet; `ttl_secs` is the
/// hash's expiry (0: none); `now_override` replaces Redis `TIME` (tests).
pub fn reserve_args(
    now_override: Option<u64>,
    ttl_secs: u64,
    seed: Seed,
    ask: &Reserve,
) -> Vec<String> {
    let mut args = common(OP_RESERVE, now_override, ttl_secs, seed);
    args.extend(
        [
            ask.tokens,
            u64::from(ask.retry),
            ask.within_us,
            u64::from(ask.confirm.is_some()),
            ask.confirm.map_or(0, |t| t.epoch),
            ask.lane,
            ask.reserve_ppm,
            ask.confirm.map_or(0, |t| t.lane),
            ask.confirm.map_or(0, |t| t.shift),
            ask.confirm.map_or(0, |t| t.slot),
        ]
        .map(num),
    );
    args
}

/// `ARGV` of a report (see [`reserve_args`] for the others).
pub fn report_args(
    now_override: Option<u64>,
    ttl_secs: u64,
    seed: Seed,
    op: &ReportOp,
) -> Vec<String> {
    let mut args = common(OP_REPORT, now_override, ttl_secs, seed);
    let (wait_us, window_us) = match op.signal {
        super::budget::SignalOp::WindowSpent { wait_us, window_us } => (wait_us, window_us),
        super::budget::SignalOp::RateLimited { wait_us } => (wait_us, 0),
        _ => (0, 0),
    };
    args.extend(
        [
            op.req_limit,
            op.req_window_secs,
            op.tok_limit,
            op.tok_window_secs,
            u64::from(op.used_tokens.is_some()),
            op.estimated_tokens,
            op.used_tokens.unwrap_or(0),
            op.signal.code(),
            wait_us,
            window_us,
            u64::from(op.req_remaining.is_some()),
            op.req_remaining.unwrap_or(0),
            u64::from(op.ticket.is_some()),
            op.ticket.map_or(0, |t| t.epoch),
            op.ticket.map_or(0, |t| t.seq),
            u64::from(op.tok_remaining.is_some()),
            op.tok_remaining.unwrap_or(0),
        ]
        .map(num),
    );
    args
}

/// What the script answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScriptReply {
    /// The reservation's decision (`None` for a report).
    pub decision: Option<Decision>,
    /// The budget's state after the operation (`seen_us` is the time it used).
    pub state: BudgetState,
}

/// Why a reply is not one the script gives.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unexpected reply from the limiter script: {0}")]
pub struct ReplyError(&'static str);

/// Decodes the script's reply: `[kind, value, the 47 fields, the ticket's lane, shift
/// and slot]`.
pub fn decode_reply(reply: &[i64]) -> Result<ScriptReply, ReplyError> {
    if reply.len() != 5 + BudgetState::FIELDS.len() {
        return Err(ReplyError("wrong length"));
    }
    let n = BudgetState::FIELDS.len();
    let u = |v: i64| u64::try_from(v).map_err(|_| ReplyError("a negative number"));
    let mut fields = [0u64; BudgetState::FIELDS.len()];
    for (f, &v) in fields.iter_mut().zip(&reply[2..2 + n]) {
        *f = u(v)?;
    }
    let state = BudgetState::from_fields(fields).ok_or(ReplyError("a field out of range"))?;
    let value = u(reply[1])?;
    let decision = match reply[0] {
        0 => Some(Decision::Go {
            wait_us: value,
            ticket: Ticket {
                epoch: state.epoch,
                seq: state.seq,
                lane: u(reply[2 + n])?.min(BudgetState::LAST_LANE),
                shift: u(reply[3 + n])?,
                slot: u(reply[4 + n])?,
            },
        }),
        1 => Some(Decision::Recheck(value)),
        2 => Some(Decision::Closed(
            Block::from_code(value).ok_or(ReplyError("an unknown block"))?,
        )),
        3 => None,
        4 => Some(Decision::Late(value)),
        _ => return Err(ReplyError("an unknown kind")),
    };
    Ok(ScriptReply { decision, state })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limiter::budget::SignalOp;

    #[test]
    fn the_script_lists_the_fields_in_the_rust_order() {
        let start = SCRIPT.find("local FIELDS = {").unwrap();
        let end = start + SCRIPT[start..].find('}').unwrap();
        let listed: Vec<&str> = SCRIPT[start..end].split('\'').skip(1).step_by(2).collect();
        assert_eq!(listed, BudgetState::FIELDS);
    }

    #[test]
    fn the_script_names_the_ops_and_the_constants_of_the_rust_code() {
        assert!(SCRIPT.contains("ARGV[1] == 'reserve'"));
        assert!(SCRIPT.contains("ARGV[1] == 'report'"));
        assert!(SCRIPT.contains(&format!("local MAX = {MAX_EXACT}")));
        assert!(SCRIPT.contains(&format!("local MARGIN_PPM = {}", BudgetState::MARGIN_PPM)));
        assert_eq!(BudgetState::CLOCK_STEP_MICROS, 1_000_000);
        assert!(SCRIPT.contains("local CLOCK_STEP_MICROS = MICROS"));
        assert!(SCRIPT.contains(&format!(
            "local PROBE_RECHECK_MICROS = {}",
            BudgetState::PROBE_RECHECK_MICROS
        )));
        assert_eq!(BudgetState::BLOCK_MICROS, 600 * 1_000_000);
        assert_eq!(BudgetState::PROBE_TIMEOUT_MICROS, 2 * 1_000_000);
    }

    #[test]
    fn arguments_are_clamped_decimal_integers_in_the_documented_order() {
        let seed = Seed {
            configured: true,
            req_base_ns: 20_000_000,
            tok_base_ns: u64::MAX,
        };
        let ask = Reserve {
            tokens: u64::MAX,
            retry: true,
            within_us: 250,
            confirm: Some(Ticket {
                epoch: 3,
                seq: 8,
                lane: 2,
                shift: 1_500,
                slot: 42,
            }),
            lane: 9,
            reserve_ppm: 100_000,
        };
        let r = reserve_args(None, 60, seed, &ask);
        assert_eq!(
            r,
            [
                "reserve",
                "",
                "60",
                "1",
                "20000000",
                "9007199254740991",
                "9007199254740991",
                "1",
                "250",
                "1",
                "3",
                "9",
                "100000",
                "2",
                "1500",
                "42"
            ]
        );
        let op = ReportOp {
            req_limit: 60,
            req_window_secs: 60,
            tok_limit: 0,
            tok_window_secs: 0,
            estimated_tokens: 10,
            used_tokens: Some(7),
            signal: SignalOp::WindowSpent {
                wait_us: 300,
                window_us: 1_000_000,
            },
            req_remaining: Some(4),
            tok_remaining: Some(4_000),
            ticket: Some(Ticket {
                epoch: 2,
                seq: 11,
                ..Ticket::default()
            }),
        };
        let r = report_args(Some(5), 0, Seed::default(), &op);
        assert_eq!(
            r,
            [
                "report", "5", "0", "0", "0", "0", "60", "60", "0", "0", "1", "10", "7", "2",
                "300", "1000000", "1", "4", "1", "2", "11", "1", "4000"
            ]
        );
        let none = ReportOp {
            used_tokens: None,
            signal: SignalOp::RateLimited { wait_us: 9 },
            req_remaining: None,
            tok_remaining: None,
            ticket: None,
            ..op
        };
        let r = report_args(Some(5), 0, Seed::default(), &none);
        assert_eq!(
            &r[10..],
            [
                "0", "10", "0", "3", "9", "0", "0", "0", "0", "0", "0", "0", "0"
            ]
        );
    }

    #[test]
    fn replies_decode_and_bad_ones_are_errors() {
        let state = BudgetState::new(7, None);
        let reply = |kind: i64, value: i64| {
            let mut r = vec![kind, value];
            r.extend(state.to_fields().map(|v| v as i64));
            r.extend([2, 700, 9]);
            r
        };
        let d = |r: Vec<i64>| decode_reply(&r).map(|r| r.decision);
        let ticket = Ticket {
            epoch: state.epoch,
            seq: state.seq,
            lane: 2,
            shift: 700,
            slot: 9,
        };
        assert_eq!(
            d(reply(0, 5)),
            Ok(Some(Decision::Go { wait_us: 5, ticket }))
        );
        assert_eq!(d(reply(4, 9)), Ok(Some(Decision::Late(9))));
        assert_eq!(d(reply(1, 20)), Ok(Some(Decision::Recheck(20))));
        assert_eq!(
            d(reply(2, 1)),
            Ok(Some(Decision::Closed(Block::NoAllowance)))
        );
        assert_eq!(d(reply(3, 0)), Ok(None));
        assert_eq!(decode_reply(&reply(3, 0)).unwrap().state, state);
        assert!(d(reply(2, 9)).is_err());
        assert!(d(reply(5, 0)).is_err());
        assert!(d(reply(0, -1)).is_err());
        assert!(d(vec![0, 0, 1]).is_err());
        let mut bad_source = reply(0, 0);
        bad_source[2 + 6] = 7;
        assert!(d(bad_source).is_err());
    }
}
