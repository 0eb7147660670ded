//! Which parameters matter: permutation importance (Breiman, 2001) on the out-of-bag
//! predictions of a small random forest (smartcore's), fitted to the objective of the
//! trials that have a value.
//!
//! For each parameter, its column is shuffled and the forest's out-of-bag error
//! measured again: the more the error grows, the more the objective depends on that
//! parameter. Growths are floored at 0 and scaled to add up to 1. Out-of-bag rows were
//! not seen by the trees that predict them, so a forest that memorised noise gains
//! nothing from it.

use rand::seq::SliceRandom;
use rand::SeedableRng;
use smartcore::ensemble::random_forest_regressor::{
    RandomForestRegressor, RandomForestRegressorParameters,
};
use smartcore::linalg::basic::matrix::DenseMatrix;

/// Fewer trials with a value than this, and no importance is given.
pub const MIN_TRIALS: usize = 8;

/// The method, as the pages name it.
pub const METHOD: &str = "permutation importance on a random forest's out-of-bag error (100 trees)";

/// A study's data (its hash) and the importances computed from it.
type Remembered = (u64, Option<Vec<f64>>);

/// Importances already computed, by study, with a hash of the data they came from:
/// a page that polls an unchanged study costs no forest.
#[derive(Default)]
pub struct Memo {
    by_study: std::sync::Mutex<std::collections::HashMap<String, Remembered>>,
    /// How many forests were fitted (for tests and curiosity).
    pub fitted: std::sync::atomic::AtomicU64,
}

impl Memo {
    /// [`permutation_importance`] of `study`'s data, from the memo when the data is
    /// the same as last time.
    pub fn importance(
        &self,
        study: &str,
        rows: &[Vec<f64>],
        y: &[f64],
        seed: u64,
    ) -> Option<Vec<f64>> {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        seed.hash(&mut h);
        for v in rows.iter().flatten().chain(y) {
            v.to_bits().hash(&mut h);
        }
        rows.first().map_or(0, Vec::len).hash(&mut h);
        let key = h.finish();
        if let Ok(m) = self.by_study.lock() {
            if let Some((k, imp)) = m.get(study) {
                if *k == key {
                    return imp.clone();
                }
            }
        }
        let imp = permutation_importance(rows, y, seed);
        self.fitted
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if let Ok(mut m) = self.by_study.lock() {
            m.insert(study.to_string(), (key, imp.clone()));
        }
        imp
    }
}

/// The importance of each column of `rows` (one row per trial, one column per
/// parameter, numbers) for `y`, adding up to 1; `None` with too few rows, or when
/// nothing varies.
pub fn permutation_importance(rows: &[Vec<f64>], y: &[f64], seed: u64) -> Option<Vec<f64>> {
    let n = rows.len();
    let width = rows.first()?.len();
    if n < MIN_TRIALS || width == 0 || y.len() != n {
        return None;
    }
    let x = DenseMatrix::from_2d_vec(&rows.to_vec()).ok()?;
    let params = RandomForestRegressorParameters::default()
        .with_n_trees(100)
        .with_min_samples_leaf(2)
        .with_keep_samples(true)
        .with_seed(seed);
    let forest = RandomForestRegressor::fit(&x, &y.to_vec(), params).ok()?;
    let error = |x: &DenseMatrix<f64>| -> Option<f64> {
        let p: Vec<f64> = forest.predict_oob(x).ok()?;
        Some(p.iter().zip(y).map(|(a, b)| (a - b).powi(2)).sum::<f64>() / n as f64)
    };
    let base = error(&x)?;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut growth = Vec::with_capacity(width);
    for j in 0..width {
        // Averaged over a few shuffles: one can leave a small column nearly in place.
        let mut total = 0.0;
        for _ in 0..3 {
            let mut column: Vec<f64> = rows.iter().map(|r| r[j]).collect();
            column.shuffle(&mut rng);
            let shuffled: Vec<Vec<f64>> = rows
                .iter()
                .zip(&column)
                .map(|(r, v)| {
                    let mut r = r.clone();
                    r[j] = *v;
                    r
                })
                .collect();
            total += error(&DenseMatrix::from_2d_vec(&shuffled).ok()?)? - base;
        }
        growth.push((total / 3.0).max(0.0));
    }
    let sum: f64 = growth.iter().sum();
    (sum > 0.0 && sum.is_finite()).then(|| growth.iter().map(|g| g / sum).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::Rng;

    /// y = 10·a + 2·b + 0·c: `a` matters most, `b` some, `c` not at all.
    #[test]
    fn importances_follow_a_function_whose_importances_are_known() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let rows: Vec<Vec<f64>> = (0..120)
            .map(|_| (0..3).map(|_| rng.gen::<f64>()).collect())
            .collect();
        let y: Vec<f64> = rows.iter().map(|r| 10.0 * r[0] + 2.0 * r[1]).collect();
        let imp = permutation_importance(&rows, &y, 1).expect("importance");
        assert!((imp.iter().sum::<f64>() - 1.0).abs() < 1e-9, "{imp:?}");
        assert!(imp[0] > 0.75, "a dominates: {imp:?}");
        assert!(imp[1] > imp[2], "b matters more than c: {imp:?}");
        assert!(imp[2] < 0.03, "c does not matter: {imp:?}");
    }

    #[test]
    fn the_memo_fits_a_forest_only_when_the_data_changed() {
        let rows: Vec<Vec<f64>> = (0..20).map(|i| vec![i as f64, (i % 3) as f64]).collect();
        let mut y: Vec<f64> = rows.iter().map(|r| r[0] * 2.0).collect();
        let memo = Memo::default();
        let first = memo.importance("s", &rows, &y, 1);
        assert_eq!(memo.importance("s", &rows, &y, 1), first);
        assert_eq!(memo.fitted.load(std::sync::atomic::Ordering::Relaxed), 1);
        y[3] += 1.0;
        memo.importance("s", &rows, &y, 1);
        assert_eq!(memo.fitted.load(std::sync::atomic::Ordering::Relaxed), 2);
    }

    #[test]
    fn too_few_trials_or_nothing_varying_give_none() {
        let rows = vec![vec![1.0, 2.0]; MIN_TRIALS - 1];
        assert_eq!(
            permutation_importance(&rows, &[0.0; MIN_TRIALS - 1], 1),
            None
        );
        let rows = vec![vec![1.0, 2.0]; 20];
        assert_eq!(permutation_importance(&rows, &[3.0; 20], 1), None);
    }
}
