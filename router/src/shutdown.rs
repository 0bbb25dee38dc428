//! The one shutdown mechanism: a cancellation token every task watches, and a task tracker
//! the owner waits on until every connection has said goodbye.

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Cloned into every listener and connection task.
#[derive(Clone, Debug, Default)]
pub struct Shutdown {
    token: CancellationToken,
    tasks: TaskTracker,
}

impl Shutdown {
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts the shutdown: every task watching [`Shutdown::requested`] wakes up.
    pub fn trigger(&self) {
        self.token.cancel();
    }

    pub fn is_triggered(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Resolves once the shutdown has been triggered.
    pub async fn requested(&self) {
        self.token.cancelled().await
    }

    /// Spawns a task that [`Shutdown::wait`] will wait for.
    pub fn spawn<F>(&self, fut: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.tasks.spawn(fut)
    }

    /// Triggers the shutdown and waits (at most `deadline`) for every tracked task to end.
    /// Returns false if the deadline passed first.
    pub async fn wait(&self, deadline: Duration) -> bool {
        self.trigger();
        self.tasks.close();
        tokio::time::timeout(deadline, self.tasks.wait())
            .await
            .is_ok()
    }
}
