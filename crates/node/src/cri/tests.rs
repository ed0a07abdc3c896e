//! Unit tests of the pod configs of each variant and of exec output.

use super::*;
use k8s_cri::v1 as cri;

fn opts() -> PodOptions {
    PodOptions {
        host_network: false,
        runtime_handler: None,
        image: "ironclad.local/toolbox:1".into(),
        cgroup_parent: String::new(),
        log_dir: String::new(),
    }
}

/// The security context of `variant`'s workload container.
fn container_sc(variant: Variant) -> cri::LinuxContainerSecurityContext {
    let c = container_config(variant, "c", &opts(), &["x"]);
    c.linux.unwrap().security_context.unwrap()
}

/// The security context of `variant`'s sandbox.
fn sandbox_sc(variant: Variant, o: &PodOptions) -> cri::LinuxSandboxSecurityContext {
    let s = sandbox_config(variant, "p", o);
    s.linux.unwrap().security_context.unwrap()
}

#[test]
fn priv_is_privileged_with_host_pid() {
    let sc = sandbox_sc(Variant::Priv, &opts());
    assert!(sc.privileged);
    let ns = sc.namespace_options.unwrap();
    assert_eq!(ns.pid, cri::NamespaceMode::Node as i32);
    assert_eq!(ns.network, cri::NamespaceMode::Pod as i32);
    assert!(ns.userns_options.is_none());
    let s = sandbox_config(Variant::Priv, "p", &opts());
    assert_eq!(s.labels.get(LABEL).map(String::as_str), Some("1"));
}

#[test]
fn userns_maps_root_to_a_high_range() {
    let ns = container_sc(Variant::Userns).namespace_options.unwrap();
    let u = ns.userns_options.unwrap();
    assert_eq!(u.mode, cri::NamespaceMode::Pod as i32);
    assert_eq!(u.uids[0].container_id, 0);
    assert!(u.uids[0].host_id >= 65536);
    assert_eq!(u.uids, u.gids);
    assert_eq!(ns.pid, cri::NamespaceMode::Container as i32);
}

#[test]
fn restricted_drops_everything() {
    let sc = container_sc(Variant::Restricted);
    assert!(!sc.privileged);
    assert!(sc.no_new_privs);
    assert_eq!(sc.capabilities.unwrap().drop_capabilities, vec!["ALL"]);
    assert_eq!(sc.run_as_user.unwrap().value, RESTRICTED_UID);
    assert_eq!(
        sc.seccomp.unwrap().profile_type,
        cri::security_profile::ProfileType::RuntimeDefault as i32
    );
}

#[test]
fn unpriv_leaves_defaults_to_the_runtime() {
    let sc = container_sc(Variant::Unpriv);
    assert!(!sc.privileged);
    let caps = sc.capabilities.unwrap();
    assert!(caps.add_capabilities.is_empty() && caps.drop_capabilities.is_empty());
    // No profile: the runtime's `unset_seccomp_profile` applies.
    assert!(sc.seccomp.is_none());
    assert!(!sc.no_new_privs);
    assert!(sc.masked_paths.iter().any(|p| p == "/proc/kcore"));
    assert!(sc.readonly_paths.iter().any(|p| p == "/proc/sys"));
    assert!(container_sc(Variant::Priv).masked_paths.is_empty());
}

#[test]
fn handlers_and_host_network() {
    assert_eq!(Variant::Gvisor.runtime_handler(), "runsc");
    assert_eq!(Variant::Priv.runtime_handler(), "");
    let o = PodOptions {
        host_network: true,
        ..opts()
    };
    let ns = sandbox_sc(Variant::Unpriv, &o).namespace_options.unwrap();
    assert_eq!(ns.network, cri::NamespaceMode::Node as i32);
}

#[test]
fn exec_output_combines_streams() {
    let o = ExecOutput {
        exit_code: 1,
        stdout: "a\n".into(),
        stderr: " b ".into(),
    };
    assert_eq!(o.combined(), "a\nb");
}
