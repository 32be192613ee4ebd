//! Umbrella package of the Liminal workspace: it owns the `liminal-server`
//! and `liminal` binaries, the examples and the black-box test suite, and
//! re-exports the crates an embedding application needs.

pub use liminal_broker as broker;
pub use liminal_client as client;
pub use liminal_server as server;
