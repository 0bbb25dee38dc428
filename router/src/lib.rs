//! switchyard's WAMP v2 router.
//!
//! Layout, one concern per module, lowest layer first (dependencies go one way: a module uses
//! only lower layers; ARCHITECTURE.md, "Layers", and `tests/layers.rs`, which checks it):
//! - [`wire`]: values, messages, serializers, batched framing (no I/O); [`uri`]: URI rules;
//!   [`logsafe`]: bounded display of client-provided strings in log lines; [`shutdown`]: the
//!   one shutdown mechanism every task watches; [`tls`]: TLS configurations and connections;
//!   [`metrics`]: the counters (and [`metrics::endpoint`], the `/metrics` endpoint);
//! - [`matcher`]: the exact/prefix/wildcard URI index the broker and dealer use;
//! - [`session`], [`outbound`]: what routing code sends to, and the bounded queue behind it;
//! - [`broker`], [`dealer`]: pub/sub and RPC within one realm; [`directory`]: what mesh peers
//!   announced, for the meta API; [`auth`]: Accept/Deny/Challenge authentication (anonymous,
//!   ticket, WAMP-CRA, cryptosign, dynamic) and role-based authorization;
//! - [`config`]; [`admission`]: checks on a client's requests (HELLO sizes, per-session caps,
//!   disclosure); [`client`]: a WAMP client; [`kill`]: the meta API's kill orders (data) and
//!   which sessions of a node they reach; [`cluster`]: what the protocol and the meta API ask
//!   of the mesh's other nodes (a trait the mesh implements);
//! - [`realm`]: a broker, a dealer and the joined sessions, with the hooks the mesh and the
//!   meta API plug in through;
//! - [`context`]: what a session needs of the router (realms, limits, auth, counters);
//! - [`protocol`]: the per-connection session state machine (HELLO → WELCOME → ... →
//!   GOODBYE), one handler per message by role, and in-process sessions;
//! - [`service`]: in-process clients for router services (the HTTP bridge, dynamic auth);
//! - [`meta`]: the session/subscription/registration meta APIs, served in-process;
//! - [`router`]: the assembled router (a context with its meta services started);
//! - [`mesh`]: the peer mesh (links to other nodes, interest sync, forwarding);
//! - [`transport`]: TCP listener, WebSocket and RawSocket on one port, HTTP.
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
