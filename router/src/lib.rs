//! switchyard's WAMP v2 router.
//!
//! Layout, one concern per module:
//! - [`wire`]: values, messages, serializers, batched framing (no I/O);
//! - [`transport`]: TCP listener, WebSocket and RawSocket on one port, HTTP;
//! - [`protocol`]: the per-connection session state machine (HELLO → WELCOME → ... → GOODBYE);
//! - [`admission`]: checks on a client's requests (HELLO sizes, per-session caps, disclosure);
//! - [`router`], [`realm`]: realms, each owning a [`broker::Broker`] and a [`dealer::Dealer`];
//! - [`matcher`]: the exact/prefix/wildcard URI index both of them use;
//! - [`session`], [`outbound`]: what routing code sends to, and the bounded queue behind it;
//! - [`mesh`]: the peer mesh (links to other nodes, interest sync, forwarding);
//! - [`auth`]: Accept/Deny/Challenge authentication (anonymous, ticket, WAMP-CRA, cryptosign)
//!   and role-based authorization;
//! - [`meta`]: the session/subscription/registration meta APIs, served in-process;
//! - [`kill`]: which sessions the meta API's kills reach;
//! - [`cluster`]: what the protocol and the meta API ask of the mesh's other nodes (a trait
//!   the mesh implements);
//! - [`logsafe`]: bounded display of client-provided strings in log lines;
//! - [`metrics`]: counters and the Prometheus `/metrics` endpoint;
//! - [`service`]: in-process clients for router services (the HTTP bridge);
//! - [`shutdown`]: the one shutdown mechanism every task watches;
//! - [`tls`]: TLS configurations from PEM files, and TLS connections for dialers.
//!
//! See ARCHITECTURE.md at the repository root for how a message flows from socket to socket.

pub mod admission;
pub mod auth;
pub mod broker;
pub mod client;
pub mod cluster;
pub mod config;
pub mod context;
pub mod dealer;
pub mod directory;
mod error;
mod id;
pub mod kill;
pub mod logsafe;
pub mod matcher;
pub mod mesh;
pub mod meta;
pub mod metrics;
mod options;
pub mod outbound;
pub mod protocol;
pub mod realm;
pub mod router;
pub mod service;
pub mod session;
pub mod shutdown;
mod timestamp;
pub mod tls;
pub mod transport;
pub mod uri;
pub mod wire;

pub use config::{Limits, RealmConfig, RouterConfig};
pub use error::WampError;
pub use protocol::local::LocalSession;
pub use router::Router;
pub use shutdown::Shutdown;
