//! The embedded container runtime. `cri` holds the CRI-shaped interface the
//! node agent talks to (RuntimeService / ImageService, as upstream's CRI);
//! `images` is the content-addressed image store and registry client;
//! `containers` runs pod sandboxes and containers through `runc`.

pub mod containers;
pub mod cri;
pub mod images;
