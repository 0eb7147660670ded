//! Several objectives at once: which points dominate which, the fronts they fall
//! in, how crowded a front is, how much of the objective space a front covers (its
//! hypervolume), and how far a point is from meeting its constraints.
//!
//! Every vector here is oriented so that smaller is better in each objective (a
//! maximized objective is negated first). Constraints follow Deb's rule: a feasible
//! point beats an infeasible one, and of two infeasible points the one violating
//! less (the sum of by how much each constraint is missed) is better.

/// Whether `a` dominates `b`: no worse in every objective and better in one.
pub fn dominates(a: &[f64], b: &[f64]) -> bool {
    let mut better = false;
    for (x, y) in a.iter().zip(b) {
        if x > y {
            return false;
        }
        better |= x < y;
    }
    better
}

/// Whether point `a` (objectives, total violation) beats point `b` under Deb's
/// constrained domination.
pub fn constrained_dominates(a: (&[f64], f64), b: (&[f64], f64)) -> bool {
    match (a.1 > 0.0, b.1 > 0.0) {
        (false, true) => true,
        (true, false) => false,
        (true, true) => a.1 < b.1,
        (false, false) => dominates(a.0, b.0),
    }
}

/// The points' fronts, best first (front 0 is the Pareto front, rank 1 as people
/// count): fast non-dominated sorting (Deb et al., 2002), under constrained
/// domination (`violations[i]`: point `i`'s total violation, 0 when feasible; empty
/// when the study has no constraints). Each front lists indices in ascending order.
pub fn fronts(points: &[Vec<f64>], violations: &[f64]) -> Vec<Vec<usize>> {
    let n = points.len();
    let v = |i: usize| violations.get(i).copied().unwrap_or(0.0);
    let beats = |i: usize, j: usize| constrained_dominates((&points[i], v(i)), (&points[j], v(j)));
    let mut beaten_by = vec![0usize; n];
    let mut beats_list: Vec<Vec<usize>> = vec![Vec::new(); n];
    for i in 0..n {
        for j in (i + 1)..n {
            if beats(i, j) {
                beats_list[i].push(j);
                beaten_by[j] += 1;
            } else if beats(j, i) {
                beats_list[j].push(i);
                beaten_by[i] += 1;
            }
        }
    }
    let mut out = Vec::new();
    let mut current: Vec<usize> = (0..n).filter(|&i| beaten_by[i] == 0).collect();
    while !current.is_empty() {
        let mut next = Vec::new();
        for &i in &current {
            for &j in &beats_list[i] {
                beaten_by[j] -= 1;
                if beaten_by[j] == 0 {
                    next.push(j);
                }
            }
        }
        next.sort_unstable();
        out.push(std::mem::replace(&mut current, next));
    }
    out
}

/// Each point's rank (1: on the Pareto front), by [`fronts`].
pub fn ranks(points: &[Vec<f64>], violations: &[f64]) -> Vec<usize> {
    let mut rank = vec![0; points.len()];
    for (r, front) in fronts(points, violations).iter().enumerate() {
        for &i in front {
            rank[i] = r + 1;
        }
    }
    rank
}

/// The crowding distance of each member of `front` (indices into `points`), in the
/// front's order: the sum over objectives of the gap between its two neighbours,
/// normalized by the front's range; infinite at either end of an objective, so a
/// front's extremes are always kept.
pub fn crowding(points: &[Vec<f64>], front: &[usize]) -> Vec<f64> {
    let n = front.len();
    let mut distance = vec![0.0; n];
    if n <= 2 {
        return vec![f64::INFINITY; n];
    }
    let dims = points[front[0]].len();
    let mut order: Vec<usize> = (0..n).collect();
    let columns: Vec<Vec<f64>> = (0..dims)
        .map(|m| front.iter().map(|&i| points[i][m]).collect())
        .collect();
    for column in &columns {
        let at = |k: usize| column[k];
        order.sort_by(|&a, &b| at(a).total_cmp(&at(b)));
        let (lo, hi) = (at(order[0]), at(order[n - 1]));
        distance[order[0]] = f64::INFINITY;
        distance[order[n - 1]] = f64::INFINITY;
        if hi <= lo {
            continue;
        }
        for k in 1..n - 1 {
            distance[order[k]] += (at(order[k + 1]) - at(order[k - 1])) / (hi - lo);
        }
    }
    distance
}

/// The hypervolume that `points` dominate, bounded by `reference` (a point worse
/// than every point counted: points not strictly better than it in every objective
/// add nothing). Exact: a sweep in two objectives, and in more the slicing of
/// Zitzler's HSO on the last objective (fast enough for the hundreds of points a
/// study's front holds).
pub fn hypervolume(points: &[Vec<f64>], reference: &[f64]) -> f64 {
    let inside: Vec<Vec<f64>> = points
        .iter()
        .filter(|p| p.iter().zip(reference).all(|(x, r)| x < r))
        .cloned()
        .collect();
    volume(inside, reference)
}

fn volume(mut points: Vec<Vec<f64>>, reference: &[f64]) -> f64 {
    if points.is_empty() {
        return 0.0;
    }
    match reference.len() {
        0 => 0.0,
        1 => points
            .iter()
            .map(|p| reference[0] - p[0])
            .fold(0.0, f64::max),
        2 => {
            points.sort_by(|a, b| a[0].total_cmp(&b[0]).then(a[1].total_cmp(&b[1])));
            let (mut area, mut floor) = (0.0, reference[1]);
            for p in &points {
                if p[1] < floor {
                    area += (reference[0] - p[0]) * (floor - p[1]);
                    floor = p[1];
                }
            }
            area
        }
        d => {
            // Slices along the last objective: between two consecutive values, the
            // points at or below the slice's bottom dominate the same d-1 volume.
            let last = d - 1;
            points.sort_by(|a, b| a[last].total_cmp(&b[last]));
            let mut total = 0.0;
            for k in 0..points.len() {
                let top = points.get(k + 1).map_or(reference[last], |p| p[last]);
                let depth = top - points[k][last];
                if depth <= 0.0 {
                    continue;
                }
                let below = points[..=k].iter().map(|p| p[..last].to_vec()).collect();
                total += depth * volume(nondominated(below), &reference[..last]);
            }
            total
        }
    }
}

/// The points no other point dominates (duplicates kept once).
fn nondominated(mut points: Vec<Vec<f64>>) -> Vec<Vec<f64>> {
    points.sort_by(|a, b| {
        a.iter()
            .zip(b)
            .map(|(x, y)| x.total_cmp(y))
            .find(|o| o.is_ne())
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    points.dedup();
    let keep: Vec<bool> = points
        .iter()
        .map(|p| !points.iter().any(|q| dominates(q, p)))
        .collect();
    points
        .into_iter()
        .zip(keep)
        .filter_map(|(p, k)| k.then_some(p))
        .collect()
}

/// The hypervolume of the front after each point in turn, bounded by `reference`
/// (`None`: a point that does not count, being infeasible or unfinished): the
/// history a study page draws, trial by trial. The front is kept as it grows, so a
/// point that changes nothing costs one scan of it.
pub fn history(points: &[Option<Vec<f64>>], reference: &[f64]) -> Vec<f64> {
    let mut front: Vec<Vec<f64>> = Vec::new();
    let mut hv = 0.0;
    points
        .iter()
        .map(|p| {
            if let Some(p) = p {
                if !front.iter().any(|q| q == p || dominates(q, p)) {
                    front.retain(|q| !dominates(p, q));
                    front.push(p.clone());
                    hv = hypervolume(&front, reference);
                }
            }
            hv
        })
        .collect()
}

/// A reference point for `points` when none is given: in each objective the worst
/// value, pushed out by a tenth of the range (or of its own size, at least 0.1,
/// where every point agrees), so every point counts. `None` for no points.
pub fn reference(points: &[Vec<f64>]) -> Option<Vec<f64>> {
    let first = points.first()?;
    Some(
        (0..first.len())
            .map(|k| {
                let (lo, hi) = points
                    .iter()
                    .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), p| {
                        (lo.min(p[k]), hi.max(p[k]))
                    });
                let span = hi - lo;
                hi + if span > 0.0 {
                    span / 10.0
                } else {
                    (hi.abs() / 10.0).max(0.1)
                }
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pts(v: &[&[f64]]) -> Vec<Vec<f64>> {
        v.iter().map(|p| p.to_vec()).collect()
    }

    #[test]
    fn domination_needs_one_strictly_better_and_none_worse() {
        assert!(dominates(&[1.0, 2.0], &[1.0, 3.0]));
        assert!(!dominates(&[1.0, 3.0], &[1.0, 3.0]));
        assert!(!dominates(&[0.0, 4.0], &[1.0, 3.0]));
    }

    #[test]
    fn fronts_rank_points_and_feasible_points_come_first() {
        let p = pts(&[
            &[1.0, 5.0],
            &[2.0, 2.0],
            &[5.0, 1.0],
            &[3.0, 3.0],
            &[4.0, 4.0],
        ]);
        assert_eq!(fronts(&p, &[]), vec![vec![0, 1, 2], vec![3], vec![4]]);
        assert_eq!(ranks(&p, &[]), vec![1, 1, 1, 2, 3]);
        // The best point by objectives is infeasible: it comes after every feasible
        // one, and of two infeasible points the smaller violation is better.
        let v = [0.0, 2.0, 0.0, 0.0, 1.0];
        assert_eq!(fronts(&p, &v), vec![vec![0, 2, 3], vec![4], vec![1]]);
    }

    #[test]
    fn crowding_keeps_the_ends_and_measures_the_gaps() {
        let p = pts(&[&[0.0, 4.0], &[1.0, 3.0], &[3.0, 1.0], &[4.0, 0.0]]);
        let d = crowding(&p, &[0, 1, 2, 3]);
        assert!(d[0].is_infinite() && d[3].is_infinite());
        // Point 1: (3 - 0) / 4 in each objective; point 2 the same.
        assert!(
            (d[1] - 1.5).abs() < 1e-12 && (d[2] - 1.5).abs() < 1e-12,
            "{d:?}"
        );
    }

    #[test]
    fn hypervolume_is_exact_in_two_and_three_objectives() {
        let p = pts(&[&[1.0, 3.0], &[2.0, 2.0], &[3.0, 1.0], &[3.5, 3.5]]);
        // Staircase under (4, 4): 3*1 + 2*1 + 1*1 = 6; (3.5, 3.5) is dominated.
        assert!((hypervolume(&p, &[4.0, 4.0]) - 6.0).abs() < 1e-12);
        // Points outside the reference add nothing.
        assert_eq!(hypervolume(&pts(&[&[5.0, 0.0]]), &[4.0, 4.0]), 0.0);
        // One box, and two overlapping boxes, in three objectives.
        let one = hypervolume(&pts(&[&[0.0, 0.0, 0.0]]), &[1.0, 2.0, 3.0]);
        assert!((one - 6.0).abs() < 1e-12);
        let two = pts(&[&[0.0, 0.0, 1.0], &[1.0, 1.0, 0.0]]);
        // 2*2*1 (first box) + 1*1*2 (second) - overlap 1*1*1 = 5.
        assert!((hypervolume(&two, &[2.0, 2.0, 2.0]) - 5.0).abs() < 1e-12);
    }

    #[test]
    fn hypervolume_matches_a_grid_count_on_random_points() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let p: Vec<Vec<f64>> = (0..12)
            .map(|_| (0..3).map(|_| rng.gen_range(0..10) as f64).collect())
            .collect();
        let mut cells = 0;
        for x in 0..10 {
            for y in 0..10 {
                for z in 0..10 {
                    let c = [x as f64, y as f64, z as f64];
                    cells += p.iter().any(|q| q.iter().zip(&c).all(|(a, b)| a <= b)) as u32;
                }
            }
        }
        assert_eq!(hypervolume(&p, &[10.0, 10.0, 10.0]), cells as f64);
    }

    #[test]
    fn the_history_grows_to_the_whole_front_hypervolume() {
        let all = pts(&[
            &[3.0, 1.0],
            &[2.0, 2.0],
            &[2.5, 2.5],
            &[1.0, 3.0],
            &[1.0, 1.0],
        ]);
        let reference = reference(&all).expect("points");
        assert_eq!(reference, vec![3.2, 3.2]);
        let mut seen: Vec<Option<Vec<f64>>> = all.iter().cloned().map(Some).collect();
        seen.insert(2, None);
        let h = history(&seen, &reference);
        assert_eq!(h.len(), 6);
        assert!(h.windows(2).all(|w| w[0] <= w[1]), "{h:?}");
        assert_eq!(h[2], h[1], "a point that does not count changes nothing");
        assert_eq!(h[3], h[2], "a dominated point changes nothing");
        for (k, v) in h.iter().enumerate() {
            let so_far: Vec<Vec<f64>> = seen[..=k].iter().flatten().cloned().collect();
            assert!((v - hypervolume(&so_far, &reference)).abs() < 1e-12, "{k}");
        }
        assert!((h[5] - 2.2 * 2.2).abs() < 1e-12, "(1,1) dominates the rest");
        assert_eq!(super::reference(&[]), None);
        assert_eq!(super::reference(&pts(&[&[0.0, 5.0]])), Some(vec![0.1, 5.5]));
    }
}
