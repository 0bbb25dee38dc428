//! The subscriber side: SUBSCRIBE, and EVENTs handed to their subscription's channels.

use tokio::sync::{mpsc, oneshot};

use crate::wire::{Dict, Id, Message, Payload};

use super::requests::Pending;
use super::{Client, ClientError, Shared, CHANNEL_DEPTH};

/// A received EVENT.
#[derive(Debug, Clone)]
pub struct Event {
    pub subscription: Id,
    pub publication: Id,
    pub details: Dict,
    pub payload: Payload,
}

impl Client {
    /// Subscribes; EVENTs arrive on the returned channel.
    pub async fn subscribe(
        &self,
        topic: &str,
        options: Dict,
    ) -> Result<(Id, mpsc::Receiver<Event>), ClientError> {
        let request = self.request_id();
        let (tx, rx) = oneshot::channel();
        let (events_tx, events_rx) = mpsc::channel(CHANNEL_DEPTH);
        let msg = Message::Subscribe {
            request,
            options,
            topic: topic.to_owned(),
        };
        match self
            .request(request, msg, Pending::Subscribe(tx, events_tx), rx)
            .await?
        {
            Message::Subscribed { subscription, .. } => Ok((subscription, events_rx)),
            other => Err(ClientError::Protocol(format!(
                "expected SUBSCRIBED, got {}",
                other.name()
            ))),
        }
    }
}

/// Hands an EVENT to every channel of its subscription (unknown subscriptions are ignored).
pub(super) async fn deliver(shared: &Shared, event: Event) {
    let targets = shared
        .routes
        .lock()
        .subscriptions
        .get(&event.subscription)
        .cloned();
    for t in targets.into_iter().flatten() {
        let _ = t.send(event.clone()).await;
    }
}
