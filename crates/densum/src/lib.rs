//! densum: convolutional backbones as a choice of *block* (what one layer computes) and
//! *connectivity* (how a stage combines its earlier outputs), after the DSNet paper's "dense
//! summation" view. ResNet and its relatives, DSNet and RGSNet are all built by one stage
//! loop ([`stage::Stage`]) from parts in [`block`] and [`connect`]; [`zoo`] names the papers'
//! variants.
//!
//! ```no_run
//! use densum::{zoo, Net, Device};
//! let spec = zoo::resolve("dsnet50", &zoo::ModelOptions::default()).unwrap();
//! let net = Net::new(&spec.config, &Device::default());
//! ```

pub mod block;
pub mod connect;
pub mod device;
pub mod error;
pub mod explain;
#[cfg(feature = "onnx")]
pub mod export;
pub mod features;
pub mod measure;
pub mod net;
pub mod nn;
pub mod predict;
pub mod stage;
pub mod train;
pub mod weights;
pub mod zoo;

pub use burn;
pub use burn::tensor::{Device, Tensor};
pub use error::{DensumError, Result};
pub use net::{Net, NetConfig};
pub use zoo::{Dataset, ModelOptions, ModelSpec};
