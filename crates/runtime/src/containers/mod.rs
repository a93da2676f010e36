//! Pod sandboxes and containers run through `runc`, each container under a
//! small shim process that owns its stdio and reaps it. Filled in by the
//! containers work.
