//! The file store for the async client: every budget of a key in one small state file,
//! shared by the processes of one host through an exclusive lock, locked, read and written
//! on a thread of the limiter's own, never on the runtime's workers. Each transaction is
//! [`SharedStore::file_transaction`]; who asks the file when is this process's line.

use std::fmt;
use std::fs::{File, OpenOptions, TryLockError};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mistral_core::limiter::LimiterConfig;
use mistral_core::{ApiKey, Ask, Grant, Report};
use mistral_limiter::store::file::{LOCK_TIMEOUT, lock_pause};
use mistral_limiter::store::{SharedStore, StoreOps, default_state_dir, state_file_name, store_id};
use mistral_limiter::{AdmitAnswer, BudgetState, LineView};
use tokio::sync::oneshot;

use super::queued::{AsyncQueued, AsyncStoreIo};
use super::{AsyncLimiter, BoxFuture};
use crate::clock::now;

/// The most operations one transaction (one lock of the file) carries.
const BATCH: usize = 256;

/// A caller that fits within this long is admitted (a file operation and a task's
/// wake-up take well under it).
pub const FILE_HORIZON: Duration = Duration::from_millis(2);

/// The head of this process's line asks the file again at least this often: capacity
/// freed by another process is noticed within it.
pub const FILE_ASK_GAP: Duration = Duration::from_millis(100);

/// A limiter whose budgets live in a state file shared by every process of the host
/// that opens it (either client's): one budget per model, admitted by the same
/// arithmetic as [`mistral_limiter::LocalLimiter`].
///
/// The tasks of this process wait in its own line; only the head of a budget's line
/// asks the file, for itself and the tasks behind it, and reports go with the next
/// operation. Operations are queued to the limiter's own thread, which runs
/// transactions: lock the file (`flock`, exclusive; the kernel drops it if the holder
/// dies), read it, decode it (a corrupt, truncated or foreign file is logged and starts
/// from what this process knows), the operations queued meanwhile (at most 256), write
/// it back, unlock. The runtime's workers never wait for the lock, even while another
/// process holds it, and the lock is never held across a request or a sleep. Time is
/// the wall clock in microseconds since the Unix epoch, read under the lock, so every
/// process of the host shares it. The configured limits ([`LimiterConfig`]) belong to
/// each process and seed a budget the file does not hold yet.
///
/// If the file cannot be read or written (or its lock is held past two seconds,
/// [`FileLimiter::with_lock_timeout`]), the call is admitted in-process at a quarter of
/// the known limits and a warning is logged once until the file works again. Keep the
/// file on a local disk: `flock` over NFS or SMB may not exclude other hosts.
pub struct FileLimiter {
    queued: AsyncQueued<FileIo>,
}

/// The state file's thread, and what it shares with the tasks.
struct FileIo {
    path: PathBuf,
    jobs: mpsc::Sender<Job>,
    store: Arc<SharedStore>,
    lock_timeout: Arc<std::sync::atomic::AtomicU64>,
}

struct Job {
    ops: StoreOps,
    /// The caller's clock when it asked (for the stand-in).
    now: Instant,
    /// Replaces the wall clock (tests); such a job has a transaction of its own.
    now_override: Option<u64>,
    reply: oneshot::Sender<io::Result<AdmitAnswer>>,
}

/// The open state file, which file it is, and whether this process must bring what it
/// knows into it at the next transaction. Owned by the file's thread.
struct Handle {
    path: PathBuf,
    file: File,
    id: Option<FileId>,
    rejoin: bool,
}

/// Device and inode: which file a path or an open file is.
type FileId = (u64, u64);

impl FileLimiter {
    /// The limiter of `key` at `base_url`, in [`FileLimiter::default_dir`] under
    /// [`FileLimiter::file_name`]. Creates the directory (mode 0700) and the file (mode
    /// 0600) when missing (on the calling thread, once).
    pub fn open(base_url: &str, key: &ApiKey, config: LimiterConfig) -> io::Result<Self> {
        let path = Self::default_dir().join(Self::file_name(base_url, key));
        Self::at_path(path, config)
    }

    /// The limiter whose state file is `path` (created, with its directory, when
    /// missing, on the calling thread). Every process that opens the same path shares
    /// the budgets. Starts the limiter's thread, which ends when the limiter is dropped.
    pub fn at_path(path: impl AsRef<Path>, config: LimiterConfig) -> io::Result<Self> {
        let path = path.as_ref().to_path_buf();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            create_dir(dir)
                .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", dir.display())))?;
        }
        let file = open_private(&path)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
        let id = file_id(&file.metadata()?);
        let handle = Handle {
            path: path.clone(),
            file,
            id,
            rejoin: false,
        };
        let store = Arc::new(SharedStore::new("file", config.clone()));
        let lock_timeout = Arc::new(std::sync::atomic::AtomicU64::new(micros(LOCK_TIMEOUT)));
        let (jobs, queue) = mpsc::channel();
        let (thread_store, thread_timeout) = (Arc::clone(&store), Arc::clone(&lock_timeout));
        std::thread::Builder::new()
            .name("mistral-limiter-file".into())
            .spawn(move || serve(handle, &thread_store, &thread_timeout, &queue))?;
        let io = FileIo {
            path,
            jobs,
            store,
            lock_timeout,
        };
        Ok(Self {
            queued: AsyncQueued::new(io, &config, fastrand::u64(..), FILE_HORIZON, FILE_ASK_GAP),
        })
    }

    /// Sets how long an operation waits for the file's lock before it is admitted
    /// in-process instead (default 2 s).
    pub fn with_lock_timeout(self, timeout: Duration) -> Self {
        self.queued
            .store()
            .lock_timeout
            .store(micros(timeout), std::sync::atomic::Ordering::Relaxed);
        self
    }

    /// Where [`FileLimiter::open`] keeps state files (see
    /// [`mistral_limiter::store::default_state_dir`]).
    pub fn default_dir() -> PathBuf {
        default_state_dir()
    }

    /// The state file's name for `key` at `base_url`:
    /// `limiter-<`[`store_id`]`>.state`. Never contains the key.
    pub fn file_name(base_url: &str, key: &ApiKey) -> String {
        state_file_name(&store_id(base_url, key))
    }

    /// The state file.
    pub fn path(&self) -> &Path {
        &self.queued.store().path
    }

    /// `true` while the file cannot be used and calls are admitted in-process.
    pub fn is_degraded(&self) -> bool {
        self.queued.store().store.is_down()
    }

    /// `model`'s line in this process as it is now.
    pub fn line(&self, model: &str) -> LineView {
        self.queued.line(model)
    }

    /// A copy of `model`'s budget as the file holds it now.
    pub async fn budget(&self, model: &str) -> io::Result<Option<BudgetState>> {
        let ops = StoreOps {
            model: model.to_owned(),
            ..StoreOps::default()
        };
        // An empty operation reads the budget (and keeps it).
        self.queued.store().send(now(), None, ops).await?;
        Ok(self.queued.store().store.fallback().known(model))
    }

    /// One operation on the file at `now_us` (`None`: the wall clock), without the
    /// in-process fallback: its answer. For tests.
    #[doc(hidden)]
    pub async fn run_at(&self, now_us: Option<u64>, ops: &StoreOps) -> io::Result<AdmitAnswer> {
        self.queued.store().send(now(), now_us, ops.clone()).await
    }
}

impl FileIo {
    /// Queues `ops` to the file's thread and awaits its answer.
    async fn send(
        &self,
        now: Instant,
        now_override: Option<u64>,
        ops: StoreOps,
    ) -> io::Result<AdmitAnswer> {
        let (reply, answer) = oneshot::channel();
        let job = Job {
            ops,
            now,
            now_override,
            reply,
        };
        self.jobs
            .send(job)
            .map_err(|_| io::Error::other("the limiter's file thread has stopped"))?;
        answer
            .await
            .unwrap_or_else(|_| Err(io::Error::other("the limiter's file thread has stopped")))
    }
}

impl AsyncStoreIo for FileIo {
    fn run(&self, now: Instant, ops: StoreOps) -> BoxFuture<'_, AdmitAnswer> {
        Box::pin(async move {
            match self.send(now, None, ops.clone()).await {
                Ok(answer) => answer,
                Err(error) => self.store.failed(now, &error, &ops),
            }
        })
    }
}

impl AsyncLimiter for FileLimiter {
    fn admit<'a>(&'a self, ask: &'a Ask) -> BoxFuture<'a, Grant> {
        self.queued.admit(ask)
    }

    fn report<'a>(&'a self, now: Instant, report: &'a Report) -> BoxFuture<'a, ()> {
        self.queued.report(now, report)
    }
}

impl fmt::Debug for FileLimiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileLimiter")
            .field("io", self.queued.store())
            .finish()
    }
}

impl fmt::Debug for FileIo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileIo")
            .field("path", &self.path)
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// The file's thread: takes the queued jobs, a batch per transaction, until every
/// sender is gone.
fn serve(
    mut handle: Handle,
    store: &SharedStore,
    lock_timeout: &std::sync::atomic::AtomicU64,
    queue: &mpsc::Receiver<Job>,
) {
    while let Ok(first) = queue.recv() {
        let mut batch = vec![first];
        // A job with its own clock goes alone.
        if batch[0].now_override.is_none() {
            while batch.len() < BATCH {
                match queue.try_recv() {
                    Ok(job) if job.now_override.is_none() => batch.push(job),
                    Ok(job) => {
                        transaction(&mut handle, store, lock_timeout, batch);
                        batch = vec![job];
                        break;
                    }
                    Err(_) => break,
                }
            }
        }
        transaction(&mut handle, store, lock_timeout, batch);
    }
}

/// One transaction for `batch`: every job answered, with its answer or the error.
fn transaction(
    handle: &mut Handle,
    store: &SharedStore,
    lock_timeout: &std::sync::atomic::AtomicU64,
    batch: Vec<Job>,
) {
    let timeout = Duration::from_micros(lock_timeout.load(std::sync::atomic::Ordering::Relaxed));
    let now = batch.iter().map(|j| j.now).max().unwrap_or_else(now);
    let now_override = batch.first().and_then(|j| j.now_override);
    let (ops, replies): (Vec<StoreOps>, Vec<_>) =
        batch.into_iter().map(|j| (j.ops, j.reply)).unzip();
    match transact(handle, store, timeout, now, now_override, &ops) {
        Ok(answers) => {
            for (reply, answer) in replies.into_iter().zip(answers) {
                let _ = reply.send(Ok(answer));
            }
        }
        Err(error) => {
            for reply in replies {
                let _ = reply.send(Err(io::Error::new(error.kind(), error.to_string())));
            }
        }
    }
}

/// Whether the path still names the open file. `false` when the file was deleted
/// or replaced (another process then made a new one, or will): reopen it.
fn still_ours(handle: &Handle) -> bool {
    match std::fs::metadata(&handle.path) {
        Ok(meta) => handle.id.is_none() || file_id(&meta) == handle.id,
        Err(_) => false,
    }
}

/// Opens the path again (creating the file when missing): the budgets must now be
/// joined with what this process knows, at the next transaction.
fn reopen(handle: &mut Handle) -> io::Result<()> {
    let file = open_private(&handle.path)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", handle.path.display())))?;
    handle.id = file_id(&file.metadata()?);
    handle.file = file;
    handle.rejoin = true;
    tracing::warn!(
        path = %handle.path.display(),
        "the limiter's state file was deleted or replaced; joining the new one with \
         the budgets this process knows"
    );
    Ok(())
}

/// Lock, read, the operations, write, unlock. The file is first checked to be the one
/// the path names (a deleted or replaced file is reopened), and checked again once
/// locked.
fn transact(
    handle: &mut Handle,
    store: &SharedStore,
    lock_timeout: Duration,
    now: Instant,
    now_override: Option<u64>,
    ops: &[StoreOps],
) -> io::Result<Vec<AdmitAnswer>> {
    for _ in 0..3 {
        if !still_ours(handle) {
            reopen(handle)?;
        }
        lock(&handle.file, lock_timeout)?;
        if still_ours(handle) {
            break;
        }
        let _ = handle.file.unlock();
    }
    let result = locked(handle, store, now, now_override, ops);
    let unlocked = handle.file.unlock();
    let r = result?;
    unlocked?;
    Ok(r)
}

fn locked(
    handle: &mut Handle,
    store: &SharedStore,
    now: Instant,
    now_override: Option<u64>,
    ops: &[StoreOps],
) -> io::Result<Vec<AdmitAnswer>> {
    let mut file = &handle.file;
    let mut bytes = Vec::with_capacity(1024);
    file.seek(SeekFrom::Start(0))?;
    file.read_to_end(&mut bytes)?;
    // Read under the lock: every process's operations are ordered by time.
    let now_us = now_override.unwrap_or_else(wall_clock_us);
    let rejoin = std::mem::take(&mut handle.rejoin);
    let written = store.file_transaction(now, now_us, &handle.path, &bytes, rejoin, ops);
    file.seek(SeekFrom::Start(0))?;
    file.write_all(&written.bytes)?;
    if bytes.len() > written.bytes.len() {
        file.set_len(written.bytes.len() as u64)?;
    }
    Ok(written.answers)
}

#[cfg(unix)]
fn file_id(meta: &std::fs::Metadata) -> Option<FileId> {
    use std::os::unix::fs::MetadataExt;
    Some((meta.dev(), meta.ino()))
}

#[cfg(not(unix))]
fn file_id(_meta: &std::fs::Metadata) -> Option<FileId> {
    None
}

/// Microseconds since the Unix epoch (0 before it).
fn wall_clock_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// Takes the exclusive lock, giving up after `timeout` (on the file's thread).
fn lock(file: &File, timeout: Duration) -> io::Result<()> {
    let started = Instant::now();
    let mut tries = 0u32;
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(()),
            Err(TryLockError::Error(e)) => return Err(e),
            Err(TryLockError::WouldBlock) => {}
        }
        if started.elapsed() >= timeout {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the limiter's state file stayed locked too long",
            ));
        }
        tries += 1;
        match lock_pause(tries) {
            None => std::thread::yield_now(),
            Some(pause) => std::thread::sleep(pause),
        }
    }
}

#[cfg(unix)]
fn create_dir(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

#[cfg(not(unix))]
fn create_dir(dir: &Path) -> io::Result<()> {
    std::fs::create_dir_all(dir)
}

#[cfg(unix)]
fn open_private(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)?;
    // A file made by something else with a wider mode: narrow it (best effort).
    if let Ok(meta) = file.metadata()
        && meta.permissions().mode() & 0o077 != 0
    {
        let _ = file.set_permissions(std::fs::Permissions::from_mode(0o600));
    }
    Ok(file)
}

#[cfg(not(unix))]
fn open_private(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
}
