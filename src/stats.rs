//! Inter-rater agreement and label fusion (`crate::stats`).
//!
//! This module owns the pure numerics cohort uses to compare or combine the
//! annotations that several readers made of the same items (studies, lesions,
//! voxels):
//!
//! * agreement on categorical ratings: [`cohen_kappa`] (two raters) and
//!   [`fleiss_kappa`] (a fixed number of raters per item);
//! * overlap of two segmentations: [`dice`];
//! * consensus by voting: [`majority`] (per item) and [`majority_map`]
//!   (per voxel of label maps);
//! * consensus by expectation–maximisation: [`staple`] and [`staple_map`]
//!   (STAPLE / Dawid–Skene), which also estimate each reader's confusion
//!   matrix and the class priors.
//!
//! Everything here is pure: no I/O, no printing, no randomness, no global
//! state. No function panics on any input: every invalid input (nothing to
//! compute over, lengths that differ, too few raters, a category out of
//! range, an invalid parameter, a problem too large to allocate) is reported
//! as a [`StatsError`]. Results are deterministic and never depend on
//! hash-map iteration order.

use std::collections::{BTreeMap, HashMap};

/// Everything that can go wrong in this module.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StatsError {
    /// There is nothing to compute over (no items, no voxels).
    #[error("no items to compute over")]
    Empty,
    /// Two inputs that must have the same length do not; `index` is the
    /// position of the offending input (0 is the reference).
    #[error("length mismatch: input {index} has length {found}, expected {expected}")]
    LengthMismatch {
        index: usize,
        expected: usize,
        found: usize,
    },
    /// Fewer raters (readers) than the statistic needs.
    #[error("need at least {needed} raters, got {found}")]
    TooFewRaters { needed: usize, found: usize },
    /// Items were rated by different numbers of raters.
    #[error("item {item} has {found} ratings, expected {expected} (every item needs the same number of raters)")]
    RaggedRatings {
        item: usize,
        expected: usize,
        found: usize,
    },
    /// A rating is not one of the categories `0..k`.
    #[error("item {item}, rater {rater}: category {category} is not below k = {k}")]
    CategoryOutOfRange {
        item: usize,
        rater: usize,
        category: usize,
        k: usize,
    },
    /// A numeric parameter is out of its domain.
    #[error("invalid parameter `{name}`: {reason}")]
    InvalidParameter {
        name: &'static str,
        reason: &'static str,
    },
    /// The working tables would not fit in memory (or in their index type).
    #[error("problem too large: {0}")]
    TooLarge(&'static str),
}

/// Additive smoothing applied to every estimated probability in STAPLE
/// (`p ← (p + ε) / (1 + n·ε)` over a distribution of `n` outcomes), so that
/// no probability is exactly 0 and logarithms stay finite.
pub const STAPLE_SMOOTHING: f64 = 1e-6;

/// Cohen's kappa for two raters who rated the same items.
///
/// `a[i]` and `b[i]` are the categories the two raters gave item `i`;
/// categories are arbitrary `usize` values (only equality matters).
///
/// With `n` items, observed agreement `p_o = #{i : a[i] = b[i]} / n` and
/// chance agreement `p_e = Σ_c (n_a(c)/n)·(n_b(c)/n)` from the marginals,
///
/// `κ = (p_o − p_e) / (1 − p_e)`,
///
/// computed from exact integer counts as `(n·agree − Σ n_a n_b) / (n² − Σ n_a n_b)`.
/// The result lies in `[−1, 1]`.
///
/// Degenerate cases: `p_e = 1` happens only when both raters used one and
/// the same category for every item; then `p_o = 1` too and this returns
/// `1.0` (perfect, if uninformative, agreement). With one item that the
/// raters disagree on, `p_o = p_e = 0` and κ = 0.
///
/// Errors: [`StatsError::LengthMismatch`] when the lengths differ,
/// [`StatsError::Empty`] when there are no items.
///
/// Reference: J. Cohen, "A coefficient of agreement for nominal scales",
/// Educational and Psychological Measurement 20(1):37–46, 1960.
pub fn cohen_kappa(a: &[usize], b: &[usize]) -> Result<f64, StatsError> {
    if a.len() != b.len() {
        return Err(StatsError::LengthMismatch {
            index: 1,
            expected: a.len(),
            found: b.len(),
        });
    }
    if a.is_empty() {
        return Err(StatsError::Empty);
    }
    let mut marginals: BTreeMap<usize, (u64, u64)> = BTreeMap::new();
    let mut agree: u64 = 0;
    for (&x, &y) in a.iter().zip(b) {
        agree += u64::from(x == y);
        marginals.entry(x).or_default().0 += 1;
        marginals.entry(y).or_default().1 += 1;
    }
    // A slice of n usizes occupies 8n bytes < 2^63, so n < 2^60 and n² fits i128.
    let n = a.len() as i128;
    let chance: i128 = marginals
        .values()
        .map(|&(na, nb)| i128::from(na) * i128::from(nb))
        .sum();
    let denominator = n * n - chance;
    if denominator == 0 {
        return Ok(1.0);
    }
    let numerator = n * i128::from(agree) - chance;
    Ok(numerator as f64 / denominator as f64)
}

/// Fleiss' kappa for `N` items each rated by the same number `n ≥ 2` of raters.
///
/// `ratings[i][j]` is the category rater slot `j` gave item `i` (the raters
/// need not be the same people across items). With `n_ic` the number of
/// ratings of category `c` on item `i`:
///
/// * `P_i = (Σ_c n_ic² − n) / (n(n − 1))`, `P̄ = (1/N) Σ_i P_i`;
/// * `p_c = (1/(N n)) Σ_i n_ic`, `P̄_e = Σ_c p_c²`;
/// * `κ = (P̄ − P̄_e) / (1 − P̄_e)`.
///
/// Degenerate case: `P̄_e = 1` happens only when every rating is the same
/// category; then `P̄ = 1` too and this returns `1.0`.
///
/// Errors: [`StatsError::Empty`] (no items), [`StatsError::TooFewRaters`]
/// (fewer than 2 ratings per item), [`StatsError::RaggedRatings`] (items
/// with different numbers of ratings).
///
/// Reference: J. L. Fleiss, "Measuring nominal scale agreement among many
/// raters", Psychological Bulletin 76(5):378–382, 1971.
pub fn fleiss_kappa(ratings: &[Vec<usize>]) -> Result<f64, StatsError> {
    let n = check_rectangular(ratings, 2)?;
    let mut totals: BTreeMap<usize, u128> = BTreeMap::new();
    let mut sum_sq: u128 = 0;
    let mut sorted: Vec<usize> = Vec::with_capacity(n);
    for item in ratings {
        sorted.clear();
        sorted.extend_from_slice(item);
        sorted.sort_unstable();
        for run in sorted.chunk_by(|x, y| x == y) {
            let count = run.len() as u128;
            sum_sq += count * count;
            *totals.entry(run[0]).or_default() += count;
        }
    }
    if totals.len() == 1 {
        return Ok(1.0);
    }
    let m = (ratings.len() as f64) * (n as f64); // N·n ratings in all
    let n = n as f64;
    let p_bar = (sum_sq as f64 - m) / (m * (n - 1.0));
    let p_e: f64 = totals
        .values()
        .map(|&t| {
            let p = t as f64 / m;
            p * p
        })
        .sum();
    Ok((p_bar - p_e) / (1.0 - p_e))
}

/// Dice similarity coefficient of two masks of the same length, for one label.
///
/// The foreground sets are `A = {i : a[i] = label}` and `B = {i : b[i] = label}`
/// for `label ≠ 0`; for `label = 0` the masks are read as binary masks and
/// the foreground is every nonzero value (`A = {i : a[i] ≠ 0}`).
///
/// `DSC = 2|A ∩ B| / (|A| + |B|)`; when both foregrounds are empty the masks
/// agree perfectly and this returns `1.0`.
///
/// Errors: [`StatsError::LengthMismatch`], [`StatsError::Empty`] (zero-length masks).
///
/// Reference: L. R. Dice, "Measures of the amount of ecologic association
/// between species", Ecology 26(3):297–302, 1945.
pub fn dice(a: &[u8], b: &[u8], label: u8) -> Result<f64, StatsError> {
    if a.len() != b.len() {
        return Err(StatsError::LengthMismatch {
            index: 1,
            expected: a.len(),
            found: b.len(),
        });
    }
    if a.is_empty() {
        return Err(StatsError::Empty);
    }
    let (size_a, size_b, both) = if label == 0 {
        overlap(a, b, |v| v != 0)
    } else {
        overlap(a, b, |v| v == label)
    };
    if size_a + size_b == 0 {
        return Ok(1.0);
    }
    Ok(2.0 * both as f64 / (size_a + size_b) as f64)
}

fn overlap(a: &[u8], b: &[u8], is_fg: impl Fn(u8) -> bool) -> (u64, u64, u64) {
    let (mut size_a, mut size_b, mut both) = (0u64, 0u64, 0u64);
    for (&x, &y) in a.iter().zip(b) {
        let (fx, fy) = (is_fg(x), is_fg(y));
        size_a += u64::from(fx);
        size_b += u64::from(fy);
        both += u64::from(fx && fy);
    }
    (size_a, size_b, both)
}

/// Per-item plurality vote.
///
/// `votes[i]` holds the categories the raters gave item `i` (items may have
/// different numbers of votes). The result for item `i` is `Some(c)` when
/// category `c` received strictly more votes than every other category, and
/// `None` on a tie for first place or when the item has no votes. (A
/// "majority" here is the plurality winner; for a strict more-than-half rule
/// on label maps see [`majority_map`].) This never fails.
///
/// Formula: `winner(i) = argmax_c #{j : votes[i][j] = c}` if the maximum is unique.
pub fn majority(votes: &[Vec<usize>]) -> Vec<Option<usize>> {
    let mut sorted: Vec<usize> = Vec::new();
    votes
        .iter()
        .map(|item| {
            sorted.clear();
            sorted.extend_from_slice(item);
            sorted.sort_unstable();
            let mut best: Option<usize> = None;
            let mut best_count = 0usize;
            let mut tie = false;
            for run in sorted.chunk_by(|x, y| x == y) {
                if run.len() > best_count {
                    best = Some(run[0]);
                    best_count = run.len();
                    tie = false;
                } else if run.len() == best_count {
                    tie = true;
                }
            }
            if tie {
                None
            } else {
                best
            }
        })
        .collect()
}

/// Voxel-wise majority of label maps from several readers.
///
/// All maps must have the same length. Voxel `v` of the result is `L` when
/// strictly more than half of the `R` readers gave it `L`
/// (`2·#{r : maps[r][v] = L} > R`), and `0` (background) otherwise. With a
/// single reader the result is a copy of its map.
///
/// Errors: [`StatsError::TooFewRaters`] (no maps),
/// [`StatsError::LengthMismatch`], [`StatsError::Empty`] (zero-length maps).
///
/// The candidate is found with the Boyer–Moore majority vote (R. S. Boyer,
/// J S. Moore, "MJRTY — a fast majority vote algorithm", 1981) and then
/// counted, so each voxel costs `O(R)`; voxels are processed in blocks.
pub fn majority_map(maps: &[&[u8]]) -> Result<Vec<u8>, StatsError> {
    let n = check_maps(maps, 1)?;
    let readers = maps.len();
    let mut out = try_filled(n, 0u8, "consensus map")?;
    if readers > usize::from(u8::MAX) {
        for (i, dst) in out.iter_mut().enumerate() {
            let (mut candidate, mut balance) = (0u8, 0usize);
            for m in maps {
                let v = m[i];
                if balance == 0 {
                    candidate = v;
                }
                if balance == 0 || v == candidate {
                    balance += 1;
                } else {
                    balance -= 1;
                }
            }
            let count = maps.iter().filter(|m| m[i] == candidate).count();
            if 2 * count > readers {
                *dst = candidate;
            }
        }
        return Ok(out);
    }
    // At most 255 readers: byte counters, block by block and reader by
    // reader, so the inner loops are branch-free and vectorise.
    let half = (readers / 2) as u8; // count > readers/2  ⇔  count > ⌊readers/2⌋
    let mut candidate = [0u8; BLOCK];
    let mut balance = [0u8; BLOCK];
    for (chunk, dst) in out.chunks_mut(BLOCK).enumerate() {
        let start = chunk * BLOCK;
        let len = dst.len();
        let (candidate, balance) = (&mut candidate[..len], &mut balance[..len]);
        balance.fill(0);
        for m in maps {
            let src = &m[start..start + len];
            for ((c, b), &v) in candidate.iter_mut().zip(balance.iter_mut()).zip(src) {
                // Branch-free: fresh = 0xFF when the balance is 0, else 0.
                let fresh = 0u8.wrapping_sub(u8::from(*b == 0));
                *c = (v & fresh) | (*c & !fresh);
                // +1 when v matches the (possibly new) candidate, else −1.
                let same = 0u8.wrapping_sub(u8::from(v == *c));
                *b = b.wrapping_add((same & 2).wrapping_sub(1));
            }
        }
        balance.fill(0);
        for m in maps {
            let src = &m[start..start + len];
            for ((b, &c), &v) in balance.iter_mut().zip(candidate.iter()).zip(src) {
                *b = b.wrapping_add(u8::from(v == c));
            }
        }
        for ((o, &c), &b) in dst.iter_mut().zip(candidate.iter()).zip(balance.iter()) {
            *o = if b > half { c } else { 0 };
        }
    }
    Ok(out)
}

/// Result of [`staple`] / [`staple_map`].
#[derive(Debug, Clone, PartialEq)]
pub struct StapleResult {
    /// Per item: the category with the highest posterior probability
    /// (lowest category on a tie). Empty for [`staple_map`].
    pub labels: Vec<usize>,
    /// Per item: the posterior probability of `labels[i]`. Empty for [`staple_map`].
    pub confidence: Vec<f64>,
    /// `theta[r][t][g]` = estimated P(rater `r` says `g` | true category `t`);
    /// each `theta[r][t]` sums to 1.
    pub theta: Vec<Vec<Vec<f64>>>,
    /// Estimated prior probability of each true category; sums to 1.
    pub prior: Vec<f64>,
    /// Number of EM iterations (one E-step plus one M-step each) performed.
    pub iterations: usize,
    /// Whether the largest parameter change of the last iteration was `≤ tol`.
    pub converged: bool,
}

/// Multi-class STAPLE: consensus categories and per-rater confusion matrices by EM.
///
/// `votes[i][r]` is the category in `0..k` that rater `r` gave item `i`;
/// every item must be rated by the same `R ≥ 2` raters. The model (Dawid &
/// Skene 1979; STAPLE, Warfield et al. 2004, in its multi-label form,
/// Rohlfing et al. 2004) has a hidden true category `t_i` with prior `π_t`,
/// and rater `r` reports `g` with probability `θ_r[t][g]`, independently
/// across raters. EM alternates:
///
/// * E-step: `W_i(t) = π_t Π_r θ_r[t][votes[i][r]] / Σ_s π_s Π_r θ_r[s][votes[i][r]]`
///   (as products; in log space for an item whose unnormalised mass is
///   below 1e-200, e.g. with very many raters);
/// * M-step: `θ_r[t][g] = Σ_{i: votes[i][r] = g} W_i(t) / Σ_i W_i(t)` and
///   `π_t = Σ_i W_i(t) / N`, each distribution then smoothed as
///   `p ← (p + ε)/(1 + k·ε)` with `ε =` [`STAPLE_SMOOTHING`] so that no
///   probability is 0 (a true category with no weight at all gets a uniform row).
///
/// Initialisation: `W_i(t)` = fraction of the raters that voted `t` on item `i`
/// (soft majority vote), followed by an M-step. Then up to `max_iter`
/// iterations run; after each one the largest absolute change of any `θ` or
/// `π` entry is compared with `tol`, and the loop stops (`converged = true`)
/// when it is `≤ tol`. A final E-step with the last parameters gives the
/// posteriors: `labels[i] = argmax_t W_i(t)` (lowest `t` on a tie) and
/// `confidence[i] = W_i(labels[i])`. `max_iter = 0` returns the posteriors of
/// the majority-initialised parameters with `converged = false`.
///
/// Items with identical vote vectors are merged into weighted patterns
/// (sorted lexicographically) before EM; this is exact, and makes the output
/// bit-for-bit independent of the order of the items.
///
/// Errors: [`StatsError::Empty`] (no items), [`StatsError::TooFewRaters`]
/// (`R < 2`), [`StatsError::RaggedRatings`], [`StatsError::CategoryOutOfRange`]
/// (a vote `≥ k`), [`StatsError::InvalidParameter`] (`k = 0`, `tol` negative
/// or NaN), [`StatsError::TooLarge`] (tables that cannot be allocated).
///
/// References: A. P. Dawid, A. M. Skene, "Maximum likelihood estimation of
/// observer error-rates using the EM algorithm", Applied Statistics 28(1):20–28,
/// 1979; S. K. Warfield, K. H. Zou, W. M. Wells, "Simultaneous truth and
/// performance level estimation (STAPLE)", IEEE TMI 23(7):903–921, 2004;
/// T. Rohlfing, D. B. Russakoff, C. R. Maurer, "Performance-based classifier
/// combination in atlas-based image segmentation using
/// expectation-maximization parameter estimation", IEEE TMI 23(8):983–994, 2004.
pub fn staple(
    votes: &[Vec<usize>],
    k: usize,
    max_iter: usize,
    tol: f64,
) -> Result<StapleResult, StatsError> {
    check_k(k)?;
    check_tol(tol)?;
    let r = check_rectangular(votes, 2)?;
    for (item, row) in votes.iter().enumerate() {
        if let Some((rater, &category)) = row.iter().enumerate().find(|(_, &c)| c >= k) {
            return Err(StatsError::CategoryOutOfRange {
                item,
                rater,
                category,
                k,
            });
        }
    }
    let n = votes.len();
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_unstable_by(|&x, &y| votes[x].cmp(&votes[y]));
    let mut patterns: Vec<usize> = Vec::new();
    let mut weights: Vec<f64> = Vec::new();
    let mut item_pattern = try_filled(n, 0usize, "item index")?;
    let mut previous: Option<&[usize]> = None;
    for &i in &order {
        let v = votes[i].as_slice();
        if previous != Some(v) {
            patterns.extend_from_slice(v);
            weights.push(0.0);
            previous = Some(v);
        }
        if let Some(w) = weights.last_mut() {
            *w += 1.0;
        }
        item_pattern[i] = weights.len().saturating_sub(1);
    }
    let fit = em(&patterns, &weights, r, k, max_iter, tol)?;
    let labels = item_pattern.iter().map(|&p| fit.labels[p]).collect();
    let confidence = item_pattern.iter().map(|&p| fit.confidence[p]).collect();
    Ok(StapleResult {
        labels,
        confidence,
        theta: fit.theta,
        prior: fit.prior,
        iterations: fit.iterations,
        converged: fit.converged,
    })
}

/// STAPLE for label maps: the consensus label map of several readers' maps.
///
/// `maps[r][v]` is the label reader `r` gave voxel `v`; all maps must have the
/// same nonzero length and there must be `R ≥ 2` readers. The categories are
/// `0..k` with `k = 1 + the largest label present`, so `theta[r][t][g]` and
/// `prior[t]` are indexed by label value. The model, initialisation,
/// smoothing, convergence rule and tie rule are exactly those of [`staple`],
/// and the result equals `staple(votes, k, max_iter, tol)` on the per-voxel
/// vote vectors.
///
/// Returns the consensus map (`argmax_t W_v(t)` per voxel) and a
/// [`StapleResult`] whose `theta`, `prior`, `iterations` and `converged` are
/// filled in but whose per-item `labels` and `confidence` are left **empty**
/// (the consensus map is the per-voxel label; per-voxel confidences would
/// cost 8 bytes a voxel).
///
/// Speed: voxels are compressed into their distinct vote patterns with
/// counts, EM runs on the weighted patterns (its cost is independent of the
/// number of voxels), and the labels are expanded back in a second pass.
/// When `R · b ≤ 64`, with `b` the bits of the largest label, a voxel's votes
/// are packed into an integer key (`b` bits a reader, reader 0 most
/// significant), block by block. Keys of at most 16 bits (e.g. 4 readers
/// and labels < 16, or 8 readers and labels < 4) are counted in a directly
/// indexed table; longer ones go through an open-addressing hash table with
/// a previous-voxel cache. When the votes do not fit 64 bits a
/// `HashMap<Vec<u8>, _>` is used. Distinct patterns are sorted
/// lexicographically before EM, so no hash order reaches the output. Memory
/// beyond the inputs and the output is at most a few MiB of tables plus
/// `O(P · (k + R))` for `P` distinct patterns; each EM iteration costs
/// `O(P · k · R + R · k²)`.
///
/// Errors: [`StatsError::TooFewRaters`] (`R < 2`), [`StatsError::LengthMismatch`],
/// [`StatsError::Empty`] (zero-length maps), [`StatsError::InvalidParameter`]
/// (`tol` negative or NaN), [`StatsError::TooLarge`].
///
/// References: as for [`staple`].
pub fn staple_map(
    maps: &[&[u8]],
    max_iter: usize,
    tol: f64,
) -> Result<(Vec<u8>, StapleResult), StatsError> {
    check_tol(tol)?;
    let n = check_maps(maps, 2)?;
    let k = maps
        .iter()
        .filter_map(|m| m.iter().copied().max())
        .max()
        .map_or(1, |m| usize::from(m) + 1);
    // Bits needed for the largest label (at least 1).
    let bits = (usize::BITS - (k - 1).leading_zeros()).max(1);
    let (out, fit) = if bits as usize * maps.len() <= 64 {
        staple_map_packed(maps, n, k, bits, max_iter, tol)?
    } else {
        staple_map_general(maps, n, k, max_iter, tol)?
    };
    Ok((
        out,
        StapleResult {
            labels: Vec::new(),
            confidence: Vec::new(),
            theta: fit.theta,
            prior: fit.prior,
            iterations: fit.iterations,
            converged: fit.converged,
        },
    ))
}

// ---------------------------------------------------------------------------
// Validation and allocation helpers

fn check_k(k: usize) -> Result<(), StatsError> {
    if k == 0 {
        return Err(StatsError::InvalidParameter {
            name: "k",
            reason: "there must be at least one category",
        });
    }
    Ok(())
}

fn check_tol(tol: f64) -> Result<(), StatsError> {
    if tol.is_nan() || tol < 0.0 {
        return Err(StatsError::InvalidParameter {
            name: "tol",
            reason: "must be a non-negative number",
        });
    }
    Ok(())
}

/// Checks `rows` is non-empty and rectangular with at least `min_raters`
/// columns; returns the number of columns.
fn check_rectangular(rows: &[Vec<usize>], min_raters: usize) -> Result<usize, StatsError> {
    let first = rows.first().ok_or(StatsError::Empty)?;
    let r = first.len();
    if r < min_raters {
        return Err(StatsError::TooFewRaters {
            needed: min_raters,
            found: r,
        });
    }
    if let Some((item, row)) = rows.iter().enumerate().find(|(_, row)| row.len() != r) {
        return Err(StatsError::RaggedRatings {
            item,
            expected: r,
            found: row.len(),
        });
    }
    Ok(r)
}

/// Checks there are at least `min_readers` maps, all of one nonzero length;
/// returns that length.
fn check_maps(maps: &[&[u8]], min_readers: usize) -> Result<usize, StatsError> {
    if maps.len() < min_readers {
        return Err(StatsError::TooFewRaters {
            needed: min_readers,
            found: maps.len(),
        });
    }
    let n = maps.first().map_or(0, |m| m.len());
    if let Some((index, m)) = maps.iter().enumerate().find(|(_, m)| m.len() != n) {
        return Err(StatsError::LengthMismatch {
            index,
            expected: n,
            found: m.len(),
        });
    }
    if n == 0 {
        return Err(StatsError::Empty);
    }
    Ok(n)
}

/// `vec![value; len]`, but reporting allocation failure instead of aborting.
fn try_filled<T: Clone>(len: usize, value: T, what: &'static str) -> Result<Vec<T>, StatsError> {
    let mut v = Vec::new();
    v.try_reserve_exact(len)
        .map_err(|_| StatsError::TooLarge(what))?;
    v.resize(len, value);
    Ok(v)
}

// ---------------------------------------------------------------------------
// EM core (shared by `staple` and `staple_map`)

struct Fit {
    /// Per pattern.
    labels: Vec<usize>,
    /// Per pattern.
    confidence: Vec<f64>,
    theta: Vec<Vec<Vec<f64>>>,
    prior: Vec<f64>,
    iterations: usize,
    converged: bool,
}

/// Dawid–Skene EM on weighted vote patterns.
///
/// `patterns` is `weights.len()` rows of `r` votes, each `< k`; `weights`
/// are the (positive) multiplicities. Internally the confusion matrices are
/// laid out `[rater][given][true]` so both steps run over contiguous rows of
/// length `k`.
fn em(
    patterns: &[usize],
    weights: &[f64],
    r: usize,
    k: usize,
    max_iter: usize,
    tol: f64,
) -> Result<Fit, StatsError> {
    if r == 0 || k == 0 || patterns.len() != weights.len().saturating_mul(r) {
        return Err(StatsError::InvalidParameter {
            name: "patterns",
            reason: "internal: malformed pattern table",
        });
    }
    if patterns.iter().any(|&g| g >= k) {
        return Err(StatsError::InvalidParameter {
            name: "patterns",
            reason: "internal: category out of range",
        });
    }
    let too_large = StatsError::TooLarge("confusion matrices");
    let pk = weights
        .len()
        .checked_mul(k)
        .ok_or(StatsError::TooLarge("posterior table"))?;
    let rkk = r
        .checked_mul(k)
        .and_then(|x| x.checked_mul(k))
        .ok_or(too_large)?;

    // The k²-sized tables first: an absurd k fails here, before anything is written.
    let mut theta = try_filled(rkk, 0.0f64, "confusion matrices")?;
    let mut next_theta = try_filled(rkk, 0.0f64, "confusion matrices")?;
    let mut log_theta = try_filled(rkk, 0.0f64, "confusion matrices")?;
    let mut post = try_filled(pk, 0.0f64, "posterior table")?;
    let share = 1.0 / r as f64;
    for (row, pattern) in post.chunks_exact_mut(k).zip(patterns.chunks_exact(r)) {
        for &g in pattern {
            row[g] += share;
        }
    }
    let mut prior = vec![0.0f64; k];
    m_step(patterns, weights, &post, r, k, &mut theta, &mut prior);

    let mut next_prior = vec![0.0f64; k];
    let mut log_prior = vec![0.0f64; k];
    let mut iterations = 0usize;
    let mut converged = false;
    while iterations < max_iter {
        e_step(patterns, r, k, &theta, &prior, &mut log_theta, &mut log_prior, &mut post);
        m_step(patterns, weights, &post, r, k, &mut next_theta, &mut next_prior);
        iterations += 1;
        let delta = max_abs_diff(&theta, &next_theta).max(max_abs_diff(&prior, &next_prior));
        std::mem::swap(&mut theta, &mut next_theta);
        std::mem::swap(&mut prior, &mut next_prior);
        if delta <= tol {
            converged = true;
            break;
        }
    }
    e_step(patterns, r, k, &theta, &prior, &mut log_theta, &mut log_prior, &mut post);

    let (labels, confidence): (Vec<usize>, Vec<f64>) = post.chunks_exact(k).map(argmax).unzip();
    let theta_out = theta
        .chunks_exact(k * k)
        .map(|block| {
            (0..k)
                .map(|t| (0..k).map(|g| block[g * k + t]).collect())
                .collect()
        })
        .collect();
    Ok(Fit {
        labels,
        confidence,
        theta: theta_out,
        prior,
        iterations,
        converged,
    })
}

/// M-step: weighted counts, then per-(rater, true) normalisation over `given`
/// with smoothing; priors likewise.
fn m_step(
    patterns: &[usize],
    weights: &[f64],
    post: &[f64],
    r: usize,
    k: usize,
    theta: &mut [f64],
    prior: &mut [f64],
) {
    theta.fill(0.0);
    prior.fill(0.0);
    for ((row, pattern), &w) in post
        .chunks_exact(k)
        .zip(patterns.chunks_exact(r))
        .zip(weights)
    {
        for (acc, &p) in prior.iter_mut().zip(row) {
            *acc += w * p;
        }
        for (rater, &g) in pattern.iter().enumerate() {
            let start = (rater * k + g) * k;
            if let Some(dst) = theta.get_mut(start..start + k) {
                for (acc, &p) in dst.iter_mut().zip(row) {
                    *acc += w * p;
                }
            }
        }
    }
    let kf = k as f64;
    let uniform = 1.0 / kf;
    let scale = 1.0 + kf * STAPLE_SMOOTHING;
    for block in theta.chunks_exact_mut(k * k) {
        for t in 0..k {
            let total: f64 = block.iter().skip(t).step_by(k).sum();
            for cell in block.iter_mut().skip(t).step_by(k) {
                let p = if total > 0.0 { *cell / total } else { uniform };
                *cell = (p + STAPLE_SMOOTHING) / scale;
            }
        }
    }
    let total: f64 = prior.iter().sum();
    for cell in prior.iter_mut() {
        let p = if total > 0.0 { *cell / total } else { uniform };
        *cell = (p + STAPLE_SMOOTHING) / scale;
    }
}

/// Below this, a pattern's unnormalised posterior mass is recomputed in log
/// space (products of many small probabilities could lose precision to
/// subnormals or underflow to 0).
const LINEAR_MIN_MASS: f64 = 1e-200;

/// E-step: `post[p][t] ∝ π_t Π_r θ_r[t][pattern[p][r]]`, as products (no
/// `exp` in the common case), falling back to log space for a pattern whose
/// unnormalised mass is below [`LINEAR_MIN_MASS`].
#[allow(clippy::too_many_arguments)]
fn e_step(
    patterns: &[usize],
    r: usize,
    k: usize,
    theta: &[f64],
    prior: &[f64],
    log_theta: &mut [f64],
    log_prior: &mut [f64],
    post: &mut [f64],
) {
    let mut logs_ready = false;
    for (row, pattern) in post.chunks_exact_mut(k).zip(patterns.chunks_exact(r)) {
        row.copy_from_slice(prior);
        for (rater, &g) in pattern.iter().enumerate() {
            let start = (rater * k + g) * k;
            if let Some(th) = theta.get(start..start + k) {
                for (s, &t) in row.iter_mut().zip(th) {
                    *s *= t;
                }
            }
        }
        let sum: f64 = row.iter().sum();
        if sum > LINEAR_MIN_MASS {
            let scale = 1.0 / sum;
            for s in row.iter_mut() {
                *s *= scale;
            }
            continue;
        }
        if !logs_ready {
            for (l, &t) in log_theta.iter_mut().zip(theta) {
                *l = t.ln();
            }
            for (l, &p) in log_prior.iter_mut().zip(prior) {
                *l = p.ln();
            }
            logs_ready = true;
        }
        row.copy_from_slice(log_prior);
        for (rater, &g) in pattern.iter().enumerate() {
            let start = (rater * k + g) * k;
            if let Some(lt) = log_theta.get(start..start + k) {
                for (s, &l) in row.iter_mut().zip(lt) {
                    *s += l;
                }
            }
        }
        let max = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let mut sum = 0.0;
        for s in row.iter_mut() {
            *s = (*s - max).exp();
            sum += *s;
        }
        for s in row.iter_mut() {
            *s /= sum;
        }
    }
}

fn max_abs_diff(a: &[f64], b: &[f64]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}

/// Index and value of the first maximum (lowest index on a tie).
fn argmax(row: &[f64]) -> (usize, f64) {
    let mut best = (0usize, f64::NEG_INFINITY);
    for (i, &v) in row.iter().enumerate() {
        if v > best.1 {
            best = (i, v);
        }
    }
    best
}

// ---------------------------------------------------------------------------
// Label-map pattern compression

/// Voxels processed per block when packing keys.
const BLOCK: usize = 4096;
/// Packed keys of at most this many bits are counted in a direct table.
const DIRECT_MAX_BITS: u32 = 16;
const EMPTY_SLOT: u32 = u32::MAX;

/// Open-addressing hash table `u64 key → u32 id` (linear probing,
/// Fibonacci hashing, load factor ≤ 1/2). Only lookups are used; its slot
/// order never reaches any output.
struct KeyTable {
    keys: Vec<u64>,
    ids: Vec<u32>,
    shift: u32,
    len: usize,
}

impl KeyTable {
    fn with_bits(bits: u32) -> Result<Self, StatsError> {
        if !(1..=40).contains(&bits) {
            return Err(StatsError::TooLarge("pattern table"));
        }
        let cap = 1usize << bits;
        Ok(KeyTable {
            keys: try_filled(cap, 0u64, "pattern table")?,
            ids: try_filled(cap, EMPTY_SLOT, "pattern table")?,
            shift: 64 - bits,
            len: 0,
        })
    }

    #[inline]
    fn slot(&self, key: u64) -> usize {
        (key.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> self.shift) as usize
    }

    #[inline]
    fn get(&self, key: u64) -> Option<u32> {
        let mask = self.ids.len() - 1;
        let mut i = self.slot(key);
        loop {
            let id = self.ids[i];
            if id == EMPTY_SLOT {
                return None;
            }
            if self.keys[i] == key {
                return Some(id);
            }
            i = (i + 1) & mask;
        }
    }

    /// Inserts a key known to be absent.
    fn insert(&mut self, key: u64, id: u32) -> Result<(), StatsError> {
        if (self.len + 1) * 2 > self.ids.len() {
            let mut bigger = KeyTable::with_bits(64 - self.shift + 1)?;
            for (&k, &v) in self.keys.iter().zip(&self.ids) {
                if v != EMPTY_SLOT {
                    bigger.place(k, v);
                }
            }
            bigger.len = self.len;
            *self = bigger;
        }
        self.place(key, id);
        self.len += 1;
        Ok(())
    }

    fn place(&mut self, key: u64, id: u32) {
        let mask = self.ids.len() - 1;
        let mut i = self.slot(key);
        while self.ids[i] != EMPTY_SLOT {
            i = (i + 1) & mask;
        }
        self.keys[i] = key;
        self.ids[i] = id;
    }
}

/// An unsigned integer type that packed vote vectors are stored in.
trait PackedKey:
    Copy + Default + From<u8> + Into<u64> + std::ops::Shl<u32, Output = Self> + std::ops::BitOr<Output = Self>
{
}
impl PackedKey for u8 {}
impl PackedKey for u16 {}
impl PackedKey for u32 {}
impl PackedKey for u64 {}

/// Packs voxels `start..start + keys.len()` of the maps into keys,
/// `bits` bits per reader, reader 0 most significant, so that numeric
/// order of keys is lexicographic order of the vote vectors.
/// Requires `bits · maps.len()` to fit in `T` and every label `< 2^bits`.
fn pack_keys<T: PackedKey>(maps: &[&[u8]], bits: u32, start: usize, keys: &mut [T]) {
    keys.fill(T::default());
    for m in maps {
        if let Some(src) = m.get(start..start + keys.len()) {
            for (key, &v) in keys.iter_mut().zip(src) {
                *key = (*key << bits) | T::from(v);
            }
        }
    }
}

/// Runs `visit(start, keys)` on the packed keys of all voxels, in order,
/// block by block.
fn for_each_key<T: PackedKey>(
    maps: &[&[u8]],
    bits: u32,
    n: usize,
    mut visit: impl FnMut(usize, &[T]) -> Result<(), StatsError>,
) -> Result<(), StatsError> {
    let mut block = [T::default(); BLOCK];
    let mut start = 0;
    while start < n {
        let keys = &mut block[..BLOCK.min(n - start)];
        pack_keys(maps, bits, start, keys);
        visit(start, keys)?;
        start += keys.len();
    }
    Ok(())
}

/// The direct-table path of [`staple_map_packed`], with keys of type `T`.
fn staple_map_direct<T: PackedKey>(
    maps: &[&[u8]],
    n: usize,
    k: usize,
    bits: u32,
    max_iter: usize,
    tol: f64,
) -> Result<(Vec<u8>, Fit), StatsError> {
    let r = maps.len();
    let size = 1usize << (bits * r as u32);
    // Four interleaved histograms, so runs of one key do not serialise on
    // a single counter.
    let mut counts = try_filled(4 * size, 0u64, "pattern table")?;
    for_each_key(maps, bits, n, |_, keys: &[T]| {
        let mut quads = keys.chunks_exact(4);
        for q in &mut quads {
            counts[q[0].into() as usize] += 1;
            counts[size + q[1].into() as usize] += 1;
            counts[2 * size + q[2].into() as usize] += 1;
            counts[3 * size + q[3].into() as usize] += 1;
        }
        for &key in quads.remainder() {
            counts[key.into() as usize] += 1;
        }
        Ok(())
    })?;
    let (first, rest) = counts.split_at_mut(size);
    for part in rest.chunks_exact(size) {
        for (total, &c) in first.iter_mut().zip(part) {
            *total += c;
        }
    }
    let used: Vec<u64> = (0u64..)
        .zip(first.iter())
        .filter(|(_, &c)| c > 0)
        .map(|(key, _)| key)
        .collect();
    let used_counts: Vec<u64> = first.iter().copied().filter(|&c| c > 0).collect();
    drop(counts);
    let (labels, fit) = fit_sorted_keys(&used, &used_counts, r, bits, k, max_iter, tol)?;
    let mut label_of_key = try_filled(size, 0u8, "pattern table")?;
    for (&key, &label) in used.iter().zip(&labels) {
        label_of_key[key as usize] = label;
    }
    let mut out = try_filled(n, 0u8, "consensus map")?;
    for_each_key(maps, bits, n, |start, keys: &[T]| {
        for (o, &key) in out[start..start + keys.len()].iter_mut().zip(keys) {
            *o = label_of_key[key.into() as usize];
        }
        Ok(())
    })?;
    Ok((out, fit))
}

/// Decodes the sorted distinct keys into a pattern table, runs EM, and
/// returns the consensus label of each key (same order) with the fit.
#[allow(clippy::too_many_arguments)]
fn fit_sorted_keys(
    keys: &[u64],
    counts: &[u64],
    r: usize,
    bits: u32,
    k: usize,
    max_iter: usize,
    tol: f64,
) -> Result<(Vec<u8>, Fit), StatsError> {
    let mask = (1u64 << bits) - 1;
    let mut patterns: Vec<usize> = Vec::new();
    patterns
        .try_reserve_exact(keys.len().saturating_mul(r))
        .map_err(|_| StatsError::TooLarge("pattern table"))?;
    for &key in keys {
        patterns.extend((0..r).rev().map(|j| ((key >> (bits as usize * j)) & mask) as usize));
    }
    let weights: Vec<f64> = counts.iter().map(|&c| c as f64).collect();
    let fit = em(&patterns, &weights, r, k, max_iter, tol)?;
    // Labels are < k ≤ 256, so they fit in u8.
    let labels = fit.labels.iter().map(|&l| l as u8).collect();
    Ok((labels, fit))
}

/// `staple_map` when a voxel's votes pack into a `u64` (`bits · R ≤ 64`).
fn staple_map_packed(
    maps: &[&[u8]],
    n: usize,
    k: usize,
    bits: u32,
    max_iter: usize,
    tol: f64,
) -> Result<(Vec<u8>, Fit), StatsError> {
    let r = maps.len();
    let key_bits = bits * r as u32;
    if key_bits <= DIRECT_MAX_BITS && (1usize << key_bits) <= n.max(1 << 12) {
        // Few possible patterns: count them in a table indexed by the key.
        return if key_bits <= 8 {
            staple_map_direct::<u8>(maps, n, k, bits, max_iter, tol)
        } else {
            staple_map_direct::<u16>(maps, n, k, bits, max_iter, tol)
        };
    }

    // Many possible patterns: a hash table.
    if key_bits <= 32 {
        staple_map_hashed::<u32>(maps, n, k, bits, max_iter, tol)
    } else {
        staple_map_hashed::<u64>(maps, n, k, bits, max_iter, tol)
    }
}

/// The hash-table path of [`staple_map_packed`]: ids in order of discovery,
/// with a cache of the previous voxel's pattern (runs are common in label
/// maps), keys of type `T`.
fn staple_map_hashed<T: PackedKey>(
    maps: &[&[u8]],
    n: usize,
    k: usize,
    bits: u32,
    max_iter: usize,
    tol: f64,
) -> Result<(Vec<u8>, Fit), StatsError> {
    let r = maps.len();
    let mut table = KeyTable::with_bits(10)?;
    let mut keys_by_id: Vec<u64> = Vec::new();
    let mut counts: Vec<u64> = Vec::new();
    let mut last: Option<(u64, u32)> = None;
    for_each_key(maps, bits, n, |_, keys: &[T]| {
        for &key in keys {
            let key: u64 = key.into();
            let id = match last {
                Some((last_key, last_id)) if last_key == key => last_id,
                _ => {
                    let id = match table.get(key) {
                        Some(id) => id,
                        None => {
                            let id = next_id(keys_by_id.len())?;
                            table.insert(key, id)?;
                            keys_by_id.push(key);
                            counts.push(0);
                            id
                        }
                    };
                    last = Some((key, id));
                    id
                }
            };
            counts[id as usize] += 1;
        }
        Ok(())
    })?;
    let mut order: Vec<u32> = (0..next_id(keys_by_id.len())?).collect();
    order.sort_unstable_by_key(|&id| keys_by_id[id as usize]);
    let sorted_keys: Vec<u64> = order.iter().map(|&id| keys_by_id[id as usize]).collect();
    let sorted_counts: Vec<u64> = order.iter().map(|&id| counts[id as usize]).collect();
    let (labels, fit) = fit_sorted_keys(&sorted_keys, &sorted_counts, r, bits, k, max_iter, tol)?;
    let mut label_by_id = vec![0u8; order.len()];
    for (&id, &label) in order.iter().zip(&labels) {
        label_by_id[id as usize] = label;
    }
    let mut out = try_filled(n, 0u8, "consensus map")?;
    let mut last: Option<(u64, u8)> = None;
    for_each_key(maps, bits, n, |start, keys: &[T]| {
        for (o, &key) in out[start..start + keys.len()].iter_mut().zip(keys) {
            let key: u64 = key.into();
            *o = match last {
                Some((last_key, label)) if last_key == key => label,
                _ => {
                    // Every key was seen in the first pass, so the lookup succeeds.
                    let label = table.get(key).map_or(0, |id| label_by_id[id as usize]);
                    last = Some((key, label));
                    label
                }
            };
        }
        Ok(())
    })?;
    Ok((out, fit))
}

fn next_id(len: usize) -> Result<u32, StatsError> {
    u32::try_from(len)
        .ok()
        .filter(|&id| id != EMPTY_SLOT)
        .ok_or(StatsError::TooLarge("too many distinct vote patterns"))
}

/// `staple_map` when votes do not pack into a `u64`: byte-vector patterns in
/// a `HashMap` (used for lookup only; ids are assigned in voxel order and
/// then sorted lexicographically).
fn staple_map_general(
    maps: &[&[u8]],
    n: usize,
    k: usize,
    max_iter: usize,
    tol: f64,
) -> Result<(Vec<u8>, Fit), StatsError> {
    let r = maps.len();
    let mut index: HashMap<Vec<u8>, u32> = HashMap::new();
    let mut keys_by_id: Vec<u8> = Vec::new();
    let mut counts: Vec<u64> = Vec::new();
    let mut buf = vec![0u8; r];
    let mut last: Option<u32> = None;
    let mut last_buf = vec![0u8; r];
    for i in 0..n {
        for (b, m) in buf.iter_mut().zip(maps) {
            *b = m[i];
        }
        let id = match last {
            Some(id) if last_buf == buf => id,
            _ => {
                let id = match index.get(buf.as_slice()) {
                    Some(&id) => id,
                    None => {
                        let id = next_id(counts.len())?;
                        index.insert(buf.clone(), id);
                        keys_by_id.extend_from_slice(&buf);
                        counts.push(0);
                        id
                    }
                };
                last = Some(id);
                last_buf.copy_from_slice(&buf);
                id
            }
        };
        counts[id as usize] += 1;
    }

    let pattern = |id: u32| &keys_by_id[id as usize * r..(id as usize + 1) * r];
    let mut order: Vec<u32> = (0..next_id(counts.len())?).collect();
    order.sort_unstable_by(|&x, &y| pattern(x).cmp(pattern(y)));
    let mut patterns: Vec<usize> = Vec::with_capacity(order.len().saturating_mul(r));
    for &id in &order {
        patterns.extend(pattern(id).iter().map(|&v| usize::from(v)));
    }
    let weights: Vec<f64> = order.iter().map(|&id| counts[id as usize] as f64).collect();
    let fit = em(&patterns, &weights, r, k, max_iter, tol)?;
    let mut label_by_id = vec![0u8; order.len()];
    for (&id, &label) in order.iter().zip(&fit.labels) {
        // Labels are < k ≤ 256, so they fit in u8.
        label_by_id[id as usize] = label as u8;
    }

    let mut out = try_filled(n, 0u8, "consensus map")?;
    for (i, o) in out.iter_mut().enumerate() {
        for (b, m) in buf.iter_mut().zip(maps) {
            *b = m[i];
        }
        *o = index
            .get(buf.as_slice())
            .map_or(0, |&id| label_by_id[id as usize]);
    }
    Ok((out, fit))
}

// ---------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;

    /// splitmix64 (Steele, Lea, Flood 2014): a tiny deterministic PRNG for tests.
    struct SplitMix(u64);

    impl SplitMix {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
        fn unit(&mut self) -> f64 {
            (self.next() >> 11) as f64 / (1u64 << 53) as f64
        }
    }

    fn close(a: f64, b: f64, eps: f64) -> bool {
        (a - b).abs() <= eps
    }

    /// A wrong category, uniformly among the k − 1 others.
    fn wrong(rng: &mut SplitMix, truth: usize, k: usize) -> usize {
        (truth + 1 + rng.below(k - 1)) % k
    }

    // --- Cohen ---------------------------------------------------------------

    #[test]
    fn cohen_wikipedia_example() {
        // 20 yes/yes, 5 yes/no, 10 no/yes, 15 no/no (yes = 1).
        let mut a = Vec::new();
        let mut b = Vec::new();
        for (x, y, count) in [(1, 1, 20), (1, 0, 5), (0, 1, 10), (0, 0, 15)] {
            for _ in 0..count {
                a.push(x);
                b.push(y);
            }
        }
        let kappa = cohen_kappa(&a, &b).unwrap();
        assert!(close(kappa, 0.4, 1e-12), "{kappa}");
        // Symmetric in the raters.
        assert!(close(cohen_kappa(&b, &a).unwrap(), 0.4, 1e-12));
    }

    #[test]
    fn cohen_special_values() {
        assert_eq!(cohen_kappa(&[0, 1, 2, 2], &[0, 1, 2, 2]).unwrap(), 1.0);
        // Both constant and equal: p_e = 1, defined as 1.
        assert_eq!(cohen_kappa(&[3, 3, 3], &[3, 3, 3]).unwrap(), 1.0);
        assert_eq!(cohen_kappa(&[7], &[7]).unwrap(), 1.0);
        // Constant but different: p_o = p_e = 0.
        assert_eq!(cohen_kappa(&[0, 0], &[1, 1]).unwrap(), 0.0);
        assert_eq!(cohen_kappa(&[0], &[1]).unwrap(), 0.0);
        // Perfect disagreement with balanced marginals.
        assert_eq!(cohen_kappa(&[0, 1], &[1, 0]).unwrap(), -1.0);
        // Arbitrary category values.
        assert_eq!(
            cohen_kappa(&[usize::MAX, 0], &[usize::MAX, 0]).unwrap(),
            1.0
        );
    }

    #[test]
    fn cohen_errors() {
        assert_eq!(cohen_kappa(&[], &[]), Err(StatsError::Empty));
        assert_eq!(
            cohen_kappa(&[0, 1], &[0]),
            Err(StatsError::LengthMismatch {
                index: 1,
                expected: 2,
                found: 1
            })
        );
    }

    // --- Fleiss --------------------------------------------------------------

    #[test]
    fn fleiss_wikipedia_example() {
        // 10 items, 14 raters, 5 categories: counts per category.
        let table = [
            [0, 0, 0, 0, 14],
            [0, 2, 6, 4, 2],
            [0, 0, 3, 5, 6],
            [0, 3, 9, 2, 0],
            [2, 2, 8, 1, 1],
            [7, 7, 0, 0, 0],
            [3, 2, 6, 3, 0],
            [2, 5, 3, 2, 2],
            [6, 5, 2, 1, 0],
            [0, 2, 2, 3, 7],
        ];
        let ratings: Vec<Vec<usize>> = table
            .iter()
            .map(|counts| {
                counts
                    .iter()
                    .enumerate()
                    .flat_map(|(c, &n)| std::iter::repeat_n(c + 1, n))
                    .collect()
            })
            .collect();
        let kappa = fleiss_kappa(&ratings).unwrap();
        // P̄ = 0.378022, P̄e = 0.212755 → κ = 0.209931 (Wikipedia: 0.210).
        assert!(close(kappa, 0.209_930_704_421_955, 1e-12), "{kappa}");
        assert!(close(kappa, 0.210, 5e-4));
    }

    #[test]
    fn fleiss_special_values() {
        assert_eq!(fleiss_kappa(&[vec![4, 4], vec![4, 4]]).unwrap(), 1.0);
        let perfect = fleiss_kappa(&[vec![0, 0, 0], vec![1, 1, 1], vec![2, 2, 2]]).unwrap();
        assert!(close(perfect, 1.0, 1e-12));
        // Two items, each split 1–1 between the same two categories: P̄ = 0, P̄e = 1/2.
        assert!(close(fleiss_kappa(&[vec![0, 1], vec![1, 0]]).unwrap(), -1.0, 1e-12));
    }

    #[test]
    fn fleiss_errors() {
        assert_eq!(fleiss_kappa(&[]), Err(StatsError::Empty));
        assert_eq!(
            fleiss_kappa(&[vec![1], vec![2]]),
            Err(StatsError::TooFewRaters { needed: 2, found: 1 })
        );
        assert_eq!(
            fleiss_kappa(&[vec![1, 2], vec![2]]),
            Err(StatsError::RaggedRatings {
                item: 1,
                expected: 2,
                found: 1
            })
        );
    }

    // --- Dice ----------------------------------------------------------------

    #[test]
    fn dice_values() {
        assert_eq!(dice(&[1, 1, 0, 0], &[1, 0, 1, 0], 1).unwrap(), 0.5);
        assert_eq!(dice(&[1, 1, 0], &[1, 1, 0], 1).unwrap(), 1.0);
        assert_eq!(dice(&[1, 0], &[0, 1], 1).unwrap(), 0.0);
        // Both empty for this label.
        assert_eq!(dice(&[0, 2], &[0, 2], 1).unwrap(), 1.0);
        // Multi-label map: label 2 only; |A| = 3, |B| = 2, |A∩B| = 2 → 0.8.
        let a = [2, 2, 2, 1, 0, 1];
        let b = [2, 2, 1, 1, 0, 0];
        assert!(close(dice(&a, &b, 2).unwrap(), 0.8, 1e-15));
        // Label 1: |A| = 2, |B| = 2, |A∩B| = 1 → 0.5.
        assert!(close(dice(&a, &b, 1).unwrap(), 0.5, 1e-15));
        // Label 0 = binary (nonzero) foreground: |A| = 5, |B| = 4, |A∩B| = 4 → 8/9.
        assert!(close(dice(&a, &b, 0).unwrap(), 8.0 / 9.0, 1e-15));
        assert_eq!(dice(&[0, 0], &[0, 0], 0).unwrap(), 1.0);
    }

    #[test]
    fn dice_errors() {
        assert_eq!(dice(&[], &[], 1), Err(StatsError::Empty));
        assert!(matches!(
            dice(&[1], &[1, 0], 1),
            Err(StatsError::LengthMismatch { .. })
        ));
    }

    // --- Majority ------------------------------------------------------------

    #[test]
    fn majority_votes_and_ties() {
        let votes = vec![
            vec![1, 1, 2],
            vec![1, 2],
            vec![3, 3, 1, 1, 2],
            vec![0, 1, 2],
            vec![],
            vec![5],
            vec![2, 7, 7, 2, 7],
            vec![usize::MAX, usize::MAX, 0],
        ];
        assert_eq!(
            majority(&votes),
            vec![
                Some(1),
                None,
                None,
                None,
                None,
                Some(5),
                Some(7),
                Some(usize::MAX)
            ]
        );
        assert!(majority(&[]).is_empty());
    }

    #[test]
    fn majority_map_strict_half() {
        let a: &[u8] = &[1, 1, 2, 0, 3, 4];
        let b: &[u8] = &[1, 2, 2, 0, 3, 5];
        let c: &[u8] = &[2, 2, 1, 1, 0, 6];
        assert_eq!(majority_map(&[a, b, c]).unwrap(), vec![1, 2, 2, 0, 3, 0]);
        // 2 of 4 is not more than half.
        let d: &[u8] = &[1, 1, 1, 1, 3, 4];
        assert_eq!(majority_map(&[a, b, c, d]).unwrap(), vec![1, 0, 0, 0, 3, 0]);
        // One reader: a copy.
        assert_eq!(majority_map(&[a]).unwrap(), a.to_vec());
    }

    #[test]
    fn majority_map_matches_reference() {
        // Lengths that are not multiples of the block size, 1–6 readers.
        let mut rng = SplitMix(17);
        for readers in 1..=6 {
            let n = 2 * BLOCK + 123;
            let maps: Vec<Vec<u8>> = (0..readers)
                .map(|_| (0..n).map(|_| rng.below(3) as u8).collect())
                .collect();
            let refs: Vec<&[u8]> = maps.iter().map(|m| m.as_slice()).collect();
            let expected: Vec<u8> = (0..n)
                .map(|i| {
                    (0..3u8)
                        .find(|&l| 2 * maps.iter().filter(|m| m[i] == l).count() > readers)
                        .unwrap_or(0)
                })
                .collect();
            assert_eq!(majority_map(&refs).unwrap(), expected);
        }
        // More than 255 readers take the scalar path.
        let a: &[u8] = &[1, 2, 3, 0];
        let b: &[u8] = &[1, 3, 2, 0];
        let mut refs = vec![a; 150];
        refs.extend(vec![b; 150]);
        assert_eq!(majority_map(&refs).unwrap(), vec![1, 0, 0, 0]);
        refs.push(a);
        assert_eq!(majority_map(&refs).unwrap(), vec![1, 2, 3, 0]);
    }

    #[test]
    fn majority_map_errors() {
        assert_eq!(
            majority_map(&[]),
            Err(StatsError::TooFewRaters { needed: 1, found: 0 })
        );
        let a: &[u8] = &[1, 2];
        let b: &[u8] = &[1];
        assert_eq!(
            majority_map(&[a, b]),
            Err(StatsError::LengthMismatch {
                index: 1,
                expected: 2,
                found: 1
            })
        );
        let e: &[u8] = &[];
        assert_eq!(majority_map(&[e, e]), Err(StatsError::Empty));
    }

    // --- STAPLE --------------------------------------------------------------

    fn diagonal_mean(theta: &[Vec<f64>]) -> f64 {
        theta.iter().enumerate().map(|(t, row)| row[t]).sum::<f64>() / theta.len() as f64
    }

    fn assert_distributions(result: &StapleResult) {
        assert!(close(result.prior.iter().sum::<f64>(), 1.0, 1e-9));
        for rater in &result.theta {
            for row in rater {
                assert!(close(row.iter().sum::<f64>(), 1.0, 1e-9));
                assert!(row.iter().all(|&p| p > 0.0));
            }
        }
    }

    #[test]
    fn staple_two_good_raters_one_noise() {
        let (n, k) = (3000, 3);
        let mut rng = SplitMix(7);
        let mut truth = Vec::new();
        let mut votes = Vec::new();
        for _ in 0..n {
            let t = rng.below(k);
            let good = |rng: &mut SplitMix| {
                if rng.unit() < 0.85 {
                    t
                } else {
                    wrong(rng, t, k)
                }
            };
            let v = vec![good(&mut rng), rng.below(k), good(&mut rng)];
            truth.push(t);
            votes.push(v);
        }
        // With only two informative raters the maximum-likelihood confusion
        // matrices are weakly identified: EM creeps (thousands of iterations)
        // towards a boundary solution in which one good rater looks almost
        // perfect. The ordering good ≫ noise is what is identified.
        let result = staple(&votes, k, 20_000, 1e-9).unwrap();
        assert!(result.converged);
        assert_distributions(&result);
        let good0 = diagonal_mean(&result.theta[0]);
        let noise = diagonal_mean(&result.theta[1]);
        let good2 = diagonal_mean(&result.theta[2]);
        assert!(good0 > noise + 0.3 && good2 > noise + 0.3, "{good0} {noise} {good2}");
        assert!(good0 > 0.7 && good2 > 0.7, "{good0} {good2}");
        assert!(close(noise, 1.0 / 3.0, 0.08));
        let correct = result.labels.iter().zip(&truth).filter(|(a, b)| a == b).count();
        assert!(correct as f64 / n as f64 > 0.8, "{correct}");
        assert!(result.confidence.iter().all(|&c| (1.0 / 3.0..=1.0).contains(&c)));
    }

    #[test]
    fn staple_recovers_truth_where_majority_ties() {
        // Three good raters whose errors never coincide (rater r errs exactly on
        // items with i % 10 == r) and one rater who answers at random. Where the
        // random rater sides with a good rater's error the raw vote is 2–2;
        // STAPLE, knowing who is reliable, still recovers the truth everywhere.
        let (n, k) = (3000, 3);
        let mut rng = SplitMix(42);
        let mut truth = Vec::new();
        let mut votes = Vec::new();
        for i in 0..n {
            let t = rng.below(k);
            let mut v: Vec<usize> = (0..3)
                .map(|r| if i % 10 == r { wrong(&mut rng, t, k) } else { t })
                .collect();
            v.push(rng.below(k));
            truth.push(t);
            votes.push(v);
        }
        let result = staple(&votes, k, 500, 1e-10).unwrap();
        assert!(result.converged);
        assert_eq!(result.labels, truth);
        let ties = majority(&votes).iter().filter(|m| m.is_none()).count();
        assert!(ties > 50, "the case should defeat majority voting: {ties}");
        for r in 0..3 {
            assert!(diagonal_mean(&result.theta[r]) > 0.85);
        }
        assert!(diagonal_mean(&result.theta[3]) < 0.45);
    }

    #[test]
    fn staple_unanimous_raters() {
        let votes: Vec<Vec<usize>> = (0..20).map(|i| vec![i % 4; 3]).collect();
        let result = staple(&votes, 4, 100, 1e-12).unwrap();
        assert!(result.converged);
        let expected: Vec<usize> = (0..20).map(|i| i % 4).collect();
        assert_eq!(result.labels, expected);
        assert!(result.confidence.iter().all(|&c| c > 0.999_999));
        for rater in &result.theta {
            for (t, row) in rater.iter().enumerate() {
                assert!(row[t] > 0.999);
            }
        }
    }

    #[test]
    fn staple_zero_iterations_and_unused_categories() {
        let votes = vec![vec![0, 0, 1], vec![1, 1, 1], vec![0, 1, 0]];
        let result = staple(&votes, 5, 0, 1e-6).unwrap();
        assert_eq!(result.iterations, 0);
        assert!(!result.converged);
        assert_eq!(result.labels, vec![0, 1, 0]);
        assert_distributions(&result);
        // Categories 2..5 are never voted: tiny prior, uniform confusion rows.
        assert!(result.prior[2..].iter().all(|&p| p < 1e-5));
        assert!(close(result.theta[0][4][0], 0.2, 1e-9));
    }

    #[test]
    fn staple_ties_pick_lowest_category() {
        assert_eq!(argmax(&[0.25, 0.5, 0.5]), (1, 0.5));
        assert_eq!(argmax(&[0.5, 0.5]), (0, 0.5));
        // Two raters who always disagree the same way: the model cannot tell
        // which one is right, the posteriors are exactly 1/2 each.
        let votes = vec![vec![0, 1], vec![0, 1], vec![0, 1]];
        let result = staple(&votes, 2, 50, 0.0).unwrap();
        assert_eq!(result.labels, vec![0, 0, 0]);
        assert_eq!(result.confidence, vec![0.5; 3]);
        let flipped = vec![vec![1, 0], vec![1, 0]];
        assert_eq!(staple(&flipped, 2, 50, 0.0).unwrap().labels, vec![0, 0]);
    }

    #[test]
    fn e_step_survives_underflow() {
        // Two raters, k = 2, one pattern (0, 0). Layout [rater][given][true].
        // Each rater's likelihoods are 1e-170 (t = 0) and √2·1e-170 (t = 1), so
        // the products (5e-341, 1e-340) underflow to 0 in linear space; the
        // log-space fallback still gives posteriors 1/3 and 2/3.
        let (r, k) = (2, 2);
        let a = 1e-170;
        let b = std::f64::consts::SQRT_2 * 1e-170;
        let theta = vec![a, b, 0.5, 0.5, a, b, 0.5, 0.5];
        let prior = vec![0.5, 0.5];
        let mut log_theta = vec![0.0; 8];
        let mut log_prior = vec![0.0; 2];
        let mut post = vec![0.0; 2];
        e_step(&[0, 0], r, k, &theta, &prior, &mut log_theta, &mut log_prior, &mut post);
        assert!(close(post[0], 1.0 / 3.0, 1e-12) && close(post[1], 2.0 / 3.0, 1e-12), "{post:?}");
        // Ordinary magnitudes take the linear path and agree with it.
        let theta = vec![0.2, 0.4, 0.8, 0.6, 0.2, 0.4, 0.8, 0.6];
        e_step(&[0, 0], r, k, &theta, &prior, &mut log_theta, &mut log_prior, &mut post);
        assert!(close(post[0], 0.2, 1e-15) && close(post[1], 0.8, 1e-15), "{post:?}");
    }

    #[test]
    fn staple_with_thousands_of_raters() {
        // 2000 raters of 90 % accuracy: per-item likelihoods near 1e-280, so
        // the E-step runs in log space.
        let mut rng = SplitMix(5);
        let truth: Vec<usize> = (0..60).map(|_| rng.below(2)).collect();
        let votes: Vec<Vec<usize>> = truth
            .iter()
            .map(|&t| (0..2000).map(|_| if rng.unit() < 0.9 { t } else { 1 - t }).collect())
            .collect();
        let result = staple(&votes, 2, 50, 1e-9).unwrap();
        assert_eq!(result.labels, truth);
        assert!(result.confidence.iter().all(|&c| c.is_finite() && c > 0.999));
        assert_distributions(&result);
    }

    #[test]
    fn staple_is_deterministic_and_order_independent() {
        let mut rng = SplitMix(3);
        let votes: Vec<Vec<usize>> = (0..500)
            .map(|_| (0..4).map(|_| rng.below(3)).collect())
            .collect();
        let first = staple(&votes, 3, 100, 1e-9).unwrap();
        assert_eq!(first, staple(&votes, 3, 100, 1e-9).unwrap());
        let reversed: Vec<Vec<usize>> = votes.iter().rev().cloned().collect();
        let second = staple(&reversed, 3, 100, 1e-9).unwrap();
        assert_eq!(second.theta, first.theta);
        assert_eq!(second.prior, first.prior);
        let mut labels = second.labels.clone();
        labels.reverse();
        assert_eq!(labels, first.labels);
    }

    #[test]
    fn staple_errors() {
        assert_eq!(staple(&[], 2, 10, 1e-6), Err(StatsError::Empty));
        assert_eq!(
            staple(&[vec![0], vec![1]], 2, 10, 1e-6),
            Err(StatsError::TooFewRaters { needed: 2, found: 1 })
        );
        assert_eq!(
            staple(&[vec![0, 1], vec![1]], 2, 10, 1e-6),
            Err(StatsError::RaggedRatings {
                item: 1,
                expected: 2,
                found: 1
            })
        );
        assert_eq!(
            staple(&[vec![0, 1], vec![1, 2]], 2, 10, 1e-6),
            Err(StatsError::CategoryOutOfRange {
                item: 1,
                rater: 1,
                category: 2,
                k: 2
            })
        );
        assert!(matches!(
            staple(&[vec![0, 0]], 0, 10, 1e-6),
            Err(StatsError::InvalidParameter { name: "k", .. })
        ));
        for tol in [f64::NAN, -1.0] {
            assert!(matches!(
                staple(&[vec![0, 0]], 1, 10, tol),
                Err(StatsError::InvalidParameter { name: "tol", .. })
            ));
        }
        assert!(matches!(
            staple(&[vec![0, 0]], usize::MAX, 10, 1e-6),
            Err(StatsError::TooLarge(_))
        ));
    }

    // --- STAPLE on label maps ------------------------------------------------

    fn votes_of(maps: &[Vec<u8>]) -> Vec<Vec<usize>> {
        (0..maps[0].len())
            .map(|i| maps.iter().map(|m| usize::from(m[i])).collect())
            .collect()
    }

    fn check_map_matches_votes(maps: &[Vec<u8>], max_iter: usize, tol: f64) {
        let refs: Vec<&[u8]> = maps.iter().map(|m| m.as_slice()).collect();
        let (consensus, map_result) = staple_map(&refs, max_iter, tol).unwrap();
        let k = maps.iter().flatten().copied().max().unwrap() as usize + 1;
        let item_result = staple(&votes_of(maps), k, max_iter, tol).unwrap();
        let expected: Vec<u8> = item_result.labels.iter().map(|&l| l as u8).collect();
        assert_eq!(consensus, expected);
        assert_eq!(map_result.theta, item_result.theta);
        assert_eq!(map_result.prior, item_result.prior);
        assert_eq!(map_result.iterations, item_result.iterations);
        assert_eq!(map_result.converged, item_result.converged);
        assert!(map_result.labels.is_empty() && map_result.confidence.is_empty());
    }

    /// Readers of a synthetic label map: each keeps the true label with
    /// probability `accuracy[r]`, else reports another label.
    fn noisy_maps(n: usize, k: usize, accuracy: &[f64], seed: u64) -> (Vec<u8>, Vec<Vec<u8>>) {
        let mut rng = SplitMix(seed);
        // Blocky truth so that runs of equal patterns occur, as in real maps.
        let truth: Vec<u8> = (0..n).map(|i| ((i / 37 + i / 5) % k) as u8).collect();
        let maps = accuracy
            .iter()
            .map(|&acc| {
                truth
                    .iter()
                    .map(|&t| {
                        if rng.unit() < acc {
                            t
                        } else {
                            wrong(&mut rng, usize::from(t), k) as u8
                        }
                    })
                    .collect()
            })
            .collect();
        (truth, maps)
    }

    #[test]
    fn staple_map_matches_staple() {
        let (truth, maps) = noisy_maps(20_000, 4, &[0.9, 0.8, 0.3], 11);
        check_map_matches_votes(&maps, 100, 1e-9);
        check_map_matches_votes(&maps, 0, 1e-9);
        check_map_matches_votes(&maps, 3, 0.0);
        let refs: Vec<&[u8]> = maps.iter().map(|m| m.as_slice()).collect();
        let (consensus, result) = staple_map(&refs, 100, 1e-9).unwrap();
        assert_eq!(result.theta.len(), 3);
        assert_eq!(result.prior.len(), 4);
        let correct = consensus.iter().zip(&truth).filter(|(a, b)| a == b).count();
        let voted = majority_map(&refs).unwrap();
        let voted_correct = voted.iter().zip(&truth).filter(|(a, b)| a == b).count();
        // Bayes-optimal accuracy here is about 0.87; 2-of-3 voting gets about 0.83.
        assert!(correct as f64 / truth.len() as f64 > 0.85, "{correct}");
        assert!(correct > voted_correct + 500, "{correct} vs {voted_correct}");
    }

    #[test]
    fn staple_map_paths_match_staple() {
        // Three readers, labels < 16: 12-bit keys, direct table of u16 keys.
        let (_, maps) = noisy_maps(5000, 16, &[0.9, 0.8, 0.6], 4);
        check_map_matches_votes(&maps, 30, 1e-9);
        // Nine readers, labels < 3: 18-bit keys, hash table (a direct table of
        // 2^18 entries is not used for a map this small).
        let (_, maps) = noisy_maps(3000, 3, &[0.9, 0.8, 0.7, 0.6, 0.5, 0.9, 0.4, 0.8, 0.95], 5);
        check_map_matches_votes(&maps, 100, 1e-9);
        // Seventeen readers, labels < 16: 68 bits do not pack, HashMap path.
        let accuracy: Vec<f64> = (0..17).map(|r| 0.5 + 0.025 * r as f64).collect();
        let (_, maps) = noisy_maps(1500, 16, &accuracy, 6);
        check_map_matches_votes(&maps, 10, 1e-9);
        // Thirty-three binary readers: 33-bit keys, hash-table path.
        let accuracy: Vec<f64> = (0..33).map(|r| 0.6 + 0.01 * r as f64).collect();
        let (_, maps) = noisy_maps(1500, 2, &accuracy, 8);
        check_map_matches_votes(&maps, 50, 1e-9);
    }

    #[test]
    fn staple_map_many_patterns_and_full_byte_range() {
        // Random bytes: thousands of distinct patterns force table growth.
        let mut rng = SplitMix(99);
        let maps: Vec<Vec<u8>> = (0..2)
            .map(|_| (0..1000).map(|_| rng.below(256) as u8).collect())
            .collect();
        check_map_matches_votes(&maps, 2, 1e-9);
        // Eight readers with label 255 everywhere packs to key u64::MAX.
        let mut maps: Vec<Vec<u8>> = vec![vec![255u8; 50]; 8];
        maps[3][7] = 0;
        maps[5][8] = 17;
        check_map_matches_votes(&maps, 1, 1e-9);
        let refs: Vec<&[u8]> = maps.iter().map(|m| m.as_slice()).collect();
        assert_eq!(staple_map(&refs, 1, 1e-9).unwrap().0, vec![255u8; 50]);
    }

    #[test]
    fn staple_map_binary_single_label() {
        // All readers all background: k = 1, everything stays 0.
        let zeros = vec![0u8; 100];
        let (consensus, result) = staple_map(&[&zeros, &zeros], 10, 1e-9).unwrap();
        assert_eq!(consensus, zeros);
        assert_eq!(result.prior, vec![1.0]);
    }

    #[test]
    fn staple_map_errors() {
        let a: &[u8] = &[0, 1];
        let b: &[u8] = &[0];
        let e: &[u8] = &[];
        assert_eq!(
            staple_map(&[a], 10, 1e-6),
            Err(StatsError::TooFewRaters { needed: 2, found: 1 })
        );
        assert_eq!(
            staple_map(&[], 10, 1e-6),
            Err(StatsError::TooFewRaters { needed: 2, found: 0 })
        );
        assert!(matches!(
            staple_map(&[a, b], 10, 1e-6),
            Err(StatsError::LengthMismatch { index: 1, .. })
        ));
        assert_eq!(staple_map(&[e, e], 10, 1e-6), Err(StatsError::Empty));
        assert!(matches!(
            staple_map(&[a, a], 10, f64::NAN),
            Err(StatsError::InvalidParameter { name: "tol", .. })
        ));
    }

    /// Timing check: `cargo test --release -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn staple_map_perf_512x512x200_three_readers() {
        let (nx, ny, nz) = (512usize, 512usize, 200usize);
        let n = nx * ny * nz;
        let mut truth = vec![0u8; n];
        // Three organs: two spheres and a box.
        for z in 0..nz {
            for y in 0..ny {
                for x in 0..nx {
                    let (fx, fy, fz) = (x as f64, y as f64, z as f64);
                    let d1 = (fx - 200.0).powi(2) + (fy - 250.0).powi(2) + (fz - 100.0).powi(2);
                    let d2 = (fx - 330.0).powi(2) + (fy - 260.0).powi(2) + (fz - 90.0).powi(2);
                    let label = if d1 < 80.0 * 80.0 {
                        1
                    } else if d2 < 60.0 * 60.0 {
                        2
                    } else if (100..160).contains(&x) && (60..400).contains(&y) && (20..180).contains(&z) {
                        3
                    } else {
                        0
                    };
                    truth[(z * ny + y) * nx + x] = label;
                }
            }
        }
        let mut rng = SplitMix(2024);
        let maps: Vec<Vec<u8>> = [0.01, 0.03, 0.2]
            .iter()
            .map(|&flip| {
                truth
                    .iter()
                    .map(|&t| {
                        if rng.unit() < flip {
                            wrong(&mut rng, usize::from(t), 4) as u8
                        } else {
                            t
                        }
                    })
                    .collect()
            })
            .collect();
        let refs: Vec<&[u8]> = maps.iter().map(|m| m.as_slice()).collect();
        let start = std::time::Instant::now();
        let (consensus, result) = staple_map(&refs, 1000, 1e-8).unwrap();
        let elapsed = start.elapsed();
        let start = std::time::Instant::now();
        let voted = majority_map(&refs).unwrap();
        let majority_elapsed = start.elapsed();
        let correct = consensus.iter().zip(&truth).filter(|(a, b)| a == b).count();
        let voted_correct = voted.iter().zip(&truth).filter(|(a, b)| a == b).count();
        eprintln!(
            "staple_map: {n} voxels x 3 readers in {elapsed:?} ({} iterations, converged {}), \
             accuracy {:.5}; majority_map {majority_elapsed:?}, accuracy {:.5}",
            result.iterations,
            result.converged,
            correct as f64 / n as f64,
            voted_correct as f64 / n as f64,
        );
        assert!(correct as f64 / n as f64 > 0.99);
        assert!(elapsed.as_secs_f64() < 30.0);
    }
}
