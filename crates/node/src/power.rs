//! Shutdown triggers: SIGTERM, SIGINT (Ctrl-Alt-Del once `RB_DISABLE_CAD` is
//! set) and the ACPI power button (QEMU `system_powerdown`), seen as a
//! `KEY_POWER` press on a `/dev/input/event*` device (needs the `button` and
//! `evdev` modules). Also the final sequence: kill what is left, sync, unmount,
//! reboot(2).

use super::sys::{PowerAction, Sys};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

const EV_KEY: u16 = 1;
const KEY_POWER: u16 = 116;
/// Size of `struct input_event` on 64-bit Linux (timeval + type + code + value).
pub const INPUT_EVENT_SIZE: usize = 24;

/// Whether a raw `input_event` is a KEY_POWER press.
pub fn is_power_press(ev: &[u8; INPUT_EVENT_SIZE]) -> bool {
    let ty = u16::from_ne_bytes([ev[16], ev[17]]);
    let code = u16::from_ne_bytes([ev[18], ev[19]]);
    let value = i32::from_ne_bytes([ev[20], ev[21], ev[22], ev[23]]);
    ty == EV_KEY && code == KEY_POWER && value == 1
}

/// Watches every `<root>/dev/input/event*` that appears within `scan_for` and
/// sends a message on the first KEY_POWER press. Runs on plain threads (blocking reads).
pub fn watch_power_button(root: &Path, scan_for: Duration) -> mpsc::Receiver<PathBuf> {
    let (tx, rx) = mpsc::channel(1);
    let dir = root.join("dev/input");
    std::thread::spawn(move || {
        let deadline = Instant::now() + scan_for;
        let mut seen: Vec<PathBuf> = Vec::new();
        loop {
            if let Ok(rd) = std::fs::read_dir(&dir) {
                for e in rd.flatten() {
                    let p = e.path();
                    let is_event = p
                        .file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with("event"));
                    if !is_event || seen.contains(&p) {
                        continue;
                    }
                    seen.push(p.clone());
                    let tx = tx.clone();
                    std::thread::spawn(move || {
                        let Ok(mut f) = std::fs::File::open(&p) else {
                            return;
                        };
                        let mut ev = [0u8; INPUT_EVENT_SIZE];
                        while f.read_exact(&mut ev).is_ok() {
                            if is_power_press(&ev) {
                                let _ = tx.blocking_send(p.clone());
                                return;
                            }
                        }
                    });
                }
            }
            if Instant::now() >= deadline {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    rx
}

/// Waits for SIGTERM, SIGINT or a power-button press; says which.
pub async fn wait_for_request(mut button: mpsc::Receiver<PathBuf>) -> std::io::Result<String> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let why = tokio::select! {
        _ = term.recv() => "SIGTERM".to_string(),
        _ = int.recv() => "SIGINT (Ctrl-Alt-Del)".to_string(),
        Some(dev) = button.recv() => format!("power button ({})", dev.display()),
    };
    Ok(why)
}

/// As PID 1: SIGTERM to every other process, SIGKILL after `grace`, reaping
/// in between (the services are stopped already; this catches shims and orphans).
pub fn kill_everything(grace: Duration) {
    // SAFETY: kill(-1, sig) signals every process but init (us).
    unsafe { libc::kill(-1, libc::SIGTERM) };
    let deadline = Instant::now() + grace;
    loop {
        let mut st = 0;
        // SAFETY: waitpid with a valid status pointer.
        let pid = unsafe { libc::waitpid(-1, &mut st, libc::WNOHANG) };
        if pid < 0 {
            return; // ECHILD: nothing left.
        }
        if pid == 0 {
            if Instant::now() >= deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    // SAFETY: as above.
    unsafe { libc::kill(-1, libc::SIGKILL) };
    let deadline = Instant::now() + Duration::from_secs(1);
    while Instant::now() < deadline {
        let mut st = 0;
        // SAFETY: waitpid with a valid status pointer.
        let pid = unsafe { libc::waitpid(-1, &mut st, libc::WNOHANG) };
        if pid < 0 {
            return;
        }
        if pid == 0 {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// Syncs, unmounts `mounts` (in the given order; lazily if busy) and calls
/// reboot(2). Returns only if reboot failed.
pub fn final_sequence(sys: &dyn Sys, mounts: &[PathBuf], action: PowerAction) -> std::io::Error {
    sys.sync();
    for m in mounts {
        if let Err(e) = sys.umount(m, false) {
            super::console::say(&format!(
                "machined: unmount {}: {e}; detaching",
                m.display()
            ));
            let _ = sys.umount(m, true);
        }
    }
    sys.sync();
    sys.reboot(action)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::{Call, FakeSys};

    fn ev(ty: u16, code: u16, value: i32) -> [u8; INPUT_EVENT_SIZE] {
        let mut b = [0u8; INPUT_EVENT_SIZE];
        b[16..18].copy_from_slice(&ty.to_ne_bytes());
        b[18..20].copy_from_slice(&code.to_ne_bytes());
        b[20..24].copy_from_slice(&value.to_ne_bytes());
        b
    }

    #[test]
    fn recognises_power_key_press_only() {
        assert!(is_power_press(&ev(1, 116, 1)));
        assert!(!is_power_press(&ev(1, 116, 0)));
        assert!(!is_power_press(&ev(1, 30, 1)));
        assert!(!is_power_press(&ev(0, 116, 1)));
    }

    #[tokio::test]
    async fn button_watcher_reports_a_press_from_an_event_file() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("dev/input");
        std::fs::create_dir_all(&input).unwrap();
        let mut data = ev(4, 4, 0).to_vec();
        data.extend_from_slice(&ev(1, 116, 1));
        std::fs::write(input.join("event0"), data).unwrap();
        std::fs::write(input.join("mice"), ev(1, 116, 1)).unwrap();
        let mut rx = watch_power_button(dir.path(), Duration::from_millis(10));
        let got = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .unwrap();
        assert_eq!(got, Some(input.join("event0")));
    }

    #[test]
    fn final_sequence_syncs_unmounts_then_powers_off() {
        let sys = FakeSys::new();
        sys.fail_on("Umount(\"/var\")", libc::EBUSY);
        let _ = final_sequence(&sys, &[PathBuf::from("/var")], PowerAction::PowerOff);
        let calls = sys.calls();
        assert_eq!(calls.first(), Some(&Call::Sync));
        assert_eq!(calls.last(), Some(&Call::Reboot(PowerAction::PowerOff)));
        assert_eq!(
            calls
                .iter()
                .filter(|c| matches!(c, Call::Umount(_)))
                .count(),
            2
        );
    }
}
