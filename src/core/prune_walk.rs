//! Deciding a package page by page, oldest first, without holding the whole package: the
//! rules of [`Keeper`](crate::core::retention::Keeper) decide each version by its own tags
//! and age; a version to delete is held back until the walk has passed versions
//! [`CHILD_WINDOW_SECS`] younger than it, so that a kept index pushed after its children
//! (as every index is) is seen, and names them, before they could go.

use std::collections::{BTreeSet, VecDeque};

use crate::core::image_ref::Digest;
use crate::core::retention::{Decision, Reason};

/// How much younger a version the walk must have seen before an older one may be deleted:
/// an index and its children are pushed within seconds of each other.
pub(crate) const CHILD_WINDOW_SECS: i64 = 600;

/// One package's walk from its oldest version toward its newest.
#[derive(Debug, Default)]
pub(crate) struct Walk {
    held: VecDeque<Decision>,
    protected: BTreeSet<Digest>,
    newest: i64,
}

impl Walk {
    /// The children of a kept index: they stay.
    pub(crate) fn protect(&mut self, children: impl IntoIterator<Item = Digest>) {
        self.protected.extend(children);
    }

    /// One page's decisions, oldest first; returns the decisions settled now (kept ones at
    /// once, deletions once the walk is far enough past them), oldest deletions first.
    pub(crate) fn page(&mut self, page: Vec<Decision>) -> Vec<Decision> {
        let mut out = Vec::new();
        for d in page {
            self.newest = self.newest.max(d.stored.created.unwrap_or(i64::MIN));
            if d.keep { out.push(d) } else { self.held.push_back(d) }
        }
        out.extend(self.release(false));
        out
    }

    /// The walk reached the newest version: everything held is settled.
    pub(crate) fn finish(&mut self) -> Vec<Decision> {
        self.release(true)
    }

    /// Whether any deletion is held (the caller then learns the children of kept indexes).
    pub(crate) fn holding(&self) -> bool {
        !self.held.is_empty()
    }

    fn release(&mut self, all: bool) -> Vec<Decision> {
        let mut out = Vec::new();
        while let Some(d) = self.held.front() {
            let old_enough = d.stored.created.is_none_or(|c| self.newest.saturating_sub(c) >= CHILD_WINDOW_SECS);
            if !all && !old_enough {
                break;
            }
            let Some(mut d) = self.held.pop_front() else { break };
            if self.protected.contains(&d.stored.digest) {
                d.keep = true;
                d.reason = Reason::ChildOfKept;
            }
            out.push(d);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::retention::Stored;

    fn decision(n: u32, created: i64, keep: bool) -> Decision {
        let stored = Stored {
            repository: "o/agent".into(),
            digest: Digest::sha256_of(n.to_string().as_bytes()),
            tags: vec![],
            created: Some(created),
            size: None,
            children: vec![],
            version_id: Some(u64::from(n)),
        };
        Decision { stored, keep, reason: if keep { Reason::InPlan } else { Reason::Unused } }
    }

    fn ids(ds: &[Decision]) -> Vec<(u64, bool)> {
        ds.iter().map(|d| (d.stored.version_id.unwrap_or(0), d.keep)).collect()
    }

    #[test]
    fn deletions_wait_until_the_walk_is_past_their_window() {
        let mut w = Walk::default();
        let got = w.page(vec![decision(1, 0, false), decision(2, 100, false), decision(3, 650, true)]);
        assert_eq!(ids(&got), [(3, true), (1, false)], "2 is younger than the window behind 3");
        assert!(w.holding());
        assert_eq!(ids(&w.page(vec![decision(4, 700, false)])), [(2, false)]);
        assert_eq!(ids(&w.finish()), [(4, false)]);
        assert!(!w.holding());
    }

    #[test]
    fn a_child_named_by_a_later_kept_index_stays() {
        let mut w = Walk::default();
        let child = decision(1, 0, false);
        assert!(w.page(vec![child.clone(), decision(2, 5, false)]).is_empty());
        // The index comes a page later (newer), is kept, and names its child.
        w.protect([child.stored.digest.clone()]);
        let got = w.page(vec![decision(3, 10, true), decision(4, 2000, false)]);
        assert_eq!(ids(&got), [(3, true), (1, true), (2, false)]);
        assert_eq!(got[1].reason, Reason::ChildOfKept);
    }
}
