//! Statistics, the JSON report's shape and the table.

use super::*;

fn meta() -> Meta {
    Meta {
        accel: "tcg".into(),
        runs_per_figure: 3,
        started: "2026-11-26T21:00:00Z".into(),
        host: HostInfo {
            nproc: 2,
            loadavg1_at_start: 0.3,
            loadavg1_at_end: 0.4,
        },
        vm: VmShape {
            cpus: 2,
            memory: "1024M".into(),
            machine: "q35".into(),
        },
        kernel_version: Some("6.12.0-1-amd64".into()),
    }
}

fn v(group: &'static str, name: &'static str, value: f64) -> Sample {
    Sample::Value {
        group,
        name,
        unit: "s",
        value,
        what: "what",
    }
}

#[test]
fn statistics() {
    let s = Stats::of(&[1.76, 1.71, 1.74]).unwrap();
    assert_eq!((s.median, s.min, s.max, s.n), (1.74, 1.71, 1.76, 3));
    assert_eq!(s.spread, 0.05);
    assert_eq!(s.stdev, 0.0252);
    assert_eq!(s.runs, [1.76, 1.71, 1.74], "runs stay in the order taken");
    let even = Stats::of(&[4.0, 1.0, 2.0, 3.0]).unwrap();
    assert_eq!(even.median, 2.5);
    let one = Stats::of(&[3.0]).unwrap();
    assert_eq!((one.median, one.spread, one.stdev), (3.0, 0.0, 0.0));
    assert!(Stats::of(&[]).is_none());
}

#[test]
fn json_shape() {
    let samples = vec![
        v("limit", "init_uptime", 2.0),
        v("ironclad", "node_ready_uptime", 3.5),
        Sample::Timeline(vec![("stage1".into(), 2.1), ("ready".into(), 3.5)]),
        Sample::Timeline(vec![("second run".into(), 9.0)]),
        v("limit", "init_uptime", 2.2),
        Sample::Failed {
            group: "ironclad",
            name: "node_ready_uptime",
            unit: "s",
            reason: "run 2: timeout".into(),
        },
        Sample::Skipped {
            group: "ironclad",
            name: "etcd_healthy_uptime",
            unit: "s",
            reason: "`ironclad create` does not exist".into(),
            what: "w",
        },
        Sample::Failed {
            group: "baseline",
            name: "etcd_healthy_uptime",
            unit: "s",
            reason: "run 1: mmdebstrap".into(),
        },
        Sample::Note("host busy".into()),
    ];
    let r = Report::build(meta(), &samples);
    let j = serde_json::to_value(&r).unwrap();
    let keys: Vec<&str> = j.as_object().unwrap().keys().map(|k| k.as_str()).collect();
    for k in [
        "apiVersion",
        "kind",
        "accel",
        "runsPerFigure",
        "started",
        "host",
        "vm",
        "kernelVersion",
        "figures",
        "ratios",
        "targets",
        "nodeBootTimeline",
        "notes",
    ] {
        assert!(keys.contains(&k), "{k} in {keys:?}");
    }
    assert_eq!(j["kind"], "BenchReport");
    assert_eq!(j["host"]["loadavg1AtStart"], 0.3);
    assert_eq!(j["vm"]["memory"], "1024M");
    let f = &j["figures"];
    assert_eq!(f[0]["group"], "limit");
    assert_eq!(f[0]["runs"], serde_json::json!([2.0, 2.2]));
    assert_eq!(f[0]["median"], 2.1);
    assert_eq!(f[0]["spread"], 0.2);
    assert!(f[0].get("failed").is_none() && f[0].get("skipped").is_none());
    // Failed runs are kept beside the successful ones.
    assert_eq!(f[1]["n"], 1);
    assert_eq!(f[1]["failed"], serde_json::json!(["run 2: timeout"]));
    assert_eq!(f[2]["skipped"], "`ironclad create` does not exist");
    assert!(f[2].get("median").is_none());
    assert_eq!(
        f[3]["skipped"], "no successful run: run 1: mmdebstrap",
        "{}",
        f[3]
    );
    assert_eq!(
        j["nodeBootTimeline"],
        serde_json::json!([["stage1", 2.1], ["ready", 3.5]])
    );
    assert_eq!(j["notes"], serde_json::json!(["host busy"]));
    let ratio = &j["ratios"][1];
    assert_eq!(ratio["numerator"], "ironclad/node_ready_uptime");
    assert_eq!(ratio["value"], 1.667);
    assert_eq!(ratio["target"], "<= 1.25");
    assert_eq!(ratio["ok"], false);
    let etcd = &j["ratios"][4];
    assert_eq!(etcd["target"], ">= 5");
    assert_eq!(
        etcd["skipped"],
        "missing baseline/etcd_healthy_uptime, ironclad/etcd_healthy_uptime"
    );
    assert!(etcd.get("value").is_none() && etcd.get("ok").is_none());
}

#[test]
fn table() {
    let samples = vec![
        v("limit", "init_uptime", 2.0),
        v("limit", "init_uptime", 2.25),
        Sample::Value {
            group: "ironclad",
            name: "size_rootfs",
            unit: "MiB",
            value: 64.912,
            what: "",
        },
        Sample::Timeline(vec![("stage1".into(), 2.1), ("ready".into(), 3.5)]),
    ];
    let t = Report::build(meta(), &samples).table();
    let lines: Vec<&str> = t.lines().collect();
    assert_eq!(
        lines[1],
        "group    figure      unit median min  max  spread n"
    );
    assert_eq!(
        lines[3],
        "limit    init_uptime s      2.12 2.00 2.25   0.25 2"
    );
    assert_eq!(
        lines[4],
        "ironclad size_rootfs MiB    64.9 64.9 64.9    0.0 1"
    );
    assert!(t.contains("node ready / bare kernel limit (guest uptime): skipped (missing ironclad/node_ready_uptime)  target <= 1.25"), "{t}");
    assert!(t.contains("     3.500    +1.400  ready"), "{t}");
}

#[test]
fn targets_say_when_a_figure_is_off() {
    let samples = vec![
        v("scale", "create_3_2_wall", 80.0),
        v("scale", "create_3_7_wall", 150.0),
        v("scale", "create_1_1_wall", 40.0),
    ];
    let r = Report::build(meta(), &samples);
    let j = serde_json::to_value(&r).unwrap();
    let t = &j["targets"];
    // Only the measured figures' targets.
    assert_eq!(t.as_array().unwrap().len(), 1, "{t}");
    assert_eq!(t[0]["figure"], "scale/create_3_2_wall");
    assert_eq!(t[0]["target"], "<= 60");
    assert_eq!(t[0]["median"], 80.0);
    assert_eq!(t[0]["ok"], false);
    assert_eq!(j["ratios"][0]["value"], 1.875);
    assert_eq!(j["ratios"][0]["ok"], true);
    let text = r.table();
    assert!(
        text.contains("scale/create_3_2_wall: 80.00  target <= 60  OFF TARGET"),
        "{text}"
    );
    assert!(
        text.contains(
            "create 3+7 / create 3+2 (wall; cost growth with cluster size): 1.88  target <= 2.5  OK"
        ),
        "{text}"
    );
    let quick = Report::build(meta(), &[v("scale", "create_3_2_wall", 55.0)]).table();
    assert!(quick.contains("target <= 60  OK"), "{quick}");
}

#[test]
fn the_dev_and_per_node_rss_figures_have_their_targets() {
    let samples = vec![
        v("dev", "create_wall", 11.3),
        v("dev", "rss_node_max", 387.6),
        v("dev", "matrix_wall", 72.5),
        v("scale", "rss_node_max_3_7", 310.0),
    ];
    let text = Report::build(meta(), &samples).table();
    for line in [
        "dev/create_wall: 11.30  target <= 20  OK",
        "dev/rss_node_max: 387.60  target <= 300  OFF TARGET",
        "dev/matrix_wall: 72.50  target <= 90  OK",
        "scale/rss_node_max_3_7: 310.00  target <= 300  OFF TARGET",
    ] {
        assert!(text.contains(line), "{line} in {text}");
    }
}
