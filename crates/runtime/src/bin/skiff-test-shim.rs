//! The container shim as its own small binary, for the runtime's integration
//! tests (skiff itself runs the shim as `skiff container-shim`).

fn main() {
    runtime::containers::shim_main(std::env::args().skip(1).collect())
}
