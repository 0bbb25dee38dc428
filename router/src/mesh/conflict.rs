//! The registration conflict rule: when two nodes accepted the same (match policy, URI) for
//! a `single` (or otherwise incompatible) registration while they could not see each other,
//! every node keeps the older claim (`created_ms`, then the smaller node name) and the
//! loser's own node revokes its callees (docs/mesh.md, "Registration conflicts").

use std::sync::Arc;

use super::link::LinkHandle;
use super::realm::RealmMesh;
use super::rpc;
use super::Mesh;
use crate::realm::Realm;
use crate::session::SessionHandle;
use crate::uri::{errors, MatchPolicy};
use crate::wire::{Dict, Id, Value};

/// Who holds a registration, for the conflict rule: the older claim wins, ties broken by
/// the smaller node name. Every node sees the same claims, so all pick the same winner.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Claim {
    pub(super) created_ms: u64,
    pub(super) node: String,
}

/// Registers a remote callee as a stand-in, resolving a conflict with an existing
/// registration of the same (policy, URI) by the claim rule. Returns the stand-in and our
/// registration ID, or `None` if the remote claim lost (its own node will revoke it).
#[allow(clippy::too_many_arguments)]
pub(super) fn add_remote_callee(
    mesh: &Mesh,
    link: &Arc<LinkHandle>,
    realm: &Realm,
    rm: &RealmMesh,
    (registration, callee): (Id, Id),
    policy: MatchPolicy,
    procedure: &str,
    invoke: crate::dealer::InvokePolicy,
    claim: Claim,
) -> Option<(SessionHandle, Id)> {
    let proxy = rpc::proxy_callee(link, realm.name(), registration, callee, procedure);
    let mut options = Dict::new();
    options.insert("invoke".into(), Value::from(invoke.name()));
    // Two rounds at most: register, or revoke the losing holder and register again.
    for _ in 0..2 {
        // Request 0: the stand-in drops the REGISTERED reply; nobody waits for it.
        match realm
            .dealer
            .register(&proxy, 0, policy, procedure, &options)
        {
            Ok(local) => {
                rm.claims
                    .lock()
                    .insert(proxy.id(), (claim.created_ms, claim.node.clone()));
                return Some((proxy, local));
            }
            Err(e) => {
                let Some(existing) = realm.dealer.existing(policy, procedure) else {
                    continue; // gone in between: try again
                };
                let holder = {
                    let claims = rm.claims.lock();
                    existing
                        .callees
                        .iter()
                        .filter_map(|c| {
                            if c.is_mesh_proxy() {
                                claims.get(&c.id()).map(|(t, n)| Claim {
                                    created_ms: *t,
                                    node: n.clone(),
                                })
                            } else {
                                Some(Claim {
                                    created_ms: existing.created_ms,
                                    node: mesh.node_name().to_owned(),
                                })
                            }
                        })
                        .min()
                };
                match holder {
                    Some(h) if h <= claim => {
                        tracing::info!(
                            procedure,
                            peer = %link.node,
                            "registration conflict: keeping '{}' (claim of node '{}'), peer's loses: {}",
                            procedure, h.node, e.message
                        );
                        return None;
                    }
                    _ => {
                        tracing::info!(
                            procedure,
                            peer = %link.node,
                            "registration conflict: node '{}' holds the older claim; revoking this node's",
                            claim.node
                        );
                        for c in &existing.callees {
                            realm
                                .dealer
                                .revoke(c, existing.id, errors::PROCEDURE_ALREADY_EXISTS);
                        }
                    }
                }
            }
        }
    }
    None
}
