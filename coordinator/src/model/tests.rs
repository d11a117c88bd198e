use super::*;

/// The incarnation every test group is created with, and another one.
const INC_1: IncarnationToken = IncarnationToken([0x11; 16]);
const INC_0: IncarnationToken = IncarnationToken([0x10; 16]);

fn req(id: &str, command: Command) -> Request {
    Request { id: id.to_string(), command }
}

fn register(s: &mut State, id: &str, member: &str, mode: Mode, token: Option<IncarnationToken>) -> Outcome {
    let command = Command::Register {
        group: "g".into(),
        member: member.into(),
        address: format!("{member}:1"),
        primary: member == "p",
        mode: Some(mode),
        token: token.map(|t| t.to_string()),
        new_incarnation: INC_1,
    };
    s.apply(&req(id, command))
}

fn report(s: &mut State, id: &str, member: &str, epoch: u64, held: u64, released: u64) -> Outcome {
    let command = Command::Report {
        group: "g".into(),
        member: member.into(),
        epoch: Epoch(epoch),
        held: Seq(held),
        released: Seq(released),
        diverged: false,
    };
    s.apply(&req(id, command))
}

fn lapse(s: &mut State, id: &str, epoch: u64) -> Outcome {
    s.apply(&req(id, Command::LeaseExpired { group: "g".into(), epoch: Epoch(epoch), silent: Vec::new() }))
}

/// A sync group: primary p released output up to 100; b_ok holds 120, b_behind 90, b_new has
/// no token yet, b_div diverged.
fn group_with_backups() -> State {
    let mut s = State::default();
    register(&mut s, "r1", "p", Mode::Sync, None).unwrap();
    for (i, b) in ["b_ok", "b_behind", "b_new", "b_div"].iter().enumerate() {
        let token = (*b != "b_new").then_some(INC_1);
        register(&mut s, &format!("r2.{i}"), b, Mode::Sync, token).unwrap();
    }
    report(&mut s, "r3", "p", 1, 130, 100).unwrap();
    report(&mut s, "r4", "b_ok", 1, 120, 0).unwrap();
    report(&mut s, "r5", "b_behind", 1, 90, 0).unwrap();
    let div = Command::Report {
        group: "g".into(),
        member: "b_div".into(),
        epoch: Epoch(1),
        held: Seq(200),
        released: Seq(0),
        diverged: true,
    };
    s.apply(&req("r6", div)).unwrap();
    s
}

#[test]
fn the_first_member_is_primary_at_epoch_one_and_joiners_with_a_token_are_backups() {
    let mut s = State::default();
    let g = register(&mut s, "a", "p", Mode::Sync, None).unwrap();
    assert_eq!((g.epoch, g.primary.as_deref(), g.incarnation), (Epoch(1), Some("p"), INC_1));
    let g = register(&mut s, "b", "b1", Mode::Sync, Some(INC_1)).unwrap();
    assert_eq!(g.primary.as_deref(), Some("p"));
    assert!(!g.members["b1"].catching_up);
}

#[test]
fn only_the_primary_creates_a_group_and_nobody_else_claims_it() {
    let mut s = State::default();
    let e = register(&mut s, "a", "b1", Mode::Sync, None).unwrap_err();
    assert_eq!(e, Refusal::NoGroup { group: "g".into() });
    register(&mut s, "b", "p", Mode::Sync, None).unwrap();
    let claim = Command::Register {
        group: "g".into(),
        member: "q".into(),
        address: String::new(),
        primary: true,
        mode: None,
        token: None,
        new_incarnation: IncarnationToken([0x22; 16]),
    };
    let e = s.apply(&req("c", claim)).unwrap_err();
    assert!(
        matches!(e, Refusal::NotPrimary { ref primary, epoch: Epoch(1), .. } if primary.as_deref() == Some("p")),
        "{e}"
    );
    assert_eq!(e.to_string(), "q cannot be primary of group g: its primary is p in epoch 1; start q as a backup");
    assert_eq!(s.groups["g"].incarnation, INC_1);
}

#[test]
fn a_member_holding_another_incarnation_is_refused() {
    let mut s = State::default();
    register(&mut s, "a", "p", Mode::Sync, None).unwrap();
    let e = register(&mut s, "b", "b1", Mode::Sync, Some(INC_0)).unwrap_err();
    assert!(
        matches!(e, Refusal::StaleIncarnation { ref held, current, .. } if *held == INC_0.to_string() && current == INC_1)
    );
    assert!(!s.groups["g"].members.contains_key("b1"), "a refused member must not be added");
    assert!(e.to_string().contains(&INC_0.to_string()) && e.to_string().contains(&INC_1.to_string()));
}

#[test]
fn a_member_without_a_token_must_catch_up_before_it_can_be_promoted() {
    let mut s = group_with_backups();
    assert!(s.groups["g"].members["b_new"].catching_up);
    let e = s
        .apply(&req("f", Command::Failover { group: "g".into(), to: Some("b_new".into()), silent: Vec::new() }))
        .unwrap_err();
    assert!(matches!(e, Refusal::NotEligible { ref why, .. } if why.contains("caught up")), "{e}");
    report(&mut s, "rep", "b_new", 1, 150, 0).unwrap();
    assert!(!s.groups["g"].members["b_new"].catching_up);
}

#[test]
fn a_lapsed_lease_promotes_only_an_eligible_backup() {
    let mut s = group_with_backups();
    let g = lapse(&mut s, "lapse", 1).unwrap();
    // b_div holds the most but diverged; b_behind lacks released output; b_new is catching up.
    assert_eq!((g.primary.as_deref(), g.epoch, g.stalled), (Some("b_ok"), Epoch(2), false));
    assert!(!g.members.contains_key("p"), "the old primary leaves the group");
}

#[test]
fn a_named_failover_refuses_each_kind_of_ineligible_backup_and_changes_nothing() {
    let mut s = group_with_backups();
    let before = s.groups["g"].clone();
    for (i, (to, why)) in
        [("b_behind", "released"), ("b_div", "diverged"), ("b_new", "caught up"), ("p", "is the primary")]
            .iter()
            .enumerate()
    {
        let e = s.apply(&req(
            &format!("f{i}"),
            Command::Failover { group: "g".into(), to: Some(to.to_string()), silent: Vec::new() },
        ));
        assert!(matches!(e, Err(Refusal::NotEligible { why: ref w, .. }) if w.contains(why)), "{to}: {e:?}");
    }
    assert_eq!(s.groups["g"], before);
    let g = s
        .apply(&req("ok", Command::Failover { group: "g".into(), to: Some("b_ok".into()), silent: Vec::new() }))
        .unwrap();
    assert_eq!((g.primary.as_deref(), g.epoch), (Some("b_ok"), Epoch(2)));
}

#[test]
fn with_no_eligible_backup_a_lapsed_lease_stalls_the_group_and_a_request_changes_nothing() {
    let mut s = State::default();
    register(&mut s, "a", "p", Mode::Sync, None).unwrap();
    register(&mut s, "b", "b1", Mode::Sync, Some(INC_1)).unwrap();
    report(&mut s, "c", "p", 1, 50, 40).unwrap();
    report(&mut s, "d", "b1", 1, 30, 0).unwrap();
    let e = s.apply(&req("f", Command::Failover { group: "g".into(), to: None, silent: Vec::new() })).unwrap_err();
    assert_eq!(e, Refusal::NoEligible { group: "g".into() });
    assert_eq!(s.groups["g"].epoch, Epoch(1));
    let g = lapse(&mut s, "l", 1).unwrap();
    assert!(g.stalled && g.primary.is_none() && g.epoch == Epoch(2), "{g:?}");
    // A second report of the same lapse changes nothing.
    assert_eq!(lapse(&mut s, "l2", 1).unwrap(), g);
}

#[test]
fn async_mode_promotes_the_most_up_to_date_backup_even_behind_released_output() {
    let mut s = State::default();
    register(&mut s, "a", "p", Mode::Async, None).unwrap();
    register(&mut s, "b", "b1", Mode::Async, Some(INC_1)).unwrap();
    register(&mut s, "c", "b2", Mode::Async, Some(INC_1)).unwrap();
    report(&mut s, "d", "p", 1, 500, 500).unwrap();
    report(&mut s, "e", "b1", 1, 300, 0).unwrap();
    report(&mut s, "f", "b2", 1, 400, 0).unwrap();
    assert_eq!(lapse(&mut s, "l", 1).unwrap().primary.as_deref(), Some("b2"));
}

#[test]
fn reports_of_an_older_epoch_are_refused() {
    let mut s = group_with_backups();
    lapse(&mut s, "l", 1).unwrap();
    let e = report(&mut s, "late", "b_behind", 1, 95, 0).unwrap_err();
    assert!(matches!(e, Refusal::StaleEpoch { reported: Epoch(1), current: Epoch(2), .. }));
    assert_eq!(s.groups["g"].members["b_behind"].held, Seq(90));
}

#[test]
fn a_retried_request_id_is_applied_once_and_returns_its_first_outcome() {
    let mut s = group_with_backups();
    let failover = Command::Failover { group: "g".into(), to: None, silent: Vec::new() };
    let first = s.apply(&req("retry-me", failover.clone()));
    let g = first.clone().unwrap();
    assert_eq!(g.epoch, Epoch(2));
    // The retry (say, to a new leader after the first reply was lost) finds the first outcome.
    for _ in 0..3 {
        assert_eq!(s.apply(&req("retry-me", failover.clone())), first);
    }
    assert_eq!(s.groups["g"].epoch, Epoch(2));
    assert_eq!(s.outcome_of("retry-me"), Some(&first));
    // A new id is a new request: from b_ok, no backup is left to fail over to.
    assert_eq!(s.apply(&req("another", failover)), Err(Refusal::NoEligible { group: "g".into() }));
}

#[test]
fn old_request_ids_are_forgotten_oldest_first() {
    let mut s = State::default();
    register(&mut s, "first", "p", Mode::Sync, None).unwrap();
    for i in 0..REMEMBERED_REQUESTS {
        report(&mut s, &format!("r{i}"), "p", 1, i as u64, 0).unwrap();
    }
    assert!(s.outcome_of("first").is_none());
    assert!(s.outcome_of("r1").is_some());
}

/// A small deterministic generator, so a failing sequence can be replayed from its seed.
struct Rng(u64);
impl Rng {
    fn next(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

#[test]
fn under_random_commands_epochs_only_grow_and_every_new_primary_was_eligible() {
    let names = ["m0", "m1", "m2", "m3", "m4"];
    for seed in 1..200u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let mut s = State::default();
        let mode = if seed % 2 == 0 { Mode::Sync } else { Mode::Async };
        let mut ids: Vec<String> = Vec::new();
        for step in 0..300 {
            let member = names[rng.next(5) as usize].to_string();
            let epoch = Epoch(s.groups.get("g").map_or(1, |g| g.epoch.0 - rng.next(2).min(g.epoch.0 - 1)));
            // Members the proposing leader has not heard from lately.
            let silent: Vec<String> = names.iter().filter(|_| rng.next(8) == 0).map(|n| n.to_string()).collect();
            let command = match rng.next(8) {
                0 => Command::Register {
                    group: "g".into(),
                    member: member.clone(),
                    address: String::new(),
                    primary: rng.next(4) == 0,
                    mode: Some(mode),
                    token: (rng.next(3) != 0).then(|| INC_1.to_string()),
                    new_incarnation: INC_1,
                },
                1 | 2 => Command::Report {
                    group: "g".into(),
                    member: member.clone(),
                    epoch,
                    held: Seq(rng.next(1000)),
                    released: Seq(rng.next(1000)),
                    diverged: rng.next(20) == 0,
                },
                3 => Command::Failover {
                    group: "g".into(),
                    to: (rng.next(2) == 0).then(|| member.clone()),
                    silent: silent.clone(),
                },
                4 if rng.next(4) == 0 => {
                    Command::Stop { group: "g".into(), member: member.clone(), epoch, diverged: rng.next(4) == 0 }
                }
                _ => Command::LeaseExpired { group: "g".into(), epoch, silent: silent.clone() },
            };
            // Now and then, a retry of an earlier request.
            let id = if !ids.is_empty() && rng.next(5) == 0 {
                ids[rng.next(ids.len() as u64) as usize].clone()
            } else {
                format!("{seed}.{step}")
            };
            let retry = s.outcome_of(&id).cloned();
            let before = s.groups.get("g").cloned();
            let outcome = s.apply(&Request { id: id.clone(), command });
            ids.push(id);
            let after = s.groups.get("g").cloned();
            if let Some(first) = retry {
                assert_eq!(outcome, first, "seed {seed}: a retry must return the first outcome");
                assert_eq!(after, before, "seed {seed}: a retry must change nothing");
                continue;
            }
            let (Some(b), Some(a)) = (before, after) else { continue };
            assert!(a.epoch >= b.epoch, "seed {seed}: epoch went from {} to {}", b.epoch, a.epoch);
            if b.stopped && !a.stopped {
                // A stopped group starts again only through its primary's registration, as a new
                // history in a later epoch, without the old run's members.
                assert_eq!(a.epoch, b.epoch.next(), "seed {seed}: a restart needs a new epoch");
                assert_eq!(a.members.len(), 1, "seed {seed}: the old run's members stayed: {a:?}");
                continue;
            }
            if a.primary != b.primary {
                assert!(!b.stopped, "seed {seed}: a stopped group changed primary: {b:?}");
                assert_eq!(a.epoch, b.epoch.next(), "seed {seed}: a new primary needs a new epoch");
                if let Some(p) = &a.primary {
                    let m = &b.members[p];
                    assert!(!m.diverged && !m.catching_up, "seed {seed}: promoted {p}: {m:?}");
                    assert!(!m.exited && !silent.contains(p), "seed {seed}: promoted {p}, stopped or silent: {m:?}");
                    if mode == Mode::Sync {
                        assert!(m.held >= b.released, "seed {seed}: promoted {p} onto a hole: {m:?} < {}", b.released);
                    }
                }
            }
        }
    }
}

#[test]
fn a_stalled_group_refuses_a_new_primary_in_words() {
    let mut s = State::default();
    register(&mut s, "a", "p", Mode::Sync, None).unwrap();
    lapse(&mut s, "l", 1).unwrap();
    // The old primary, back: the group it led has none now.
    let e = register(&mut s, "b", "p", Mode::Sync, Some(INC_1)).unwrap_err();
    assert_eq!(
        e.to_string(),
        "p cannot be primary of group g: it has no primary in epoch 2 (the group is stalled; `tandem group reset` forgets it); start p as a backup"
    );
}

/// Log entries and snapshots written by the build before typed ids: the same JSON shapes.
#[test]
fn entries_and_snapshots_of_the_previous_build_still_read() {
    let inc = INC_1.to_string();
    let entries = [
        format!(
            r#"{{"id":"r1","command":{{"op":"register","group":"g","member":"p","address":"p:1","primary":true,"mode":"sync","token":null,"new_incarnation":"{inc}"}}}}"#
        ),
        // A caller's text that was never a token was logged as it came.
        format!(
            r#"{{"id":"r2","command":{{"op":"register","group":"g","member":"b","address":"b:1","primary":false,"mode":null,"token":"0000","new_incarnation":"{inc}"}}}}"#
        ),
        r#"{"id":"r3","command":{"op":"report","group":"g","member":"p","epoch":1,"held":9,"released":4,"diverged":false}}"#.into(),
        r#"{"id":"lease-lapsed/g/1","command":{"op":"lease_expired","group":"g","epoch":1}}"#.into(),
    ];
    let mut s = State::default();
    for e in &entries {
        let req: Request = serde_json::from_str(e).unwrap_or_else(|err| panic!("{e}: {err}"));
        let _ = s.apply(&req);
    }
    assert!(matches!(s.outcome_of("r2"), Some(Err(Refusal::StaleIncarnation { held, .. })) if held == "0000"));
    let g = &s.groups["g"];
    assert_eq!((g.incarnation, g.epoch, g.stalled), (INC_1, Epoch(2), true));

    let snapshot = format!(
        r#"{{"groups":{{"g":{{"incarnation":"{inc}","epoch":2,"primary":null,"mode":"sync","released":4,"stalled":true,"members":{{}}}}}},"requests":{{"r2":{{"Err":{{"error":"stale_incarnation","group":"g","member":"b","held":"0000","current":"{inc}"}}}},"r3":{{"Err":{{"error":"stale_epoch","group":"g","member":"p","reported":1,"current":2}}}}}},"request_order":["r2","r3"]}}"#
    );
    let read: State = serde_json::from_str(&snapshot).unwrap();
    assert_eq!(read.groups, s.groups);
    assert_eq!(serde_json::to_value(&read).unwrap(), serde_json::from_str::<serde_json::Value>(&snapshot).unwrap());
}

fn stop(s: &mut State, id: &str, member: &str, epoch: u64, diverged: bool) -> Outcome {
    let command = Command::Stop { group: "g".into(), member: member.into(), epoch: Epoch(epoch), diverged };
    s.apply(&req(id, command))
}

#[test]
fn a_stopped_silent_or_diverged_backup_is_never_named_primary() {
    let mut s = group_with_backups();
    // b_ok, the only eligible backup, stops; a named failover says why, a lapse stalls.
    stop(&mut s, "s1", "b_ok", 1, false).unwrap();
    assert!(s.groups["g"].members["b_ok"].exited);
    let to_b_ok = Command::Failover { group: "g".into(), to: Some("b_ok".into()), silent: Vec::new() };
    let e = s.apply(&req("f1", to_b_ok.clone())).unwrap_err();
    assert!(matches!(e, Refusal::NotEligible { ref why, .. } if why.contains("stopped")), "{e}");
    // Back (it reports again), it may be named; unless the leader has not heard from it lately.
    report(&mut s, "r7", "b_ok", 1, 120, 0).unwrap();
    let silent = Command::Failover { group: "g".into(), to: Some("b_ok".into()), silent: vec!["b_ok".into()] };
    let e = s.apply(&req("f2", silent)).unwrap_err();
    assert!(matches!(e, Refusal::NotEligible { ref why, .. } if why.contains("not reported")), "{e}");
    let lapse_silent = Command::LeaseExpired { group: "g".into(), epoch: Epoch(1), silent: vec!["b_ok".into()] };
    let g = s.apply(&req("l1", lapse_silent)).unwrap();
    assert!(g.stalled && g.primary.is_none(), "a silent backup was named: {g:?}");

    // A backup that stops on a mismatch says so: diverged, never named.
    let mut s = group_with_backups();
    stop(&mut s, "s2", "b_ok", 1, true).unwrap();
    report(&mut s, "r8", "b_ok", 1, 120, 0).unwrap();
    let e = s.apply(&req("f3", to_b_ok)).unwrap_err();
    assert!(matches!(e, Refusal::NotEligible { ref why, .. } if why.contains("diverged")), "{e}");
}

#[test]
fn a_group_its_primary_stopped_keeps_no_lease_and_starts_again_as_a_new_incarnation() {
    let mut s = group_with_backups();
    // A primary of an older epoch cannot stop the group.
    assert!(matches!(stop(&mut s, "s0", "p", 7, false), Err(Refusal::StaleEpoch { .. })));
    let g = stop(&mut s, "s1", "p", 1, false).unwrap();
    assert!(g.stopped && g.primary.as_deref() == Some("p") && g.epoch == Epoch(1));
    // Its lease lapsing changes nothing, and nobody is promoted.
    assert_eq!(lapse(&mut s, "l", 1).unwrap(), g);
    let any = Command::Failover { group: "g".into(), to: None, silent: Vec::new() };
    assert_eq!(s.apply(&req("f", any)), Err(Refusal::Stopped { group: "g".into() }));
    // The primary starts it again: a new token, a later epoch, no members of the old run.
    let inc_2 = IncarnationToken([0x22; 16]);
    let again = Command::Register {
        group: "g".into(),
        member: "p".into(),
        address: "p:1".into(),
        primary: true,
        mode: Some(Mode::Sync),
        token: None,
        new_incarnation: inc_2,
    };
    let g = s.apply(&req("again", again)).unwrap();
    assert_eq!((g.incarnation, g.epoch, g.stopped, g.released), (inc_2, Epoch(2), false, Seq::ZERO));
    assert_eq!(g.members.keys().collect::<Vec<_>>(), ["p"]);
    // A backup of the old run is refused: its state is another history.
    let e = register(&mut s, "old", "b_ok", Mode::Sync, Some(INC_1)).unwrap_err();
    assert!(matches!(e, Refusal::StaleIncarnation { .. }), "{e}");
}

#[test]
fn a_backup_can_be_removed_but_not_the_primary_and_a_reset_forgets_the_group() {
    let mut s = group_with_backups();
    let remove = |m: &str| Command::RemoveMember { group: "g".into(), member: m.into() };
    assert_eq!(s.apply(&req("rm-p", remove("p"))), Err(Refusal::IsPrimary { group: "g".into(), member: "p".into() }));
    let g = s.apply(&req("rm-b", remove("b_ok"))).unwrap();
    assert!(!g.members.contains_key("b_ok"));
    assert!(matches!(s.apply(&req("rm-b2", remove("b_ok"))), Err(Refusal::NoMember { .. })));
    s.apply(&req("reset", Command::Reset { group: "g".into() })).unwrap();
    assert!(s.groups.is_empty());
    assert_eq!(
        s.apply(&req("reset2", Command::Reset { group: "g".into() })),
        Err(Refusal::NoGroup { group: "g".into() })
    );
    // Created again from scratch.
    let g = register(&mut s, "new", "p", Mode::Sync, None).unwrap();
    assert_eq!(g.epoch, Epoch(1));
}
