//! Group commit: many tasks each need a small write made durable before they go on, and a
//! store that writes one at a time would make them queue behind each other's round trips
//! and commits. Each caller queues its item; whoever gets to write next writes every item
//! queued by then in one call, and tells each caller how its item fared. A caller still
//! returns only once its own item is written, so nothing is acknowledged early: with one
//! caller it is a plain write, with ten it is about one write per round trip instead of ten.

use std::future::Future;
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

/// Why a batch was not written, shared by every caller whose item was in it.
pub type BatchError = Arc<str>;

type Waiting<T> = (T, oneshot::Sender<Result<(), BatchError>>);

pub struct GroupCommit<T> {
    queue: Mutex<Vec<Waiting<T>>>,
    /// Held while a batch is written: one write at a time, as the store needs.
    writing: tokio::sync::Mutex<()>,
}

impl<T> Default for GroupCommit<T> {
    fn default() -> Self {
        GroupCommit {
            queue: Mutex::new(Vec::new()),
            writing: tokio::sync::Mutex::new(()),
        }
    }
}

impl<T> GroupCommit<T> {
    /// Writes `item`, with whatever else is queued, through `write` (called with the whole
    /// batch, in the order the items were queued), and returns once `item` is written.
    pub async fn write<F, Fut>(&self, item: T, write: F) -> Result<(), BatchError>
    where
        F: FnOnce(Vec<T>) -> Fut,
        Fut: Future<Output = Result<(), BatchError>>,
    {
        let (done, written) = oneshot::channel();
        self.queue
            .lock()
            .expect("never poisoned")
            .push((item, done));
        {
            let _writing = self.writing.lock().await;
            // Empty when the writer before this one took this item with its own batch.
            let batch = std::mem::take(&mut *self.queue.lock().expect("never poisoned"));
            if !batch.is_empty() {
                let (items, waiting): (Vec<T>, Vec<_>) = batch.into_iter().unzip();
                let result = write(items).await;
                for w in waiting {
                    // A caller that went away (its task was cancelled) needs no answer.
                    let _ = w.send(result.clone());
                }
            }
        }
        // Answered by now: this item was in the batch above or in one written before it.
        written
            .await
            .unwrap_or_else(|_| Err("the write was abandoned".into()))
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
}
