//! Who may be promoted, decided from what the standbys said — a pure function, so every case
//! is a unit test.
//!
//! Under quorum commit the primary acknowledged a commit once any one of the standbys named in
//! `synchronous_standby_names = 'ANY 1 (s1 … sN)'` had flushed it. Some standby that answers
//! holds every acknowledged write only if the answers come from at least N − 1 + 1 = N of those
//! standbys (with `ANY k`, N − k + 1): then the most advanced one by WAL received holds them
//! all. With fewer answers there is no safe choice: the election waits — writes are
//! unavailable, nothing acknowledged is lost — and completes as soon as enough standbys answer.
//!
//! Under asynchronous commit no standby is guaranteed to hold the last acknowledged writes: the
//! most advanced standby that answers is promoted at once, and what only the old primary had
//! is lost (`strata status` and docs/data.md say so).

use crate::CommitMode;

/// What one standby answered: its name and the WAL it has received and flushed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub name: String,
    pub received: u64,
}

/// The outcome of an election.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Promote `name`, which has received up to `received`. `rewind` lists the candidates that
    /// may hold WAL it never had (they did not answer): they rewind before they follow it.
    Promote {
        name: String,
        received: u64,
        rewind: Vec<String>,
    },
    /// No safe choice yet: `reachable` of the `needed` standbys answered.
    Wait { reachable: usize, needed: usize },
}

/// How many standbys of the quorum (`ANY quorum (sync…)`) must answer for an election to be
/// safe.
pub fn needed(commit: CommitMode, sync: &[String]) -> usize {
    match commit {
        // ANY 1 of N: N − 1 + 1.
        CommitMode::Quorum if !sync.is_empty() => sync.len(),
        _ => 1,
    }
}

/// Decides an election among `candidates` (the standbys that followed the lost primary) given
/// the `answers` of those that answered.
pub fn decide(
    commit: CommitMode,
    sync: &[String],
    candidates: &[String],
    answers: &[Answer],
) -> Decision {
    let answered: Vec<&Answer> = answers
        .iter()
        .filter(|a| candidates.contains(&a.name))
        .collect();
    let needed = needed(commit, sync);
    let reachable = match commit {
        CommitMode::Quorum if !sync.is_empty() => {
            answered.iter().filter(|a| sync.contains(&a.name)).count()
        }
        _ => answered.len(),
    };
    // The most advanced; on a tie, the first by name.
    let best = answered.iter().max_by(|a, b| {
        a.received
            .cmp(&b.received)
            .then_with(|| b.name.cmp(&a.name))
    });
    match best {
        Some(best) if reachable >= needed => Decision::Promote {
            name: best.name.clone(),
            received: best.received,
            rewind: candidates
                .iter()
                .filter(|c| !answered.iter().any(|a| &a.name == *c))
                .cloned()
                .collect(),
        },
        _ => Decision::Wait { reachable, needed },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn answer(name: &str, received: u64) -> Answer {
        Answer {
            name: name.into(),
            received,
        }
    }

    #[test]
    fn under_quorum_commit_the_lagging_standby_alone_is_never_promoted() {
        // The double fault: pg-2 was stopped while pg-3 alone acknowledged commits; then pg-2
        // came back just as the primary and pg-3 froze. pg-2 alone answers: wait.
        let sync = names(&["pg-2", "pg-3"]);
        assert_eq!(
            decide(CommitMode::Quorum, &sync, &sync, &[answer("pg-2", 100)]),
            Decision::Wait {
                reachable: 1,
                needed: 2
            }
        );
        // pg-3 answers again: it is the most advanced, and it is promoted.
        assert_eq!(
            decide(
                CommitMode::Quorum,
                &sync,
                &sync,
                &[answer("pg-2", 100), answer("pg-3", 900)]
            ),
            Decision::Promote {
                name: "pg-3".into(),
                received: 900,
                rewind: Vec::new()
            }
        );
    }

    #[test]
    fn with_n_standbys_all_n_must_answer_and_ties_go_to_the_first_name() {
        let sync = names(&["pg-2", "pg-3", "pg-4"]);
        let two = [answer("pg-3", 5), answer("pg-4", 5)];
        assert_eq!(
            decide(CommitMode::Quorum, &sync, &sync, &two),
            Decision::Wait {
                reachable: 2,
                needed: 3
            }
        );
        let all = [answer("pg-4", 5), answer("pg-2", 5), answer("pg-3", 5)];
        assert!(matches!(
            decide(CommitMode::Quorum, &sync, &sync, &all),
            Decision::Promote { name, .. } if name == "pg-2"
        ));
    }

    #[test]
    fn answers_of_servers_that_are_not_candidates_do_not_count() {
        // pg-1 is the lost primary (fenced): whatever it says, it is no candidate.
        let sync = names(&["pg-2", "pg-3"]);
        assert_eq!(
            decide(
                CommitMode::Quorum,
                &sync,
                &sync,
                &[answer("pg-1", 999), answer("pg-2", 1)]
            ),
            Decision::Wait {
                reachable: 1,
                needed: 2
            }
        );
    }

    #[test]
    fn asynchronous_commit_promotes_the_most_advanced_that_answers_and_rewinds_the_silent() {
        let candidates = names(&["pg-2", "pg-3"]);
        assert_eq!(
            decide(CommitMode::Async, &[], &candidates, &[answer("pg-2", 7)]),
            Decision::Promote {
                name: "pg-2".into(),
                received: 7,
                rewind: names(&["pg-3"])
            }
        );
        assert_eq!(
            decide(CommitMode::Async, &[], &candidates, &[]),
            Decision::Wait {
                reachable: 0,
                needed: 1
            }
        );
    }

    #[test]
    fn a_candidate_outside_the_quorum_may_win_once_the_quorum_has_answered() {
        // pg-4 is rejoining (not yet in the quorum) but has everything: it may be promoted, as
        // it holds at least what the most advanced standby of the quorum holds.
        let sync = names(&["pg-2"]);
        let candidates = names(&["pg-2", "pg-4"]);
        assert!(matches!(
            decide(
                CommitMode::Quorum,
                &sync,
                &candidates,
                &[answer("pg-2", 10), answer("pg-4", 12)]
            ),
            Decision::Promote { name, .. } if name == "pg-4"
        ));
    }
}
