//! The CLI's config file, written by `infra/deploy.sh`: the settings of a deployed
//! stack, so that `augur run --backend aws` needs no further flags. Flags and AUGUR_*
//! variables override it. Looked for at AUGUR_CONFIG, else
//! `$XDG_CONFIG_HOME/augur/config.toml` (`~/.config/augur/config.toml`).

use serde::Deserialize;
use std::path::{Path, PathBuf};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The default backend (`local` or `aws`).
    pub backend: Option<String>,
    #[serde(default)]
    pub aws: AwsConfig,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AwsConfig {
    pub stack: Option<String>,
    pub region: Option<String>,
    pub table: Option<String>,
    pub bucket: Option<String>,
    pub log_group_prefix: Option<String>,
    #[serde(default)]
    pub security_groups: Vec<String>,
    pub instance_profile: Option<String>,
    pub subnet: Option<String>,
    pub image: Option<String>,
    pub tick_function: Option<String>,
    /// The SHA-256 of the agent in the bucket (instances run no other).
    pub agent_sha256: Option<String>,
    /// The same for the arm64 (Graviton) agent.
    pub agent_sha256_arm64: Option<String>,
    /// The stack's launch template (its id): workers launch from it.
    pub launch_template: Option<String>,
    /// The prefix of the secrets the instance role may read (`run.secrets`).
    pub secrets_prefix: Option<String>,
    /// Days study logs are kept unless a study says (the stack's LogRetentionDays).
    pub log_retention_days: Option<u32>,
    /// The tick's and the workers' roles, by ARN (checked by `augur doctor`).
    pub tick_role: Option<String>,
    pub worker_role: Option<String>,
}

/// Where the config file is (whether or not it exists).
pub fn path() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("AUGUR_CONFIG").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    Some(base.join("augur").join("config.toml"))
}

/// Reads a config file; `None` when there is none.
pub fn load(path: &Path) -> Result<Option<Config>, String> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("config {}: {e}", path.display())),
    };
    let cfg: Config = toml::from_str(&text).map_err(|e| {
        let line = e
            .span()
            .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
        match line {
            Some(l) => format!("config {}:{l}: {}", path.display(), e.message()),
            None => format!("config {}: {}", path.display(), e.message()),
        }
    })?;
    if let Some(b) = &cfg.backend {
        if b != "local" && b != "aws" {
            return Err(format!(
                "config {}: backend = \"{b}\": expected \"local\" or \"aws\"",
                path.display()
            ));
        }
    }
    Ok(Some(cfg))
}

/// The environment variables the config stands for (clap reads them as defaults).
pub fn variables(cfg: &Config) -> Vec<(&'static str, String)> {
    let a = &cfg.aws;
    let mut v = Vec::new();
    let mut put = |k: &'static str, val: &Option<String>| {
        if let Some(x) = val {
            v.push((k, x.clone()));
        }
    };
    put("AUGUR_BACKEND", &cfg.backend);
    put("AUGUR_REGION", &a.region);
    put("AUGUR_TABLE", &a.table);
    put("AUGUR_BUCKET", &a.bucket);
    put("AUGUR_LOG_GROUP_PREFIX", &a.log_group_prefix);
    put("AUGUR_INSTANCE_PROFILE", &a.instance_profile);
    put("AUGUR_SUBNET", &a.subnet);
    put("AUGUR_IMAGE", &a.image);
    put("AUGUR_AGENT_SHA256", &a.agent_sha256);
    put("AUGUR_AGENT_SHA256_ARM64", &a.agent_sha256_arm64);
    put("AUGUR_LAUNCH_TEMPLATE", &a.launch_template);
    put("AUGUR_SECRETS_PREFIX", &a.secrets_prefix);
    put("AUGUR_TICK_ROLE", &a.tick_role);
    put("AUGUR_WORKER_ROLE", &a.worker_role);
    put(
        "AUGUR_LOG_RETENTION_DAYS",
        &a.log_retention_days.map(|d| d.to_string()),
    );
    if !a.security_groups.is_empty() {
        v.push(("AUGUR_SECURITY_GROUPS", a.security_groups.join(",")));
    }
    v
}

/// Applies the config file as defaults: sets each variable it stands for that is not
/// set already. Call before any thread starts.
pub fn apply() -> Result<(), String> {
    let Some(p) = path() else {
        return Ok(());
    };
    let Some(cfg) = load(&p)? else {
        return Ok(());
    };
    for (k, v) in variables(&cfg) {
        if std::env::var_os(k).is_none() {
            std::env::set_var(k, v);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deploy_config_becomes_defaults_and_mistakes_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("config.toml");
        assert!(load(&p).unwrap().is_none(), "no file, no config");
        std::fs::write(
            &p,
            "# comment\n[aws]\nstack = \"augur\"\nregion = \"eu-west-1\"\ntable = \"t\"\nbucket = \"b\"\nsecurity_groups = [\"sg-1\", \"sg-2\"]\n",
        )
        .unwrap();
        let cfg = load(&p).unwrap().unwrap();
        let vars = variables(&cfg);
        assert!(vars.contains(&("AUGUR_TABLE", "t".into())));
        assert!(vars.contains(&("AUGUR_REGION", "eu-west-1".into())));
        assert!(vars.contains(&("AUGUR_SECURITY_GROUPS", "sg-1,sg-2".into())));
        assert!(!vars.iter().any(|(k, _)| *k == "AUGUR_BACKEND"));
        std::fs::write(&p, "[aws]\ntable = \"t\"\ntabel = \"x\"\n").unwrap();
        let e = load(&p).unwrap_err();
        assert!(e.contains("config.toml:3") && e.contains("tabel"), "{e}");
        std::fs::write(&p, "backend = \"gcp\"\n").unwrap();
        let e = load(&p).unwrap_err();
        assert!(e.contains("\"gcp\""), "{e}");
    }
}
