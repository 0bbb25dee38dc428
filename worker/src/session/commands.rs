//! The running commands, by (connection, invocation), each with its kill switch: how many
//! run (for `max_commands` and `info`), killing one (INTERRUPT) or all of a connection's, and
//! waiting until none runs (drain, teardown).

use std::collections::HashMap;
use std::sync::Arc;

use switchyard_router::wire::Id;
use tokio::sync::{mpsc, watch};

use super::Worker;
use crate::command::KillReason;

/// Running commands, by (connection, invocation), each with its kill switch.
pub(super) struct Commands {
    map: parking_lot::Mutex<HashMap<(u64, Id), mpsc::Sender<KillReason>>>,
    count: watch::Sender<usize>,
}

impl Commands {
    pub(super) fn new() -> Self {
        Commands {
            map: Default::default(),
            count: watch::Sender::new(0),
        }
    }

    pub(super) fn len(&self) -> usize {
        self.map.lock().len()
    }

    /// Adds a command unless `max` are running.
    pub(super) fn try_insert(
        &self,
        key: (u64, Id),
        kill: mpsc::Sender<KillReason>,
        max: usize,
    ) -> bool {
        let mut map = self.map.lock();
        if map.len() >= max {
            return false;
        }
        map.insert(key, kill);
        self.count.send_replace(map.len());
        true
    }

    fn remove(&self, key: (u64, Id)) {
        let mut map = self.map.lock();
        map.remove(&key);
        self.count.send_replace(map.len());
    }

    pub(super) fn kill(&self, key: (u64, Id), reason: KillReason) -> bool {
        match self.map.lock().get(&key) {
            Some(k) => {
                let _ = k.try_send(reason);
                true
            }
            None => false,
        }
    }

    /// Kills every command of connection `conn`; returns how many.
    pub(super) fn kill_connection(&self, conn: u64, reason: KillReason) -> usize {
        let map = self.map.lock();
        let mut n = 0;
        for ((c, _), k) in map.iter() {
            if *c == conn {
                let _ = k.try_send(reason);
                n += 1;
            }
        }
        n
    }

    /// Resolves when no command runs.
    pub(super) async fn all_done(&self) {
        let mut rx = self.count.subscribe();
        let _ = rx.wait_for(|n| *n == 0).await;
    }
}

/// Removes a command from [`Commands`] when its task ends, however it ends.
pub(super) struct Registered {
    pub(super) worker: Arc<Worker>,
    pub(super) key: (u64, Id),
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.worker.commands.remove(self.key);
    }
}
