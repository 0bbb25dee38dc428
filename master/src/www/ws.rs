//! Buildbot's JSON WebSocket protocol (`/buildbot/ws`, as `buildbot/www/ws.py` speaks it),
//! fed from the node's [`EventHub`]: the same bus subscription, ring and client bound as
//! the SSE stream, so it carries exactly what the hub carries.
//!
//! One [`Relay`] task per node reads the hub's ring and renders each event once as
//! `{"k": "builds/2/update", "m": {...}}`, where `m` is the whole entity as the REST API
//! shows it (read from the store; the bus payload when the store has no such entity), into
//! a bounded ring of its own. Each connection reads that ring and sends the events whose
//! key matches one of its `startConsuming` paths (`*` matches one component).
//!
//! Client frames: `{"cmd": "startConsuming"|"stopConsuming"|"ping", "path": ..., "_id": N}`,
//! answered `{"msg": "OK", "code": 200, "_id": N}` (`"pong"` for ping) or
//! `{"error": ..., "code": 400|404, "_id": N}`. Bounds: [`MAX_FRAME`] per client frame,
//! [`MAX_PATHS`] paths per connection, [`events::MAX_CLIENTS`] connections per node; a
//! connection that takes nothing for [`events::STALLED_CLIENT_TIMEOUT`] is closed, one that
//! falls a whole ring behind skips what it missed (Buildbot's protocol has no resync; the
//! UI refetches on reload).

use std::sync::Arc;

use futures_util::{SinkExt, StreamExt};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::sync::{broadcast, OwnedSemaphorePermit, Semaphore};
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use crate::api::{self, ApiState};
use crate::ui::events::{self, EventHub};

/// Largest client frame (commands are a few dozen bytes).
pub const MAX_FRAME: usize = 16 << 10;
/// Most paths one connection consumes at once.
pub const MAX_PATHS: usize = 256;

/// One event, rendered once for every connection.
pub struct WsEvent {
    /// The routing key's components.
    key: Vec<String>,
    /// `{"k": ..., "m": ...}`.
    text: Arc<str>,
}

/// The node's renderer of bus events into Buildbot's frames, and its connections' bound.
pub struct Relay {
    ring: broadcast::Sender<Arc<WsEvent>>,
    clients: Arc<Semaphore>,
}

impl Relay {
    /// Starts rendering the hub's events (an error if the hub has no room for the relay).
    pub fn start(hub: &EventHub, state: ApiState) -> Result<Arc<Relay>, String> {
        let (events, permit) = hub
            .subscribe()
            .ok_or("the event hub is full; cannot start Buildbot's WebSocket relay")?;
        let (ring, _) = broadcast::channel(events::RING_CAPACITY);
        let relay = Arc::new(Relay {
            ring: ring.clone(),
            clients: Arc::new(Semaphore::new(events::MAX_CLIENTS)),
        });
        let shutdown = hub.shutdown().clone();
        tokio::spawn(async move {
            let _permit = permit;
            let mut events = events;
            let mut cache = Cache::default();
            loop {
                let ev = tokio::select! {
                    _ = shutdown.requested() => return,
                    ev = events.recv() => ev,
                };
                let ev = match ev {
                    Ok(ev) => ev,
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!(missed = n, "Buildbot WebSocket relay fell behind");
                        continue;
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                };
                if let Some(out) = render(&state, &mut cache, &ev).await {
                    let _ = ring.send(Arc::new(out));
                }
            }
        });
        Ok(relay)
    }

    /// A place for one more connection, with its reader of the ring.
    pub fn connect(&self) -> Option<(broadcast::Receiver<Arc<WsEvent>>, OwnedSemaphorePermit)> {
        let permit = self.clients.clone().try_acquire_owned().ok()?;
        Some((self.ring.subscribe(), permit))
    }
}

/// The last entity read: the same event goes out under several routing keys in a row.
#[derive(Default)]
struct Cache {
    last: Option<(String, i64, String, Value)>,
}

/// The collection a routing key is about and the field holding the entity's id.
fn entity_of(key: &[&str]) -> Option<(&'static str, &'static str)> {
    let coll = key.get(key.len().checked_sub(3)?)?;
    Some(match *coll {
        "builds" => ("builds", "buildid"),
        "steps" => ("steps", "stepid"),
        "logs" => ("logs", "logid"),
        "buildrequests" => ("buildrequests", "buildrequestid"),
        "buildsets" => ("buildsets", "bsid"),
        "workers" => ("workers", "workerid"),
        "masters" => ("masters", "masterid"),
        "builders" => ("builders", "builderid"),
        _ => return None,
    })
}

async fn render(state: &ApiState, cache: &mut Cache, ev: &events::BusEvent) -> Option<WsEvent> {
    let data_text = ev.data()?;
    let key: Vec<&str> = ev.key().split('.').collect();
    let data: Value = serde_json::from_str(data_text).ok()?;
    let mut entity = data.clone();
    if let Some((coll, id_field)) = entity_of(&key) {
        if let Some(id) = data.get(id_field).and_then(Value::as_i64) {
            let hit = cache
                .last
                .as_ref()
                .filter(|(c, i, t, _)| c == coll && *i == id && t == data_text)
                .map(|(_, _, _, v)| v.clone());
            match hit {
                Some(v) => entity = v,
                None => match api::entity(state, coll, id).await {
                    Ok(Some(v)) => {
                        cache.last = Some((coll.into(), id, data_text.into(), v.clone()));
                        entity = v;
                    }
                    Ok(None) => {}
                    Err(e) => tracing::debug!(coll, id, error = %e, "entity not read for the UI"),
                },
            }
        }
    }
    let text = json!({ "k": key.join("/"), "m": entity }).to_string();
    Some(WsEvent {
        key: key.into_iter().map(str::to_owned).collect(),
        text: text.into(),
    })
}

/// Whether a `startConsuming` path (`builds/*/*`) matches a routing key.
fn matches(pattern: &[String], key: &[String]) -> bool {
    pattern.len() == key.len() && pattern.iter().zip(key).all(|(p, k)| p == "*" || p == k)
}

/// The WebSocket configuration of a connection.
pub fn config() -> WebSocketConfig {
    WebSocketConfig::default()
        .max_message_size(Some(MAX_FRAME))
        .max_frame_size(Some(MAX_FRAME))
}

/// Serves one upgraded connection until it closes, stalls, or the node stops.
pub async fn serve(
    upgraded: hyper::upgrade::Upgraded,
    mut events: broadcast::Receiver<Arc<WsEvent>>,
    _permit: OwnedSemaphorePermit,
    shutdown: switchyard_router::Shutdown,
) {
    let mut ws =
        WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, Some(config()))
            .await;
    let mut paths: Vec<(String, Vec<String>)> = Vec::new();
    loop {
        let out = tokio::select! {
            _ = shutdown.requested() => break,
            msg = ws.next() => match msg {
                Some(Ok(Message::Text(t))) => Some(answer(&mut paths, t.as_str()).to_string()),
                Some(Ok(Message::Binary(_))) => {
                    Some(json!({"error": "frames are JSON text", "code": 400, "_id": null}).to_string())
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => None,
            },
            ev = events.recv() => match ev {
                Ok(ev) => paths
                    .iter()
                    .any(|(_, p)| matches(p, &ev.key))
                    .then(|| ev.text.to_string()),
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::info!(missed = n, "a Buildbot WebSocket client fell behind");
                    None
                }
                Err(broadcast::error::RecvError::Closed) => break,
            },
        };
        let Some(out) = out else { continue };
        match tokio::time::timeout(events::STALLED_CLIENT_TIMEOUT, ws.send(Message::text(out)))
            .await
        {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return,
            Err(_) => {
                tracing::info!("a Buildbot WebSocket client took nothing; closed");
                return;
            }
        }
    }
    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), ws.close(None)).await;
}

/// The answer to one client frame; `paths` holds the connection's consumed paths.
fn answer(paths: &mut Vec<(String, Vec<String>)>, frame: &str) -> Value {
    let Ok(Value::Object(mut f)) = serde_json::from_str::<Value>(frame) else {
        return json!({"error": "the frame is not a JSON object", "code": 400, "_id": null});
    };
    let id = f.remove("_id").unwrap_or(Value::Null);
    let err = |code: u16, msg: String| json!({"error": msg, "code": code, "_id": id});
    let ok = |msg: &str| json!({"msg": msg, "code": 200, "_id": id});
    let cmd = f.get("cmd").and_then(Value::as_str).unwrap_or("");
    let path = f.get("path").and_then(Value::as_str);
    let valid_path = |p: &str| {
        !p.is_empty() && p.len() <= 256 && p.split('/').all(|c| !c.is_empty() && !c.contains('.'))
    };
    match (cmd, path) {
        ("ping", _) => ok("pong"),
        ("startConsuming" | "stopConsuming", Some(p)) if !valid_path(p) => {
            err(400, format!("invalid path format '{}'", p.escape_debug()))
        }
        ("startConsuming", Some(p)) => {
            if !paths.iter().any(|(q, _)| q == p) {
                if paths.len() >= MAX_PATHS {
                    return err(400, format!("at most {MAX_PATHS} paths per connection"));
                }
                paths.push((p.to_owned(), p.split('/').map(str::to_owned).collect()));
            }
            ok("OK")
        }
        ("stopConsuming", Some(p)) => match paths.iter().position(|(q, _)| q == p) {
            Some(i) => {
                paths.remove(i);
                ok("OK")
            }
            None => err(400, format!("path was not consumed '{}'", p.escape_debug())),
        },
        ("startConsuming" | "stopConsuming", None) => err(400, "no 'path' given".into()),
        ("", _) => err(400, "no 'cmd' in websocket frame".into()),
        (other, _) => err(
            404,
            format!(
                "no such command type '{}'",
                other.chars().take(64).collect::<String>()
            ),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(p: &str) -> Vec<String> {
        p.split('/').map(str::to_owned).collect()
    }

    #[test]
    fn paths_match_one_component_per_star() {
        assert!(matches(&parts("builds/*/*"), &parts("builds/2/update")));
        assert!(matches(
            &parts("builders/1/builds/*/*"),
            &parts("builders/1/builds/3/new")
        ));
        assert!(!matches(
            &parts("builders/1/builds/*/*"),
            &parts("builders/2/builds/3/new")
        ));
        assert!(!matches(
            &parts("builds/*/*"),
            &parts("builds/2/steps/3/new")
        ));
    }

    #[test]
    fn commands_are_answered_as_buildbot_does() {
        let mut paths = Vec::new();
        let a = answer(
            &mut paths,
            r#"{"cmd":"startConsuming","path":"builds/*/*","_id":1}"#,
        );
        assert_eq!(a, json!({"msg": "OK", "code": 200, "_id": 1}));
        assert_eq!(paths.len(), 1);
        let a = answer(&mut paths, r#"{"cmd":"ping","_id":2}"#);
        assert_eq!(a, json!({"msg": "pong", "code": 200, "_id": 2}));
        let a = answer(
            &mut paths,
            r#"{"cmd":"stopConsuming","path":"builds/*/*","_id":3}"#,
        );
        assert_eq!(a["code"], 200);
        assert!(paths.is_empty());
        let a = answer(
            &mut paths,
            r#"{"cmd":"stopConsuming","path":"builds/*/*","_id":4}"#,
        );
        assert_eq!(a["code"], 400);
        assert_eq!(answer(&mut paths, r#"{"cmd":"nope","_id":5}"#)["code"], 404);
        assert_eq!(answer(&mut paths, "not json")["code"], 400);
        let a = answer(
            &mut paths,
            r#"{"cmd":"startConsuming","path":"a//b","_id":6}"#,
        );
        assert_eq!(a["code"], 400);
        for i in 0..MAX_PATHS + 1 {
            let f = format!(r#"{{"cmd":"startConsuming","path":"builds/{i}/*","_id":1}}"#);
            let code = answer(&mut paths, &f)["code"].clone();
            assert_eq!(code, if i < MAX_PATHS { 200 } else { 400 });
        }
    }
}
