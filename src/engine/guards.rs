//! What keeps a pass from doing harm: a panic anywhere in it is an error of that pass, and a
//! read that finds nothing where there used to be objects is refused.

use super::EngineError;
use crate::model::DesiredState;
use crate::state::records::Snapshot;

/// The text of a panic's payload, bounded (it can quote what a server sent).
pub(crate) fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    let text = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_string());
    match text.char_indices().nth(200) {
        Some((i, _)) => format!("{}...", &text[..i]),
        None => text,
    }
}

/// Runs a pass so that a panic anywhere in it (a defect here, or in a library decoding what a
/// server sent) is an error of that pass, not the end of the process or of the service.
pub(crate) async fn guarded<R>(
    pass: impl std::future::Future<Output = Result<R, EngineError>>,
) -> Result<R, EngineError> {
    use futures_util::FutureExt;
    match std::panic::AssertUnwindSafe(pass).catch_unwind().await {
        Ok(r) => r,
        Err(payload) => Err(EngineError::Defect(panic_text(payload.as_ref()))),
    }
}

/// A search that returns nothing where there used to be objects is far more often a broken
/// filter, base or ACL than a directory emptied on purpose: never act on it.
pub(super) fn guard_empty_read(
    desired: &DesiredState,
    records: &Snapshot,
) -> Result<(), EngineError> {
    let no_users = desired.users.is_empty() && desired.held.is_empty();
    guard_empty(no_users, desired.groups.is_empty(), counts(records))
}

/// How many user and group records there are.
pub(super) fn counts(records: &Snapshot) -> (usize, usize) {
    (records.users.len(), records.groups.len())
}

pub(super) fn guard_empty(
    no_users: bool,
    no_groups: bool,
    (users, groups): (usize, usize),
) -> Result<(), EngineError> {
    if no_users && users > 0 {
        return Err(EngineError::EmptyRead {
            what: "users",
            what_key: "user",
            known: users,
        });
    }
    if no_groups && groups > 0 {
        return Err(EngineError::EmptyRead {
            what: "groups",
            what_key: "group",
            known: groups,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panic_in_a_pass_is_an_error_of_that_pass() {
        let r: Result<(), EngineError> = guarded(async {
            let v: Vec<u8> = Vec::new();
            // An out-of-bounds index: the kind of defect a decoder can hide.
            let _ = v[std::hint::black_box(3)];
            Ok(())
        })
        .await;
        match r {
            Err(EngineError::Defect(what)) => {
                assert!(what.contains("index out of bounds"), "{what}")
            }
            other => panic!("expected a defect, got {other:?}"),
        }
        // The process (and the runtime) goes on: the next pass runs.
        assert!(guarded(async { Ok(7) }).await.is_ok_and(|n| n == 7));
    }

    #[test]
    fn panic_texts_are_bounded() {
        let long = "x".repeat(1000);
        assert_eq!(panic_text(&long).chars().count(), 203);
        assert_eq!(panic_text(&"short"), "short");
    }
}
