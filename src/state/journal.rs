//! A short journal of the operations sent to the target, newest last, for the dashboard's
//! "recent operations". It is bounded: each append drops the entry [`JOURNAL_LENGTH`] places back.

use serde::{Deserialize, Serialize};

use redb::ReadableTable;

use super::store::kv::Table;
use super::store::{decode, encode};
use super::{StateError, Store};

/// How many operations the journal keeps.
pub const JOURNAL_LENGTH: u64 = 1000;

/// One operation and how it ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JournalEntry {
    pub at: String,
    pub run: u64,
    /// `create_user`, `add_members`, ...
    pub operation: String,
    /// userName or group name (and DN when known).
    pub object: String,
    /// `created`, `adopted`, `done`, `gone` or `failed`.
    pub outcome: String,
    /// The error, for a failed operation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Seconds from the directory change to this confirmation (change feeds only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency: Option<f64>,
}

impl Store {
    /// Appends an entry. It is made durable by the next flush, which is soon enough for a
    /// display; losing the last lines in a crash loses nothing that matters.
    pub fn journal(&self, entry: &JournalEntry) -> Result<(), StateError> {
        self.journal_all(std::slice::from_ref(entry))
    }

    /// Appends entries, newest last; of a long run only the last [`JOURNAL_LENGTH`] are
    /// written, as only they would be kept.
    pub fn journal_all(&self, entries: &[JournalEntry]) -> Result<(), StateError> {
        if entries.is_empty() {
            return Ok(());
        }
        let skip = entries.len().saturating_sub(JOURNAL_LENGTH as usize);
        let values: Vec<Vec<u8>> = entries[skip..].iter().map(encode).collect();
        self.write(|tx| {
            let mut journal = tx.table(Table::Journal)?;
            // Numbered after the last line, read in the same transaction.
            let first = match journal.last()? {
                Some((k, _)) => key_number(k.value()).saturating_add(1),
                None => 1,
            };
            for (next, value) in (first..).zip(&values) {
                journal.insert(next.to_be_bytes().as_slice(), value.as_slice())?;
                if next > JOURNAL_LENGTH {
                    journal.remove((next - JOURNAL_LENGTH).to_be_bytes().as_slice())?;
                }
            }
            Ok(())
        })
    }

    /// The last `n` entries, newest first.
    pub fn recent_operations(&self, n: usize) -> Result<Vec<JournalEntry>, StateError> {
        let mut out = Vec::with_capacity(n.min(JOURNAL_LENGTH as usize));
        if n == 0 {
            return Ok(out);
        }
        self.reader()?
            .each(Table::Journal, true, |k, v| {
                out.push(decode(&self.path, k, v)?);
                Ok::<_, StateError>(out.len() < n)
            })
            .map_err(|e| self.io(e))??;
        Ok(out)
    }
}

fn key_number(k: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    if k.len() == 8 {
        b.copy_from_slice(k);
    }
    u64::from_be_bytes(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(i: u64) -> JournalEntry {
        JournalEntry {
            at: "2026-11-23T00:00:00Z".into(),
            run: i,
            operation: "update_user".into(),
            object: format!("u{i}"),
            outcome: "done".into(),
            detail: None,
            latency: Some(0.1),
        }
    }

    #[test]
    fn keeps_the_last_entries_newest_first() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s"), 1 << 20).unwrap();
        for i in 1..=JOURNAL_LENGTH + 5 {
            store.journal(&entry(i)).unwrap();
        }
        let recent = store.recent_operations(3).unwrap();
        let runs: Vec<u64> = recent.iter().map(|e| e.run).collect();
        assert_eq!(
            runs,
            vec![JOURNAL_LENGTH + 5, JOURNAL_LENGTH + 4, JOURNAL_LENGTH + 3]
        );
        let all = store.recent_operations(usize::MAX).unwrap();
        assert_eq!(all.len() as u64, JOURNAL_LENGTH);
        assert_eq!(all.last().unwrap().run, 6);
    }

    #[test]
    fn a_window_longer_than_the_journal_keeps_its_last_entries() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s"), 1 << 20).unwrap();
        let first: Vec<JournalEntry> = (1..=10).map(entry).collect();
        store.journal_all(&first).unwrap();
        let window: Vec<JournalEntry> = (11..=10 + JOURNAL_LENGTH + 500).map(entry).collect();
        store.journal_all(&window).unwrap();
        let all = store.recent_operations(usize::MAX).unwrap();
        assert_eq!(all.len() as u64, JOURNAL_LENGTH);
        assert_eq!(
            all.first().unwrap().run,
            10 + JOURNAL_LENGTH + 500,
            "newest first"
        );
        assert_eq!(all.last().unwrap().run, 511);
        store.journal(&entry(7)).unwrap();
        assert_eq!(store.recent_operations(1).unwrap()[0].run, 7);
        assert_eq!(
            store.recent_operations(usize::MAX).unwrap().len() as u64,
            JOURNAL_LENGTH
        );
    }
}
