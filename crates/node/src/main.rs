//! machined: stage-1 init and PID 1 of an ironclad node. See [`ironclad_node`].

fn main() {
    let argv0 = std::env::args().next().unwrap_or_default();
    ironclad_node::pid1::main(&argv0)
}
