//! The accidental-deletion guard (pure). When a plan would deactivate or delete more objects
//! than the limits allow, none of those removals are sent, nor the member removals that belong
//! to them; the rest of the plan goes ahead. An administrator approves the held set (by its
//! digest) or one run (`sync --approve-deletes`), and only then are they sent.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::Operation;
use crate::model::Key;

/// The guard's limits (`[sync]` in the configuration).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct GuardLimits {
    pub enabled: bool,
    /// More removals than this in one run are held.
    pub max_count: usize,
    /// More than this share (percent) of the managed objects is held, from
    /// [`PERCENT_FROM`] removals on (a small directory losing 2 of its 5 users is not an
    /// accident worth stopping for).
    pub max_percent: u32,
}

/// The percentage limit applies from this many removals on.
pub(crate) const PERCENT_FROM: usize = 10;

/// What an administrator may approve.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Approval {
    /// Exactly this held set (its digest).
    Set(String),
    /// Whatever the next run holds (`sync --approve-deletes`).
    NextRun,
}

/// Removals held back by a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Held {
    pub count: usize,
    pub managed: usize,
    /// Identifies the set, for `approve-deletes`.
    pub digest: String,
    /// `deactivate_user alice`, ... (the first few, for people).
    pub sample: Vec<String>,
}

fn is_removal(op: &Operation) -> bool {
    matches!(
        op,
        Operation::DeactivateUser { .. }
            | Operation::DeleteUser { .. }
            | Operation::DeleteGroup { .. }
    )
}

/// How many removals held show in [`Held::sample`].
const SAMPLE: usize = 20;

/// What the guard decided.
#[derive(Debug)]
pub(crate) struct Verdict {
    /// What may be sent.
    pub ops: Vec<Operation>,
    /// The removals held back, when the guard tripped and they were not approved.
    pub held: Option<Held>,
    /// The guard tripped and an approval let the removals through (it is now spent).
    pub approved: bool,
}

/// Splits `ops` into what may be sent and, when the guard trips and the set is not approved,
/// the removals held. `managed` is the number of objects in the records.
pub(crate) fn hold(
    ops: Vec<Operation>,
    managed: usize,
    limits: &GuardLimits,
    approval: Option<&Approval>,
) -> Verdict {
    let removals: Vec<&Operation> = ops.iter().filter(|o| is_removal(o)).collect();
    let count = removals.len();
    let too_many = count > limits.max_count
        || (count >= PERCENT_FROM && count * 100 > limits.max_percent as usize * managed);
    if !limits.enabled || !too_many {
        return Verdict {
            ops,
            held: None,
            approved: false,
        };
    }
    let mut lines: Vec<String> = removals
        .iter()
        .map(|o| format!("{} {}", o.name(), o.key()))
        .collect();
    lines.sort();
    let digest = hex::encode(&Sha256::digest(lines.join("\n").as_bytes())[..16]);
    let approved = match approval {
        Some(Approval::NextRun) => true,
        Some(Approval::Set(d)) => *d == digest,
        None => false,
    };
    if approved {
        return Verdict {
            ops,
            held: None,
            approved: true,
        };
    }
    let sample = removals
        .iter()
        .take(SAMPLE)
        .map(|o| format!("{} {}", o.name(), o.label()))
        .collect();
    let held_keys: BTreeSet<Key> = removals.iter().map(|o| o.key().clone()).collect();
    let kept = ops
        .into_iter()
        .filter(|o| !is_removal(o))
        .filter_map(|o| match o {
            // The members a held removal takes out of groups stay, and so do the groups held.
            Operation::RemoveMembers {
                group,
                display_name,
                members,
            } => {
                if held_keys.contains(&group) {
                    return None;
                }
                let members: Vec<Key> = members
                    .into_iter()
                    .filter(|m| !held_keys.contains(m))
                    .collect();
                (!members.is_empty()).then_some(Operation::RemoveMembers {
                    group,
                    display_name,
                    members,
                })
            }
            other => Some(other),
        })
        .collect();
    Verdict {
        ops: kept,
        held: Some(Held {
            count,
            managed,
            digest,
            sample,
        }),
        approved: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::RemovalReason;

    impl Verdict {
        fn parts(self) -> (Vec<Operation>, Option<Held>) {
            (self.ops, self.held)
        }
    }

    fn deactivate(n: usize) -> Operation {
        Operation::DeactivateUser {
            key: format!("k{n}").into(),
            user_name: format!("u{n}"),
            reason: RemovalReason::Removed,
        }
    }

    fn limits() -> GuardLimits {
        GuardLimits {
            enabled: true,
            max_count: 500,
            max_percent: 20,
        }
    }

    fn plan_removing(n: usize) -> Vec<Operation> {
        let mut ops: Vec<Operation> = (0..n).map(deactivate).collect();
        ops.insert(
            0,
            Operation::RemoveMembers {
                group: "g".into(),
                display_name: "G".into(),
                members: vec!["k0".into(), "k1".into(), "stays-in-plan".into()],
            },
        );
        ops.push(Operation::CreateGroup {
            key: "new".into(),
            display_name: "New".into(),
        });
        ops
    }

    #[test]
    fn a_few_removals_pass_and_small_directories_are_not_held_by_percentage() {
        let (ops, held) = hold(plan_removing(3), 5, &limits(), None).parts();
        assert!(held.is_none());
        assert_eq!(ops.len(), 5);
        let (_, held) = hold(plan_removing(9), 10, &limits(), None).parts();
        assert!(held.is_none(), "90% but under 10 removals");
    }

    #[test]
    fn too_many_removals_are_held_with_their_member_removals_and_the_rest_goes() {
        let (ops, held) = hold(plan_removing(12), 40, &limits(), None).parts();
        let held = held.expect("12 of 40 is 30%");
        assert_eq!(held.count, 12);
        assert_eq!(held.sample.len(), 12);
        assert!(ops.iter().all(|o| !is_removal(o)), "{ops:?}");
        assert!(ops
            .iter()
            .any(|o| matches!(o, Operation::CreateGroup { .. })));
        match &ops[0] {
            Operation::RemoveMembers { members, .. } => {
                assert_eq!(members, &vec![Key::from("stays-in-plan")])
            }
            other => panic!("{other:?}"),
        }
        // By count alone.
        let (_, held) = hold(plan_removing(501), 100_000, &limits(), None).parts();
        assert!(held.is_some());
        let (ops, held) = hold(
            plan_removing(501),
            100_000,
            &GuardLimits {
                enabled: false,
                ..limits()
            },
            None,
        )
        .parts();
        assert!(held.is_none() && ops.len() == 503);
    }

    #[test]
    fn approval_is_for_the_held_set_only() {
        let (_, held) = hold(plan_removing(12), 40, &limits(), None).parts();
        let digest = held.unwrap().digest;
        let ok = Approval::Set(digest.clone());
        let (ops, held) = hold(plan_removing(12), 40, &limits(), Some(&ok)).parts();
        assert!(held.is_none());
        assert_eq!(ops.iter().filter(|o| is_removal(o)).count(), 12);
        // One more removal is another set: held again.
        let (_, held) = hold(plan_removing(13), 40, &limits(), Some(&ok)).parts();
        assert_ne!(held.unwrap().digest, digest);
        let (_, held) = hold(plan_removing(13), 40, &limits(), Some(&Approval::NextRun)).parts();
        assert!(held.is_none());
    }
}
