//! One instance of the stand-in: a directory of its own that plays its disk, its
//! boot script run with bash as cloud-init runs user-data, and every process it
//! starts.
//!
//! The directory is the instance's root for the two paths a boot script writes to
//! (`/var/lib/augur`, `/usr/local/bin`): the hypervisor writes them under it, like a
//! chroot, and changes nothing else in the script. On its `PATH`: the real AWS CLI
//! (from PyPI; it reaches the emulator through `AWS_ENDPOINT_URL` and takes its
//! credentials and region from the metadata stand-in, as on EC2) and a `shutdown`
//! that asks the hypervisor to power the instance off. Every process of the instance
//! carries `AUGUR_STANDIN_INSTANCE=<id>` in its environment: that is how the
//! hypervisor finds them all (a machine's processes end with the machine).
//!
//! A Graviton instance (an arm64 type) runs aarch64 programs: the kernel hands them
//! to qemu (binfmt_misc, scripts/arm64.sh), which finds their C library through
//! `QEMU_LD_PREFIX`, and `uname -m` says `aarch64`. A program from its disk built
//! for the other architecture is killed as it starts, with the error a real machine
//! gives (`Exec format error`), and so is an aarch64 one on an x86_64 instance.

use crate::imds::Imds;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The variable that marks an instance's processes.
pub const MARK: &str = "AUGUR_STANDIN_INSTANCE";

/// The emulator the kernel runs aarch64 programs with (scripts/arm64.sh).
const QEMU_AARCH64: &str = "qemu-aarch64-static";

/// The paths of a boot script that the instance's directory stands for.
const ROOTED: [&str; 2] = ["/var/lib/augur", "/usr/local/bin/"];

pub struct Instance {
    pub id: String,
    pub dir: PathBuf,
    pub imds: Option<Imds>,
    pub spot: bool,
    /// When its agent was first seen running.
    pub agent_seen: Option<std::time::Instant>,
    /// When the announced reclaim happens.
    pub reclaim_at: Option<std::time::Instant>,
    /// When its reclaim notice appears in its metadata (EC2: two minutes before).
    pub notice_at: Option<std::time::Instant>,
    pub hung: bool,
    /// Runs aarch64 programs (a Graviton type), not x86_64 ones.
    pub arm64: bool,
    /// Its agent ran a script once ([`agent_idle`](Self::agent_idle)).
    script_seen: bool,
    /// Since when its agent has been idle, and whether that idle spell was counted.
    pub idle: Option<(std::time::Instant, bool)>,
    /// The boot script's bash (reaped when it exits).
    child: Option<std::process::Child>,
}

/// What a boot needs from the hypervisor.
pub struct Boot<'a> {
    pub home: &'a Path,
    /// The AWS CLI, unless the image has none.
    pub aws_cli: Option<&'a Path>,
    pub endpoint: &'a str,
    pub region: &'a str,
    pub arm64: bool,
    /// Its type's GPUs, which its `nvidia-smi -L` lists.
    pub gpus: u32,
}

impl Instance {
    /// An instance that never boots: listed as running, nothing runs on it.
    pub fn dead(id: &str, spot: bool, home: &Path) -> Instance {
        Instance {
            id: id.into(),
            dir: home.join(id),
            imds: None,
            spot,
            agent_seen: None,
            reclaim_at: None,
            notice_at: None,
            hung: false,
            arm64: false,
            script_seen: false,
            idle: None,
            child: None,
        }
    }

    /// Boots an instance: its user-data runs under bash in its own directory.
    pub fn boot(id: &str, spot: bool, user_data: &str, b: &Boot) -> std::io::Result<Instance> {
        let dir = b.home.join(id);
        let bin = dir.join("bin");
        for d in [&bin, &dir.join("usr/local/bin"), &dir.join("root")] {
            std::fs::create_dir_all(d)?;
        }
        let _ = std::fs::remove_file(bin.join("aws"));
        if let Some(cli) = b.aws_cli {
            std::os::unix::fs::symlink(cli, bin.join("aws"))?;
        }
        let shutdown = bin.join("shutdown");
        std::fs::write(
            &shutdown,
            format!(
                "#!/bin/bash\n# The stand-in's power button: `shutdown -h now` powers the instance off;\n# `shutdown -h +N` schedules it N minutes on (the hypervisor keeps the timer).\nfor a in \"$@\"; do case \"$a\" in +*) echo \"$(date +%s%3N) ${{a#+}}\" > '{}'; exit 0;; esac; done\n: > '{}'\nexec sleep 3600\n",
                dir.join("scheduled-poweroff").display(),
                dir.join("powered-off").display()
            ),
        )?;
        std::fs::set_permissions(
            &shutdown,
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )?;
        if b.gpus > 0 {
            let lines: String = (0..b.gpus)
                .map(|i| {
                    format!(
                        "GPU {i}: NVIDIA A10G (UUID: GPU-{i:08x}-aaaa-bbbb-cccc-{id:0>12.12})\\n"
                    )
                })
                .collect();
            let smi = bin.join("nvidia-smi");
            std::fs::write(
                &smi,
                format!("#!/bin/sh\n# The instance type's GPUs, as the real `nvidia-smi -L` lists them.\n[ \"$1\" = -L ] || exit 9\nprintf '{lines}'\n"),
            )?;
            std::fs::set_permissions(&smi, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
        }
        if b.arm64 {
            let uname = bin.join("uname");
            std::fs::write(
                &uname,
                "#!/bin/bash\n# A Graviton instance's machine name.\ncase \"${1:-}\" in -m|-p|-i) echo aarch64 ;; *) exec /usr/bin/uname \"$@\" ;; esac\n",
            )?;
            std::fs::set_permissions(&uname, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
        }
        let mut script = user_data.to_string();
        for p in ROOTED {
            script = script.replace(p, &format!("{}{p}", dir.display()));
        }
        std::fs::write(dir.join("user-data"), &script)?;
        let imds = Imds::start(id, b.region)?;
        let log = std::fs::File::create(dir.join("boot.log"))?;
        let path = format!(
            "{}:{}:/usr/bin:/bin",
            bin.display(),
            dir.join("usr/local/bin").display()
        );
        let mut bash = Command::new("bash");
        bash.env_clear();
        if b.arm64 {
            bash.env("QEMU_LD_PREFIX", augur_tests::ARM64_LIBC);
        }
        let child = bash
            .arg(dir.join("user-data"))
            .current_dir(&dir)
            .env("PATH", path)
            .env("HOME", dir.join("root"))
            .env("AWS_ENDPOINT_URL", b.endpoint)
            .env("AWS_EC2_METADATA_SERVICE_ENDPOINT", &imds.endpoint)
            .env(MARK, id)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0)
            .spawn()?;
        Ok(Instance {
            id: id.into(),
            dir,
            imds: Some(imds),
            spot,
            agent_seen: None,
            reclaim_at: None,
            notice_at: None,
            hung: false,
            arm64: b.arm64,
            script_seen: false,
            idle: None,
            child: Some(child),
        })
    }

    /// Whether its boot script has just ended (it is reaped then; the instance runs on,
    /// as an EC2 instance does after cloud-init).
    pub fn booted_out(&mut self) -> bool {
        let done = self
            .child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(Some(_))));
        if done {
            self.child = None;
        }
        done
    }

    /// Whether the instance asked to power off, now or at a time that has come (a
    /// minute lasts `minute_ms` here).
    pub fn powered_off(&self, minute_ms: u64) -> bool {
        if self.dir.join("powered-off").exists() {
            return true;
        }
        let Ok(at) = std::fs::read_to_string(self.dir.join("scheduled-poweroff")) else {
            return false;
        };
        let mut words = at.split_whitespace().map(|w| w.parse::<u64>().ok());
        let (Some(Some(asked_ms)), Some(Some(minutes))) = (words.next(), words.next()) else {
            return false;
        };
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        now_ms >= asked_ms + minutes * minute_ms
    }

    /// The instance's processes: (pid, program, whether qemu runs it as aarch64).
    pub fn processes(&self) -> Vec<(i32, PathBuf, bool)> {
        let mark = format!("{MARK}={}", self.id);
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
            .filter(|pid| {
                std::fs::read(format!("/proc/{pid}/environ"))
                    .is_ok_and(|env| env.split(|b| *b == 0).any(|kv| kv == mark.as_bytes()))
            })
            .map(|pid| {
                let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap_or_default();
                if !exe.ends_with(QEMU_AARCH64) {
                    return (pid, exe, false);
                }
                // binfmt_misc's rule (flags POF): qemu, the program, its argv[0], ...
                let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                let program = cmdline
                    .split(|b| *b == 0)
                    .nth(1)
                    .map(|p| PathBuf::from(String::from_utf8_lossy(p).into_owned()))
                    .unwrap_or_default();
                (pid, program, true)
            })
            .collect()
    }

    /// Kills each program from the instance's disk built for the other architecture,
    /// as the exec of it fails on a real machine.
    pub fn refuse_foreign_programs(&self) {
        for (pid, program, aarch64) in self.processes() {
            if aarch64 != self.arm64 && program.starts_with(&self.dir) {
                // SAFETY: kill(2) on a pid read from /proc; at worst it is gone.
                unsafe { libc::kill(pid, libc::SIGKILL) };
                let arch = if self.arm64 { "aarch64" } else { "x86_64" };
                eprintln!(
                    "fake-hypervisor: {}: {}: cannot execute binary file: Exec format error (this instance runs {arch})",
                    self.id,
                    program.display()
                );
            }
        }
    }

    /// Whether its agent (the one its boot script fetched) is running.
    pub fn agent_running(&self) -> bool {
        let agent = self.dir.join("usr/local/bin/augur-agent");
        self.processes().iter().any(|(_, exe, _)| *exe == agent)
    }

    /// Whether its agent runs with no script under it, having run one before: a
    /// warm machine idle between two attempts.
    pub fn agent_idle(&mut self) -> bool {
        let agent = self.dir.join("usr/local/bin/augur-agent");
        let processes = self.processes();
        let Some(&(pid, _, _)) = processes.iter().find(|(_, exe, _)| *exe == agent) else {
            return false;
        };
        let busy = augur_tests::has_child(pid);
        self.script_seen |= busy;
        self.script_seen && !busy
    }

    /// Sends `signal` to every process of the instance.
    pub fn signal(&self, signal: i32) {
        for (pid, _, _) in self.processes() {
            // SAFETY: kill(2) on a pid read from /proc; at worst it is gone (ESRCH).
            unsafe { libc::kill(pid, signal) };
        }
    }

    /// The machine is gone: its processes end, its disk's copy of the agent too.
    pub fn end(&mut self) {
        self.signal(libc::SIGKILL);
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(self.dir.join("usr/local/bin"));
    }
}
