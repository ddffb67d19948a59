//! A bases shard fits a hosted runner's disk: once a base is pushed, its images and the
//! dangling build cache are removed (unless `--keep-images`), so six bases of about 100 MB
//! each leave the daemon's disk use at most about one base above where it started.

use crate::support::*;

/// The daemon's disk use in bytes (images, containers, volumes, build cache), as
/// `docker system df` reports it.
fn daemon_disk() -> u64 {
    // The daemon runs one disk-usage count at a time and refuses a second one meanwhile
    // ("a disk usage operation is already running"): another test's build cache check.
    for _ in 0..60 {
        let out = std::process::Command::new(docker()).args(["system", "df", "--format", "{{.Size}}"]).output().unwrap();
        if out.status.success() {
            return String::from_utf8_lossy(&out.stdout).lines().map(bytes_of).sum();
        }
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("already running"), "docker system df: {err}");
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    panic!("docker system df stayed busy for 30 s");
}

/// `123.4MB`, `1.2GB`, `0B`, `16kB` as bytes.
fn bytes_of(text: &str) -> u64 {
    let text = text.trim();
    let at = text.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(text.len());
    let (n, unit) = text.split_at(at);
    let n: f64 = n.parse().unwrap_or(0.0);
    let scale = match unit {
        "kB" | "KB" => 1e3,
        "MB" => 1e6,
        "GB" => 1e9,
        "TB" => 1e12,
        _ => 1.0,
    };
    (n * scale) as u64
}

#[test]
fn a_bases_shard_leaves_at_most_one_base_on_the_daemon() {
    docker();
    let reg = Registry::start();
    let instances: Vec<String> = (1..=6).map(|i| format!("big-{i}")).collect();
    for id in &instances {
        import_and_push(&busybox_rootfs_tar(&[]), &format!("{}/up/{id}:1", reg.host));
    }
    let spec = format!(
        "registry: {}/d\nbuilder: {{ repository: builder, version: v1 }}\nbases:\n  repository: base\n  context: base\n  from: \"{}/up/{{instance}}:1\"\n  build-args: {{ INSTANCE: \"{{instance}}\" }}\n  instances: [{}]\nagents:\n  repository: agent\n  variants: [{{ name: a }}]\n",
        reg.host,
        reg.host,
        instances.join(", ")
    );
    let dir = spec_dir(&[
        ("split-build.yml", &spec),
        ("Dockerfile", "FROM scratch AS payload\n"),
        // About 100 MB of its own per base: random bytes do not compress or deduplicate.
        (
            "base/Dockerfile",
            "ARG BASE_IMAGE\nFROM $BASE_IMAGE\nARG INSTANCE\nRUN head -c 100000000 /dev/urandom > /own.bin && echo $INSTANCE > /id\n",
        ),
    ]);
    let before = daemon_disk();
    let out = split_build(dir.path(), &["build", "--stage", "bases", "--parallel", "1", "--report", "bases.json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let built = json_file(dir.path(), "bases.json")["images"].as_array().unwrap().iter().filter(|i| i["status"] == "built").count();
    assert_eq!(built, 6);
    let after = daemon_disk();
    let grew = after.saturating_sub(before);
    eprintln!(
        "daemon disk: {} MB before, {} MB after 6 bases of ~100 MB each (grew {} MB)",
        before / 1_000_000,
        after / 1_000_000,
        grew / 1_000_000
    );
    assert!(grew <= 120_000_000, "the shard left {grew} bytes on the daemon: more than one base");
    // Every base is in the registry all the same.
    for b in json_file(dir.path(), "bases.json")["images"].as_array().unwrap() {
        let image = b["image"].as_str().unwrap();
        assert!(reg.inspect(image.strip_prefix(&format!("{}/", reg.host)).unwrap(), "--raw").is_some(), "{image}");
    }
}

#[test]
fn sizes_parse_as_docker_prints_them() {
    assert_eq!(bytes_of("0B"), 0);
    assert_eq!(bytes_of("16kB"), 16_000);
    assert_eq!(bytes_of("123.5MB"), 123_500_000);
    assert_eq!(bytes_of("1.2GB"), 1_200_000_000);
}
