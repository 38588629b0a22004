//! The store's tables in redb: one file, byte keys and values, a bounded cache.
//!
//! Writes are transactions committed without a sync (`Durability::None`), as sled's writes were
//! buffered; [`Kv::sync`] is one durable commit, which makes everything committed before it
//! durable (redb persists non-durable commits with the next durable one). A durable commit holds
//! redb's write lock while it syncs: the executor writes a window only once the last sync has
//! returned, so its windows never wait for one; its other writes (an error, an intent dropped
//! after a refusal) may wait for the one sync in progress.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use redb::{
    Durability, ReadTransaction, ReadableDatabase, ReadableTable, ReadableTableMetadata,
    TableDefinition, WriteTransaction,
};

/// The store's tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Table {
    Users,
    Groups,
    Errors,
    Meta,
    MirrorUsers,
    MirrorGroups,
    Journal,
    Intents,
    /// Keys an `[ha]` standby saw while another gateway pushed (`store/ha_seen.rs`).
    HaSeen,
}

type Def = TableDefinition<'static, &'static [u8], &'static [u8]>;

impl Table {
    pub(crate) const ALL: [Table; 9] = [
        Table::Users,
        Table::Groups,
        Table::Errors,
        Table::Meta,
        Table::MirrorUsers,
        Table::MirrorGroups,
        Table::Journal,
        Table::Intents,
        Table::HaSeen,
    ];

    /// The table's name (that of the sled tree it replaces).
    pub(crate) fn name(self) -> &'static str {
        match self {
            Table::Users => "users",
            Table::Groups => "groups",
            Table::Errors => "errors",
            Table::Meta => "meta",
            Table::MirrorUsers => "mirror_users",
            Table::MirrorGroups => "mirror_groups",
            Table::Journal => "journal",
            Table::Intents => "intents",
            Table::HaSeen => "ha_seen",
        }
    }

    fn def(self) -> Def {
        TableDefinition::new(self.name())
    }
}

/// The store's file name in the state folder.
pub(crate) const FILE: &str = "dirbridge.redb";

/// The database, shared by the store and the threads that read or sync it.
#[derive(Clone)]
pub(crate) struct Kv {
    db: Arc<Db>,
}

/// Opened to be written (every command that syncs), or only read (`check`: the file, its
/// permissions and its neighbours left exactly as they are).
enum Db {
    Writable(redb::Database),
    ReadOnly(redb::ReadOnlyDatabase),
}

/// Why a store could not be opened.
pub(crate) enum OpenError {
    /// Another process has it open.
    InUse,
    /// Left by a process that stopped mid-write: the next writer repairs it, a reader cannot.
    NeedsRecovery,
    Other(String),
}

/// A write transaction, its tables opened as they are used.
pub(crate) struct Tx<'a> {
    tx: &'a WriteTransaction,
}

impl Tx<'_> {
    pub(crate) fn table(
        &self,
        t: Table,
    ) -> Result<redb::Table<'_, &'static [u8], &'static [u8]>, redb::Error> {
        Ok(self.tx.open_table(t.def())?)
    }

    pub(crate) fn insert(&self, t: Table, key: &[u8], value: &[u8]) -> Result<(), redb::Error> {
        self.table(t)?.insert(key, value)?;
        Ok(())
    }

    pub(crate) fn remove(&self, t: Table, key: &[u8]) -> Result<(), redb::Error> {
        self.table(t)?.remove(key)?;
        Ok(())
    }

    pub(crate) fn get(&self, t: Table, key: &[u8]) -> Result<Option<Vec<u8>>, redb::Error> {
        Ok(self.table(t)?.get(key)?.map(|v| v.value().to_vec()))
    }

    /// Every key of a table, in order.
    pub(crate) fn keys(&self, t: Table) -> Result<Vec<Vec<u8>>, redb::Error> {
        let table = self.table(t)?;
        let mut out = Vec::new();
        for item in table.iter()? {
            out.push(item?.0.value().to_vec());
        }
        Ok(out)
    }
}

impl Kv {
    /// Opens (or creates) the store file at `path`, with every table.
    pub(crate) fn open(path: &Path, cache_bytes: u64) -> Result<Kv, OpenError> {
        let db = redb::Builder::new()
            .set_cache_size(usize::try_from(cache_bytes).unwrap_or(usize::MAX))
            .create(path)
            .map_err(|e| match e {
                redb::DatabaseError::DatabaseAlreadyOpen => OpenError::InUse,
                other => OpenError::Other(other.to_string()),
            })?;
        let kv = Kv {
            db: Arc::new(Db::Writable(db)),
        };
        kv.write(|tx| {
            for t in Table::ALL {
                tx.table(t)?;
            }
            Ok(())
        })
        .map_err(OpenError::Other)?;
        kv.sync().map_err(OpenError::Other)?;
        Ok(kv)
    }

    /// Opens an existing file to read it only: nothing is created, repaired or written.
    pub(crate) fn open_read_only(path: &Path, cache_bytes: u64) -> Result<Kv, OpenError> {
        let db = redb::Builder::new()
            .set_cache_size(usize::try_from(cache_bytes).unwrap_or(usize::MAX))
            .open_read_only(path)
            .map_err(|e| match e {
                redb::DatabaseError::DatabaseAlreadyOpen => OpenError::InUse,
                redb::DatabaseError::RepairAborted => OpenError::NeedsRecovery,
                other => OpenError::Other(other.to_string()),
            })?;
        Ok(Kv {
            db: Arc::new(Db::ReadOnly(db)),
        })
    }

    fn writable(&self) -> Result<&redb::Database, String> {
        match &*self.db {
            Db::Writable(db) => Ok(db),
            Db::ReadOnly(_) => Err("the store was opened to be read only".into()),
        }
    }

    /// Runs `f` in one write transaction, committed without a sync (all of it or nothing).
    pub(crate) fn write<R>(
        &self,
        f: impl FnOnce(&Tx<'_>) -> Result<R, redb::Error>,
    ) -> Result<R, String> {
        let mut tx = self.writable()?.begin_write().map_err(|e| e.to_string())?;
        tx.set_durability(Durability::None)
            .map_err(|e| e.to_string())?;
        let out = f(&Tx { tx: &tx }).map_err(|e| e.to_string())?;
        tx.commit().map_err(|e| e.to_string())?;
        Ok(out)
    }

    /// Makes every commit so far durable (a durable commit of nothing).
    pub(crate) fn sync(&self) -> Result<(), String> {
        let tx = self.writable()?.begin_write().map_err(|e| e.to_string())?;
        tx.commit().map_err(|e| e.to_string())
    }

    /// A consistent view for reading.
    pub(crate) fn read(&self) -> Result<Reader, String> {
        Ok(Reader {
            tx: match &*self.db {
                Db::Writable(db) => db.begin_read(),
                Db::ReadOnly(db) => db.begin_read(),
            }
            .map_err(|e| e.to_string())?,
        })
    }
}

/// A read transaction: what was committed when it began.
pub(crate) struct Reader {
    tx: ReadTransaction,
}

impl Reader {
    fn table(&self, t: Table) -> Result<redb::ReadOnlyTable<&'static [u8], &'static [u8]>, String> {
        self.tx.open_table(t.def()).map_err(|e| e.to_string())
    }

    pub(crate) fn get(&self, t: Table, key: &[u8]) -> Result<Option<Vec<u8>>, String> {
        let table = self.table(t)?;
        let v = table.get(key).map_err(|e| e.to_string())?;
        Ok(v.map(|v| v.value().to_vec()))
    }

    pub(crate) fn contains(&self, t: Table, key: &[u8]) -> Result<bool, String> {
        let table = self.table(t)?;
        Ok(table.get(key).map_err(|e| e.to_string())?.is_some())
    }

    pub(crate) fn len(&self, t: Table) -> Result<u64, String> {
        self.table(t)?.len().map_err(|e| e.to_string())
    }

    /// Calls `f` with every key and value of a table, in key order (newest first with `rev`),
    /// until it returns `false`. The outer error is the store's, the inner one `f`'s.
    pub(crate) fn each<E>(
        &self,
        t: Table,
        rev: bool,
        mut f: impl FnMut(&[u8], &[u8]) -> Result<bool, E>,
    ) -> Result<Result<(), E>, String> {
        let table = self.table(t)?;
        let iter = table.iter().map_err(|e| e.to_string())?;
        let items: Box<dyn Iterator<Item = _>> = if rev {
            Box::new(iter.rev())
        } else {
            Box::new(iter)
        };
        for item in items {
            let (k, v) = item.map_err(|e| e.to_string())?;
            match f(k.value(), v.value()) {
                Ok(true) => {}
                Ok(false) => break,
                Err(e) => return Ok(Err(e)),
            }
        }
        Ok(Ok(()))
    }
}

/// The store file's path in the state folder `dir`.
pub(crate) fn file(dir: &Path) -> PathBuf {
    dir.join(FILE)
}
