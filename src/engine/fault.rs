//! Fault-injecting storage for tests.
//!
//! [`FaultStorage`] writes real files (so memory maps and plain reads work) and keeps beside
//! them a model of what a power cut would leave: per inode the bytes made durable by the last
//! `sync`, per directory the entries made durable by the last `sync_dir`. [`FaultStorage::power_cut`]
//! rewrites the touched directories to that durable state. A kill -9 cannot prove an fsync
//! (the page cache survives it); this can.
//!
//! Simplifications: directories themselves (`create_dir_all`) are durable at once; real
//! fsyncs are not issued (the model is the truth, and tests stay fast); files written around
//! this storage (plain `std::fs`) are left alone unless an operation here touches them.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::{Condvar, Mutex};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::storage::{FsStorage, Storage, WritableFile};

/// What a power cut does to bytes written after the last sync.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CutMode {
    /// Everything unsynced is lost.
    DropUnsynced,
    /// Each file keeps its durable bytes plus a random-length prefix of what was appended
    /// after its last sync (a torn write).
    TearUnsynced { seed: u64 },
}

/// Error injected by [`FaultStorage::fail_nth_write`] and [`FaultStorage::fail_nth_sync`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    Eio,
    Enospc,
}

impl FaultKind {
    fn error(self) -> io::Error {
        io::Error::from_raw_os_error(match self {
            FaultKind::Eio => libc::EIO,
            FaultKind::Enospc => libc::ENOSPC,
        })
    }
}

/// Which syncs [`FaultStorage::set_ignore_sync`] disables, by file name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SyncClass {
    /// `*.log`
    Wal,
    /// `*.sst`
    Table,
    /// `MANIFEST*`
    Manifest,
    /// `sync_dir`
    Dir,
    /// Any other file.
    Other,
}

impl SyncClass {
    /// The class of a file (never [`SyncClass::Dir`]).
    pub fn of_file(path: &Path) -> SyncClass {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.starts_with("MANIFEST") {
            SyncClass::Manifest
        } else if name.ends_with(".log") {
            SyncClass::Wal
        } else if name.ends_with(".sst") {
            SyncClass::Table
        } else {
            SyncClass::Other
        }
    }
}

/// A barrier that parks mutating operations until a test opens it (for tests that need an
/// agent stopped in the middle of its I/O).
pub struct Gate {
    /// Only operations on files of this class (or `sync_dir` for [`SyncClass::Dir`]) stop; `None`: all.
    class: Option<SyncClass>,
    state: Mutex<GateState>,
    cv: Condvar,
}

struct GateState {
    open: bool,
    waiting: usize,
}

impl Gate {
    /// A closed gate.
    pub fn closed(class: Option<SyncClass>) -> Arc<Gate> {
        Arc::new(Gate {
            class,
            state: Mutex::new(GateState {
                open: false,
                waiting: 0,
            }),
            cv: Condvar::new(),
        })
    }

    pub fn open(&self) {
        self.state.lock().open = true;
        self.cv.notify_all();
    }

    pub fn close(&self) {
        self.state.lock().open = false;
    }

    /// Operations parked right now.
    pub fn waiting(&self) -> usize {
        self.state.lock().waiting
    }

    /// Blocks until at least `n` operations are parked.
    pub fn wait_for_waiters(&self, n: usize) {
        let mut st = self.state.lock();
        while st.waiting < n {
            self.cv.wait(&mut st);
        }
    }

    fn pass(&self, class: SyncClass) {
        if self.class.is_some_and(|c| c != class) {
            return;
        }
        let mut st = self.state.lock();
        if st.open {
            return;
        }
        st.waiting += 1;
        self.cv.notify_all();
        while !st.open {
            self.cv.wait(&mut st);
        }
        st.waiting -= 1;
    }
}

struct Inode {
    current: Vec<u8>,
    durable: Vec<u8>,
}

#[derive(Default)]
struct DirState {
    current: BTreeMap<String, u64>,
    durable: BTreeMap<String, u64>,
}

struct Model {
    /// Bumped by every power cut; handles from an older generation are dead.
    generation: u64,
    next_ino: u64,
    inodes: HashMap<u64, Inode>,
    dirs: HashMap<PathBuf, DirState>,
    /// Real (dev, ino) of files adopted from disk, so adopted hard links share a model inode.
    adopted: HashMap<(u64, u64), u64>,
    op_count: u64,
    fail_after: Option<u64>,
    dead: bool,
    write_fault: Option<(u64, FaultKind)>,
    sync_fault: Option<(u64, FaultKind)>,
    no_space: bool,
    ignore_sync: BTreeSet<SyncClass>,
    rng: StdRng,
}

/// How a mutating operation should go.
enum Fate {
    Proceed,
    /// The process just "died" at this operation.
    Crash,
}

impl Model {
    fn crash_error() -> io::Error {
        io::Error::from_raw_os_error(libc::EIO)
    }

    /// Counts one mutating operation and applies `set_fail_after`.
    fn begin_op(&mut self) -> io::Result<Fate> {
        self.op_count += 1;
        if self.dead {
            return Err(Self::crash_error());
        }
        match self.fail_after {
            Some(0) => {
                self.dead = true;
                Ok(Fate::Crash)
            }
            Some(n) => {
                self.fail_after = Some(n - 1);
                Ok(Fate::Proceed)
            }
            None => Ok(Fate::Proceed),
        }
    }

    /// Counts down a one-shot fault; true when it fires now.
    fn fires(slot: &mut Option<(u64, FaultKind)>) -> Option<FaultKind> {
        match slot {
            Some((0, kind)) => {
                let kind = *kind;
                *slot = None;
                Some(kind)
            }
            Some((n, _)) => {
                *n -= 1;
                None
            }
            None => None,
        }
    }

    fn new_inode(&mut self, current: Vec<u8>, durable: Vec<u8>) -> u64 {
        let ino = self.next_ino;
        self.next_ino += 1;
        self.inodes.insert(ino, Inode { current, durable });
        ino
    }

    /// The model of `dir`, learned from disk (everything there counted durable) on first touch.
    fn dir(&mut self, dir: &Path) -> io::Result<&mut DirState> {
        if !self.dirs.contains_key(dir) {
            let mut state = DirState::default();
            for entry in std::fs::read_dir(dir)? {
                let entry = entry?;
                let meta = entry.metadata()?;
                let Some(name) = entry.file_name().to_str().map(str::to_string) else {
                    continue;
                };
                if !meta.is_file() {
                    continue;
                }
                let ino = self.adopt(&entry.path(), &meta)?;
                state.current.insert(name.clone(), ino);
                state.durable.insert(name, ino);
            }
            self.dirs.insert(dir.to_path_buf(), state);
        }
        self.dirs
            .get_mut(dir)
            .ok_or_else(|| io::Error::other("fault storage: directory model vanished"))
    }

    fn adopt(&mut self, path: &Path, meta: &std::fs::Metadata) -> io::Result<u64> {
        let key = (meta.dev(), meta.ino());
        if let Some(&ino) = self.adopted.get(&key) {
            return Ok(ino);
        }
        let data = std::fs::read(path)?;
        let ino = self.new_inode(data.clone(), data);
        self.adopted.insert(key, ino);
        Ok(ino)
    }

    /// The inode behind `path`; a file that appeared on disk around this storage is adopted
    /// as durable.
    fn lookup(&mut self, path: &Path) -> io::Result<u64> {
        let (dir, name) = split(path)?;
        if let Some(&ino) = self.dir(&dir)?.current.get(&name) {
            return Ok(ino);
        }
        let meta = std::fs::metadata(path)?;
        let ino = self.adopt(path, &meta)?;
        let d = self.dir(&dir)?;
        d.current.insert(name.clone(), ino);
        d.durable.insert(name, ino);
        Ok(ino)
    }

    fn inode(&mut self, ino: u64) -> io::Result<&mut Inode> {
        self.inodes
            .get_mut(&ino)
            .ok_or_else(|| io::Error::other("fault storage: inode missing from the model"))
    }

    fn sync_ignored(&self, class: SyncClass) -> bool {
        self.ignore_sync.contains(&class)
    }
}

/// Directory (canonical when it exists, so aliases of one directory share a model) and name.
fn split(path: &Path) -> io::Result<(PathBuf, String)> {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"))?
        .to_string();
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    Ok((canonical_dir(&parent), name))
}

fn canonical_dir(dir: &Path) -> PathBuf {
    std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf())
}

struct Shared {
    model: Mutex<Model>,
    gate: Mutex<Option<Arc<Gate>>>,
}

impl Shared {
    fn pass_gate(&self, class: SyncClass) {
        // Cloned out so a parked operation holds no lock.
        let gate = self.gate.lock().clone();
        if let Some(g) = gate {
            g.pass(class);
        }
    }
}

/// A [`Storage`] over the real file system that can lose unsynced data and inject errors.
/// Cheap to clone; clones share one model.
#[derive(Clone)]
pub struct FaultStorage {
    shared: Arc<Shared>,
}

impl Default for FaultStorage {
    fn default() -> Self {
        FaultStorage::new()
    }
}

impl FaultStorage {
    pub fn new() -> FaultStorage {
        FaultStorage::with_seed(0)
    }

    /// `seed` drives the random prefixes written by failing appends.
    pub fn with_seed(seed: u64) -> FaultStorage {
        FaultStorage {
            shared: Arc::new(Shared {
                model: Mutex::new(Model {
                    generation: 0,
                    next_ino: 1,
                    inodes: HashMap::new(),
                    dirs: HashMap::new(),
                    adopted: HashMap::new(),
                    op_count: 0,
                    fail_after: None,
                    dead: false,
                    write_fault: None,
                    sync_fault: None,
                    no_space: false,
                    ignore_sync: BTreeSet::new(),
                    rng: StdRng::seed_from_u64(seed),
                }),
                gate: Mutex::new(None),
            }),
        }
    }

    /// Mutating operations attempted so far (append, sync, create, rename, remove, truncate,
    /// sync_dir, hard_link), failed ones included. Not reset by [`Self::power_cut`].
    pub fn op_count(&self) -> u64 {
        self.shared.model.lock().op_count
    }

    /// `Some(n)`: the next `n` mutating operations work, then every one fails with EIO as if
    /// the process had died; the one that dies, if an append, may write a random prefix first.
    /// `None` disarms (a process already dead stays dead until [`Self::power_cut`]).
    pub fn set_fail_after(&self, n: Option<u64>) {
        self.shared.model.lock().fail_after = n;
    }

    /// True once a `set_fail_after` crash point was reached.
    pub fn is_dead(&self) -> bool {
        self.shared.model.lock().dead
    }

    /// The next `n` appends work; the one after writes a random prefix of its data and fails
    /// with `kind`. One shot.
    pub fn fail_nth_write(&self, n: u64, kind: FaultKind) {
        self.shared.model.lock().write_fault = Some((n, kind));
    }

    /// The next `n` syncs of files work; the one after fails with `kind` and makes nothing
    /// durable. One shot.
    pub fn fail_nth_sync(&self, n: u64, kind: FaultKind) {
        self.shared.model.lock().sync_fault = Some((n, kind));
    }

    /// While true, `create` fails with ENOSPC and every append writes a random strict prefix
    /// of its data, then fails with ENOSPC.
    pub fn set_no_space(&self, full: bool) {
        self.shared.model.lock().no_space = full;
    }

    /// While ignored, syncs of that class return Ok but make nothing durable.
    pub fn set_ignore_sync(&self, class: SyncClass, ignore: bool) {
        let mut m = self.shared.model.lock();
        if ignore {
            m.ignore_sync.insert(class);
        } else {
            m.ignore_sync.remove(&class);
        }
    }

    /// Parks mutating operations at `gate` while it is closed.
    pub fn set_gate(&self, gate: Option<Arc<Gate>>) {
        *self.shared.gate.lock() = gate;
    }

    /// Loses power: every directory this storage touched is rewritten to its durable state
    /// (see [`CutMode`]). Afterwards everything on disk counts as durable, the crash state
    /// (`set_fail_after`, pending `fail_nth_*`) is cleared, and file handles from before the cut
    /// fail with EIO. `set_no_space`, `set_ignore_sync` and the gate stay as they are.
    /// Drop the engine first: its threads must not write during or after the cut.
    pub fn power_cut(&self, mode: CutMode) -> io::Result<()> {
        let mut m = self.shared.model.lock();
        let mut tear_rng = match mode {
            CutMode::TearUnsynced { seed } => Some(StdRng::seed_from_u64(seed)),
            CutMode::DropUnsynced => None,
        };

        let mut dirs: Vec<&PathBuf> = m.dirs.keys().collect();
        dirs.sort();
        for dir in &dirs {
            let d = &m.dirs[*dir];
            for name in d.current.keys().chain(d.durable.keys()) {
                match std::fs::remove_file(dir.join(name)) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                    _ => {}
                }
            }
        }

        let mut written: HashMap<u64, PathBuf> = HashMap::new();
        for dir in &dirs {
            for (name, &ino) in &m.dirs[*dir].durable {
                let path = dir.join(name);
                if let Some(first) = written.get(&ino) {
                    std::fs::hard_link(first, &path)?;
                    continue;
                }
                let inode = m
                    .inodes
                    .get(&ino)
                    .ok_or_else(|| io::Error::other("fault storage: inode missing"))?;
                let mut data = inode.durable.clone();
                if let Some(rng) = tear_rng.as_mut() {
                    if inode.current.starts_with(&inode.durable) {
                        let extra = &inode.current[inode.durable.len()..];
                        let keep = rng.gen_range(0..=extra.len());
                        data.extend_from_slice(&extra[..keep]);
                    }
                }
                std::fs::write(&path, &data)?;
                written.insert(ino, path);
            }
        }

        m.generation += 1;
        m.inodes.clear();
        m.dirs.clear();
        m.adopted.clear();
        m.dead = false;
        m.fail_after = None;
        m.write_fault = None;
        m.sync_fault = None;
        Ok(())
    }
}

struct FaultFile {
    shared: Arc<Shared>,
    real: Box<dyn WritableFile>,
    ino: u64,
    generation: u64,
    class: SyncClass,
}

impl FaultFile {
    fn check_generation(&self, m: &Model) -> io::Result<()> {
        if m.generation == self.generation {
            Ok(())
        } else {
            Err(io::Error::other(
                "fault storage: file handle from before a power cut",
            ))
        }
    }

    /// Writes `data[..n]` to disk and to the model (as much as the disk took).
    fn write_prefix(&mut self, m: &mut Model, data: &[u8], n: usize) -> io::Result<()> {
        let before = self.real.len();
        let res = self.real.append(&data[..n]);
        let took = (self.real.len() - before) as usize;
        m.inode(self.ino)?
            .current
            .extend_from_slice(&data[..took.min(n)]);
        res
    }
}

impl WritableFile for FaultFile {
    fn append(&mut self, data: &[u8]) -> io::Result<()> {
        self.shared.pass_gate(self.class);
        let shared = Arc::clone(&self.shared);
        let mut m = shared.model.lock();
        self.check_generation(&m)?;
        let fault = match m.begin_op()? {
            Fate::Crash => Some(Model::crash_error()),
            Fate::Proceed => Model::fires(&mut m.write_fault).map(FaultKind::error),
        };
        let fault = fault.or_else(|| {
            m.no_space
                .then(|| io::Error::from_raw_os_error(libc::ENOSPC))
        });
        match fault {
            None => self.write_prefix(&mut m, data, data.len()),
            Some(err) => {
                // A strict prefix: the caller must undo a partial record.
                let n = if data.is_empty() {
                    0
                } else {
                    m.rng.gen_range(0..data.len())
                };
                self.write_prefix(&mut m, data, n)?;
                Err(err)
            }
        }
    }

    fn sync(&mut self) -> io::Result<()> {
        self.shared.pass_gate(self.class);
        let shared = Arc::clone(&self.shared);
        let mut m = shared.model.lock();
        self.check_generation(&m)?;
        if let Fate::Crash = m.begin_op()? {
            return Err(Model::crash_error());
        }
        if let Some(kind) = Model::fires(&mut m.sync_fault) {
            return Err(kind.error());
        }
        if m.sync_ignored(self.class) {
            return Ok(());
        }
        let inode = m.inode(self.ino)?;
        inode.durable = inode.current.clone();
        Ok(())
    }

    fn len(&self) -> u64 {
        self.real.len()
    }

    fn truncate(&mut self, len: u64) -> io::Result<()> {
        self.shared.pass_gate(self.class);
        let shared = Arc::clone(&self.shared);
        let mut m = shared.model.lock();
        self.check_generation(&m)?;
        if let Fate::Crash = m.begin_op()? {
            return Err(Model::crash_error());
        }
        self.real.truncate(len)?;
        m.inode(self.ino)?.current.resize(len as usize, 0);
        Ok(())
    }

    fn path(&self) -> &Path {
        self.real.path()
    }
}

impl FaultStorage {
    /// Gate, lock, count, crash check: the common start of a storage-level mutating op.
    fn begin(&self, class: SyncClass) -> io::Result<parking_lot::MutexGuard<'_, Model>> {
        self.shared.pass_gate(class);
        let mut m = self.shared.model.lock();
        match m.begin_op()? {
            Fate::Proceed => Ok(m),
            Fate::Crash => Err(Model::crash_error()),
        }
    }
}

impl Storage for FaultStorage {
    fn create(&self, path: &Path) -> io::Result<Box<dyn WritableFile>> {
        let class = SyncClass::of_file(path);
        let mut m = self.begin(class)?;
        if m.no_space {
            return Err(io::Error::from_raw_os_error(libc::ENOSPC));
        }
        let (dir, name) = split(path)?;
        let existing = m.dir(&dir)?.current.get(&name).copied();
        let real = FsStorage.create(path)?;
        // O_TRUNC keeps the inode: only its current contents change.
        let ino = match existing {
            Some(ino) => {
                m.inode(ino)?.current.clear();
                ino
            }
            None => {
                let ino = m.new_inode(Vec::new(), Vec::new());
                m.dir(&dir)?.current.insert(name, ino);
                ino
            }
        };
        Ok(Box::new(FaultFile {
            shared: Arc::clone(&self.shared),
            real,
            ino,
            generation: m.generation,
            class,
        }))
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        FsStorage.read(path)
    }

    fn map(&self, path: &Path) -> io::Result<Arc<memmap2::Mmap>> {
        FsStorage.map(path)
    }

    fn truncate(&self, path: &Path, len: u64) -> io::Result<()> {
        let class = SyncClass::of_file(path);
        let mut m = self.begin(class)?;
        let ino = m.lookup(path)?;
        let f = std::fs::OpenOptions::new().write(true).open(path)?;
        f.set_len(len)?;
        let ignored = m.sync_ignored(class);
        let inode = m.inode(ino)?;
        inode.current.resize(len as usize, 0);
        if !ignored {
            inode.durable = inode.current.clone();
        }
        Ok(())
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut m = self.begin(SyncClass::of_file(from))?;
        let ino = m.lookup(from)?;
        let (to_dir, to_name) = split(to)?;
        m.dir(&to_dir)?;
        std::fs::rename(from, to)?;
        let (from_dir, from_name) = split(from)?;
        m.dir(&from_dir)?.current.remove(&from_name);
        m.dir(&to_dir)?.current.insert(to_name, ino);
        Ok(())
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        let mut m = self.begin(SyncClass::of_file(path))?;
        m.lookup(path)?;
        std::fs::remove_file(path)?;
        let (dir, name) = split(path)?;
        m.dir(&dir)?.current.remove(&name);
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut m = self.begin(SyncClass::Dir)?;
        let ignored = m.sync_ignored(SyncClass::Dir);
        let d = m.dir(&canonical_dir(dir))?;
        if !ignored {
            d.durable = d.current.clone();
        }
        Ok(())
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        FsStorage.list(dir)
    }

    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        FsStorage.create_dir_all(dir)
    }

    fn exists(&self, path: &Path) -> bool {
        FsStorage.exists(path)
    }

    fn hard_link(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut m = self.begin(SyncClass::of_file(from))?;
        let ino = m.lookup(from)?;
        let (to_dir, to_name) = split(to)?;
        m.dir(&to_dir)?;
        std::fs::hard_link(from, to)?;
        m.dir(&to_dir)?.current.insert(to_name, ino);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup() -> (tempfile::TempDir, FaultStorage) {
        (tempfile::tempdir().unwrap(), FaultStorage::new())
    }

    fn write_file(s: &FaultStorage, path: &Path, data: &[u8], sync: bool) {
        let mut f = s.create(path).unwrap();
        f.append(data).unwrap();
        if sync {
            f.sync().unwrap();
        }
    }

    #[test]
    fn synced_file_without_dir_sync_disappears() {
        let (dir, s) = setup();
        let p = dir.path().join("a.sst");
        write_file(&s, &p, b"hello", true);
        s.power_cut(CutMode::DropUnsynced).unwrap();
        assert!(!p.exists());
    }

    #[test]
    fn synced_file_with_dir_sync_survives() {
        let (dir, s) = setup();
        let p = dir.path().join("a.sst");
        write_file(&s, &p, b"hello", true);
        s.sync_dir(dir.path()).unwrap();
        s.power_cut(CutMode::DropUnsynced).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"hello");
    }

    #[test]
    fn unsynced_appends_are_dropped() {
        let (dir, s) = setup();
        let p = dir.path().join("1.log");
        let mut f = s.create(&p).unwrap();
        s.sync_dir(dir.path()).unwrap();
        f.append(b"durable").unwrap();
        f.sync().unwrap();
        f.append(b"-lost").unwrap();
        drop(f);
        assert_eq!(std::fs::read(&p).unwrap(), b"durable-lost");
        s.power_cut(CutMode::DropUnsynced).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"durable");
    }

    #[test]
    fn tear_keeps_a_prefix_of_unsynced_bytes() {
        let mut lengths = BTreeSet::new();
        for seed in 0..40 {
            let (dir, s) = setup();
            let p = dir.path().join("1.log");
            let mut f = s.create(&p).unwrap();
            s.sync_dir(dir.path()).unwrap();
            f.append(b"0123").unwrap();
            f.sync().unwrap();
            f.append(b"456789").unwrap();
            drop(f);
            s.power_cut(CutMode::TearUnsynced { seed }).unwrap();
            let got = std::fs::read(&p).unwrap();
            assert!(got.len() >= 4 && b"0123456789".starts_with(&got), "{got:?}");
            lengths.insert(got.len());
        }
        assert!(lengths.len() > 2, "tears should vary: {lengths:?}");
    }

    #[test]
    fn rename_without_dir_sync_is_undone() {
        let (dir, s) = setup();
        let (a, b) = (dir.path().join("MANIFEST.tmp"), dir.path().join("MANIFEST"));
        write_file(&s, &b, b"old", true);
        write_file(&s, &a, b"new", true);
        s.sync_dir(dir.path()).unwrap();
        s.rename(&a, &b).unwrap();
        assert_eq!(std::fs::read(&b).unwrap(), b"new");
        s.power_cut(CutMode::DropUnsynced).unwrap();
        assert_eq!(std::fs::read(&b).unwrap(), b"old");
        assert_eq!(std::fs::read(&a).unwrap(), b"new");

        // With the dir sync the rename sticks.
        s.rename(&a, &b).unwrap();
        s.sync_dir(dir.path()).unwrap();
        s.power_cut(CutMode::DropUnsynced).unwrap();
        assert_eq!(std::fs::read(&b).unwrap(), b"new");
        assert!(!a.exists());
    }

    #[test]
    fn remove_without_dir_sync_is_undone() {
        let (dir, s) = setup();
        let p = dir.path().join("5.sst");
        write_file(&s, &p, b"table", true);
        s.sync_dir(dir.path()).unwrap();
        s.remove(&p).unwrap();
        assert!(!p.exists());
        s.power_cut(CutMode::DropUnsynced).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"table");
        s.remove(&p).unwrap();
        s.sync_dir(dir.path()).unwrap();
        s.power_cut(CutMode::DropUnsynced).unwrap();
        assert!(!p.exists());
    }

    #[test]
    fn files_on_disk_before_first_touch_are_durable() {
        let (dir, s) = setup();
        let p = dir.path().join("old.sst");
        std::fs::write(&p, b"pre-existing").unwrap();
        write_file(&s, &dir.path().join("new.sst"), b"x", true);
        s.power_cut(CutMode::DropUnsynced).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"pre-existing");
        assert!(!dir.path().join("new.sst").exists());
    }

    #[test]
    fn hard_link_shares_durable_contents() {
        let (dir, s) = setup();
        let sub = dir.path().join("ckpt");
        s.create_dir_all(&sub).unwrap();
        let p = dir.path().join("1.sst");
        write_file(&s, &p, b"t", true);
        s.sync_dir(dir.path()).unwrap();
        let l = sub.join("1.sst");
        s.hard_link(&p, &l).unwrap();
        s.power_cut(CutMode::DropUnsynced).unwrap();
        assert!(!l.exists());
        s.hard_link(&p, &l).unwrap();
        s.sync_dir(&sub).unwrap();
        s.power_cut(CutMode::DropUnsynced).unwrap();
        assert_eq!(std::fs::read(&l).unwrap(), b"t");
    }

    #[test]
    fn ignored_sync_makes_nothing_durable() {
        let (dir, s) = setup();
        s.set_ignore_sync(SyncClass::Wal, true);
        let (log, sst) = (dir.path().join("1.log"), dir.path().join("1.sst"));
        write_file(&s, &log, b"wal", true);
        write_file(&s, &sst, b"sst", true);
        s.sync_dir(dir.path()).unwrap();
        s.power_cut(CutMode::DropUnsynced).unwrap();
        assert_eq!(std::fs::read(&log).unwrap(), b"");
        assert_eq!(std::fs::read(&sst).unwrap(), b"sst");

        s.set_ignore_sync(SyncClass::Dir, true);
        write_file(&s, &dir.path().join("2.sst"), b"x", true);
        s.sync_dir(dir.path()).unwrap();
        s.power_cut(CutMode::DropUnsynced).unwrap();
        assert!(!dir.path().join("2.sst").exists());
    }

    #[test]
    fn fail_after_kills_every_later_op() {
        let (dir, s) = setup();
        let p = dir.path().join("1.log");
        let mut f = s.create(&p).unwrap();
        let start = s.op_count();
        s.set_fail_after(Some(2));
        f.append(b"a").unwrap();
        f.sync().unwrap();
        assert_eq!(
            f.append(b"bcdef").unwrap_err().raw_os_error(),
            Some(libc::EIO)
        );
        assert!(s.is_dead());
        assert!(f.sync().is_err());
        assert!(s.create(&dir.path().join("2.log")).is_err());
        assert!(s.sync_dir(dir.path()).is_err());
        assert!(s.remove(&p).is_err());
        assert_eq!(s.op_count() - start, 7);
        // The file was never dir-synced, so the cut removes it; the storage works again.
        s.power_cut(CutMode::DropUnsynced).unwrap();
        assert!(!s.is_dead());
        assert!(!p.exists());
        assert!(f.append(b"stale").is_err());
        write_file(&s, &p, b"ok", true);
    }

    #[test]
    fn nth_write_and_sync_faults_fire_once() {
        let (dir, s) = setup();
        let p = dir.path().join("1.log");
        let mut f = s.create(&p).unwrap();
        s.sync_dir(dir.path()).unwrap();
        s.fail_nth_write(1, FaultKind::Eio);
        f.append(b"a").unwrap();
        let before = f.len();
        let e = f.append(b"bcdefgh").unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EIO));
        assert!(f.len() < before + 7);
        f.truncate(before).unwrap();
        f.append(b"b").unwrap();

        s.fail_nth_sync(0, FaultKind::Enospc);
        assert_eq!(f.sync().unwrap_err().raw_os_error(), Some(libc::ENOSPC));
        s.power_cut(CutMode::DropUnsynced).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"");
        let mut f = s.create(&p).unwrap();
        f.append(b"ab").unwrap();
        f.sync().unwrap();
    }

    #[test]
    fn no_space_then_recovery() {
        let (dir, s) = setup();
        let p = dir.path().join("1.log");
        let mut f = s.create(&p).unwrap();
        f.append(b"base").unwrap();
        s.set_no_space(true);
        let e = f.append(b"0123456789").unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOSPC));
        assert!(f.len() < 14);
        assert_eq!(
            s.create(&dir.path().join("2.log"))
                .err()
                .and_then(|e| e.raw_os_error()),
            Some(libc::ENOSPC)
        );
        f.truncate(4).unwrap();
        s.set_no_space(false);
        f.append(b"more").unwrap();
        f.sync().unwrap();
        s.sync_dir(dir.path()).unwrap();
        s.power_cut(CutMode::DropUnsynced).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"basemore");
    }

    #[test]
    fn gate_parks_matching_ops_until_opened() {
        let (dir, s) = setup();
        let gate = Gate::closed(Some(SyncClass::Dir));
        s.set_gate(Some(Arc::clone(&gate)));
        write_file(&s, &dir.path().join("1.sst"), b"x", true); // not a Dir op: passes
        let s2 = s.clone();
        let d = dir.path().to_path_buf();
        let t = std::thread::spawn(move || s2.sync_dir(&d));
        gate.wait_for_waiters(1);
        assert_eq!(gate.waiting(), 1);
        gate.open();
        t.join().unwrap().unwrap();
        s.set_gate(None);
    }
}
