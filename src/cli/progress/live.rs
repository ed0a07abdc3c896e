//! The live view of `create` and `start` on a terminal: one line for the
//! cluster's stage (image, secrets, supervisor, boot, etcd, ready) with what
//! it does now and the time so far, and one line per node with its boot
//! phase, its etcd step and its time, all redrawn in place. A stage's last
//! step and every other line (notes, warnings, `tracing` events) are printed
//! above the view and stay. When the view ends, ready or not, its lines stay
//! printed in their last state; the cursor is never hidden, so a process
//! ended by a signal leaves the terminal as it was. After Ctrl-C (caught by
//! `create` and `start`, [`ironclad_host::interrupt`]) nothing is redrawn:
//! the terminal has echoed `^C` below the view, so a redraw in place would
//! land one line off; the last frame stays and the cursor goes to a new line.
//!
//! Also the image build's view (`ironclad image build` on a terminal): its
//! steps as lines, and a spinner below them carrying mmdebstrap's heartbeat.
//!
//! What it draws comes from [`ironclad_host::cluster::lifecycle::Event`]s;
//! without a terminal the same events print their plain lines instead
//! ([`super::Lines`]).

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};
use ironclad_host::cluster::lifecycle::{self, Event, NodeStep, Stage};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

/// How often the spinners and times are redrawn.
const TICK: Duration = Duration::from_millis(200);

/// The view taking stderr now, if any: plain lines and `tracing` events are
/// printed above it ([`above`]).
static ACTIVE: Mutex<Option<MultiProgress>> = Mutex::new(None);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Runs `print` with the active view (if any) lifted out of the way, so
/// that what it writes to stderr lands above the view.
pub(super) fn above<R>(print: impl FnOnce() -> R) -> R {
    let active = lock(&ACTIVE).clone();
    match active {
        Some(multi) => multi.suspend(print),
        None => print(),
    }
}

/// The template key `{secs}`: a bar's time so far, `12.3s`.
fn secs(state: &ProgressState, w: &mut dyn std::fmt::Write) {
    let _ = write!(w, "{:.1}s", state.elapsed().as_secs_f64());
}

fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template)
        .unwrap_or_else(|_| ProgressStyle::default_spinner())
        .with_key("secs", secs)
        .tick_strings(&["-", "\\", "|", "/", "*"])
}

/// The stage line while it runs, when it is done, and when the view ended
/// before `ready`.
fn stage_running() -> ProgressStyle {
    style("{spinner} {prefix:<10} {secs:>7}  {wide_msg}")
}
fn stage_done() -> ProgressStyle {
    style("= {prefix:<10} {secs:>7}  {wide_msg}")
}
fn stage_failed() -> ProgressStyle {
    style("x {prefix:<10} {secs:>7}  {wide_msg}")
}
/// A node's line; `{prefix}` is its name, padded to the longest.
fn node_running() -> ProgressStyle {
    style("  {spinner} {prefix} {secs:>7}  {wide_msg}")
}
fn node_settled() -> ProgressStyle {
    style("  = {prefix} {wide_msg}")
}

/// What one node's line says.
#[derive(Debug, Clone, Default, PartialEq)]
pub(super) struct NodeRow {
    pub name: String,
    /// The last boot phase (`booting` until machined prints one).
    pub phase: String,
    /// The last etcd step on this node.
    pub etcd: Option<String>,
    /// Seconds from the wait's start to ready, once ready.
    pub ready: Option<f64>,
}

impl NodeRow {
    /// The line's text after the name and time.
    pub(super) fn message(&self) -> String {
        let mut s = match self.ready {
            Some(secs) => format!("ready after {secs:.1} s"),
            None => self.phase.clone(),
        };
        if let Some(e) = &self.etcd {
            let _ = write!(s, " | {e}");
        }
        s
    }
}

/// The view's model: the stage, its last step, and the node rows. Kept apart
/// from the drawing so that what each line says is plain data.
#[derive(Debug, Default)]
pub(super) struct Table {
    pub stage: Option<Stage>,
    /// The stage's line or its last step.
    pub step: Option<String>,
    pub nodes: Vec<NodeRow>,
}

impl Table {
    /// Applies `event`; returns the line to print above the view when a
    /// stage ended (its last step), if any.
    pub(super) fn apply(&mut self, event: &Event<'_>) -> Option<String> {
        match *event {
            Event::Stage(stage, line) => {
                let done = self.step.take();
                self.stage = Some(stage);
                self.step = line.map(str::to_string);
                done
            }
            Event::Step(line) => {
                self.step = Some(line.to_string());
                None
            }
            Event::Node(name, step) => {
                let row = self.row(name);
                match step {
                    NodeStep::Booting => {
                        row.phase = "booting".into();
                        row.ready = None;
                    }
                    NodeStep::Phase(p) => row.phase = p.to_string(),
                    NodeStep::Etcd(e) => row.etcd = Some(e.to_string()),
                    NodeStep::Ready { seconds } => row.ready = Some(seconds),
                }
                None
            }
        }
    }

    fn row(&mut self, name: &str) -> &mut NodeRow {
        let i = match self.nodes.iter().position(|r| r.name == name) {
            Some(i) => i,
            None => {
                self.nodes.push(NodeRow {
                    name: name.to_string(),
                    phase: "booting".into(),
                    ..NodeRow::default()
                });
                self.nodes.len() - 1
            }
        };
        &mut self.nodes[i]
    }

    /// The stage line's text after the stage's name and time.
    pub(super) fn stage_message(&self) -> String {
        let ready = self.nodes.iter().filter(|n| n.ready.is_some()).count();
        let count = format!("{ready}/{} nodes ready", self.nodes.len());
        match (self.stage, &self.step) {
            (Some(Stage::Boot | Stage::Ready), _) => count,
            (_, Some(step)) => step.clone(),
            (Some(Stage::Supervisor), None) => "starting".into(),
            (Some(Stage::Etcd), None) => format!("{count}; etcd converging"),
            _ => String::new(),
        }
    }

    /// The whole view as text, one line per row without the times: what a
    /// reader of the terminal sees.
    #[cfg(test)]
    pub(super) fn render(&self) -> String {
        let width = self.nodes.iter().map(|n| n.name.len()).max().unwrap_or(0);
        let stage = self.stage.map(|s| s.to_string()).unwrap_or_default();
        let mut out = format!("{stage:<10} {}", self.stage_message());
        for n in &self.nodes {
            let _ = write!(out, "\n  {:<width$} {}", n.name, n.message());
        }
        out
    }
}

/// The table and the drawn node lines, in its order.
type Shared = Arc<Mutex<(Table, Vec<ProgressBar>)>>;

/// The drawn view of `create` and `start`.
pub struct Live {
    multi: MultiProgress,
    stage_bar: ProgressBar,
    state: Shared,
    /// Ends the ticker.
    stop: Arc<AtomicBool>,
    ticker: Option<std::thread::JoinHandle<()>>,
}

impl Live {
    /// A view drawn on stderr; it takes stderr until dropped.
    pub fn stderr() -> Live {
        Live::on(ProgressDrawTarget::stderr())
    }

    fn on(target: ProgressDrawTarget) -> Live {
        let multi = MultiProgress::with_draw_target(target);
        let stage_bar = multi.add(ProgressBar::new_spinner().with_style(stage_running()));
        *lock(&ACTIVE) = Some(multi.clone());
        let state: Shared = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let ticker = std::thread::Builder::new()
            .name("progress-ticker".into())
            .spawn({
                let (stage_bar, state, stop) = (stage_bar.clone(), state.clone(), stop.clone());
                move || tick(&stage_bar, &state, &stop)
            })
            .ok();
        Live {
            multi,
            stage_bar,
            state,
            stop,
            ticker,
        }
    }

    /// Prints `line` (stamped) above the view.
    fn print_above(&self, line: &str) {
        let _ = self.multi.println(super::stamped(line));
    }

    /// Brings the drawn lines in line with the table.
    fn draw(&self, table: &Table, bars: &mut Vec<ProgressBar>) {
        let width = table.nodes.iter().map(|n| n.name.len()).max().unwrap_or(0);
        while bars.len() < table.nodes.len() {
            let bar = self
                .multi
                .add(ProgressBar::new_spinner().with_style(node_running()));
            bars.push(bar);
        }
        for (row, bar) in table.nodes.iter().zip(bars.iter()) {
            bar.set_prefix(format!("{:<width$}", row.name));
            if row.ready.is_some() && !bar.is_finished() {
                bar.set_style(node_settled());
            }
            bar.set_message(row.message());
        }
        if let Some(stage) = table.stage {
            self.stage_bar.set_prefix(stage.to_string());
        }
        self.stage_bar.set_message(table.stage_message());
        if table.stage == Some(Stage::Ready) {
            self.settle(bars, stage_done());
        }
    }

    /// Leaves every line drawn in its last state, the stage line in `style`.
    fn settle(&self, bars: &[ProgressBar], style: ProgressStyle) {
        for bar in bars {
            if !bar.is_finished() {
                bar.set_style(node_settled());
                bar.abandon();
            }
        }
        if !self.stage_bar.is_finished() {
            self.stage_bar.set_style(style);
            self.stage_bar.abandon();
        }
    }
}

impl lifecycle::Progress for Live {
    fn line(&self, message: &str) {
        self.print_above(message);
    }

    fn event(&self, event: &Event<'_>) {
        let mut guard = lock(&self.state);
        let (table, bars) = &mut *guard;
        if let Some(done) = table.apply(event) {
            self.print_above(&done);
        }
        self.draw(table, bars);
    }
}

impl Drop for Live {
    /// Ready or not (an error, Ctrl-C), the lines stay as they were last
    /// drawn, and stderr is plain again for what follows.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.ticker.take() {
            let _ = t.join();
        }
        let interrupted = ironclad_host::interrupt::requested();
        if interrupted {
            self.multi.set_draw_target(ProgressDrawTarget::hidden());
        }
        let guard = lock(&self.state);
        let failed = guard.0.stage != Some(Stage::Ready);
        self.settle(&guard.1, if failed { stage_failed() } else { stage_done() });
        *lock(&ACTIVE) = None;
        if interrupted {
            eprintln!();
        }
    }
}

/// Redraws the running lines every [`TICK`] (spinners, times) until `stop`,
/// or until Ctrl-C: then it draws nothing more (see the module doc).
fn tick(stage_bar: &ProgressBar, state: &Shared, stop: &AtomicBool) {
    while !stop.load(Ordering::SeqCst) {
        std::thread::sleep(TICK);
        if ironclad_host::interrupt::requested() {
            return;
        }
        let guard = lock(state);
        for bar in guard.1.iter().filter(|b| !b.is_finished()) {
            bar.tick();
        }
        if !stage_bar.is_finished() {
            stage_bar.tick();
        }
    }
}

/// The drawn view of an image build: its steps printed as lines, a spinner
/// below them with the step running (and mmdebstrap's heartbeat).
pub struct ImageLive {
    multi: MultiProgress,
    spinner: ProgressBar,
}

impl ImageLive {
    pub fn stderr() -> ImageLive {
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
        let spinner = multi.add(
            ProgressBar::new_spinner().with_style(style("{spinner} image {secs:>7}  {wide_msg}")),
        );
        spinner.enable_steady_tick(TICK);
        *lock(&ACTIVE) = Some(multi.clone());
        ImageLive { multi, spinner }
    }
}

impl ironclad_host::image::Progress for ImageLive {
    fn phase(&self, message: &str) {
        let _ = self
            .multi
            .println(super::stamped(&format!("image: {message}")));
        self.spinner.set_message(message.to_string());
    }

    fn heartbeat(&self, message: &str) {
        self.spinner.set_message(message.to_string());
    }
}

impl Drop for ImageLive {
    /// Every step is printed above; the spinner goes.
    fn drop(&mut self) {
        self.spinner.finish_and_clear();
        *lock(&ACTIVE) = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use indicatif::InMemoryTerm;
    use ironclad_host::cluster::lifecycle::Progress as _;

    fn boot(p: &dyn lifecycle::Progress) {
        p.event(&Event::Stage(
            Stage::Image,
            Some("image trixie: building or reusing"),
        ));
        p.event(&Event::Step("image 0123456789ab (cached)"));
        p.event(&Event::Stage(
            Stage::Secrets,
            Some("secrets and machine configs"),
        ));
        p.event(&Event::Step("3 state disks (qcow2)"));
        p.event(&Event::Stage(Stage::Supervisor, None));
        p.line("supervisor running (pid 4242)");
        p.event(&Event::Stage(Stage::Boot, None));
        for n in ["cp-1", "cp-2", "worker-1"] {
            p.event(&Event::Node(n, NodeStep::Booting));
        }
        p.event(&Event::Node("cp-1", NodeStep::Phase("containerd t=4.1")));
        p.event(&Event::Node("cp-1", NodeStep::Etcd("etcd bootstrapped")));
        p.event(&Event::Node("cp-2", NodeStep::Phase("apid t=3.9")));
        p.event(&Event::Node("worker-1", NodeStep::Ready { seconds: 12.04 }));
    }

    #[test]
    fn the_table_says_per_node_what_it_does() {
        let mut t = Table::default();
        struct Apply<'a>(Mutex<&'a mut Table>, Mutex<Vec<String>>);
        impl lifecycle::Progress for Apply<'_> {
            fn line(&self, m: &str) {
                lock(&self.1).push(m.to_string());
            }
            fn event(&self, e: &Event<'_>) {
                if let Some(done) = lock(&self.0).apply(e) {
                    lock(&self.1).push(done);
                }
            }
        }
        let above = {
            let a = Apply(Mutex::new(&mut t), Mutex::default());
            boot(&a);
            a.1.into_inner().unwrap()
        };
        assert_eq!(
            above,
            [
                "image 0123456789ab (cached)",
                "3 state disks (qcow2)",
                "supervisor running (pid 4242)"
            ]
        );
        assert_eq!(
            t.render(),
            "boot       1/3 nodes ready\n\
             \x20 cp-1     containerd t=4.1 | etcd bootstrapped\n\
             \x20 cp-2     apid t=3.9\n\
             \x20 worker-1 ready after 12.0 s"
        );
        t.apply(&Event::Stage(Stage::Etcd, None));
        assert_eq!(t.stage_message(), "1/3 nodes ready; etcd converging");
        t.apply(&Event::Step("etcd: 2 voting members, healthy"));
        assert_eq!(t.stage_message(), "etcd: 2 voting members, healthy");
        let done = t.apply(&Event::Stage(Stage::Ready, None));
        assert_eq!(done.as_deref(), Some("etcd: 2 voting members, healthy"));
        // A node booted again (start --node) is not ready any more.
        t.apply(&Event::Node("worker-1", NodeStep::Booting));
        assert_eq!(t.nodes[2].message(), "booting");
    }

    #[test]
    fn the_view_draws_a_line_per_node_and_leaves_them_drawn() {
        let term = InMemoryTerm::new(30, 100);
        let live = Live::on(ProgressDrawTarget::term_like_with_hz(
            Box::new(term.clone()),
            100,
        ));
        boot(&live);
        let screen = term.contents();
        assert!(screen.contains("image 0123456789ab (cached)"), "{screen}");
        assert!(screen.contains("supervisor running (pid 4242)"), "{screen}");
        drop(live);
        let screen = term.contents();
        let lines: Vec<&str> = screen.lines().collect();
        // Above: the stages' last steps and the notes, stamped; below: the
        // stage line (not ready: the view ended early) and one per node.
        assert!(
            lines[0].ends_with("s] image 0123456789ab (cached)"),
            "{screen}"
        );
        assert!(lines[1].ends_with("s] 3 state disks (qcow2)"), "{screen}");
        assert!(
            lines[2].ends_with("s] supervisor running (pid 4242)"),
            "{screen}"
        );
        assert!(lines[3].starts_with("x boot "), "{screen}");
        assert!(lines[3].ends_with("1/3 nodes ready"), "{screen}");
        assert_eq!(
            lines[4].trim_end(),
            "  = cp-1     containerd t=4.1 | etcd bootstrapped",
            "{screen}"
        );
        assert_eq!(lines[5].trim_end(), "  = cp-2     apid t=3.9", "{screen}");
        assert_eq!(
            lines[6].trim_end(),
            "  = worker-1 ready after 12.0 s",
            "{screen}"
        );
        assert_eq!(lines.len(), 7, "{screen}");
    }

    #[test]
    fn a_view_that_reaches_ready_says_so() {
        let term = InMemoryTerm::new(30, 100);
        let live = Live::on(ProgressDrawTarget::term_like_with_hz(
            Box::new(term.clone()),
            100,
        ));
        live.event(&Event::Stage(Stage::Boot, None));
        live.event(&Event::Node("cp-1", NodeStep::Booting));
        live.event(&Event::Node("cp-1", NodeStep::Ready { seconds: 3.0 }));
        live.event(&Event::Stage(Stage::Ready, None));
        drop(live);
        let screen = term.contents();
        let lines: Vec<&str> = screen.lines().collect();
        assert!(lines[0].starts_with("= ready "), "{screen}");
        assert!(lines[0].ends_with("1/1 nodes ready"), "{screen}");
        assert_eq!(
            lines[1].trim_end(),
            "  = cp-1 ready after 3.0 s",
            "{screen}"
        );
    }
}
