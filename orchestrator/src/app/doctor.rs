//! `augur doctor`: the AWS calls of each path, asked of IAM's policy simulator for
//! the identities that make them ([`augur_aws::doctor`]), before anything launches.

use super::backend::Backend;
use super::AppError;
use augur_aws::doctor::{principal_of, simulate, Answer, Deployment, Identity};

/// The identities to check: the caller always, the tick's and the workers' roles
/// when their ARNs are known (the stack's `TickRole` and `WorkerRole` outputs).
pub struct Roles {
    pub tick: Option<String>,
    pub worker: Option<String>,
}

/// Each identity checked: its template name, the principal simulated, the answers.
pub struct Checked {
    pub identity: Identity,
    pub principal: String,
    pub answers: Vec<Answer>,
}

/// Simulates every path's calls for each identity.
pub async fn doctor(ctx: &Backend, roles: &Roles) -> Result<Vec<Checked>, AppError> {
    if !ctx.is_aws() {
        return Err(AppError::input(
            "augur doctor checks an AWS deployment's permissions: add --backend aws (or set backend = \"aws\" in the config)",
        ));
    }
    let sdk = ctx.sdk().await;
    let caller = augur_aws::denied::sts(sdk)
        .get_caller_identity()
        .send()
        .await
        .map_err(|e| {
            AppError::unavailable(format!(
                "STS GetCallerIdentity: {}",
                augur_aws::error_text(&e)
            ))
        })?;
    let arn = caller.arn().unwrap_or_default().to_string();
    let d = Deployment {
        account: caller.account().unwrap_or_default().to_string(),
        region: sdk.region().map(|r| r.to_string()).unwrap_or_default(),
        table: ctx.aws.table.clone().unwrap_or_default(),
        bucket: ctx.bucket()?,
        log_group_prefix: ctx.aws.log_group_prefix.clone(),
        security_groups: ctx.aws.security_groups.clone(),
        launch_template: ctx.aws.launch_template.clone(),
        secrets_prefix: ctx
            .aws
            .secrets_prefix
            .clone()
            .unwrap_or_else(|| "augur/".into()),
        worker_role: roles.worker.clone(),
    };
    let iam = augur_aws::doctor::client(sdk);
    let mut who = vec![(Identity::Cli, principal_of(&arn))];
    who.extend(roles.tick.clone().map(|r| (Identity::Tick, r)));
    who.extend(roles.worker.clone().map(|r| (Identity::Worker, r)));
    let mut out = Vec::new();
    for (identity, principal) in who {
        let answers = simulate(&iam, &principal, &d.checks(identity))
            .await
            .map_err(|e| AppError::of(e.kind(), e))?;
        out.push(Checked {
            identity,
            principal,
            answers,
        });
    }
    Ok(out)
}
