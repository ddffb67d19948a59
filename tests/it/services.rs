//! The test harness's own services work: a registry (open and htpasswd), the daemon, and
//! skopeo seeing an image pushed through the daemon.

use crate::support::*;

#[test]
fn registry_daemon_and_skopeo_work_together() {
    let reg = Registry::start();
    let tag = format!("{}/harness/busybox:1", reg.host);
    import_and_push(&busybox_rootfs_tar(&[("hello.txt", b"hi")]), &tag);
    let inspect = reg.inspect("harness/busybox:1", "").expect("skopeo sees the pushed image");
    assert_eq!(inspect["Layers"].as_array().map(Vec::len), Some(1));
    let out = docker_cmd(&["run", "--rm", &tag, "cat", "/hello.txt"]);
    assert_eq!(out, "hi");
}

#[test]
fn htpasswd_registry_refuses_anonymous_requests() {
    let reg = Registry::start_with_auth("alice", "s3cret");
    let (status, text) = http_get(reg.port, "/v2/").unwrap();
    assert_eq!(status, 401);
    assert!(text.to_ascii_lowercase().contains("www-authenticate: basic"), "{text}");
}
