//! The budget's decisions, one by one, on its pure state and on the in-process limiter:
//! admission at the moment of sending, the server's word, estimates that learn, priority
//! lanes within and across processes, deadlines, the clock, the merge of two versions.

#![allow(clippy::disallowed_methods)]

use std::sync::{Arc, Mutex};
use std::task::{Wake, Waker};
use std::time::{Duration, Instant};

use mistral_core::limiter::{Admit, Limiter, LimiterConfig, Limits, Place};
use mistral_core::{
    Ask, Bucket, Grant, Priority, Quota, RateLimits, Report, Sizing, Ticket, TokenUsage, Verdict,
    Window,
};
use mistral_limiter::{
    AdmitAnswer, AdmitOp, BudgetState, Candidate, Decision, LocalLimiter, Refill, ReportOp, Signal,
    Source,
};

const S: u64 = 1_000_000;
const MS: u64 = 1_000;

fn candidate(lane: u64, tokens: u64) -> Candidate {
    Candidate {
        lane,
        size: Sizing::default(),
        tokens,
        within_us: u64::MAX,
    }
}

fn op(proc_id: u64, candidates: Vec<Candidate>) -> AdmitOp {
    let mut waiting = [0; 3];
    for c in &candidates {
        waiting[c.lane as usize] += 1;
    }
    AdmitOp {
        proc_id,
        waiting,
        candidates,
        horizon_us: 2 * MS,
        late_us: 0,
        ask_gap_us: S,
        reserve_ppm: [0, 100_000, 100_000],
    }
}

fn admitted(answer: &AdmitAnswer) -> usize {
    answer
        .decisions
        .iter()
        .filter(|d| matches!(d, Decision::Go { .. }))
        .count()
}

fn ticket_of(d: Decision) -> Ticket {
    match d {
        Decision::Go { ticket, .. } => ticket,
        other => panic!("expected Go, got {other:?}"),
    }
}

/// What a 2026 response says: a request and a token bucket per minute, and what is left.
fn announced(req: (u64, u64), tok: (u64, u64), ticket: Option<Ticket>, used: u64) -> ReportOp {
    ReportOp {
        signal: Signal::Success,
        req_limit: req.0,
        req_window_secs: 60,
        req_remaining: Some(req.1),
        tok_limit: tok.0,
        tok_window_secs: 60,
        tok_remaining: Some(tok.1),
        estimated_tokens: ticket.map_or(used, |t| t.tokens),
        used_tokens: Some(used),
        ticket,
        ..ReportOp::default()
    }
}

#[test]
fn the_first_caller_probes_and_the_announced_remaining_goes_at_once() {
    let mut b = BudgetState::new(0, None);
    let first = b.admit(0, &op(1, (0..16).map(|_| candidate(1, 10)).collect()));
    // Nothing known: one probe, the others wait for its answer.
    assert_eq!(admitted(&first), 1, "{first:?}");
    let probe = ticket_of(first.decisions[0]);
    // Its answer: 60 requests a minute, 59 left; 50,000 tokens, 49,990 left.
    b.report(
        300 * MS,
        &announced((60, 59), (50_000, 49_990), Some(probe), 10),
    );
    assert_eq!(b.source, Source::Headers);
    let mut burst = 0;
    for _ in 0..4 {
        burst += admitted(&b.admit(
            300 * MS,
            &op(1, (0..16).map(|_| candidate(1, 10)).collect()),
        ));
    }
    assert_eq!(burst, 59, "the server's own burst");
    // Then paced: the next goes about a second later (60 a minute), not at once.
    let rest = b.admit(300 * MS, &op(1, vec![candidate(1, 10)]));
    assert_eq!(admitted(&rest), 0);
    assert!(rest.next_in_us > 900 * MS, "{rest:?}");
}

#[test]
fn remaining_counts_what_was_admitted_after_the_answer_s_request() {
    let mut b = BudgetState::new(0, None);
    let probe = ticket_of(b.admit(0, &op(1, vec![candidate(1, 1)])).decisions[0]);
    b.report(
        10 * MS,
        &announced((60, 59), (1_000_000, 999_000), Some(probe), 1),
    );
    // 20 go at once; the answer of the first of them says 58 remain, which the other 19
    // (still out, maybe not counted yet) spend too: 39 more, not 58.
    let twenty = b.admit(10 * MS, &op(1, (0..20).map(|_| candidate(1, 1)).collect()));
    assert_eq!(admitted(&twenty), 20);
    let first = ticket_of(twenty.decisions[0]);
    b.report(
        20 * MS,
        &announced((60, 58), (1_000_000, 998_000), Some(first), 1),
    );
    let mut more = 0;
    for _ in 0..10 {
        more += admitted(&b.admit(20 * MS, &op(1, (0..16).map(|_| candidate(1, 1)).collect())));
    }
    assert!((38..=40).contains(&more), "{more}");
}

#[test]
fn tokens_an_answer_did_not_use_go_to_the_next_caller_at_once() {
    // A token limit only: 6,000 a minute (100 a second), a full cell at the start.
    let limits = Limits {
        requests: None,
        tokens: Some((6_000, Duration::from_secs(60))),
    };
    let mut b = BudgetState::new(0, Some(limits));
    // Configured limits are paced, never burst: one of 3,000 tokens goes, the next waits
    // about 30 s for its 3,000.
    let big = Candidate {
        size: Sizing {
            prompt_chars: 3_000,
            max_tokens: Some(2_000),
        },
        ..candidate(1, 0)
    };
    let first = b.admit(0, &op(1, vec![big]));
    let ticket = ticket_of(first.decisions[0]);
    assert_eq!(
        ticket.tokens,
        1_000 + 2_000,
        "3 chars a token, and max_tokens"
    );
    let waiting = b.admit(0, &op(1, vec![big]));
    assert_eq!(admitted(&waiting), 0);
    assert!(waiting.next_in_us > 25 * S, "{waiting:?}");
    // Its answer used 400 tokens: the 2,600 it did not use are given back now.
    let used = ReportOp {
        signal: Signal::Success,
        estimated_tokens: ticket.tokens,
        used_tokens: Some(400),
        prompt_tokens: Some(350),
        completion_tokens: Some(50),
        size: big.size,
        ticket: Some(ticket),
        ..ReportOp::default()
    };
    b.report(S, &used);
    let sooner = b.admit(S, &op(1, vec![big]));
    assert!(
        sooner.next_in_us + S < waiting.next_in_us / 2,
        "{} then {}",
        waiting.next_in_us,
        sooner.next_in_us
    );
}

#[test]
fn estimates_learn_from_usage_and_max_tokens_bounds_them() {
    let mut b = BudgetState::new(0, Some(Limits::requests(1_000, Duration::from_secs(1))));
    let unset = Candidate {
        size: Sizing {
            prompt_chars: 4_000,
            max_tokens: None,
        },
        ..candidate(1, 0)
    };
    // Cautious until seen: 3 characters a token, 256 for the completion.
    assert_eq!(b.estimate(&unset), 1_334 + 256);
    for _ in 0..20 {
        b.report(
            S,
            &ReportOp {
                signal: Signal::Success,
                used_tokens: Some(1_000 + 100),
                prompt_tokens: Some(1_000),
                completion_tokens: Some(100),
                size: unset.size,
                ..ReportOp::default()
            },
        );
    }
    // Learned: 4 characters a token (a tenth fewer counted), and completions of 100.
    let learned = b.estimate(&unset);
    assert!((1_110..=1_250).contains(&learned), "{learned}");
    // With max_tokens, never more than it allows.
    let bounded = Candidate {
        size: Sizing {
            prompt_chars: 4_000,
            max_tokens: Some(20),
        },
        ..candidate(1, 0)
    };
    assert!(
        b.estimate(&bounded) <= 1_112 + 20,
        "{}",
        b.estimate(&bounded)
    );
    assert!(b.estimate(&bounded) >= 1_112, "{}", b.estimate(&bounded));
}

#[test]
fn a_refusal_pauses_everyone_once_and_older_refusals_change_nothing() {
    let mut b = BudgetState::new(0, None);
    let probe = ticket_of(b.admit(0, &op(1, vec![candidate(1, 1)])).decisions[0]);
    b.report(
        10 * MS,
        &announced((600, 599), (1_000_000, 999_000), Some(probe), 1),
    );
    let burst = b.admit(10 * MS, &op(1, (0..10).map(|_| candidate(1, 1)).collect()));
    let tickets: Vec<Ticket> = burst.decisions.iter().map(|d| ticket_of(*d)).collect();
    let refused = |t: Ticket| ReportOp {
        signal: Signal::RateLimited { wait_us: 0 },
        used_tokens: Some(0),
        ticket: Some(t),
        ..ReportOp::default()
    };
    b.report(20 * MS, &refused(tickets[0]));
    let (epoch, pause) = (b.epoch, b.pause_until_us);
    assert_eq!(epoch, 1);
    assert!(pause > 20 * MS);
    // The others of the same burst were admitted before the event: theirs are its.
    for t in &tickets[1..] {
        b.report(21 * MS, &refused(*t));
    }
    assert_eq!((b.epoch, b.pause_until_us), (epoch, pause));
    // Nobody goes during the pause; then one probe at a time.
    assert_eq!(
        admitted(&b.admit(25 * MS, &op(1, vec![candidate(1, 1)]))),
        0
    );
    let after = b.admit(pause, &op(1, (0..4).map(|_| candidate(1, 1)).collect()));
    assert_eq!(admitted(&after), 1, "{after:?}");
}

#[test]
fn a_caller_that_cannot_go_within_its_deadline_is_late_at_once() {
    let mut b = BudgetState::new(0, Some(Limits::requests(1, Duration::from_secs(10))));
    assert_eq!(admitted(&b.admit(0, &op(1, vec![candidate(1, 1)]))), 1);
    let hurried = Candidate {
        within_us: S,
        ..candidate(1, 1)
    };
    let answer = b.admit(0, &op(1, vec![hurried, candidate(1, 1)]));
    match answer.decisions[0] {
        Decision::Late { after_us } => assert!(after_us > 9 * S, "{after_us}"),
        other => panic!("{other:?}"),
    }
    // The one behind it keeps its place.
    assert_eq!(answer.decisions[1], Decision::Wait);
}

#[test]
fn another_process_s_interactive_callers_go_before_this_one_s_batch() {
    let mut b = BudgetState::new(0, Some(Limits::requests(10, Duration::from_secs(1))));
    // Process 2 has 3 interactive callers waiting (its head asked and was told to wait).
    let mut theirs = op(2, (0..3).map(|_| candidate(0, 1)).collect());
    theirs.candidates.truncate(0);
    theirs.waiting = [3, 0, 0];
    b.admit(0, &theirs);
    // Process 1's batch head (no reserved share here): the capacity the interactive ones
    // need is kept for them.
    let mut batch = op(1, vec![candidate(2, 1)]);
    batch.reserve_ppm = [0; 3];
    let ours = b.admit(0, &batch);
    assert_eq!(admitted(&ours), 0, "{ours:?}");
    assert!(ours.next_in_us >= 250 * MS, "{ours:?}");
    // Process 2's callers then go in turn, first.
    let mut first = op(2, vec![candidate(0, 1)]);
    first.waiting = [3, 0, 0];
    assert_eq!(admitted(&b.admit(0, &first)), 1);
}

#[test]
fn a_lower_lane_keeps_its_reserved_share_under_a_saturating_higher_one() {
    let mut b = BudgetState::new(0, Some(Limits::requests(10, Duration::from_secs(1))));
    let (mut interactive, mut batch) = (0, 0);
    let mut t = 0;
    while t < 60 * S {
        // One interactive and one batch caller always wait at the head of the line.
        let answer = b.admit(t, &op(1, vec![candidate(0, 1), candidate(2, 1)]));
        for (d, lane) in answer.decisions.iter().zip([0, 2]) {
            if matches!(d, Decision::Go { .. }) {
                if lane == 0 {
                    interactive += 1;
                } else {
                    batch += 1;
                }
            }
        }
        t += answer.next_in_us.max(MS);
    }
    let share = batch as f64 / (batch + interactive) as f64;
    assert!((0.07..0.14).contains(&share), "batch share {share:.3}");
}

#[test]
fn callers_racing_for_the_budget_do_not_move_its_clock_back() {
    let mut b = BudgetState::new(0, Some(Limits::requests(10, Duration::from_secs(1))));
    b.admit(1_000 * MS, &op(1, vec![candidate(1, 1)]));
    // A caller that read the clock 3 ms before another took its turn: the same level.
    let late = b.admit(997 * MS, &op(1, vec![candidate(1, 1)]));
    assert_eq!(admitted(&late), 0);
    assert!(late.next_in_us >= 100 * MS, "{late:?}");
    assert_eq!(b.seen_us, 1_000 * MS);
}

#[test]
fn two_versions_of_a_budget_merge_by_their_declared_rules() {
    let mut ours = BudgetState::new(5 * S, Some(Limits::requests(10, Duration::from_secs(1))));
    ours.req_tat_us = 9 * S;
    ours.share = 0.25;
    ours.seq = 40;
    let mut theirs = ours.clone();
    theirs.seen_us = 6 * S;
    theirs.req_tat_us = 7 * S;
    theirs.share = 1.0;
    theirs.seq = 50;
    let merged = ours.joined(&theirs);
    // The later level (no capacity given twice), the cautious share, the larger count.
    assert_eq!(merged.req_tat_us, 9 * S);
    assert_eq!(merged.share, 0.25);
    assert_eq!(merged.seq, 50);
    assert_eq!(merged.seen_us, 6 * S);
    // Every field is declared with a rule, and the times move with the clock.
    assert!(BudgetState::FIELDS.len() >= 40);
    let moved = merged.rebased(6 * S, 106 * S);
    assert_eq!(moved.req_tat_us, 109 * S);
}

/// Notes wakes.
struct Count(Mutex<usize>);

impl Wake for Count {
    fn wake(self: Arc<Self>) {
        *self.0.lock().unwrap() += 1;
    }
}

fn ask(priority: Priority) -> Ask {
    Ask {
        model: Some("m".into()),
        tokens: 1,
        size: Sizing::default(),
        attempt: 1,
        within: None,
        priority,
    }
}

fn headers(limit: u64, remaining: u64) -> RateLimits {
    RateLimits {
        quotas: vec![Quota {
            bucket: Bucket::Requests,
            window: Window::Seconds(60),
            limit: Some(limit),
            remaining: Some(remaining),
        }],
        ..RateLimits::default()
    }
}

fn success(ticket: Option<Ticket>, limits: RateLimits) -> Report {
    Report {
        model: Some("m".into()),
        limits,
        verdict: Verdict::Success,
        retry: None,
        estimated_tokens: 1,
        used_tokens: Some(1),
        attempt: 1,
        correlation_id: None,
        ticket,
        usage: Some(TokenUsage {
            prompt_tokens: 1,
            completion_tokens: 0,
            total_tokens: 1,
        }),
        size: Sizing::default(),
        origin: Default::default(),
        service_tier: None,
    }
}

/// A new in-process limiter, its clock's start, and a waker that counts its wakes.
fn fresh() -> (LocalLimiter, Instant, Arc<Count>, Waker) {
    let wakes = Arc::new(Count(Mutex::new(0)));
    let waker = Waker::from(Arc::clone(&wakes));
    let limiter = LocalLimiter::with_config(LimiterConfig::default());
    (limiter, Instant::now(), wakes, waker)
}

/// The first caller of a budget nothing is known of: it goes at once, as the probe.
fn probe(limiter: &LocalLimiter, now: Instant, priority: Priority, waker: &Waker) -> Ticket {
    let mut place = Place::new();
    let Admit::Ready(Grant::Go { ticket, .. }) =
        limiter.poll_admit(now, &mut place, &ask(priority), waker)
    else {
        panic!("the first caller probes")
    };
    limiter.leave(&mut place);
    ticket
}

/// The line in one process: the interactive caller that arrives behind a batch backlog
/// is the next to go, and a raised limit reaches the callers already waiting at once.
#[test]
fn the_line_serves_classes_in_order_and_a_raised_limit_reaches_it_at_once() {
    let (limiter, t0, wakes, waker) = fresh();
    // The probe goes; its answer announces 6 a minute, none left.
    let ticket = probe(&limiter, t0, Priority::Batch, &waker);
    limiter.report(t0, &success(Some(ticket), headers(6, 0)));
    // Five batch callers, then a person, all waiting.
    let mut batch: Vec<Place> = (0..5).map(|_| Place::new()).collect();
    for place in &mut batch {
        let answer = limiter.poll_admit(t0, place, &ask(Priority::Batch), &waker);
        assert!(matches!(answer, Admit::Pending { .. }), "{answer:?}");
    }
    let mut person = Place::new();
    let answer = limiter.poll_admit(t0, &mut person, &ask(Priority::Interactive), &waker);
    assert!(matches!(answer, Admit::Pending { .. }), "{answer:?}");
    // The person is the head now, waiting for a unit (10 s) of the request limit.
    let view = limiter.line("m");
    assert_eq!(view.waiting, [1, 0, 5]);
    assert_eq!(view.binding, mistral_limiter::Binding::Requests, "{view:?}");
    assert!(view.unit_us > 9 * S, "{view:?}");
    // The tier changes: 600 a minute, 590 left. The head is woken and goes at once; the
    // batch callers follow, none of them stuck behind a slot booked at the old rate.
    let before = *wakes.0.lock().unwrap();
    let t1 = t0 + Duration::from_millis(100);
    limiter.report(t1, &success(None, headers(600, 590)));
    assert!(*wakes.0.lock().unwrap() > before, "the head was woken");
    let answer = limiter.poll_admit(t1, &mut person, &ask(Priority::Interactive), &waker);
    assert!(
        matches!(answer, Admit::Ready(Grant::Go { .. })),
        "{answer:?}"
    );
    for place in &mut batch {
        let answer = limiter.poll_admit(t1, place, &ask(Priority::Batch), &waker);
        assert!(
            matches!(answer, Admit::Ready(Grant::Go { .. })),
            "{answer:?}"
        );
    }
    assert_eq!(limiter.line("m").waiting, [0, 0, 0]);
}

fn plain(signal: Signal, ticket: Ticket) -> ReportOp {
    ReportOp {
        signal,
        used_tokens: Some(1),
        ticket: Some(ticket),
        ..ReportOp::default()
    }
}

/// A budget learning its rate (the server announces nothing), slow start over, at
/// `rate` per second with `held` the last rate that held.
fn learned_at(rate: f64, held: f64) -> BudgetState {
    let mut b = BudgetState::new(0, None);
    let probe = ticket_of(b.admit(0, &op(1, vec![candidate(1, 1)])).decisions[0]);
    b.report(10 * MS, &plain(Signal::Success, probe));
    assert_eq!(b.source, Source::Learned);
    b.slow_start = 0;
    b.rate = rate;
    b.req_us = S as f64 / rate;
    b.max_rate = 0.0;
    b.held_rate = held;
    // The starting rate's pacing is forgotten: the next call may go at once.
    b.req_tat_us = 0;
    b
}

/// Drives `b` from `from` to `until` with callers always waiting, each admitted call
/// answered 1 ms later with a success; returns how many went.
fn drive(b: &mut BudgetState, from: u64, until: u64) -> usize {
    let mut t = from;
    let mut sent = 0;
    while t < until {
        let answer = b.admit(t, &op(1, (0..4).map(|_| candidate(1, 1)).collect()));
        for d in &answer.decisions {
            if let Decision::Go { ticket, .. } = d {
                sent += 1;
                b.report(t + MS, &plain(Signal::Success, *ticket));
            }
        }
        t += answer.next_in_us.clamp(MS, 100 * MS);
    }
    sent
}

#[test]
fn a_learned_rate_refused_above_one_that_held_goes_back_to_it_then_tries_the_middle() {
    let mut b = learned_at(10.0, 8.0);
    let t0 = 20 * MS;
    let ticket = ticket_of(b.admit(t0, &op(1, vec![candidate(1, 1)])).decisions[0]);
    b.report(t0 + MS, &plain(Signal::RateLimited { wait_us: 0 }, ticket));
    // The limit lies between 8/s (held) and 10/s (refused).
    assert_eq!((b.rate, b.max_rate), (8.0, 10.0));
    // It holds at least 16 intervals (2 s at 8/s), then tries 9/s.
    drive(&mut b, t0 + 2 * MS, t0 + S + S / 2);
    assert_eq!(b.rate, 8.0, "held less than its 16 intervals");
    drive(&mut b, t0 + S + S / 2, t0 + 3 * S);
    assert!((b.rate - 9.0).abs() < 1e-9, "{}", b.rate);
    assert_eq!(b.held_rate, 8.0);
    // Refused again at 9/s: back to 8/s, and the middle is now 8.5/s.
    let ticket = ticket_of(b.admit(t0 + 4 * S, &op(1, vec![candidate(1, 1)])).decisions[0]);
    b.report(
        t0 + 4 * S,
        &plain(Signal::RateLimited { wait_us: 0 }, ticket),
    );
    assert_eq!((b.rate, b.max_rate), (8.0, 9.0));
}

#[test]
fn a_learned_rate_refused_a_small_step_above_one_that_held_goes_on_one_interval_later() {
    // 50/s held, 55/s refused: back to 50/s, and the next goes one interval (20 ms) after
    // the refusal, not after a probe's pause of 100 ms (5 intervals lost at each step).
    let mut b = learned_at(55.0, 50.0);
    let t0 = 20 * MS;
    let ticket = ticket_of(b.admit(t0, &op(1, vec![candidate(1, 1)])).decisions[0]);
    let refused = t0 + MS;
    b.report(refused, &plain(Signal::RateLimited { wait_us: 0 }, ticket));
    assert_eq!((b.rate, b.max_rate), (50.0, 55.0));
    let (_, went) = first_go(&mut b, refused);
    assert!(
        went - refused <= 25 * MS,
        "the next went {} ms after the refusal",
        (went - refused) / MS
    );
    // Refused far above the rate that held (a start's doubling): a probe's pause.
    let mut b = learned_at(100.0, 50.0);
    let ticket = ticket_of(b.admit(t0, &op(1, vec![candidate(1, 1)])).decisions[0]);
    b.report(refused, &plain(Signal::RateLimited { wait_us: 0 }, ticket));
    let (_, went) = first_go(&mut b, refused);
    assert!(went - refused >= 95 * MS, "{} ms", (went - refused) / MS);
}

#[test]
fn a_learned_rate_refused_where_it_held_comes_down_to_what_was_delivered() {
    let mut b = learned_at(10.0, 10.0);
    // A second at 10/s, less than a hold (16 intervals): no probe above it yet.
    let sent = drive(&mut b, 20 * MS, S);
    assert!(sent >= 8, "{sent}");
    assert_eq!(b.rate, 10.0);
    let ticket = ticket_of(
        b.admit(S + S / 2, &op(1, vec![candidate(1, 1)]))
            .decisions
            .iter()
            .copied()
            .find(|d| matches!(d, Decision::Go { .. }))
            .expect("one goes after half a second idle"),
    );
    b.report(
        S + S / 2,
        &plain(Signal::RateLimited { wait_us: 0 }, ticket),
    );
    // Not back to a rate that held (the limit came down): at most 93 % of the refused
    // rate, at least half of it, and nothing is taken as held any more.
    assert!(b.rate <= 0.93 * 10.0 + 1e-9 && b.rate >= 5.0, "{}", b.rate);
    assert_eq!(b.held_rate, 0.0);
}

#[test]
fn a_late_answer_from_before_a_refusal_does_not_close_the_learned_cycle() {
    let mut b = learned_at(10.0, 0.0);
    let burst = b.admit(20 * MS, &op(1, (0..2).map(|_| candidate(1, 1)).collect()));
    let go: Vec<Ticket> = burst
        .decisions
        .iter()
        .filter_map(|d| match d {
            Decision::Go { ticket, .. } => Some(*ticket),
            _ => None,
        })
        .collect();
    let early = go[0];
    let refused = ticket_of(
        b.admit(200 * MS, &op(1, vec![candidate(1, 1)]))
            .decisions
            .iter()
            .copied()
            .find(|d| matches!(d, Decision::Go { .. }))
            .expect("paced at 10/s, one goes 180 ms later"),
    );
    b.report(
        210 * MS,
        &plain(Signal::RateLimited { wait_us: 0 }, refused),
    );
    assert_eq!(b.recovering, 1);
    let (start, count) = (b.cycle_start_us, b.cycle_count);
    // An attempt admitted before the refusal answers late: it ends the pause but says
    // nothing of when capacity came back, so the cycle (a window's measure) goes on.
    b.report(220 * MS, &plain(Signal::Success, early));
    assert_eq!(b.recovering, 0);
    assert_eq!((b.cycle_start_us, b.cycle_count), (start, count + 1));
}

/// A learned budget that delivered `count` successes in its last cycle, refused at
/// `from` + 30 ms and shut for 1.5 s; its probe's success is reported. Returns the time.
fn reopened_after_a_long_shut(b: &mut BudgetState, count: u64, from: u64) -> u64 {
    b.cycle_start_us = from;
    b.cycle_count = count;
    b.pause_until_us = 0;
    let ticket = b
        .admit(from + 20 * MS, &op(1, vec![candidate(1, 1)]))
        .decisions
        .iter()
        .copied()
        .find(|d| matches!(d, Decision::Go { .. }))
        .map(ticket_of)
        .expect("one goes");
    b.report(
        from + 30 * MS,
        &plain(Signal::RateLimited { wait_us: 0 }, ticket),
    );
    let open = from + S + S / 2;
    let probe = b.admit(open, &op(1, (0..4).map(|_| candidate(1, 1)).collect()));
    assert_eq!(admitted(&probe), 1, "one probe: {probe:?}");
    let probe = probe
        .decisions
        .iter()
        .copied()
        .find(|d| matches!(d, Decision::Go { .. }))
        .map(ticket_of)
        .unwrap();
    b.report(open + MS, &plain(Signal::Success, probe));
    open + MS
}

/// Admits what `b` lets go at `t` of `n` callers.
fn go_now(b: &mut BudgetState, t: u64, n: usize) -> Vec<Ticket> {
    b.admit(t, &op(1, (0..n).map(|_| candidate(1, 1)).collect()))
        .decisions
        .iter()
        .filter(|d| matches!(d, Decision::Go { wait_us: 0, .. }))
        .map(|d| ticket_of(*d))
        .collect()
}

#[test]
fn capacity_back_in_a_lump_after_a_long_shut_is_learned_as_a_window() {
    let mut b = learned_at(10.0, 0.0);
    let mut t = reopened_after_a_long_shut(&mut b, 20, 0);
    assert_eq!(b.refill, Refill::Unknown);
    // The open is tried as a window's: each success lets two more go at once (on top of
    // the pace), up to what the last cycle delivered.
    let first = go_now(&mut b, t, 64);
    assert!(first.len() >= 2, "{}", first.len());
    let mut answered = 1; // the probe
    let mut rounds = 0;
    let mut out = first;
    while b.refill == Refill::Unknown && rounds < 10 {
        for ticket in out.drain(..) {
            answered += 1;
            b.report(t + MS, &plain(Signal::Success, ticket));
        }
        t += 2 * MS;
        out = go_now(&mut b, t, 64);
        rounds += 1;
    }
    // 20 in a few round trips, not at a pace of 10/s (2 s).
    assert_eq!(b.refill, Refill::Window, "after {answered} answers");
    assert!(rounds <= 6, "{rounds} rounds");
    assert_eq!(b.win_count, 20);
}

#[test]
fn a_lump_refused_is_no_window_and_does_not_lower_the_rate() {
    let mut b = learned_at(10.0, 0.0);
    let t = reopened_after_a_long_shut(&mut b, 20, 0);
    let rate = b.rate;
    let lump = go_now(&mut b, t, 64);
    assert!(lump.len() >= 2);
    b.report(t + MS, &plain(Signal::Success, lump[0]));
    b.report(
        t + 2 * MS,
        &plain(Signal::RateLimited { wait_us: 0 }, lump[1]),
    );
    assert_eq!(b.refill, Refill::Continuous);
    assert_eq!(b.rate, rate, "a refused lump says nothing of the rate");
    assert!(
        b.pause_until_us > t + 2 * MS,
        "the refusal still pauses everyone"
    );
    // The next long shut opens at the pace, one at a time.
    let t = reopened_after_a_long_shut(&mut b, 20, t + S);
    assert!(go_now(&mut b, t, 64).len() <= 1);
}

#[test]
fn a_learned_window_sends_its_count_at_once_when_it_opens() {
    let mut b = learned_at(10.0, 0.0);
    b.refill = Refill::Window;
    b.win_count = 20;
    let t = reopened_after_a_long_shut(&mut b, 20, 0);
    // The probe was one of the 20: half the rest goes at once, the others at the first
    // success (a sliding log that freed less refuses half, not all).
    let mut lump = go_now(&mut b, t, 64);
    assert_eq!(lump.len(), 9);
    // Nothing else goes while the lump is out (the pace holds).
    assert!(go_now(&mut b, t + MS / 2, 64).is_empty());
    b.report(t + MS, &plain(Signal::Success, lump[0]));
    let rest = go_now(&mut b, t + MS, 64);
    assert_eq!(rest.len(), 10);
    lump.extend(rest);
    // A window whose count came down: once the lump is answered, the count is what it
    // let through; its refusals do not lower the rate.
    let rate = b.rate;
    for ticket in &lump[1..9] {
        b.report(t + 2 * MS, &plain(Signal::Success, *ticket));
    }
    for ticket in &lump[9..] {
        b.report(
            t + 2 * MS,
            &plain(Signal::RateLimited { wait_us: 0 }, *ticket),
        );
    }
    assert_eq!(b.refill, Refill::Window);
    assert_eq!(b.win_count, 10);
    assert_eq!(b.rate, rate);
}

#[test]
fn a_learned_window_spent_by_its_count_waits_for_its_next_open() {
    let mut b = learned_at(10.0, 0.0);
    b.refill = Refill::Window;
    b.win_count = 8;
    b.win_opens = 1;
    b.win_len_us = 2 * S;
    b.win_len_n = 2;
    let t = reopened_after_a_long_shut(&mut b, 8, 0);
    // It opened when its probe was admitted.
    assert_eq!(b.win_open_us, S + S / 2);
    let lump = go_now(&mut b, t, 64);
    assert_eq!(lump.len(), 3);
    b.report(t + MS, &plain(Signal::Success, lump[0]));
    let rest = go_now(&mut b, t + MS, 64);
    assert_eq!(rest.len(), 4);
    for ticket in lump[1..].iter().chain(&rest) {
        b.report(t + 2 * MS, &plain(Signal::Success, *ticket));
    }
    // Its count is spent: nobody goes (not even at the pace) until a little before the
    // next open (3.5 s less a tenth of a second), then one probe.
    assert_eq!(b.pause_until_us, 3 * S + 4 * S / 10);
    assert!(go_now(&mut b, 3 * S, 64).is_empty());
    assert_eq!(go_now(&mut b, 3 * S + 4 * S / 10, 64).len(), 1);
}

#[test]
fn a_first_answer_without_limits_lets_a_few_go_at_once_and_their_refusal_lowers_nothing() {
    let mut b = BudgetState::new(0, None);
    let probe = ticket_of(b.admit(0, &op(1, vec![candidate(1, 1)])).decisions[0]);
    b.report(10 * MS, &plain(Signal::Success, probe));
    assert_eq!((b.source, b.slow_start), (Source::Learned, 1));
    let few = go_now(&mut b, 10 * MS, 8);
    assert_eq!(few.len(), 3, "a few in flight at once, not a long warm-up");
    let rate = b.rate;
    // The server has no burst: one of them is refused. The rate is not lowered, the slow
    // start goes on, and everyone pauses once.
    b.report(20 * MS, &plain(Signal::RateLimited { wait_us: 0 }, few[0]));
    assert_eq!((b.rate, b.slow_start), (rate, 1));
    assert!(b.pause_until_us > 20 * MS);
    // After the pause, one at a time at the starting pace, from when the next was due
    // (within two intervals of the burst), never two at once.
    let pause = b.pause_until_us;
    let mut t = pause;
    let mut after = go_now(&mut b, t, 8);
    while after.is_empty() && t < 2 * S {
        t += 10 * MS;
        after = go_now(&mut b, t, 8);
    }
    assert_eq!(after.len(), 1, "at {t}");
    assert!(t <= 10 * MS + 2 * S / 2, "the next went at {t}");
    assert!(go_now(&mut b, t, 8).is_empty());
}

#[test]
fn a_window_count_cut_by_one_lump_is_tried_again_by_halves() {
    let mut b = learned_at(10.0, 0.0);
    b.refill = Refill::Window;
    b.win_count = 20;
    b.win_opens = 2;
    let t = reopened_after_a_long_shut(&mut b, 20, 0);
    let mut lump = go_now(&mut b, t, 64);
    b.report(t + MS, &plain(Signal::Success, lump[0]));
    lump.extend(go_now(&mut b, t + MS, 64));
    assert_eq!(lump.len(), 19);
    // A sliding log that freed only 12 (the probe and 11 of the lump): cut to 12, and
    // 20 (which it held) is remembered.
    for ticket in &lump[1..11] {
        b.report(t + 2 * MS, &plain(Signal::Success, *ticket));
    }
    for ticket in &lump[11..] {
        b.report(
            t + 2 * MS,
            &plain(Signal::RateLimited { wait_us: 0 }, *ticket),
        );
    }
    assert_eq!((b.win_count, b.win_top), (12, 20));
    // The next open's lump tries halfway back (every other open while below it).
    let t = reopened_after_a_long_shut(&mut b, 12, 4 * S);
    assert_eq!(b.lump_cap, 16);
    let mut lump = go_now(&mut b, t, 64);
    b.report(t + MS, &plain(Signal::Success, lump[0]));
    lump.extend(go_now(&mut b, t + MS, 64));
    assert_eq!(lump.len(), 15);
    // Refused there after 13 (the probe and 12): the limit came down, 16 is the new top.
    for ticket in &lump[1..12] {
        b.report(t + 2 * MS, &plain(Signal::Success, *ticket));
    }
    for ticket in &lump[12..] {
        b.report(
            t + 2 * MS,
            &plain(Signal::RateLimited { wait_us: 0 }, *ticket),
        );
    }
    assert_eq!((b.win_count, b.win_top), (13, 16));
    // Then its count, then halfway to the new top.
    let t = reopened_after_a_long_shut(&mut b, 13, t + 4 * S);
    assert_eq!(b.lump_cap, 13);
    let mut lump = go_now(&mut b, t, 64);
    b.report(t + MS, &plain(Signal::Success, lump[0]));
    lump.extend(go_now(&mut b, t + MS, 64));
    for ticket in &lump[1..] {
        b.report(t + 2 * MS, &plain(Signal::Success, *ticket));
    }
    assert_eq!((b.win_count, b.win_top, b.lump_cap), (13, 16, 0));
    reopened_after_a_long_shut(&mut b, 13, t + 4 * S);
    assert_eq!(b.lump_cap, 14);
}

#[test]
fn a_rate_paced_above_a_sliding_log_comes_down_to_what_its_cycle_delivered() {
    // Paced at 64/s against a log of 40 a second: 40 go in about 0.6 s, then it shuts
    // until the first of them leaves the log, about 0.4 s later.
    let mut b = learned_at(64.0, 0.0);
    b.held_rate = 64.0;
    let sent = drive(&mut b, 20 * MS, 640 * MS);
    assert!((36..=44).contains(&sent), "{sent}");
    let refused = go_now(&mut b, 650 * MS, 1)[0];
    b.report(
        651 * MS,
        &plain(Signal::RateLimited { wait_us: 0 }, refused),
    );
    // Probes at the end of each pause: refused until 1.02 s, then admitted.
    let mut t = b.pause_until_us;
    loop {
        let probe = go_now(&mut b, t, 4);
        assert!(probe.len() <= 1, "one probe at a time: {}", probe.len());
        if let Some(probe) = probe.first() {
            let signal = if t < 1_020 * MS {
                Signal::RateLimited { wait_us: 0 }
            } else {
                Signal::Success
            };
            b.report(t + MS, &plain(signal, *probe));
            if b.recovering == 0 {
                break;
            }
        }
        t = b.pause_until_us.max(t + MS);
        assert!(t < 3 * S, "never recovered");
    }
    // The shut (about 0.4 s of a 1 s cycle) was the server's: the rate is what the cycle
    // delivered (about 40/s), not the 64/s that seemed to hold, and a lump may go.
    assert!(b.rate < 45.0 && b.rate > 25.0, "{}", b.rate);
    assert!(b.lump_cap > 0, "a lump tries whether it opened whole");
}

#[test]
fn a_window_length_seen_once_never_shuts_the_budget() {
    // The same window as above, its length seen once (a bucket whose two long shuts
    // looked like opens): after a whole lump the pace goes on, nobody waits for an open
    // that may never come.
    let mut b = learned_at(10.0, 0.0);
    b.refill = Refill::Window;
    b.win_count = 8;
    b.win_opens = 1;
    b.win_len_us = 8 * S;
    b.win_len_n = 1;
    let t = reopened_after_a_long_shut(&mut b, 8, 0);
    let lump = go_now(&mut b, t, 64);
    b.report(t + MS, &plain(Signal::Success, lump[0]));
    let rest = go_now(&mut b, t + MS, 64);
    for ticket in lump[1..].iter().chain(&rest) {
        b.report(t + 2 * MS, &plain(Signal::Success, *ticket));
    }
    assert_eq!(b.win_count, 8);
    assert!(b.pause_until_us < t + S, "shut until {}", b.pause_until_us);
    // At the pace (10/s), the next goes within a fifth of a second.
    let mut at = t + 2 * MS;
    while go_now(&mut b, at, 1).is_empty() {
        at += 10 * MS;
        assert!(at < t + S / 5, "nothing at the pace");
    }
    // Seen twice, the same length shuts it (the test above).
}

/// An answer under an announced window of 100 requests per 2 s.
fn window_said(signal: Signal, ticket: Ticket, remaining: u64) -> ReportOp {
    ReportOp {
        signal,
        req_limit: 100,
        req_window_secs: 2,
        req_remaining: Some(remaining),
        ticket: Some(ticket),
        ..ReportOp::default()
    }
}

/// One caller at `t`: its ticket if it is let go (within the horizon).
fn go_within(b: &mut BudgetState, t: u64) -> Option<Ticket> {
    match b.admit(t, &op(1, vec![candidate(1, 1)])).decisions[0] {
        Decision::Go { ticket, .. } => Some(ticket),
        _ => None,
    }
}

/// The first caller `b` lets go from `t` on, asking every 5 ms (within 10 s): its ticket
/// and when it went.
fn first_go(b: &mut BudgetState, mut t: u64) -> (Ticket, u64) {
    let end = t + 10 * S;
    loop {
        if let Some(ticket) = go_within(b, t) {
            return (ticket, t);
        }
        t += 5 * MS;
        assert!(t < end, "nobody went");
    }
}

/// The refusal of a spent 2-s window.
fn window_spent() -> Signal {
    Signal::WindowSpent {
        wait_us: 0,
        window_us: 2 * S,
        tokens: false,
    }
}

#[test]
fn an_announced_window_that_refuses_twice_without_a_spent_answer_waits_for_its_round() {
    // 100 per 2 s announced, a fixed window. The answer that said 0 was left never came
    // (read late on a loaded machine): the window is seen spent first by a refusal. A
    // probe one unit later refused too says it does not refill continuously: nobody
    // probes again before the window seen to start comes round (not every 200 ms, then
    // 400 ms, as for a rate).
    let mut b = BudgetState::new(0, None);
    let probe = go_now(&mut b, 0, 1)[0];
    b.report(10 * MS, &window_said(Signal::Success, probe, 99));
    let burst = go_now(&mut b, 10 * MS, 128);
    assert!(burst.len() >= 95, "{}", burst.len());
    for (i, t) in burst.iter().enumerate().take(burst.len() - 1) {
        b.report(20 * MS, &window_said(Signal::Success, *t, 98 - i as u64));
    }
    // The model refills continuously: one more goes, and is refused.
    let (one, at) = first_go(&mut b, 20 * MS);
    assert!(at < 2 * S, "nothing went in the window");
    b.report(at + 5 * MS, &window_said(window_spent(), one, 0));
    // The probe after the pause: refused too.
    let (two, at2) = first_go(&mut b, at + 5 * MS);
    assert!(at2 < 2 * S, "no probe in the window");
    b.report(at2 + 5 * MS, &window_said(window_spent(), two, 0));
    assert!(
        b.pause_until_us >= 2 * S,
        "the next probe at {} s, inside the spent window",
        b.pause_until_us as f64 / S as f64
    );
}

#[test]
fn a_late_answer_from_before_a_refusal_lets_no_crowd_go_after_the_pause() {
    // The same window: the refusal comes first, then the answer of a caller admitted
    // before it, saying nothing is left. That answer is no probe's: after the pause one
    // probe goes, not everyone the cells would let go.
    let mut b = BudgetState::new(0, None);
    let probe = go_now(&mut b, 0, 1)[0];
    b.report(10 * MS, &window_said(Signal::Success, probe, 99));
    let burst = go_now(&mut b, 10 * MS, 128);
    let (last, rest) = burst.split_last().unwrap();
    let (refused, rest) = rest.split_last().unwrap();
    for (i, t) in rest.iter().enumerate() {
        b.report(20 * MS, &window_said(Signal::Success, *t, 98 - i as u64));
    }
    b.report(21 * MS, &window_said(window_spent(), *refused, 0));
    b.report(22 * MS, &window_said(Signal::Success, *last, 0));
    let after = b.pause_until_us.max(22 * MS) + MS;
    let went = b.admit(after, &op(1, (0..8).map(|_| candidate(1, 1)).collect()));
    assert!(admitted(&went) <= 1, "{went:?}");
}

/// Drives one window of 100 per 2 s announced (`window_said`): a probe admitted at `at`
/// or the first time after it the budget lets one go ([`first_go`]), read `rtt` later as a fresh window,
/// the rest of the window let go then and answered `rtt` later with what the server
/// counted, first those `order` names (0: the last admitted, 1: the one before...), then
/// the others in admission order. Returns when the probe was admitted.
fn window_round(b: &mut BudgetState, at: u64, rtt: u64, order: &[usize]) -> u64 {
    let (probe, at) = first_go(b, at);
    b.report(at + rtt, &window_said(Signal::Success, probe, 99));
    let burst = go_now(b, at + rtt, 128);
    assert!(burst.len() >= 90, "{}", burst.len());
    // The server counted them in admission order, the last one spending the window
    // (the budget keeps a margin: it may let a unit or two fewer go at once).
    let n = burst.len();
    let mut seen: Vec<usize> = order.iter().map(|k| n - 1 - k).collect();
    let first = seen.clone();
    seen.extend((0..n).filter(|i| !first.contains(i)));
    for i in seen {
        let left = (n - 1 - i) as u64;
        b.report(at + 2 * rtt, &window_said(Signal::Success, burst[i], left));
    }
    at
}

#[test]
fn a_late_answer_from_before_the_window_was_spent_keeps_it_a_window() {
    // 100 per 2 s, learned to be a window that does not refill (a probe one unit after
    // it was spent was refused). In the next window the answer that says 0 is read
    // before one admitted earlier that says 5: that one was counted before, not after
    // the window was spent; the window is still one that does not refill, and nobody
    // goes one unit after its burst.
    let mut b = BudgetState::new(0, None);
    window_round(&mut b, 0, 5 * MS, &[]);
    let (one, at) = first_go(&mut b, 20 * MS);
    b.report(at + 25 * MS, &window_said(window_spent(), one, 0));
    assert_eq!(
        b.windowed, 1,
        "one unit after it was spent it still refused"
    );
    // The next window: the last of the burst (said 0) read first, then one that said 5.
    let p = window_round(&mut b, at + 10 * MS, 5 * MS, &[0, 5]);
    assert!(p >= 2 * S, "probed at {p} inside the first window");
    assert_eq!(b.windowed, 1, "a late answer made it a refilling window");
    assert!(b.pause_until_us >= 4 * S, "{}", b.pause_until_us);
}

#[test]
fn a_window_s_start_does_not_drift_later_each_window() {
    // 100 per 2 s, a window; the server 50 ms away. Each window's probe goes when the
    // last one's start comes round; its answer is read 50 ms later. Taken at the time
    // it is read, the start drifts by that and the margin every window (about 80 ms):
    // 8 windows later the probe would go 0.6 s late, the server idle meanwhile.
    let mut b = BudgetState::new(0, None);
    let rtt = 50 * MS;
    let first = window_round(&mut b, 0, rtt, &[]);
    assert_eq!(first, 0);
    // Learn that it does not refill: one unit after the burst, refused.
    let (one, at) = first_go(&mut b, 2 * rtt);
    b.report(at + rtt, &window_said(window_spent(), one, 0));
    let mut probes = Vec::new();
    let mut at = at + rtt;
    for _ in 0..8 {
        let p = window_round(&mut b, at, rtt, &[]);
        probes.push(p);
        at = p + 3 * rtt;
    }
    probes_on_their_rounds(&probes, 1, 2 * S);
}

/// Each of `probes` (µs) went within 150 ms of the start of its window (the `first`-th of
/// `window` µs for the first probe, the next for the next...).
fn probes_on_their_rounds(probes: &[u64], first: u64, window: u64) {
    for (k, p) in probes.iter().enumerate() {
        let late = p.saturating_sub((first + k as u64) * window);
        assert!(
            late <= 150 * MS,
            "window {}'s probe {:.3} s after its start: {probes:?}",
            first + k as u64,
            late as f64 / S as f64,
        );
    }
}

#[test]
fn a_window_whose_burst_is_refused_one_too_many_keeps_its_round() {
    // 100 per 2 s announced, a fixed window, the server 50 ms away, not yet known not to
    // refill. Each window: the probe finds 99 left, the burst takes them, and the model
    // (which refills continuously) lets one more go a unit later, refused; its refusal
    // is read before the burst's answers. Seen on 80 threads at 20 per 1 s: each probe
    // went 1.1-1.2 s after the last (the refused cell taken as empty from the refusal
    // on), so that the probes drifted through the server's windows and one window in
    // about six went unused. A cell announced per window has come back whole one window
    // after it was fresh: the next probe goes then.
    let mut b = BudgetState::new(0, None);
    let rtt = 50 * MS;
    let mut probes = Vec::new();
    let mut at = 0;
    for _ in 0..6 {
        let (probe, p) = first_go(&mut b, at);
        probes.push(p);
        b.report(p + rtt, &window_said(Signal::Success, probe, 99));
        let burst = go_now(&mut b, p + rtt, 128);
        assert!(burst.len() >= 90, "{}", burst.len());
        let (extra, t) = first_go(&mut b, p + rtt + MS);
        b.report(t + rtt, &window_said(window_spent(), extra, 0));
        let n = burst.len() as u64;
        for (i, x) in burst.iter().enumerate() {
            let left = (n - 1 - i as u64) + (99 - n);
            b.report(t + rtt, &window_said(Signal::Success, *x, left));
        }
        at = t + rtt + MS;
    }
    probes_on_their_rounds(&probes, 0, 2 * S);
}

#[test]
fn a_window_known_not_to_refill_sends_what_its_fresh_answer_left_and_no_more() {
    // A server with a fixed window of 20 per 1 s, announced (as in `fleet_silences`),
    // 50 ms away (each answer read 50 ms after its admission), callers always waiting.
    // Once the budget knows the window does not refill, each window's probe finds 19
    // left and 19 go; the pace must not let a 20th go a unit later, before the burst's
    // answers (the one that says 0 among them) are back. Seen on 80 threads: one 429
    // every window, for good.
    let rtt = 50 * MS;
    let said = |signal: Signal, ticket: Ticket, remaining: u64| ReportOp {
        signal,
        req_limit: 20,
        req_window_secs: 1,
        req_remaining: Some(remaining),
        ticket: Some(ticket),
        ..ReportOp::default()
    };
    let mut b = BudgetState::new(0, None);
    let mut count = std::collections::HashMap::<u64, u64>::new();
    // (read at, ticket, remaining or None for refused)
    let mut answers: Vec<(u64, Ticket, Option<u64>)> = Vec::new();
    let mut refused_at = Vec::new();
    let mut t = 0;
    while t < 8 * S {
        let answer = b.admit(t, &op(1, (0..64).map(|_| candidate(1, 1)).collect()));
        for d in answer.decisions {
            let Decision::Go { wait_us, ticket } = d else {
                continue;
            };
            // It reaches the server when its wait is over (within the horizon).
            let at = t + wait_us;
            let n = count.entry(at / S).or_default();
            if *n < 20 {
                *n += 1;
                answers.push((at + rtt, ticket, Some(20 - *n)));
            } else {
                refused_at.push(at);
                answers.push((at + rtt, ticket, None));
            }
        }
        let (due, later): (Vec<_>, Vec<_>) = answers.into_iter().partition(|a| a.0 <= t);
        answers = later;
        for (_, ticket, remaining) in due {
            let op = match remaining {
                Some(r) => said(Signal::Success, ticket, r),
                None => said(
                    Signal::WindowSpent {
                        wait_us: 0,
                        window_us: S,
                        tokens: false,
                    },
                    ticket,
                    0,
                ),
            };
            b.report(t, &op);
        }
        t += MS;
    }
    assert_eq!(b.windowed, 1, "never learned the window does not refill");
    let late: Vec<u64> = refused_at.iter().copied().filter(|&r| r >= 3 * S).collect();
    assert!(
        late.len() <= 1,
        "refused at {late:?} ms in windows 3-7 (every refusal: {refused_at:?})"
    );
    for w in 3..8 {
        assert_eq!(
            count.get(&w),
            Some(&20),
            "window {w} not used whole: {count:?}"
        );
    }
}

/// A server that admits at most `k` requests in flight, each answered `latency` after
/// it arrived, refused at once (in 1 ms) above that, whatever the spacing; 32 callers
/// always wait. Drives `b` from `from` to `until` (µs); returns (answered, refused) of
/// the attempts admitted after `count_from`.
fn drive_in_flight(
    b: &mut BudgetState,
    k: usize,
    latency: u64,
    from: u64,
    until: u64,
    count_from: u64,
) -> (usize, usize) {
    // (when the answer is read, ticket, refused)
    let mut pending: Vec<(u64, Ticket, bool)> = Vec::new();
    let (mut ok, mut no) = (0, 0);
    let mut t = from;
    while t < until {
        pending.sort_by_key(|p| p.0);
        while pending.first().is_some_and(|p| p.0 <= t) {
            let (at, ticket, refused) = pending.remove(0);
            let signal = if refused {
                Signal::RateLimited { wait_us: 0 }
            } else {
                Signal::Success
            };
            b.report(at, &plain(signal, ticket));
        }
        let answer = b.admit(t, &op(1, (0..32).map(|_| candidate(1, 1)).collect()));
        for d in &answer.decisions {
            if let Decision::Go { ticket, wait_us } = d {
                let arrives = t + wait_us;
                let in_server = pending.iter().filter(|p| !p.2).count();
                let refused = in_server >= k;
                let answered = arrives + if refused { MS } else { latency };
                pending.push((answered, *ticket, refused));
                if arrives >= count_from {
                    if refused {
                        no += 1;
                    } else {
                        ok += 1;
                    }
                }
            }
        }
        let next = pending.iter().map(|p| p.0).min().unwrap_or(u64::MAX);
        t = (t + answer.next_in_us.max(1)).min(next).max(t + 1);
    }
    (ok, no)
}

#[test]
fn a_concurrency_limit_is_learned_and_gates_the_calls_in_flight() {
    // At most 4 in flight, 200 ms each: 20 a second at best, whatever the pace. Learned
    // as a rate, it saws (a refusal each time the pace runs ahead of the answers);
    // gated at 4 in flight, it holds: after the first seconds at least 90 % of the
    // server's best, and at most one refused attempt in 16 (the gate's probes of one
    // more).
    let mut b = learned_at(2.0, 0.0);
    b.slow_start = 1;
    let (ok, no) = drive_in_flight(&mut b, 4, 200 * MS, 20 * MS, 20 * S, 5 * S);
    assert!((3..=5).contains(&b.conc_limit), "gate at {}", b.conc_limit);
    let per_sec = ok as f64 / 15.0;
    assert!(per_sec >= 18.0, "{per_sec:.1}/s of 20, {no} refused");
    assert!(no * 16 <= ok, "{no} refused for {ok} answered");
}

#[test]
fn a_rate_limit_is_not_taken_for_a_concurrency_limit() {
    // A rate refused with fewer in flight than a gate would allow is no concurrency
    // limit: the gate goes, and the rate is learned as before.
    let mut b = learned_at(10.0, 0.0);
    b.req_cap = 1.0;
    let three = go_now(&mut b, 0, 3);
    assert_eq!(three.len(), 1, "paced");
    let first = three[0];
    assert_eq!(first.in_flight, 1);
    b.report(10 * MS, &plain(Signal::Success, first));
    // Two in flight, the second refused: more than any success had.
    let a = go_within(&mut b, 200 * MS).unwrap();
    let c = go_within(&mut b, 300 * MS).unwrap();
    assert_eq!(c.in_flight, 2);
    b.report(301 * MS, &plain(Signal::RateLimited { wait_us: 0 }, c));
    assert_eq!(b.conc_limit, 1, "maybe one in flight at most");
    b.report(302 * MS, &plain(Signal::Success, a));
    // Later, refused with nobody else in flight: a rate's refusal.
    let (d, at) = first_go(&mut b, 400 * MS);
    assert_eq!(d.in_flight, 1);
    b.report(at + MS, &plain(Signal::RateLimited { wait_us: 0 }, d));
    assert_eq!(
        b.conc_limit, 0,
        "one at the gate refused: the gate comes down to none"
    );
}

/// A caller the budget admits at its first poll gets its grant from that poll and is
/// never woken (a wake would cost its task a poll for nothing); one that must wait is in
/// the line, its head, told when to poll again, and goes when its turn comes.
#[test]
fn a_caller_admitted_at_its_first_poll_is_not_woken_and_one_that_waits_is_its_line_s_head() {
    let (limiter, t0, wakes, waker) = fresh();
    let ticket = probe(&limiter, t0, Priority::Default, &waker);
    assert_eq!(*wakes.0.lock().unwrap(), 0, "the caller admitted was woken");
    assert_eq!(limiter.line("m").waiting, [0, 0, 0]);
    // 6 a minute, none left: the next caller waits a unit (10 s), polling at least
    // every second meanwhile.
    limiter.report(t0, &success(Some(ticket), headers(6, 0)));
    let mut next = Place::new();
    let answer = limiter.poll_admit(t0, &mut next, &ask(Priority::Default), &waker);
    let Admit::Pending { until } = answer else {
        panic!("{answer:?}")
    };
    assert!(
        until > t0 && until <= t0 + Duration::from_secs(1),
        "{until:?}"
    );
    let view = limiter.line("m");
    assert_eq!(view.waiting, [0, 1, 0]);
    assert_eq!(view.binding, mistral_limiter::Binding::Requests, "{view:?}");
    let t1 = t0 + Duration::from_millis(500);
    let answer = limiter.poll_admit(t1, &mut next, &ask(Priority::Default), &waker);
    assert!(matches!(answer, Admit::Pending { .. }), "{answer:?}");
    let t2 = t0 + Duration::from_secs(11);
    let answer = limiter.poll_admit(t2, &mut next, &ask(Priority::Default), &waker);
    assert!(
        matches!(answer, Admit::Ready(Grant::Go { .. })),
        "{answer:?}"
    );
    assert_eq!(limiter.line("m").waiting, [0, 0, 0]);
    assert_eq!(
        *wakes.0.lock().unwrap(),
        0,
        "a caller was woken for nothing"
    );
}

/// A lump after a cycle that lasted longer than a window seen (a pace under the window's
/// count never shut it) is the cycle's share of one window, not all it delivered: 60 over
/// 1.5 s, in windows of 0.5 s, is 20.
#[test]
fn a_lump_after_a_cycle_longer_than_a_window_is_one_window_s_share() {
    let mut b = learned_at(10.0, 0.0);
    b.win_len_us = S / 2;
    b.win_len_n = 1;
    reopened_after_a_long_shut(&mut b, 60, 0);
    assert_eq!(b.refill, Refill::Unknown);
    assert_eq!(b.lump_cap, 20);
}

/// Successes at the pace after a window's lump count in that window's count only while
/// the window lasts: a pace that ran on for windows without a shut (the window's length
/// seen once, so nobody waits for its next open) says nothing of one window.
#[test]
fn a_pace_that_runs_on_past_its_window_adds_nothing_to_the_window_s_count() {
    let mut b = learned_at(10.0, 0.0);
    b.refill = Refill::Window;
    b.win_count = 8;
    b.win_len_us = 2 * S;
    b.win_len_n = 1;
    let t = reopened_after_a_long_shut(&mut b, 8, 0);
    let mut lump = go_now(&mut b, t, 64);
    b.report(t + MS, &plain(Signal::Success, lump[0]));
    lump.extend(go_now(&mut b, t + MS, 64));
    for ticket in &lump[1..] {
        b.report(t + 2 * MS, &plain(Signal::Success, *ticket));
    }
    assert_eq!((b.refill, b.win_count), (Refill::Window, 8));
    let sent = drive(&mut b, t + 3 * MS, t + 8 * S);
    assert!(sent >= 40, "the pace ran on: {sent}");
    // Then a refusal: the window is spent, its count is what went in it.
    let mut at = t + 8 * S;
    let refused = loop {
        if let Some(ticket) = go_now(&mut b, at, 1).first() {
            break *ticket;
        }
        at += 10 * MS;
    };
    b.report(at + MS, &plain(Signal::RateLimited { wait_us: 0 }, refused));
    // The window lasted 2 s of the pace's 8 (whose rate grew): at most a quarter of what
    // the pace sent went in it (443 were counted in it before, of 435 sent).
    assert!(
        b.win_count >= 8 && b.win_count - 8 <= sent as u64 / 4,
        "{} after {sent} at the pace",
        b.win_count
    );
}
