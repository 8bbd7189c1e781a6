//! Purges that go together. A mass purge is the same few steps for every tenant, and each
//! step's write (the audit rows, the drops, the purge's end, the state's checkpoint) can
//! take many tenants in one transaction. Tenants that run at their own pace seldom reach a
//! step at the same moment, so each would write alone: a commit, a round trip and, after
//! every drop, a statement planned again, per tenant. A wave is a group of purging tenants
//! started together that wait for each other before each such step, so the step is one
//! write for the wave.
//!
//! A member waits at a phase only for the members still behind it; the last of them is
//! never waiting, so the wave always moves. A member that finishes, fails or is interrupted
//! leaves the wave, and no one waits for it any more. Waiting changes what goes together,
//! never what a tenant does or in which order.
//!
//! A wave is as large as a batch may be, whatever `--parallelism` says: its members' writes
//! that go together are one call however many they are. Their calls that go one tenant at
//! a time (a bucket emptied, a vhost deleted, an export read back) go through
//! [`Member::alone`], each taking one of the run's `--parallelism` turns, as a tenant that
//! goes alone holds one for its whole run.

use std::future::Future;
use std::sync::{Arc, Mutex};

use tokio::sync::{Notify, Semaphore};

/// The plan's items in the groups they are started in, each with its place in the plan:
/// one alone, except those `in_wave` says go together, which go in waves of up to `size`
/// in the plan's order (a wave is let go once full, or at the end). Made as they are taken,
/// so a run holds a group only for the items it has started.
pub(super) fn groups<T>(
    items: impl IntoIterator<Item = T>,
    size: usize,
    in_wave: impl Fn(&T) -> bool,
) -> impl Iterator<Item = Vec<(usize, T)>> {
    let mut items = items.into_iter().enumerate();
    let mut filling: Vec<(usize, T)> = Vec::new();
    std::iter::from_fn(move || {
        for (at, item) in items.by_ref() {
            if !in_wave(&item) {
                return Some(vec![(at, item)]);
            }
            filling.push((at, item));
            if filling.len() >= size {
                return Some(std::mem::take(&mut filling));
            }
        }
        (!filling.is_empty()).then(|| std::mem::take(&mut filling))
    })
}

/// Where each member is: the last phase it reached, [`LEFT`] once it has left.
pub(super) struct Wave {
    phases: Mutex<Vec<u32>>,
    moved: Notify,
    /// The run's turns, one for each call that goes one tenant at a time.
    turns: Arc<Semaphore>,
}

/// A member's phase once it has left: ahead of every phase, so no one waits for it.
const LEFT: u32 = u32::MAX;

impl Wave {
    /// A wave of `size` members, none of which has reached a phase yet, whose calls that go
    /// one tenant at a time each take one of `turns`.
    pub(super) fn new(size: usize, turns: Arc<Semaphore>) -> Wave {
        Wave {
            phases: Mutex::new(vec![0; size]),
            moved: Notify::new(),
            turns,
        }
    }

    /// The `index`th member; it leaves the wave when dropped.
    pub(super) fn member(&self, index: usize) -> Member<'_> {
        Member { wave: self, index }
    }

    fn set(&self, index: usize, phase: u32) {
        let mut phases = self.phases.lock().expect("never poisoned");
        phases[index] = phases[index].max(phase);
        drop(phases);
        self.moved.notify_waiters();
    }

    fn all_reached(&self, phase: u32) -> bool {
        let phases = self.phases.lock().expect("never poisoned");
        phases.iter().all(|&p| p >= phase)
    }
}

/// One tenant of a wave.
pub(super) struct Member<'w> {
    wave: &'w Wave,
    index: usize,
}

impl Member<'_> {
    /// Reaches `phase` (phases count from 1 and only go up: a lower one is no wait) and
    /// returns once every member still in the wave has reached it too.
    pub(super) async fn reach(&self, phase: u32) {
        self.wave.set(self.index, phase);
        loop {
            // Registered before looking, so a move made in between is not missed.
            let moved = self.wave.moved.notified();
            tokio::pin!(moved);
            moved.as_mut().enable();
            if self.wave.all_reached(phase) {
                return;
            }
            moved.await;
        }
    }
}

impl Member<'_> {
    /// Makes `call`, one that goes to its service for this tenant alone, once it has one of
    /// the run's turns. Never wrap a wait at a phase in it: a member holding its turn while
    /// it waits for one without would stall the wave.
    pub(super) async fn alone<F: Future>(&self, call: F) -> F::Output {
        let _turn = self.wave.turns.acquire().await.expect("never closed");
        call.await
    }
}

impl Drop for Member<'_> {
    fn drop(&mut self) {
        self.wave.set(self.index, LEFT);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::Duration;

    #[test]
    fn waves_fill_in_the_plans_order_and_the_rest_go_alone() {
        let items = ["p0", "a1", "p2", "p3", "a4", "p5"];
        let made: Vec<Vec<usize>> = groups(items, 2, |i| i.starts_with('p'))
            .map(|g| g.into_iter().map(|(at, _)| at).collect())
            .collect();
        assert_eq!(made, [vec![1], vec![0, 2], vec![4], vec![3, 5]]);
        // A wave of one is every purge alone (`--parallelism 1`).
        assert_eq!(groups(items, 1, |_| true).count(), items.len());
    }

    #[test]
    fn groups_are_made_as_they_are_taken() {
        let taken = std::cell::Cell::new(0);
        let items = (0..1000).inspect(|_| taken.set(taken.get() + 1));
        let mut made = groups(items, 32, |_| false);
        made.next();
        made.next();
        assert_eq!(
            taken.get(),
            2,
            "only what was started is taken from the plan"
        );
    }

    #[tokio::test]
    async fn no_member_passes_a_phase_before_every_member_still_there_reaches_it() {
        let wave = Wave::new(3, Arc::new(Semaphore::new(3)));
        let passed = AtomicU32::new(0);
        let member = |i: usize, phases: &'static [u32], pause: u64| {
            let (wave, passed) = (&wave, &passed);
            async move {
                let m = wave.member(i);
                for &p in phases {
                    tokio::time::sleep(Duration::from_millis(pause)).await;
                    m.reach(p).await;
                    // Everyone still there has reached `p`.
                    assert!(wave.all_reached(p));
                    passed.fetch_add(1, Ordering::SeqCst);
                }
            }
        };
        // The third member skips phase 2 and leaves after phase 3; the others then go on
        // to phase 4 without it.
        tokio::join!(
            member(0, &[1, 2, 3, 4], 1),
            member(1, &[1, 2, 3, 4], 5),
            member(2, &[1, 3], 3),
        );
        assert_eq!(passed.load(Ordering::SeqCst), 10);
    }

    #[tokio::test]
    async fn a_member_that_leaves_early_is_not_waited_for() {
        let wave = Wave::new(2, Arc::new(Semaphore::new(2)));
        let leaving = wave.member(1);
        let staying = wave.member(0);
        drop(leaving);
        tokio::time::timeout(Duration::from_secs(5), staying.reach(7))
            .await
            .expect("the member that left is not waited for");
    }

    #[tokio::test]
    async fn calls_alone_take_a_turn_each() {
        let wave = Wave::new(6, Arc::new(Semaphore::new(2)));
        let (now, most) = (AtomicU32::new(0), AtomicU32::new(0));
        let member = |i: usize| {
            let (wave, now, most) = (&wave, &now, &most);
            async move {
                let m = wave.member(i);
                m.reach(1).await;
                m.alone(async {
                    let at_once = now.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(at_once, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    now.fetch_sub(1, Ordering::SeqCst);
                })
                .await;
                m.reach(2).await;
            }
        };
        futures::future::join_all((0..6).map(member)).await;
        assert_eq!(most.load(Ordering::SeqCst), 2);
    }
}
