//! Learning-rate schedules: pure functions of the iteration (plus the plateau state), so a
//! resumed run computes exactly the rates an uninterrupted one does.

use serde::{Deserialize, Serialize};

use super::config::{ScheduleConfig, ScheduleKind, ScheduleUnit};

/// A schedule bound to a run's length.
#[derive(Clone, Debug)]
pub struct Schedule {
    cfg: ScheduleConfig,
    base_lr: f64,
    total: usize,
    per_epoch: usize,
}

/// Reduce-on-plateau state, saved in checkpoints.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PlateauState {
    /// Best validation error so far.
    pub best: Option<f64>,
    /// Validations since it improved.
    pub bad: usize,
    /// Reductions applied so far.
    pub reductions: u32,
}

impl Schedule {
    /// A schedule for `total` iterations of `per_epoch` each, starting at `base_lr`.
    pub fn new(cfg: &ScheduleConfig, base_lr: f64, total: usize, per_epoch: usize) -> Self {
        Schedule {
            cfg: cfg.clone(),
            base_lr,
            total: total.max(1),
            per_epoch: per_epoch.max(1),
        }
    }

    /// The rate at iteration `iter` (0-based).
    pub fn lr(&self, iter: usize, plateau: &PlateauState) -> f64 {
        let c = &self.cfg;
        let t = match c.unit {
            ScheduleUnit::Iteration => iter as f64,
            ScheduleUnit::Epoch => (iter / self.per_epoch) as f64,
            ScheduleUnit::Fraction => iter as f64 / self.total as f64,
        };
        let lr = match c.kind {
            ScheduleKind::Constant => self.base_lr,
            ScheduleKind::Multistep => {
                let passed = c.milestones.iter().filter(|&&m| t >= m).count();
                self.base_lr * c.gamma.powi(passed as i32)
            }
            ScheduleKind::Step => self.base_lr * c.gamma.powi((t / c.step_size).floor() as i32),
            ScheduleKind::Cosine => {
                let p = (iter as f64 / self.total as f64).min(1.0);
                c.min_lr
                    + (self.base_lr - c.min_lr) * 0.5 * (1.0 + (std::f64::consts::PI * p).cos())
            }
            ScheduleKind::Plateau => self.base_lr * c.gamma.powi(plateau.reductions as i32),
        };
        if iter < c.warmup {
            lr * (iter + 1) as f64 / c.warmup as f64
        } else {
            lr
        }
    }

    /// Records a validation error for reduce-on-plateau.
    pub fn observe(&self, plateau: &mut PlateauState, error: f64) {
        match plateau.best {
            Some(b) if error >= b => {
                plateau.bad += 1;
                if plateau.bad > self.cfg.patience {
                    plateau.reductions += 1;
                    plateau.bad = 0;
                }
            }
            _ => {
                plateau.best = Some(error);
                plateau.bad = 0;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(kind: ScheduleKind, unit: ScheduleUnit) -> ScheduleConfig {
        ScheduleConfig {
            kind,
            unit,
            ..Default::default()
        }
    }

    #[test]
    fn multistep_by_iteration_epoch_and_fraction() {
        let p = PlateauState::default();
        let mut c = cfg(ScheduleKind::Multistep, ScheduleUnit::Iteration);
        c.milestones = vec![32000.0, 48000.0];
        let s = Schedule::new(&c, 0.1, 64000, 391);
        assert_eq!(s.lr(31999, &p), 0.1);
        assert!((s.lr(32000, &p) - 0.01).abs() < 1e-12);
        assert!((s.lr(48000, &p) - 0.001).abs() < 1e-12);
        c.unit = ScheduleUnit::Epoch;
        c.milestones = vec![82.0, 124.0];
        let s = Schedule::new(&c, 0.1, 164 * 391, 391);
        assert_eq!(s.lr(82 * 391 - 1, &p), 0.1);
        assert!((s.lr(82 * 391, &p) - 0.01).abs() < 1e-12);
        c.unit = ScheduleUnit::Fraction;
        c.milestones = vec![0.5, 0.75];
        let s = Schedule::new(&c, 0.1, 1000, 10);
        assert_eq!(s.lr(499, &p), 0.1);
        assert!((s.lr(750, &p) - 0.001).abs() < 1e-12);
    }

    #[test]
    fn cosine_warmup_step_and_plateau() {
        let p = PlateauState::default();
        let mut c = cfg(ScheduleKind::Cosine, ScheduleUnit::Iteration);
        c.warmup = 10;
        let s = Schedule::new(&c, 1.0, 110, 10);
        assert!((s.lr(0, &p) - 0.1).abs() < 1e-9);
        assert!((s.lr(55, &p) - 0.5).abs() < 1e-9);
        let mut c = cfg(ScheduleKind::Step, ScheduleUnit::Epoch);
        c.step_size = 30.0;
        let s = Schedule::new(&c, 0.1, 100 * 5, 5);
        assert!((s.lr(30 * 5, &p) - 0.01).abs() < 1e-12);
        let mut c = cfg(ScheduleKind::Plateau, ScheduleUnit::Epoch);
        c.patience = 1;
        let s = Schedule::new(&c, 0.1, 100, 10);
        let mut p = PlateauState::default();
        for e in [0.5, 0.4, 0.45, 0.45] {
            s.observe(&mut p, e);
        }
        assert_eq!(p.reductions, 1);
        assert!((s.lr(0, &p) - 0.01).abs() < 1e-12);
    }
}
