//! The binaries shipped to AWS must run on Amazon Linux 2023 (glibc 2.34): the agent
//! on EC2 instances and `augur-lambda` on the `provided.al2023` runtime, as built by
//! `scripts/instance-binaries.sh`, may require no newer GLIBC symbol version.
//! `AUGUR_INSTANCE_AGENT` names the agent (scripts/test.sh sets it); the Lambda
//! binary is beside it.

use std::process::Command;

fn version(v: &str) -> Vec<u32> {
    v.split('.').filter_map(|p| p.parse().ok()).collect()
}

#[test]
fn the_instance_binaries_need_at_most_glibc_2_34() {
    let agent = augur_tests::instance_agent("x86_64");
    let lambda = agent.with_file_name("augur-lambda");
    assert!(lambda.is_file(), "no {}", lambda.display());
    check(&agent.display().to_string(), "X86-64");
    check(&lambda.display().to_string(), "X86-64");
    // The Graviton agent: an AArch64 build, run here under qemu (scripts/arm64.sh).
    let arm = augur_tests::instance_agent("aarch64");
    assert!(arm.is_file(), "no {}", arm.display());
    check(&arm.display().to_string(), "AArch64");
}

fn check(path: &str, machine: &str) {
    let header = Command::new("readelf")
        .args(["--file-header", path])
        .output()
        .expect("readelf (binutils)");
    let header = String::from_utf8_lossy(&header.stdout);
    assert!(
        header
            .lines()
            .any(|l| l.trim_start().starts_with("Machine:") && l.contains(machine)),
        "{path}: not built for {machine}: {header}"
    );
    let out = Command::new("readelf")
        .args(["--dyn-syms", "--wide", path])
        .output()
        .expect("readelf (binutils)");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let mut versions: Vec<Vec<u32>> = text
        .split_whitespace()
        .filter_map(|w| {
            w.split("@GLIBC_")
                .nth(1)
                .or_else(|| w.strip_prefix("GLIBC_"))
        })
        .map(|v| {
            version(
                v.split(|c: char| !(c.is_ascii_digit() || c == '.'))
                    .next()
                    .unwrap_or(""),
            )
        })
        .filter(|v| !v.is_empty())
        .collect();
    versions.sort();
    let newest = versions
        .last()
        .cloned()
        .expect("a dynamically linked binary requires some GLIBC symbols");
    eprintln!(
        "{path}: newest GLIBC symbol version required: {newest:?} ({} versioned symbols)",
        versions.len()
    );
    assert!(
        newest <= vec![2, 34],
        "requires GLIBC {newest:?}, newer than Amazon Linux 2023's 2.34"
    );
    // And it runs here.
    let v = Command::new(path)
        .env("QEMU_LD_PREFIX", augur_tests::ARM64_LIBC)
        .arg("--version")
        .output()
        .expect("run the binary");
    assert!(v.status.success(), "{}", String::from_utf8_lossy(&v.stderr));
}
