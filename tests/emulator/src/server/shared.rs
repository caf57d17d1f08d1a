//! The state every connection, the background consumer and the handle share: the
//! configuration, the meters, the request log, the faults scripted and queued, the
//! runtime knobs; and the schedule of limit changes that runs against it.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::batch::Batches;
use crate::config::{Config, Fault};
use crate::conversations::Conversations;
use crate::limits::{Models, lock};
use crate::log::{Entry, Log};
use crate::rng::{mix, unit, uuid};

/// Purposes of seeded draws.
pub(super) const DRAW_CAPACITY: u64 = 1;
pub(super) const DRAW_FAULT: u64 = 2;
pub(super) const DRAW_FAULT_KIND: u64 = 3;
pub(super) const DRAW_ID: u64 = 4;
pub(super) const DRAW_LATENCY: u64 = 5;

/// State shared by every connection, the background consumer and the handle.
#[derive(Debug)]
pub(crate) struct Shared {
    pub config: Config,
    pub epoch: Instant,
    pub(super) seq: AtomicU64,
    bg_seq: AtomicU64,
    pub models: Models,
    log: Mutex<Vec<Entry>>,
    dropped: AtomicU64,
    background_share: AtomicU64,
    pub(super) capacity_rate: AtomicU64,
    pub(super) headers: AtomicBool,
    queued: Mutex<VecDeque<Fault>>,
    queued_len: AtomicUsize,
    scripted: HashMap<u64, Fault>,
    /// Files and batch jobs (`/v1/files`, `/v1/batch/jobs`).
    pub(super) batches: Batches,
    /// Stored conversations (`/v1/conversations`).
    pub(super) conversations: Conversations,
}

impl Shared {
    pub(crate) fn new(config: Config) -> Shared {
        Shared {
            models: Models::new(&config),
            epoch: Instant::now(),
            seq: AtomicU64::new(0),
            bg_seq: AtomicU64::new(0),
            log: Mutex::new(Vec::with_capacity(4096)),
            dropped: AtomicU64::new(0),
            background_share: AtomicU64::new(clamp01(config.background_share).to_bits()),
            capacity_rate: AtomicU64::new(clamp01(config.capacity_rate).to_bits()),
            headers: AtomicBool::new(config.headers),
            queued: Mutex::new(VecDeque::new()),
            queued_len: AtomicUsize::new(0),
            scripted: config.faults.iter().copied().collect(),
            batches: Batches::default(),
            conversations: Conversations::default(),
            config,
        }
    }

    /// Time since the emulator's start.
    pub(crate) fn now(&self) -> Duration {
        self.epoch.elapsed()
    }

    pub(crate) fn background_share(&self) -> f64 {
        f64::from_bits(self.background_share.load(Ordering::Relaxed))
    }

    pub(crate) fn set_background_share(&self, share: f64) {
        self.background_share
            .store(clamp01(share).to_bits(), Ordering::Relaxed);
    }

    pub(crate) fn set_capacity_rate(&self, rate: f64) {
        self.capacity_rate
            .store(clamp01(rate).to_bits(), Ordering::Relaxed);
    }

    pub(crate) fn set_headers(&self, on: bool) {
        self.headers.store(on, Ordering::Relaxed);
    }

    pub(crate) fn push_fault(&self, fault: Fault) {
        let mut queue = lock(&self.queued);
        queue.push_back(fault);
        self.queued_len.store(queue.len(), Ordering::Release);
    }

    pub(crate) fn next_background_seq(&self) -> u64 {
        self.bg_seq.fetch_add(1, Ordering::Relaxed)
    }

    pub(crate) fn requests_received(&self) -> u64 {
        self.seq.load(Ordering::Relaxed)
    }

    pub(super) fn fault_for(&self, seq: u64) -> Option<Fault> {
        if let Some(&f) = self.scripted.get(&seq) {
            return Some(f);
        }
        if self.queued_len.load(Ordering::Acquire) > 0 {
            let mut queue = lock(&self.queued);
            let fault = queue.pop_front();
            self.queued_len.store(queue.len(), Ordering::Release);
            if fault.is_some() {
                return fault;
            }
        }
        let faults = &self.config.random_faults;
        if !faults.is_empty()
            && self.config.fault_rate > 0.0
            && unit(self.config.seed, DRAW_FAULT, seq) < self.config.fault_rate
        {
            let i = mix(self.config.seed ^ mix(DRAW_FAULT_KIND ^ seq)) % faults.len() as u64;
            return faults.get(i as usize).copied();
        }
        None
    }

    pub(crate) fn record(&self, entry: Entry) {
        let mut log = lock(&self.log);
        if log.len() < self.config.max_log_entries {
            log.push(entry);
        } else {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(crate) fn snapshot(&self) -> Log {
        let entries = lock(&self.log).clone();
        let slots = self.models.all();
        let limits = slots
            .iter()
            .map(|(name, slot)| (name.clone(), slot.history()))
            .collect();
        let holds = slots
            .iter()
            .map(|(name, slot)| (name.clone(), slot.holds()))
            .collect();
        Log::from_parts(entries, limits)
            .with_in_flight(holds)
            .with_month_resets(self.models.month_resets())
            .with_dropped(self.dropped.load(Ordering::Relaxed))
    }

    /// The service time of admitted request `seq` ([`Config::latency_ms`] plus its draw
    /// of the jitter).
    pub(super) fn latency(&self, seq: u64) -> Duration {
        let base = self.config.latency_ms;
        let jitter = self.config.latency_jitter_ms;
        let extra = if jitter == 0 {
            0
        } else {
            (unit(self.config.seed, DRAW_LATENCY, seq) * (jitter as f64 + 1.0)).floor() as u64
        };
        Duration::from_millis(base.saturating_add(extra.min(jitter)))
    }

    pub(super) fn correlation_id(&self, seq: u64) -> String {
        uuid(self.config.seed ^ DRAW_ID, seq)
    }
}

fn clamp01(x: f64) -> f64 {
    if x.is_finite() {
        x.clamp(0.0, 1.0)
    } else {
        0.0
    }
}

/// Applies [`Config::schedule`] at its times, until the runtime stops.
pub(crate) async fn run_schedule(shared: Arc<Shared>) {
    let mut changes = shared.config.schedule.clone();
    changes.sort_by(|a, b| a.at_secs.total_cmp(&b.at_secs));
    for change in changes {
        let at = Duration::from_secs_f64(change.at_secs.clamp(0.0, 1e9));
        let wait = at.saturating_sub(shared.now());
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        if let Some(factor) = change.limits_factor {
            shared.models.rescale(factor, shared.now());
        }
        if let Some(share) = change.background_share {
            shared.set_background_share(share);
        }
    }
}
