//! SGD with momentum exactly as PyTorch defines it: `d = g + wd · p`, `v = m · v + d` (the
//! first step sets `v = d`), step `v` or, with Nesterov, `d + m · v`. Momentum buffers are
//! kept by tensor name, so they are saved to and restored from safetensors like the weights
//! and a resumed run continues bit for bit.

use std::collections::HashMap;

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::optim::GradientsParams;
use burn::tensor::{Gradients, Tensor, TensorData};

use super::config::OptimConfig;
use crate::nn::fast::sgd::{SgdStep, sgd_update};
use crate::weights::{PathTracker, TensorMap, is_buffer};

/// The optimiser and its state.
pub struct Sgd {
    cfg: OptimConfig,
    momentum: HashMap<String, Tensor<1>>,
}

/// Whether weight decay skips this tensor (normalisation parameters and biases, when asked).
fn skips_decay(name: &str, cfg: &OptimConfig) -> bool {
    cfg.no_decay_norm_bias
        && (name.ends_with(".bias")
            || name.contains("bn")
            || name.contains("norm")
            || name.ends_with("rg.weight")
            || name.contains("downsample.1"))
}

/// Where [`Sgd::step`] finds a parameter's gradient: the autodiff [`Gradients`] of one
/// backward pass, or [`GradientsParams`] by parameter id (the averaged gradients of
/// data-parallel workers, [`super::parallel`]).
pub trait GradSource {
    /// The gradient of parameter `id`, whose value is `value`, if it has one.
    fn grad_of<const D: usize>(&self, id: ParamId, value: &Tensor<D>) -> Option<Tensor<D>>;
}

impl GradSource for Gradients {
    fn grad_of<const D: usize>(&self, _: ParamId, value: &Tensor<D>) -> Option<Tensor<D>> {
        value.grad(self)
    }
}

impl GradSource for GradientsParams {
    fn grad_of<const D: usize>(&self, id: ParamId, _: &Tensor<D>) -> Option<Tensor<D>> {
        self.get(id)
    }
}

struct NormVisitor<'a, G> {
    grads: &'a G,
    sum_sq: f64,
}

impl<G: GradSource> ModuleVisitor for NormVisitor<'_, G> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if let Some(g) = self.grads.grad_of(param.id, &param.val()) {
            let s: f32 = (g.clone() * g).sum().into_scalar();
            self.sum_sq += s as f64;
        }
    }
}

struct Step<'a, G> {
    path: PathTracker,
    grads: &'a G,
    lr: f64,
    scale: f64,
    sgd: &'a mut Sgd,
}

impl<G: GradSource> ModuleMapper for Step<'_, G> {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.path.enter(name, container_type);
    }
    fn exit_module(&mut self, _: &str, _: &str) {
        self.path.exit();
    }
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let (name, _) = self.path.current();
        if is_buffer(&name) {
            return param;
        }
        let (id, tensor, mapper) = param.consume();
        let Some(grad) = self.grads.grad_of(id, &tensor) else {
            return Param::from_mapped_value(id, tensor, mapper);
        };
        let cfg = &self.sgd.cfg;
        let require_grad = tensor.is_require_grad();
        let shape = tensor.shape();
        let step = SgdStep {
            scale: self.scale,
            weight_decay: if skips_decay(&name, cfg) {
                0.0
            } else {
                cfg.weight_decay
            },
            momentum: cfg.momentum,
            lr: self.lr,
            nesterov: cfg.nesterov,
        };
        let buf = self
            .sgd
            .momentum
            .remove(&name)
            .map(|b| b.reshape(shape.clone()));
        // Both passes on the parameter's inner (non-autodiff) tensor.
        let (v, p) = sgd_update(tensor.inner(), grad, buf, step);
        if let Some(v) = v {
            self.sgd
                .momentum
                .insert(name, v.reshape([shape.num_elements()]));
        }
        let mut t = Tensor::from_inner(p);
        if require_grad {
            t = t.require_grad();
        }
        Param::from_mapped_value(id, t, mapper)
    }
}

impl Sgd {
    /// A fresh optimiser.
    pub fn new(cfg: OptimConfig) -> Self {
        Sgd {
            cfg,
            momentum: HashMap::new(),
        }
    }

    /// One update of `module` with `grads` at rate `lr`. The global gradient norm is only
    /// computed (an extra pass over every gradient) when clipping is on.
    pub fn step<M: Module, G: GradSource>(&mut self, module: M, grads: &G, lr: f64) -> M {
        let scale = match self.cfg.grad_clip {
            Some(max) => {
                let mut norm = NormVisitor { grads, sum_sq: 0.0 };
                module.visit(&mut norm);
                let norm = norm.sum_sq.sqrt();
                if norm > max && norm.is_finite() {
                    max / (norm + 1e-6)
                } else {
                    1.0
                }
            }
            None => 1.0,
        };
        let mut step = Step {
            // Buffers are named as in the model's weight file (torchvision's DenseNet names too).
            path: PathTracker::for_module(&module),
            grads,
            lr,
            scale,
            sgd: self,
        };
        module.map(&mut step)
    }

    /// A copy of this optimiser with its momentum buffers on `device` (a data-parallel
    /// replica's optimiser).
    pub fn fork(&self, device: &burn::tensor::Device) -> Self {
        Sgd {
            cfg: self.cfg,
            momentum: self
                .momentum
                .iter()
                .map(|(k, t)| (k.clone(), t.clone().to_device(device)))
                .collect(),
        }
    }

    /// The momentum buffers, by tensor name (flattened).
    pub fn state(&self) -> Vec<(String, Vec<f32>)> {
        let mut v: Vec<(String, Vec<f32>)> = self
            .momentum
            .iter()
            .map(|(k, t)| {
                let data = t.clone().into_data().convert::<f32>();
                (k.clone(), data.try_to_vec::<f32>().unwrap_or_default())
            })
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// Restores momentum buffers saved by [`Sgd::state`].
    pub fn load_state(&mut self, state: &TensorMap, device: &burn::tensor::Device) {
        self.momentum = state
            .iter()
            .map(|(k, (_, v))| {
                let t = Tensor::<1>::from_data(TensorData::new(v.clone(), [v.len()]), device);
                (k.clone(), t)
            })
            .collect();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decay_exclusions_by_name() {
        let cfg = OptimConfig {
            no_decay_norm_bias: true,
            ..Default::default()
        };
        assert!(skips_decay("layer1.0.bn1.weight", &cfg));
        assert!(skips_decay("fc.bias", &cfg));
        assert!(skips_decay("layer1.0.downsample.1.weight", &cfg));
        assert!(!skips_decay("layer1.0.conv1.weight", &cfg));
        assert!(!skips_decay("fc.weight", &cfg));
        assert!(!skips_decay("fc.bias", &OptimConfig::default()));
    }
}
