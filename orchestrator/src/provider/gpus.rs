//! Whole GPUs for local trials (`run.gpus = N`). The machine's GPUs are the ones
//! `nvidia-smi -L` lists (or `--gpus 0,1,2,3` names), as CUDA numbers them; each
//! agent starts with N that no other running agent holds, in `CUDA_VISIBLE_DEVICES`
//! and `NVIDIA_VISIBLE_DEVICES`, which its script inherits, with [`HOME`] naming
//! the state directory. What is held is read back from every process's environment
//! (`/proc/PID/environ`), never kept apart from it: agents and their scripts, this
//! orchestrator's, another's on the same state directory, or an orphan's whose agent
//! died, all count. Choosing and starting happen under a lock file of the state
//! directory, so two launches, of one process or two, never pick the same GPUs.

use std::collections::BTreeSet;

/// The variables that name a trial's GPUs to its script: CUDA's, and the NVIDIA
/// container runtime's.
pub const VISIBLE: [&str; 2] = ["CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES"];

/// Set beside them: the state directory whose GPUs these are.
pub const HOME: &str = "AUGUR_GPUS_HOME";

/// CUDA numbers GPUs fastest first unless told to follow the PCI bus, as
/// `nvidia-smi` and `NVIDIA_VISIBLE_DEVICES` do: agents are told.
pub const ORDER: (&str, &str) = ("CUDA_DEVICE_ORDER", "PCI_BUS_ID");

/// The GPUs of this machine, and how many each trial gets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Gpus {
    pub all: Vec<String>,
    pub each: usize,
}

/// The GPU indices `nvidia-smi -L` lists, one line each: `GPU 0: NVIDIA A100-SXM4-40GB
/// (UUID: GPU-…)` (MIG devices, indented beneath, are not whole GPUs).
pub fn listed(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("GPU "))
        .filter_map(|rest| rest.split(':').next())
        .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        .map(str::to_string)
        .collect()
}

/// This machine's GPUs as `nvidia-smi -L` lists them, or why none are known.
pub fn discover() -> Result<Vec<String>, String> {
    let out = std::process::Command::new("nvidia-smi")
        .arg("-L")
        .output()
        .map_err(|e| format!("`nvidia-smi -L` could not run ({e})"))?;
    if !out.status.success() {
        return Err(format!(
            "`nvidia-smi -L` failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(listed(&String::from_utf8_lossy(&out.stdout)))
}

/// `--gpus 0,1,2,3`, as a command line gives it (one value, not a list of values).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GpuList(pub Vec<String>);

/// Parses `--gpus`.
pub fn gpu_list(s: &str) -> Result<GpuList, String> {
    parse_list(s).map(GpuList)
}

/// `--gpus 0,1,2,3`: GPU indices, each once.
pub fn parse_list(s: &str) -> Result<Vec<String>, String> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for g in s.split(',').map(str::trim) {
        if g.is_empty() || !g.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("`{g}` is not a GPU index (like 0,1,2,3)"));
        }
        if !seen.insert(g.to_string()) {
            return Err(format!("GPU {g} is named twice"));
        }
        out.push(g.to_string());
    }
    Ok(out)
}

/// The GPUs a process was started with for the state directory `home`, from its
/// environment as `/proc/PID/environ` gives it (NUL-separated `NAME=value`).
pub fn held_in(environ: &[u8], home: &str) -> Option<Vec<String>> {
    let var = |name: &str| {
        let prefix = format!("{name}=");
        environ
            .split(|b| *b == 0)
            .find_map(|v| v.strip_prefix(prefix.as_bytes()))
            .map(|v| String::from_utf8_lossy(v).into_owned())
    };
    if var(HOME)? != home {
        return None;
    }
    let list = var(VISIBLE[0])?;
    Some(
        list.split(',')
            .filter(|g| !g.is_empty())
            .map(str::to_string)
            .collect(),
    )
}

/// Every set of GPUs that a live process holds for the state directory `home`.
pub fn held(home: &str) -> Vec<Vec<String>> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()))
        })
        .filter_map(|e| std::fs::read(e.path().join("environ")).ok())
        .filter_map(|env| held_in(&env, home))
        .collect()
}

/// The default list: the GPUs this process was given (`CUDA_VISIBLE_DEVICES`, as a
/// batch scheduler sets it), else the ones `nvidia-smi -L` lists.
pub fn default_list() -> Result<(Vec<String>, &'static str), String> {
    if let Ok(given) = std::env::var(VISIBLE[0]) {
        if !given.trim().is_empty() {
            return parse_list(&given).map(|l| (l, "CUDA_VISIBLE_DEVICES names"));
        }
    }
    discover().map(|l| (l, "`nvidia-smi -L` lists"))
}

/// An exclusive lock on `path` (created if missing), released when dropped: what
/// two orchestrators choosing GPUs of one state directory take in turn.
pub fn lock(path: &std::path::Path) -> std::io::Result<std::fs::File> {
    use std::os::fd::AsRawFd;
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d)?;
    }
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)?;
    // SAFETY: flock on a descriptor this function owns; no memory is involved.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(f)
}

impl Gpus {
    /// `each` of the GPUs that no holder in `busy` holds, lowest first; `None` when
    /// fewer are free.
    pub fn free(&self, busy: &[Vec<String>]) -> Option<Vec<String>> {
        let held: BTreeSet<&String> = busy.iter().flatten().collect();
        let free: Vec<String> = self
            .all
            .iter()
            .filter(|g| !held.contains(g))
            .take(self.each)
            .cloned()
            .collect();
        (free.len() == self.each).then_some(free)
    }

    /// How many trials fit at once.
    pub fn fit(&self) -> usize {
        self.all.len() / self.each.max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nvidia_smi_lists_whole_gpus_by_index() {
        let text = "GPU 0: NVIDIA A100-SXM4-40GB (UUID: GPU-5d3f)\n  MIG 3g.20gb Device 0: (UUID: MIG-1)\nGPU 1: NVIDIA A100-SXM4-40GB (UUID: GPU-77a0)\nNo devices were found\n";
        assert_eq!(listed(text), ["0", "1"]);
        assert!(listed("").is_empty());
    }

    #[test]
    fn what_a_process_holds_is_read_from_its_environment() {
        let env = b"PATH=/bin\0AUGUR_GPUS_HOME=/s/.augur\0CUDA_VISIBLE_DEVICES=2,3\0";
        assert_eq!(
            held_in(env, "/s/.augur"),
            Some(vec!["2".into(), "3".into()])
        );
        assert_eq!(
            held_in(env, "/other/.augur"),
            None,
            "another state directory's"
        );
        assert_eq!(
            held_in(b"CUDA_VISIBLE_DEVICES=0\0", "/s/.augur"),
            None,
            "not augur's"
        );
        // This test process holds none for a made-up directory.
        assert!(held("/no/such/augur/home").is_empty());
    }

    #[test]
    fn a_list_names_each_gpu_once() {
        assert_eq!(parse_list("0, 1,3").expect("list"), ["0", "1", "3"]);
        assert!(parse_list("0,0").is_err());
        assert!(parse_list("0,,1").is_err());
        assert!(parse_list("gpu0").is_err());
    }

    #[test]
    fn trials_get_gpus_no_other_holds() {
        let g = Gpus {
            all: ["0", "1", "2", "3"].map(String::from).to_vec(),
            each: 2,
        };
        assert_eq!(g.fit(), 2);
        assert_eq!(g.free(&[]).expect("all free"), ["0", "1"]);
        let first = vec!["0".to_string(), "1".to_string()];
        assert_eq!(
            g.free(std::slice::from_ref(&first)).expect("two left"),
            ["2", "3"]
        );
        let second = vec!["2".to_string(), "3".to_string()];
        assert_eq!(g.free(&[first, second]), None);
        let middle = vec!["1".to_string(), "2".to_string()];
        assert_eq!(g.free(&[middle]).expect("the ends"), ["0", "3"]);
    }
}
