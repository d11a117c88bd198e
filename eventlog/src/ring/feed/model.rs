//! An exhaustive model of the replay hand-off: the program's threads waiting for their turn on
//! their futex words (`preload/src/replay.rs`: `turn`, `pause`; `wait_until_next_is_mine` runs
//! the same loop without taking the turn), the turn holder consuming and waking the owner of the
//! next event (`Turn::drop`, `Feed::consume`), and the agent appending events and waking their
//! owner, ending the log and going live (`Feed::append`, `finish`, `go_live`).
//!
//! Each access to shared memory is one step, in the code's order. A depth-first search runs
//! every interleaving of the steps of up to three threads and the agent (states are hashed, so
//! each is expanded once) and checks that
//! 1. no run gets stuck: a lost wake-up leaves a thread asleep with nobody left to wake it;
//! 2. every turn taken is the event at the read position, taken by its owner, in feed order;
//! 3. no run goes on forever (no cycle among the states).
//!
//! A read that cannot give another value later (the agent reading what only it writes, a feed
//! slot never written again, the live state in a run that never goes live) commutes with every
//! other step, so it is taken together with the step before: fewer states, the same runs.
//!
//! What the model leaves out, and why it may:
//! - the futex timeout (`replay::SLEEP_NS`): it only bounds a lost wake-up, which the model must
//!   see as a thread asleep for good;
//! - spurious futex returns (signals): the waiting loops look again after any return, so they
//!   only add runs where a thread is more awake;
//! - memory ordering: steps interleave sequentially consistently, as the SeqCst accesses the
//!   hand-off relies on do. (`peek` loads `write_pos` with Acquire only; x86-64 and aarch64 keep
//!   it after the SeqCst load of `read_pos` before it, and so after the `sleeping` store.)
//! - record sizes: one event is one slot of the circular feed. Equal sizes are the case where a
//!   stale position lands exactly on a later record's header;
//! - slot reuse after thread exit, divergence reports, the agent's `progress` futex (it polls,
//!   and the model lets it append whenever there is room), and spin counts beyond one round (a
//!   spin only looks again; `spins_before_sleep` keeps that path in the search).

use std::collections::hash_map::{Entry, HashMap};
use std::hash::{BuildHasherDefault, Hasher};

const MAX_THREADS: usize = 3;
const MAX_EVENTS: usize = 8;
const NO_EVENT: u8 = u8::MAX;
/// Bounds the search's memory (about 100 bytes a state).
const STATE_LIMIT: usize = 20_000_000;
const THREAD_NAMES: [char; MAX_THREADS] = ['A', 'B', 'C'];

/// Where a waiting thread reads its wake word. The code reads it before it looks at the feed
/// (`replay::turn`, `replay::wait_until_next_is_mine`), so a wake-up after that read makes the
/// futex wait return at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WakeWordRead {
    BeforePeek,
    /// After the first peek, before `sleeping` is set.
    AfterPeek,
    /// Right before the futex wait: every wake-up before the wait is lost.
    BeforeWait,
}

/// The choices the hand-off makes, as shipped or altered to show what each one guards.
#[derive(Clone, Copy, Debug)]
pub struct Protocol {
    pub wake_word_read: WakeWordRead,
    /// `replay::pause` looks at the feed (and the live state) again after setting `sleeping`.
    pub recheck_after_sleeping: bool,
    /// `Feed::wake` bumps the wake word (before it reads `sleeping`), so a wake-up that comes
    /// before its thread sleeps makes the futex wait return at once.
    pub bump_wake_word: bool,
    /// `Feed::append` wakes the owner of the next event.
    pub append_wakes_owner: bool,
    /// `Feed::peek` reads the read position again after copying the header, so a header the
    /// agent wrote over a consumed record is not taken for the record at that position.
    pub peek_confirms_read_pos: bool,
}

impl Protocol {
    /// The code as it is.
    pub const SHIPPED: Protocol = Protocol {
        wake_word_read: WakeWordRead::BeforePeek,
        recheck_after_sleeping: true,
        bump_wake_word: true,
        append_wakes_owner: true,
        peek_confirms_read_pos: true,
    };
}

/// One replay to explore.
#[derive(Clone, Copy, Debug)]
pub struct Scenario<'a> {
    /// The thread (0 = A, 1 = B, 2 = C) owning each event, in feed order.
    pub owners: &'a [u8],
    pub threads: usize,
    /// Events the circular feed holds at once.
    pub capacity: u8,
    /// Pauses that only spin before a thread sleeps (`replay::SPINS`, 200 in the code).
    pub spins_before_sleep: u8,
    /// The agent goes live at the end of the log, and every thread makes one more call, which
    /// only going live can let through.
    pub go_live: bool,
    pub protocol: Protocol,
}

/// A property broken, with the steps that led there.
#[derive(Debug)]
#[expect(dead_code, reason = "some fields are only printed, when a test fails")]
pub enum Violation {
    /// No step can be taken, the run is not complete, and these threads sleep.
    LostWakeUp { asleep: Vec<char>, trace: Vec<String> },
    /// No step can be taken and the run is not complete, though nobody sleeps.
    Stuck { trace: Vec<String> },
    /// A thread took a turn that was not its own: a stale position, or another event's header.
    WrongTurn { thread: char, pos: u8, event: u8, consumed: u8, trace: Vec<String> },
    /// A thread went live with events of its own still in the feed.
    LiveTooEarly { thread: char, trace: Vec<String> },
    /// A state repeats: some run never ends.
    Endless { trace: Vec<String> },
}

/// What a search found.
#[derive(Debug)]
pub struct Exploration {
    /// Distinct states reached.
    pub states: usize,
    /// Steps explored (edges between states).
    pub steps: usize,
    /// Complete runs: distinct interleavings of steps from the start to the end of the replay.
    pub interleavings: f64,
    pub violation: Option<Violation>,
}

// ---- state ---------------------------------------------------------------------------------

/// `Feed::peek`, one shared-memory access per step.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Look {
    /// `read_pos.load`
    ReadPos,
    /// `write_pos.load`: nothing to see unless it is past the read position.
    WritePos { pos: u8 },
    /// `copy_from_circular` of the header at `pos`.
    Header { pos: u8 },
    /// The proposed check: `read_pos.load` again, the header counts only if it has not moved.
    Confirm { pos: u8, event: u8 },
}

enum Looked {
    Continue(Look),
    Nothing,
    Event { pos: u8, event: u8 },
}

/// `Feed::wake`, one access per step.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum WakeOne {
    /// `wake.fetch_add`
    Bump { thread: u8 },
    /// `sleeping.load`
    CheckSleeping { thread: u8 },
    /// `sys::futex_wake`
    FutexWake { thread: u8 },
}

/// `Feed::wake_owner_of_next`: peek, `find`, then `wake`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum WakeNext {
    Look(Look),
    /// `find`: only a registered thread is woken.
    Find {
        thread: u8,
    },
    Wake(WakeOne),
}

/// `Feed::wake_all`: every registered thread in turn.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct WakeAll {
    thread: u8,
    wake: Option<WakeOne>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum ThreadPc {
    /// `Feed::register`
    Register,
    /// `replay::turn`: `feed.is_live()` at the top of its loop.
    CheckLive,
    /// `replay::turn`: `slot.wake.load` before the peek.
    ReadWake,
    /// `replay::turn`: `feed.peek()`.
    Look(Look),
    /// The altered order: the wake word read after the peek.
    ReadWakeAfterPeek,
    /// `replay::pause`: `slot.sleeping.store(1)`.
    SetSleeping,
    /// `replay::pause`: `feed.peek()` again, under the flag.
    Relook(Look),
    /// `replay::pause`: `!feed.is_live()`.
    RecheckLive,
    /// The altered order: the wake word read right before the wait.
    ReadWakeBeforeWait,
    /// `Feed::sleep` → `sys::futex_wait(wake, seen)`: blocks only while `wake == seen`.
    FutexWait,
    /// Blocked in the futex until a `futex_wake` on this thread's word.
    Asleep,
    /// `replay::pause`: `slot.sleeping.store(0)`.
    ClearSleeping,
    /// Holds the turn. `Turn::drop` → `Feed::consume`: `read_pos.store`.
    Consume {
        pos: u8,
        event: u8,
    },
    /// `Feed::consume` → `wake_owner_of_next`.
    HandOn(WakeNext),
    Done,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Thread {
    pc: ThreadPc,
    /// Calls finished: own events consumed, then the call after the log.
    calls_done: u8,
    /// Pauses spent spinning in this call to `turn`.
    spins: u8,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum AgentPc {
    /// `Feed::room`; the agent polls (`Replayer` loop), so only a look that finds room counts.
    Room,
    /// `Feed::append`: `copy_into_circular` of `count` records.
    Copy {
        count: u8,
    },
    /// `Feed::append`: `write_pos.store`.
    Publish {
        count: u8,
    },
    /// `Feed::append` → `wake_owner_of_next`.
    WakeNext(WakeNext),
    /// `Feed::finish`: `eof.store`, then `wake_all`.
    Finish(WakeAll),
    /// The replayer loop polls `exhausted()` before it goes live.
    AwaitExhausted,
    /// `Feed::go_live`: `state.store(STATE_LIVE)`, then `wake_all`.
    GoLive(Option<WakeAll>),
    Done,
}

/// Shared memory, every thread's registers, and what the checks need.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct World {
    read_pos: u8,
    write_pos: u8,
    /// The event each feed slot holds (its header names the owner).
    feed: [u8; MAX_EVENTS],
    live: bool,
    active: [bool; MAX_THREADS],
    /// Whether each thread's wake word moved since the thread last read it: all the futex wait
    /// compares (the word only grows), and far fewer states than the counts.
    wake_moved: [bool; MAX_THREADS],
    sleeping: [bool; MAX_THREADS],
    threads: [Thread; MAX_THREADS],
    agent: AgentPc,
    /// Events consumed so far (not in shared memory: the truth the checks compare with).
    consumed: u8,
}

/// Who takes a step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Actor {
    Thread(u8),
    Agent,
}

// ---- steps ---------------------------------------------------------------------------------

/// A step failed a check; the search adds the trace.
enum Broken {
    WrongTurn { thread: u8, pos: u8, event: u8, consumed: u8 },
    LiveTooEarly { thread: u8 },
}

impl Scenario<'_> {
    fn initial(&self) -> World {
        assert!(self.threads <= MAX_THREADS && self.owners.len() <= MAX_EVENTS);
        assert!(self.owners.iter().all(|&o| (o as usize) < self.threads));
        assert!(self.capacity > 0 && self.capacity as usize <= MAX_EVENTS);
        let idle = Thread { pc: ThreadPc::Done, calls_done: 0, spins: 0 };
        let mut threads = [idle; MAX_THREADS];
        for t in threads.iter_mut().take(self.threads) {
            t.pc = ThreadPc::Register;
        }
        World {
            read_pos: 0,
            write_pos: 0,
            feed: [NO_EVENT; MAX_EVENTS],
            live: false,
            active: [false; MAX_THREADS],
            wake_moved: [false; MAX_THREADS],
            sleeping: [false; MAX_THREADS],
            threads,
            agent: AgentPc::Room,
            consumed: 0,
        }
    }

    fn events(&self) -> u8 {
        self.owners.len() as u8
    }

    fn own_events(&self, thread: u8) -> u8 {
        self.owners.iter().filter(|&&o| o == thread).count() as u8
    }

    fn calls(&self, thread: u8) -> u8 {
        self.own_events(thread) + self.go_live as u8
    }

    fn complete(&self, w: &World) -> bool {
        w.agent == AgentPc::Done && w.threads.iter().all(|t| t.pc == ThreadPc::Done)
    }

    /// Whether the feed slots are written more than once.
    fn wraps(&self) -> bool {
        self.capacity < self.events()
    }

    /// Whether a read can give no other value later, so that it commutes with every other step
    /// and the search takes it together with the step before: the agent reading what only it
    /// writes, anyone reading a feed slot that is never written again.
    fn invisible(&self, look: Look, reader: Actor) -> bool {
        match look {
            Look::ReadPos | Look::Confirm { .. } => false,
            Look::WritePos { .. } => reader == Actor::Agent,
            Look::Header { .. } => reader == Actor::Agent || !self.wraps(),
        }
    }

    /// One access of `Feed::peek` by `reader`, and the invisible ones after it.
    fn look(&self, w: &World, mut look: Look, reader: Actor) -> Looked {
        loop {
            match self.look_once(w, look) {
                Looked::Continue(next) if self.invisible(next, reader) => look = next,
                looked => return looked,
            }
        }
    }

    fn look_once(&self, w: &World, look: Look) -> Looked {
        match look {
            Look::ReadPos => Looked::Continue(Look::WritePos { pos: w.read_pos }),
            Look::WritePos { pos } if w.write_pos > pos => Looked::Continue(Look::Header { pos }),
            Look::WritePos { .. } => Looked::Nothing,
            Look::Header { pos } => {
                let event = w.feed[(pos % self.capacity) as usize];
                if self.protocol.peek_confirms_read_pos {
                    Looked::Continue(Look::Confirm { pos, event })
                } else {
                    Looked::Event { pos, event }
                }
            }
            Look::Confirm { pos, event } if w.read_pos == pos => Looked::Event { pos, event },
            Look::Confirm { .. } => Looked::Nothing,
        }
    }

    fn start_wake(&self, thread: u8) -> WakeOne {
        if self.protocol.bump_wake_word {
            WakeOne::Bump { thread }
        } else {
            WakeOne::CheckSleeping { thread }
        }
    }

    /// One access of `Feed::wake`; `None` once it is done.
    fn wake_one(&self, w: &mut World, step: WakeOne) -> Option<WakeOne> {
        match step {
            WakeOne::Bump { thread } => {
                w.wake_moved[thread as usize] = true;
                Some(WakeOne::CheckSleeping { thread })
            }
            WakeOne::CheckSleeping { thread } => w.sleeping[thread as usize].then_some(WakeOne::FutexWake { thread }),
            WakeOne::FutexWake { thread } => {
                let sleeper = &mut w.threads[thread as usize];
                if sleeper.pc == ThreadPc::Asleep {
                    // `Feed::sleep` returns into `replay::pause`.
                    sleeper.pc = ThreadPc::ClearSleeping;
                }
                None
            }
        }
    }

    /// One access of `Feed::wake_owner_of_next`; `None` once it is done.
    fn wake_next(&self, w: &mut World, step: WakeNext, waker: Actor) -> Option<WakeNext> {
        match step {
            WakeNext::Look(look) => match self.look(w, look, waker) {
                Looked::Continue(look) => Some(WakeNext::Look(look)),
                Looked::Nothing => None,
                Looked::Event { event, .. } => Some(WakeNext::Find { thread: self.owners[event as usize] }),
            },
            WakeNext::Find { thread } => w.active[thread as usize].then(|| WakeNext::Wake(self.start_wake(thread))),
            WakeNext::Wake(step) => self.wake_one(w, step).map(WakeNext::Wake),
        }
    }

    /// One access of `Feed::wake_all`; `None` once it is done.
    fn wake_all(&self, w: &mut World, mut step: WakeAll) -> Option<WakeAll> {
        match step.wake {
            None if step.thread as usize == self.threads => None,
            // `state.load() == THREAD_ACTIVE`
            None => {
                if w.active[step.thread as usize] {
                    step.wake = Some(self.start_wake(step.thread));
                } else {
                    step.thread += 1;
                }
                Some(step)
            }
            Some(wake) => {
                step.wake = self.wake_one(w, wake);
                if step.wake.is_none() {
                    step.thread += 1;
                }
                Some(step)
            }
        }
    }

    /// `replay::pause` from its start: spin, or go to sleep.
    fn pause(&self, t: &mut Thread) {
        if t.spins < self.spins_before_sleep {
            t.spins += 1;
            t.pc = ThreadPc::CheckLive;
        } else {
            t.pc = ThreadPc::SetSleeping;
        }
    }

    /// `replay::pause` after the re-check under the flag: the futex wait.
    fn wait(&self, t: &mut Thread) {
        t.pc = match self.protocol.wake_word_read {
            WakeWordRead::BeforeWait => ThreadPc::ReadWakeBeforeWait,
            _ => ThreadPc::FutexWait,
        };
    }

    fn next_call(&self, me: u8, t: &mut Thread) {
        t.calls_done += 1;
        t.spins = 0;
        t.pc = if t.calls_done == self.calls(me) { ThreadPc::Done } else { ThreadPc::CheckLive };
    }

    /// One step of thread `me`; `Ok(false)` when it cannot move. Without going live the live
    /// state never changes, so its reads are taken with the step before.
    fn thread_step(&self, w: &mut World, me: u8) -> Result<bool, Broken> {
        if matches!(w.threads[me as usize].pc, ThreadPc::Done | ThreadPc::Asleep) {
            return Ok(false);
        }
        self.thread_access(w, me)?;
        while !self.go_live && matches!(w.threads[me as usize].pc, ThreadPc::CheckLive | ThreadPc::RecheckLive) {
            self.thread_access(w, me)?;
        }
        Ok(true)
    }

    /// One shared-memory access of thread `me`.
    fn thread_access(&self, w: &mut World, me: u8) -> Result<(), Broken> {
        let i = me as usize;
        let mut t = w.threads[i];
        match t.pc {
            ThreadPc::Done | ThreadPc::Asleep => unreachable!("a thread that cannot move"),
            ThreadPc::Register => {
                w.active[i] = true;
                w.sleeping[i] = false;
                t.pc = if self.calls(me) == 0 { ThreadPc::Done } else { ThreadPc::CheckLive };
            }
            ThreadPc::CheckLive if w.live => {
                // `replay::turn` returns `None`: the call runs for real.
                if t.calls_done < self.own_events(me) {
                    return Err(Broken::LiveTooEarly { thread: me });
                }
                self.next_call(me, &mut t);
            }
            ThreadPc::CheckLive => {
                t.pc = match self.protocol.wake_word_read {
                    WakeWordRead::BeforePeek => ThreadPc::ReadWake,
                    _ => ThreadPc::Look(Look::ReadPos),
                };
            }
            ThreadPc::ReadWake => {
                w.wake_moved[i] = false;
                t.pc = ThreadPc::Look(Look::ReadPos);
            }
            ThreadPc::Look(look) => match self.look(w, look, Actor::Thread(me)) {
                Looked::Continue(look) => t.pc = ThreadPc::Look(look),
                Looked::Event { pos, event } if self.owners[event as usize] == me => {
                    // `replay::turn` returns the turn.
                    if pos != w.consumed || event != w.consumed {
                        return Err(Broken::WrongTurn { thread: me, pos, event, consumed: w.consumed });
                    }
                    t.pc = ThreadPc::Consume { pos, event };
                }
                _ if self.protocol.wake_word_read == WakeWordRead::AfterPeek => t.pc = ThreadPc::ReadWakeAfterPeek,
                _ => self.pause(&mut t),
            },
            ThreadPc::ReadWakeAfterPeek => {
                w.wake_moved[i] = false;
                self.pause(&mut t);
            }
            ThreadPc::SetSleeping => {
                w.sleeping[i] = true;
                if self.protocol.recheck_after_sleeping {
                    t.pc = ThreadPc::Relook(Look::ReadPos);
                } else {
                    self.wait(&mut t);
                }
            }
            ThreadPc::Relook(look) => match self.look(w, look, Actor::Thread(me)) {
                Looked::Continue(look) => t.pc = ThreadPc::Relook(look),
                // Its event is next: no sleep; `turn` looks again and takes it.
                Looked::Event { event, .. } if self.owners[event as usize] == me => t.pc = ThreadPc::ClearSleeping,
                _ => t.pc = ThreadPc::RecheckLive,
            },
            ThreadPc::RecheckLive if w.live => t.pc = ThreadPc::ClearSleeping,
            ThreadPc::RecheckLive => self.wait(&mut t),
            ThreadPc::ReadWakeBeforeWait => {
                w.wake_moved[i] = false;
                t.pc = ThreadPc::FutexWait;
            }
            ThreadPc::FutexWait => {
                t.pc = if w.wake_moved[i] { ThreadPc::ClearSleeping } else { ThreadPc::Asleep };
            }
            ThreadPc::ClearSleeping => {
                w.sleeping[i] = false;
                t.pc = ThreadPc::CheckLive;
            }
            ThreadPc::Consume { pos, .. } => {
                w.read_pos = pos + 1;
                w.consumed += 1;
                t.pc = ThreadPc::HandOn(WakeNext::Look(Look::ReadPos));
            }
            ThreadPc::HandOn(step) => {
                // The step may wake another thread: write `t` back first.
                w.threads[i] = t;
                let next = self.wake_next(w, step, Actor::Thread(me));
                t = w.threads[i];
                match next {
                    Some(step) => t.pc = ThreadPc::HandOn(step),
                    None => self.next_call(me, &mut t),
                }
            }
        }
        w.threads[i] = t;
        Ok(())
    }

    /// The agent's possible steps from `w` (several when it may append batches of any size).
    fn agent_steps(&self, w: &World, out: &mut Vec<(Actor, World)>) {
        let mut next = *w;
        match w.agent {
            AgentPc::Done => return,
            AgentPc::Room => {
                let room = self.capacity.saturating_sub(w.write_pos.saturating_sub(w.read_pos));
                let left = self.events() - w.write_pos;
                for count in 1..=room.min(left) {
                    next.agent = AgentPc::Copy { count };
                    out.push((Actor::Agent, next));
                }
                return;
            }
            AgentPc::Copy { count } => {
                for event in w.write_pos..w.write_pos + count {
                    next.feed[(event % self.capacity) as usize] = event;
                }
                next.agent = AgentPc::Publish { count };
            }
            AgentPc::Publish { count } => {
                next.write_pos += count;
                next.agent = if self.protocol.append_wakes_owner {
                    AgentPc::WakeNext(WakeNext::Look(Look::ReadPos))
                } else {
                    self.after_append(&next)
                };
            }
            AgentPc::WakeNext(step) => {
                next.agent = match self.wake_next(&mut next, step, Actor::Agent) {
                    Some(step) => AgentPc::WakeNext(step),
                    None => self.after_append(&next),
                };
            }
            AgentPc::Finish(step) => {
                next.agent = match self.wake_all(&mut next, step) {
                    Some(step) => AgentPc::Finish(step),
                    None if self.go_live => AgentPc::AwaitExhausted,
                    None => AgentPc::Done,
                };
            }
            AgentPc::AwaitExhausted if w.read_pos == w.write_pos => next.agent = AgentPc::GoLive(None),
            AgentPc::AwaitExhausted => return,
            AgentPc::GoLive(None) => {
                next.live = true;
                next.agent = AgentPc::GoLive(Some(WakeAll { thread: 0, wake: None }));
            }
            AgentPc::GoLive(Some(step)) => {
                next.agent = match self.wake_all(&mut next, step) {
                    Some(step) => AgentPc::GoLive(Some(step)),
                    None => AgentPc::Done,
                };
            }
        }
        out.push((Actor::Agent, next));
    }

    fn after_append(&self, w: &World) -> AgentPc {
        if w.write_pos == self.events() {
            AgentPc::Finish(WakeAll { thread: 0, wake: None })
        } else {
            AgentPc::Room
        }
    }

    /// Appends every state one step from `w` to `out`, with who moved.
    fn successors(&self, w: &World, out: &mut Vec<(Actor, World)>) -> Result<(), (Actor, Broken)> {
        for me in 0..self.threads as u8 {
            let mut next = *w;
            match self.thread_step(&mut next, me) {
                Ok(true) => out.push((Actor::Thread(me), next)),
                Ok(false) => {}
                Err(broken) => return Err((Actor::Thread(me), broken)),
            }
        }
        self.agent_steps(w, out);
        Ok(())
    }

    fn describe(&self, w: &World, actor: Actor) -> String {
        match actor {
            Actor::Thread(t) => format!("{}: {:?}", THREAD_NAMES[t as usize], w.threads[t as usize].pc),
            Actor::Agent => format!("agent: {:?}", w.agent),
        }
    }

    /// Runs every interleaving; stops at the first violation.
    pub fn explore(&self) -> Exploration {
        Search::new(self).run()
    }
}

// ---- search --------------------------------------------------------------------------------

/// The complete runs below a state, or that it is on the current path.
#[derive(Clone, Copy)]
enum Mark {
    OnPath,
    Explored(f64),
}

struct Frame {
    world: World,
    /// The step that led here (none at the start).
    via: Option<Actor>,
    /// This state's successors start here in `Search::successors`, and run to its end while
    /// the frame is on top.
    first: usize,
    next: usize,
    runs: f64,
}

struct Search<'s, 'a> {
    scenario: &'s Scenario<'a>,
    marks: HashMap<World, Mark, BuildHasherDefault<FxHasher>>,
    path: Vec<Frame>,
    successors: Vec<(Actor, World)>,
    steps: usize,
}

impl<'s, 'a> Search<'s, 'a> {
    fn new(scenario: &'s Scenario<'a>) -> Self {
        Search { scenario, marks: HashMap::default(), path: Vec::new(), successors: Vec::new(), steps: 0 }
    }

    /// The steps from the start to the top of the path, then `more`.
    fn trace(&self, more: &[(&World, Actor)]) -> Vec<String> {
        let s = self.scenario;
        let along = self.path.windows(2).map(|pair| s.describe(&pair[0].world, pair[1].via.expect("a step led here")));
        along.chain(more.iter().map(|&(w, actor)| s.describe(w, actor))).collect()
    }

    fn finish(&self, violation: Option<Violation>) -> Exploration {
        let interleavings = match self.marks.get(&self.scenario.initial()) {
            Some(Mark::Explored(runs)) => *runs,
            _ => 0.0,
        };
        Exploration { states: self.marks.len(), steps: self.steps, interleavings, violation }
    }

    /// Pushes `world` (marked on the path) with its successors, unless the run ends there.
    fn enter(&mut self, world: World, via: Option<Actor>) -> Result<(), Violation> {
        let s = self.scenario;
        let first = self.successors.len();
        let parent = self.path.last().map(|f| f.world);
        let to_here: Vec<(&World, Actor)> = parent.iter().zip(via).collect();
        if let Err((actor, broken)) = s.successors(&world, &mut self.successors) {
            let mut more = to_here;
            more.push((&world, actor));
            let trace = self.trace(&more);
            return Err(match broken {
                Broken::WrongTurn { thread, pos, event, consumed } => {
                    Violation::WrongTurn { thread: THREAD_NAMES[thread as usize], pos, event, consumed, trace }
                }
                Broken::LiveTooEarly { thread } => {
                    Violation::LiveTooEarly { thread: THREAD_NAMES[thread as usize], trace }
                }
            });
        }
        if self.successors.len() > first {
            self.path.push(Frame { world, via, first, next: first, runs: 0.0 });
            return Ok(());
        }
        if !s.complete(&world) {
            let trace = self.trace(&to_here);
            let asleep: Vec<char> =
                (0..s.threads).filter(|&t| world.threads[t].pc == ThreadPc::Asleep).map(|t| THREAD_NAMES[t]).collect();
            return Err(if asleep.is_empty() {
                Violation::Stuck { trace }
            } else {
                Violation::LostWakeUp { asleep, trace }
            });
        }
        self.marks.insert(world, Mark::Explored(1.0));
        if let Some(top) = self.path.last_mut() {
            top.runs += 1.0;
        }
        Ok(())
    }

    fn run(mut self) -> Exploration {
        let start = self.scenario.initial();
        self.marks.insert(start, Mark::OnPath);
        if let Err(v) = self.enter(start, None) {
            return self.finish(Some(v));
        }
        while let Some(top) = self.path.last_mut() {
            if top.next == self.successors.len() {
                let done = self.path.pop().expect("a frame");
                self.successors.truncate(done.first);
                self.marks.insert(done.world, Mark::Explored(done.runs));
                if let Some(parent) = self.path.last_mut() {
                    parent.runs += done.runs;
                }
                continue;
            }
            assert!(self.marks.len() < STATE_LIMIT, "more than {STATE_LIMIT} states: make the scenario smaller");
            let (actor, child) = self.successors[top.next];
            top.next += 1;
            self.steps += 1;
            let mark = match self.marks.entry(child) {
                Entry::Occupied(seen) => Some(*seen.get()),
                Entry::Vacant(new) => {
                    new.insert(Mark::OnPath);
                    None
                }
            };
            match mark {
                Some(Mark::Explored(runs)) => top.runs += runs,
                Some(Mark::OnPath) => {
                    let at = top.world;
                    let trace = self.trace(&[(&at, actor)]);
                    return self.finish(Some(Violation::Endless { trace }));
                }
                None => {
                    if let Err(v) = self.enter(child, Some(actor)) {
                        return self.finish(Some(v));
                    }
                }
            }
        }
        self.finish(None)
    }
}

/// A fast hash for the small, fixed-size states (the default SipHash would dominate the search).
#[derive(Default)]
struct FxHasher {
    hash: u64,
}

impl Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            self.write_u64(u64::from_le_bytes(chunk.try_into().expect("eight bytes")));
        }
        let mut tail = [0u8; 8];
        tail[..chunks.remainder().len()].copy_from_slice(chunks.remainder());
        self.write_u64(u64::from_le_bytes(tail));
    }

    fn write_u8(&mut self, n: u8) {
        self.write_u64(n as u64);
    }

    fn write_u64(&mut self, n: u64) {
        self.hash = (self.hash.rotate_left(5) ^ n).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }

    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }

    /// Mixes the high bits down: the table picks buckets by the low ones.
    fn finish(&self) -> u64 {
        let mut h = self.hash;
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^ (h >> 33)
    }
}

// ---- tests ---------------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;

    const A: u8 = 0;
    const B: u8 = 1;
    const C: u8 = 2;
    /// Runs of one owner, alternation, and a thread (C) whose only event comes late.
    const THREE_THREADS: &[u8] = &[A, B, A, C, B];
    const TWO_THREADS: &[u8] = &[A, B, B, A, A, B];

    /// A feed that holds the whole log, no spin, no going live.
    fn scenario(owners: &[u8], protocol: Protocol) -> Scenario<'_> {
        let threads = owners.iter().max().map_or(0, |&t| t as usize + 1);
        Scenario { owners, threads, capacity: owners.len() as u8, spins_before_sleep: 0, go_live: false, protocol }
    }

    fn assert_holds(s: Scenario<'_>) {
        let found = s.explore();
        if let Some(v) = &found.violation {
            panic!("{s:?}\nbroken after {} states: {v:#?}", found.states);
        }
        assert!(found.interleavings >= 1.0);
        eprintln!(
            "{:?}, feed of {}, {} spin(s), going live {}: {} states, {} steps, {:.1e} complete interleavings",
            s.owners, s.capacity, s.spins_before_sleep, s.go_live, found.states, found.steps, found.interleavings
        );
    }

    fn assert_lost_wake_up(s: Scenario<'_>) {
        let found = s.explore();
        match found.violation {
            Some(Violation::LostWakeUp { ref asleep, ref trace }) => eprintln!(
                "{:?}, going live {}: {asleep:?} asleep for good after {} steps ({} states searched)",
                s.protocol,
                s.go_live,
                trace.len(),
                found.states
            ),
            other => panic!("{:?}: expected a lost wake-up, found {other:#?}", s.protocol),
        }
    }

    /// The hand-off as shipped, with a feed that never wraps (it holds the whole log): no lost
    /// wake-up, turns strictly in order, every run ends.
    #[test]
    fn the_hand_off_between_three_threads_never_loses_a_wake_up() {
        assert_holds(scenario(THREE_THREADS, Protocol::SHIPPED));
    }

    /// As above, two threads, also with a spin before sleeping and with going live at the end.
    #[test]
    fn the_hand_off_never_loses_a_wake_up_when_spinning_or_going_live() {
        for (spins_before_sleep, go_live) in [(0, false), (1, false), (0, true), (1, true)] {
            assert_holds(Scenario { spins_before_sleep, go_live, ..scenario(TWO_THREADS, Protocol::SHIPPED) });
        }
    }

    /// The checker has teeth: each order the code avoids loses a wake-up somewhere.
    #[test]
    fn a_wrong_order_of_steps_is_caught() {
        let shipped = Protocol::SHIPPED;
        for protocol in [
            // The wake word read after the look under the flag: a wake-up in between is lost.
            Protocol { wake_word_read: WakeWordRead::BeforeWait, ..shipped },
            // Both guards gone: the wake word read after the peek, and no second look.
            Protocol { wake_word_read: WakeWordRead::AfterPeek, recheck_after_sleeping: false, ..shipped },
            // No bump: a wake-up between the look under the flag and the futex wait is lost.
            Protocol { bump_wake_word: false, ..shipped },
        ] {
            assert_lost_wake_up(scenario(THREE_THREADS, protocol));
        }
        // An event appended for a sleeping thread that nobody wakes: with the whole log in the
        // feed the end of the log (`finish` wakes all) rescues it, but in a smaller feed the
        // agent waits for room the sleeper never makes.
        let silent_append = Protocol { append_wakes_owner: false, peek_confirms_read_pos: true, ..shipped };
        assert_lost_wake_up(Scenario { capacity: 2, ..scenario(THREE_THREADS, silent_append) });
    }

    /// Between threads, either guard alone suffices: the wake word read before the peek makes
    /// the futex wait return after a wake-up that came before the sleep, and the second look
    /// under the flag sees an event handed on before it. Going live has only the second look:
    /// `turn` reads the live state before the wake word, so a `go_live` in between bumps a word
    /// the thread then takes as current.
    #[test]
    fn going_live_needs_the_second_look_and_hand_offs_need_either_guard() {
        let shipped = Protocol::SHIPPED;
        let late_wake_word = Protocol { wake_word_read: WakeWordRead::AfterPeek, ..shipped };
        let no_second_look = Protocol { recheck_after_sleeping: false, ..shipped };
        for protocol in [late_wake_word, no_second_look] {
            assert_holds(scenario(TWO_THREADS, protocol));
        }
        assert_holds(Scenario { go_live: true, ..scenario(TWO_THREADS, late_wake_word) });
        assert_lost_wake_up(Scenario { go_live: true, ..scenario(TWO_THREADS, no_second_look) });
    }

    /// A waiter's peek reads `read_pos`, then the header at that position. If, in between, the
    /// turn moves on and the agent refills the freed room, the header is a later record's: when
    /// that record is the waiter's own, it takes a turn at a position already consumed (and its
    /// consume would move `read_pos` backwards). Reading `read_pos` again after the copy closes
    /// the window.
    #[test]
    fn a_peek_overtaken_by_a_wrapping_feed_takes_a_stale_turn_unless_it_confirms_the_position() {
        let unconfirmed = Protocol { peek_confirms_read_pos: false, ..Protocol::SHIPPED };
        let small_feed = Scenario { capacity: 2, ..scenario(THREE_THREADS, unconfirmed) };
        match small_feed.explore().violation {
            Some(Violation::WrongTurn { thread, pos, event, consumed, trace }) => {
                assert!(pos < consumed && event >= pos + small_feed.capacity, "{trace:#?}");
                eprintln!("stale turn: {thread} took event {event} at position {pos} after {consumed} consumed:");
                for step in &trace {
                    eprintln!("  {step}");
                }
            }
            other => panic!("expected a stale turn, found {other:#?}"),
        }
        assert_holds(Scenario { capacity: 1, ..scenario(&[A, B, C], Protocol::SHIPPED) });
        assert_holds(Scenario { capacity: 2, go_live: true, ..scenario(TWO_THREADS, Protocol::SHIPPED) });
    }
}
