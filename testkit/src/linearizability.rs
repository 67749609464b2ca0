//! Is a history of reads and writes on one register linearizable?
//!
//! A history is linearizable when every operation can be given one instant
//! between its invocation and its completion such that, in the order of
//! those instants, every read returns the value of the latest write before
//! it. This is the property a client of a single Vault key relies on: a
//! read never returns a value older than a write that completed before the
//! read began, and an acknowledged write is never lost.
//!
//! [`check_register`] searches for such an order with the algorithm of Wing
//! and Gong as improved by Lowe (the one Porcupine and Knossos use): walk
//! the operations in time order, linearize any call whose effect fits the
//! current state, backtrack when an operation's completion is reached
//! before it was placed, and never revisit a (set of placed operations,
//! register value) pair. Registers are independent, so a key-value history
//! is checked key by key (P-compositionality).
//!
//! An operation whose completion was never seen (a timed-out or cut-off
//! write) completes "at infinity": it may take effect at any point after
//! its invocation, or never.
//!
//! ```
//! use std::time::Duration;
//! use testkit::linearizability::{RegisterCall, RegisterOp, check_register};
//!
//! let s = Duration::from_secs;
//! let history = [
//!     RegisterOp::new(0, RegisterCall::Write("a".into()), s(0), Some(s(1))),
//!     RegisterOp::new(1, RegisterCall::Write("b".into()), s(2), Some(s(3))),
//!     // Began after "b" was acknowledged, yet saw "a": a stale read.
//!     RegisterOp::new(2, RegisterCall::Read(Some("a".into())), s(4), Some(s(5))),
//! ];
//! assert!(check_register(&history).is_err());
//! ```

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::time::Duration;

/// What an operation did: a write of a value, or a read and the value it
/// returned (`None`: the register was empty).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegisterCall {
    /// Wrote this value.
    Write(String),
    /// Read, and saw this value.
    Read(Option<String>),
}

/// One operation on the register.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisterOp {
    /// The caller's id for it (named in a violation).
    pub id: usize,
    /// What it did.
    pub call: RegisterCall,
    /// When it was invoked.
    pub invoke: Duration,
    /// When it completed; `None` when that was never seen (it may have
    /// taken effect at any time after `invoke`, or never).
    pub complete: Option<Duration>,
}

impl RegisterOp {
    /// An operation.
    pub fn new(
        id: usize,
        call: RegisterCall,
        invoke: Duration,
        complete: Option<Duration>,
    ) -> Self {
        Self {
            id,
            call,
            invoke,
            complete,
        }
    }
}

impl fmt::Display for RegisterOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.call {
            RegisterCall::Write(v) => write!(f, "op {} write {v:?}", self.id)?,
            RegisterCall::Read(Some(v)) => write!(f, "op {} read -> {v:?}", self.id)?,
            RegisterCall::Read(None) => write!(f, "op {} read -> (empty)", self.id)?,
        }
        match self.complete {
            Some(c) => write!(
                f,
                " [{:.3}s, {:.3}s]",
                self.invoke.as_secs_f64(),
                c.as_secs_f64()
            ),
            None => write!(f, " [{:.3}s, never confirmed]", self.invoke.as_secs_f64()),
        }
    }
}

/// Why a history was not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckError {
    /// No order of the operations explains what the reads returned.
    NotLinearizable(String),
    /// The search exceeded its step budget (a history with very many
    /// concurrent operations); nothing was proven either way.
    TooHard(String),
}

impl fmt::Display for CheckError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotLinearizable(why) => write!(f, "not linearizable: {why}"),
            Self::TooHard(why) => write!(f, "linearizability undecided: {why}"),
        }
    }
}

impl std::error::Error for CheckError {}

/// Search steps before [`CheckError::TooHard`]; a load of a few workers
/// needs a few per operation.
const MAX_STEPS: u64 = 50_000_000;

/// Checks that `ops` (one register, initially empty) is linearizable.
///
/// Writes whose completion was never seen and whose value no read returned
/// are left out first: they can always be placed after everything else.
///
/// # Errors
/// [`CheckError::NotLinearizable`] naming the operation that cannot be
/// placed, the value the register held and the operations placed before
/// it; [`CheckError::TooHard`] when the search gives up.
pub fn check_register(ops: &[RegisterOp]) -> Result<(), CheckError> {
    let observed: HashSet<&str> = ops
        .iter()
        .filter_map(|op| match &op.call {
            RegisterCall::Read(Some(v)) => Some(v.as_str()),
            _ => None,
        })
        .collect();
    let ops: Vec<&RegisterOp> = ops
        .iter()
        .filter(|op| match &op.call {
            RegisterCall::Write(v) => op.complete.is_some() || observed.contains(v.as_str()),
            RegisterCall::Read(_) => true,
        })
        .collect();
    Search::new(&ops).run()
}

/// A compact register model: values interned, 0 is "empty".
#[derive(Debug, Clone, Copy)]
enum Step {
    Write(u32),
    Read(u32),
}

/// Set of placed operations.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Bits(Vec<u64>);

impl Bits {
    fn new(n: usize) -> Self {
        Self(vec![0; n.div_ceil(64)])
    }
    fn set(&mut self, i: usize) {
        self.0[i / 64] |= 1 << (i % 64);
    }
    fn clear(&mut self, i: usize) {
        self.0[i / 64] &= !(1 << (i % 64));
    }
}

const NIL: usize = usize::MAX;

struct Search<'a> {
    ops: &'a [&'a RegisterOp],
    steps: Vec<Step>,
    /// Interned value names, index = id (0 = empty).
    names: Vec<String>,
    /// Entry `e`: which op, and whether it is the call (else the return).
    entry_op: Vec<usize>,
    entry_is_call: Vec<bool>,
    /// For a call entry, its return entry.
    matching: Vec<usize>,
    /// Doubly linked list over the entries; `head` is a sentinel.
    next: Vec<usize>,
    prev: Vec<usize>,
    head: usize,
}

impl<'a> Search<'a> {
    fn new(ops: &'a [&'a RegisterOp]) -> Self {
        let mut ids: HashMap<&str, u32> = HashMap::new();
        let mut names = vec!["(empty)".to_owned()];
        let mut intern = |v: &'a str, names: &mut Vec<String>| -> u32 {
            *ids.entry(v).or_insert_with(|| {
                names.push(v.to_owned());
                u32::try_from(names.len() - 1).unwrap_or(u32::MAX)
            })
        };
        let steps = ops
            .iter()
            .map(|op| match &op.call {
                RegisterCall::Write(v) => Step::Write(intern(v, &mut names)),
                RegisterCall::Read(Some(v)) => Step::Read(intern(v, &mut names)),
                RegisterCall::Read(None) => Step::Read(0),
            })
            .collect();

        // Entries sorted by time; at equal times calls come first, so
        // operations that merely touch count as concurrent (the lenient
        // reading: never a false alarm from clock granularity).
        let mut order: Vec<(Duration, bool, usize)> = Vec::with_capacity(ops.len() * 2);
        for (i, op) in ops.iter().enumerate() {
            order.push((op.invoke, true, i));
            order.push((op.complete.unwrap_or(Duration::MAX), false, i));
        }
        order.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)).then(a.2.cmp(&b.2)));
        let n = order.len();
        let mut entry_op = Vec::with_capacity(n);
        let mut entry_is_call = Vec::with_capacity(n);
        let mut call_entry = vec![NIL; ops.len()];
        let mut matching = vec![NIL; n];
        for (e, (_, is_call, op)) in order.iter().enumerate() {
            entry_op.push(*op);
            entry_is_call.push(*is_call);
            if *is_call {
                call_entry[*op] = e;
            } else {
                matching[call_entry[*op]] = e;
            }
        }
        let head = n;
        let mut next = vec![NIL; n + 1];
        let mut prev = vec![NIL; n + 1];
        // The list in time order: head, 0, 1, …, n-1.
        next[head] = if n == 0 { NIL } else { 0 };
        for e in 0..n {
            prev[e] = if e == 0 { head } else { e - 1 };
            next[e] = if e + 1 < n { e + 1 } else { NIL };
        }
        Self {
            ops,
            steps,
            names,
            entry_op,
            entry_is_call,
            matching,
            next,
            prev,
            head,
        }
    }

    fn unlink(&mut self, e: usize) {
        let (p, n) = (self.prev[e], self.next[e]);
        self.next[p] = n;
        if n != NIL {
            self.prev[n] = p;
        }
    }

    fn relink(&mut self, e: usize) {
        let (p, n) = (self.prev[e], self.next[e]);
        self.next[p] = e;
        if n != NIL {
            self.prev[n] = e;
        }
    }

    /// Takes a call and its return out of the list.
    fn lift(&mut self, call: usize) {
        self.unlink(call);
        self.unlink(self.matching[call]);
    }

    /// Undoes [`Search::lift`] (in stack order).
    fn unlift(&mut self, call: usize) {
        self.relink(self.matching[call]);
        self.relink(call);
    }

    fn apply(step: Step, state: u32) -> Option<u32> {
        match step {
            Step::Write(v) => Some(v),
            Step::Read(v) => (v == state).then_some(state),
        }
    }

    fn run(mut self) -> Result<(), CheckError> {
        let n_ops = self.ops.len();
        let mut placed = Bits::new(n_ops);
        let mut seen: HashSet<(Bits, u32)> = HashSet::new();
        let mut stack: Vec<(usize, u32)> = Vec::new();
        let mut state = 0_u32;
        let mut entry = self.next[self.head];
        let mut steps = 0_u64;
        // The deepest point the search reached: how many ops were placed,
        // which op could not be, and the register then.
        let mut deepest: Option<(usize, usize, u32, Vec<usize>)> = None;
        while self.next[self.head] != NIL {
            steps += 1;
            if steps > MAX_STEPS {
                return Err(CheckError::TooHard(format!(
                    "gave up after {MAX_STEPS} steps on {n_ops} operations"
                )));
            }
            let op = self.entry_op[entry];
            if self.entry_is_call[entry] {
                if let Some(after) = Self::apply(self.steps[op], state) {
                    let mut with = placed.clone();
                    with.set(op);
                    if seen.insert((with.clone(), after)) {
                        stack.push((entry, state));
                        state = after;
                        placed = with;
                        self.lift(entry);
                        entry = self.next[self.head];
                        continue;
                    }
                }
                entry = self.next[entry];
            } else {
                // This op's completion came before it could be placed.
                if deepest.as_ref().is_none_or(|d| stack.len() > d.0) {
                    let order = stack.iter().map(|(e, _)| self.entry_op[*e]).collect();
                    deepest = Some((stack.len(), op, state, order));
                }
                let Some((call, before)) = stack.pop() else {
                    return Err(self.violation(deepest));
                };
                state = before;
                placed.clear(self.entry_op[call]);
                self.unlift(call);
                entry = self.next[call];
            }
        }
        Ok(())
    }

    fn violation(&self, deepest: Option<(usize, usize, u32, Vec<usize>)>) -> CheckError {
        let Some((_, stuck, state, order)) = deepest else {
            return CheckError::NotLinearizable("no operation could be placed".to_owned());
        };
        let stuck_op = self.ops[stuck];
        let last: Vec<String> = order
            .iter()
            .rev()
            .take(4)
            .rev()
            .map(|i| format!("  {}", self.ops[*i]))
            .collect();
        let open: Vec<String> = self
            .ops
            .iter()
            .enumerate()
            .filter(|(i, op)| {
                *i != stuck
                    && !order.contains(i)
                    && op.invoke <= stuck_op.complete.unwrap_or(Duration::MAX)
            })
            .take(6)
            .map(|(_, op)| format!("  {op}"))
            .collect();
        CheckError::NotLinearizable(format!(
            "{stuck_op} cannot take effect anywhere in its interval: with {} operations placed the register held {:?}{}{}",
            order.len(),
            self.names[state as usize],
            if last.is_empty() {
                String::new()
            } else {
                format!("; the last placed:\n{}", last.join("\n"))
            },
            if open.is_empty() {
                String::new()
            } else {
                format!("\nstill unplaced before it completed:\n{}", open.join("\n"))
            },
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn w(id: usize, v: &str, from: u64, to: Option<u64>) -> RegisterOp {
        RegisterOp::new(id, RegisterCall::Write(v.into()), ms(from), to.map(ms))
    }

    fn r(id: usize, v: Option<&str>, from: u64, to: u64) -> RegisterOp {
        RegisterOp::new(
            id,
            RegisterCall::Read(v.map(Into::into)),
            ms(from),
            Some(ms(to)),
        )
    }

    #[test]
    fn an_empty_history_and_a_sequential_one_are_accepted() {
        assert_eq!(check_register(&[]), Ok(()));
        let h = [
            r(0, None, 0, 1),
            w(1, "a", 2, Some(3)),
            r(2, Some("a"), 4, 5),
            w(3, "b", 6, Some(7)),
            r(4, Some("b"), 8, 9),
        ];
        assert_eq!(check_register(&h), Ok(()));
    }

    #[test]
    fn a_read_concurrent_with_a_write_may_see_either_value() {
        for seen in [None, Some("a")] {
            let h = [w(0, "a", 0, Some(10)), r(1, seen, 1, 2)];
            assert_eq!(check_register(&h), Ok(()), "{seen:?}");
        }
    }

    #[test]
    fn reads_cannot_go_back_in_time_during_a_write() {
        // Both reads overlap the write, but once one saw "a" a later one
        // cannot see the empty register again.
        let h = [
            w(0, "a", 0, Some(10)),
            r(1, Some("a"), 1, 2),
            r(2, None, 3, 4),
        ];
        assert!(matches!(
            check_register(&h),
            Err(CheckError::NotLinearizable(_))
        ));
    }

    #[test]
    fn a_stale_read_is_rejected_and_named() {
        let h = [
            w(0, "a", 0, Some(1)),
            w(1, "b", 2, Some(3)),
            r(2, Some("a"), 4, 5),
        ];
        let Err(CheckError::NotLinearizable(why)) = check_register(&h) else {
            panic!("accepted a stale read");
        };
        assert!(why.contains("op 2 read -> \"a\""), "{why}");
        assert!(why.contains("held \"b\""), "{why}");
    }

    #[test]
    fn a_lost_acknowledged_write_is_rejected() {
        let h = [w(0, "a", 0, Some(1)), r(1, None, 2, 3)];
        assert!(check_register(&h).is_err());
    }

    #[test]
    fn a_value_nobody_wrote_is_rejected() {
        let h = [w(0, "a", 0, Some(1)), r(1, Some("x"), 2, 3)];
        assert!(check_register(&h).is_err());
    }

    #[test]
    fn an_unconfirmed_write_may_or_may_not_take_effect() {
        let seen = [
            w(0, "a", 0, Some(1)),
            w(1, "b", 2, None),
            r(2, Some("b"), 50, 51),
        ];
        assert_eq!(check_register(&seen), Ok(()));
        let unseen = [
            w(0, "a", 0, Some(1)),
            w(1, "b", 2, None),
            r(2, Some("a"), 50, 51),
        ];
        assert_eq!(check_register(&unseen), Ok(()));
        // But not before it was invoked.
        let early = [
            w(0, "a", 0, Some(1)),
            r(1, Some("b"), 2, 3),
            w(2, "b", 4, None),
        ];
        assert!(check_register(&early).is_err());
    }

    /// A register served correctly: each op takes effect at a random
    /// instant inside its interval. Returns the history and, for each
    /// read, the values it could not legally have returned because they
    /// were overwritten before it began.
    fn simulate(plan: &[(u8, bool, u16, u16)]) -> (Vec<RegisterOp>, Vec<(usize, String)>) {
        // (client, is_write, start, duration) → ops with an effect point.
        let mut ops: Vec<(RegisterOp, u64)> = Vec::new();
        let mut next_free = [0_u64; 4];
        for (i, &(client, is_write, gap, len)) in plan.iter().enumerate() {
            let c = usize::from(client % 4);
            let start = next_free[c] + u64::from(gap % 50);
            let end = start + 1 + u64::from(len % 40);
            next_free[c] = end + 1;
            let effect = start + (u64::from(gap) * 7 + u64::from(len)) % (end - start + 1);
            let call = if is_write {
                RegisterCall::Write(format!("v{i}"))
            } else {
                RegisterCall::Read(None)
            };
            ops.push((RegisterOp::new(i, call, ms(start), Some(ms(end))), effect));
        }
        // Apply effects in effect order to fill in what reads saw.
        let mut by_effect: Vec<usize> = (0..ops.len()).collect();
        by_effect.sort_by_key(|&i| (ops[i].1, i));
        let mut value: Option<String> = None;
        for &i in &by_effect {
            match &ops[i].0.call {
                RegisterCall::Write(v) => value = Some(v.clone()),
                RegisterCall::Read(_) => ops[i].0.call = RegisterCall::Read(value.clone()),
            }
        }
        // Stale candidates: a write A completed, then a write B invoked
        // after A completed and completed itself, all before the read began.
        let mut stale = Vec::new();
        for (read, _) in ops
            .iter()
            .filter(|(o, _)| matches!(o.call, RegisterCall::Read(_)))
        {
            for (a, _) in &ops {
                let RegisterCall::Write(va) = &a.call else {
                    continue;
                };
                let overwritten = ops.iter().any(|(b, _)| {
                    matches!(b.call, RegisterCall::Write(_))
                        && b.invoke > a.complete.unwrap_or_default()
                        && b.complete.unwrap_or_default() < read.invoke
                });
                if a.complete.unwrap_or_default() < read.invoke && overwritten {
                    stale.push((read.id, va.clone()));
                    break;
                }
            }
        }
        (ops.into_iter().map(|(o, _)| o).collect(), stale)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        #[test]
        fn histories_of_a_correct_register_are_accepted(
            plan in proptest::collection::vec((0_u8..4, any::<bool>(), any::<u16>(), any::<u16>()), 0..60)
        ) {
            let (ops, _) = simulate(&plan);
            prop_assert_eq!(check_register(&ops), Ok(()));
        }

        #[test]
        fn a_read_made_stale_is_rejected(
            plan in proptest::collection::vec((0_u8..4, any::<bool>(), any::<u16>(), any::<u16>()), 4..60)
        ) {
            let (mut ops, stale) = simulate(&plan);
            prop_assume!(!stale.is_empty());
            let (read, old) = &stale[0];
            ops[*read].call = RegisterCall::Read(Some(old.clone()));
            prop_assert!(matches!(check_register(&ops), Err(CheckError::NotLinearizable(_))));
        }
    }

    #[test]
    fn a_long_run_of_four_clients_is_decided() {
        // About what one scenario's busiest key sees.
        let plan: Vec<(u8, bool, u16, u16)> = (0..4000_u32)
            .map(|i| {
                (
                    (i % 4) as u8,
                    i % 2 == 0,
                    (i * 31 % 97) as u16,
                    (i * 17 % 89) as u16,
                )
            })
            .collect();
        let (ops, _) = simulate(&plan);
        assert_eq!(check_register(&ops), Ok(()));
    }

    /// The deliberately broken history: a correct run of four clients,
    /// then one read rewritten to return the value from two writes back.
    #[test]
    fn rejects_a_deliberately_broken_history() {
        let plan: Vec<(u8, bool, u16, u16)> = (0..80_u16)
            .map(|i| ((i % 4) as u8, i % 3 != 1, i * 13 % 17, i * 7 % 23))
            .collect();
        let (mut ops, stale) = simulate(&plan);
        assert_eq!(check_register(&ops), Ok(()), "the unbroken run is accepted");
        let (read, old) = stale.last().expect("the run has a read after two writes");
        ops[*read].call = RegisterCall::Read(Some(old.clone()));
        let verdict = check_register(&ops);
        let Err(CheckError::NotLinearizable(why)) = verdict else {
            panic!("the broken history was accepted: {verdict:?}");
        };
        assert!(why.contains(&format!("op {read} read")), "{why}");
    }
}
