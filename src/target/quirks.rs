//! What a target was found to do differently from its protocol, and what the gateway does about
//! it. Each quirk is logged once, when it is first detected, and shown on `status` / `/status`.

use std::collections::BTreeMap;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

/// One detected quirk: what the target does, and what dirbridge does about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quirk {
    /// A stable name (`filter-ignored`, `count-refused`, ...).
    pub id: String,
    pub found: String,
    pub handling: String,
}

/// The quirks seen so far by one target client.
#[derive(Debug, Default)]
pub(crate) struct Quirks {
    seen: Mutex<BTreeMap<String, Quirk>>,
}

impl Quirks {
    /// Records a quirk; logs it the first time it is seen. Returns true when it is new.
    pub(crate) fn note(
        &self,
        id: &str,
        found: impl Into<String>,
        handling: impl Into<String>,
    ) -> bool {
        let Ok(mut seen) = self.seen.lock() else {
            return false;
        };
        if seen.contains_key(id) {
            return false;
        }
        let q = Quirk {
            id: id.to_string(),
            found: found.into(),
            handling: handling.into(),
        };
        tracing::warn!(quirk = %q.id, handling = %q.handling, "target quirk: {}", q.found);
        seen.insert(id.to_string(), q);
        true
    }

    /// Takes back a quirk an earlier run found (from the state store); logged once, at info.
    pub(crate) fn restore(&self, q: Quirk) {
        if let Ok(mut seen) = self.seen.lock() {
            if !seen.contains_key(&q.id) {
                tracing::info!(quirk = %q.id, handling = %q.handling, "target quirk (found earlier): {}", q.found);
                seen.insert(q.id.clone(), q);
            }
        }
    }

    pub(crate) fn has(&self, id: &str) -> bool {
        self.seen
            .lock()
            .map(|s| s.contains_key(id))
            .unwrap_or(false)
    }

    pub(crate) fn list(&self) -> Vec<Quirk> {
        self.seen
            .lock()
            .map(|s| s.values().cloned().collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_quirk_is_recorded_once() {
        let q = Quirks::default();
        assert!(q.note("filter-ignored", "a", "b"));
        assert!(!q.note("filter-ignored", "c", "d"));
        assert_eq!(q.list().len(), 1);
        assert_eq!(q.list()[0].found, "a");
        assert!(q.has("filter-ignored"));
        assert!(!q.has("count-refused"));
    }
}
