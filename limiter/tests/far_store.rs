//! A shared store far away, failing, and back, decision by decision on the pure state
//! and the store's sans-IO parts: an answer read no earlier than it can have come, a
//! batch whose answers come in any order, callers admitted within a round trip and
//! charged when they can go, stand-ins at a quarter (of the cells, of the pace, of the
//! room), a budget back from an outage, and the deadline a compare-and-set carries. The
//! budget throughout: 20 requests a second, a bucket of 20, as the server announces it.

#![allow(clippy::disallowed_methods)]

use std::time::{Duration, Instant};

use mistral_core::limiter::LimiterConfig;
use mistral_core::{Sizing, Ticket};
use mistral_limiter::store::redis::{CasReply, RedisRound, RedisStep, Seen};
use mistral_limiter::store::{DEGRADED_SHARE, Fallback, SharedStore, StoreOps, codec};
use mistral_limiter::{AdmitAnswer, AdmitOp, BudgetState, Candidate, Decision, ReportOp, Signal};

const S: u64 = 1_000_000;
const MS: u64 = 1_000;
const MODEL: &str = "m";
/// µs per request at the announced rate, less the budget's margin.
const UNIT: u64 = 50_761;

fn callers(n: usize) -> AdmitOp {
    AdmitOp {
        proc_id: 1,
        waiting: [0, n as u64, 0],
        candidates: (0..n)
            .map(|_| Candidate {
                lane: 1,
                size: Sizing::default(),
                tokens: 1,
                within_us: u64::MAX,
            })
            .collect(),
        horizon_us: 2 * MS,
        late_us: 0,
        ask_gap_us: S,
        reserve_ppm: [0; 3],
    }
}

fn admitted(answer: &AdmitAnswer) -> usize {
    answer
        .decisions
        .iter()
        .filter(|d| matches!(d, Decision::Go { .. }))
        .count()
}

fn tickets(answer: &AdmitAnswer) -> Vec<Ticket> {
    answer
        .decisions
        .iter()
        .filter_map(|d| match d {
            Decision::Go { ticket, .. } => Some(*ticket),
            _ => None,
        })
        .collect()
}

/// Redis's reply to a compare-and-set that did not set: the key held `current` at
/// `now_us` (its `TIME`).
fn found(current: Vec<u8>, now_us: u64) -> CasReply {
    CasReply {
        stored: false,
        current,
        now_us,
    }
}

/// Redis's reply to a compare-and-set that set the value at `now_us`.
fn stored_at(now_us: u64) -> CasReply {
    CasReply {
        stored: true,
        current: Vec::new(),
        now_us,
    }
}

fn waits(answer: &AdmitAnswer) -> Vec<u64> {
    answer
        .decisions
        .iter()
        .filter_map(|d| match d {
            Decision::Go { wait_us, .. } => Some(*wait_us),
            _ => None,
        })
        .collect()
}

/// A success whose headers announce 20 a second and say `remaining` are left.
fn said(ticket: Option<Ticket>, remaining: u64) -> ReportOp {
    ReportOp {
        signal: Signal::Success,
        req_limit: 20,
        req_window_secs: 1,
        req_remaining: Some(remaining),
        ticket,
        ..ReportOp::default()
    }
}

/// The budget once its probe, admitted at `now`, was answered: 19 left.
fn announced_at(now: u64) -> BudgetState {
    let mut b = BudgetState::new(now, None);
    let probe = tickets(&b.admit(now, &callers(1)))[0];
    b.report(now, &said(Some(probe), 19));
    b
}

#[test]
fn an_answer_newer_than_a_far_store_s_clock_is_read_no_earlier_than_it_can_have_come() {
    // A round on Redis 200 ms away runs on Redis's time as the last reply gave it plus
    // the time since: up to 100 ms behind. An answer that came just before may be that
    // much newer than the round's `now`; read at `now`, the 2 units that came back in
    // those 100 ms would be counted a second time.
    let t = 10 * S;
    let mut base = announced_at(0);
    let one = tickets(&base.admit(t, &callers(1)))[0];
    let run = |ahead_us: u64| {
        let mut b = base.clone();
        let ops = StoreOps {
            model: MODEL.into(),
            reports: vec![ReportOp {
                ahead_us,
                ..said(Some(one), 11)
            }],
            admit: Some(callers(64)),
        };
        admitted(&ops.apply(t, &mut b))
    };
    assert_eq!(run(0), 11, "read at `now`: the 11 left");
    assert_eq!(
        run(100 * MS),
        9,
        "read 100 ms later: 2 of the 11 came back since"
    );
}

#[test]
fn a_far_store_s_answer_waits_that_much_less_for_its_trip_back() {
    let answer = AdmitAnswer {
        decisions: vec![
            Decision::Go {
                wait_us: 150 * MS,
                ticket: Ticket::default(),
            },
            Decision::Go {
                wait_us: 300 * MS,
                ticket: Ticket::default(),
            },
            Decision::Late { after_us: 900 * MS },
            Decision::Wait,
        ],
        next_in_us: 250 * MS,
        unit_us: UNIT,
        binding: Default::default(),
    };
    let aged = answer.aged(200 * MS);
    assert_eq!(waits(&aged), vec![0, 100 * MS]);
    assert_eq!(aged.decisions[2], Decision::Late { after_us: 700 * MS });
    assert_eq!(aged.next_in_us, 50 * MS);
}

#[test]
fn a_batch_answered_out_of_order_never_reads_room_that_is_not_there() {
    // 20 admitted by one operation go at once; the server counts the last three in the
    // order 18, 20, 19 (2, 1, 0 left), and their answers come back 18, 19, 20. The 20th
    // answered last, with 1 left and nothing after it: read as the latest word, it would
    // give a unit that the 19th, counted after it, already took.
    let t = 10 * S;
    let mut b = announced_at(0);
    let batch = b.admit(t, &callers(20));
    let t20 = tickets(&batch);
    assert_eq!(t20.len(), 20);
    assert_eq!(t20[19].lead, 19, "the 20th knows 19 went with it");
    for (i, ticket) in t20.iter().enumerate().take(17) {
        b.report(t, &said(Some(*ticket), 19 - i as u64));
    }
    b.report(t, &said(Some(t20[17]), 2));
    b.report(t, &said(Some(t20[18]), 0));
    b.report(t, &said(Some(t20[19]), 1));
    assert_eq!(admitted(&b.admit(t, &callers(8))), 0, "nothing is left");
    // The answers of a later operation still set the level: the server says it has
    // more room than the model thought (10 left after them, not 0).
    let later = tickets(&b.admit(t + 300 * MS, &callers(8)));
    assert!(!later.is_empty());
    let mut left = 15;
    for ticket in &later {
        b.report(t + 300 * MS, &said(Some(*ticket), left));
        left -= 1;
    }
    assert_eq!(
        admitted(&b.admit(t + 300 * MS, &callers(20))),
        left as usize + 1
    );
}

#[test]
fn an_answer_counted_before_callers_admitted_ahead_of_it_reads_no_room_they_took() {
    // On a loaded machine callers admitted by different operations reach the server in
    // any order, and their answers are read in any order too. 20 admitted by four
    // operations at once; the server counts the 20th first (19 left), then the 1st to
    // the 19th (18 to 0 left). The answers of the 1st to the 10th are read first, then
    // the 20th's: it is the latest admission answered, but the 9 still out are not all
    // it missed: the 10 answered before it may have been counted after it too (they
    // were). Nothing is left for a 21st, before or after the rest are answered.
    let t = 10 * S;
    let mut b = announced_at(0);
    let mut all = Vec::new();
    for _ in 0..4 {
        all.extend(tickets(&b.admit(t, &callers(5))));
    }
    assert_eq!(all.len(), 20);
    assert_eq!(all[19].lead, 19, "the 20th knows the 19 out before it");
    for (i, ticket) in all.iter().enumerate().take(10) {
        b.report(t + 5 * MS, &said(Some(*ticket), 18 - i as u64));
    }
    b.report(t + 6 * MS, &said(Some(all[19]), 19));
    assert_eq!(
        admitted(&b.admit(t + 6 * MS, &callers(8))),
        0,
        "nothing is left"
    );
    for (i, ticket) in all.iter().enumerate().skip(10).take(9) {
        b.report(t + 7 * MS, &said(Some(*ticket), 8 - (i as u64 - 10)));
    }
    assert_eq!(
        admitted(&b.admit(t + 7 * MS, &callers(8))),
        0,
        "still nothing"
    );
    // A caller admitted alone once all are answered reads the level whole again.
    let later = t + 200 * MS;
    let one = tickets(&b.admit(later, &callers(1)));
    assert_eq!(one.len(), 1);
    assert_eq!(one[0].lead, 0);
    b.report(later, &said(Some(one[0]), 12));
    assert_eq!(admitted(&b.admit(later, &callers(20))), 12);
}

#[test]
fn callers_that_go_late_are_charged_when_they_can_go() {
    // A full budget admits its 20; the callers will go only when the answer is back from
    // a store far away (up to 400 ms from `now`): the budget, full until then, fills no
    // further, and the next unit is due 50 ms after they go, not 50 ms from now.
    let t = 10 * S;
    let b = announced_at(0);
    let wide = |late_us: u64| {
        let mut b = b.clone();
        let op = AdmitOp {
            horizon_us: S,
            late_us,
            ..callers(24)
        };
        waits(&b.admit(t, &op))
    };
    let near = wide(0);
    assert!(near[..20].iter().all(|w| *w < MS), "{near:?}");
    assert!((49 * MS..=52 * MS).contains(&near[20]), "{near:?}");
    let far = wide(400 * MS);
    assert!(far[19] <= 401 * MS, "the 20 by the time they go: {far:?}");
    assert!(far[20] >= 449 * MS, "{far:?}");
}

/// A stand-in for a store that failed at `t0 + after`, which last answered at `t0` with
/// `known`.
fn stand_in(known: &BudgetState, t0: Instant) -> Fallback {
    let fallback = Fallback::new("redis", LimiterConfig::default(), DEGRADED_SHARE);
    fallback.up(t0, MODEL, known);
    fallback
}

fn ops(reports: Vec<ReportOp>, n: usize) -> StoreOps {
    StoreOps {
        model: MODEL.into(),
        reports,
        admit: (n > 0).then(|| callers(n)),
    }
}

#[test]
fn a_stand_in_counts_out_only_the_attempts_it_admits() {
    // The store's count of attempts out is the fleet's: 6 the other processes admitted
    // and answered to themselves. Kept by a stand-in, each of its readings would take
    // them for its own: with 19 left it would see its quarter spent.
    let t0 = Instant::now();
    let mut known = announced_at(0);
    let six = tickets(&known.admit(S, &callers(6)));
    assert_eq!(known.clone().admit(S, &callers(1)).decisions.len(), 1);
    let fallback = stand_in(&known, t0);
    let answer = fallback.run(
        &"timed out",
        t0 + Duration::from_secs(1),
        &ops(vec![said(Some(six[5]), 19)], 64),
    );
    assert!(admitted(&answer) >= 3, "{answer:?}");
}

#[test]
fn a_stand_in_takes_a_quarter_of_the_burst_and_never_room_the_others_may_hold() {
    let t0 = Instant::now();
    let fallback = stand_in(&announced_at(0), t0);
    let at = |ms: u64| t0 + Duration::from_secs(5) + Duration::from_millis(ms);
    // A full bucket: a quarter of it at once (less the unit the other stand-ins may take
    // first).
    let first = fallback.run(&"timed out", at(0), &ops(vec![], 64));
    let mine = tickets(&first);
    assert!((3..=5).contains(&mine.len()), "{first:?}");
    // Its own answers, 1 ms apart, say the room left: a quarter of each would take it
    // all, answer after answer. Only the room past the other stand-ins' cells (15) is
    // certain: one more at most.
    let mut more = 0;
    for (i, t) in mine.iter().enumerate() {
        let left = 19 - i as u64;
        more += admitted(&fallback.run(
            &"timed out",
            at(1 + i as u64),
            &ops(vec![said(Some(*t), left)], 64),
        ));
    }
    assert!(more <= 1, "{more} more");
    // One at a time, each answered before the next is asked for (no doubt about their
    // order): the server's room goes down by one each time, and stays past the others'.
    let (mut last, mut left) = (*mine.last().unwrap(), 15 - more as u64);
    let mut singles = 0;
    for i in 0..10 {
        let answer = fallback.run(
            &"timed out",
            at(10 + i),
            &ops(vec![said(Some(last), left)], 1),
        );
        if let Some(t) = tickets(&answer).first() {
            (last, left, singles) = (*t, left - 1, singles + 1);
        }
    }
    assert_eq!(singles, 0, "room the other stand-ins may hold");
}

#[test]
fn a_stand_in_hears_a_spent_window_as_its_quarter_cell_empty() {
    // The server says nothing is left: the stand-in's next goes one unit at its quarter
    // pace later (200 ms), not after the whole cell at that pace (4 s, which a budget
    // back from the outage would keep too).
    let t0 = Instant::now();
    let fallback = stand_in(&announced_at(0), t0);
    let at = t0 + Duration::from_secs(5);
    let first = tickets(&fallback.run(&"timed out", at, &ops(vec![], 1)));
    assert_eq!(first.len(), 1);
    let spent = fallback.run(
        &"timed out",
        at + Duration::from_millis(1),
        &ops(vec![said(Some(first[0]), 0)], 64),
    );
    assert_eq!(admitted(&spent), 0);
    assert!(
        (150 * MS..=300 * MS).contains(&spent.next_in_us),
        "{spent:?}"
    );
}

#[test]
fn a_budget_back_from_an_outage_takes_a_quarter_of_what_is_free_and_grows_back_from_then() {
    // Two processes fell back; this one reaches Redis again while the other may still
    // admit on its stand-in for up to its pause between connection attempts.
    let t0 = Instant::now();
    let store = SharedStore::new("redis", LimiterConfig::default());
    let known = announced_at(0);
    store.up(t0, MODEL, &known);
    let down = t0 + Duration::from_secs(1);
    let _ = store.failed(down, &"timed out", &ops(vec![], 1));
    assert!(store.is_down());
    let back = t0 + Duration::from_secs(9);
    let back_us = 9 * S;
    let mut merged = store.starting_state(back, back_us, MODEL, Some(known), false);
    assert!(merged.share <= DEGRADED_SHARE, "{}", merged.share);
    assert_eq!(merged.cells_at_share, 1);
    // Idle for seconds, the bucket is full: a quarter of it, not all 20 at a quarter of
    // the pace.
    let first = merged.admit(back_us, &callers(64));
    assert!((4..=5).contains(&admitted(&first)), "{first:?}");
    // A second later its share has grown by a quarter, from the rejoin.
    let t = tickets(&first)[0];
    merged.report(back_us + S, &said(Some(t), 19));
    assert!(
        (0.45..=0.55).contains(&merged.share),
        "grew back from the rejoin: {}",
        merged.share
    );
}

#[test]
fn a_round_through_a_far_redis_admits_within_its_round_trip_and_sets_nothing_late() {
    let store = SharedStore::new("redis", LimiterConfig::default());
    let seen = Seen::default();
    let trip = Duration::from_millis(200);
    let patience = Duration::from_millis(500);
    let t0 = Instant::now();
    // Redis's clock, and the budget as Redis holds it: saturated, 1 unit left now.
    let redis_now = 1_700_000_000 * S;
    let mut held = announced_at(redis_now - 2 * S);
    let nineteen = tickets(&held.admit(redis_now, &callers(19)));
    assert_eq!(nineteen.len(), 19);
    let value = codec::encode_value(&held);

    let (mut round, read) = RedisRound::start("id", ops(vec![], 64), &seen, &store, t0, patience);
    assert_eq!(read.args[0], b"0".to_vec(), "nothing seen: a read first");
    let RedisStep::Call(cas) = round.reply(&store, t0 + trip, found(value.clone(), redis_now))
    else {
        panic!("a compare-and-set follows the read")
    };
    assert_eq!(cas.args[0], b"1".to_vec(), "a compare-and-set");
    assert!(!cas.args[2].is_empty(), "with the new value");
    let deadline: u64 = String::from_utf8(cas.args[4].clone())
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(
        deadline,
        redis_now + 500 * MS,
        "set only while the caller still waits"
    );
    let RedisStep::Done(answer) =
        round.reply(&store, t0 + trip * 2, stored_at(redis_now + 200 * MS))
    else {
        panic!("the value was set")
    };
    // The unit left now, and the ones that come back until the next operation's callers
    // would go (three round trips: 50, 100... 558 ms): admitted, their waits shortened by
    // the trip back.
    assert_eq!(admitted(&answer), 12, "{answer:?}");
    let w = waits(&answer);
    assert_eq!(w[..4], [0; 4], "due before the answer is back: {w:?}");
    assert!((350 * MS..=360 * MS).contains(&w[11]), "{w:?}");
}

#[test]
fn a_round_through_a_redis_nearby_admits_within_its_short_horizon_as_before() {
    let store = SharedStore::new("redis", LimiterConfig::default());
    let seen = Seen::default();
    // Slower than a timer's slack, nearer than another region.
    let trip = Duration::from_millis(20);
    let t0 = Instant::now();
    let redis_now = 1_700_000_000 * S;
    let mut held = announced_at(redis_now - 2 * S);
    assert_eq!(tickets(&held.admit(redis_now, &callers(19))).len(), 19);
    let value = codec::encode_value(&held);
    let (mut round, _read) = RedisRound::start(
        "id",
        ops(vec![], 64),
        &seen,
        &store,
        t0,
        Duration::from_millis(500),
    );
    let RedisStep::Call(_cas) = round.reply(&store, t0 + trip, found(value, redis_now)) else {
        panic!("a compare-and-set follows the read")
    };
    let RedisStep::Done(answer) =
        round.reply(&store, t0 + trip * 2, stored_at(redis_now + 20 * MS))
    else {
        panic!("the value was set")
    };
    // The one unit left: the next is 50 ms away, past the 5 ms horizon.
    assert_eq!(admitted(&answer), 1, "{answer:?}");
    assert!(answer.next_in_us >= 45 * MS, "{answer:?}");
}
