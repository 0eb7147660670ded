//! The attempt's secrets (`run.secrets`), read when it starts: on EC2 from SSM
//! Parameter Store or Secrets Manager with the instance role, on the local backend
//! from the agent's environment (the variable of the same name). Values go to the
//! script's environment only, and are masked (`***`) in what the script prints.

use augur_aws::secrets::Secrets;
use augur_model::secret::SecretRef;
use augur_model::Study;

/// Each secret's variable and value, or why one could not be read (naming the
/// variable and its reference, never a value).
pub(crate) async fn resolve(
    study: &Study,
    aws: Option<&Secrets>,
) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::with_capacity(study.run.secrets.len());
    for (name, reference) in &study.run.secrets {
        let r = SecretRef::parse(reference).map_err(|e| format!("secret `{name}`: {e}"))?;
        let value = match aws {
            Some(s) => s.read(&r).await.map_err(|e| {
                format!("secret `{name}` ({r}) cannot be read with the instance role: {e}")
            })?,
            None => std::env::var(name).map_err(|_| {
                format!("secret `{name}` ({r}): the local backend takes it from the environment, and `{name}` is not set there")
            })?,
        };
        out.push((name.clone(), value));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_local_backend_reads_secrets_from_the_environment() {
        let mut study = Study::parse(
            "name='s'\nobjective={metric='m'}\ntrials=1\n[run]\nscript='true'\nsecrets={TEST_SECRET_RESOLVE='ssm:/t/x'}\n",
            "s.toml",
            std::path::Path::new("."),
        )
        .expect("study");
        let missing = resolve(&study, None).await.expect_err("unset");
        assert!(
            missing.contains("`TEST_SECRET_RESOLVE` (ssm:/t/x)") && missing.contains("not set"),
            "{missing}"
        );
        // SAFETY: this test alone reads or writes this variable.
        unsafe { std::env::set_var("TEST_SECRET_RESOLVE", "v4lue") };
        assert_eq!(
            resolve(&study, None).await,
            Ok(vec![(
                "TEST_SECRET_RESOLVE".to_string(),
                "v4lue".to_string()
            )])
        );
        study.run.secrets.clear();
        assert_eq!(resolve(&study, None).await, Ok(vec![]));
    }
}
