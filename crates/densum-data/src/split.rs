//! Deterministic, stratified validation splits carved from a training set.

use crate::dataset::{Dataset, Subset};
use crate::error::{Error, Result};
use crate::rng::{Rng, stream};
use std::sync::Arc;

/// How much to hold out.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ValSplit {
    /// This many samples in total.
    Count(usize),
    /// This fraction of the samples (0 < f < 1).
    Fraction(f64),
}

impl std::str::FromStr for ValSplit {
    type Err = Error;
    /// `5000` is a count, `0.1` a fraction.
    fn from_str(s: &str) -> Result<ValSplit> {
        if let Ok(n) = s.parse::<usize>() {
            return Ok(ValSplit::Count(n));
        }
        match s.parse::<f64>() {
            Ok(f) if f > 0.0 && f < 1.0 => Ok(ValSplit::Fraction(f)),
            _ => Err(Error::Invalid(format!(
                "--val-split {s}: expected a count (5000) or a fraction in (0, 1) (0.1)"
            ))),
        }
    }
}

/// Splits the indices of `ds` into `(train, val)`, both sorted.
///
/// Stratified: each class contributes in proportion to its size (largest-remainder
/// rounding, so the total is exact); which samples of a class go to validation is a
/// shuffle seeded by `seed` and the class, so it depends on nothing else.
pub fn split_train_val(
    ds: &dyn Dataset,
    val: ValSplit,
    seed: u64,
) -> Result<(Vec<usize>, Vec<usize>)> {
    let n = ds.len();
    let n_val = match val {
        ValSplit::Count(c) => c,
        ValSplit::Fraction(f) if f > 0.0 && f < 1.0 => (f * n as f64).round() as usize,
        ValSplit::Fraction(f) => {
            return Err(Error::Invalid(format!(
                "validation fraction {f} is not in (0, 1)"
            )));
        }
    };
    if n_val == 0 || n_val >= n {
        return Err(Error::Invalid(format!(
            "{}: a validation split of {n_val} out of {n} samples leaves nothing on one side",
            ds.source()
        )));
    }
    let mut by_class: Vec<Vec<usize>> = vec![Vec::new(); ds.num_classes()];
    for i in 0..n {
        let l = ds.label(i);
        if l >= by_class.len() {
            by_class.resize(l + 1, Vec::new());
        }
        by_class[l].push(i);
    }
    // Largest remainder: floor quotas, then +1 for the largest fractional parts.
    let mut quota: Vec<usize> = by_class.iter().map(|c| c.len() * n_val / n).collect();
    let mut rest: Vec<(usize, usize)> = by_class
        .iter()
        .enumerate()
        .map(|(k, c)| ((c.len() * n_val) % n, k))
        .collect();
    rest.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    let missing = n_val - quota.iter().sum::<usize>();
    for &(_, k) in rest.iter().take(missing) {
        quota[k] += 1;
    }
    let mut train = Vec::with_capacity(n - n_val);
    let mut valid = Vec::with_capacity(n_val);
    for (k, mut members) in by_class.into_iter().enumerate() {
        Rng::new(seed, 0, k as u64, stream::SPLIT).shuffle(&mut members);
        valid.extend_from_slice(&members[..quota[k]]);
        train.extend_from_slice(&members[quota[k]..]);
    }
    train.sort_unstable();
    valid.sort_unstable();
    Ok((train, valid))
}

/// [`split_train_val`] as two datasets.
pub fn carve_val(
    ds: Arc<dyn Dataset>,
    val: ValSplit,
    seed: u64,
) -> Result<(Arc<dyn Dataset>, Arc<dyn Dataset>)> {
    let (t, v) = split_train_val(&*ds, val, seed)?;
    Ok((
        Arc::new(Subset::new(ds.clone(), t, "train part")?),
        Arc::new(Subset::new(ds, v, "validation part")?),
    ))
}
