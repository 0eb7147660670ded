//! `augur doctor`: prints what IAM's policy simulator says of each path's calls.

use crate::app::backend::Backend;
use crate::app::doctor::{doctor, Roles};

#[derive(clap::Args, Debug)]
pub struct DoctorArgs {
    /// Also check the tick's role, by its ARN (the stack's `TickRole` output;
    /// `[aws] tick_role` in the config, which infra/deploy.sh writes).
    #[arg(long, env = "AUGUR_TICK_ROLE")]
    tick_role: Option<String>,
    /// Also check the workers' role, by its ARN (the stack's `WorkerRole` output;
    /// `[aws] worker_role`), and that the caller may pass it to instances.
    #[arg(long, env = "AUGUR_WORKER_ROLE")]
    worker_role: Option<String>,
}

/// `augur doctor`: one line per call refused, a count of those allowed; exit 2 if
/// any is refused (nothing is launched either way).
pub async fn command(ctx: &Backend, args: DoctorArgs) -> super::CmdResult {
    let roles = Roles {
        tick: args.tick_role,
        worker: args.worker_role,
    };
    let checked = doctor(ctx, &roles).await?;
    let mut refused = 0;
    for c in &checked {
        let name = c.identity.in_template();
        let ok = c.answers.iter().filter(|a| a.allowed).count();
        println!(
            "{name} ({}): {ok} of {} calls allowed",
            c.principal,
            c.answers.len()
        );
        for a in c.answers.iter().filter(|a| !a.allowed) {
            refused += 1;
            println!(
                "  refused ({}): {} on {} ({}); grant it to {name} (infra/augur.yaml)",
                a.decision, a.check.action, a.check.resource, a.check.path
            );
        }
    }
    if refused > 0 {
        eprintln!("augur: {refused} call(s) the paths make would be refused: add the grants above and deploy again");
        return Ok(2);
    }
    if roles.tick.is_none() || roles.worker.is_none() {
        eprintln!("(the tick's and the workers' roles are checked with --tick-role and --worker-role, or [aws] tick_role and worker_role in the config)");
    }
    Ok(0)
}
