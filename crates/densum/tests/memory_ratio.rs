//! Issue #6's memory target: one training step of a deep DenseNet-BC in memory-efficient mode
//! peaks at no more than 0.6 of the plain mode's memory (counting allocator, so this binary
//! installs it and holds a single test: nothing else allocates while a peak is measured).

use burn::module::Module;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::tensor::{Int, Tensor, TensorData};
use densum::measure::alloc::{self, CountingAlloc};
use densum::zoo::{self, ModelOptions};
use densum::{Device, Net, burn};

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

/// Peak bytes above the starting level during one forward and backward pass of DenseNet-BC
/// (k = 12, one block of 24 layers) on 4 CIFAR-sized images.
fn step_peak(memory_efficient: bool) -> usize {
    let device = Device::default().autodiff();
    let o = ModelOptions {
        block_config: Some(vec![24]),
        memory_efficient: Some(memory_efficient),
        ..Default::default()
    };
    let spec = zoo::resolve("densenet_bc100_k12", &o).unwrap();
    let net = Net::new(&spec.config, &device).train();
    let values: Vec<f32> = (0..4 * 3 * 32 * 32)
        .map(|i| (i % 251) as f32 / 128.0 - 1.0)
        .collect();
    let x = Tensor::<4>::from_data(TensorData::new(values, [4, 3, 32, 32]), &device);
    let labels = Tensor::<1, Int>::from_data(TensorData::new(vec![0i64; 4], [4]), &device);
    let base = alloc::current();
    alloc::reset_peak();
    let loss = CrossEntropyLossConfig::new()
        .init(&device)
        .forward(net.forward(x), labels);
    let grads = loss.backward();
    let peak = alloc::peak() - base;
    drop(grads);
    peak
}

#[test]
fn memory_efficient_densenet_bc_peaks_at_most_0_6_of_plain() {
    assert!(alloc::installed());
    let plain = step_peak(false);
    let efficient = step_peak(true);
    let ratio = efficient as f64 / plain as f64;
    println!(
        "peak of one training step, one block of 24 layers: plain {:.1} MB, \
         memory-efficient {:.1} MB (ratio {ratio:.2})",
        plain as f64 / 1e6,
        efficient as f64 / 1e6,
    );
    assert!(ratio <= 0.6, "memory-efficient / plain peak is {ratio:.3}");
}
