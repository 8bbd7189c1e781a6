//! Group commit: many tasks each need a small write made durable before they go on, and a
//! store that writes one at a time would make them queue behind each other's round trips
//! and commits. Each caller queues its item; whoever gets to write next writes every item
//! queued by then in one call, and tells each caller how its item fared. A caller still
//! returns only once its own item is written, so nothing is acknowledged early: with one
//! caller it is a plain write, with ten it is about one write per round trip instead of ten.

use std::future::Future;
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

/// The most tenants whose writes go in one batch (one transaction), wherever tenants' writes
/// are batched, and so the most tenants a purge wave holds: the locks of every object a
/// batch changes are held until its commit, and the server's lock table is shared by every
/// session.
pub const TENANTS_PER_BATCH: usize = 32;

/// Why a batch was not written, shared by every caller whose item was in it.
pub type BatchError = Arc<str>;

type Waiting<T, R> = (T, oneshot::Sender<R>);

/// A queue of items written in batches, each item answered with an `R` of its own (for
/// [`GroupCommit::write`], whether its batch was written).
pub struct GroupCommit<T, R = Result<(), BatchError>> {
    queue: Mutex<Vec<Waiting<T, R>>>,
    /// A permit is held while a batch is written: one write at a time unless the store
    /// takes several side by side (see [`GroupCommit::writers`]).
    writing: tokio::sync::Semaphore,
    /// The most items one batch takes; the rest wait for the next writer.
    limit: usize,
}

impl<T, R> Default for GroupCommit<T, R> {
    fn default() -> Self {
        GroupCommit::with_limit(usize::MAX)
    }
}

impl<T, R> GroupCommit<T, R> {
    /// A queue whose batches take at most `limit` items (at least one).
    pub fn with_limit(limit: usize) -> Self {
        GroupCommit {
            queue: Mutex::new(Vec::new()),
            writing: tokio::sync::Semaphore::new(1),
            limit: limit.max(1),
        }
    }

    /// Lets `n` batches be written at once (at least one), for a store where batches of
    /// different items never wait on each other: while one waits on its commit, the next
    /// is already sent.
    pub fn writers(mut self, n: usize) -> Self {
        self.writing = tokio::sync::Semaphore::new(n.max(1));
        self
    }

    /// Queues `item`; whoever gets to write next calls `write` with the items queued by then
    /// (in the order they were queued, at most the limit), which answers each of them, in
    /// the same order. Returns `item`'s answer once it has one, or `None` when the writer
    /// that took it went away without answering (its task was cancelled).
    pub async fn submit<F, Fut>(&self, item: T, write: F) -> Option<R>
    where
        F: FnOnce(Vec<T>) -> Fut,
        Fut: Future<Output = Vec<R>>,
    {
        let (done, answered) = oneshot::channel();
        self.queue
            .lock()
            .expect("never poisoned")
            .push((item, done));
        // Let the callers woken with this one (the members of the batch before, which are
        // answered at once) queue their items before a batch is taken.
        tokio::task::yield_now().await;
        {
            // Every caller takes this once, after queueing its item, and writes a batch if
            // anything is queued: there are never more items queued than callers still to
            // take it, so each item is written, in this caller's batch or in a later one.
            let _writing = self.writing.acquire().await.expect("never closed");
            let batch: Vec<_> = {
                let mut queue = self.queue.lock().expect("never poisoned");
                let take = queue.len().min(self.limit);
                queue.drain(..take).collect()
            };
            if !batch.is_empty() {
                let (items, waiting): (Vec<T>, Vec<_>) = batch.into_iter().unzip();
                let answers = write(items).await;
                debug_assert_eq!(answers.len(), waiting.len(), "one answer per item");
                for (w, answer) in waiting.into_iter().zip(answers) {
                    // A caller that went away (its task was cancelled) needs no answer.
                    let _ = w.send(answer);
                }
            }
        }
        // Answered already, or left for a later batch (over the limit), which answers it.
        answered.await.ok()
    }
}

impl<T> GroupCommit<T> {
    /// Writes `item`, with whatever else is queued, through `write` (called with the whole
    /// batch, in the order the items were queued), and returns once `item` is written. A
    /// batch that fails fails every item in it.
    pub async fn write<F, Fut>(&self, item: T, write: F) -> Result<(), BatchError>
    where
        F: FnOnce(Vec<T>) -> Fut,
        Fut: Future<Output = Result<(), BatchError>>,
    {
        self.submit(item, |items| async move {
            let n = items.len();
            vec![write(items).await; n]
        })
        .await
        .unwrap_or_else(|| Err("the write was abandoned".into()))
    }
}

/// How an item queued to go with others fared: done in its batch, or left to its caller to
/// do alone (which then says what is wrong, if anything is).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Together<T> {
    Done(T),
    Alone,
}

impl<T, R: Clone> GroupCommit<T, Together<R>> {
    /// Queues `item` to go with the others queued meanwhile, for writes where a batch is
    /// only the fast way and each item can also be done alone: `write` answers each item
    /// of its batch, and a batch that fails (which must then have changed nothing) answers
    /// every item [`Together::Alone`], as does a batch abandoned before it answered.
    /// `what` names the batch in the debug log of a failure.
    pub async fn together<F, Fut, E>(&self, item: T, what: &str, write: F) -> Together<R>
    where
        F: FnOnce(Vec<T>) -> Fut,
        Fut: Future<Output = Result<Vec<Together<R>>, E>>,
        E: std::error::Error,
    {
        self.submit(item, |items| async move {
            let n = items.len();
            tracing::debug!(items = n, "{what} together");
            write(items).await.unwrap_or_else(|e| {
                let error = crate::causes::chain(&e);
                tracing::debug!(
                    items = n,
                    error,
                    "{what} together failed; each is done alone"
                );
                vec![Together::Alone; n]
            })
        })
        .await
        .unwrap_or(Together::Alone)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_items_share_writes_and_each_is_written_once() {
        let commit = Arc::new(GroupCommit::<usize>::default());
        let written = Arc::new(Mutex::new(Vec::new()));
        let calls = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = (0..50)
            .map(|i| {
                let (commit, written, calls) = (commit.clone(), written.clone(), calls.clone());
                tokio::spawn(async move {
                    commit
                        .write(i, |batch| async move {
                            calls.fetch_add(1, Ordering::SeqCst);
                            tokio::time::sleep(Duration::from_millis(5)).await;
                            written.lock().unwrap().extend(batch);
                            Ok(())
                        })
                        .await
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        let mut written = written.lock().unwrap().clone();
        written.sort_unstable();
        assert_eq!(written, (0..50).collect::<Vec<_>>());
        let calls = calls.load(Ordering::SeqCst);
        assert!(calls < 50, "{calls} writes for 50 items: none was grouped");
    }

    /// With two writers, a batch is sent while the one before waits on its commit, and a
    /// third waits for one of them: never more at once than the store was said to take.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn batches_go_as_many_at_once_as_there_are_writers_and_no_more() {
        let commit = Arc::new(GroupCommit::<usize>::with_limit(1).writers(2));
        let (now, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let tasks: Vec<_> = (0..12)
            .map(|i| {
                let (commit, now, most) = (commit.clone(), now.clone(), most.clone());
                tokio::spawn(async move {
                    commit
                        .write(i, |_| async move {
                            most.fetch_max(
                                now.fetch_add(1, Ordering::SeqCst) + 1,
                                Ordering::SeqCst,
                            );
                            tokio::time::sleep(Duration::from_millis(20)).await;
                            now.fetch_sub(1, Ordering::SeqCst);
                            Ok(())
                        })
                        .await
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        assert_eq!(most.load(Ordering::SeqCst), 2, "batches written at once");
    }

    #[tokio::test]
    async fn a_failed_batch_leaves_each_item_to_be_done_alone() {
        let commit = GroupCommit::<u8, Together<u8>>::default();
        let failed = commit
            .together(1, "test", |_| async {
                Err::<Vec<Together<u8>>, _>(std::io::Error::other("disk full"))
            })
            .await;
        assert_eq!(failed, Together::Alone);
        let done = commit
            .together(2, "test", |items| async move {
                Ok::<_, std::io::Error>(items.into_iter().map(|i| Together::Done(i * 10)).collect())
            })
            .await;
        assert_eq!(done, Together::Done(20));
    }

    #[tokio::test]
    async fn a_failed_batch_fails_every_item_in_it() {
        let commit = GroupCommit::<u8>::default();
        let result = commit
            .write(1, |_| async { Err::<(), BatchError>("disk full".into()) })
            .await;
        assert_eq!(result.unwrap_err().as_ref(), "disk full");
        // The next item is written on its own.
        commit.write(2, |_| async { Ok(()) }).await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn each_item_gets_its_own_answer_and_no_batch_is_over_the_limit() {
        let commit = Arc::new(GroupCommit::<usize, usize>::with_limit(3));
        let largest = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = (0..40)
            .map(|i| {
                let (commit, largest) = (commit.clone(), largest.clone());
                tokio::spawn(async move {
                    commit
                        .submit(i, |batch| async move {
                            largest.fetch_max(batch.len(), Ordering::SeqCst);
                            tokio::time::sleep(Duration::from_millis(2)).await;
                            batch.into_iter().map(|i| i * 10).collect()
                        })
                        .await
                })
            })
            .collect();
        for (i, t) in tasks.into_iter().enumerate() {
            assert_eq!(t.await.unwrap(), Some(i * 10));
        }
        let largest = largest.load(Ordering::SeqCst);
        assert!(
            largest <= 3,
            "a batch of {largest} items, over the limit of 3"
        );
    }
}
