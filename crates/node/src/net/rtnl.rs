//! rtnetlink (`NETLINK_ROUTE`) for IPv4 policy routing rules: encoding and
//! decoding rule messages, and [`Netlink`], a socket that adds, deletes and
//! lists them (the [`RuleTable`] of a real node).

use super::{Rule, RuleAction, RuleTable};
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

// linux/rtnetlink.h, linux/netlink.h, linux/fib_rules.h
pub const RTM_NEWRULE: u16 = 32;
pub const RTM_DELRULE: u16 = 33;
pub const RTM_GETRULE: u16 = 34;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_MULTI: u16 = 0x2;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_DUMP: u16 = 0x300;
const NLM_F_EXCL: u16 = 0x200;
const NLM_F_CREATE: u16 = 0x400;
const FRA_DST: u16 = 1;
const FRA_SRC: u16 = 2;
const FRA_IIFNAME: u16 = 3;
const FRA_GOTO: u16 = 4;
const FRA_PRIORITY: u16 = 6;
const FRA_TABLE: u16 = 15;
const FRA_IP_PROTO: u16 = 22;
const FRA_SPORT_RANGE: u16 = 23;
const FRA_DPORT_RANGE: u16 = 24;
const FR_ACT_TO_TBL: u8 = 1;
const FR_ACT_GOTO: u8 = 2;
const FR_ACT_PROHIBIT: u8 = 8;
const NLMSG_HDRLEN: usize = 16;
const FIB_RULE_HDRLEN: usize = 12;

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

fn attr(buf: &mut Vec<u8>, kind: u16, payload: &[u8]) {
    let len = 4 + payload.len();
    buf.extend_from_slice(&(len as u16).to_ne_bytes());
    buf.extend_from_slice(&kind.to_ne_bytes());
    buf.extend_from_slice(payload);
    buf.resize(align4(buf.len()), 0);
}

fn range(r: (u16, u16)) -> [u8; 4] {
    let mut b = [0u8; 4];
    b[..2].copy_from_slice(&r.0.to_ne_bytes());
    b[2..].copy_from_slice(&r.1.to_ne_bytes());
    b
}

/// One netlink request of `kind` (RTM_NEWRULE, RTM_DELRULE) for `rule`.
pub fn encode(kind: u16, seq: u32, rule: &Rule) -> Vec<u8> {
    let flags = match kind {
        RTM_NEWRULE => NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
        _ => NLM_F_REQUEST | NLM_F_ACK,
    };
    let (action, table) = match rule.action {
        RuleAction::Lookup(t) => (FR_ACT_TO_TBL, t),
        RuleAction::Goto(_) => (FR_ACT_GOTO, 0),
        RuleAction::Prohibit => (FR_ACT_PROHIBIT, 0),
    };
    let mut b = vec![0u8; NLMSG_HDRLEN];
    // struct fib_rule_hdr
    b.push(libc::AF_INET as u8);
    b.push(if rule.to.is_some() { 32 } else { 0 });
    b.push(if rule.from.is_some() { 32 } else { 0 });
    b.push(0); // tos
    b.push(if table < 256 { table as u8 } else { 0 });
    b.extend_from_slice(&[0, 0, action]);
    b.extend_from_slice(&0u32.to_ne_bytes()); // flags
    attr(&mut b, FRA_PRIORITY, &rule.priority.to_ne_bytes());
    if table != 0 {
        attr(&mut b, FRA_TABLE, &table.to_ne_bytes());
    }
    if let RuleAction::Goto(target) = rule.action {
        attr(&mut b, FRA_GOTO, &target.to_ne_bytes());
    }
    if let Some(a) = rule.to {
        attr(&mut b, FRA_DST, &a.octets());
    }
    if let Some(a) = rule.from {
        attr(&mut b, FRA_SRC, &a.octets());
    }
    if let Some(i) = &rule.iif {
        let mut name = i.as_bytes().to_vec();
        name.push(0);
        attr(&mut b, FRA_IIFNAME, &name);
    }
    if let Some(p) = rule.ip_proto {
        attr(&mut b, FRA_IP_PROTO, &[p]);
    }
    if let Some(r) = rule.sport {
        attr(&mut b, FRA_SPORT_RANGE, &range(r));
    }
    if let Some(r) = rule.dport {
        attr(&mut b, FRA_DPORT_RANGE, &range(r));
    }
    let len = b.len() as u32;
    b[0..4].copy_from_slice(&len.to_ne_bytes());
    b[4..6].copy_from_slice(&kind.to_ne_bytes());
    b[6..8].copy_from_slice(&flags.to_ne_bytes());
    b[8..12].copy_from_slice(&seq.to_ne_bytes());
    b
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// Decodes an IPv4 rule message's body (after the netlink header), as
/// a dump returns it; `None` for what is not one of the rules
/// machined writes (other actions, masks other than /32).
pub fn decode(body: &[u8]) -> Option<Rule> {
    let hdr = body.get(..FIB_RULE_HDRLEN)?;
    let (dst_len, src_len, table8, action) = (hdr[1], hdr[2], hdr[4], hdr[7]);
    let mut rule = Rule::new(0, RuleAction::Prohibit);
    let mut table = u32::from(table8);
    let mut goto = None;
    let mut at = FIB_RULE_HDRLEN;
    while at + 4 <= body.len() {
        let len = usize::from(u16_at(body, at)?);
        let kind = u16_at(body, at + 2)?;
        if len < 4 || at + len > body.len() {
            break;
        }
        let p = &body[at + 4..at + len];
        let ip = || p.get(..4).map(|o| Ipv4Addr::new(o[0], o[1], o[2], o[3]));
        let rng = || Some((u16_at(p, 0)?, u16_at(p, 2)?));
        match kind {
            FRA_PRIORITY => rule.priority = u32_at(p, 0)?,
            FRA_TABLE => table = u32_at(p, 0)?,
            FRA_GOTO => goto = u32_at(p, 0),
            FRA_DST => rule.to = ip(),
            FRA_SRC => rule.from = ip(),
            FRA_IIFNAME => {
                let name = p.split(|c| *c == 0).next().unwrap_or_default();
                rule.iif = Some(String::from_utf8_lossy(name).into_owned());
            }
            FRA_IP_PROTO => rule.ip_proto = p.first().copied(),
            FRA_SPORT_RANGE => rule.sport = rng(),
            FRA_DPORT_RANGE => rule.dport = rng(),
            _ => {}
        }
        at += align4(len);
    }
    if (rule.to.is_some() && dst_len != 32) || (rule.from.is_some() && src_len != 32) {
        return None;
    }
    rule.action = match action {
        FR_ACT_TO_TBL => RuleAction::Lookup(table),
        FR_ACT_GOTO => RuleAction::Goto(goto?),
        FR_ACT_PROHIBIT => RuleAction::Prohibit,
        _ => return None,
    };
    Some(rule)
}

/// A `NETLINK_ROUTE` socket in the calling thread's network namespace.
pub struct Netlink {
    fd: OwnedFd,
    seq: u32,
}

impl Netlink {
    pub fn open() -> io::Result<Netlink> {
        // SAFETY: plain socket(2); the result is checked.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_ROUTE,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Netlink { fd, seq: 0 })
    }

    fn send(&mut self, msg: &[u8]) -> io::Result<()> {
        // SAFETY: sockaddr_nl is plain data; all-zero is the kernel's address.
        let mut to: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        to.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        // SAFETY: msg and to are valid for the call.
        let n = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                msg.as_ptr().cast(),
                msg.len(),
                0,
                (&raw const to).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }

    /// The messages of one datagram: (type, flags, body).
    fn recv(&mut self) -> io::Result<Vec<(u16, u16, Vec<u8>)>> {
        let mut buf = vec![0u8; 64 * 1024];
        // SAFETY: buf is valid for its length.
        let n = unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let buf = &buf[..n as usize];
        let mut out = Vec::new();
        let mut at = 0;
        while at + NLMSG_HDRLEN <= buf.len() {
            let bad = || io::Error::new(io::ErrorKind::InvalidData, "short netlink message");
            let len = u32_at(buf, at).ok_or_else(bad)? as usize;
            let kind = u16_at(buf, at + 4).ok_or_else(bad)?;
            let flags = u16_at(buf, at + 6).ok_or_else(bad)?;
            if len < NLMSG_HDRLEN || at + len > buf.len() {
                return Err(bad());
            }
            out.push((kind, flags, buf[at + NLMSG_HDRLEN..at + len].to_vec()));
            at += align4(len);
        }
        Ok(out)
    }

    /// Sends one request and waits for its acknowledgement.
    fn request(&mut self, kind: u16, rule: &Rule) -> io::Result<()> {
        self.seq += 1;
        self.send(&encode(kind, self.seq, rule))?;
        loop {
            for (t, _, body) in self.recv()? {
                if t == NLMSG_ERROR {
                    let err = body
                        .get(..4)
                        .map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
                        .unwrap_or(-libc::EIO);
                    return if err == 0 {
                        Ok(())
                    } else {
                        Err(io::Error::from_raw_os_error(-err))
                    };
                }
            }
        }
    }

    /// Every IPv4 rule the kernel has, in priority order (what
    /// [`decode`] understands).
    pub fn rules(&mut self) -> io::Result<Vec<Rule>> {
        self.seq += 1;
        let mut msg = vec![0u8; NLMSG_HDRLEN];
        msg.push(libc::AF_INET as u8);
        msg.resize(NLMSG_HDRLEN + FIB_RULE_HDRLEN, 0);
        let len = msg.len() as u32;
        msg[0..4].copy_from_slice(&len.to_ne_bytes());
        msg[4..6].copy_from_slice(&RTM_GETRULE.to_ne_bytes());
        msg[6..8].copy_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
        msg[8..12].copy_from_slice(&self.seq.to_ne_bytes());
        self.send(&msg)?;
        let mut rules = Vec::new();
        loop {
            for (t, flags, body) in self.recv()? {
                match t {
                    NLMSG_DONE => return Ok(rules),
                    NLMSG_ERROR => {
                        let err = body
                            .get(..4)
                            .map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
                            .unwrap_or(-libc::EIO);
                        return Err(io::Error::from_raw_os_error(-err));
                    }
                    _ => rules.extend(decode(&body)),
                }
                if flags & NLM_F_MULTI == 0 {
                    return Ok(rules);
                }
            }
        }
    }
}

impl RuleTable for Netlink {
    fn add(&mut self, rule: &Rule) -> io::Result<()> {
        match self.request(RTM_NEWRULE, rule) {
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => Ok(()),
            r => r,
        }
    }

    fn delete(&mut self, rule: &Rule) -> io::Result<()> {
        match self.request(RTM_DELRULE, rule) {
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(()),
            r => r,
        }
    }
}
