//! The integrated build master: workers, builders, schedulers and claimed build requests.
//!
//! Not built yet (its issue comes after the router core); the crate exists so the workspace
//! layout is fixed from the first commit.
