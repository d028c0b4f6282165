//! The blackboard LSM engine.

pub mod clock;
pub mod error;
pub mod fault;
pub mod sstable;
pub mod storage;
pub mod types;
pub mod wal;

pub use clock::{Clock, ManualClock, SystemClock};
pub use error::{Error, Result};
pub use storage::{FsStorage, Storage, WritableFile};
pub use types::{Entry, Kind, SeqNo};

mod api_draft;
pub use api_draft::*;
