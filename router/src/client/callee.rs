//! The callee side: REGISTER, INVOCATIONs and INTERRUPTs handed to their registration's
//! channel, and the answers (YIELD, ERROR).

use tokio::sync::{mpsc, oneshot};

use crate::wire::{code, Dict, Id, Message, Payload};

use super::requests::Pending;
use super::{Client, ClientError, Shared, CHANNEL_DEPTH};

/// What a registration's channel receives.
#[derive(Debug)]
pub enum CalleeMessage {
    Invocation {
        request: Id,
        registration: Id,
        details: Dict,
        payload: Payload,
    },
    Interrupt {
        request: Id,
        options: Dict,
    },
}

impl Client {
    /// Registers; INVOCATIONs (and INTERRUPTs) arrive on the returned channel; answer with
    /// [`Client::yield_result`] or [`Client::yield_error`].
    pub async fn register(
        &self,
        procedure: &str,
        options: Dict,
    ) -> Result<(Id, mpsc::Receiver<CalleeMessage>), ClientError> {
        let request = self.request_id();
        let (tx, rx) = oneshot::channel();
        let (calls_tx, calls_rx) = mpsc::channel(CHANNEL_DEPTH);
        let msg = Message::Register {
            request,
            options,
            procedure: procedure.to_owned(),
        };
        match self
            .request(request, msg, Pending::Register(tx, calls_tx), rx)
            .await?
        {
            Message::Registered { registration, .. } => Ok((registration, calls_rx)),
            other => Err(ClientError::Protocol(format!(
                "expected REGISTERED, got {}",
                other.name()
            ))),
        }
    }

    pub async fn yield_result(
        &self,
        request: Id,
        options: Dict,
        payload: Payload,
    ) -> Result<(), ClientError> {
        self.send(&Message::Yield {
            request,
            options,
            payload,
        })
        .await
    }

    pub async fn yield_error(
        &self,
        request: Id,
        error: &str,
        payload: Payload,
    ) -> Result<(), ClientError> {
        self.send(&Message::Error {
            request_type: code::INVOCATION,
            request,
            details: Dict::new(),
            error: error.to_owned(),
            payload,
        })
        .await
    }
}

/// Hands an INVOCATION to its registration's channel (unknown registrations are ignored).
pub(super) async fn deliver_invocation(
    shared: &Shared,
    registration: Id,
    invocation: CalleeMessage,
) {
    let target = shared
        .routes
        .lock()
        .registrations
        .get(&registration)
        .cloned();
    if let Some(t) = target {
        let _ = t.send(invocation).await;
    }
}

/// Hands an INTERRUPT to every registration's channel: INTERRUPT names the invocation, not
/// the registration (a client rarely has more than one; unknown IDs are ignored there).
pub(super) async fn deliver_interrupt(shared: &Shared, request: Id, options: Dict) {
    let targets: Vec<_> = shared
        .routes
        .lock()
        .registrations
        .values()
        .cloned()
        .collect();
    for t in targets {
        let _ = t
            .send(CalleeMessage::Interrupt {
                request,
                options: options.clone(),
            })
            .await;
    }
}
