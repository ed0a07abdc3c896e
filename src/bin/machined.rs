//! machined: stage-1 init and PID 1 of an ironclad node. See [`ironclad::agent`].

fn main() {
    eprintln!(
        "machined {}: not yet able to boot a node",
        ironclad::VERSION
    );
    std::process::exit(1);
}
