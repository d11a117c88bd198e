//! Incarnations of the coordinator itself, decided from what the members say of themselves (the
//! census), free of I/O.
//!
//! A member that starts without its identity (new or wiped data dir) holds nothing and must not
//! vote or serve. It asks the others: if a majority holds one incarnation it joins that one and
//! votes only once it has caught up; if the whole cluster is new, the lowest member id creates the
//! first incarnation; if fewer than a majority hold the incarnation, its data may be lost and no
//! member starts a new one on its own: an operator runs `tandem coordinator reinit`.

use crate::raft::NodeId;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// What a member says of itself (`GET /v1/status`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    pub id: NodeId,
    /// The incarnation it holds (none: fresh, and not yet joining any).
    pub incarnation: Option<String>,
    /// It holds state of its incarnation: it votes and serves.
    pub ready: bool,
    /// It created its incarnation, which a majority has not held yet: fresh members may join at once.
    pub forming: bool,
    /// The incarnation its own replaced, if it was made by `reinit`.
    pub replaced: Option<String>,
    pub leader: Option<NodeId>,
    pub term: u64,
    pub last_applied: Option<u64>,
    /// Why it does not serve, when it does not.
    pub trouble: Option<String>,
    /// It is part of a working majority (a leader is known and, on the leader, a majority
    /// acknowledged it lately): `ready` says it holds state, this that it can serve with it.
    #[serde(default)]
    pub healthy: bool,
    /// Why it is not healthy, when it is not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unhealthy: Option<String>,
}

/// What a member without an identity does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Join {
    /// The whole cluster is new and this is its lowest id: create the first incarnation.
    Bootstrap,
    /// A member is forming this incarnation: join it and vote at once (no one voted in it before).
    Forming(String),
    /// A majority holds this incarnation: catch up to `applied` before voting.
    CatchUp { incarnation: String, applied: u64 },
    /// Fewer than a majority hold the incarnation: its data may be lost.
    Lost { incarnation: String, holders: usize },
    /// Not everyone has answered yet.
    Wait { silent: Vec<NodeId> },
}

pub fn majority(members: usize) -> usize {
    members / 2 + 1
}

/// Per incarnation, the other members that hold it and are ready.
fn holders(others: &BTreeMap<NodeId, Option<Status>>) -> BTreeMap<&str, Vec<&Status>> {
    let mut by = BTreeMap::<&str, Vec<&Status>>::new();
    for s in others.values().flatten() {
        if let (Some(inc), true) = (s.incarnation.as_deref(), s.ready) {
            by.entry(inc).or_default().push(s);
        }
    }
    by
}

/// `others`: every other member, with what it answered (`None`: no answer).
pub fn decide_join(me: NodeId, others: &BTreeMap<NodeId, Option<Status>>) -> Join {
    let n = others.len() + 1;
    let by = holders(others);
    if let Some((inc, hs)) = by.iter().find(|(_, hs)| hs.len() >= majority(n)) {
        let applied = hs.iter().filter_map(|s| s.last_applied).max().unwrap_or(0);
        return Join::CatchUp { incarnation: inc.to_string(), applied };
    }
    if let Some(s) = others.values().flatten().find(|s| s.forming && s.ready) {
        if let Some(inc) = &s.incarnation {
            return Join::Forming(inc.clone());
        }
    }
    let silent: Vec<NodeId> = others.iter().filter(|(_, s)| s.is_none()).map(|(id, _)| *id).collect();
    if !silent.is_empty() {
        return Join::Wait { silent };
    }
    if let Some((inc, hs)) = by.iter().max_by_key(|(_, hs)| hs.len()) {
        return Join::Lost { incarnation: inc.to_string(), holders: hs.len() };
    }
    if others.keys().all(|&id| id > me) {
        return Join::Bootstrap;
    }
    Join::Wait { silent }
}

/// For a member holding `mine`: the incarnation a majority of the others moved to, if they did
/// (its own state is then from a history that no longer exists).
pub fn superseded_by(mine: &str, others: &BTreeMap<NodeId, Option<Status>>) -> Option<String> {
    let n = others.len() + 1;
    holders(others)
        .into_iter()
        .find(|(inc, hs)| *inc != mine && hs.len() >= majority(n))
        .map(|(inc, _)| inc.to_string())
}

/// For a ready member holding `mine`: how many members (itself included) hold it, when every
/// other member answered and fewer than a majority do.
pub fn lost_majority(mine: &str, others: &BTreeMap<NodeId, Option<Status>>) -> Option<usize> {
    if others.values().any(Option::is_none) {
        return None;
    }
    let n = others.len() + 1;
    let holding = 1 + holders(others).get(mine).map_or(0, Vec::len);
    (holding < majority(n)).then_some(holding)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fresh(id: NodeId) -> Option<Status> {
        Some(Status { id, ..Default::default() })
    }

    fn holding(id: NodeId, inc: &str, applied: u64) -> Option<Status> {
        Some(Status {
            id,
            incarnation: Some(inc.into()),
            ready: true,
            last_applied: Some(applied),
            ..Default::default()
        })
    }

    fn census(entries: Vec<(NodeId, Option<Status>)>) -> BTreeMap<NodeId, Option<Status>> {
        entries.into_iter().collect()
    }

    #[test]
    fn a_new_cluster_is_created_by_its_lowest_id_once_everyone_answered() {
        assert_eq!(decide_join(1, &census(vec![(2, fresh(2)), (3, fresh(3))])), Join::Bootstrap);
        assert_eq!(decide_join(2, &census(vec![(1, fresh(1)), (3, fresh(3))])), Join::Wait { silent: vec![] });
        assert_eq!(decide_join(1, &census(vec![(2, fresh(2)), (3, None)])), Join::Wait { silent: vec![3] });
        assert_eq!(decide_join(1, &census(vec![])), Join::Bootstrap, "one member alone is the whole cluster");
    }

    #[test]
    fn a_fresh_member_joins_a_forming_incarnation_at_once() {
        let mut forming = holding(1, "t1", 1).unwrap();
        forming.forming = true;
        assert_eq!(decide_join(2, &census(vec![(1, Some(forming)), (3, fresh(3))])), Join::Forming("t1".into()));
    }

    #[test]
    fn a_wiped_member_catches_up_from_a_majority_before_it_votes() {
        let c = census(vec![(1, holding(1, "t1", 40)), (3, holding(3, "t1", 42))]);
        assert_eq!(decide_join(2, &c), Join::CatchUp { incarnation: "t1".into(), applied: 42 });
    }

    #[test]
    fn with_two_of_three_wiped_the_incarnation_is_lost_and_nobody_starts_a_new_one() {
        let c = census(vec![(1, holding(1, "t1", 40)), (3, fresh(3))]);
        assert_eq!(decide_join(2, &c), Join::Lost { incarnation: "t1".into(), holders: 1 });
        // Member 1 is the lowest id but holds state: no bootstrap for member 3 either.
        let c = census(vec![(1, holding(1, "t1", 40)), (2, fresh(2))]);
        assert_eq!(decide_join(3, &c), Join::Lost { incarnation: "t1".into(), holders: 1 });
        // And the holder knows it is alone.
        assert_eq!(lost_majority("t1", &census(vec![(2, fresh(2)), (3, fresh(3))])), Some(1));
        assert_eq!(lost_majority("t1", &census(vec![(2, holding(2, "t1", 1)), (3, fresh(3))])), None);
        assert_eq!(lost_majority("t1", &census(vec![(2, fresh(2)), (3, None)])), None, "not everyone answered");
    }

    #[test]
    fn a_holder_of_a_replaced_incarnation_learns_it_was_superseded() {
        let mut t2 = holding(2, "t2", 3).unwrap();
        t2.replaced = Some("t1".into());
        let c = census(vec![(2, Some(t2)), (3, holding(3, "t2", 3))]);
        assert_eq!(superseded_by("t1", &c), Some("t2".into()));
        assert_eq!(superseded_by("t2", &c), None);
    }
}
