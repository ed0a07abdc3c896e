//! Admission of apid's connections: how many may be open, how many may
//! still be in the TLS handshake, and which one gives way when a new one
//! comes in over a limit. It owns no socket: apid's accept loop asks
//! [`Gate::admit`] for a [`Ticket`] per accepted connection, and the
//! connection's task ends when its [`Evicted`] fires.
//!
//! The policy keeps the admin able to get in while anyone who can reach
//! the port floods it:
//!
//! - **Silent connections** (accepted, no ClientHello yet) are bounded by
//!   [`Limits::max_silent`]. A new connection is always taken in; over the
//!   bound, the oldest silent one is dropped. Refusing the newcomer instead
//!   would let a flood of idle connections hold every slot and keep the
//!   admin out for a whole handshake timeout, again and again; dropping the
//!   oldest costs an attacker a reconnect and lets a real client, whose
//!   ClientHello follows its connect at once, through. A silent one is
//!   looked at (a peek on its socket) before it is dropped: one whose
//!   ClientHello has arrived, though its task has not read it yet (a busy
//!   node), moves on to the handshakes instead, and so does a connection
//!   whose ClientHello is already waiting when it is accepted (a real
//!   client queued behind a flood).
//! - **Handshakes** (ClientHello read, not yet authenticated) are bounded by
//!   [`Limits::max_handshakes`]; over it, the oldest handshake is dropped.
//!   Only a ClientHello can push a handshake out, never an idle connection,
//!   so a flood of idle connections cannot touch an admin's handshake, and
//!   pushing one out costs an attacker a full ClientHello per connection.
//! - **Authenticated connections** are bounded by [`Limits::max_connections`].
//!   Over it, the oldest idle one (no request in flight) is closed (an HTTP
//!   client reconnects); with none idle, an admin's connection closes the
//!   oldest reader's; otherwise the newcomer is closed.
//!
//! File descriptors follow: apid holds at most the sum of both bounds.

use std::collections::BTreeMap;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::oneshot;

/// apid's bounds and timeouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Connections accepted that have not sent their ClientHello.
    pub max_silent: usize,
    /// Connections between their ClientHello and the end of the handshake.
    pub max_handshakes: usize,
    /// Authenticated connections (through the handshake).
    pub max_connections: usize,
    /// How long a client may take from the TCP accept to the end of the
    /// TLS handshake.
    pub handshake_timeout: Duration,
    /// How long an authenticated connection may wait for its next request's
    /// headers (after the handshake, or after the previous response), and
    /// so how long an idle keep-alive connection stays open.
    pub idle_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_silent: 512,
            max_handshakes: 128,
            max_connections: 256,
            handshake_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(15),
        }
    }
}

/// Where a connection is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Accepted; no ClientHello yet.
    Opened,
    /// Its ClientHello was read; the handshake goes on.
    Handshaking,
    /// Authenticated; serving HTTP. `admin` when its certificate says so.
    Serving { admin: bool },
}

impl Stage {
    fn in_handshake(self) -> bool {
        !matches!(self, Stage::Serving { .. })
    }
}

/// What the policy needs to know of one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot {
    pub stage: Stage,
    /// Requests in flight (until their response body is gone).
    pub busy: usize,
}

/// The connection (by admission order) to drop so that one more can be in
/// `stage` ([`Stage::Opened`] or [`Stage::Handshaking`]) when `max` already
/// are: the oldest of that stage.
pub fn handshake_victim(conns: &BTreeMap<u64, Slot>, stage: Stage, max: usize) -> Option<u64> {
    let mut same = conns.iter().filter(|(_, s)| s.stage == stage);
    if same.clone().count() < max {
        return None;
    }
    same.next().map(|(id, _)| *id)
}

/// Whether one more authenticated connection may be served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Room {
    /// Under the bound.
    Free,
    /// This connection must close for it.
    Evict(u64),
    /// The newcomer must close.
    Full,
}

/// Whether one more authenticated connection (`admin` or not) may be
/// served when `max` are ([`Room`]).
pub fn serving_victim(conns: &BTreeMap<u64, Slot>, max: usize, admin: bool) -> Room {
    let serving = conns.values().filter(|s| !s.stage.in_handshake()).count();
    if serving < max {
        return Room::Free;
    }
    let idle = conns
        .iter()
        .find(|(_, s)| !s.stage.in_handshake() && s.busy == 0);
    let reader = conns
        .iter()
        .find(|(_, s)| s.stage == Stage::Serving { admin: false });
    match (idle, reader) {
        (Some((id, _)), _) => Room::Evict(*id),
        (None, Some((id, _))) if admin => Room::Evict(*id),
        _ => Room::Full,
    }
}

struct Entry {
    slot: Slot,
    /// Dropped to evict the connection.
    _evict: oneshot::Sender<()>,
    /// While silent: the connection's socket, to see whether its
    /// ClientHello has arrived before its task has read it. Cleared (under
    /// the lock) before the socket is closed ([`Watched`]'s drop), so a
    /// descriptor here is always open.
    peek: Option<RawFd>,
}

/// Whether bytes wait on `fd` (without reading them).
fn has_data(fd: BorrowedFd<'_>) -> bool {
    use rustix::net::RecvFlags;
    let mut b = [0u8; 1];
    matches!(
        rustix::net::recv(fd, &mut b, RecvFlags::PEEK | RecvFlags::DONTWAIT),
        Ok((n, _)) if n > 0
    )
}

#[derive(Default)]
struct Inner {
    next: u64,
    conns: BTreeMap<u64, Entry>,
    evicted: u64,
    refused: u64,
}

impl Inner {
    /// The slots of every connection but `except`.
    fn slots(&self, except: Option<u64>) -> BTreeMap<u64, Slot> {
        self.conns
            .iter()
            .filter(|(id, _)| Some(**id) != except)
            .map(|(id, e)| (*id, e.slot))
            .collect()
    }

    /// Makes room for one more connection in `stage` (not counting
    /// `except`, the one moving there): drops the connection
    /// [`handshake_victim`] picks. A silent one whose ClientHello has
    /// arrived meanwhile (its task has not run yet) is not dropped but
    /// moves on to [`Stage::Handshaking`], and the next oldest is looked at.
    fn make_room(&mut self, stage: Stage, limits: &Limits, except: Option<u64>) {
        let max = match stage {
            Stage::Opened => limits.max_silent,
            _ => limits.max_handshakes,
        };
        // Each turn either drops one or moves one out of `stage`.
        for _ in 0..=self.conns.len() {
            let Some(victim) = handshake_victim(&self.slots(except), stage, max) else {
                return;
            };
            let spoke = stage == Stage::Opened
                && self
                    .conns
                    .get(&victim)
                    .and_then(|e| e.peek)
                    // SAFETY: an entry's descriptor is open while it is
                    // there (see `Entry::peek`), and the lock is held.
                    .is_some_and(|fd| has_data(unsafe { BorrowedFd::borrow_raw(fd) }));
            if spoke {
                self.make_room(Stage::Handshaking, limits, Some(victim));
                if let Some(e) = self.conns.get_mut(&victim) {
                    e.slot.stage = Stage::Handshaking;
                    e.peek = None;
                }
                continue;
            }
            self.conns.remove(&victim);
            self.evicted += 1;
            return;
        }
    }
}

/// A snapshot of the gate's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GateStats {
    /// Connections accepted, no ClientHello yet.
    pub opened: usize,
    /// Connections between their ClientHello and the end of the handshake.
    pub handshaking: usize,
    /// Authenticated connections.
    pub serving: usize,
    /// Connections closed to make room, since the start.
    pub evicted: u64,
    /// Authenticated connections closed at once for want of room.
    pub refused: u64,
}

/// The admission state shared by apid's accept loops and connections.
pub struct Gate {
    limits: Limits,
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for Gate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gate")
            .field("limits", &self.limits)
            .field("stats", &self.stats())
            .finish()
    }
}

/// Fires (resolves) when the gate drops the connection to make room.
pub struct Evicted(oneshot::Receiver<()>);

impl Evicted {
    pub async fn wait(&mut self) {
        // The sender is only ever dropped, never used.
        let _ = (&mut self.0).await;
    }
}

/// One admitted connection; leaving the gate when dropped.
pub struct Ticket {
    gate: Arc<Gate>,
    id: u64,
}

/// A request in flight on a connection, until dropped.
pub struct Busy {
    gate: Arc<Gate>,
    id: u64,
}

impl Gate {
    pub fn new(limits: Limits) -> Arc<Gate> {
        Arc::new(Gate {
            limits,
            inner: Mutex::new(Inner::default()),
        })
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Nothing here can panic while holding the lock; a poisoned lock
        // still holds consistent counters.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes a freshly accepted connection in, dropping another one when
    /// its stage is full ([`Inner::make_room`]); the socket comes back
    /// [`Watched`]. When its first bytes (the ClientHello) are already
    /// waiting, as they are for a real client whose connection waited in the
    /// accept queue behind a flood, it starts as [`Stage::Handshaking`].
    pub fn admit<S: AsFd>(self: &Arc<Self>, socket: S) -> (Watched<S>, Evicted) {
        let spoke = has_data(socket.as_fd());
        let stage = if spoke {
            Stage::Handshaking
        } else {
            Stage::Opened
        };
        let peek = (!spoke).then(|| socket.as_fd().as_raw_fd());
        let mut g = self.lock();
        g.make_room(stage, &self.limits, None);
        let id = g.next;
        g.next += 1;
        let (tx, rx) = oneshot::channel();
        g.conns.insert(
            id,
            Entry {
                slot: Slot { stage, busy: 0 },
                _evict: tx,
                peek,
            },
        );
        drop(g);
        let ticket = Arc::new(Ticket {
            gate: self.clone(),
            id,
        });
        (Watched { ticket, socket }, Evicted(rx))
    }

    /// Drops the oldest silent connection, or else the oldest handshake;
    /// true if one was dropped (to free a descriptor when accept(2) says
    /// there is none).
    pub fn evict_one_handshake(&self) -> bool {
        let mut g = self.lock();
        let slots = g.slots(None);
        let victim = handshake_victim(&slots, Stage::Opened, 0)
            .or_else(|| handshake_victim(&slots, Stage::Handshaking, 0));
        match victim {
            Some(v) => {
                g.conns.remove(&v);
                g.evicted += 1;
                true
            }
            None => false,
        }
    }

    pub fn stats(&self) -> GateStats {
        let g = self.lock();
        let count =
            |f: &dyn Fn(Stage) -> bool| g.conns.values().filter(|e| f(e.slot.stage)).count();
        GateStats {
            opened: count(&|s| s == Stage::Opened),
            handshaking: count(&|s| s == Stage::Handshaking),
            serving: count(&|s| !s.in_handshake()),
            evicted: g.evicted,
            refused: g.refused,
        }
    }
}

impl Ticket {
    /// Forgets the socket (it is about to be closed).
    fn unwatch(&self) {
        if let Some(e) = self.gate.lock().conns.get_mut(&self.id) {
            e.peek = None;
        }
    }

    /// The connection's ClientHello was read.
    pub fn hello(&self) {
        let mut g = self.gate.lock();
        let opened = g
            .conns
            .get(&self.id)
            .is_some_and(|e| e.slot.stage == Stage::Opened);
        if !opened {
            return;
        }
        g.make_room(Stage::Handshaking, &self.gate.limits, Some(self.id));
        if let Some(e) = g.conns.get_mut(&self.id) {
            e.slot.stage = Stage::Handshaking;
            e.peek = None;
        }
    }

    /// The handshake is done: serve the connection if the bound allows
    /// ([`serving_victim`]). False when it must be closed (or was evicted
    /// meanwhile).
    pub fn serve(&self, admin: bool) -> bool {
        let mut g = self.gate.lock();
        if !g.conns.contains_key(&self.id) {
            return false;
        }
        match serving_victim(
            &g.slots(Some(self.id)),
            self.gate.limits.max_connections,
            admin,
        ) {
            room @ (Room::Free | Room::Evict(_)) => {
                if let Room::Evict(v) = room {
                    g.conns.remove(&v);
                    g.evicted += 1;
                }
                if let Some(e) = g.conns.get_mut(&self.id) {
                    e.slot.stage = Stage::Serving { admin };
                }
                true
            }
            Room::Full => {
                g.refused += 1;
                false
            }
        }
    }

    /// Marks a request in flight until the returned guard is dropped.
    pub fn busy(&self) -> Busy {
        let mut g = self.gate.lock();
        if let Some(e) = g.conns.get_mut(&self.id) {
            e.slot.busy += 1;
        }
        Busy {
            gate: self.gate.clone(),
            id: self.id,
        }
    }
}

/// An admitted connection's socket: reads and writes go to it; dropping it
/// takes it out of the gate's sight before it is closed.
pub struct Watched<S: AsFd> {
    ticket: Arc<Ticket>,
    socket: S,
}

impl<S: AsFd> Watched<S> {
    /// The connection's place in the gate.
    pub fn ticket(&self) -> Arc<Ticket> {
        self.ticket.clone()
    }

    pub fn get_ref(&self) -> &S {
        &self.socket
    }
}

impl<S: AsFd> Drop for Watched<S> {
    fn drop(&mut self) {
        // Before `socket` (a field) is closed.
        self.ticket.unwatch();
    }
}

impl<S: AsFd + AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.socket).poll_read(cx, buf)
    }
}

impl<S: AsFd + AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.socket).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.socket).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.socket.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.socket).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.socket).poll_shutdown(cx)
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.gate.lock().conns.remove(&self.id);
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        let mut g = self.gate.lock();
        if let Some(e) = g.conns.get_mut(&self.id) {
            e.slot.busy = e.slot.busy.saturating_sub(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slots(list: &[(u64, Stage, usize)]) -> BTreeMap<u64, Slot> {
        list.iter()
            .map(|(id, stage, busy)| {
                (
                    *id,
                    Slot {
                        stage: *stage,
                        busy: *busy,
                    },
                )
            })
            .collect()
    }

    const O: Stage = Stage::Opened;
    const H: Stage = Stage::Handshaking;
    const R: Stage = Stage::Serving { admin: false };
    const A: Stage = Stage::Serving { admin: true };

    #[test]
    fn each_stage_drops_its_own_oldest() {
        let conns = slots(&[(1, H, 0), (2, O, 0), (3, R, 0), (4, O, 0), (5, H, 0)]);
        // Under the bound: nobody.
        assert_eq!(handshake_victim(&conns, O, 3), None);
        assert_eq!(handshake_victim(&conns, H, 3), None);
        // At it: the oldest of the same stage, never another stage's.
        assert_eq!(handshake_victim(&conns, O, 2), Some(2));
        assert_eq!(handshake_victim(&conns, H, 2), Some(1));
        assert_eq!(
            handshake_victim(&slots(&[(1, R, 0), (2, A, 0)]), H, 0),
            None
        );
    }

    #[test]
    fn serving_makes_room_from_idle_then_readers() {
        assert_eq!(serving_victim(&slots(&[(1, R, 1)]), 2, false), Room::Free);
        // Handshakes do not count.
        assert_eq!(
            serving_victim(&slots(&[(1, R, 1), (2, O, 0), (3, H, 0)]), 2, false),
            Room::Free
        );
        // The oldest idle one, admin or reader.
        assert_eq!(
            serving_victim(&slots(&[(1, R, 2), (2, A, 0), (3, R, 0)]), 3, false),
            Room::Evict(2)
        );
        // All busy: an admin takes a reader's place, a reader gets none.
        let busy = slots(&[(1, A, 1), (2, R, 1), (3, R, 3)]);
        assert_eq!(serving_victim(&busy, 3, true), Room::Evict(2));
        assert_eq!(serving_victim(&busy, 3, false), Room::Full);
        // All busy admins: even an admin waits.
        assert_eq!(
            serving_victim(&slots(&[(1, A, 1), (2, A, 1)]), 2, true),
            Room::Full
        );
    }

    /// A connected pair on loopback: (client, the server's side).
    fn pair(l: &std::net::TcpListener) -> (std::net::TcpStream, std::net::TcpStream) {
        let c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (s, _) = l.accept().unwrap();
        (c, s)
    }

    /// Waits until the server's side of a pair can read what was written.
    fn wait_readable(s: &std::net::TcpStream) {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !has_data(s.as_fd()) {
            assert!(std::time::Instant::now() < deadline, "no data");
            std::thread::yield_now();
        }
    }

    #[tokio::test]
    async fn tickets_are_evicted_counted_and_released() {
        use std::io::Write;
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let gate = Gate::new(Limits {
            max_silent: 1,
            max_handshakes: 2,
            max_connections: 1,
            ..Limits::default()
        });
        let stats = |opened, handshaking, serving, evicted, refused| GateStats {
            opened,
            handshaking,
            serving,
            evicted,
            refused,
        };
        let (_c1, s1) = pair(&l);
        let (w1, mut e1) = gate.admit(s1);
        let t1 = w1.ticket();
        // A second silent one pushes the first out.
        let (mut c2, s2) = pair(&l);
        let (w2, _e2) = gate.admit(s2);
        let t2 = w2.ticket();
        tokio::time::timeout(Duration::from_secs(5), e1.wait())
            .await
            .expect("t1 evicted");
        assert!(!t1.serve(true), "an evicted ticket is not served");
        drop((t1, w1));
        // t2 speaks, but its task has not read it: a third silent one
        // moves it on to the handshakes instead of dropping it.
        c2.write_all(b"hello").unwrap();
        wait_readable(w2.get_ref());
        let (_c3, s3) = pair(&l);
        let (w3, _e3) = gate.admit(s3);
        let t3 = w3.ticket();
        assert_eq!(gate.stats(), stats(1, 1, 0, 1, 0));
        // One whose first bytes are there when it is accepted starts there.
        let (mut c4, s4) = pair(&l);
        c4.write_all(b"hello").unwrap();
        wait_readable(&s4);
        let (w4, _e4) = gate.admit(s4);
        let t4 = w4.ticket();
        assert_eq!(gate.stats(), stats(1, 2, 0, 1, 0));
        // A third ClientHello: the oldest handshake (t2) goes.
        t3.hello();
        assert_eq!(gate.stats(), stats(0, 2, 0, 2, 0));
        assert!(!t2.serve(true));
        drop((t2, w2));
        // t4 through: served; busy, so a reader t3 cannot take its place.
        assert!(t4.serve(true));
        let busy = t4.busy();
        assert!(!t3.serve(false));
        assert_eq!(gate.stats().refused, 1);
        drop((t3, w3));
        // Idle again: the next one takes its place.
        drop(busy);
        let (_c5, s5) = pair(&l);
        let (w5, _e5) = gate.admit(s5);
        let t5 = w5.ticket();
        t5.hello();
        assert!(t5.serve(false));
        assert!(!gate.evict_one_handshake());
        drop((t4, w4, t5, w5));
        assert_eq!(gate.stats(), stats(0, 0, 0, 3, 1));
    }
}
