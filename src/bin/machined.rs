//! machined: stage-1 init and PID 1 of an ironclad node. See [`ironclad::agent`].

fn main() {
    let argv0 = std::env::args().next().unwrap_or_default();
    ironclad::agent::pid1::main(&argv0)
}
