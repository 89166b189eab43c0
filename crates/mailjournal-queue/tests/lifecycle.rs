//! Scenario tests with explicit times (no sleeping), and property tests over random
//! interleavings of enqueue, poll, answers, time and restarts.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use mailjournal_queue::*;
use proptest::prelude::*;

const T0: Timestamp = Timestamp(1_700_000_000_000);

fn meta(id: u64, received_at: Timestamp, timing: Timing) -> ItemMeta {
    ItemMeta {
        id: ItemId(id),
        definition: "Microsoft 365".into(),
        sender: "journal-ndr@contoso.com".into(),
        recipients: vec!["journaling@journal.contoso.com".into()],
        received_at,
        timing,
    }
}

fn at(min: u64, sec: u64) -> Timestamp {
    T0 + Duration::minutes(min) + Duration::seconds(sec)
}

#[test]
fn default_timings_three_attempts_one_minute_apart_then_archive() {
    let mut q = Queue::new(QueueParams::default());
    q.enqueue(meta(1, T0, Timing::default()), T0).unwrap();
    assert_eq!(q.poll(T0), [Action::TryMatch(ItemId(1))]);
    assert_eq!(
        q.on_match_result(ItemId(1), MatchResult::NotFound, T0)
            .unwrap(),
        None
    );
    assert_eq!(q.poll(at(0, 59)), []);
    assert_eq!(q.next_deadline(), Some(at(1, 0)));
    assert_eq!(q.poll(at(1, 0)), [Action::TryMatch(ItemId(1))]);
    q.on_match_result(ItemId(1), MatchResult::NotFound, at(1, 0))
        .unwrap();
    assert_eq!(q.poll(at(2, 0)), [Action::TryMatch(ItemId(1))]);
    assert_eq!(
        q.on_match_result(ItemId(1), MatchResult::NotFound, at(2, 0))
            .unwrap(),
        Some(Action::Archive(ItemId(1)))
    );
    assert_eq!(q.item(ItemId(1)).unwrap().state, ItemState::Archiving);
    q.on_archived(ItemId(1), at(2, 1)).unwrap();
    let item = q.item(ItemId(1)).unwrap();
    assert_eq!(
        (item.state.clone(), item.attempts),
        (ItemState::Archived, 3)
    );
    assert_eq!(q.next_deadline(), None);
}

#[test]
fn initial_delay_is_honoured() {
    let mut q = Queue::new(QueueParams::default());
    let timing = Timing {
        initial_process_delay: Duration::minutes(5),
        ..Timing::default()
    };
    q.enqueue(meta(1, T0, timing), T0).unwrap();
    assert_eq!(q.next_deadline(), Some(at(5, 0)));
    assert_eq!(q.poll(at(4, 59)), []);
    assert_eq!(q.poll(at(5, 0)), [Action::TryMatch(ItemId(1))]);
}

#[test]
fn match_on_the_second_attempt_merges() {
    let mut q = Queue::new(QueueParams::default());
    q.enqueue(meta(2, T0, Timing::default()), T0).unwrap();
    q.poll(T0);
    q.on_match_result(ItemId(2), MatchResult::NotFound, T0)
        .unwrap();
    q.poll(at(1, 0));
    assert_eq!(
        q.on_match_result(ItemId(2), MatchResult::Found(ItemId(77)), at(1, 0))
            .unwrap(),
        None
    );
    let item = q.item(ItemId(2)).unwrap();
    assert_eq!(item.state, ItemState::Merged { into: ItemId(77) });
    assert_eq!(item.attempts, 2);
    assert_eq!(q.poll(at(60, 0)), []);
}

#[test]
fn extended_deduplication_holds_ten_minutes_without_extra_attempts() {
    let mut q = Queue::new(QueueParams::default());
    let timing = Timing {
        extended_deduplication: true,
        ..Timing::default()
    };
    q.enqueue(meta(3, T0, timing), T0).unwrap();
    for minute in [0, 1] {
        assert_eq!(q.poll(at(minute, 0)), [Action::TryMatch(ItemId(3))]);
        assert_eq!(
            q.on_match_result(ItemId(3), MatchResult::NotFound, at(minute, 0))
                .unwrap(),
            None
        );
    }
    // The third and last attempt waits for the gateway copy's ten minutes.
    assert_eq!(q.poll(at(2, 0)), []);
    assert_eq!(q.next_deadline(), Some(at(10, 0)));
    assert_eq!(q.poll(at(9, 59)), []);
    assert_eq!(q.poll(at(10, 0)), [Action::TryMatch(ItemId(3))]);
    assert_eq!(
        q.on_match_result(ItemId(3), MatchResult::NotFound, at(10, 0))
            .unwrap(),
        Some(Action::Archive(ItemId(3)))
    );
    assert_eq!(q.item(ItemId(3)).unwrap().attempts, 3);

    // With a single attempt the hold applies from the start.
    let mut q = Queue::new(QueueParams::default());
    let timing = Timing {
        extended_deduplication: true,
        delivery_wait_attempts: 1,
        ..Timing::default()
    };
    q.enqueue(meta(4, T0, timing), T0).unwrap();
    assert_eq!(q.poll(T0), []);
    assert_eq!(q.poll(at(10, 0)), [Action::TryMatch(ItemId(4))]);
}

#[test]
fn items_older_than_thirty_days_expire() {
    let mut q = Queue::new(QueueParams::default());
    q.enqueue(meta(5, T0, Timing::default()), T0).unwrap();
    q.enqueue(meta(6, T0, Timing::default()), T0).unwrap();
    let late = T0 + Duration::days(30) + Duration(1);
    assert_eq!(
        q.poll(late),
        [Action::Expire(ItemId(5)), Action::Expire(ItemId(6))]
    );
    assert_eq!(q.item(ItemId(5)).unwrap().state, ItemState::Expired);
    // Exactly thirty days is still processed.
    let mut q = Queue::new(QueueParams::default());
    q.enqueue(meta(7, T0, Timing::default()), T0).unwrap();
    assert_eq!(
        q.poll(T0 + Duration::days(30)),
        [Action::TryMatch(ItemId(7))]
    );
}

#[test]
fn policy_drops_and_failures_stay_visible_and_retry_starts_over() {
    let mut q = Queue::new(QueueParams::default());
    q.enqueue(meta(8, T0, Timing::default()), T0).unwrap();
    q.enqueue(meta(9, T0, Timing::default()), T0).unwrap();
    q.poll(T0);
    q.on_not_archived(ItemId(8), "no_internal_addresses", T0)
        .unwrap();
    q.on_failed(ItemId(9), "parse panicked", T0).unwrap();
    let details = q.details(T0, 0);
    assert_eq!(details.counts.get("not_archived"), Some(&1));
    assert_eq!(details.counts.get("failed"), Some(&1));
    assert_eq!(
        q.item(ItemId(8)).unwrap().state,
        ItemState::NotArchived {
            reason: "no_internal_addresses".into()
        }
    );
    assert!(matches!(
        q.on_match_result(ItemId(9), MatchResult::NotFound, T0),
        Err(QueueError::WrongState { .. })
    ));
    assert_eq!(
        q.prune(at(60, 0)),
        1,
        "the dropped item is pruned, the failed one stays"
    );
    q.retry(ItemId(9), at(5, 0)).unwrap();
    assert_eq!(q.poll(at(5, 0)), [Action::TryMatch(ItemId(9))]);
    assert_eq!(q.item(ItemId(9)).unwrap().attempts, 1);
}

#[test]
fn duplicates_and_unknown_ids_are_errors() {
    let mut q = Queue::new(QueueParams::default());
    q.enqueue(meta(1, T0, Timing::default()), T0).unwrap();
    assert_eq!(
        q.enqueue(meta(1, T0, Timing::default()), T0),
        Err(QueueError::Duplicate(ItemId(1)))
    );
    assert_eq!(
        q.on_archived(ItemId(2), T0),
        Err(QueueError::Unknown(ItemId(2)))
    );
}

#[test]
fn details_list_newest_first_with_counts_and_oldest_pending_age() {
    let mut q = Queue::new(QueueParams::default());
    for i in 0..5 {
        q.enqueue(
            meta(
                i,
                at(i, 0),
                Timing {
                    initial_process_delay: Duration::minutes(30),
                    ..Timing::default()
                },
            ),
            at(i, 0),
        )
        .unwrap();
    }
    let d = q.details(at(10, 0), 2);
    assert_eq!(
        d.items.iter().map(|i| i.meta.id.0).collect::<Vec<_>>(),
        [4, 3]
    );
    assert_eq!(d.counts.get("waiting"), Some(&5));
    assert_eq!(d.oldest_pending_age, Some(Duration::minutes(10)));
    assert_eq!(
        d.items[0].meta.recipients,
        ["journaling@journal.contoso.com"]
    );
}

#[test]
fn restore_repeats_unanswered_actions_once() {
    let mut q = Queue::new(QueueParams::default());
    q.enqueue(meta(1, T0, Timing::default()), T0).unwrap();
    q.poll(T0);
    let json = serde_json::to_string(&q.snapshot()).unwrap();
    let mut restored = Queue::restore(serde_json::from_str(&json).unwrap(), at(0, 30));
    assert_eq!(restored.poll(at(0, 30)), [Action::TryMatch(ItemId(1))]);
    assert_eq!(
        restored.item(ItemId(1)).unwrap().attempts,
        1,
        "the lost attempt is not counted twice"
    );
}

// ---------------------------------------------------------------------------------------
// Properties.

#[derive(Debug, Clone)]
enum Op {
    Enqueue {
        delay_min: u64,
        attempts: u32,
        dedup: bool,
    },
    Advance {
        secs: u64,
    },
    Restart,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0u64..20, 0u32..5, any::<bool>()).prop_map(|(delay_min, attempts, dedup)| Op::Enqueue { delay_min, attempts, dedup }),
        5 => (0u64..900).prop_map(|secs| Op::Advance { secs }),
        // Past the 30-day maximum age: items waiting then expire.
        1 => Just(Op::Advance { secs: 31 * 86_400 }),
        1 => Just(Op::Restart),
    ]
}

/// Runs the ops against a queue, answering every action at once with `answers` (cycled:
/// `Some(k)` = found archived item k, `None` = not found). With `restarts`, the queue is
/// snapshotted, serialised and restored at each `Restart`. Checks the per-step invariants,
/// then that every item made exactly the attempts its path allows: all of its configured
/// ones when archived as new, up to the one that found a match when merged, and fewer or as
/// many when it expired. Returns the final snapshot.
fn run(ops: &[Op], answers: &[Option<u64>], restarts: bool) -> Snapshot {
    let mut q = Queue::new(QueueParams::default());
    let mut now = T0;
    let mut next_id = 0;
    let mut answer = answers.iter().cycle();
    let mut timings = std::collections::HashMap::new();
    // Due actions are taken in rounds of a size that varies between cases (poll_at_most),
    // down to one at a time.
    let round = 1 + answers.len() % 4;
    // Match attempts the queue asked for, per item, and the attempt that found a match.
    let mut asked: std::collections::HashMap<u64, u32> = std::collections::HashMap::new();
    let mut found_at: std::collections::HashMap<u64, u32> = std::collections::HashMap::new();
    let mut drive = |q: &mut Queue, now: Timestamp| {
        let mut pending: Vec<Action> = q.poll_at_most(now, round);
        while let Some(action) = pending.pop().or_else(|| {
            pending = q.poll_at_most(now, round);
            pending.pop()
        }) {
            match action {
                Action::TryMatch(id) => {
                    let item = q.item(id).unwrap();
                    let t: &Timing = &item.meta.timing;
                    assert!(
                        now >= item.meta.received_at + t.initial_process_delay,
                        "attempt before the initial delay"
                    );
                    assert!(
                        item.attempts <= t.delivery_wait_attempts.max(1),
                        "too many attempts"
                    );
                    let made = asked.entry(id.0).or_default();
                    *made += 1;
                    let result = match answer.next().copied().flatten() {
                        Some(k) => {
                            found_at.entry(id.0).or_insert(*made);
                            MatchResult::Found(ItemId(10_000 + k))
                        }
                        None => MatchResult::NotFound,
                    };
                    pending.extend(q.on_match_result(id, result, now).unwrap());
                }
                Action::Archive(id) => {
                    let item = q.item(id).unwrap();
                    if item.meta.timing.extended_deduplication {
                        assert!(
                            now >= item.meta.received_at + Duration::minutes(10),
                            "archived as new within the hold"
                        );
                    }
                    q.on_archived(id, now).unwrap();
                }
                Action::Expire(_) => {}
            }
        }
    };
    for op in ops {
        match op {
            Op::Enqueue {
                delay_min,
                attempts,
                dedup,
            } => {
                let timing = Timing {
                    initial_process_delay: Duration::minutes(*delay_min),
                    delivery_wait_attempts: *attempts,
                    extended_deduplication: *dedup,
                };
                timings.insert(next_id, timing);
                q.enqueue(meta(next_id, now, timing), now).unwrap();
                next_id += 1;
            }
            Op::Advance { secs } => {
                now = now + Duration::seconds(*secs);
                drive(&mut q, now);
            }
            Op::Restart if restarts => {
                let json = serde_json::to_string(&q.snapshot()).unwrap();
                q = Queue::restore(serde_json::from_str(&json).unwrap(), now);
            }
            Op::Restart => {}
        }
    }
    // Run to completion.
    while let Some(deadline) = q.next_deadline() {
        now = now.max(deadline);
        drive(&mut q, now);
    }
    let snapshot = q.snapshot();
    assert_eq!(snapshot.items.len(), next_id as usize);
    for item in &snapshot.items {
        assert!(item.state.is_terminal(), "{:?} did not finish", item);
        let id = item.meta.id.0;
        let configured = timings[&id].delivery_wait_attempts.max(1);
        let made = asked.get(&id).copied().unwrap_or(0);
        assert_eq!(item.attempts, made, "{item:?}: attempts counted");
        match &item.state {
            ItemState::Archived => {
                assert_eq!(made, configured, "{item:?}: archived as new");
                assert!(!found_at.contains_key(&id), "{item:?}: a match was found");
            }
            ItemState::Merged { .. } => {
                assert_eq!(Some(&made), found_at.get(&id), "{item:?}: merged")
            }
            ItemState::Expired => assert!(made <= configured, "{item:?}: expired"),
            other => panic!("{item:?}: unexpected end state {other:?}"),
        }
    }
    snapshot
}

proptest! {
    #[test]
    fn every_item_reaches_exactly_one_terminal_state(
        ops in prop::collection::vec(op(), 0..60),
        answers in prop::collection::vec(prop::option::weighted(0.2, 0u64..5), 1..8),
    ) {
        run(&ops, &answers, false);
    }

    #[test]
    fn snapshot_restore_continue_equals_never_restarting(
        ops in prop::collection::vec(op(), 0..60),
        answers in prop::collection::vec(prop::option::weighted(0.2, 0u64..5), 1..8),
    ) {
        // Every action is answered within the step that issued it, so a restart never finds
        // an unanswered action and the two runs must agree exactly.
        prop_assert_eq!(run(&ops, &answers, true), run(&ops, &answers, false));
    }
}

#[test]
fn dropping_a_waiting_item_clears_its_deadline() {
    let mut q = Queue::new(QueueParams::default());
    let timing = Timing {
        initial_process_delay: Duration::minutes(5),
        ..Timing::default()
    };
    q.enqueue(meta(1, T0, timing), T0).unwrap();
    assert_eq!(q.next_deadline(), Some(at(5, 0)));
    q.on_not_archived(ItemId(1), "only_unknown_internal_addresses", T0)
        .unwrap();
    assert_eq!(q.next_deadline(), None);
    assert_eq!(q.poll(at(5, 0)), []);
}

#[test]
fn a_resumed_item_gets_only_the_attempts_left_and_keeps_the_extended_hold() {
    let mut q = Queue::new(QueueParams::default());
    let timing = Timing {
        extended_deduplication: true,
        ..Timing::default()
    };
    // Two of three attempts were made before a restart at 3 minutes.
    q.resume(meta(1, T0, timing), 2, at(3, 0)).unwrap();
    assert_eq!(q.item(ItemId(1)).unwrap().attempts, 2);
    // The last attempt still waits for the ten-minute hold.
    assert_eq!(q.poll(at(3, 0)), []);
    assert_eq!(q.next_deadline(), Some(at(10, 0)));
    assert_eq!(q.poll(at(10, 0)), [Action::TryMatch(ItemId(1))]);
    assert_eq!(
        q.on_match_result(ItemId(1), MatchResult::NotFound, at(10, 0)),
        Ok(Some(Action::Archive(ItemId(1))))
    );

    // Every attempt was made and the last answer was lost: archive at once.
    q.resume(meta(2, T0, Timing::default()), 9, at(3, 0))
        .unwrap();
    assert_eq!(q.item(ItemId(2)).unwrap().attempts, 3);
    assert_eq!(q.poll(at(3, 0)), [Action::Archive(ItemId(2))]);

    // Not before the initial delay, and never a duplicate.
    let delayed = Timing {
        initial_process_delay: Duration::minutes(30),
        ..Timing::default()
    };
    q.resume(meta(3, T0, delayed), 0, at(3, 0)).unwrap();
    assert_eq!(q.next_deadline(), Some(at(30, 0)));
    assert_eq!(
        q.resume(meta(3, T0, delayed), 0, at(3, 0)),
        Err(QueueError::Duplicate(ItemId(3)))
    );
}
