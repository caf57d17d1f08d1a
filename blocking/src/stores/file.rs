//! The file store: every budget of a key in one small state file, shared by the
//! processes of one host through an exclusive lock. Only the I/O lives here (open, lock,
//! read, write); each transaction is [`SharedStore::file_transaction`], and who asks the
//! file when is this process's line ([`Queued`]).

use std::fmt;
use std::fs::{File, OpenOptions, TryLockError};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::task::Waker;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mistral_core::limiter::{Admit, LimiterConfig, Place};
use mistral_core::{ApiKey, Ask, Limiter, Report};
use mistral_limiter::store::file::{LOCK_TIMEOUT, lock_pause};
use mistral_limiter::store::{SharedStore, StoreOps, default_state_dir, state_file_name, store_id};
use mistral_limiter::{AdmitAnswer, BudgetState, LineView, Queued, StoreIo};

/// A caller that fits within this long is admitted (a file operation and a thread's
/// wake-up take well under it).
pub const FILE_HORIZON: Duration = Duration::from_millis(2);

/// The head of this process's line asks the file again at least this often: capacity
/// freed by another process is noticed within it.
pub const FILE_ASK_GAP: Duration = Duration::from_millis(100);

/// The open state file, which file it is, and whether this process must bring what it
/// knows into it at the next transaction.
struct Handle {
    file: File,
    id: Option<FileId>,
    rejoin: bool,
}

/// Device and inode: which file a path or an open file is.
type FileId = (u64, u64);

/// A limiter whose budgets live in a state file shared by every process of the host
/// that opens it: one budget per model, admitted by the same arithmetic as
/// [`mistral_limiter::LocalLimiter`].
///
/// The callers of this process wait in its own line; only the head of a budget's line
/// asks the file, for itself and the callers behind it, and every report is one
/// transaction: lock the file (`flock`, exclusive; the kernel drops it if the holder
/// dies), read it, decode it ([`codec`](mistral_limiter::store::codec): a corrupt,
/// truncated or foreign file is logged and starts from what this process knows), run the
/// operation, write it back, unlock. The lock is never held across a request or a sleep.
/// Time is the wall clock in microseconds since the Unix epoch, read under the lock, so
/// every process of the host shares it; a step backwards shifts every stored time with
/// it (no stall) and a step forwards finds full cells (as after an idle time). The
/// configured limits ([`LimiterConfig`]) belong to each process and seed a budget the
/// file does not hold yet; the file holds only states.
///
/// If the file cannot be read or written (or its lock is held past two seconds,
/// [`FileLimiter::with_lock_timeout`]), the call is admitted in-process at a quarter of
/// the known limits and a warning is logged once until the file works again. Keep the
/// file on a local disk: `flock` over NFS or SMB may not exclude other hosts.
pub struct FileLimiter {
    queued: Queued<FileIo>,
}

/// The state file's I/O.
struct FileIo {
    path: PathBuf,
    file: Mutex<Handle>,
    lock_timeout: Duration,
    store: SharedStore,
}

impl FileLimiter {
    /// The limiter of `key` at `base_url`, in [`FileLimiter::default_dir`] under
    /// [`FileLimiter::file_name`]. Creates the directory (mode 0700) and the file (mode
    /// 0600) when missing.
    pub fn open(base_url: &str, key: &ApiKey, config: LimiterConfig) -> io::Result<Self> {
        let path = Self::default_dir().join(Self::file_name(base_url, key));
        Self::at_path(path, config)
    }

    /// The limiter whose state file is `path` (created, with its directory, when
    /// missing). Every process that opens the same path shares the budgets.
    pub fn at_path(path: impl AsRef<Path>, config: LimiterConfig) -> io::Result<Self> {
        Self::build(path.as_ref(), config, LOCK_TIMEOUT)
    }

    fn build(path: &Path, config: LimiterConfig, lock_timeout: Duration) -> io::Result<Self> {
        let path = path.to_path_buf();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            create_dir(dir)
                .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", dir.display())))?;
        }
        let file = open_private(&path)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
        let id = file_id(&file.metadata()?);
        let line =
            Queued::<FileIo>::line_config(&config, fastrand::u64(..), FILE_HORIZON, FILE_ASK_GAP);
        let io = FileIo {
            path,
            file: Mutex::new(Handle {
                file,
                id,
                rejoin: false,
            }),
            store: SharedStore::new("file", config),
            lock_timeout,
        };
        Ok(Self {
            queued: Queued::new(io, line),
        })
    }

    /// Sets how long an operation waits for the file's lock before it is admitted
    /// in-process instead (default 2 s).
    pub fn with_lock_timeout(self, timeout: Duration) -> Self {
        let io = self.queued.into_store();
        let line = Queued::<FileIo>::line_config(
            io.store.config(),
            fastrand::u64(..),
            FILE_HORIZON,
            FILE_ASK_GAP,
        );
        Self {
            queued: Queued::new(
                FileIo {
                    lock_timeout: timeout,
                    ..io
                },
                line,
            ),
        }
    }

    /// Where [`FileLimiter::open`] keeps state files: `mistral-limiter` under
    /// `$XDG_RUNTIME_DIR` (per user, in memory, cleared at logout), else under
    /// `$XDG_CACHE_HOME`, else `~/.cache`, else the system's temporary directory.
    pub fn default_dir() -> PathBuf {
        default_state_dir()
    }

    /// The state file's name for `key` at `base_url`:
    /// `limiter-<`[`store_id`]`>.state`. Never contains the key.
    pub fn file_name(base_url: &str, key: &ApiKey) -> String {
        state_file_name(&store_id(base_url, key))
    }

    /// `true` while the file cannot be used and calls are admitted in-process.
    pub fn is_degraded(&self) -> bool {
        self.queued.store().store.is_down()
    }

    /// The state file.
    pub fn path(&self) -> &Path {
        &self.queued.store().path
    }

    /// `model`'s line in this process as it is now.
    pub fn line(&self, model: &str) -> LineView {
        self.queued.line(model)
    }

    /// A copy of `model`'s budget as the file holds it now.
    pub fn budget(&self, model: &str) -> io::Result<Option<BudgetState>> {
        let io = self.queued.store();
        let mut handle = io.handle();
        let bytes = io.locked_read(&mut handle)?;
        Ok(mistral_limiter::store::codec::decode(&bytes)
            .ok()
            .and_then(|mut states| states.remove(model)))
    }

    /// One operation on the file at `now_us` (`None`: the wall clock), without the
    /// in-process fallback: its answer. For tests.
    #[doc(hidden)]
    pub fn run_at(&self, now_us: Option<u64>, ops: &StoreOps) -> io::Result<AdmitAnswer> {
        self.queued
            .store()
            .transact(Instant::now(), now_us, std::slice::from_ref(ops))
            .map(|mut answers| answers.remove(0))
    }
}

impl Limiter for FileLimiter {
    fn poll_admit(&self, now: Instant, place: &mut Place, ask: &Ask, waker: &Waker) -> Admit {
        self.queued.poll_admit(now, place, ask, waker)
    }
    fn leave(&self, place: &mut Place) {
        self.queued.leave(place);
    }
    fn report(&self, now: Instant, report: &Report) {
        self.queued.report(now, report);
    }
}

impl StoreIo for FileIo {
    fn run(&self, now: Instant, ops: &StoreOps) -> (AdmitAnswer, Instant) {
        let answer = match self.transact(now, None, std::slice::from_ref(ops)) {
            Ok(mut answers) => answers.remove(0),
            Err(error) => self.store.failed(now, &error, ops),
        };
        (answer, Instant::now())
    }
}

impl FileIo {
    fn handle(&self) -> MutexGuard<'_, Handle> {
        self.file.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the path still names the open file. `false` when the file was deleted
    /// or replaced (another process then made a new one, or will): reopen it.
    fn still_ours(&self, handle: &Handle) -> bool {
        match std::fs::metadata(&self.path) {
            Ok(meta) => handle.id.is_none() || file_id(&meta) == handle.id,
            Err(_) => false,
        }
    }

    /// Opens the path again (creating the file when missing): the budgets must now be
    /// joined with what this process knows, at the next transaction.
    fn reopen(&self, handle: &mut Handle) -> io::Result<()> {
        let file = open_private(&self.path)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", self.path.display())))?;
        handle.id = file_id(&file.metadata()?);
        handle.file = file;
        handle.rejoin = true;
        tracing::warn!(
            path = %self.path.display(),
            "the limiter's state file was deleted or replaced; joining the new one with \
             the budgets this process knows"
        );
        Ok(())
    }

    /// Locks the file that the path names (a deleted or replaced file is reopened, and
    /// checked again once locked).
    fn lock_current(&self, handle: &mut Handle) -> io::Result<()> {
        for _ in 0..3 {
            if !self.still_ours(handle) {
                self.reopen(handle)?;
            }
            lock(&handle.file, self.lock_timeout)?;
            if self.still_ours(handle) {
                return Ok(());
            }
            let _ = handle.file.unlock();
        }
        Ok(())
    }

    /// The file's bytes, read under its lock.
    fn locked_read(&self, handle: &mut Handle) -> io::Result<Vec<u8>> {
        self.lock_current(handle)?;
        let bytes = read_all(&handle.file);
        let unlocked = handle.file.unlock();
        let bytes = bytes?;
        unlocked?;
        Ok(bytes)
    }

    /// Lock, read, the operations, write, unlock. `now` is the caller's clock (for the
    /// stand-in); the file's is the wall clock, read under the lock (`now_override`
    /// replaces it, for tests).
    fn transact(
        &self,
        now: Instant,
        now_override: Option<u64>,
        ops: &[StoreOps],
    ) -> io::Result<Vec<AdmitAnswer>> {
        let mut handle = self.handle();
        self.lock_current(&mut handle)?;
        let result = self.locked(&mut handle, now, now_override, ops);
        let unlocked = handle.file.unlock();
        let r = result?;
        unlocked?;
        Ok(r)
    }

    fn locked(
        &self,
        handle: &mut Handle,
        now: Instant,
        now_override: Option<u64>,
        ops: &[StoreOps],
    ) -> io::Result<Vec<AdmitAnswer>> {
        let mut file = &handle.file;
        let bytes = read_all(file)?;
        // Read under the lock: every process's operations are ordered by time.
        let now_us = now_override.unwrap_or_else(wall_clock_us);
        let rejoin = std::mem::take(&mut handle.rejoin);
        let written = self
            .store
            .file_transaction(now, now_us, &self.path, &bytes, rejoin, ops);
        file.seek(SeekFrom::Start(0))?;
        file.write_all(&written.bytes)?;
        if bytes.len() > written.bytes.len() {
            file.set_len(written.bytes.len() as u64)?;
        }
        Ok(written.answers)
    }
}

fn read_all(mut file: &File) -> io::Result<Vec<u8>> {
    let mut bytes = Vec::with_capacity(1024);
    file.seek(SeekFrom::Start(0))?;
    file.read_to_end(&mut bytes)?;
    Ok(bytes)
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
            .field("lock_timeout", &self.lock_timeout)
            .field("store", &self.store)
            .finish()
    }
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

/// Takes the exclusive lock, giving up after `timeout`.
fn lock(file: &File, timeout: Duration) -> io::Result<()> {
    let deadline = Instant::now() + timeout;
    let mut tries = 0u32;
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(()),
            Err(TryLockError::Error(e)) => return Err(e),
            Err(TryLockError::WouldBlock) => {}
        }
        if Instant::now() >= deadline {
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
