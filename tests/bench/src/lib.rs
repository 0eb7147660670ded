//! What the search benchmarks share: their command line and their summaries.

/// The flags every benchmark takes: `--trials N --seeds K --first-seed S`, and
/// `--python PYTHON --optuna SCRIPT` to run Optuna in the same run.
pub struct Args {
    pub trials: u64,
    pub seeds: u64,
    /// Seeds `first..first + seeds`: another range checks that settings chosen on one
    /// set of seeds hold on others.
    pub first: u64,
    /// The Python and the script that runs Optuna, when both are given.
    pub optuna: Option<(String, String)>,
}

impl Args {
    pub fn parse() -> Args {
        let args: Vec<String> = std::env::args().collect();
        let arg = |name: &str| {
            args.iter()
                .position(|a| a == name)
                .and_then(|i| args.get(i + 1).cloned())
        };
        let number =
            |name: &str, default: u64| arg(name).and_then(|v| v.parse().ok()).unwrap_or(default);
        Args {
            trials: number("--trials", 100),
            seeds: number("--seeds", 10),
            first: number("--first-seed", 0),
            optuna: arg("--python").zip(arg("--optuna")),
        }
    }

    /// What the Optuna script is given: the same trials and seeds.
    pub fn passed_on(&self) -> Vec<String> {
        [
            "--trials".to_string(),
            self.trials.to_string(),
            "--seeds".to_string(),
            self.seeds.to_string(),
            "--first-seed".to_string(),
            self.first.to_string(),
        ]
        .to_vec()
    }
}

/// The first quartile, the median and the third quartile (linear interpolation).
pub fn quartiles(mut xs: Vec<f64>) -> (f64, f64, f64) {
    xs.sort_by(f64::total_cmp);
    let q = |p: f64| {
        let pos = p * (xs.len() - 1) as f64;
        let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
        xs[lo] + (xs[hi] - xs[lo]) * (pos - lo as f64)
    };
    (q(0.25), q(0.5), q(0.75))
}
