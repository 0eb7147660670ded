//! `augur serve`: the status server (`crate::app::serve`) on its own.

use super::CmdResult;
use crate::app::access::Access;
use crate::app::backend::Backend;
use crate::app::serve::{bind, serve_on, App};
use crate::app::AppError;
use std::net::SocketAddr;
use std::sync::Arc;

#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// Where to listen. Anything but a loopback address exposes every study to the
    /// network: give one only behind your own access control.
    #[arg(long, default_value = "127.0.0.1:8080")]
    addr: SocketAddr,
    /// The bearer token clients must show when --addr is not a loopback address
    /// [default: a new random one, printed once].
    #[arg(long, env = "AUGUR_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

pub async fn command(ctx: Backend, args: ServeArgs) -> CmdResult {
    let listener = bind(args.addr).await?;
    let store = ctx.store().await?;
    let addr = listener
        .local_addr()
        .map_err(|e| AppError::unavailable(e.to_string()))?;
    let access = Access::for_addr(addr, args.token);
    let query = access
        .token()
        .map(|t| format!("?token={t}"))
        .unwrap_or_default();
    let app = Arc::new(App {
        access,
        backend: Arc::new(ctx),
        store,
        counters: None,
        importance: Default::default(),
        trials: Default::default(),
    });
    eprintln!(
        "augur: status pages on http://{addr}/{query} (API under /api, Prometheus text at /metrics)"
    );
    serve_on(app, listener, std::future::pending()).await?;
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Probe {
        #[command(flatten)]
        serve: ServeArgs,
    }

    #[test]
    fn the_status_server_binds_loopback_unless_told_otherwise() {
        let p = Probe::try_parse_from(["augur"]).expect("defaults");
        assert!(p.serve.addr.ip().is_loopback(), "{}", p.serve.addr);
        let p = Probe::try_parse_from(["augur", "--addr", "0.0.0.0:9000"]).expect("explicit");
        assert!(!p.serve.addr.ip().is_loopback());
    }
}
