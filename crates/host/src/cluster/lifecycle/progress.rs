//! What `create` and `start` report while they work, as typed events: the
//! cluster's stage (image, secrets, supervisor, boot, etcd, ready), a step of
//! that stage, and per node its boot phase, etcd step and readiness. A sink
//! ([`Progress`]) either prints each event's plain line ([`Event::line`], the
//! text CI logs and tests read) or draws a live view from the events (the
//! command line does on a terminal). This module only describes the events;
//! drawing them is the caller's business.

use std::fmt;

/// The stages of `create` and `start`, in the order they run (`start` begins
/// at [`Stage::Supervisor`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Building the node image or finding it in the cache.
    Image,
    /// Secrets, machine configs and state disks in the state dir.
    Secrets,
    /// The engine's process (the QEMU engine's supervisor).
    Supervisor,
    /// The nodes boot until each is ready.
    Boot,
    /// Every node is ready; etcd is converging.
    Etcd,
    /// Done: every node ready, etcd healthy.
    Ready,
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Stage::Image => "image",
            Stage::Secrets => "secrets",
            Stage::Supervisor => "supervisor",
            Stage::Boot => "boot",
            Stage::Etcd => "etcd",
            Stage::Ready => "ready",
        })
    }
}

/// What one node did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum NodeStep<'a> {
    /// Its VM was started.
    Booting,
    /// machined printed this boot phase (`machined: <phase>`, escaped).
    Phase(&'a str),
    /// A step of the etcd converge on this node.
    Etcd(&'a str),
    /// It met every readiness condition, `seconds` after the wait began.
    Ready { seconds: f64 },
}

/// One thing `create` or `start` reports.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Event<'a> {
    /// The cluster entered a stage; `line` says what it does there (a stage
    /// entered silently has none and prints nothing in plain mode).
    Stage(Stage, Option<&'a str>),
    /// A step of the current stage (an image build step, its heartbeat, the
    /// disks made, etcd's result).
    Step(&'a str),
    /// A step of one node.
    Node(&'a str, NodeStep<'a>),
}

impl Event<'_> {
    /// The plain progress line of this event, when it has one: the exact
    /// text printed when stderr is not a terminal.
    pub fn line(&self) -> Option<String> {
        match *self {
            Event::Stage(_, line) => line.map(str::to_string),
            Event::Step(line) => Some(line.to_string()),
            Event::Node(node, step) => Some(match step {
                NodeStep::Booting => format!("{node}: booting"),
                NodeStep::Phase(p) | NodeStep::Etcd(p) => format!("{node}: {p}"),
                NodeStep::Ready { seconds } => format!("{node}: ready after {seconds:.1} s"),
            }),
        }
    }
}

/// Where progress goes (the CLI: stderr, as lines or as a live view).
pub trait Progress {
    /// A line outside the events: a note, a choice made, a warning.
    fn line(&self, message: &str);
    /// An event; by default its plain line.
    fn event(&self, event: &Event<'_>) {
        if let Some(l) = event.line() {
            self.line(&l);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_lines_are_the_ones_ci_logs_read() {
        let l = |e: Event| e.line();
        assert_eq!(
            l(Event::Node("cp-1", NodeStep::Booting)).unwrap(),
            "cp-1: booting"
        );
        assert_eq!(
            l(Event::Node("cp-1", NodeStep::Phase("etcd t=3.2"))).unwrap(),
            "cp-1: etcd t=3.2"
        );
        assert_eq!(
            l(Event::Node("w-1", NodeStep::Etcd("joining"))).unwrap(),
            "w-1: joining"
        );
        assert_eq!(
            l(Event::Node("cp-1", NodeStep::Ready { seconds: 31.24 })).unwrap(),
            "cp-1: ready after 31.2 s"
        );
        assert_eq!(
            l(Event::Step("image: squashfs ...")).unwrap(),
            "image: squashfs ..."
        );
        assert_eq!(
            l(Event::Stage(
                Stage::Secrets,
                Some("secrets and machine configs")
            ))
            .unwrap(),
            "secrets and machine configs"
        );
        assert_eq!(l(Event::Stage(Stage::Boot, None)), None);
    }

    #[test]
    fn the_default_sink_prints_plain_lines_only() {
        struct Rec(std::cell::RefCell<Vec<String>>);
        impl Progress for Rec {
            fn line(&self, m: &str) {
                self.0.borrow_mut().push(m.to_string());
            }
        }
        let r = Rec(Default::default());
        r.event(&Event::Stage(Stage::Supervisor, None));
        r.event(&Event::Node("cp-1", NodeStep::Booting));
        r.line("note");
        assert_eq!(*r.0.borrow(), ["cp-1: booting", "note"]);
    }
}
